//! Helpers shared by the integration tests.
#![allow(dead_code)]

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
    kinesis_at(address)
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

/// What a [`fake_kinesis`] server saw.
#[derive(Debug, Default)]
pub struct FakeKinesisStats {
    /// Entries accepted.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Entries answered with `ProvisionedThroughputExceededException`.
    pub throttled: std::sync::atomic::AtomicUsize,
    /// `PutRecords` calls.
    pub calls: std::sync::atomic::AtomicUsize,
    /// Calls being answered now, and the most there ever were at once.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub max_in_flight: std::sync::atomic::AtomicUsize,
    /// The partition keys of the accepted entries, in the order they were accepted.
    pub keys: std::sync::Mutex<Vec<String>>,
}

/// A Kinesis client for a server on 127.0.0.1 that answers each `PutRecords` call after
/// `delay`, and, with `records_per_second`, takes at most that many entries a second (a token
/// bucket holding one second's worth, as a Kinesis shard): the entries over it are answered
/// with `ProvisionedThroughputExceededException` while the call's others are accepted.
pub async fn fake_kinesis(
    delay: std::time::Duration,
    records_per_second: Option<f64>,
) -> (aws_sdk_kinesis::Client, std::sync::Arc<FakeKinesisStats>) {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let stats = Arc::new(FakeKinesisStats::default());
    let bucket = Arc::new(Mutex::new((
        records_per_second.unwrap_or(0.0),
        std::time::Instant::now(),
    )));
    let server_stats = stats.clone();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let stats = server_stats.clone();
            let bucket = bucket.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    // One request: headers, then `content-length` bytes of body.
                    let mut chunk = [0u8; 64 * 1024];
                    let end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        match connection.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    };
                    let headers = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length: usize = headers
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |value| value.trim().parse().unwrap());
                    while buffer.len() < end + length {
                        match connection.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buffer[end..end + length]).unwrap_or_default();
                    buffer.drain(..end + length);
                    stats.calls.fetch_add(1, Ordering::Relaxed);
                    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
                    let entries = body["Records"].as_array().cloned().unwrap_or_default();
                    let mut records = Vec::new();
                    let mut failed = 0;
                    for (i, entry) in entries.iter().enumerate() {
                        let taken = match records_per_second {
                            None => true,
                            Some(rate) => {
                                let mut bucket = bucket.lock().unwrap();
                                let (tokens, since) = &mut *bucket;
                                *tokens =
                                    (*tokens + since.elapsed().as_secs_f64() * rate).min(rate);
                                *since = std::time::Instant::now();
                                let taken = *tokens >= 1.0;
                                if taken {
                                    *tokens -= 1.0;
                                }
                                taken
                            }
                        };
                        if taken {
                            stats.accepted.fetch_add(1, Ordering::Relaxed);
                            let key = entry["PartitionKey"].as_str().unwrap_or_default();
                            stats.keys.lock().unwrap().push(key.to_owned());
                            records.push(serde_json::json!({"SequenceNumber": i.to_string(), "ShardId": "shardId-000000000000"}));
                        } else {
                            failed += 1;
                            stats.throttled.fetch_add(1, Ordering::Relaxed);
                            records.push(serde_json::json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded for shard shardId-000000000000"}));
                        }
                    }
                    let answer =
                        serde_json::json!({"FailedRecordCount": failed, "Records": records})
                            .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if connection.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (kinesis_at(address), stats)
}

/// A Kinesis client for the server at `address`, with test credentials and the publishing
/// client's timeouts.
fn kinesis_at(address: std::net::SocketAddr) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::for_tests())
        .endpoint_url(format!("http://{address}"))
        .timeout_config(bike_prediction::publish::timeouts())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}
