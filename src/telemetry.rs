//! Structured JSON logs on stderr, one object per line: CloudWatch Logs indexes the fields, and
//! stdout stays free for the `invoke` command's response.

use tracing_subscriber::EnvFilter;

/// Level used when neither `RUST_LOG` nor Lambda's `AWS_LAMBDA_LOG_LEVEL` is set.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Installs the global JSON log subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives.to_ascii_lowercase()).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_LEVEL));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
