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

/// CloudWatch namespace of the service's embedded-format metrics.
pub const METRICS_NAMESPACE: &str = "bike-prediction";

/// Installs the CloudWatch embedded-metric-format recorder for the `metrics` facade. Flush
/// what was recorded with [`flush_metrics`] after each invocation.
pub fn init_metrics() -> Option<&'static metrics_cloudwatch_embedded::Collector> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(METRICS_NAMESPACE)
        .with_dimension("function", function)
        .init()
    {
        Ok(collector) => Some(collector),
        Err(error) => {
            tracing::warn!(%error, "metrics disabled: cannot install the metrics recorder");
            None
        }
    }
}

/// Writes the metrics recorded since the last flush as one EMF document on stderr, where
/// CloudWatch Logs picks it up (stdout is kept for the `invoke` command's response).
pub fn flush_metrics(collector: Option<&metrics_cloudwatch_embedded::Collector>) {
    if let Some(Err(error)) = collector.map(|c| c.flush(std::io::stderr().lock())) {
        tracing::warn!(%error, "cannot write metrics");
    }
}

/// What happened to one batch: every record is predicted and published, rejected and kept, or
/// reported for re-delivery.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchReport {
    /// Lambda's request id for the invocation (empty outside Lambda).
    pub request_id: String,
    /// Records in the event.
    pub records: usize,
    /// Records predicted (their events are in the response).
    pub predicted: usize,
    /// Prediction events the output stream accepted.
    pub published: usize,
    /// Records rejected (never predictable).
    pub rejected: usize,
    /// Rejected records the dead-letter stream accepted.
    pub dead_lettered: usize,
    /// Records reported in `batchItemFailures` for re-delivery.
    pub redeliver: usize,
    /// `PutRecords` calls, to both streams.
    pub put_records_calls: usize,
    /// Entries sent again after a failure.
    pub put_records_resent: usize,
    /// Milliseconds decoding the payloads.
    pub decode_ms: f64,
    /// Milliseconds in ONNX Runtime.
    pub inference_ms: f64,
    /// Milliseconds publishing (both streams).
    pub publish_ms: f64,
    /// Milliseconds for the whole batch.
    pub total_ms: f64,
}

impl BatchReport {
    /// Logs the batch as one line and records it as metrics.
    pub fn emit(&self) {
        tracing::info!(
            request_id = self.request_id,
            records = self.records,
            predicted = self.predicted,
            published = self.published,
            rejected = self.rejected,
            dead_lettered = self.dead_lettered,
            redeliver = self.redeliver,
            put_records_calls = self.put_records_calls,
            put_records_resent = self.put_records_resent,
            decode_ms = self.decode_ms,
            inference_ms = self.inference_ms,
            publish_ms = self.publish_ms,
            total_ms = self.total_ms,
            "batch handled"
        );
        let counts = [
            ("Records", self.records),
            ("Predicted", self.predicted),
            ("Published", self.published),
            ("Rejected", self.rejected),
            ("DeadLettered", self.dead_lettered),
            ("Redelivered", self.redeliver),
            ("PutRecordsCalls", self.put_records_calls),
            ("PutRecordsResent", self.put_records_resent),
        ];
        for (name, count) in counts {
            metrics::counter!(name).increment(count as u64);
        }
        let times = [
            ("DecodeMs", self.decode_ms),
            ("InferenceMs", self.inference_ms),
            ("PublishMs", self.publish_ms),
            ("TotalMs", self.total_ms),
        ];
        for (name, milliseconds) in times {
            metrics::histogram!(name).record(milliseconds);
        }
    }
}
