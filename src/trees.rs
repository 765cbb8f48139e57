//! Tree ensembles evaluated by the service's own kernel, inside ONNX Runtime.
//!
//! At load, [`prepare`] finds the model's `TreeEnsembleRegressor` and `TreeEnsembleClassifier`
//! nodes, compiles each one's
//! attributes into flat arrays ([`ensemble`]), checks the compiled ensemble against ONNX
//! Runtime's own kernel on a probe batch (`probe`), and rewrites the node into a
//! [`DOMAIN`]`:TreeEnsemble` node that ONNX Runtime runs through a custom operator
//! (`operator`). The rest of the graph (preprocessing, post-processing) stays ONNX
//! Runtime's; only the node's bytes change in the model (`graph`).
//!
//! Why a custom operator rather than evaluating the trees outside ONNX Runtime: the models
//! users log put preprocessing before the trees (column selection, one-hot encoding, scaling)
//! and sometimes casts or a ZipMap after, and ONNX Runtime keeps running all of it unchanged.
//!
//! Supported: regressors of any number of targets with every aggregate function and no
//! `post_transform`; classifiers of three or more int64 classes, scores as they are or through
//! a softmax. A node the kernel does not reproduce (another transform, string labels, a binary
//! classifier, opset 5's `TreeEnsemble`, anything ONNX Runtime would refuse, or a probe that
//! differs) is left to ONNX Runtime, with a log line saying why. `TREE_KERNEL=onnxruntime`
//! leaves them all.

/// The evaluator: an ensemble compiled into flat arrays, and its evaluation
/// (`trees-kernel/`, crate `bike_prediction_trees`).
pub use bike_prediction_trees as ensemble;
mod graph;
mod operator;
mod probe;

use std::sync::Arc;

use ort::environment::Environment;
use ort::operator::OperatorDomain;

use ensemble::Ensemble;

/// The custom operator domain of the rewritten nodes.
pub const DOMAIN: &str = "bike_prediction.trees";

/// Which kernel runs a model's tree ensembles (`TREE_KERNEL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TreeKernel {
    /// The service's own (`native`, the default), where it reproduces ONNX Runtime's.
    #[default]
    Native,
    /// ONNX Runtime's (`onnxruntime`).
    OnnxRuntime,
}

/// A model whose tree nodes run on the service's kernel.
pub struct Prepared {
    /// The rewritten model.
    pub onnx: Vec<u8>,
    ensembles: Arc<[Ensemble]>,
}

impl Prepared {
    /// The operator the rewritten nodes name, to register with each session built from
    /// [`Self::onnx`].
    pub fn domain(&self) -> ort::Result<OperatorDomain> {
        OperatorDomain::new(DOMAIN)?
            .add(operator::TreeOperator {
                ensembles: self.ensembles.clone(),
            })?
            .add(operator::ClassifierOperator {
                ensembles: self.ensembles.clone(),
            })
    }

    /// How many nodes were rewritten.
    pub fn nodes(&self) -> usize {
        self.ensembles.len()
    }
}

/// What happened to one tree node at load.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It runs on the service's kernel.
    Native,
    /// It is left to ONNX Runtime, for this reason.
    Left(String),
}

/// A model of one `TreeEnsembleRegressor` node with `attributes`, float input `X` and output
/// `Y` (for the fuzz target and tools that try attributes through both kernels).
pub fn regressor_model(attributes: &ensemble::Attributes) -> Vec<u8> {
    graph::regressor_model(attributes)
}

/// One output of [`run`].
#[derive(Debug, Clone)]
pub enum Output {
    /// A float tensor's values (a regressor's values, a classifier's scores).
    F32(Vec<f32>),
    /// An int64 tensor's values (a classifier's labels).
    I64(Vec<i64>),
}

impl Output {
    /// Whether the two are the same values, bit for bit (any NaN equal to any NaN).
    pub fn same_bits(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
            }
            (Self::I64(a), Self::I64(b)) => a == b,
            _ => false,
        }
    }
}

/// Runs a single-input model (`onnx`, with `trees`'s operators registered when given) on the
/// rows `x` of `width` columns, on one thread; its outputs' values, in order.
pub fn run(
    onnx: &[u8],
    trees: Option<&Prepared>,
    environment: &Environment,
    x: &[f32],
    width: usize,
) -> ort::Result<Vec<Output>> {
    let mut builder = ort::session::Session::builder(environment)?
        .with_intra_threads(1)?
        .with_log_level(ort::logging::LogLevel::Fatal)?;
    if let Some(trees) = trees {
        builder = builder.with_operators(trees.domain()?)?;
    }
    let mut session = builder.commit_from_memory(onnx)?;
    let rows = x.len().checked_div(width).unwrap_or(0);
    let input = ort::value::TensorRef::from_array_view(([rows, width], x))?;
    let outputs = session.run(ort::inputs![input])?;
    outputs
        .values()
        .map(|value| match value.try_extract_tensor::<f32>() {
            Ok((_, values)) => Ok(Output::F32(values.to_vec())),
            Err(_) => Ok(Output::I64(value.try_extract_tensor::<i64>()?.1.to_vec())),
        })
        .collect()
}

/// The model with its tree nodes rewritten to the service's kernel, and what happened to each
/// tree node (by name); `None` for the model when no node was rewritten.
pub fn prepare(
    onnx: &[u8],
    environment: &Environment,
) -> (Option<Prepared>, Vec<(String, Outcome)>) {
    let versions = graph::versions(onnx);
    let mut ensembles = Vec::new();
    let mut outcomes = Vec::new();
    let rewritten = graph::map_nodes(onnx, |bytes| {
        let node = graph::decode_node(bytes)?;
        if node.domain != "ai.onnx.ml" {
            return None;
        }
        let (compiled, outputs, op_type) = match node.op_type.as_str() {
            "TreeEnsembleRegressor" | "TreeEnsembleClassifier" => {
                let classifier = node.op_type == "TreeEnsembleClassifier";
                let compiled = node.tree_attributes().and_then(|a| Ensemble::regressor(&a));
                match classifier {
                    false => (compiled, 1, operator::OP_TYPE),
                    true => (compiled, 2, operator::CLASSIFIER_OP_TYPE),
                }
            }
            "TreeEnsemble" => (
                Err("TreeEnsemble nodes (ai.onnx.ml 5) are not supported yet".to_owned()),
                1,
                operator::OP_TYPE,
            ),
            _ => return None,
        };
        let checked = compiled.and_then(|ensemble| {
            if node.input.len() != 1 || node.output.len() != outputs {
                return Err(format!(
                    "the node does not have one input and {outputs} outputs"
                ));
            }
            probe::probe(&ensemble, bytes, &node, &versions, environment)?;
            Ok(ensemble)
        });
        match checked {
            Ok(ensemble) => {
                let index = ensembles.len() as i64;
                ensembles.push(ensemble);
                outcomes.push((node.name.clone(), Outcome::Native));
                Some(graph::node(
                    &node.name,
                    &node.input,
                    &node.output,
                    (DOMAIN, op_type),
                    (operator::ENSEMBLE_ATTRIBUTE, index),
                ))
            }
            Err(reason) => {
                outcomes.push((node.name.clone(), Outcome::Left(reason)));
                None
            }
        }
    });
    let (Some(mut onnx), false) = (rewritten, ensembles.is_empty()) else {
        return (None, outcomes);
    };
    onnx.extend(graph::import_domain(DOMAIN));
    let prepared = Prepared {
        onnx,
        ensembles: Arc::from(ensembles),
    };
    match prepared.domain() {
        Ok(_) => (Some(prepared), outcomes),
        Err(error) => {
            let reason = format!("the custom operator cannot be registered: {error}");
            let outcomes = outcomes
                .into_iter()
                .map(|(name, _)| (name, Outcome::Left(reason.clone())))
                .collect();
            (None, outcomes)
        }
    }
}
