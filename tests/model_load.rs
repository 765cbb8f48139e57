//! A model is checked when it loads: one the service cannot fill fails with a clear message.

mod common;

use bike_prediction::model::ModelError;
use common::{bundled_model, load_model, root};

fn load_error(fixture: &str) -> String {
    let dir = root().join("tests/fixtures/models").join(fixture);
    match load_model(&dir) {
        Ok(_) => panic!("{fixture} loaded"),
        Err(error) => bike_prediction::handler::error_chain(&error),
    }
}

#[test]
fn bundled_models_declare_their_feature_columns() {
    for name in ["bike-demand", "bike-linear"] {
        let model = load_model(&bundled_model(name)).unwrap();
        assert_eq!(
            model.columns(),
            ["t1", "t2", "hum", "weather_code"],
            "{name}"
        );
    }
}

#[test]
fn model_whose_inputs_no_column_names_says_which() {
    let error = load_error("two-inputs");
    assert!(
        error.contains("`a` (float32 [-1, 2]), `b` (float32 [-1, 2])"),
        "{error}"
    );
    assert!(
        error.contains("input `a` has no column of that name"),
        "{error}"
    );
    assert!(
        error.contains(r#"["t1", "t2", "hum", "weather_code"]"#),
        "{error}"
    );
}

#[test]
fn float_column_cannot_feed_an_integer_input() {
    let error = load_error("int-input");
    assert!(error.contains("column `t1` is `float`"), "{error}");
    assert!(error.contains("`input` (int64 [-1, 4])"), "{error}");
}

#[test]
fn model_without_signature_is_refused() {
    let error = load_error("no-signature");
    assert!(
        error.contains("no usable input signature (no `signature`)"),
        "{error}"
    );
    assert!(error.contains("infer_signature"), "{error}");
}

#[test]
fn signature_wider_than_the_model_input_is_refused() {
    let error = load_error("wrong-width");
    assert!(error.contains("windspeed"), "{error}");
    assert!(error.contains("[N, 5]"), "{error}");
}

#[test]
fn missing_model_directory_names_the_path() {
    let error = load_model(&root().join("no/such/model")).err().unwrap();
    assert!(matches!(error, ModelError::Artifact(_)));
    assert!(error.to_string().contains("no model at"), "{error}");
    assert!(error.to_string().contains("no/such/model"), "{error}");
}

#[test]
fn file_that_is_not_onnx_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        bundled_model("bike-linear").join("MLmodel"),
        dir.path().join("MLmodel"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"not an onnx model").unwrap();
    let error = load_model(dir.path()).err().unwrap();
    assert!(matches!(error, ModelError::Session { .. }), "{error}");
    assert!(error.to_string().contains("model.onnx"), "{error}");
}
