//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_kinesis;
pub mod in_process;
pub mod relay;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aws_lambda_events::kinesis::{KinesisEvent, KinesisEventRecord};
use bike_prediction::artifact::ModelArtifact;
use bike_prediction::model::{Model, ModelError, OnnxRuntime};
use serde::Deserialize;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A model directory under `models/`.
pub fn bundled_model(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// ONNX Runtime, loaded once per test binary (it allows one environment per process) from
/// `ORT_DYLIB_PATH`, which `.cargo/config.toml` points at the library `scripts/setup-ort.sh`
/// installs.
pub fn runtime() -> &'static OnnxRuntime {
    static RUNTIME: OnceLock<OnnxRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let path =
            std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is set by .cargo/config.toml");
        OnnxRuntime::load(Path::new(&path)).expect("run scripts/setup-ort.sh first")
    })
}

/// Loads the model in `dir` into the shared runtime.
pub fn load_model(dir: &Path) -> Result<Model, ModelError> {
    runtime().load_model(ModelArtifact::read_dir(dir)?)
}

/// Rows of real data and the predictions Python onnxruntime gives on them
/// (`tests/fixtures/reference.json`, written by `models/train.py`).
#[derive(Deserialize)]
pub struct Reference {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f32>>,
    pub models: std::collections::HashMap<String, Vec<f32>>,
}

pub fn reference() -> Reference {
    let text = std::fs::read_to_string(root().join("tests/fixtures/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The record payload the Python service's producers send.
pub fn payload(columns: &[String], row: &[f32], pred_id: &serde_json::Value) -> Vec<u8> {
    let features: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .zip(row)
        .map(|(name, value)| (name.clone(), serde_json::json!(value)))
        .collect();
    serde_json::to_vec(&serde_json::json!({"features": features, "pred_id": pred_id})).unwrap()
}

/// One record payload of every reference row, `pred_id` its index.
pub fn reference_payloads(reference: &Reference) -> Vec<Vec<u8>> {
    reference
        .rows
        .iter()
        .enumerate()
        .map(|(index, row)| payload(&reference.columns, row, &serde_json::json!(index)))
        .collect()
}

/// A Lambda Kinesis event carrying `payloads`, built with the `aws_lambda_events` types so that
/// it has every field Lambda sends.
pub fn kinesis_event(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut event = KinesisEvent::default();
    for (index, payload) in payloads.iter().enumerate() {
        let sequence_number =
            format!("4963393087354304839602317346744072016014077354057{index:07}");
        let mut record = KinesisEventRecord::default();
        record.aws_region = Some("us-east-1".into());
        record.event_id = Some(format!("shardId-000000000000:{sequence_number}"));
        record.event_name = Some("aws:kinesis:record".into());
        record.event_source = Some("aws:kinesis".into());
        record.event_source_arn =
            Some("arn:aws:kinesis:us-east-1:123456789012:stream/passenger_events".into());
        record.event_version = Some("1.0".into());
        record.invoke_identity_arn = Some("arn:aws:iam::123456789012:role/lambda-kinesis".into());
        *record.kinesis.data = payload.clone();
        record.kinesis.partition_key = index.to_string();
        record.kinesis.sequence_number = sequence_number;
        record.kinesis.kinesis_schema_version = Some("1.0".into());
        event.records.push(record);
    }
    serde_json::to_vec(&event).unwrap()
}

/// Whether `actual` is within `relative` of `expected`, measured against `max(|expected|, 1)`
/// so that predictions near zero are compared absolutely.
pub fn close(actual: f64, expected: f64, relative: f64) -> bool {
    (actual - expected).abs() <= relative * expected.abs().max(1.0)
}

/// Predicts rows of float features (`[N, F]`, row-major, columns in the model's order) with a
/// regressor of float32 output: one value per row.
pub fn predict_rows(model: &Model, rows: &[f32]) -> Vec<f32> {
    use bike_prediction::inputs::Value;
    use bike_prediction::model::{Predictions, Values};
    let layout = model.layout();
    let width = layout.fields.len();
    let mut inputs = layout.buffers(rows.len() / width);
    for row in rows.chunks(width) {
        inputs.push_row(layout);
        for (field, value) in row.iter().enumerate() {
            inputs
                .set(layout, field, Value::Float(f64::from(*value)))
                .unwrap();
        }
        inputs.finish_row();
    }
    match model.predict(&inputs).unwrap() {
        Predictions::Values {
            values: Values::Float32(values),
            width: 1,
        } => values,
        other => panic!("not one float32 value per row: {other:?}"),
    }
}

/// A Kinesis client for a server on 127.0.0.1 that accepts connections and never answers.
pub async fn hung_kinesis() -> aws_sdk_kinesis::Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = listener.accept().await {
            held.push(connection);
        }
    });
    fake_kinesis::kinesis_at(address)
}

/// A Kinesis client for a server on 127.0.0.1 that accepts every `PutRecords` entry but
/// answers each call only after `delay`; the count is of the entries it accepted.
pub async fn slow_kinesis(
    delay: std::time::Duration,
) -> (
    aws_sdk_kinesis::Client,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let (client, stats) = fake_kinesis(delay, None).await;
    (client, stats.accepted.clone())
}

/// A Kinesis client for a local server answering `PutRecords` after `delay`, within
/// `records_per_second` if given ([`fake_kinesis::serve`]), and what the server saw.
pub async fn fake_kinesis(
    delay: std::time::Duration,
    records_per_second: Option<f64>,
) -> (
    aws_sdk_kinesis::Client,
    std::sync::Arc<fake_kinesis::FakeKinesisStats>,
) {
    fake_kinesis::serve(delay, records_per_second).await
}

/// The user records (partition key, data) of a KPL aggregated record, or `None` if `data` is
/// not one that reads.
pub fn deaggregate(data: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let aggregate = bike_prediction::aggregate::decode(data).ok()?;
    let keys = aggregate.partition_keys();
    aggregate
        .user_records()
        .map(|(key, data)| Some((keys.get(key)?.clone(), data.to_vec())))
        .collect()
}
