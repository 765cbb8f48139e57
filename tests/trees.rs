//! The service's tree-ensemble kernel (`bike_prediction::trees`) against ONNX Runtime's own, on
//! the bundled model and the tree models of `tests/fixtures/model-kinds/`: it engages where it
//! supports the model, and predicts exactly what ONNX Runtime's kernel predicts.

mod common;

use std::path::{Path, PathBuf};

use bike_prediction::artifact::ModelArtifact;
use bike_prediction::model::Model;
use bike_prediction::trees::TreeKernel;
use common::{bundled_model, predict_rows, root, runtime};

fn load(dir: &Path, kernel: TreeKernel) -> Model {
    runtime()
        .load_model_with(ModelArtifact::read_dir(dir).unwrap(), 1, kernel)
        .unwrap()
}

/// Rows spread over the columns' plausible ranges, with a fixed-seed generator: `[rows, width]`.
fn rows(width: usize, rows: usize, scale: &[f32]) -> Vec<f32> {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    (0..rows * width)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let unit = (seed >> 11) as f32 / (1u64 << 53) as f32;
            (unit * scale[i % width]).round()
        })
        .collect()
}

/// Both kernels on the same rows: the same bits for every prediction (the service's kernel sums
/// the trees in ONNX Runtime's order on one thread).
fn assert_same_predictions(dir: PathBuf, scale: &[f32]) {
    let native = load(&dir, TreeKernel::Native);
    let reference = load(&dir, TreeKernel::OnnxRuntime);
    assert_eq!(native.native_tree_ensembles(), 1, "{}", dir.display());
    assert_eq!(reference.native_tree_ensembles(), 0);
    let x = rows(scale.len(), 5_000, scale);
    let ours = predict_rows(&native, &x);
    let theirs = predict_rows(&reference, &x);
    assert_eq!(ours.len(), theirs.len());
    for (row, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "row {row}: {a} vs ONNX Runtime {b}"
        );
    }
}

#[test]
fn bundled_model_runs_on_the_service_kernel_and_predicts_the_same_bits() {
    // t1, t2, hum, weather_code
    assert_same_predictions(bundled_model("bike-demand"), &[40.0, 45.0, 100.0, 5.0]);
}

#[test]
fn lightgbm_regressor_runs_on_the_service_kernel_and_predicts_the_same_bits() {
    assert_same_predictions(
        root().join("tests/fixtures/model-kinds/lightgbm-regressor"),
        &[40.0, 45.0, 100.0, 5.0],
    );
}
