//! Structured JSON logs on stderr, one object per line: CloudWatch Logs indexes the fields, and
//! stdout stays free for the `invoke` command's response.

use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::config::{self, ConfigError};

/// Level used when neither `RUST_LOG` nor Lambda's `AWS_LAMBDA_LOG_LEVEL` is set.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The only targets whose TRACE events are logged unless `LOG_RECORD_DATA` is true: the
/// service's own, which never carry a record's data. Libraries' TRACE events can: the raw
/// event (`lambda_runtime`'s "raw JSON event received from Lambda"), the AWS SDK's request and
/// response bodies ("transmitting request", "read HTTP response body"), and the SigV4
/// signer's signable body (with the SDK's `LOG_SIGNABLE_BODY=true`), which print `PutRecords`
/// bodies. They are dropped whatever `RUST_LOG` says.
pub const TRACE_TARGETS: &[&str] = &["bike_prediction"];

/// Installs the global JSON log subscriber. Call once, first thing in `main`. A
/// `LOG_RECORD_DATA` that is not a boolean is returned as an error after the subscriber is
/// installed (with record data kept out), so that it can be logged.
pub fn init() -> Result<(), ConfigError> {
    let record_data = std::env::var("LOG_RECORD_DATA")
        .ok()
        .map(|value| config::parse_bool("LOG_RECORD_DATA", value))
        .transpose();
    let allow_record_data = matches!(record_data, Ok(Some(true)));
    let levels = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives.to_ascii_lowercase()).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_LEVEL));
    let record_data_filter = filter_fn(move |metadata| {
        let target = metadata.target();
        allow_record_data
            || (target != crate::model::ONNX_RUNTIME_LOG_TARGET
                && (*metadata.level() != Level::TRACE || own_target(target)))
    });
    let logs = fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_filter(levels.and(record_data_filter));
    tracing_subscriber::registry().with(logs).init();
    record_data.map(|_| ())
}

/// Whether `target` is one of [`TRACE_TARGETS`] or inside one.
fn own_target(target: &str) -> bool {
    TRACE_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
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
/// CloudWatch Logs picks it up (stdout is kept for the `invoke` command's response). The
/// document names the model of `batch`, when there is one, as properties (`Version`, and for
/// a registry model `RegisteredModel`, `ModelVersion`, `RunId`), not dimensions: a promotion
/// does not start new metrics.
pub fn flush_metrics(
    collector: Option<&metrics_cloudwatch_embedded::Collector>,
    batch: Option<&BatchReport>,
) {
    if let (Some(collector), Some(batch)) = (collector, batch) {
        collector.set_property("Version", batch.version.clone());
        let properties = [
            ("RegisteredModel", &batch.registered_model),
            ("ModelVersion", &batch.model_version),
            ("RunId", &batch.run_id),
        ];
        for (name, value) in properties {
            match value {
                Some(value) => collector.set_property(name, value.clone()),
                None => collector.remove_property(name),
            };
        }
    }
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
    /// The `version` on the batch's events.
    pub version: String,
    /// The registered model served, for a registry model.
    pub registered_model: Option<String>,
    /// Its version number.
    pub model_version: Option<String>,
    /// The run that produced that version, if any.
    pub run_id: Option<String>,
    /// Milliseconds resolving the alias again and, if it moved, loading the new version, at
    /// the start of the invocation (`MODEL_REFRESH_SECONDS`); 0 without a check.
    pub refresh_ms: f64,
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
    /// Entries a stream answered as over its shard's write limits.
    pub put_records_throttled: usize,
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
            version = self.version,
            registered_model = self.registered_model,
            model_version = self.model_version,
            run_id = self.run_id,
            records = self.records,
            predicted = self.predicted,
            published = self.published,
            rejected = self.rejected,
            dead_lettered = self.dead_lettered,
            redeliver = self.redeliver,
            put_records_calls = self.put_records_calls,
            put_records_resent = self.put_records_resent,
            put_records_throttled = self.put_records_throttled,
            decode_ms = self.decode_ms,
            inference_ms = self.inference_ms,
            publish_ms = self.publish_ms,
            refresh_ms = self.refresh_ms,
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
            ("PutRecordsThrottled", self.put_records_throttled),
        ];
        for (name, count) in counts {
            metrics::counter!(name).increment(count as u64);
        }
        let times = [
            ("RefreshMs", self.refresh_ms),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_service_own_targets_log_at_trace_without_the_switch() {
        assert!(own_target("bike_prediction"));
        assert!(own_target("bike_prediction::handler"));
        for library in [
            "lambda_runtime::layers::api_response",
            "lambda_runtime::runtime",
            "aws_smithy_runtime::client::orchestrator::http",
            "aws_sigv4::http_request::sign",
            "hyper_util::client",
            "bike_prediction_other",
        ] {
            assert!(!own_target(library), "{library}");
        }
    }
}
