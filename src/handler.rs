//! One invocation: raw event bytes -> decoded batch -> one inference -> prediction events ->
//! response bytes.

use std::time::Instant;

use lambda_runtime::Diagnostic;
use thiserror::Error;

use crate::artifact::ModelArtifact;
use crate::config::{Config, ModelLocation};
use crate::event::{self, EventError};
use crate::model::{InferenceError, Model, ModelError, OnnxRuntime};
use crate::output::{self, EventEncoder};

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

/// Everything an invocation needs, built once at cold start.
pub struct Handler {
    model: Model,
    encoder: EventEncoder,
}

impl Handler {
    /// A handler predicting with `model`, stamping events with `model_name` and `run_id`.
    pub fn new(model: Model, model_name: &str, run_id: &str) -> Self {
        Self {
            model,
            encoder: EventEncoder::new(model_name, run_id),
        }
    }

    /// Loads ONNX Runtime and the model named by `config`. Call once per process.
    pub fn load(config: &Config) -> Result<Self, ModelError> {
        let started = Instant::now();
        let runtime = OnnxRuntime::load(&config.ort_library)?;
        let artifact = match &config.model {
            ModelLocation::Directory(dir) => ModelArtifact::read_dir(dir)?,
        };
        let model = runtime.load_model(artifact)?;
        tracing::info!(
            model_uri = model.uri(),
            columns = ?model.columns(),
            load_ms = started.elapsed().as_secs_f64() * 1e3,
            "model loaded"
        );
        Ok(Self::new(model, &config.model_name, &config.run_id))
    }

    /// Handles one raw Kinesis event and returns the JSON response.
    pub fn handle(&self, event: &[u8]) -> Result<Vec<u8>, HandlerError> {
        let started = Instant::now();
        let batch = event::decode(event, self.model.columns())?;
        let decoded = Instant::now();
        let predictions = self.model.predict(&batch.features)?;
        let predicted = Instant::now();
        let (events, mut rejected) = self.encoder.encode(&batch, &predictions);
        rejected.extend(batch.rejected.iter().cloned());
        for rejection in &rejected {
            tracing::warn!(
                sequence_number = %rejection.sequence_number,
                partition_key = %rejection.partition_key,
                code = rejection.reason.code(),
                reason = %rejection.reason,
                "record rejected"
            );
        }
        let response = output::write_response(&events, &rejected, &[]);
        tracing::info!(
            records = batch.len(),
            predicted = events.len(),
            rejected = rejected.len(),
            decode_ms = (decoded - started).as_secs_f64() * 1e3,
            inference_ms = (predicted - decoded).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "batch handled"
        );
        Ok(response)
    }
}
