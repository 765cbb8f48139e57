//! ONNX Runtime: loading the library and the model once, and one batched inference per call.
//!
//! At load, the model's inputs are bound to its signature ([`crate::inputs::InputLayout`]) and
//! its outputs read as a regressor's values or a classifier's label and probabilities
//! ([`OutputLayout`]); a model that fits neither is refused with a message saying why.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};
use thiserror::Error;

use crate::artifact::{self, ArtifactError, ModelArtifact, OnnxGraph, ZipMap};
use crate::inputs::{Buffer, ElementType, GraphInput, InputLayout, Inputs};
use crate::trees::{self, TreeKernel};

pub use outputs::{
    Label, Labels, OutputLayout, Prediction, Predictions, Probabilities, ProbabilityForm, Values,
};

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
    /// An output is not what it was at load.
    #[error("the model's output `{output}` cannot be read: {detail}")]
    Output {
        /// The output.
        output: String,
        /// What is wrong.
        detail: String,
    },
}

/// The loaded ONNX Runtime library and its environment.
///
/// ONNX Runtime allows one environment per process: load it once at start-up and build every
/// [`Model`] from it.
pub struct OnnxRuntime {
    environment: Environment,
}

/// Target of ONNX Runtime's own messages in the log: `telemetry` keeps them out unless
/// `LOG_RECORD_DATA` is true, since a kernel's error quotes the input values it failed on (the
/// same text reaches the rejected record's reason).
pub const ONNX_RUNTIME_LOG_TARGET: &str = "onnxruntime";

/// Writes one ONNX Runtime message as a JSON log line instead of ONNX Runtime's own coloured
/// text on stderr.
fn log_onnx_runtime(
    level: ort::logging::LogLevel,
    category: &str,
    _id: &str,
    location: &str,
    message: &str,
) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Fatal | LogLevel::Error => {
            tracing::error!(target: ONNX_RUNTIME_LOG_TARGET, category, location, message, "ONNX Runtime")
        }
        LogLevel::Warning => {
            tracing::warn!(target: ONNX_RUNTIME_LOG_TARGET, category, location, message, "ONNX Runtime")
        }
        LogLevel::Info | LogLevel::Verbose => {
            tracing::debug!(target: ONNX_RUNTIME_LOG_TARGET, category, location, message, "ONNX Runtime")
        }
    }
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
            .with_logger(std::sync::Arc::new(log_onnx_runtime))
            .build()
            .map_err(ModelError::Environment)?;
        Ok(Self { environment })
    }

    /// The ONNX Runtime environment sessions are built in.
    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// Builds a session for the model in `artifact`, running each inference on one thread,
    /// and checks that the service can fill its input from the signature's columns and read
    /// one prediction per row from its output.
    pub fn load_model(&self, artifact: ModelArtifact) -> Result<Model, ModelError> {
        self.load_model_threaded(artifact, 1)
    }

    /// [`Self::load_model`], with each inference on `threads` threads (ONNX Runtime's
    /// intra-op threads, the caller's included; at least one), which split a batch between
    /// them.
    pub fn load_model_threaded(
        &self,
        artifact: ModelArtifact,
        threads: usize,
    ) -> Result<Model, ModelError> {
        self.load_model_with(artifact, threads, TreeKernel::Native)
    }

    /// [`Self::load_model_threaded`], with the model's tree ensembles on `trees`'s kernel
    /// ([`crate::trees`]) where it reproduces ONNX Runtime's.
    pub fn load_model_with(
        &self,
        artifact: ModelArtifact,
        threads: usize,
        trees: TreeKernel,
    ) -> Result<Model, ModelError> {
        // An unreadable file is reported by ONNX Runtime below, with its own message.
        let onnx = std::fs::read(&artifact.onnx_path).ok();
        let object = artifact.onnx_path.display().to_string();
        let onnx_graph = onnx.as_deref().map(|onnx| OnnxGraph::parse(onnx, &object));
        let zipmap = onnx_graph
            .as_ref()
            .and_then(|graph| graph.as_ref().ok()?.zipmap());
        let prepared = match (trees, &onnx, &onnx_graph) {
            (TreeKernel::Native, Some(onnx), Some(Ok(graph))) => self.prepare_trees(onnx, graph),
            _ => None,
        };
        let mut native_trees = 0;
        let built = match prepared {
            Some(prepared) => {
                native_trees = prepared.nodes();
                self.build_session(
                    &artifact,
                    Some(&prepared.onnx),
                    zipmap.clone(),
                    threads,
                    Some(&prepared),
                )
                .or_else(|error| {
                    native_trees = 0;
                    tracing::warn!(
                        error = %crate::handler::error_chain(&error),
                        "the model with its tree ensembles rewritten does not load; \
                         leaving them to ONNX Runtime"
                    );
                    self.build_session(&artifact, onnx.as_deref(), zipmap, threads, None)
                })
            }
            None => self.build_session(&artifact, onnx.as_deref(), zipmap, threads, None),
        };
        let (session, zipmap) = built.map_err(|source| ModelError::Session {
            uri: artifact.uri.clone(),
            path: artifact.onnx_path.clone(),
            source,
        })?;
        let incompatible = |detail: String| ModelError::Incompatible {
            uri: artifact.uri.clone(),
            detail,
        };
        let graph: Vec<GraphInput> = session.inputs().iter().map(graph_input).collect();
        let inputs = InputLayout::bind(&artifact.signature, &graph).map_err(incompatible)?;
        let class_labels = |output: &str| match &onnx_graph {
            Some(Ok(graph)) => Ok(graph.class_labels(output)),
            Some(Err(error)) => Err(error.to_string()),
            None => Err("the ONNX file cannot be read".to_owned()),
        };
        // The tensor a ZipMap reads is an output only because it was added above: it is not
        // one of the model's own outputs.
        let graph_outputs: Vec<_> = session
            .outputs()
            .iter()
            .filter(|output| {
                zipmap
                    .as_ref()
                    .is_none_or(|z| output.name() != z.probabilities)
            })
            .map(|output| (output.name(), output.dtype()))
            .collect();
        let mut outputs = OutputLayout::bind(&graph_outputs, class_labels).map_err(incompatible)?;
        if let Some(zipmap) = zipmap {
            outputs.read_zipmap_input(&zipmap);
        }
        Ok(Model {
            session: Mutex::new(session),
            native_trees,
            inputs,
            outputs,
            artifact,
            _environment: self.environment.clone(),
        })
    }

    /// The model with its tree ensembles rewritten to the service's kernel, logging what
    /// happened to each; `None` if none was.
    fn prepare_trees(&self, onnx: &[u8], graph: &OnnxGraph) -> Option<trees::Prepared> {
        if graph.has_external_data() {
            if graph.has_tree_ensembles() {
                tracing::info!(
                    reason = "the model keeps tensors in external files",
                    "tree ensembles left to ONNX Runtime"
                );
            }
            return None;
        }
        let (prepared, outcomes) = trees::prepare(onnx, &self.environment);
        for (node, outcome) in outcomes {
            match outcome {
                trees::Outcome::Native => {
                    tracing::info!(node, "tree ensemble runs on the service's kernel")
                }
                trees::Outcome::Left(reason) => {
                    tracing::info!(node, reason, "tree ensemble left to ONNX Runtime")
                }
            }
        }
        prepared
    }

    /// A session for the model: `onnx` (its bytes, when read) else the file, with the operator
    /// of `trees`'s rewritten nodes. With a ZipMap, the session also outputs the tensor of probabilities it
    /// reads; the ZipMap is returned when that worked.
    fn build_session(
        &self,
        artifact: &ModelArtifact,
        onnx: Option<&[u8]>,
        zipmap: Option<ZipMap>,
        threads: usize,
        trees: Option<&trees::Prepared>,
    ) -> ort::Result<(Session, Option<ZipMap>)> {
        let builder = || {
            let builder = Session::builder(&self.environment)
                .and_then(|b| Ok(b.with_optimization_level(GraphOptimizationLevel::All)?))
                // As many threads as the function has CPUs (`crate::config::cpus`): more would
                // only contend for them.
                .and_then(|b| Ok(b.with_intra_threads(threads.max(1))?))
                .and_then(|b| Ok(b.with_inter_threads(1)?))
                .and_then(|b| Ok(b.with_intra_op_spinning(false)?))
                // The session's messages below warnings are not even formatted.
                .and_then(|b| Ok(b.with_log_level(ort::logging::LogLevel::Warning)?))?;
            match trees {
                Some(trees) => Ok(builder.with_operators(trees.domain()?)?),
                None => Ok(builder),
            }
        };
        if let (Some(onnx), Some(zipmap)) = (onnx, zipmap) {
            let bytes = artifact::with_float_output(onnx, &zipmap.probabilities);
            match builder().and_then(|mut builder| builder.commit_from_memory(&bytes)) {
                Ok(session) => return Ok((session, Some(zipmap))),
                Err(error) => tracing::warn!(%error, "reading the ZipMap's probabilities as maps"),
            }
        }
        let session = match (onnx, trees) {
            // The rewritten model exists only in memory.
            (Some(onnx), Some(_)) => builder()?.commit_from_memory(onnx)?,
            _ => builder()?.commit_from_file(&artifact.onnx_path)?,
        };
        Ok((session, None))
    }
}

/// A session input as the binding sees it.
fn graph_input(input: &ort::value::Outlet) -> GraphInput {
    let (element, shape) = match input.dtype() {
        ValueType::Tensor { ty, shape, .. } => {
            let element = match ty {
                TensorElementType::Float32 => Ok(ElementType::Float32),
                TensorElementType::Float64 => Ok(ElementType::Float64),
                TensorElementType::Int64 => Ok(ElementType::Int64),
                TensorElementType::Int32 => Ok(ElementType::Int32),
                TensorElementType::Bool => Ok(ElementType::Bool),
                TensorElementType::String => Ok(ElementType::String),
                other => Err(other.to_string()),
            };
            (element, shape.to_vec())
        }
        other => (Err(other.to_string()), Vec::new()),
    };
    GraphInput {
        name: input.name().to_owned(),
        element,
        shape,
    }
}

/// The outcome of predicting one range of a batch's rows.
pub type RowsPredicted = (std::ops::Range<usize>, Result<Predictions, InferenceError>);

/// A loaded model, ready to predict. Built once at cold start and shared by every invocation.
pub struct Model {
    // `Session::run` takes `&mut self`; the lock is held only around that synchronous call.
    session: Mutex<Session>,
    /// Tree-ensemble nodes running on the service's kernel ([`crate::trees`]).
    native_trees: usize,
    inputs: InputLayout,
    outputs: OutputLayout,
    artifact: ModelArtifact,
    // Declared after the session so that the session is dropped first.
    _environment: Environment,
}

impl Model {
    /// How record features fill the model's inputs.
    pub fn layout(&self) -> &InputLayout {
        &self.inputs
    }

    /// What the model's outputs are.
    pub fn outputs(&self) -> &OutputLayout {
        &self.outputs
    }

    /// The feature names a record provides, in the signature's order (`features[i]` for a
    /// tensor signature).
    pub fn columns(&self) -> &[String] {
        self.inputs.names()
    }

    /// How many of the model's tree-ensemble nodes run on the service's kernel
    /// ([`crate::trees`]); the others run on ONNX Runtime's.
    pub fn native_tree_ensembles(&self) -> usize {
        self.native_trees
    }

    /// Where the model was loaded from.
    pub fn uri(&self) -> &str {
        &self.artifact.uri
    }

    /// Predicts every row of `inputs`, with one `session.run` per [`MAX_INFERENCE_ROWS`] rows.
    pub fn predict(&self, inputs: &Inputs) -> Result<Predictions, InferenceError> {
        self.predict_rows(inputs, 0..inputs.rows)
    }

    /// Predicts every row of `inputs` as [`Self::predict`] does, and when ONNX Runtime fails on
    /// the batch (a category a `OneHotEncoder` never saw, an index out of a table), finds the
    /// rows it fails on by splitting the batch in halves until each failing row is alone, so
    /// that one bad record does not cost the others their predictions. Returns the outcome of
    /// each range of rows, in row order. Outputs that are not what the model declared (the
    /// wrong number of rows) are a fault of the model, not of a record: they fail the batch.
    pub fn predict_isolating(&self, inputs: &Inputs) -> Result<Vec<RowsPredicted>, InferenceError> {
        let mut done = Vec::new();
        let mut pending = Vec::new();
        pending.push(0..inputs.rows);
        while let Some(rows) = pending.pop() {
            if rows.is_empty() {
                continue;
            }
            match self.predict_rows(inputs, rows.clone()) {
                Ok(predictions) => done.push((rows, Ok(predictions))),
                Err(error @ InferenceError::Output { .. }) => return Err(error),
                Err(error) if rows.len() == 1 => done.push((rows, Err(error))),
                Err(error) => {
                    if rows.len() == inputs.rows {
                        tracing::warn!(
                            error = %crate::handler::error_chain(&error),
                            rows = rows.len(),
                            "inference failed on the batch; finding the records it fails on"
                        );
                    }
                    // The left half is popped first, so ranges finish in row order.
                    let middle = rows.start + rows.len() / 2;
                    pending.push(middle..rows.end);
                    pending.push(rows.start..middle);
                }
            }
        }
        Ok(done)
    }

    /// Predicts rows `rows` of `inputs`; row 0 of the result is row `rows.start`.
    fn predict_rows(
        &self,
        inputs: &Inputs,
        rows: std::ops::Range<usize>,
    ) -> Result<Predictions, InferenceError> {
        let chunk = match self.inputs.one_row_per_run {
            true => 1,
            false => MAX_INFERENCE_ROWS,
        };
        let mut predictions = self.outputs.empty(rows.len());
        let mut start = rows.start;
        while start < rows.end {
            let end = rows.end.min(start + chunk);
            let feeds = self.feeds(inputs, start..end)?;
            // A panic elsewhere while the lock was held cannot leave the session half-updated.
            let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
            let outputs = session.run(feeds)?;
            self.outputs
                .append(&outputs, end - start, &mut predictions)?;
            start = end;
        }
        Ok(predictions)
    }

    /// The input tensors for rows `rows` of `inputs`: views of the buffers, except strings,
    /// which ONNX Runtime copies.
    fn feeds<'i>(
        &'i self,
        inputs: &'i Inputs,
        rows: std::ops::Range<usize>,
    ) -> Result<Vec<(Cow<'i, str>, SessionInputValue<'i>)>, InferenceError> {
        let count = rows.end - rows.start;
        let mut feeds = Vec::with_capacity(self.inputs.inputs.len());
        for (index, (spec, buffer)) in self.inputs.inputs.iter().zip(&inputs.buffers).enumerate() {
            let span = rows.start * spec.width..rows.end * spec.width;
            let shape: Vec<usize> = match spec.vector {
                true => vec![count],
                false => vec![count, spec.width],
            };
            fn view<
                'a,
                T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
            >(
                shape: Vec<usize>,
                values: &'a [T],
                span: std::ops::Range<usize>,
            ) -> Result<SessionInputValue<'a>, InferenceError> {
                let values = values.get(span).unwrap_or_default();
                Ok(TensorRef::from_array_view((shape, values))?.into())
            }
            let value = match buffer {
                Buffer::Float32(values) => view(shape, values, span)?,
                Buffer::Float64(values) => view(shape, values, span)?,
                Buffer::Int64(values) => view(shape, values, span)?,
                Buffer::Int32(values) => view(shape, values, span)?,
                Buffer::Bool(values) => view(shape, values, span)?,
                Buffer::String(_) => {
                    // ort copies each string into a NUL-terminated one; it takes them owned.
                    let strings: Vec<String> =
                        inputs.strings_in(index, span).map(str::to_owned).collect();
                    Tensor::from_string_array((shape, strings.as_slice()))?.into()
                }
            };
            feeds.push((Cow::Borrowed(spec.name.as_str()), value));
        }
        Ok(feeds)
    }
}

mod outputs;
