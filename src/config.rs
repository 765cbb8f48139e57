//! Settings read once from the environment at cold start. A wrong value stops the cold start
//! with a message naming the variable. The README's configuration table lists the same.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::publish::{DEFAULT_PUBLISH_CONCURRENCY, MAX_PUBLISH_CONCURRENCY};
use crate::registry::http::{Credentials, TrackingServer};
use crate::registry::{self, RegistryUri};
use crate::trees::TreeKernel;

/// Model directory used when `MODEL_URI` is not set: the bundled model, relative to the
/// working directory (the repository root locally, `/var/task` in the Lambda image).
pub const DEFAULT_MODEL_DIR: &str = "models/bike-demand";
/// Name stamped on prediction events when `MODEL_NAME` is not set.
pub const DEFAULT_MODEL_NAME: &str = "bike-demand";
/// Key of a regressor's value in the `prediction` object when `PREDICTION_FIELD` is not set:
/// `cnt`, the bike-demand count.
pub const DEFAULT_PREDICTION_FIELD: &str = "cnt";
/// Version stamped on prediction events when `RUN_ID` is not set.
pub const DEFAULT_RUN_ID: &str = "local";
/// ONNX Runtime library used when `ORT_DYLIB_PATH` is not set: looked up next to the
/// executable first, then by the system loader.
pub const DEFAULT_ORT_LIBRARY: &str = "libonnxruntime.so";

/// MLflow experiment used in S3 model paths when `MLFLOW_EXPERIMENT_ID` is not set.
pub const DEFAULT_EXPERIMENT_ID: &str = "1";
/// Run artifact path of the model when `MODEL_ARTIFACT_PATH` is not set.
pub const DEFAULT_ARTIFACT_PATH: &str = "model";
/// Local cache of models downloaded from S3 when `MODEL_CACHE_DIR` is not set. `/tmp` is the
/// only writable place in Lambda, and it survives between invocations of one sandbox.
pub const DEFAULT_MODEL_CACHE_DIR: &str = "/tmp/bike-prediction/models";

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelLocation {
    /// A local MLflow model directory.
    Directory(PathBuf),
    /// An MLflow model directory in S3: the objects under `s3://{bucket}/{prefix}/`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix of the model directory, without leading or trailing `/`.
        prefix: String,
    },
    /// A version of a model in the MLflow Model Registry (`models:/...`), resolved through
    /// the tracking server ([`Config::registry`]).
    Registry(RegistryUri),
}

impl std::fmt::Display for ModelLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Directory(dir) => write!(f, "{}", dir.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Registry(uri) => write!(f, "{uri}"),
        }
    }
}

/// The service's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to load the model from (`MODEL_URI`, or `MODEL_BUCKET` with `RUN_ID` or `MODEL_ID`).
    pub model: ModelLocation,
    /// Where models downloaded from S3 are kept (`MODEL_CACHE_DIR`).
    pub model_cache_dir: PathBuf,
    /// Longest a model download may take (`MODEL_DOWNLOAD_TIMEOUT`, in seconds).
    pub model_download_timeout: Duration,
    /// Model name on prediction events (`MODEL_NAME`).
    pub model_name: String,
    /// Model version on prediction events: `RUN_ID`, else `MODEL_ID`; for a registry model
    /// without `RUN_ID`, `<name>/<version>` of the version served instead.
    pub version: String,
    /// `RUN_ID`, when set: it is then the version on events whatever the model.
    pub run_id: Option<String>,
    /// The tracking server, for a `models:/` [`ModelLocation::Registry`] (`MLFLOW_TRACKING_URI`
    /// and its credentials); `None` for other models.
    pub registry: Option<registry::Settings>,
    /// How often the alias of a `models:/<name>@<alias>` model is resolved again, at the start
    /// of an invocation (`MODEL_REFRESH_SECONDS`); `None`: never.
    pub model_refresh: Option<Duration>,
    /// Key of a regressor's value in the `prediction` object (`PREDICTION_FIELD`).
    pub prediction_field: String,
    /// Return predictions without publishing them (`TEST_RUN`).
    pub test_run: bool,
    /// Kinesis stream the prediction events go to (`OUTPUT_STREAM`).
    pub output_stream: Option<String>,
    /// Kinesis stream rejected records are kept in (`DEAD_LETTER_STREAM`); without it they
    /// are logged in full.
    pub dead_letter_stream: Option<String>,
    /// ONNX Runtime shared library (`ORT_DYLIB_PATH`).
    pub ort_library: PathBuf,
    /// Most `PutRecords` calls in flight at once to each stream (`PUBLISH_CONCURRENCY`).
    pub publish_concurrency: usize,
    /// Prediction events packed into KPL aggregated records (`OUTPUT_AGGREGATION=kpl`).
    pub output_aggregation: bool,
    /// Threads of one inference (`INFERENCE_THREADS`, else [`cpus`]).
    pub inference_threads: usize,
    /// Which kernel runs the model's tree ensembles (`TREE_KERNEL`).
    pub tree_kernel: TreeKernel,
    /// Longest publishing may take in one invocation (`PUBLISH_BUDGET_SECONDS`); `None`: until
    /// the invocation's deadline, or [`crate::handler::DEFAULT_PUBLISH_BUDGET`] without one.
    pub publish_budget: Option<Duration>,
}

/// A variable has a value the service cannot use.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The value cannot be parsed.
    #[error("{variable}={value:?} is not valid: {expected}")]
    Invalid {
        /// The environment variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A variable needs another one that is not set.
    #[error("{variable} is set, but {needs}")]
    Incomplete {
        /// The variable that is set.
        variable: &'static str,
        /// What else must be set.
        needs: &'static str,
    },
    /// Publishing is on but there is nowhere to publish to.
    #[error(
        "OUTPUT_STREAM is not set: set it to the Kinesis stream for predictions, or set TEST_RUN=True to publish nothing"
    )]
    NoOutputStream,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which returns a variable's value if set.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let run_id = get("RUN_ID");
        let model_id = get("MODEL_ID");
        let model = match (get("MODEL_URI"), get("MODEL_BUCKET")) {
            (Some(uri), _) => match RegistryUri::parse(&uri) {
                Some(Ok(registered)) => ModelLocation::Registry(registered),
                Some(Err(expected)) => {
                    return Err(ConfigError::Invalid {
                        variable: "MODEL_URI",
                        value: uri,
                        expected,
                    });
                }
                None => parse_model_uri(uri)?,
            },
            (None, Some(bucket)) => {
                let experiment =
                    get("MLFLOW_EXPERIMENT_ID").unwrap_or_else(|| DEFAULT_EXPERIMENT_ID.into());
                let prefix = match (&model_id, &run_id) {
                    // MLflow 3 keeps logged models outside the run.
                    (Some(model_id), _) => format!("{experiment}/models/{model_id}/artifacts"),
                    // MLflow 2 keeps them among the run's artifacts.
                    (None, Some(run_id)) => {
                        let path = get("MODEL_ARTIFACT_PATH")
                            .unwrap_or_else(|| DEFAULT_ARTIFACT_PATH.into());
                        format!("{experiment}/{run_id}/artifacts/{}", path.trim_matches('/'))
                    }
                    (None, None) => {
                        return Err(ConfigError::Incomplete {
                            variable: "MODEL_BUCKET",
                            needs: "neither RUN_ID nor MODEL_ID names the model in it",
                        });
                    }
                };
                ModelLocation::S3 { bucket, prefix }
            }
            (None, None) => ModelLocation::Directory(DEFAULT_MODEL_DIR.into()),
        };
        let registry = match &model {
            ModelLocation::Registry(_) => Some(registry_settings(&get)?),
            _ => None,
        };
        let model_refresh = get("MODEL_REFRESH_SECONDS")
            .map(|value| parse_refresh(value, &model))
            .transpose()?;
        if model_refresh.is_some() && run_id.is_some() {
            // Events would carry RUN_ID whatever version served them after a promotion.
            return Err(ConfigError::Incomplete {
                variable: "MODEL_REFRESH_SECONDS",
                needs: "RUN_ID is set, and it would stay the events' version after the alias \
                        moves: unset RUN_ID, so that events carry <name>/<version>",
            });
        }
        let test_run = match get("TEST_RUN") {
            Some(value) => parse_bool("TEST_RUN", value)?,
            None => false,
        };
        Ok(Self {
            model,
            model_cache_dir: get("MODEL_CACHE_DIR")
                .unwrap_or_else(|| DEFAULT_MODEL_CACHE_DIR.into())
                .into(),
            model_download_timeout: match get("MODEL_DOWNLOAD_TIMEOUT") {
                Some(value) => parse_seconds(
                    "MODEL_DOWNLOAD_TIMEOUT",
                    value,
                    900.0,
                    "seconds for a whole model download, more than 0 and at most 900",
                )?,
                None => crate::download::DEFAULT_DOWNLOAD_TIMEOUT,
            },
            model_name: get("MODEL_NAME").unwrap_or_else(|| DEFAULT_MODEL_NAME.into()),
            version: run_id
                .clone()
                .or(model_id)
                .unwrap_or_else(|| DEFAULT_RUN_ID.into()),
            run_id,
            registry,
            model_refresh,
            prediction_field: prediction_field(get("PREDICTION_FIELD"))?,
            test_run,
            output_stream: get("OUTPUT_STREAM"),
            dead_letter_stream: get("DEAD_LETTER_STREAM"),
            ort_library: get("ORT_DYLIB_PATH")
                .unwrap_or_else(|| DEFAULT_ORT_LIBRARY.into())
                .into(),
            publish_concurrency: match get("PUBLISH_CONCURRENCY") {
                Some(value) => parse_count(
                    "PUBLISH_CONCURRENCY",
                    value,
                    MAX_PUBLISH_CONCURRENCY,
                    "a whole number of PutRecords calls from 1 to 256",
                )?,
                None => DEFAULT_PUBLISH_CONCURRENCY,
            },
            output_aggregation: match get("OUTPUT_AGGREGATION") {
                Some(value) => parse_aggregation(value)?,
                None => false,
            },
            tree_kernel: match get("TREE_KERNEL") {
                Some(value) => parse_tree_kernel(value)?,
                None => TreeKernel::default(),
            },
            inference_threads: match get("INFERENCE_THREADS") {
                Some(value) => parse_count(
                    "INFERENCE_THREADS",
                    value,
                    64,
                    "a whole number of threads from 1 to 64",
                )?,
                None => cpus(
                    get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|mb| mb.trim().parse().ok()),
                    std::thread::available_parallelism().map_or(1, usize::from),
                ),
            },
            publish_budget: get("PUBLISH_BUDGET_SECONDS")
                .map(parse_budget)
                .transpose()?,
        })
    }
}

/// Checks `PREDICTION_FIELD`: any key but `pred_id`, which the event already has.
fn prediction_field(value: Option<String>) -> Result<String, ConfigError> {
    match value {
        None => Ok(DEFAULT_PREDICTION_FIELD.into()),
        Some(value) if value == "pred_id" => Err(ConfigError::Invalid {
            variable: "PREDICTION_FIELD",
            value,
            expected: "a key other than `pred_id`, which every prediction already has",
        }),
        Some(value) => Ok(value),
    }
}

/// Parses a whole number from 1 to `max` for `variable`, or says it is not `expected`.
fn parse_count(
    variable: &'static str,
    value: String,
    max: usize,
    expected: &'static str,
) -> Result<usize, ConfigError> {
    match value.trim().parse::<usize>() {
        Ok(count) if (1..=max).contains(&count) => Ok(count),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            expected,
        }),
    }
}

/// Parses `OUTPUT_AGGREGATION`: `kpl` (KPL aggregated records) or `none`.
fn parse_aggregation(value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "kpl" => Ok(true),
        "none" => Ok(false),
        _ => Err(ConfigError::Invalid {
            variable: "OUTPUT_AGGREGATION",
            value,
            expected: "kpl (KPL aggregated records) or none",
        }),
    }
}

/// Parses `TREE_KERNEL`: `native` (the service's own, where it reproduces ONNX Runtime's) or
/// `onnxruntime`.
fn parse_tree_kernel(value: String) -> Result<TreeKernel, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "native" => Ok(TreeKernel::Native),
        "onnxruntime" => Ok(TreeKernel::OnnxRuntime),
        _ => Err(ConfigError::Invalid {
            variable: "TREE_KERNEL",
            value,
            expected: "native (the service's tree kernel) or onnxruntime",
        }),
    }
}

/// Memory that buys one vCPU in Lambda: CPU time is allotted in proportion to memory.
pub const MB_PER_VCPU: f64 = 1769.0;

/// The CPUs the function has: in Lambda (with its memory size `lambda_mb`), the vCPUs its
/// memory buys, rounded to the nearest whole one and at least one, no more than the
/// `visible` ones; elsewhere the `visible` ones (what the process may run on, within its
/// cgroup's CPU quota, as `std::thread::available_parallelism` reads them). A Lambda sandbox
/// shows two or more CPUs whatever its memory, but below 1,769 MB gives less than one's time.
pub fn cpus(lambda_mb: Option<u32>, visible: usize) -> usize {
    let visible = visible.max(1);
    match lambda_mb {
        Some(mb) => ((f64::from(mb) / MB_PER_VCPU).round() as usize).clamp(1, visible),
        None => visible,
    }
}

/// Parses `PUBLISH_BUDGET_SECONDS`: seconds, more than 0 and at most 900 (Lambda's longest
/// timeout).
fn parse_budget(value: String) -> Result<Duration, ConfigError> {
    parse_seconds(
        "PUBLISH_BUDGET_SECONDS",
        value,
        900.0,
        "seconds, more than 0 and at most 900",
    )
}

/// The tracking server a `models:/` URI is resolved with: `MLFLOW_TRACKING_URI`, its
/// credentials (basic auth wins over a token, as in MLflow's client), and the timeout of each
/// call (`MLFLOW_HTTP_REQUEST_TIMEOUT`, MLflow's variable, with a default fit for a cold start).
fn registry_settings(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<registry::Settings, ConfigError> {
    let uri = get("MLFLOW_TRACKING_URI").ok_or(ConfigError::Incomplete {
        variable: "MODEL_URI",
        needs: "it names a registry model (models:/...) and MLFLOW_TRACKING_URI is not set: \
                set it to the MLflow tracking server's http:// or https:// URL",
    })?;
    let server = TrackingServer::parse(&uri).map_err(|expected| ConfigError::Invalid {
        variable: "MLFLOW_TRACKING_URI",
        // Never the value itself: it may hold credentials.
        value: "<the value set>".into(),
        expected,
    })?;
    // A secret kept in a file often ends in a newline; what remains must be sendable in an
    // HTTP header, or the calls would go out without it. Never the value in the error.
    let secret = |variable: &'static str| -> Result<Option<String>, ConfigError> {
        let Some(value) = get(variable) else {
            return Ok(None);
        };
        let value = value.trim().to_owned();
        match value.bytes().all(|byte| (0x20..0x7f).contains(&byte)) && !value.is_empty() {
            true => Ok(Some(value)),
            false => Err(ConfigError::Invalid {
                variable,
                value: "<the value set>".into(),
                expected: "printable ASCII characters, not empty (an HTTP header's)",
            }),
        }
    };
    let credentials = match (
        secret("MLFLOW_TRACKING_USERNAME")?,
        secret("MLFLOW_TRACKING_PASSWORD")?,
        secret("MLFLOW_TRACKING_TOKEN")?,
    ) {
        (Some(username), Some(password), _) => Credentials::Basic { username, password },
        (Some(_), None, _) => {
            return Err(ConfigError::Incomplete {
                variable: "MLFLOW_TRACKING_USERNAME",
                needs: "MLFLOW_TRACKING_PASSWORD is not set",
            });
        }
        (None, Some(_), _) => {
            return Err(ConfigError::Incomplete {
                variable: "MLFLOW_TRACKING_PASSWORD",
                needs: "MLFLOW_TRACKING_USERNAME is not set",
            });
        }
        (None, None, Some(token)) => Credentials::Token(token),
        (None, None, None) => Credentials::None,
    };
    let timeout = match get("MLFLOW_HTTP_REQUEST_TIMEOUT") {
        Some(value) => parse_seconds(
            "MLFLOW_HTTP_REQUEST_TIMEOUT",
            value,
            900.0,
            "seconds, more than 0 and at most 900",
        )?,
        None => registry::DEFAULT_REQUEST_TIMEOUT,
    };
    Ok(registry::Settings {
        server,
        credentials,
        timeout,
    })
}

/// Parses `MODEL_REFRESH_SECONDS`, which only a model named by an alias can follow.
fn parse_refresh(value: String, model: &ModelLocation) -> Result<Duration, ConfigError> {
    let every = parse_seconds(
        "MODEL_REFRESH_SECONDS",
        value,
        86_400.0,
        "seconds between two resolutions of the alias, more than 0 and at most 86400",
    )?;
    match model {
        ModelLocation::Registry(uri) if uri.moves() => Ok(every),
        _ => Err(ConfigError::Incomplete {
            variable: "MODEL_REFRESH_SECONDS",
            needs: "only a MODEL_URI of the form models:/<name>@<alias> can move: \
                    name the model by an alias, or unset MODEL_REFRESH_SECONDS",
        }),
    }
}

/// Parses seconds, more than 0 and at most `max`, for `variable`.
fn parse_seconds(
    variable: &'static str,
    value: String,
    max: f64,
    expected: &'static str,
) -> Result<Duration, ConfigError> {
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= max => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            expected,
        }),
    }
}

/// Parses `MODEL_URI`: `s3://bucket/prefix` or a local directory.
fn parse_model_uri(uri: String) -> Result<ModelLocation, ConfigError> {
    let Some(path) = uri.strip_prefix("s3://") else {
        if uri.contains("://") {
            return Err(ConfigError::Invalid {
                variable: "MODEL_URI",
                value: uri,
                expected: "s3://bucket/prefix, models:/<name>@<alias>, models:/<name>/<version> \
                           or a local MLflow model directory",
            });
        }
        return Ok(ModelLocation::Directory(uri.into()));
    };
    match path.split_once('/') {
        Some((bucket, prefix)) if !bucket.is_empty() && !prefix.trim_matches('/').is_empty() => {
            Ok(ModelLocation::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            })
        }
        _ => Err(ConfigError::Invalid {
            variable: "MODEL_URI",
            value: uri,
            expected: "s3://bucket/prefix, with the model directory's prefix",
        }),
    }
}

impl Config {
    /// The stream to publish predictions to, or `None` with `TEST_RUN`.
    pub fn publish_stream(&self) -> Result<Option<&str>, ConfigError> {
        match (&self.output_stream, self.test_run) {
            (_, true) => Ok(None),
            (Some(stream), false) => Ok(Some(stream)),
            (None, false) => Err(ConfigError::NoOutputStream),
        }
    }

    /// The stream to keep rejected records in, or `None` with `TEST_RUN` or when not set.
    pub fn dead_letter_stream(&self) -> Option<&str> {
        self.dead_letter_stream
            .as_deref()
            .filter(|_| !self.test_run)
    }
}

/// Parses a boolean written as Python writes one (`True`, `False`), in any case, or as
/// `1`/`0`, `yes`/`no`.
pub(crate) fn parse_bool(variable: &'static str, value: String) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            expected: "True or False",
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_serve_the_bundled_model() {
        let config = config(&[]).unwrap();
        assert_eq!(
            config.model,
            ModelLocation::Directory(DEFAULT_MODEL_DIR.into())
        );
        assert_eq!(config.model_name, DEFAULT_MODEL_NAME);
        assert_eq!(config.version, DEFAULT_RUN_ID);
        assert_eq!(
            config.model_cache_dir,
            PathBuf::from(DEFAULT_MODEL_CACHE_DIR)
        );
        assert!(!config.test_run);
        assert_eq!(config.output_stream, None);
        assert_eq!(config.ort_library, PathBuf::from(DEFAULT_ORT_LIBRARY));
        assert_eq!(config.prediction_field, "cnt");
    }

    #[test]
    fn prediction_field_names_the_regressor_value_but_not_pred_id() {
        let config = super::tests::config(&[("PREDICTION_FIELD", "demand")]).unwrap();
        assert_eq!(config.prediction_field, "demand");
        let error = super::tests::config(&[("PREDICTION_FIELD", "pred_id")]).unwrap_err();
        assert!(
            error.to_string().starts_with("PREDICTION_FIELD="),
            "{error}"
        );
    }

    #[test]
    fn run_id_gives_the_mlflow_2_run_artifact_path() {
        let config = config(&[("MODEL_BUCKET", "models"), ("RUN_ID", "4302f22a")]).unwrap();
        assert_eq!(
            config.model.to_string(),
            "s3://models/1/4302f22a/artifacts/model"
        );
        assert_eq!(config.version, "4302f22a");
        let config = config_with_artifact_path();
        assert_eq!(config.model.to_string(), "s3://models/7/r/artifacts/models");
    }

    fn config_with_artifact_path() -> Config {
        config(&[
            ("MODEL_BUCKET", "models"),
            ("RUN_ID", "r"),
            ("MLFLOW_EXPERIMENT_ID", "7"),
            ("MODEL_ARTIFACT_PATH", "models/"),
        ])
        .unwrap()
    }

    #[test]
    fn model_id_gives_the_mlflow_3_logged_model_path_and_wins_over_run_id() {
        let config = config(&[
            ("MODEL_BUCKET", "b"),
            ("RUN_ID", "r"),
            ("MODEL_ID", "m-123"),
        ])
        .unwrap();
        assert_eq!(config.model.to_string(), "s3://b/1/models/m-123/artifacts");
        assert_eq!(config.version, "r");
        let config = super::tests::config(&[("MODEL_BUCKET", "b"), ("MODEL_ID", "m-123")]).unwrap();
        assert_eq!(config.version, "m-123");
    }

    #[test]
    fn model_uri_wins_over_bucket() {
        let config = config(&[
            ("MODEL_URI", "s3://other/some/prefix/"),
            ("MODEL_BUCKET", "b"),
            ("RUN_ID", "r"),
        ])
        .unwrap();
        assert_eq!(
            config.model,
            ModelLocation::S3 {
                bucket: "other".into(),
                prefix: "some/prefix".into()
            }
        );
    }

    #[test]
    fn bucket_without_run_or_model_id_is_refused() {
        let error = config(&[("MODEL_BUCKET", "b")]).unwrap_err();
        assert!(error.to_string().contains("RUN_ID"), "{error}");
    }

    #[test]
    fn malformed_model_uri_is_refused() {
        for uri in [
            "s3://bucket",
            "s3:///prefix",
            "https://example.com/model",
            "s3://bucket/",
        ] {
            let error = config(&[("MODEL_URI", uri)]).unwrap_err();
            assert!(
                error.to_string().starts_with("MODEL_URI="),
                "{uri}: {error}"
            );
        }
    }

    #[test]
    fn models_uris_name_a_registry_version_through_the_tracking_server() {
        let config = config(&[
            ("MODEL_URI", "models:/bike-demand@champion"),
            ("MLFLOW_TRACKING_URI", "https://mlflow.example.com"),
            ("MLFLOW_TRACKING_TOKEN", "t0ken"),
            ("MODEL_REFRESH_SECONDS", "60"),
        ])
        .unwrap();
        assert_eq!(config.model.to_string(), "models:/bike-demand@champion");
        let registry = config.registry.unwrap();
        assert_eq!(registry.server.to_string(), "https://mlflow.example.com");
        assert_eq!(registry.credentials, Credentials::Token("t0ken".into()));
        // A secret read from a file keeps its final newline; it is not part of the token.
        let trimmed = super::tests::config(&[
            ("MODEL_URI", "models:/bike-demand@champion"),
            ("MLFLOW_TRACKING_URI", "https://mlflow.example.com"),
            ("MLFLOW_TRACKING_TOKEN", "t0ken\n"),
        ])
        .unwrap();
        assert_eq!(
            trimmed.registry.unwrap().credentials,
            Credentials::Token("t0ken".into())
        );
        assert_eq!(registry.timeout, registry::DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(config.model_refresh, Some(Duration::from_secs(60)));
        assert_eq!(config.run_id, None);

        let basic = super::tests::config(&[
            ("MODEL_URI", "models:/bike-demand/3"),
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
            ("MLFLOW_TRACKING_USERNAME", "alice"),
            ("MLFLOW_TRACKING_PASSWORD", "s3cret"),
            ("MLFLOW_TRACKING_TOKEN", "ignored"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "2.5"),
        ])
        .unwrap();
        let registry = basic.registry.unwrap();
        assert!(matches!(registry.credentials, Credentials::Basic { .. }));
        assert_eq!(registry.timeout, Duration::from_millis(2500));
        assert_eq!(basic.model_refresh, None);
    }

    #[test]
    fn a_registry_model_needs_a_tracking_server_and_whole_credentials() {
        let uri = ("MODEL_URI", "models:/bike-demand@champion");
        let server = ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000");
        for (vars, starts) in [
            (vec![uri], "MODEL_URI is set, but it names a registry model"),
            (
                vec![uri, ("MLFLOW_TRACKING_URI", "databricks")],
                "MLFLOW_TRACKING_URI=",
            ),
            (
                vec![uri, server, ("MLFLOW_TRACKING_USERNAME", "alice")],
                "MLFLOW_TRACKING_USERNAME is set, but MLFLOW_TRACKING_PASSWORD",
            ),
            (
                vec![uri, server, ("MLFLOW_TRACKING_PASSWORD", "s3cret")],
                "MLFLOW_TRACKING_PASSWORD is set, but",
            ),
            (
                vec![uri, server, ("MLFLOW_HTTP_REQUEST_TIMEOUT", "0")],
                "MLFLOW_HTTP_REQUEST_TIMEOUT=",
            ),
            (
                vec![uri, server, ("MODEL_REFRESH_SECONDS", "never")],
                "MODEL_REFRESH_SECONDS=",
            ),
            (
                vec![
                    ("MODEL_URI", "models:/bike-demand/3"),
                    server,
                    ("MODEL_REFRESH_SECONDS", "5"),
                ],
                "MODEL_REFRESH_SECONDS is set, but only",
            ),
            (
                vec![("MODEL_REFRESH_SECONDS", "5")],
                "MODEL_REFRESH_SECONDS is set",
            ),
            (
                vec![("MODEL_URI", "models:/bike-demand/Production"), server],
                "MODEL_URI=",
            ),
            (
                vec![
                    uri,
                    server,
                    ("MODEL_REFRESH_SECONDS", "5"),
                    ("RUN_ID", "r-1"),
                ],
                "MODEL_REFRESH_SECONDS is set, but RUN_ID is set",
            ),
            (
                vec![uri, server, ("MLFLOW_TRACKING_TOKEN", "line\nbreak")],
                "MLFLOW_TRACKING_TOKEN=",
            ),
        ] {
            let error = config(&vars).unwrap_err().to_string();
            assert!(error.starts_with(starts), "{vars:?}: {error}");
        }
        // Credentials in the URI are refused without being repeated.
        let error = config(&[uri, ("MLFLOW_TRACKING_URI", "https://alice:s3cret@host")])
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn an_explicit_run_id_stays_the_version_of_a_registry_model() {
        let config = config(&[
            ("MODEL_URI", "models:/bike-demand@champion"),
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
            ("RUN_ID", "r-1"),
        ])
        .unwrap();
        assert_eq!(config.run_id.as_deref(), Some("r-1"));
        assert_eq!(config.version, "r-1");
    }

    #[test]
    fn publishing_needs_an_output_stream_unless_test_run() {
        assert_eq!(
            config(&[]).unwrap().publish_stream(),
            Err(ConfigError::NoOutputStream)
        );
        assert_eq!(
            config(&[("TEST_RUN", "True")]).unwrap().publish_stream(),
            Ok(None)
        );
        let config = config(&[("OUTPUT_STREAM", "out")]).unwrap();
        assert_eq!(config.publish_stream(), Ok(Some("out")));
    }

    #[test]
    fn test_run_accepts_python_spellings() {
        for (value, expected) in [
            ("True", true),
            ("true", true),
            ("1", true),
            ("False", false),
            ("0", false),
        ] {
            assert_eq!(
                config(&[("TEST_RUN", value)]).unwrap().test_run,
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn publish_concurrency_is_1_to_256_calls() {
        assert_eq!(
            config(&[]).unwrap().publish_concurrency,
            DEFAULT_PUBLISH_CONCURRENCY
        );
        for (value, calls) in [("1", 1), (" 32 ", 32), ("256", 256)] {
            let config = config(&[("PUBLISH_CONCURRENCY", value)]).unwrap();
            assert_eq!(config.publish_concurrency, calls, "{value}");
        }
        for value in ["0", "257", "-1", "8.5", "many"] {
            let error = config(&[("PUBLISH_CONCURRENCY", value)]).unwrap_err();
            assert!(
                error.to_string().starts_with("PUBLISH_CONCURRENCY="),
                "{value}: {error}"
            );
        }
    }

    #[test]
    fn publish_budget_is_seconds_up_to_lambda_s_longest_timeout() {
        assert_eq!(config(&[]).unwrap().publish_budget, None);
        let budget = |value| config(&[("PUBLISH_BUDGET_SECONDS", value)]);
        assert_eq!(
            budget("2.5").unwrap().publish_budget,
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            budget("900").unwrap().publish_budget,
            Some(Duration::from_secs(900))
        );
        for value in ["0", "-1", "901", "NaN", "inf", "soon"] {
            let error = budget(value).unwrap_err().to_string();
            assert!(error.starts_with("PUBLISH_BUDGET_SECONDS="), "{error}");
        }
    }

    #[test]
    fn inference_threads_follow_the_cpus_lambda_s_memory_buys() {
        // Lambda: 1,769 MB is one vCPU; 10,240 MB is six.
        assert_eq!(cpus(Some(128), 2), 1);
        assert_eq!(cpus(Some(1769), 2), 1);
        assert_eq!(cpus(Some(2653), 2), 1);
        assert_eq!(cpus(Some(3008), 2), 2);
        assert_eq!(cpus(Some(3008), 1), 1);
        assert_eq!(cpus(Some(10240), 6), 6);
        assert_eq!(cpus(Some(10240), 8), 6);
        // Elsewhere: what the process may run on.
        assert_eq!(cpus(None, 4), 4);
        assert_eq!(cpus(None, 0), 1);
        let threads = |vars: &[(&str, &str)]| config(vars).unwrap().inference_threads;
        assert_eq!(threads(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")]), 1);
        assert_eq!(threads(&[("INFERENCE_THREADS", "3")]), 3);
        for value in ["0", "65", "two"] {
            let error = config(&[("INFERENCE_THREADS", value)]).unwrap_err();
            assert!(
                error.to_string().starts_with("INFERENCE_THREADS="),
                "{error}"
            );
        }
    }

    #[test]
    fn output_aggregation_is_kpl_or_none() {
        let aggregation = |value| config(&[("OUTPUT_AGGREGATION", value)]);
        assert!(!config(&[]).unwrap().output_aggregation);
        assert!(aggregation("kpl").unwrap().output_aggregation);
        assert!(aggregation(" KPL ").unwrap().output_aggregation);
        assert!(!aggregation("none").unwrap().output_aggregation);
        let error = aggregation("gzip").unwrap_err().to_string();
        assert!(error.starts_with("OUTPUT_AGGREGATION="), "{error}");
    }

    #[test]
    fn tree_kernel_is_native_or_onnxruntime() {
        let kernel = |value| config(&[("TREE_KERNEL", value)]);
        assert_eq!(config(&[]).unwrap().tree_kernel, TreeKernel::Native);
        assert_eq!(kernel("native").unwrap().tree_kernel, TreeKernel::Native);
        assert_eq!(
            kernel(" OnnxRuntime ").unwrap().tree_kernel,
            TreeKernel::OnnxRuntime
        );
        let error = kernel("onnx").unwrap_err().to_string();
        assert!(error.starts_with("TREE_KERNEL=\"onnx\""), "{error}");
    }

    #[test]
    fn bad_test_run_names_the_variable() {
        let error = config(&[("TEST_RUN", "maybe")]).unwrap_err();
        assert!(
            error.to_string().starts_with("TEST_RUN=\"maybe\""),
            "{error}"
        );
    }

    #[test]
    fn values_are_taken_from_the_environment() {
        let config = config(&[
            ("MODEL_URI", "/opt/model"),
            ("MODEL_NAME", "m"),
            ("RUN_ID", "abc"),
            ("OUTPUT_STREAM", "out"),
            ("DEAD_LETTER_STREAM", "dead"),
            ("ORT_DYLIB_PATH", "/lib/ort.so"),
        ])
        .unwrap();
        assert_eq!(config.model, ModelLocation::Directory("/opt/model".into()));
        assert_eq!(config.model_name, "m");
        assert_eq!(config.version, "abc");
        assert_eq!(config.output_stream.as_deref(), Some("out"));
        assert_eq!(config.dead_letter_stream(), Some("dead"));
        assert_eq!(config.ort_library, PathBuf::from("/lib/ort.so"));
    }
}
