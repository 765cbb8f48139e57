//! The HTTP side of the tracking server: one small client for its REST API and its artifact
//! proxy, with the credentials MLflow's own client sends and a timeout on every call.
//!
//! Built on what the AWS SDK already compiles into the function (hyper 1 through
//! `hyper-util`'s pooled client, rustls on aws-lc with the system's trust roots, which
//! `SSL_CERT_FILE` can replace), so that the registry costs no second HTTP or TLS stack.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Largest REST answer read: the registry's answers are a few KiB; a larger body is not one.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Attempts of a call whose failure may pass (no connection, HTTP 429 or 5xx).
pub const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; it doubles for each later one.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

/// How the function proves who it is to the tracking server, as MLflow's client does.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No `Authorization` header.
    None,
    /// `MLFLOW_TRACKING_TOKEN`, sent as `Authorization: Bearer <token>`.
    Token(String),
    /// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`, sent as basic auth.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
}

/// Never prints a secret, so a `{:?}` of the configuration can be logged.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::Basic { .. } => f.write_str("Basic(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Every form in which a server could quote these credentials back: the token, the
    /// password, `user:password` and its base64, each header value whole. Longest first, so
    /// that a longer form is found before a shorter one inside it.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = match self {
            Self::None => Vec::new(),
            Self::Token(token) => vec![format!("Bearer {token}"), token.clone()],
            Self::Basic { username, password } => {
                let pair = format!("{username}:{password}");
                let encoded = base64_simd::STANDARD.encode_to_string(&pair);
                vec![format!("Basic {encoded}"), encoded, pair, password.clone()]
            }
        };
        // As JSON writes them in a string, and as Rust's `{:?}` (serde's messages) does.
        let escaped: Vec<String> = secrets
            .iter()
            .flat_map(|secret| {
                let json = serde_json::to_string(secret).unwrap_or_default();
                let debug = format!("{secret:?}");
                [json, debug].map(|quoted| quoted.trim_matches('"').to_owned())
            })
            .collect();
        secrets.extend(escaped);
        secrets.retain(|secret| !secret.is_empty());
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        secrets
    }

    /// The `Authorization` header's value, marked sensitive (hyper never prints it).
    fn header(&self) -> Option<HeaderValue> {
        let value = match self {
            Self::None => return None,
            Self::Token(token) => format!("Bearer {token}"),
            Self::Basic { username, password } => {
                let pair = format!("{username}:{password}");
                format!("Basic {}", base64_simd::STANDARD.encode_to_string(pair))
            }
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// The tracking server: `MLFLOW_TRACKING_URI`, an `http` or `https` URL without credentials
/// in it (they go in the variables of [`Credentials`]); a path in it is kept, as MLflow's
/// client keeps it, before `/api/2.0/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingServer {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The URL's path without a trailing `/` (empty for most servers).
    pub base_path: String,
}

impl TrackingServer {
    /// Parses a tracking URI; the error says what it should be.
    pub fn parse(uri: &str) -> Result<Self, &'static str> {
        let parsed: http::Uri = uri
            .trim()
            .parse()
            .map_err(|_| "an http:// or https:// URL of the MLflow tracking server")?;
        let scheme = match parsed.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme.to_owned(),
            _ => return Err("an http:// or https:// URL of the MLflow tracking server"),
        };
        let authority = parsed
            .authority()
            .ok_or("an http:// or https:// URL with the server's host")?;
        if authority.as_str().contains('@') {
            return Err(
                "a URL without credentials in it: set MLFLOW_TRACKING_TOKEN, or \
                        MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
            );
        }
        if parsed.query().is_some() {
            return Err("a URL without a query string");
        }
        Ok(Self {
            scheme,
            authority: authority.as_str().to_owned(),
            base_path: parsed.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The URL of `path` (starting with `/api/`) with `query` on this server.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!(
            "{}://{}{}{path}",
            self.scheme, self.authority, self.base_path
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query)
                    .finish(),
            );
        }
        url
    }
}

impl std::fmt::Display for TrackingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

/// Why one call to the tracking server failed.
#[derive(Debug, Error)]
pub enum CallError {
    /// The server answered with an error status; MLflow's answers name an `error_code`.
    #[error("HTTP {status}{}: {message}{}", code.as_deref().map(|code| format!(" {code}")).unwrap_or_default(), hint(*status))]
    Status {
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, ...), if the body had one.
        code: Option<String>,
        /// MLflow's `message`, or the start of the body.
        message: String,
    },
    /// No answer within the timeout.
    #[error("no answer within {} s (MLFLOW_HTTP_REQUEST_TIMEOUT)", .0.as_secs_f64())]
    Timeout(Duration),
    /// The request could not be sent: no connection, TLS refused, ...
    #[error("cannot reach the server")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    /// The answer's body broke off, or is larger than an answer can be.
    #[error("the answer could not be read")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The answer is not the JSON the endpoint returns.
    #[error("the answer is not what the endpoint returns: {0}")]
    Unexpected(String),
}

/// What an operator should check after a status that is not the registry's answer.
fn hint(status: u16) -> &'static str {
    match status {
        301 | 302 | 303 | 307 | 308 => {
            " (the server redirects, and the function follows no redirect: set \
             MLFLOW_TRACKING_URI to the address it redirects to, often its https:// one)"
        }
        401 | 403 => {
            " (check MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and \
             MLFLOW_TRACKING_PASSWORD, and the user's permission on the model)"
        }
        _ => "",
    }
}

impl CallError {
    /// Whether the same call may succeed later: no connection, a timeout, HTTP 429 or 5xx.
    /// A 4xx is the registry's answer about the model and never changes by retrying.
    pub fn may_pass(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Timeout(_) | Self::Unreachable(_) | Self::Body(_) => true,
            Self::Unexpected(_) => false,
        }
    }
}

/// MLflow's error body: `{"error_code": "...", "message": "..."}`.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<String>,
    message: Option<String>,
}

/// Why an answer's body could not be read: over [`MAX_ANSWER_BYTES`], which no endpoint
/// called answers and retrying would not change, or the connection failing while it came.
fn body_error(error: Box<dyn std::error::Error + Send + Sync>) -> CallError {
    match error.downcast_ref::<http_body_util::LengthLimitError>() {
        Some(_) => CallError::Unexpected(format!(
            "the answer is larger than {} MiB",
            MAX_ANSWER_BYTES >> 20
        )),
        None => CallError::Body(error),
    }
}

/// Whether a string of `value` (a key or a value, at any depth) is one `holds` finds.
fn json_strings_hold(value: &serde_json::Value, holds: &impl Fn(&[u8]) -> bool) -> bool {
    match value {
        serde_json::Value::String(text) => holds(text.as_bytes()),
        serde_json::Value::Array(items) => items.iter().any(|item| json_strings_hold(item, holds)),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(key, item)| holds(key.as_bytes()) || json_strings_hold(item, holds)),
        _ => false,
    }
}

/// Why an answer that holds the credentials sent is not used.
pub const QUOTES_CREDENTIALS: &str =
    "the answer holds the credentials sent to the server, so nothing of it is used";

/// Characters of an error body's message kept in a message (an HTML page from a proxy, or
/// an MLflow message).
const QUOTED_BODY_CHARS: usize = 200;

/// `text` from the server as a message may quote it: one line, and short, whatever the
/// server sent.
pub fn quoted(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTED_BODY_CHARS)
        .collect();
    text.trim().to_owned()
}

/// `text` with every one of `secrets` in it replaced by `<redacted>`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
    }
    text
}

/// Turns an answer into the value `T` its endpoint returns, or the error it says; `secrets`
/// (the credentials sent) never appear in the error, whatever the server quoted back.
pub fn read_answer<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    secrets: &[String],
) -> Result<T, CallError> {
    if status.is_success() {
        // serde_json quotes the values it did not expect.
        return serde_json::from_slice(body)
            .map_err(|error| CallError::Unexpected(quoted(&scrub(&error.to_string(), secrets))));
    }
    Err(status_error(status, body, secrets))
}

/// The error an answer with a failure `status` and `body` says, without `secrets` in it.
pub fn status_error(status: StatusCode, body: &[u8], secrets: &[String]) -> CallError {
    // Scrubbed before it is cut short, so that no part of a secret is left at the cut.
    let quoted = |text: &str| quoted(&scrub(text, secrets));
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            error_code,
            message,
        }) => (
            error_code.map(|code| quoted(&code)),
            quoted(&message.unwrap_or_default()),
        ),
        Err(_) => (None, quoted(&String::from_utf8_lossy(body))),
    };
    let message = match message.is_empty() {
        true => status.canonical_reason().unwrap_or_default().to_owned(),
        false => message,
    };
    CallError::Status {
        status: status.as_u16(),
        code,
        message,
    }
}

/// The client of one tracking server.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    connector: HttpsConnector<HttpConnector>,
    server: TrackingServer,
    authorization: Option<HeaderValue>,
    /// The credentials as a server could quote them back, kept out of every error.
    secrets: std::sync::Arc<[String]>,
    timeout: Duration,
    /// Attempts of a call whose failure may pass.
    attempts: u32,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Http {
    /// A client of `server` that sends `credentials` and gives each call `timeout`. HTTPS
    /// trusts the system's roots (`SSL_CERT_FILE` replaces them).
    pub fn new(
        server: TrackingServer,
        credentials: &Credentials,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector.clone());
        Ok(Self {
            client,
            connector,
            server,
            authorization: credentials.header(),
            secrets: credentials.secrets().into(),
            timeout,
            attempts: ATTEMPTS,
        })
    }

    /// Makes one attempt of each call, even of one whose failure may pass: for checks that
    /// are tried again later anyway, and should not keep an invocation waiting meanwhile.
    /// Each call then opens a connection of its own: between two checks the sandbox may be
    /// frozen for longer than the server keeps an idle connection open, and a call on a
    /// connection the server has closed fails.
    pub fn single_attempt(&mut self) {
        self.attempts = 1;
        self.client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(self.connector.clone());
    }

    /// The tracking server.
    pub fn server(&self) -> &TrackingServer {
        &self.server
    }

    /// Whether `bytes` (an answer, a file) hold the credentials sent, as they are or escaped.
    /// A server that quotes them back in what it serves would have them logged with it, so
    /// nothing of such an answer is used.
    pub fn quotes_credentials(&self, bytes: &[u8]) -> bool {
        let holds = |bytes: &[u8]| {
            self.secrets
                .iter()
                .any(|secret| memchr::memmem::find(bytes, secret.as_bytes()).is_some())
        };
        // JSON may also spell them with `\u` escapes: its strings are checked decoded.
        holds(bytes)
            || serde_json::from_slice::<serde_json::Value>(bytes)
                .is_ok_and(|value| json_strings_hold(&value, &holds))
    }

    /// The timeout of each call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `GET path?query`, its JSON answer read as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, CallError> {
        self.call(Method::GET, path, query, None).await
    }

    /// `POST path` with a JSON body, its JSON answer read as `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, CallError> {
        self.call(Method::POST, path, &[], Some(body.to_string()))
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<T, CallError> {
        self.retrying(path, || async {
            let request = self.request(method.clone(), path, query, body.clone());
            tokio::time::timeout(self.timeout, async {
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(CallError::Unreachable)?;
                let status = response.status();
                let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(body_error)?
                    .to_bytes();
                if status.is_success() && self.quotes_credentials(&bytes) {
                    return Err(CallError::Unexpected(QUOTES_CREDENTIALS.to_owned()));
                }
                read_answer(status, &bytes, &self.secrets)
            })
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout)))
        })
        .await
    }

    /// `attempt()` until it succeeds, fails in a way that will not pass, or has been tried
    /// [`ATTEMPTS`] times (once after [`Self::single_attempt`]), the pause doubling each time.
    async fn retrying<T, F: Future<Output = Result<T, CallError>>>(
        &self,
        path: &str,
        attempt: impl Fn() -> F,
    ) -> Result<T, CallError> {
        let mut delay = FIRST_RETRY_DELAY;
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(error) if error.may_pass() && tried < self.attempts => {
                    tracing::debug!(path, attempt = tried, %error, "tracking server call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    tried += 1;
                }
                answer => return answer,
            }
        }
    }

    /// `GET path` for a file: the response once its head has arrived with status 200 (within
    /// the timeout); its body is read by the caller. A failure that may pass is tried again
    /// as a REST call is.
    pub async fn get_file(
        &self,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, CallError> {
        self.retrying(path, || self.get_file_once(path)).await
    }

    async fn get_file_once(
        &self,
        path: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, CallError> {
        let request = self.request(Method::GET, path, &[], None);
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
            .map_err(CallError::Unreachable)?;
        // Only 200 is the whole file: a 206 is a part of it, a 204 nothing.
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status();
        let body = tokio::time::timeout(
            self.timeout,
            Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect(),
        )
        .await
        .map_err(|_| CallError::Timeout(self.timeout))?
        .map_err(body_error)?
        .to_bytes();
        if status.is_success() {
            return Err(CallError::Unexpected(format!(
                "HTTP {} instead of 200 with the whole file",
                status.as_u16()
            )));
        }
        Err(status_error(status, &body, &self.secrets))
    }

    /// The request for `method path?query`, with the credentials.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
        *request.method_mut() = method;
        // A URL made of a parsed authority and encoded parts always parses; if it ever did
        // not, the request goes to `/` and fails with the server's answer.
        *request.uri_mut() = self.server.url(path, query).parse().unwrap_or_default();
        let headers = request.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(uri: &str) -> TrackingServer {
        TrackingServer::parse(uri).unwrap()
    }

    #[test]
    fn tracking_uri_is_http_or_https_without_credentials() {
        let parsed = server("https://mlflow.example.com/prefix/");
        assert_eq!(parsed.scheme, "https");
        assert_eq!(parsed.authority, "mlflow.example.com");
        assert_eq!(parsed.base_path, "/prefix");
        assert_eq!(server("http://127.0.0.1:5000").base_path, "");
        for uri in [
            "databricks",
            "file:///tmp/mlruns",
            "sqlite:///mlflow.db",
            "127.0.0.1:5000",
            "https://user:secret@mlflow.example.com",
            "http://host/?a=b",
        ] {
            assert!(TrackingServer::parse(uri).is_err(), "{uri}");
        }
        let error = TrackingServer::parse("https://user:secret@host").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
    }

    #[test]
    fn query_values_are_encoded() {
        let url = server("http://127.0.0.1:5000").url(
            "/api/2.0/mlflow/registered-models/alias",
            &[("name", "bike demand/é&x"), ("alias", "champion")],
        );
        assert_eq!(
            url,
            "http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias?name=bike+demand%2F%C3%A9%26x&alias=champion"
        );
    }

    fn authorization(credentials: Credentials) -> Option<HeaderValue> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let http = Http::new(
            server("http://127.0.0.1:1"),
            &credentials,
            Duration::from_secs(1),
        )
        .unwrap();
        let request = http.request(Method::GET, "/api/2.0/mlflow/x", &[], None);
        request.headers().get(AUTHORIZATION).cloned()
    }

    #[test]
    fn a_token_is_sent_as_bearer_and_a_user_as_basic_auth_both_sensitive() {
        let bearer = authorization(Credentials::Token("t0ken".into())).unwrap();
        assert_eq!(bearer, "Bearer t0ken");
        assert!(bearer.is_sensitive());
        let basic = authorization(Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        })
        .unwrap();
        // base64("alice:s3cret")
        assert_eq!(basic, "Basic YWxpY2U6czNjcmV0");
        assert!(basic.is_sensitive());
        assert_eq!(authorization(Credentials::None), None);
    }

    #[test]
    fn credentials_never_print_their_secrets() {
        let token = Credentials::Token("t0ken".into());
        let basic = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        };
        for printed in [format!("{token:?}"), format!("{basic:?}")] {
            assert!(
                !printed.contains("t0ken") && !printed.contains("s3cret"),
                "{printed}"
            );
        }
    }

    #[test]
    fn mlflow_errors_name_their_status_and_code() {
        let error = status_error(
            StatusCode::BAD_REQUEST,
            include_bytes!("../../tests/fixtures/mlflow/error-unknown-alias.json"),
            &[],
        );
        assert_eq!(
            error.to_string(),
            "HTTP 400 INVALID_PARAMETER_VALUE: Registered model alias nope not found."
        );
        assert!(!error.may_pass());
        let error = status_error(
            StatusCode::NOT_FOUND,
            include_bytes!("../../tests/fixtures/mlflow/error-unknown-version.json"),
            &[],
        );
        assert!(
            error
                .to_string()
                .starts_with("HTTP 404 RESOURCE_DOES_NOT_EXIST: Model Version"),
            "{error}"
        );
        assert!(!error.may_pass());
    }

    #[test]
    fn other_error_bodies_are_quoted_short_and_on_one_line() {
        let page = format!("<html>\n<h1>Bad Gateway</h1>{}</html>", "x".repeat(1000));
        let error = status_error(StatusCode::BAD_GATEWAY, page.as_bytes(), &[]);
        let message = error.to_string();
        assert!(
            message.starts_with("HTTP 502: <html> <h1>Bad Gateway"),
            "{message}"
        );
        assert!(message.len() < 250 && !message.contains('\n'), "{message}");
        assert!(error.may_pass());
        let empty = status_error(StatusCode::UNAUTHORIZED, b"", &[]);
        assert!(
            empty
                .to_string()
                .starts_with("HTTP 401: Unauthorized (check MLFLOW_TRACKING_TOKEN")
        );
        assert!(status_error(StatusCode::TOO_MANY_REQUESTS, b"", &[]).may_pass());
    }

    #[test]
    fn a_success_that_is_not_the_expected_json_is_unexpected() {
        #[derive(Debug, Deserialize)]
        struct Answer {
            #[allow(dead_code)]
            artifact_uri: String,
        }
        let error = read_answer::<Answer>(StatusCode::OK, b"<html>", &[]).unwrap_err();
        assert!(matches!(error, CallError::Unexpected(_)), "{error}");
        let answer = read_answer::<Answer>(
            StatusCode::OK,
            include_bytes!("../../tests/fixtures/mlflow/download-uri-s3.json"),
            &[],
        );
        assert!(answer.is_ok());
    }

    #[test]
    fn credentials_a_server_quotes_back_are_never_in_its_errors() {
        let token = Credentials::Token("tok-12345".into());
        let basic = Credentials::Basic {
            username: "alice".into(),
            password: "s3cret!".into(),
        };
        let statuses = [
            StatusCode::UNAUTHORIZED,
            StatusCode::BAD_GATEWAY,
            StatusCode::OK,
        ];
        for credentials in [token, basic] {
            let secrets = credentials.secrets();
            let header = credentials.header().unwrap();
            let header = header.to_str().unwrap();
            for secret in secrets.iter().map(String::as_str).chain([header]) {
                // Whole, inside MLflow's JSON, as plain text, at the cut of a long message,
                // and in a value serde quotes when it is not the type expected.
                let bodies = [
                    serde_json::json!({"error_code": "UNAUTHENTICATED", "message": format!("bad {secret}")})
                        .to_string(),
                    format!("<html>Authorization: {secret}</html>"),
                    format!("{}{secret}", "x".repeat(QUOTED_BODY_CHARS - 3)),
                    serde_json::json!({"artifact_uri": secret}).to_string(),
                ];
                for status in statuses {
                    for body in &bodies {
                        #[derive(Debug, Deserialize)]
                        struct Answer {
                            #[allow(dead_code)]
                            artifact_uri: u64,
                        }
                        let Err(error) = read_answer::<Answer>(status, body.as_bytes(), &secrets)
                        else {
                            continue;
                        };
                        let message = error.to_string();
                        for part in ["tok-123", "s3cret", "YWxpY2U6czNjcmV0IQ"] {
                            assert!(!message.contains(part), "{status} {body}: {message}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_answer_or_file_holding_the_credentials_is_recognised_as_they_are_or_escaped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let token = Credentials::Token(r#"ab"cd\SECRET"#.into());
        let basic = Credentials::Basic {
            username: "alice".into(),
            password: r#"Tr0ub4dor\&3"x"#.into(),
        };
        for credentials in [token, basic] {
            let http = Http::new(
                server("http://127.0.0.1:1"),
                &credentials,
                Duration::from_secs(1),
            )
            .unwrap();
            let header = credentials.header().unwrap();
            let secret = match &credentials {
                Credentials::Token(token) => token.clone(),
                Credentials::Basic { password, .. } => password.clone(),
                Credentials::None => unreachable!(),
            };
            let json = serde_json::to_string(&secret).unwrap();
            let unicode_escaped: String = secret
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            for body in [
                format!(r#"{{"model_version": {{"name": {json}}}}}"#),
                format!(r#"{{"model_version": {{"status": "{unicode_escaped}"}}}}"#),
                format!("flavors: [{secret}]"),
                format!("{:?}", secret),
                format!(r#"{{"a": "{}"}}"#, header.to_str().unwrap()),
            ] {
                assert!(http.quotes_credentials(body.as_bytes()), "{body}");
            }
            assert!(!http.quotes_credentials(br#"{"model_version": {"name": "bike"}}"#));
            // Errors quoting the escaped forms are scrubbed too.
            let error = status_error(
                StatusCode::BAD_REQUEST,
                format!(
                    r#"{{"message": "bad {}"}}"#,
                    format!("{secret:?}").trim_matches('"')
                )
                .as_bytes(),
                &credentials.secrets(),
            )
            .to_string();
            assert!(
                !error.contains("SECRET") && !error.contains("Tr0ub4dor"),
                "{error}"
            );
        }
        let none = Http::new(
            server("http://127.0.0.1:1"),
            &Credentials::None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!none.quotes_credentials(b"anything at all"));
    }

    #[test]
    fn a_redirect_says_to_use_the_address_it_names() {
        let error = status_error(StatusCode::MOVED_PERMANENTLY, b"", &[]).to_string();
        assert!(
            error.contains("set MLFLOW_TRACKING_URI to the address it redirects to"),
            "{error}"
        );
    }
}
