//! The service's predictions against Python onnxruntime's on the same model and real rows.

mod common;

use bike_prediction::handler::Handler;
use common::{bundled_model, close, kinesis_event, load_model, reference};

/// Relative tolerance against the Python reference: both run the same ONNX graph in float32, so
/// only summation order may differ.
const TOLERANCE: f64 = 1e-4;

/// Runs every reference row through the whole handler in one event and compares each record's
/// prediction with Python onnxruntime's.
async fn predictions_match_python(model_name: &str) {
    let reference = reference();
    let expected = &reference.models[model_name];
    let model = load_model(&bundled_model(model_name)).unwrap();
    assert_eq!(model.columns(), reference.columns);
    let handler = Handler::new(model, model_name, "run-1");

    let payloads = common::reference_payloads(&reference);
    let response = handler
        .handle_bytes(&kinesis_event(&payloads))
        .await
        .unwrap()
        .response;
    let response: serde_json::Value = serde_json::from_slice(&response).unwrap();

    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), reference.rows.len());
    assert_eq!(response["rejected"].as_array().unwrap().len(), 0);
    for event in predictions {
        assert_eq!(event["model"], model_name);
        assert_eq!(event["version"], "run-1");
        let index = event["prediction"]["pred_id"].as_u64().unwrap() as usize;
        let actual = event["prediction"]["cnt"].as_f64().unwrap();
        let wanted = f64::from(expected[index]);
        assert!(
            close(actual, wanted, TOLERANCE),
            "row {index} {:?}: service {actual}, python {wanted}",
            reference.rows[index]
        );
    }
}

#[tokio::test]
async fn bundled_model_matches_python_onnxruntime_on_every_reference_row() {
    predictions_match_python("bike-demand").await;
}

#[tokio::test]
async fn linear_model_matches_python_onnxruntime_on_every_reference_row() {
    predictions_match_python("bike-linear").await;
}

#[test]
fn one_record_batches_predict_the_same_as_one_big_batch() {
    let reference = reference();
    let model = load_model(&bundled_model("bike-demand")).unwrap();
    let expected = &reference.models["bike-demand"];
    for (row, wanted) in reference.rows.iter().zip(expected).take(50) {
        let features: Vec<f32> = row.clone();
        let predicted = common::predict_rows(&model, &features);
        assert!(close(
            f64::from(predicted[0]),
            f64::from(*wanted),
            TOLERANCE
        ));
    }
}
