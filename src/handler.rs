//! One invocation: raw event bytes -> decoded batch -> one inference -> prediction events ->
//! publisher -> response bytes.

use std::time::Instant;

use lambda_runtime::Diagnostic;
use thiserror::Error;

use crate::artifact::ModelArtifact;
use crate::config::{Config, ConfigError, ModelLocation};
use crate::download;
use crate::event::{self, Batch, Rejection};
use crate::kinesis::{EventError, KinesisBatch};
use crate::model::{InferenceError, Model, ModelError, OnnxRuntime};
use crate::output::{self, EventEncoder};
use crate::publish::{self, Outgoing, PublishReport, Publisher, RetryPolicy};
use crate::telemetry::BatchReport;

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
    model_name: String,
    version: String,
    encoder: EventEncoder,
    /// Where prediction events go; `None` with `TEST_RUN`: predictions are only returned.
    publisher: Option<Publisher>,
    /// Where rejected records are kept; `None`: they are logged in full.
    dead_letters: Option<Publisher>,
}

/// The response of one invocation and what happened to each record.
#[derive(Debug)]
pub struct Handled {
    /// The JSON response for Lambda.
    pub response: Vec<u8>,
    /// The batch's accounting.
    pub report: BatchReport,
}

impl Handler {
    /// A handler predicting with `model` and stamping events with `model_name` and `version`;
    /// it publishes nothing until given a publisher.
    pub fn new(model: Model, model_name: &str, version: &str) -> Self {
        Self {
            model,
            model_name: model_name.into(),
            version: version.into(),
            encoder: EventEncoder::new(model_name, version),
            publisher: None,
            dead_letters: None,
        }
    }

    /// Publishes prediction events with `publisher`.
    pub fn publishing_to(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Keeps rejected records with `publisher` (the dead-letter stream).
    pub fn dead_lettering_to(mut self, publisher: Publisher) -> Self {
        self.dead_letters = Some(publisher);
        self
    }

    /// Loads ONNX Runtime and the model, and builds the AWS clients `config` needs, from the
    /// standard AWS configuration chain (so `AWS_ENDPOINT_URL` points them at local servers).
    /// With `publish` false nothing is ever published (the `invoke` command). Call once per
    /// process.
    pub async fn load(config: &Config, publish: bool) -> Result<Self, StartupError> {
        let started = Instant::now();
        let (stream, dead_letter_stream) = match publish {
            true => (config.publish_stream()?, config.dead_letter_stream()),
            false => (None, None),
        };
        // AWS configuration is loaded only when AWS is used: outside AWS, with no region set,
        // the SDK would go looking for one on the instance metadata service.
        let mut aws = None;
        let runtime = OnnxRuntime::load(&config.ort_library)?;
        let artifact = match &config.model {
            ModelLocation::Directory(dir) => ModelArtifact::read_dir(dir),
            ModelLocation::S3 { bucket, prefix } => {
                let aws = aws.insert(load_aws_config().await);
                let s3_config =
                    aws_sdk_s3::config::Builder::from(&*aws).timeout_config(download::timeouts());
                let client = aws_sdk_s3::Client::from_conf(s3_config.build());
                download::fetch_model(&client, bucket, prefix, &config.model_cache_dir).await
            }
        };
        let model = runtime.load_model(artifact.map_err(ModelError::from)?)?;
        let mut handler = Self::new(model, &config.model_name, &config.version);
        if stream.is_some() || dead_letter_stream.is_some() {
            let aws = match aws {
                Some(aws) => aws,
                None => load_aws_config().await,
            };
            let kinesis_config =
                aws_sdk_kinesis::config::Builder::from(&aws).timeout_config(publish::timeouts());
            let kinesis = aws_sdk_kinesis::Client::from_conf(kinesis_config.build());
            let publisher =
                |stream| Publisher::new(kinesis.clone(), stream, RetryPolicy::default());
            if let Some(stream) = stream {
                handler = handler.publishing_to(publisher(stream));
            }
            if let Some(stream) = dead_letter_stream {
                handler = handler.dead_lettering_to(publisher(stream));
            }
        }
        tracing::info!(
            model_uri = handler.model.uri(),
            columns = ?handler.model.columns(),
            output_stream = handler.publisher.as_ref().map(Publisher::stream),
            dead_letter_stream = handler.dead_letters.as_ref().map(Publisher::stream),
            startup_ms = started.elapsed().as_secs_f64() * 1e3,
            "ready"
        );
        Ok(handler)
    }

    /// Handles one raw Kinesis event (JSON bytes) and returns the JSON response.
    pub async fn handle_bytes(&self, event: &[u8]) -> Result<Handled, HandlerError> {
        self.handle(&KinesisBatch::from_slice(event)?).await
    }

    /// Handles the records of one Kinesis event: every record ends up predicted (and
    /// published), rejected (and kept), or reported in `batchItemFailures` for re-delivery.
    pub async fn handle(&self, records: &KinesisBatch) -> Result<Handled, HandlerError> {
        let started = Instant::now();
        let batch = event::decode(records, self.model.columns());
        let decoded = Instant::now();
        let predictions = self.model.predict(&batch.features)?;
        let predicted = Instant::now();
        let (events, mut rejected) = self.encoder.encode(&batch, &predictions);
        rejected.extend(batch.rejected.iter().cloned());
        rejected.sort_by_key(|rejection| rejection.record);
        let encoded = Instant::now();

        let mut report = BatchReport {
            records: batch.len(),
            predicted: events.len(),
            rejected: rejected.len(),
            ..BatchReport::default()
        };
        // Positions in the event of the records Lambda must deliver again.
        let mut redeliver = Vec::new();
        if let Some(publisher) = &self.publisher {
            let (sources, outgoing): (Vec<usize>, Vec<Outgoing<'_>>) = events
                .iter()
                .filter_map(|(index, data)| {
                    let accepted = batch.accepted.get(index)?;
                    let partition_key = batch.partition_key(accepted);
                    Some((
                        accepted.record,
                        Outgoing {
                            data,
                            partition_key,
                        },
                    ))
                })
                .unzip();
            let published = publisher.publish(&outgoing).await;
            report.published = published.published;
            account(
                &mut report,
                &published,
                &sources,
                &mut redeliver,
                publisher.stream(),
            );
        }
        self.keep_rejected(&batch, &rejected, &mut report, &mut redeliver)
            .await;
        let publish_ms = encoded.elapsed().as_secs_f64() * 1e3;

        redeliver.sort_unstable();
        redeliver.dedup();
        report.redeliver = redeliver.len();
        let failures: Vec<&str> = redeliver
            .iter()
            .map(|&record| batch.record(record).sequence_number)
            .collect();
        let response = output::write_response(&batch, &events, &rejected, &failures);
        report.decode_ms = (decoded - started).as_secs_f64() * 1e3;
        report.inference_ms = (predicted - decoded).as_secs_f64() * 1e3;
        report.publish_ms = publish_ms;
        report.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report.emit();
        Ok(Handled { response, report })
    }

    /// Keeps every rejected record: in the dead-letter stream if there is one (a record it
    /// does not accept is reported for re-delivery), else in the log, in full.
    async fn keep_rejected(
        &self,
        batch: &Batch<'_>,
        rejected: &[Rejection],
        report: &mut BatchReport,
        redeliver: &mut Vec<usize>,
    ) {
        for rejection in rejected {
            let record = batch.record(rejection.record);
            let data = match self.dead_letters {
                Some(_) => None,
                None => Some(output::original_data(record.data)),
            };
            tracing::warn!(
                sequence_number = record.sequence_number,
                partition_key = record.partition_key,
                code = rejection.reason.code(),
                reason = %rejection.reason,
                data = data.as_deref(),
                "record rejected"
            );
        }
        let Some(dead_letters) = &self.dead_letters else {
            return;
        };
        if rejected.is_empty() {
            return;
        }
        let letters = output::dead_letters(batch, rejected, &self.model_name, &self.version);
        let outgoing: Vec<Outgoing<'_>> = letters
            .iter()
            .map(|(data, key)| Outgoing {
                data,
                partition_key: (*key).into(),
            })
            .collect();
        let kept = dead_letters.publish(&outgoing).await;
        report.dead_lettered = kept.published;
        let sources: Vec<usize> = rejected.iter().map(|rejection| rejection.record).collect();
        account(report, &kept, &sources, redeliver, dead_letters.stream());
    }
}

/// Adds one publish to the batch's accounting: its calls, and the records (by position in the
/// event; `sources[i]` is the record of entry `i`) whose entries it could not publish.
fn account(
    report: &mut BatchReport,
    published: &PublishReport,
    sources: &[usize],
    redeliver: &mut Vec<usize>,
    stream: &str,
) {
    report.put_records_calls += published.calls;
    report.put_records_resent += published.resent;
    redeliver.extend(
        published
            .failed
            .iter()
            .filter_map(|&entry| sources.get(entry)),
    );
    if !published.failed.is_empty() {
        tracing::error!(
            stream,
            unpublished = published.failed.len(),
            calls = published.calls,
            resent = published.resent,
            last_error = published.last_error.as_deref().unwrap_or_default(),
            "records not published; they are reported for re-delivery"
        );
    }
}
