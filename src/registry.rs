//! The MLflow Model Registry: `MODEL_URI=models:/<name>@<alias>` or `models:/<name>/<version>`
//! resolved to one model version and the place its files are, through the tracking server's
//! REST API (`MLFLOW_TRACKING_URI`).
//!
//! # Resolution
//! - The version: `GET /api/2.0/mlflow/registered-models/alias?name=&alias=` for an alias,
//!   `GET /api/2.0/mlflow/model-versions/get?name=&version=` for a number. Both answer the
//!   `model_version` (its number, `run_id`, `source` and `status`); a version not `READY`
//!   is refused. An alias the model does not have is answered 400 `INVALID_PARAMETER_VALUE`,
//!   a name or version it does not have 404 `RESOURCE_DOES_NOT_EXIST`: neither passes with
//!   time, so neither is retried.
//! - Its files, from the version's `source`:
//!   - `models:/m-<id>` (MLflow 3 logs every model as a logged model):
//!     `GET /api/2.0/mlflow/logged-models/<id>`, its `artifact_uri` once it is
//!     `LOGGED_MODEL_READY`;
//!   - `runs:/<run_id>/<path>`: the logged model of that run named `<path>`
//!     (`POST /api/2.0/mlflow/logged-models/search`, MLflow 3), else `<path>` among the run's
//!     artifacts (`GET /api/2.0/mlflow/runs/get`, MLflow 2);
//!   - anything else: `GET /api/2.0/mlflow/model-versions/get-download-uri`, the server's
//!     own answer.
//! - The location is then read from S3 (`s3://`, with the function's role, by
//!   [`crate::download`]), or through the server's artifact proxy (`mlflow-artifacts:`,
//!   [`proxy`]). Locations on the server's own disk (`file:`, a bare path) cannot be read
//!   from a Lambda function, and are refused with what to change on the server.
//!
//! # The client
//! The few calls are typed here ([`http`]), on the hyper/rustls stack the AWS SDK already
//! builds into the function, rather than through `trs-mlflow`, the one MLflow client crate on
//! crates.io: that crate brings `reqwest` (a second HTTP client to build), is described by
//! its author as work in progress, and covers neither aliases, logged models nor the artifact
//! proxy, which are the three things needed here. Every REST call has a timeout
//! (`MLFLOW_HTTP_REQUEST_TIMEOUT`) over its whole answer; one that fails in a way that may pass
//! (no connection, HTTP 429 or 5xx) is tried up to [`http::ATTEMPTS`] times. A file from the
//! artifact proxy gets the timeout for its answer's head and for each part of its body, and
//! the whole model download `MODEL_DOWNLOAD_TIMEOUT` ([`crate::download`]).
//!
//! # What the server says
//! Nothing the server answers is taken on trust: the version answered must be the model and
//! version asked for, its number a number, its run ID one, and every URI one line of text,
//! before any of it reaches a log, an event or a request. The credentials are kept out of
//! every error, whatever a server quotes back.

pub mod http;
pub mod proxy;

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use self::http::{CallError, Credentials, Http, TrackingServer};

/// Longest wait for one REST call when `MLFLOW_HTTP_REQUEST_TIMEOUT` is not set. MLflow's own
/// client waits 120 s; a Lambda function's init phase has 10 s (the first invocation's
/// timeout for a longer one).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A registered model version as `MODEL_URI` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUri {
    /// The registered model's name.
    pub name: String,
    /// Which of its versions.
    pub reference: Reference,
}

/// How a [`RegistryUri`] picks a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `models:/<name>@<alias>`: the version the alias points at, which may move.
    Alias(String),
    /// `models:/<name>/<version>`: one version, for good.
    Version(u64),
}

impl RegistryUri {
    /// Parses `models:/<name>@<alias>` or `models:/<name>/<version>`; `None` for a URI of
    /// another scheme; the error says what a `models:/` URI should be.
    pub fn parse(uri: &str) -> Option<Result<Self, &'static str>> {
        let path = uri.trim().strip_prefix("models:/")?;
        if path.starts_with('/') {
            // `models://<profile>/...` names a Databricks profile's registry.
            return Some(Err(
                "models:/<name>@<alias> or models:/<name>/<version number>, with one `/`: \
                 models://<profile>/ names a Databricks profile, which the function does not \
                 read (set MLFLOW_TRACKING_URI to the registry's server)",
            ));
        }
        Some(Self::parse_path(path))
    }

    /// As MLflow reads them: split at `/` first (a name holds no `/`), then, without a
    /// version, at the last `@`; the name and alias must be ones MLflow accepts.
    fn parse_path(path: &str) -> Result<Self, &'static str> {
        const EXPECTED: &str = "models:/<name>@<alias> or models:/<name>/<version number>";
        let (name, version) = match path.split_once('/') {
            Some((name, version)) => (name, version),
            None => {
                let Some((name, alias)) = path.rsplit_once('@') else {
                    return Err(EXPECTED);
                };
                if name.is_empty() || alias.is_empty() {
                    return Err(EXPECTED);
                }
                check_name(name)?;
                check_alias(alias)?;
                return Ok(Self {
                    name: name.into(),
                    reference: Reference::Alias(alias.into()),
                });
            }
        };
        if name.is_empty() || version.contains('/') {
            return Err(EXPECTED);
        }
        check_name(name)?;
        match version.parse::<u64>() {
            Ok(number) if number > 0 && version.bytes().all(|b| b.is_ascii_digit()) => Ok(Self {
                name: name.into(),
                reference: Reference::Version(number),
            }),
            _ if version == "latest" || version.chars().next().is_some_and(char::is_alphabetic) => {
                Err(
                    "models:/<name>@<alias> or models:/<name>/<version number>: stages \
                     (Production, Staging) and `latest` are deprecated in MLflow for aliases; \
                     set an alias on the version and name it with @",
                )
            }
            _ => Err(EXPECTED),
        }
    }

    /// Whether the version may change between two resolutions (an alias).
    pub fn moves(&self) -> bool {
        matches!(self.reference, Reference::Alias(_))
    }
}

/// Refuses a registered model name MLflow would refuse (blank, with `:`, `.` or `..`), or one
/// with a control character.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() || name == "." || name == ".." {
        return Err(
            "models:/<name>@<alias> or models:/<name>/<version number>, with the \
             registered model's name: it is blank, `.` or `..`",
        );
    }
    if name.contains(':') || name.chars().any(char::is_control) {
        return Err(
            "models:/<name>@<alias> or models:/<name>/<version number>: a registered \
                    model's name holds no ':' and no control character",
        );
    }
    Ok(())
}

/// Longest alias MLflow sets.
const MAX_ALIAS_CHARS: usize = 255;

/// Refuses an alias MLflow would not set: one of more than 255 letters, digits, `_` and `-`,
/// `latest`, or a version's name (`v3`).
fn check_alias(alias: &str) -> Result<(), &'static str> {
    if alias.chars().count() > MAX_ALIAS_CHARS
        || !alias
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
    {
        return Err(
            "models:/<name>@<alias>, where an alias is at most 255 letters, digits, \
                    underscores (_) and dashes (-), as MLflow sets them",
        );
    }
    let version_like = alias.len() > 1
        && alias.starts_with(['v', 'V'])
        && alias.bytes().skip(1).all(|b| b.is_ascii_digit());
    if alias.eq_ignore_ascii_case("latest") || version_like {
        return Err(
            "models:/<name>@<alias>: MLflow reserves `latest` and version names \
                    (v3) and never sets them as aliases; name the version with \
                    models:/<name>/<version number>, or an alias set on it",
        );
    }
    Ok(())
}

impl std::fmt::Display for RegistryUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Reference::Alias(alias) => write!(f, "models:/{}@{alias}", self.name),
            Reference::Version(version) => write!(f, "models:/{}/{version}", self.name),
        }
    }
}

/// How to reach the tracking server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `MLFLOW_TRACKING_URI`.
    pub server: TrackingServer,
    /// `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    pub credentials: Credentials,
    /// `MLFLOW_HTTP_REQUEST_TIMEOUT`: longest wait for one call.
    pub timeout: Duration,
}

/// One registered model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// Its version number, as MLflow writes it.
    pub version: String,
    /// The run that produced it, if any.
    pub run_id: Option<String>,
    /// Where MLflow says its files come from (`models:/m-<id>`, `runs:/...`, a storage URI).
    pub source: String,
}

impl ModelVersion {
    /// The `version` stamped on prediction events: `<name>/<version>`.
    pub fn stamp(&self) -> String {
        format!("{}/{}", self.name, self.version)
    }
}

/// Where a model version's files are, as the function reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://{bucket}/{prefix}`: read with the function's role.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix of the model directory, without leading or trailing `/`.
        prefix: String,
    },
    /// `mlflow-artifacts:/{path}`: read through the tracking server's artifact proxy.
    Proxy {
        /// The directory's path in the artifact store.
        path: String,
    },
}

/// Why a registry model could not be resolved.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// A call to the tracking server failed.
    #[error("cannot {doing} for {uri} from the MLflow tracking server {server}")]
    Call {
        /// The `models:/` URI being resolved.
        uri: String,
        /// The tracking server.
        server: String,
        /// What the call was for.
        doing: &'static str,
        /// How it failed: the HTTP status and MLflow's error, or the cause.
        #[source]
        cause: Box<CallError>,
    },
    /// The version exists but is not ready to be served.
    #[error("{uri} is version {version}, whose status is {status}, not READY")]
    NotReady {
        /// The `models:/` URI.
        uri: String,
        /// Its version.
        version: String,
        /// `PENDING_REGISTRATION` or `FAILED_REGISTRATION`.
        status: String,
    },
    /// The server's answer is not about the version asked for, or holds values MLflow
    /// never writes.
    #[error("{uri}: the tracking server answered {detail}")]
    Answer {
        /// The `models:/` URI.
        uri: String,
        /// What is wrong with the answer.
        detail: String,
    },
    /// The version's logged model has not finished uploading, or failed to.
    #[error("{uri} is logged model {model_id}, whose status is {status}, not LOGGED_MODEL_READY")]
    LoggedModelNotReady {
        /// The `models:/` URI.
        uri: String,
        /// The logged model.
        model_id: String,
        /// Its status.
        status: String,
    },
    /// The version's files are somewhere the function cannot read.
    #[error("{uri}: its files are at {location}, which {reason}")]
    Unreadable {
        /// The `models:/` URI.
        uri: String,
        /// Where the registry says they are.
        location: String,
        /// Why it cannot be read, and what to change.
        reason: &'static str,
    },
}

/// The tracking server's registry, as the function uses it.
#[derive(Debug, Clone)]
pub struct Registry {
    http: Http,
}

impl Registry {
    /// A client of the tracking server in `settings`.
    pub fn new(settings: &Settings) -> std::io::Result<Self> {
        Ok(Self {
            http: Http::new(
                settings.server.clone(),
                &settings.credentials,
                settings.timeout,
            )?,
        })
    }

    /// The tracking server.
    pub fn server(&self) -> &TrackingServer {
        self.http.server()
    }

    /// Makes one attempt of each call (see [`Http::single_attempt`]).
    pub fn single_attempt(&mut self) {
        self.http.single_attempt();
    }

    /// The version `uri` names now, if it is ready to be served: one REST call.
    pub async fn resolve(&self, uri: &RegistryUri) -> Result<ModelVersion, RegistryError> {
        let answer: VersionAnswer = match &uri.reference {
            Reference::Alias(alias) => {
                let query = [("name", uri.name.as_str()), ("alias", alias.as_str())];
                self.http
                    .get("/api/2.0/mlflow/registered-models/alias", &query)
                    .await
            }
            Reference::Version(version) => {
                let version = version.to_string();
                let query = [("name", uri.name.as_str()), ("version", version.as_str())];
                self.http
                    .get("/api/2.0/mlflow/model-versions/get", &query)
                    .await
            }
        }
        .map_err(|cause| self.error(uri, "resolve the model version", cause))?;
        model_version(uri, answer.model_version)
    }

    /// Where the files of `version` (resolved from `uri`) are.
    pub async fn locate(
        &self,
        uri: &RegistryUri,
        version: &ModelVersion,
    ) -> Result<Location, RegistryError> {
        let artifact_uri = match Source::of(&version.source) {
            Source::LoggedModel(id) => self.logged_model_artifacts(uri, id).await?,
            Source::Run { run_id, path } => self.run_artifacts(uri, run_id, path).await?,
            Source::Other => {
                let query = [
                    ("name", version.name.as_str()),
                    ("version", version.version.as_str()),
                ];
                let answer: DownloadUriAnswer = self
                    .http
                    .get("/api/2.0/mlflow/model-versions/get-download-uri", &query)
                    .await
                    .map_err(|cause| self.error(uri, "get the download URI", cause))?;
                match Source::of(&answer.artifact_uri) {
                    Source::LoggedModel(id) => self.logged_model_artifacts(uri, id).await?,
                    Source::Run { run_id, path } => self.run_artifacts(uri, run_id, path).await?,
                    Source::Other => answer.artifact_uri,
                }
            }
        };
        plain(uri, "artifact URI", &artifact_uri)?;
        parse_location(&artifact_uri, self.server()).map_err(|reason| RegistryError::Unreadable {
            uri: uri.to_string(),
            location: artifact_uri.clone(),
            reason,
        })
    }

    /// The model directory at `mlflow-artifacts:/{path}`, read through the server's proxy.
    pub fn proxy_model(&self, path: &str) -> proxy::ProxyModel<'_> {
        proxy::ProxyModel::new(&self.http, path)
    }

    async fn logged_model_artifacts(
        &self,
        uri: &RegistryUri,
        model_id: &str,
    ) -> Result<String, RegistryError> {
        let id =
            percent_encoding::utf8_percent_encode(model_id, percent_encoding::NON_ALPHANUMERIC);
        let answer: LoggedModelAnswer = self
            .http
            .get(&format!("/api/2.0/mlflow/logged-models/{id}"), &[])
            .await
            .map_err(|cause| self.error(uri, "read the logged model", cause))?;
        if answer.model.info.model_id != model_id {
            return Err(RegistryError::Answer {
                uri: uri.to_string(),
                detail: format!(
                    "with another logged model than {model_id}: \"{}\"",
                    http::quoted(&answer.model.info.model_id)
                ),
            });
        }
        ready_artifacts(uri, answer.model.info)
    }

    async fn run_artifacts(
        &self,
        uri: &RegistryUri,
        run_id: &str,
        path: &str,
    ) -> Result<String, RegistryError> {
        let answer: RunAnswer = self
            .http
            .get("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await
            .map_err(|cause| self.error(uri, "read the run of its source", cause))?;
        let info = answer.run.info;
        if info.run_id != run_id {
            return Err(RegistryError::Answer {
                uri: uri.to_string(),
                detail: format!(
                    "for the run {run_id} with the run \"{}\"",
                    http::quoted(&info.run_id)
                ),
            });
        }
        // MLflow 3 keeps a model logged in a run as a logged model of that name, outside the
        // run's artifacts; a logged model's name has no `/` and no quote.
        if !path.is_empty() && !path.contains(['/', '\'', '\\']) {
            let search = serde_json::json!({
                "experiment_ids": [info.experiment_id],
                "filter": format!("source_run_id = '{run_id}' AND name = '{path}'"),
                "max_results": 1,
            });
            let found: Result<SearchAnswer, CallError> = self
                .http
                .post("/api/2.0/mlflow/logged-models/search", &search)
                .await;
            match found {
                Ok(found) => {
                    if let Some(model) = found.models.into_iter().next() {
                        if model.info.name != path || model.info.source_run_id != run_id {
                            return Err(RegistryError::Answer {
                                uri: uri.to_string(),
                                detail: format!(
                                    "a search for the logged model {path} of run {run_id} with \
                                     another model: \"{}\" of run \"{}\"",
                                    http::quoted(&model.info.name),
                                    http::quoted(&model.info.source_run_id)
                                ),
                            });
                        }
                        return ready_artifacts(uri, model.info);
                    }
                }
                // A server before MLflow 3 has no logged models: the model is in the run's
                // artifacts.
                Err(CallError::Status {
                    status: 404 | 501, ..
                }) => {}
                Err(cause) => {
                    return Err(self.error(uri, "find the logged model of its run", cause));
                }
            }
        }
        Ok(join(&info.artifact_uri, path))
    }

    fn error(&self, uri: &RegistryUri, doing: &'static str, cause: CallError) -> RegistryError {
        RegistryError::Call {
            uri: uri.to_string(),
            server: self.server().to_string(),
            doing,
            cause: Box::new(cause),
        }
    }
}

/// `{"model_version": {...}}`, the answer of the alias and version endpoints.
#[derive(Debug, Deserialize)]
struct VersionAnswer {
    model_version: WireVersion,
}

#[derive(Debug, Deserialize)]
struct WireVersion {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    run_id: String,
    #[serde(default)]
    status: String,
    /// The aliases that point at it (MLflow 2.3 and later).
    #[serde(default)]
    aliases: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct DownloadUriAnswer {
    artifact_uri: String,
}

#[derive(Debug, Deserialize)]
struct LoggedModelAnswer {
    model: LoggedModel,
}

#[derive(Debug, Deserialize)]
struct LoggedModel {
    info: LoggedModelInfo,
}

#[derive(Debug, Deserialize)]
struct LoggedModelInfo {
    model_id: String,
    artifact_uri: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    source_run_id: String,
}

#[derive(Debug, Deserialize)]
struct SearchAnswer {
    #[serde(default)]
    models: Vec<LoggedModel>,
}

#[derive(Debug, Deserialize)]
struct RunAnswer {
    run: Run,
}

#[derive(Debug, Deserialize)]
struct Run {
    info: RunInfo,
}

#[derive(Debug, Deserialize)]
struct RunInfo {
    artifact_uri: String,
    experiment_id: String,
    #[serde(default)]
    run_id: String,
}

/// Longest URI or identifier taken from an answer: MLflow's columns for them are shorter.
const MAX_ANSWER_TEXT: usize = 4096;

/// `value` of `field` in an answer about `uri`, if it is one line of text MLflow could have
/// written; it goes into logs, events and requests.
fn plain<'a>(uri: &RegistryUri, field: &str, value: &'a str) -> Result<&'a str, RegistryError> {
    if value.len() > MAX_ANSWER_TEXT || value.chars().any(char::is_control) {
        return Err(RegistryError::Answer {
            uri: uri.to_string(),
            detail: format!(
                "a {field} of {} bytes{}, which MLflow never writes",
                value.len(),
                match value.chars().any(char::is_control) {
                    true => " with control characters",
                    false => "",
                }
            ),
        });
    }
    Ok(value)
}

/// Whether `run_id` is an MLflow run ID: a letter or digit, then at most 255 letters,
/// digits, `_` and `-`.
fn is_run_id(run_id: &str) -> bool {
    let mut bytes = run_id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && run_id.len() <= 256
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The version an answer describes, if it is the one `uri` asked for, and ready to be served.
fn model_version(uri: &RegistryUri, wire: WireVersion) -> Result<ModelVersion, RegistryError> {
    let wrong = |detail: String| RegistryError::Answer {
        uri: uri.to_string(),
        detail,
    };
    if wire.name != uri.name {
        return Err(wrong(format!(
            "with a version of the model \"{}\"",
            http::quoted(&wire.name)
        )));
    }
    // A version number as MLflow writes one: digits, no sign, no leading zero.
    let number = match wire.version.len() <= 20 && wire.version.bytes().all(|b| b.is_ascii_digit())
    {
        true => wire
            .version
            .parse::<u64>()
            .ok()
            .filter(|number| *number > 0 && number.to_string() == wire.version),
        false => None,
    };
    let Some(number) = number else {
        return Err(wrong(format!(
            "with the version \"{}\", which is not a version number",
            http::quoted(&wire.version)
        )));
    };
    match &uri.reference {
        Reference::Version(asked) if *asked != number => {
            return Err(wrong(format!("with version {number}")));
        }
        // The alias endpoint (MLflow 2.3 and later) lists the version's aliases.
        Reference::Alias(alias)
            if !wire
                .aliases
                .as_ref()
                .is_some_and(|aliases| aliases.contains(alias)) =>
        {
            return Err(wrong(format!(
                "with version {number}, which the alias does not point at"
            )));
        }
        _ => {}
    }
    if !wire.run_id.is_empty() && !is_run_id(&wire.run_id) {
        return Err(wrong(format!(
            "with the run ID \"{}\", which is not one",
            http::quoted(&wire.run_id)
        )));
    }
    plain(uri, "source", &wire.source)?;
    // MLflow leaves `status` out of versions made before it had one.
    if !wire.status.is_empty() && wire.status != "READY" {
        return Err(RegistryError::NotReady {
            uri: uri.to_string(),
            version: wire.version,
            status: http::quoted(&wire.status),
        });
    }
    Ok(ModelVersion {
        name: wire.name,
        version: wire.version,
        run_id: Some(wire.run_id).filter(|run_id| !run_id.is_empty()),
        source: wire.source,
    })
}

/// A logged model's artifacts, once it is ready.
fn ready_artifacts(uri: &RegistryUri, info: LoggedModelInfo) -> Result<String, RegistryError> {
    if !info.status.is_empty() && info.status != "LOGGED_MODEL_READY" {
        return Err(RegistryError::LoggedModelNotReady {
            uri: uri.to_string(),
            model_id: http::quoted(&info.model_id),
            status: http::quoted(&info.status),
        });
    }
    plain(uri, "artifact_uri", &info.artifact_uri)?;
    Ok(info.artifact_uri)
}

/// What a version's `source` (or a download URI) points at.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    /// `models:/m-<id>`: an MLflow 3 logged model.
    LoggedModel(&'a str),
    /// `runs:/<run_id>/<path>`.
    Run { run_id: &'a str, path: &'a str },
    /// A storage location, or another form the server resolves.
    Other,
}

impl<'a> Source<'a> {
    fn of(source: &'a str) -> Self {
        if let Some(id) = source.strip_prefix("models:/")
            && id.starts_with("m-")
            && !id.contains('/')
        {
            return Self::LoggedModel(id);
        }
        if let Some(rest) = source.strip_prefix("runs:/") {
            let rest = rest.trim_start_matches('/');
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            // It goes into a search filter: nothing but a run ID.
            if is_run_id(run_id) {
                return Self::Run {
                    run_id,
                    path: path.trim_matches('/'),
                };
            }
        }
        Self::Other
    }
}

/// `base/path`, with one `/` between them.
fn join(base: &str, path: &str) -> String {
    match path.is_empty() {
        true => base.trim_end_matches('/').to_owned(),
        false => format!("{}/{}", base.trim_end_matches('/'), path.trim_matches('/')),
    }
}

/// Why a location with a `.` or `..` segment is refused.
const STEPS_OUT: &str = "has a `.` or `..` segment: a model directory is named without steps \
                         through the store";

/// Whether a path has a `.` or `..` segment, as they are or percent-encoded.
fn steps_out(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        decoded == "." || decoded == ".."
    })
}

/// Whether `bucket` is an S3 bucket name: 3 to 63 lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
fn is_bucket_name(bucket: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bucket.len())
        && edge(bucket.bytes().next())
        && edge(bucket.bytes().last())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// The location of an artifact URI the tracking server gave, or why the function cannot
/// read it.
fn parse_location(uri: &str, server: &TrackingServer) -> Result<Location, &'static str> {
    if let Some(path) = uri.strip_prefix("s3://") {
        return match path.split_once('/') {
            Some((bucket, prefix))
                if is_bucket_name(bucket) && !prefix.trim_matches('/').is_empty() =>
            {
                let prefix = prefix.trim_matches('/');
                if steps_out(prefix) {
                    return Err(STEPS_OUT);
                }
                Ok(Location::S3 {
                    bucket: bucket.into(),
                    prefix: prefix.into(),
                })
            }
            _ => Err("is not an s3://bucket/prefix location with a valid bucket name"),
        };
    }
    if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
        // `mlflow-artifacts:/path`, or `mlflow-artifacts://host:port/path` naming a server.
        let path = match rest.strip_prefix("//") {
            Some(rest) => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !authority.is_empty() && authority != server.authority {
                    return Err("names another server than MLFLOW_TRACKING_URI's artifact \
                                proxy; the function reads artifacts through its own tracking \
                                server");
                }
                path
            }
            None => rest,
        };
        let path = path.trim_matches('/');
        if steps_out(path) {
            return Err(STEPS_OUT);
        }
        if path.is_empty() {
            return Err("is the root of the artifact store, not a model directory");
        }
        return Ok(Location::Proxy { path: path.into() });
    }
    match uri.split_once(':') {
        Some((scheme, _)) if scheme.len() > 1 && scheme != "file" => Err(
            "is in a store the function does not read: it reads s3:// locations and the \
             tracking server's artifact proxy (mlflow-artifacts:)",
        ),
        _ => Err(
            "is on the tracking server's own disk: run the server with --serve-artifacts \
             (the function then reads the files through it) or with an s3:// \
             --default-artifact-root",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> RegistryUri {
        RegistryUri::parse(text).unwrap().unwrap()
    }

    #[test]
    fn models_uris_name_an_alias_or_a_version_number() {
        let champion = uri("models:/bike-demand@champion");
        assert_eq!(champion.name, "bike-demand");
        assert_eq!(champion.reference, Reference::Alias("champion".into()));
        assert!(champion.moves());
        assert_eq!(champion.to_string(), "models:/bike-demand@champion");
        let third = uri("models:/bike-demand/3");
        assert_eq!(third.reference, Reference::Version(3));
        assert!(!third.moves());
        assert_eq!(third.to_string(), "models:/bike-demand/3");
        assert_eq!(uri("models:/bike demand.v2@prod").name, "bike demand.v2");
        // As MLflow reads them: split at `/` first, then at the last `@`.
        let pinned = uri("models:/team@bikes/3");
        assert_eq!(
            (pinned.name.as_str(), pinned.reference),
            ("team@bikes", Reference::Version(3))
        );
        let aliased = uri("models:/team@bikes@champion");
        assert_eq!(aliased.name, "team@bikes");
        assert!(RegistryUri::parse("s3://bucket/model").is_none());
        assert!(RegistryUri::parse("/opt/model").is_none());
    }

    #[test]
    fn malformed_models_uris_say_what_is_expected() {
        for text in [
            "models:/",
            "models:/bike-demand",
            "models:/@champion",
            "models:/bike-demand@",
            "models:/bike-demand/0",
            "models:/bike-demand/-1",
            "models:/bike-demand/+3",
            "models:/a/b/3",
            "models:/a/b@c",
        ] {
            let error = RegistryUri::parse(text).unwrap().unwrap_err();
            assert!(
                error.starts_with("models:/<name>@<alias>"),
                "{text}: {error}"
            );
        }
        for text in [
            "models:/bike-demand/Production",
            "models:/bike-demand/latest",
        ] {
            let error = RegistryUri::parse(text).unwrap().unwrap_err();
            assert!(error.contains("alias"), "{text}: {error}");
        }
    }

    #[test]
    fn names_and_aliases_mlflow_would_refuse_are_refused() {
        for text in [
            "models://profile/bike@champion",
            "models:///bike/1",
            "models:/ @champion",
            "models:/\t/3",
            "models:/./3",
            "models:/..@champion",
            "models:/a:b@champion",
            "models:/bike\ndemand@champion",
            "models:/bike\u{7f}@champion",
            "models:/bike@cham pion",
            "models:/bike@champ.ion",
            "models:/bike@../../x",
            "models:/bike@latest",
            "models:/bike@LATEST",
            "models:/bike@v3",
            "models:/bike@V12",
        ] {
            let error = RegistryUri::parse(text).unwrap().unwrap_err();
            assert!(
                error.starts_with("models:/<name>@<alias>"),
                "{text:?}: {error}"
            );
        }
        let long = format!("models:/bike@{}", "a".repeat(MAX_ALIAS_CHARS + 1));
        assert!(RegistryUri::parse(&long).unwrap().is_err());
        for text in [
            "models:/bike@v",
            "models:/bike@v3a",
            "models:/bike@prod-2_b",
            "models:/bike@é",
            "models:/bike demand@champion",
        ] {
            assert!(RegistryUri::parse(text).unwrap().is_ok(), "{text}");
        }
        let longest = format!("models:/bike@{}", "a".repeat(MAX_ALIAS_CHARS));
        assert!(RegistryUri::parse(&longest).unwrap().is_ok());
    }

    #[test]
    fn an_answer_about_another_version_or_with_values_mlflow_never_writes_is_refused() {
        let good = || WireVersion {
            name: "bike".into(),
            version: "4".into(),
            source: "models:/m-1".into(),
            run_id: "a81fa200efe24b57a91bd9a484678af4".into(),
            status: "READY".into(),
            aliases: Some(vec!["champion".into()]),
        };
        let alias = uri("models:/bike@champion");
        let fourth = uri("models:/bike/4");
        assert!(model_version(&alias, good()).is_ok());
        assert!(model_version(&fourth, good()).is_ok());
        let mut cases: Vec<(&RegistryUri, WireVersion)> = Vec::new();
        for name in ["bike2", "Bike", "bike ", "", "bike\n"] {
            cases.push((
                &alias,
                WireVersion {
                    name: name.into(),
                    ..good()
                },
            ));
        }
        for version in [
            "../../3\n",
            "3\n",
            "-4",
            "+4",
            "4.0",
            "",
            "0",
            "00",
            "x",
            "99999999999999999999999",
        ] {
            cases.push((
                &alias,
                WireVersion {
                    version: version.into(),
                    ..good()
                },
            ));
        }
        cases.push((
            &fourth,
            WireVersion {
                version: "5".into(),
                ..good()
            },
        ));
        for run_id in ["../x", "a b", "a'b", "-ab", "ab\n", &"a".repeat(300)] {
            cases.push((
                &alias,
                WireVersion {
                    run_id: run_id.into(),
                    ..good()
                },
            ));
        }
        let long_source = format!("s3://b/{}", "x".repeat(MAX_ANSWER_TEXT));
        for source in ["s3://b/p\nforged line", long_source.as_str()] {
            cases.push((
                &alias,
                WireVersion {
                    source: source.into(),
                    ..good()
                },
            ));
        }
        for (asked, wire) in cases {
            let shown = format!("{wire:?}");
            let error = model_version(asked, wire).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, RegistryError::Answer { .. }),
                "{shown}: {message}"
            );
            assert!(
                message.starts_with(&format!("{asked}: the tracking server answered")),
                "{message}"
            );
            assert!(!message.contains('\n') && message.len() < 400, "{message}");
        }
        let status = WireVersion {
            status: "PENDING\nforged".into(),
            ..good()
        };
        let message = model_version(&alias, status).unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn a_runs_source_needs_a_run_id_as_mlflow_writes_them() {
        for source in [
            "runs:/a'b/model",
            "runs:/../model",
            "runs:/-x/model",
            "runs:/a b/model",
        ] {
            assert_eq!(Source::of(source), Source::Other, "{source}");
        }
    }

    fn fixture<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn an_alias_answer_gives_the_version_its_run_and_its_logged_model() {
        let answer: VersionAnswer = fixture(include_bytes!("../tests/fixtures/mlflow/alias.json"));
        let version =
            model_version(&uri("models:/bike-demand@champion"), answer.model_version).unwrap();
        assert_eq!(version.stamp(), "bike-demand/1");
        assert_eq!(
            version.run_id.as_deref(),
            Some("a81fa200efe24b57a91bd9a484678af4")
        );
        assert_eq!(
            Source::of(&version.source),
            Source::LoggedModel("m-07abcc12674141b7b4d58c8ae91af91e")
        );
    }

    #[test]
    fn a_version_not_ready_is_refused() {
        let wire = |status: &str| WireVersion {
            name: "m".into(),
            version: "4".into(),
            source: "models:/m-1".into(),
            run_id: String::new(),
            status: status.into(),
            aliases: None,
        };
        let error = model_version(&uri("models:/m/4"), wire("PENDING_REGISTRATION")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "models:/m/4 is version 4, whose status is PENDING_REGISTRATION, not READY"
        );
        let version = model_version(&uri("models:/m/4"), wire("")).unwrap();
        assert_eq!(version.run_id, None);
    }

    #[test]
    fn a_logged_model_gives_its_artifacts_once_ready() {
        let answer: LoggedModelAnswer =
            fixture(include_bytes!("../tests/fixtures/mlflow/logged-model.json"));
        let champion = uri("models:/bike-demand@champion");
        assert_eq!(
            ready_artifacts(&champion, answer.model.info).unwrap(),
            "mlflow-artifacts:/1/models/m-07abcc12674141b7b4d58c8ae91af91e/artifacts"
        );
        let pending = LoggedModelInfo {
            model_id: "m-2".into(),
            artifact_uri: "s3://b/p".into(),
            status: "LOGGED_MODEL_PENDING".into(),
            name: "model".into(),
            source_run_id: String::new(),
        };
        let error = ready_artifacts(&champion, pending).unwrap_err().to_string();
        assert!(
            error.contains("m-2") && error.contains("LOGGED_MODEL_PENDING"),
            "{error}"
        );
    }

    #[test]
    fn a_runs_source_names_the_run_and_the_path_in_it() {
        let answer: VersionAnswer = fixture(include_bytes!(
            "../tests/fixtures/mlflow/version-runs-source.json"
        ));
        assert_eq!(
            Source::of(&answer.model_version.source),
            Source::Run {
                run_id: "a81fa200efe24b57a91bd9a484678af4",
                path: "model"
            }
        );
        assert_eq!(
            Source::of("runs:/abc/nested/model/"),
            Source::Run {
                run_id: "abc",
                path: "nested/model"
            }
        );
        assert_eq!(
            Source::of("runs:/abc"),
            Source::Run {
                run_id: "abc",
                path: ""
            }
        );
        assert_eq!(Source::of("s3://b/p"), Source::Other);
        assert_eq!(Source::of("models:/other/3"), Source::Other);
        let run: RunAnswer = fixture(include_bytes!("../tests/fixtures/mlflow/run.json"));
        assert_eq!(
            join(&run.run.info.artifact_uri, "model"),
            "mlflow-artifacts:/1/a81fa200efe24b57a91bd9a484678af4/artifacts/model"
        );
        let found: SearchAnswer = fixture(include_bytes!(
            "../tests/fixtures/mlflow/logged-models-search.json"
        ));
        assert_eq!(found.models.len(), 1);
    }

    fn server() -> TrackingServer {
        TrackingServer::parse("http://127.0.0.1:5000").unwrap()
    }

    #[test]
    fn download_uris_are_s3_or_the_artifact_proxy() {
        let answer: DownloadUriAnswer = fixture(include_bytes!(
            "../tests/fixtures/mlflow/download-uri-s3.json"
        ));
        assert_eq!(
            parse_location(&answer.artifact_uri, &server()),
            Ok(Location::S3 {
                bucket: "mlflow-capture".into(),
                prefix: "artifacts/1/models/m-dff67b2900964ab6b10e08c81a9bcdda/artifacts".into()
            })
        );
        let answer: DownloadUriAnswer = fixture(include_bytes!(
            "../tests/fixtures/mlflow/download-uri-proxy.json"
        ));
        assert_eq!(
            parse_location(&answer.artifact_uri, &server()),
            Ok(Location::Proxy {
                path: "1/models/m-07abcc12674141b7b4d58c8ae91af91e/artifacts".into()
            })
        );
        assert_eq!(
            parse_location("mlflow-artifacts://127.0.0.1:5000/1/x/artifacts", &server()),
            Ok(Location::Proxy {
                path: "1/x/artifacts".into()
            })
        );
    }

    #[test]
    fn locations_the_function_cannot_read_say_what_to_change() {
        for (location, expected) in [
            (
                "/home/mlflow/mlruns/1/models/m-1/artifacts",
                "--serve-artifacts",
            ),
            ("file:///mlruns/1/x", "--serve-artifacts"),
            ("mlflow-artifacts://other:5000/1/x", "another server"),
            ("gs://bucket/1/x", "does not read"),
            ("s3://bucket", "s3://bucket/prefix"),
            ("mlflow-artifacts:/", "root"),
            ("mlflow-artifacts:/../../../etc", "`..`"),
            ("mlflow-artifacts:/1/%2e%2E/x", "`..`"),
            ("mlflow-artifacts:/1/./x", "`.`"),
            ("s3://bucket/../../etc", "`..`"),
            ("s3://bucket/1/%2E/x", "`..`"),
            ("s3://evil.example.com:80/p", "valid bucket name"),
            ("s3://my@bucket/p", "valid bucket name"),
            ("s3://Bucket/p", "valid bucket name"),
            ("s3://ab/p", "valid bucket name"),
            ("s3://-bucket/p", "valid bucket name"),
        ] {
            let error = parse_location(location, &server()).unwrap_err();
            assert!(error.contains(expected), "{location}: {error}");
        }
        for readable in [
            "s3://my-bucket.v2/1/abc/artifacts",
            "mlflow-artifacts:/1/a..b/x",
        ] {
            assert!(parse_location(readable, &server()).is_ok(), "{readable}");
        }
    }

    #[test]
    fn a_logged_models_search_answer_names_each_model_and_its_run() {
        // What the search's caller compares with the name and run it searched for.
        let answer: SearchAnswer = fixture(include_bytes!(
            "../tests/fixtures/mlflow/logged-models-search.json"
        ));
        let info = &answer.models[0].info;
        assert_eq!(info.name, "model");
        assert_eq!(info.source_run_id, "a81fa200efe24b57a91bd9a484678af4");
    }

    #[test]
    fn a_version_is_answered_in_mlflow_s_own_form_and_the_alias_points_at_it() {
        let wire = |version: &str, aliases: Option<Vec<String>>| WireVersion {
            name: "bike".into(),
            version: version.into(),
            source: "models:/m-1".into(),
            run_id: String::new(),
            status: "READY".into(),
            aliases,
        };
        let champion = uri("models:/bike@champion");
        for version in ["01", "0001", "00"] {
            assert!(
                model_version(&uri("models:/bike/1"), wire(version, None)).is_err(),
                "{version}"
            );
            assert!(
                model_version(&champion, wire(version, None)).is_err(),
                "{version}"
            );
        }
        let other = Some(vec!["challenger".to_owned()]);
        let error = model_version(&champion, wire("3", other))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("which the alias does not point at"),
            "{error}"
        );
        assert!(model_version(&champion, wire("3", Some(vec!["champion".into()]))).is_ok());
        // The alias endpoint lists the aliases: an answer without them is not its answer.
        assert!(model_version(&champion, wire("3", None)).is_err());
    }
}
