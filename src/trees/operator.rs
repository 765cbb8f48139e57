//! The compiled ensembles as ONNX Runtime custom operators in the [`super::DOMAIN`] domain:
//! `TreeEnsemble` (a regressor's values) and `TreeEnsembleClassifier` (a classifier's labels
//! and scores), whose `ensemble` attribute picks one of the session's ensembles.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput,
};
use ort::value::TensorElementType;

use super::ensemble::Ensemble;

/// The regressor operator's name in the domain.
pub const OP_TYPE: &str = "TreeEnsemble";
/// The classifier operator's name in the domain.
pub const CLASSIFIER_OP_TYPE: &str = "TreeEnsembleClassifier";
/// The attribute holding the index of the node's ensemble.
pub const ENSEMBLE_ATTRIBUTE: &str = "ensemble";

/// The operator, holding every ensemble of one model.
pub struct TreeOperator {
    pub(super) ensembles: Arc<[Ensemble]>,
}

impl Operator for TreeOperator {
    type Kernel<'attr> = TreeKernel;

    fn name(&self) -> &str {
        OP_TYPE
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, context: &KernelContext<'attr>) -> ort::Result<TreeKernel> {
        kernel(&self.ensembles, context, false)
    }
}

/// The classifier operator, holding every ensemble of one model.
pub struct ClassifierOperator {
    pub(super) ensembles: Arc<[Ensemble]>,
}

impl Operator for ClassifierOperator {
    type Kernel<'attr> = TreeKernel;

    fn name(&self) -> &str {
        CLASSIFIER_OP_TYPE
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [
            OperatorOutput::required(TensorElementType::Int64),
            OperatorOutput::required(TensorElementType::Float32),
        ]
    }

    fn create_kernel<'attr>(&self, context: &KernelContext<'attr>) -> ort::Result<TreeKernel> {
        kernel(&self.ensembles, context, true)
    }
}

/// The kernel of the node whose `ensemble` attribute names one of `ensembles`, of the kind the
/// operator is (`classifier`).
fn kernel(
    ensembles: &Arc<[Ensemble]>,
    context: &KernelContext<'_>,
    classifier: bool,
) -> ort::Result<TreeKernel> {
    let index = context
        .get::<i64>(ENSEMBLE_ATTRIBUTE)
        .and_then(|index| usize::try_from(index).ok())
        .filter(|&index| {
            ensembles
                .get(index)
                .is_some_and(|e| e.classes().is_some() == classifier)
        })
        .ok_or_else(|| ort::Error::new("TreeEnsemble: no ensemble of that index and kind"))?;
    Ok(TreeKernel {
        ensembles: ensembles.clone(),
        index,
    })
}

/// One node's kernel.
pub struct TreeKernel {
    ensembles: Arc<[Ensemble]>,
    index: usize,
}

impl Kernel for TreeKernel {
    fn compute(&mut self, context: &ComputeContext) -> ort::Result<()> {
        // A panic must not unwind into ONNX Runtime's C++ frames.
        catch_unwind(AssertUnwindSafe(|| self.run(context)))
            .unwrap_or_else(|_| Err(ort::Error::new("TreeEnsemble: the kernel failed")))
    }
}

impl TreeKernel {
    fn run(&self, context: &ComputeContext) -> ort::Result<()> {
        let Some(ensemble) = self.ensembles.get(self.index) else {
            return Err(ort::Error::new("TreeEnsemble: no ensemble of that index"));
        };
        let input = context
            .input(0)?
            .ok_or_else(|| ort::Error::new("TreeEnsemble: no input"))?;
        let (shape, x) = input.try_extract_tensor::<f32>()?;
        // As ONNX Runtime's kernel: a 1-D input is one row.
        let (rows, stride) = match **shape {
            [columns] => (1, columns),
            [rows, columns] => (rows, columns),
            _ => {
                return Err(ort::Error::new(
                    "TreeEnsemble only works on 1D, 2D tensors.",
                ));
            }
        };
        let (Ok(rows), Ok(stride)) = (usize::try_from(rows), usize::try_from(stride)) else {
            return Err(ort::Error::new("TreeEnsemble: negative dimension"));
        };
        if stride < ensemble.width() {
            return Err(ort::Error::new(format!(
                "One path in the graph requests feature {} but input tensor has {stride} features.",
                ensemble.width() - 1
            )));
        }
        let targets = ensemble.targets();
        let Some(x) = x.get(..rows * stride) else {
            return Err(ort::Error::new("TreeEnsemble: tensor sizes do not match"));
        };
        let Some(_) = ensemble.classes() else {
            let mut output = context
                .output(0, vec![rows as i64, targets as i64])?
                .ok_or_else(|| ort::Error::new("TreeEnsemble: no output"))?;
            let (_, out) = output.try_extract_tensor_mut::<f32>()?;
            if out.len() != rows * targets {
                return Err(ort::Error::new("TreeEnsemble: tensor sizes do not match"));
            }
            let parts = out.chunks_mut(PART_ROWS * targets).collect();
            return in_parts(context, x, stride, parts, |x, out| {
                ensemble.predict(x, stride, out)
            });
        };
        let mut labels = vec![0i64; rows];
        let mut scores = context
            .output(1, vec![rows as i64, targets as i64])?
            .ok_or_else(|| ort::Error::new("TreeEnsembleClassifier: no scores output"))?;
        let (_, scores) = scores.try_extract_tensor_mut::<f32>()?;
        if scores.len() != rows * targets {
            return Err(ort::Error::new(
                "TreeEnsembleClassifier: tensor sizes do not match",
            ));
        }
        let parts = labels
            .chunks_mut(PART_ROWS)
            .zip(scores.chunks_mut(PART_ROWS * targets))
            .collect();
        in_parts(context, x, stride, parts, |x, (labels, scores)| {
            ensemble.classify(x, stride, labels, scores)
        })?;
        let mut label_output = context
            .output(0, vec![rows as i64])?
            .ok_or_else(|| ort::Error::new("TreeEnsembleClassifier: no label output"))?;
        let (_, label_out) = label_output.try_extract_tensor_mut::<i64>()?;
        if label_out.len() != rows {
            return Err(ort::Error::new(
                "TreeEnsembleClassifier: tensor sizes do not match",
            ));
        }
        label_out.copy_from_slice(&labels);
        Ok(())
    }
}

/// Rows of one part of a batch: the batch is split in parts of this many rows, run on ONNX
/// Runtime's intra-op threads (one after another on one thread).
const PART_ROWS: usize = 1024;

/// Runs `run(rows, output)` on each part of `x` (`stride` values a row) and its share of the
/// outputs, `parts[i]` for rows `i * PART_ROWS ..`, on the session's intra-op threads. A
/// part's rows are scored as they would be in one call: the split changes no bit.
fn in_parts<O: Send>(
    context: &ComputeContext,
    x: &[f32],
    stride: usize,
    parts: Vec<O>,
    run: impl Fn(&[f32], &mut O) + Sync,
) -> ort::Result<()> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    let count = parts.len();
    let parts: Vec<Mutex<O>> = parts.into_iter().map(Mutex::new).collect();
    let failed = AtomicBool::new(false);
    let part = |i: usize| {
        // A panic must not unwind into ONNX Runtime's thread pool.
        let done = catch_unwind(AssertUnwindSafe(|| {
            let rows = x.chunks(PART_ROWS * stride).nth(i);
            let output = parts
                .get(i)
                .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
            match (rows, output) {
                (Some(rows), Some(mut output)) => run(rows, &mut output),
                _ => failed.store(true, Ordering::Relaxed),
            }
        }));
        if done.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
    };
    match count {
        0 => {}
        1 => part(0),
        _ => context.par_for(count, count, part)?,
    }
    match failed.load(Ordering::Relaxed) {
        false => Ok(()),
        true => Err(ort::Error::new("TreeEnsemble: the kernel failed")),
    }
}
