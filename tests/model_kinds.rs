//! Every ordinary kind of model a user logs with `mlflow.onnx` is served as it is, and predicts
//! what Python onnxruntime predicts on the same rows.
//!
//! The models under `tests/fixtures/model-kinds/` were trained by `models/model_kinds.py` with
//! scikit-learn, LightGBM and XGBoost, converted by skl2onnx or onnxmltools, and saved with the
//! real `mlflow.onnx.save_model` and an inferred signature. `reference.json` holds, for each,
//! 200 records as a producer sends them and the outputs Python onnxruntime gives on them.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bike_prediction::handler::Handler;
use common::{close, kinesis_event, load_model, root};
use serde::Deserialize;

/// Relative tolerance against the Python reference: both run the same ONNX graph, so only the
/// order of float operations may differ.
const TOLERANCE: f64 = 1e-4;

/// Every kind `models/model_kinds.py` writes.
const KINDS: [&str; 11] = [
    "lightgbm-regressor",
    "columns-float-string",
    "columns-int-double",
    "classifier-zipmap",
    "classifier-tensor",
    "tensor-signature",
    "optional-column",
    "xgboost-classifier",
    "lightgbm-large",
    "random-forest",
    "xgboost-regressor",
];

#[derive(Deserialize)]
struct Kind {
    records: Vec<serde_json::Value>,
    outputs: Vec<serde_json::Value>,
}

fn reference() -> BTreeMap<String, Kind> {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/model-kinds/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn model_dir(kind: &str) -> PathBuf {
    root().join("tests/fixtures/model-kinds").join(kind)
}

/// The event of all of a kind's reference records, each record keyed by its position.
fn event(kind: &Kind) -> Vec<u8> {
    let payloads: Vec<Vec<u8>> = kind
        .records
        .iter()
        .map(|record| serde_json::to_vec(record).unwrap())
        .collect();
    kinesis_event(&payloads)
}

/// Checks one prediction against Python's output for the record: a regressor's value under
/// `cnt`, or a classifier's label exactly and its probabilities class by class.
fn assert_matches_python(kind: &str, prediction: &serde_json::Value, expected: &serde_json::Value) {
    let id = &prediction["pred_id"];
    if let Some(value) = expected.get("value") {
        let actual = prediction["cnt"].as_f64().unwrap_or(f64::NAN);
        let wanted = value.as_f64().unwrap();
        assert!(
            close(actual, wanted, TOLERANCE),
            "{kind} pred_id {id}: service {actual}, python {wanted}"
        );
        return;
    }
    assert_eq!(
        prediction["label"], expected["label"],
        "{kind} pred_id {id}"
    );
    let actual = prediction["probabilities"].as_object().unwrap();
    let wanted = expected["probabilities"].as_object().unwrap();
    let classes =
        |map: &serde_json::Map<String, serde_json::Value>| map.keys().cloned().collect::<Vec<_>>();
    assert_eq!(classes(actual), classes(wanted), "{kind} pred_id {id}");
    for (class, wanted) in wanted {
        let actual = actual[class].as_f64().unwrap();
        let wanted = wanted.as_f64().unwrap();
        assert!(
            close(actual, wanted, TOLERANCE),
            "{kind} pred_id {id} class {class}: service {actual}, python {wanted}"
        );
    }
}

/// Checks a response holds one prediction per reference record, each matching Python's.
fn assert_response_matches_python(kind: &str, reference: &Kind, response: &serde_json::Value) {
    assert_eq!(response["rejected"], serde_json::json!([]), "{kind}");
    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), reference.records.len(), "{kind}");
    for (event, (record, expected)) in predictions
        .iter()
        .zip(reference.records.iter().zip(&reference.outputs))
    {
        assert_eq!(event["prediction"]["pred_id"], record["pred_id"], "{kind}");
        assert_matches_python(kind, &event["prediction"], expected);
    }
}

#[tokio::test]
async fn every_kind_predicts_what_python_onnxruntime_predicts_through_the_handler() {
    let reference = reference();
    assert_eq!(
        reference
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .len(),
        KINDS.len()
    );
    for kind in KINDS {
        let model = load_model(&model_dir(kind)).unwrap_or_else(|error| {
            panic!("{kind}: {}", bike_prediction::handler::error_chain(&error))
        });
        let handler = Handler::new(model, kind, "run-1");
        let response = handler
            .handle_bytes(&event(&reference[kind]))
            .await
            .unwrap()
            .response;
        let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
        assert_response_matches_python(kind, &reference[kind], &response);
    }
}

#[test]
fn every_kind_is_served_by_invoke_with_only_model_uri_changed() {
    let reference = reference();
    for kind in KINDS {
        let dir = model_dir(kind);
        let mut child = Command::new(env!("CARGO_BIN_EXE_bike-prediction"))
            .args(["invoke", "--event", "-"])
            .current_dir(root())
            .env("MODEL_URI", &dir)
            .env_remove("TEST_RUN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &event(&reference[kind]))
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_response_matches_python(kind, &reference[kind], &response);
    }
}

/// A ZipMap classifier's probabilities are read from the `[N, C]` tensor the ZipMap is made
/// from; one whose model keeps tensors in external files is loaded from its file as it is,
/// and its ZipMap read map by map. Both give Python's probabilities.
#[tokio::test]
async fn zipmap_probabilities_are_the_same_read_as_a_tensor_or_map_by_map() {
    let reference = reference();
    let zipmap = &reference["classifier-zipmap"];
    for dir in [
        model_dir("classifier-zipmap"),
        root().join("tests/fixtures/models/zipmap-external-data"),
    ] {
        let model = load_model(&dir).unwrap();
        let form = match model.outputs() {
            bike_prediction::model::OutputLayout::Classification {
                probabilities: Some(probabilities),
                ..
            } => probabilities.form.clone(),
            other => panic!("{other:?}"),
        };
        let expected_maps = dir.ends_with("zipmap-external-data");
        assert_eq!(
            form == bike_prediction::model::ProbabilityForm::ZipMap,
            expected_maps,
            "{form:?}"
        );
        let handler = Handler::new(model, "zipmap", "run-1");
        let response = handler.handle_bytes(&event(zipmap)).await.unwrap().response;
        let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
        assert_response_matches_python("classifier-zipmap", zipmap, &response);
    }
}
