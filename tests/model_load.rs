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

#[test]
fn model_whose_batch_is_fixed_to_several_rows_is_refused_saying_how_to_export_it() {
    let error = load_error("fixed-batch");
    assert!(error.contains("fixes the batch to 2 rows"), "{error}");
    assert!(error.contains("dynamic"), "{error}");
}

/// Runs `payloads` through a handler of the fixture model `fixture`; returns the response.
async fn handled(fixture: &str, payloads: &[&str]) -> serde_json::Value {
    let model = load_model(&root().join("tests/fixtures/models").join(fixture)).unwrap();
    let handler = bike_prediction::handler::Handler::new(model, fixture, "v");
    let payloads: Vec<Vec<u8>> = payloads.iter().map(|p| p.as_bytes().to_vec()).collect();
    let response = handler
        .handle_bytes(&common::kinesis_event(&payloads))
        .await
        .unwrap()
        .response;
    serde_json::from_slice(&response).unwrap()
}

#[tokio::test]
async fn model_whose_batch_is_fixed_to_one_row_predicts_row_by_row() {
    let reference = common::reference();
    let payloads: Vec<String> = (0..3)
        .map(|i| {
            let payload = common::payload(&reference.columns, &reference.rows[i], &i.into());
            String::from_utf8(payload).unwrap()
        })
        .collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let response = handled("one-row", &payloads).await;
    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3, "{response}");
    for (i, event) in predictions.iter().enumerate() {
        let actual = event["prediction"]["cnt"].as_f64().unwrap();
        let expected = f64::from(reference.models["bike-linear"][i]);
        assert!(
            common::close(actual, expected, 1e-4),
            "{actual} vs {expected}"
        );
    }
}

/// A record ONNX Runtime fails on (here an index outside the model's table) is rejected alone:
/// the batch is split until the failing records are found, and every other record is predicted.
#[tokio::test]
async fn records_onnx_runtime_fails_on_are_rejected_alone_and_the_rest_predicted() {
    let ids = [1, 10, 3, 99, 0, 9, 12, 2];
    let payloads: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| format!(r#"{{"features": {{"id": {id}}}, "pred_id": {i}}}"#))
        .collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    let response = handled("gather-index", &payloads).await;
    assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    let rejected: Vec<(u64, &str)> = response["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let record: u64 = entry["partitionKey"].as_str().unwrap().parse().unwrap();
            (record, entry["code"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (1, "inference_failed"),
            (3, "inference_failed"),
            (6, "inference_failed")
        ]
    );
    let reason = response["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ONNX Runtime could not predict the record"),
        "{reason}"
    );
    let predicted: Vec<(u64, f64)> = response["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let prediction = &event["prediction"];
            (
                prediction["pred_id"].as_u64().unwrap(),
                prediction["cnt"].as_f64().unwrap(),
            )
        })
        .collect();
    // The table holds 1.5 * index.
    assert_eq!(
        predicted,
        [(0, 1.5), (2, 4.5), (4, 0.0), (5, 13.5), (7, 3.0)]
    );
}
