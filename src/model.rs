//! ONNX Runtime: loading the library and the model once, and one batched inference per call.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use thiserror::Error;

use crate::artifact::{ArtifactError, ModelArtifact};

/// Rows per `session.run` call. A Kinesis event holds at most 10,000 records, so a Lambda
/// batch is always one call; larger inputs (local tools) are split to bound the memory of one
/// input and output tensor.
pub const MAX_INFERENCE_ROWS: usize = 16_384;

/// Why the ONNX Runtime library or the model could not be loaded.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The ONNX Runtime shared library could not be loaded.
    #[error(
        "cannot load the ONNX Runtime library from {path}; run scripts/setup-ort.sh or point \
         ORT_DYLIB_PATH at libonnxruntime.so"
    )]
    Library {
        /// The path that was tried.
        path: PathBuf,
        /// What the loader said.
        #[source]
        source: ort::LoadDynamicError,
    },
    /// ONNX Runtime was loaded but refused to create its environment.
    #[error("cannot initialise ONNX Runtime")]
    Environment(#[source] ort::Error),
    /// `MLmodel` is missing or unusable.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// ONNX Runtime could not build a session from the model file.
    #[error("cannot load the ONNX model {path} (from {uri})")]
    Session {
        /// Model location.
        uri: String,
        /// The ONNX file.
        path: PathBuf,
        /// What ONNX Runtime said.
        #[source]
        source: ort::Error,
    },
    /// The model's inputs or outputs are not what the service can fill or read.
    #[error("the model at {uri} cannot be served: {detail}")]
    Incompatible {
        /// Model location.
        uri: String,
        /// What does not fit.
        detail: String,
    },
}

/// Why one inference call failed.
#[derive(Debug, Error)]
pub enum InferenceError {
    /// ONNX Runtime returned an error.
    #[error("ONNX Runtime inference failed")]
    Runtime(#[from] ort::Error),
    /// The model returned a different number of predictions than rows given.
    #[error("the model returned {got} values for {rows} rows")]
    OutputLength {
        /// Rows fed to the model.
        rows: usize,
        /// Values the model returned.
        got: usize,
    },
}

/// The loaded ONNX Runtime library and its environment.
///
/// ONNX Runtime allows one environment per process: load it once at start-up and build every
/// [`Model`] from it.
pub struct OnnxRuntime {
    environment: Environment,
}

impl OnnxRuntime {
    /// Loads the ONNX Runtime shared library from `path`.
    ///
    /// A relative path is looked up next to the executable first, then by the system loader.
    /// Only the first successful load in a process counts: the library cannot be swapped later.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let environment = ort::init_from(path)
            .map_err(|source| ModelError::Library {
                path: path.to_owned(),
                source,
            })?
            .with_name("bike-prediction")
            .build()
            .map_err(ModelError::Environment)?;
        Ok(Self { environment })
    }

    /// Builds a session for the model in `artifact` and checks that the service can fill its
    /// input from the signature's columns and read one prediction per row from its output.
    pub fn load_model(&self, artifact: ModelArtifact) -> Result<Model, ModelError> {
        let session = Session::builder(&self.environment)
            .and_then(|builder| Ok(builder.with_optimization_level(GraphOptimizationLevel::All)?))
            // Lambda gives fractional vCPUs: extra threads would only contend for them.
            .and_then(|builder| Ok(builder.with_intra_threads(1)?))
            .and_then(|builder| Ok(builder.with_inter_threads(1)?))
            .and_then(|builder| Ok(builder.with_intra_op_spinning(false)?))
            .and_then(|mut builder| builder.commit_from_file(&artifact.onnx_path))
            .map_err(|source| ModelError::Session {
                uri: artifact.uri.clone(),
                path: artifact.onnx_path.clone(),
                source,
            })?;
        let input_name = check_signature(&session, &artifact)?;
        Ok(Model {
            session: Mutex::new(session),
            input_name,
            artifact,
            _environment: self.environment.clone(),
        })
    }
}

/// Checks the session has one float `[N, F]` input whose width matches the signature's columns
/// and a float output, and returns the input's name.
fn check_signature(session: &Session, artifact: &ModelArtifact) -> Result<String, ModelError> {
    let incompatible = |detail: String| ModelError::Incompatible {
        uri: artifact.uri.clone(),
        detail,
    };
    let width = artifact.columns.len();
    let [input] = session.inputs() else {
        let names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
        return Err(incompatible(format!(
            "it has inputs {names:?}, but the service fills exactly one [N, {width}] float input \
             whose columns are the signature's {:?}",
            artifact.columns
        )));
    };
    match input.dtype() {
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape,
            ..
        } if matches!(**shape, [_, columns] if columns < 0 || columns as usize == width) => {}
        other => {
            return Err(incompatible(format!(
                "input `{}` is {other}, but the service fills a float32 [N, {width}] tensor \
                 with the signature's columns {:?}",
                input.name(),
                artifact.columns
            )));
        }
    }
    match session.outputs().first().map(|output| output.dtype()) {
        Some(ValueType::Tensor {
            ty: TensorElementType::Float32,
            ..
        }) => Ok(input.name().to_owned()),
        Some(other) => Err(incompatible(format!(
            "its first output is {other}, expected a float32 tensor with one prediction per row"
        ))),
        None => Err(incompatible("it has no output".into())),
    }
}

/// A loaded model, ready to predict. Built once at cold start and shared by every invocation.
pub struct Model {
    // `Session::run` takes `&mut self`; the lock is held only around that synchronous call.
    session: Mutex<Session>,
    input_name: String,
    artifact: ModelArtifact,
    // Declared after the session so that the session is dropped first.
    _environment: Environment,
}

impl Model {
    /// Feature names, in the column order of the model input.
    pub fn columns(&self) -> &[String] {
        &self.artifact.columns
    }

    /// Where the model was loaded from.
    pub fn uri(&self) -> &str {
        &self.artifact.uri
    }

    /// Predicts one value per row of `features`, a row-major `[rows, F]` buffer with `F` =
    /// `self.columns().len()`, with one `session.run` per [`MAX_INFERENCE_ROWS`] rows.
    pub fn predict(&self, features: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let width = self.columns().len();
        let rows = features.len() / width;
        let mut predictions = Vec::with_capacity(rows);
        for chunk in features.chunks(MAX_INFERENCE_ROWS * width) {
            let chunk_rows = chunk.len() / width;
            let input = TensorRef::from_array_view(([chunk_rows, width], chunk))?;
            // A panic elsewhere while the lock was held cannot leave the session half-updated.
            let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
            let outputs = session.run(ort::inputs![self.input_name.as_str() => input])?;
            let Some((_, output)) = outputs.iter().next() else {
                return Err(InferenceError::OutputLength {
                    rows: chunk_rows,
                    got: 0,
                });
            };
            let (_, values) = output.try_extract_tensor::<f32>()?;
            if values.len() != chunk_rows {
                return Err(InferenceError::OutputLength {
                    rows: chunk_rows,
                    got: values.len(),
                });
            }
            predictions.extend_from_slice(values);
        }
        Ok(predictions)
    }
}
