//! Inputs and settings shared by the benches: real rows in real Lambda Kinesis events, the
//! models loaded once, and sampling settings that keep `cargo bench` to a few minutes.
// Each bench file uses a different subset of these helpers.
#![allow(dead_code)]

#[path = "../../tests/common/fake_kinesis.rs"]
pub mod fake_kinesis;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bike_prediction::artifact::ModelArtifact;
use bike_prediction::model::{Model, OnnxRuntime};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Records per event: one record, a typical batch, a large one, and the most Lambda delivers
/// from Kinesis in one invocation.
pub const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];

/// The bundled gradient-boosting model and the linear model with the same inputs: the first
/// shows what the service costs with a real model, the second what the service itself costs.
pub const MODELS: [&str; 2] = ["bike-demand", "bike-linear"];

/// Short warm-up and measurement, with the allocator set as the function sets it: the machine has 2 cores and every bench runs at 4 sizes, so
/// criterion's defaults (3 s + 5 s, 100 samples) would take most of an hour.
pub fn criterion() -> Criterion {
    // As the function does at start, so that batches reuse each other's memory.
    bike_prediction::memory::keep_freed_memory();
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

/// Sets the throughput to `records` elements and scales the sampling to the batch size, then
/// returns the id `group/records`. Small batches take microseconds and get many samples; a
/// 10,000-record batch through the gradient-boosting model takes tens of milliseconds, where
/// criterion's linear sampling (1 + 2 + ... + 100 iterations) would take minutes, so large
/// batches use flat sampling with fewer samples.
pub fn batch(group: &mut BenchmarkGroup<'_, WallTime>, records: usize) -> BenchmarkId {
    group.throughput(Throughput::Elements(records as u64));
    if records >= 1_000 {
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .measurement_time(Duration::from_secs(3));
    } else {
        group
            .sampling_mode(SamplingMode::Auto)
            .sample_size(50)
            .measurement_time(Duration::from_secs(2));
    }
    BenchmarkId::from_parameter(records)
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A model directory under `models/`.
pub fn model_dir(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// ONNX Runtime, loaded once per bench process (it allows one environment per process), from
/// `ORT_DYLIB_PATH`, which `.cargo/config.toml` points at the library `scripts/setup-ort.sh`
/// installs.
pub fn runtime() -> &'static OnnxRuntime {
    static RUNTIME: OnceLock<OnnxRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let path = std::env::var("ORT_DYLIB_PATH")
            .expect("ORT_DYLIB_PATH is set by .cargo/config.toml for cargo commands");
        OnnxRuntime::load(Path::new(&path))
            .expect("cannot load ONNX Runtime: run scripts/setup-ort.sh first")
    })
}

/// Loads the model `models/<name>` into the shared runtime.
pub fn load_model(name: &str) -> Model {
    load_model_threaded(name, 1)
}

/// Loads the model `models/<name>` into the shared runtime, inferring on `threads` threads.
pub fn load_model_threaded(name: &str, threads: usize) -> Model {
    load_model_with(name, threads, bike_prediction::trees::TreeKernel::Native)
}

/// Loads the model `models/<name>` into the shared runtime, inferring on `threads` threads,
/// its tree ensembles on `kernel`.
pub fn load_model_with(
    name: &str,
    threads: usize,
    kernel: bike_prediction::trees::TreeKernel,
) -> Model {
    let artifact = ModelArtifact::read_dir(&model_dir(name)).expect("a bundled model directory");
    runtime()
        .load_model_with(artifact, threads, kernel)
        .expect("the bundled model loads")
}

/// `tests/fixtures/reference.json`: 2,000 real rows (Capital Bikeshare hours), the model
/// columns they are in, and the predictions Python onnxruntime gives for each model.
#[derive(Deserialize)]
pub struct Reference {
    pub columns: Vec<String>,
    /// Kept as JSON text, so that events carry the numbers exactly as Python's `json.dumps`
    /// writes them (serde_json's default float parsing can be one ULP off, which would print
    /// differently).
    pub rows: Vec<Vec<Box<RawValue>>>,
    pub models: std::collections::HashMap<String, Vec<f32>>,
}

/// The reference rows, read once per process.
pub fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let text = std::fs::read_to_string(root().join("tests/fixtures/reference.json"))
            .expect("tests/fixtures/reference.json");
        serde_json::from_str(&text).expect("reference.json has columns, rows and models")
    })
}

/// The raw Lambda event for `records` records, byte for byte what `scripts/make-event.py
/// <records>` writes: every field Lambda sends per record, and the payload
/// `{"features": {...}, "pred_id": i}` of reference row `i % 2000` in base64, so that a large
/// batch holds varied rows (a tree model fed one repeated row would measure the branch
/// predictor, not the model).
pub fn kinesis_event(records: usize) -> Vec<u8> {
    let reference = reference();
    let payloads = (0..records).map(|index| {
        let row = &reference.rows[index % reference.rows.len()];
        let features: Vec<String> = reference
            .columns
            .iter()
            .zip(row)
            .map(|(name, value)| format!("{}: {}", json(name), value.get()))
            .collect();
        format!(
            r#"{{"features": {{{}}}, "pred_id": {index}}}"#,
            features.join(", ")
        )
    });
    event_of(payloads, records)
}

/// The raw Lambda event of `count` records carrying `payloads`, each record with every field
/// Lambda sends.
fn event_of(payloads: impl Iterator<Item = String>, count: usize) -> Vec<u8> {
    let mut event = String::with_capacity(count * 760);
    event.push_str(r#"{"Records": ["#);
    for (index, payload) in payloads.enumerate() {
        if index > 0 {
            event.push_str(", ");
        }
        let sequence_number = format!("49633930873543048396023173467440720160140773540{index:010}");
        event.push_str(&format!(
            concat!(
                r#"{{"kinesis": {{"kinesisSchemaVersion": "1.0", "partitionKey": "{index}", "#,
                r#""sequenceNumber": "{seq}", "data": "{data}", "#,
                r#""approximateArrivalTimestamp": 1665200574.31}}, "#,
                r#""eventSource": "aws:kinesis", "eventVersion": "1.0", "#,
                r#""eventID": "shardId-000000000000:{seq}", "eventName": "aws:kinesis:record", "#,
                r#""invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-kinesis", "#,
                r#""awsRegion": "us-east-1", "#,
                r#""eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/passenger_events"}}"#,
            ),
            index = index,
            seq = sequence_number,
            data = BASE64.encode(payload),
        ));
    }
    event.push_str("]}");
    event.into_bytes()
}

/// JSON text of a value.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain values serialize")
}

/// A model of `tests/fixtures/model-kinds/` (written by `models/model_kinds.py`).
pub fn load_kind(kind: &str) -> Model {
    let dir = root().join("tests/fixtures/model-kinds").join(kind);
    let artifact = ModelArtifact::read_dir(&dir).expect("a model-kinds fixture");
    runtime().load_model(artifact).expect("the fixture loads")
}

/// A Lambda event of `records` records carrying the reference payloads of one model kind
/// (`tests/fixtures/model-kinds/reference.json`), rotated, in records like
/// [`kinesis_event`]'s.
pub fn kind_event(kind: &str, records: usize) -> Vec<u8> {
    #[derive(Deserialize)]
    struct Kind {
        records: Vec<Box<RawValue>>,
    }
    let text = std::fs::read_to_string(root().join("tests/fixtures/model-kinds/reference.json"))
        .expect("tests/fixtures/model-kinds/reference.json");
    let mut kinds: std::collections::HashMap<String, Kind> =
        serde_json::from_str(&text).expect("reference.json has each kind's records");
    let payloads = kinds.remove(kind).expect("a known kind").records;
    let rotated = (0..records).map(|index| payloads[index % payloads.len()].get().to_owned());
    event_of(rotated, records)
}

/// Python onnxruntime's prediction for each record of a `records`-record event (reference rows
/// rotated like the event's), standing in for model output where the model is not under test.
pub fn reference_predictions(model: &str, records: usize) -> Vec<f32> {
    let predictions = &reference().models[model];
    (0..records)
        .map(|index| predictions[index % predictions.len()])
        .collect()
}

/// The floor: the least any handler must do with the event, parsing its JSON with serde_json
/// into borrowed strings that keep only each record's `data` and `sequenceNumber` (no base64,
/// no payload). Returns the number of records, checked by the caller.
pub fn floor(event: &[u8]) -> usize {
    let parsed: FloorEvent<'_> = serde_json::from_slice(event).expect("a Kinesis event");
    // Touch both fields so that neither can be optimised away.
    parsed
        .records
        .iter()
        .filter(|record| {
            !record.kinesis.data.is_empty() && !record.kinesis.sequence_number.is_empty()
        })
        .count()
}

/// Only what every record's prediction needs from the envelope, borrowed from the event bytes;
/// serde skips the other fields without building them.
#[derive(Deserialize)]
struct FloorEvent<'e> {
    #[serde(rename = "Records", borrow)]
    records: Vec<FloorRecord<'e>>,
}

#[derive(Deserialize)]
struct FloorRecord<'e> {
    #[serde(borrow)]
    kinesis: FloorKinesis<'e>,
}

/// `&str`, not `Cow`: the events have no escapes in these fields, and a borrowed string is the
/// cheapest thing serde_json can hand out.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FloorKinesis<'e> {
    data: &'e str,
    sequence_number: &'e str,
}

/// A client for a local Kinesis server ([`fake_kinesis::serve`]) that answers every
/// `PutRecords` call after `latency`. The server runs on a thread and runtime of its own, so
/// that its work is not counted in the time of the runtime publishing to it.
pub fn kinesis_with_latency(latency: Duration) -> aws_sdk_kinesis::Client {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let (client, _) = fake_kinesis::serve(latency, None).await;
            sender.send(client).expect("the bench waits for the client");
            std::future::pending::<()>().await
        });
    });
    receiver.recv().expect("the server starts")
}
