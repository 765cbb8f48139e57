//! One invocation: raw event bytes -> decoded batch -> one inference -> prediction events ->
//! publisher -> response bytes.

use std::time::Instant;

use lambda_runtime::Diagnostic;
use thiserror::Error;

use crate::artifact::ModelArtifact;
use crate::config::{Config, ConfigError, ModelLocation};
use crate::download;
use crate::event;
use crate::kinesis::{EventError, KinesisBatch};
use crate::model::{InferenceError, Model, ModelError, OnnxRuntime};
use crate::output::{self, EventEncoder};
use crate::publish::{Outgoing, Publisher, RetryPolicy};

/// Why the function could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// ONNX Runtime or the model could not be loaded.
    #[error("cannot load the model")]
    Model(#[from] ModelError),
}

/// Why an invocation failed as a whole. Bad records never fail it: they are rejected.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// The event is not a Kinesis event.
    #[error(transparent)]
    Event(#[from] EventError),
    /// ONNX Runtime failed on the batch.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match error {
            HandlerError::Event(_) => "InvalidEvent",
            HandlerError::Inference(_) => "InferenceFailed",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error_chain(&error),
        }
    }
}

/// Formats an error with all its sources, `outer: inner: innermost`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The standard AWS configuration chain: environment, profile files, container or instance
/// credentials. `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_KINESIS`)
/// points the clients at local servers.
async fn load_aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Everything an invocation needs, built once at cold start.
pub struct Handler {
    model: Model,
    encoder: EventEncoder,
    /// `None` with `TEST_RUN`: predictions are only returned.
    publisher: Option<Publisher>,
}

impl Handler {
    /// A handler predicting with `model`, stamping events with `model_name` and `version`, and
    /// publishing them with `publisher` if given.
    pub fn new(
        model: Model,
        model_name: &str,
        version: &str,
        publisher: Option<Publisher>,
    ) -> Self {
        Self {
            model,
            encoder: EventEncoder::new(model_name, version),
            publisher,
        }
    }

    /// Loads ONNX Runtime and the model, and builds the AWS clients `config` needs, from the
    /// standard AWS configuration chain (so `AWS_ENDPOINT_URL` points them at local servers).
    /// With `publish` false nothing is ever published (the `invoke` command). Call once per
    /// process.
    pub async fn load(config: &Config, publish: bool) -> Result<Self, StartupError> {
        let started = Instant::now();
        let stream = if publish {
            config.publish_stream()?
        } else {
            None
        };
        // AWS configuration is loaded only when AWS is used: outside AWS, with no region set,
        // the SDK would go looking for one on the instance metadata service.
        let mut aws = None;
        let runtime = OnnxRuntime::load(&config.ort_library)?;
        let artifact = match &config.model {
            ModelLocation::Directory(dir) => ModelArtifact::read_dir(dir),
            ModelLocation::S3 { bucket, prefix } => {
                let client = aws_sdk_s3::Client::new(aws.insert(load_aws_config().await));
                download::fetch_model(&client, bucket, prefix, &config.model_cache_dir).await
            }
        };
        let model = runtime.load_model(artifact.map_err(ModelError::from)?)?;
        let publisher = match (stream, aws) {
            (None, _) => None,
            (Some(stream), aws) => {
                let aws = match aws {
                    Some(aws) => aws,
                    None => load_aws_config().await,
                };
                let client = aws_sdk_kinesis::Client::new(&aws);
                Some(Publisher::new(client, stream, RetryPolicy::default()))
            }
        };
        tracing::info!(
            model_uri = model.uri(),
            columns = ?model.columns(),
            output_stream = publisher.as_ref().map(Publisher::stream),
            startup_ms = started.elapsed().as_secs_f64() * 1e3,
            "ready"
        );
        Ok(Self::new(
            model,
            &config.model_name,
            &config.version,
            publisher,
        ))
    }

    /// Handles one raw Kinesis event (JSON bytes) and returns the JSON response.
    pub async fn handle_bytes(&self, event: &[u8]) -> Result<Vec<u8>, HandlerError> {
        self.handle(&KinesisBatch::from_slice(event)?).await
    }

    /// Handles the records of one Kinesis event and returns the JSON response.
    pub async fn handle(&self, records: &KinesisBatch) -> Result<Vec<u8>, HandlerError> {
        let started = Instant::now();
        let batch = event::decode(records, self.model.columns());
        let decoded = Instant::now();
        let predictions = self.model.predict(&batch.features)?;
        let predicted = Instant::now();
        let (events, mut rejected) = self.encoder.encode(&batch, &predictions);
        rejected.extend(batch.rejected.iter().cloned());
        for rejection in &rejected {
            let record = batch.record(rejection.record);
            tracing::warn!(
                sequence_number = record.sequence_number,
                partition_key = record.partition_key,
                code = rejection.reason.code(),
                reason = %rejection.reason,
                "record rejected"
            );
        }

        let encoded = Instant::now();
        let mut failures = Vec::new();
        let mut published = 0;
        if let Some(publisher) = &self.publisher {
            let (records_of_events, outgoing): (Vec<usize>, Vec<Outgoing<'_>>) = events
                .iter()
                .filter_map(|(index, data)| {
                    let record = batch.accepted.get(index)?;
                    let partition_key = batch.partition_key(record);
                    Some((
                        index,
                        Outgoing {
                            data,
                            partition_key,
                        },
                    ))
                })
                .unzip();
            let report = publisher.publish(&outgoing).await;
            published = report.published;
            failures = report
                .failed
                .iter()
                .filter_map(|&failed| {
                    records_of_events
                        .get(failed)
                        .and_then(|&index| batch.accepted.get(index))
                })
                .map(|accepted| batch.record(accepted.record).sequence_number)
                .collect();
            if !failures.is_empty() {
                tracing::error!(
                    stream = publisher.stream(),
                    unpublished = failures.len(),
                    calls = report.calls,
                    resent = report.resent,
                    last_error = report.last_error.as_deref().unwrap_or_default(),
                    "predictions not published; their records are reported for re-delivery"
                );
            }
        }
        let response = output::write_response(&batch, &events, &rejected, &failures);
        tracing::info!(
            records = batch.len(),
            predicted = events.len(),
            rejected = rejected.len(),
            published,
            redeliver = failures.len(),
            decode_ms = (decoded - started).as_secs_f64() * 1e3,
            inference_ms = (predicted - decoded).as_secs_f64() * 1e3,
            publish_ms = encoded.elapsed().as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch handled"
        );
        Ok(response)
    }
}
