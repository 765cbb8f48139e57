//! The check a compiled ensemble passes before it replaces ONNX Runtime's kernel: both run the
//! node on a probe batch, rows that put every column on both sides of each of its thresholds,
//! with infinities and NaNs, and the outputs must be equal (a classifier's softmax scores
//! within 1e-5 relative: its `exp` may be another implementation's).

use ort::environment::Environment;

use super::ensemble::Ensemble;
use super::{Output, graph};

/// Most values tried per column (each threshold gives three).
const MAX_VALUES: usize = 8192;

/// Runs `node` (its bytes as the model has them) alone in ONNX Runtime, one thread, and
/// `ensemble` on the same probe batch; `Err` says how they differ, or why ONNX Runtime could
/// not run it.
pub fn probe(
    ensemble: &Ensemble,
    node: &[u8],
    node_proto: &graph::NodeProto,
    versions: &[u8],
    environment: &Environment,
) -> Result<(), String> {
    let width = ensemble.width();
    let x = rows(ensemble);
    let rows = x.len() / width;
    let input = node_proto.input.first().ok_or("the node has no input")?;
    let types: Vec<(String, i32)> = match ensemble.classes() {
        None => vec![(
            node_proto.output.first().cloned().unwrap_or_default(),
            graph::FLOAT,
        )],
        Some(_) => node_proto
            .output
            .iter()
            .cloned()
            .zip([graph::INT64, graph::FLOAT])
            .collect(),
    };
    let model = graph::single_node_model(versions, node, (input, width), &types);
    let reference = super::run(&model, None, environment, &x, width)
        .map_err(|error| format!("ONNX Runtime cannot run the node alone: {error}"))?;
    let targets = ensemble.targets();
    let ours = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut scores = vec![0.0f32; rows * targets];
        match ensemble.classes() {
            None => {
                ensemble.predict(&x, width, &mut scores);
                vec![Output::F32(scores)]
            }
            Some(_) => {
                let mut labels = vec![0i64; rows];
                ensemble.classify(&x, width, &mut labels, &mut scores);
                vec![Output::I64(labels), Output::F32(scores)]
            }
        }
    }))
    .map_err(|_| "the service's kernel failed on the probe batch".to_owned())?;
    if reference.len() != ours.len() {
        return Err(format!(
            "ONNX Runtime's kernel gives {} outputs, this one {}",
            reference.len(),
            ours.len()
        ));
    }
    for (theirs, ours) in reference.iter().zip(&ours) {
        compare(theirs, ours, targets, ensemble.exact())?;
    }
    Ok(())
}

/// Largest relative difference of scores allowed when they are not exact ([`Ensemble::exact`]).
const TOLERANCE: f64 = 1e-5;

/// Whether one output of both kernels agrees: labels equal, values equal (or within
/// [`TOLERANCE`] when not `exact`); `Err` says where they differ most.
fn compare(theirs: &Output, ours: &Output, targets: usize, exact: bool) -> Result<(), String> {
    let (theirs, ours) = match (theirs, ours) {
        (Output::I64(theirs), Output::I64(ours)) => {
            let differing = theirs
                .iter()
                .zip(ours)
                .enumerate()
                .find(|(_, (a, b))| a != b);
            return match differing {
                None if theirs.len() == ours.len() => Ok(()),
                None => Err("the kernels give different numbers of labels".to_owned()),
                Some((row, (theirs, ours))) => Err(format!(
                    "the kernels differ on the probe batch: label {ours} against ONNX \
                     Runtime's {theirs} at row {row}"
                )),
            };
        }
        (Output::F32(theirs), Output::F32(ours)) if theirs.len() == ours.len() => (theirs, ours),
        _ => return Err("the kernels' outputs differ in type or size".to_owned()),
    };
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&a, &b)) in theirs.iter().zip(ours).enumerate() {
        if a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) {
            continue;
        }
        let difference = (f64::from(a) - f64::from(b)).abs();
        let difference = if difference.is_nan() {
            f64::INFINITY
        } else {
            difference
        };
        let relative = difference / f64::from(a).abs().max(f64::MIN_POSITIVE);
        if !exact && relative <= TOLERANCE {
            continue;
        }
        if worst.is_none_or(|(_, d, _)| difference > d) {
            worst = Some((i, difference, relative));
        }
    }
    match worst {
        None => Ok(()),
        Some((i, difference, relative)) => Err(format!(
            "the kernels differ on the probe batch: largest difference {difference:e} \
             (relative {relative:e}) at row {}, value {}",
            i / targets,
            i % targets
        )),
    }
}

/// The probe batch, row-major, [`Ensemble::width`] columns: a first half with finite and
/// infinite values only, then a half where NaN is among each column's values too (rows with a
/// NaN take the evaluator's other path). Each column's values are the `f32` at and on either
/// side of each of its thresholds, shuffled per column so that rows mix them differently.
pub fn rows(ensemble: &Ensemble) -> Vec<f32> {
    let width = ensemble.width();
    let mut columns: Vec<Vec<f32>> = ensemble
        .thresholds()
        .iter()
        .map(|thresholds| {
            let mut values = vec![f32::NEG_INFINITY, 0.0, f32::INFINITY];
            for &t in thresholds {
                let near = t as f32;
                values.extend([near.next_down(), near, near.next_up()]);
            }
            values.retain(|v| !v.is_nan());
            values.sort_by(f32::total_cmp);
            values.dedup();
            values.truncate(MAX_VALUES);
            values
        })
        .collect();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for column in &mut columns {
        shuffle(column, &mut seed);
    }
    let half = columns.iter().map(Vec::len).max().unwrap_or(1);
    // Whole blocks of the evaluator's fast path.
    let half = half.div_ceil(8) * 8;
    let mut x = Vec::with_capacity(2 * half * width);
    for nan in [false, true] {
        for r in 0..half {
            for (c, column) in columns.iter().enumerate() {
                let slots = column.len() + usize::from(nan);
                let slot = (r + c * 31) % slots;
                x.push(column.get(slot).copied().unwrap_or(f32::NAN));
            }
        }
    }
    x
}

/// Fisher-Yates with a fixed-seed xorshift: the same batch at every load.
fn shuffle(values: &mut [f32], seed: &mut u64) {
    for i in (1..values.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let j = (*seed % (i as u64 + 1)) as usize;
        values.swap(i, j);
    }
}
