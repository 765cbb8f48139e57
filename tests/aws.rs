//! The AWS path against local servers that speak the AWS wire protocols (moto for S3 and the
//! Kinesis stand-in, started by `scripts/test.sh`, which exports `AWS_ENDPOINT_URL` and
//! `AWS_ENDPOINT_URL_KINESIS`): the model from S3, and publishing prediction events with
//! `PutRecords`.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use bike_prediction::artifact::ArtifactError;
use bike_prediction::config::{Config, ModelLocation};
use bike_prediction::download::{MemoryLimit, fetch_model, fetch_model_within};
use bike_prediction::handler::Handler;
use bike_prediction::publish::{Outgoing, Publisher, RetryPolicy};
use common::{bundled_model, close, kinesis_event, payload, reference, root, runtime};

/// The local services' configuration, from the environment `scripts/test.sh` sets.
async fn aws() -> aws_config::SdkConfig {
    for variable in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS"] {
        assert!(
            std::env::var(variable).is_ok_and(|url| url.starts_with("http://127.0.0.1")),
            "{variable} must point at the local services: run the tests with scripts/test.sh"
        );
    }
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// A name no other test uses, for buckets and streams.
fn unique(kind: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a bucket and uploads every file of the model directory `dir` under `prefix`.
async fn upload_model(s3: &aws_sdk_s3::Client, dir: &Path, prefix: &str) -> String {
    let bucket = unique("models");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let key = format!("{prefix}/{}", path.file_name().unwrap().to_string_lossy());
        let body = aws_sdk_s3::primitives::ByteStream::from_path(&path)
            .await
            .unwrap();
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .unwrap();
    }
    bucket
}

/// Resolves the model location the function would use with these variables.
fn location(vars: &[(&str, &str)]) -> (String, String) {
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.to_string())
    })
    .unwrap();
    match config.model {
        ModelLocation::S3 { bucket, prefix } => (bucket, prefix),
        other => panic!("expected an S3 location, got {other}"),
    }
}

/// Predicts the first reference rows with `model` and checks them against Python's.
fn assert_predicts_like_python(model: &bike_prediction::model::Model) {
    let reference = reference();
    let rows: Vec<f32> = reference.rows[..20].concat();
    let predicted = common::predict_rows(model, &rows);
    for (actual, expected) in predicted.iter().zip(&reference.models["bike-demand"]) {
        assert!(
            close(f64::from(*actual), f64::from(*expected), 1e-4),
            "{actual} vs {expected}"
        );
    }
}

#[tokio::test]
async fn model_loads_from_s3_by_run_id_in_the_mlflow_2_layout_and_is_then_cached() {
    let aws = aws().await;
    let s3 = aws_sdk_s3::Client::new(&aws);
    let run_id = "4302f22a1a7b4ce9a25a99b04bca2f0f";
    let bucket = upload_model(
        &s3,
        &bundled_model("bike-demand"),
        &format!("1/{run_id}/artifacts/model"),
    )
    .await;
    let (bucket, prefix) = location(&[("MODEL_BUCKET", &bucket), ("RUN_ID", run_id)]);
    let cache = tempfile::tempdir().unwrap();

    let artifact = fetch_model(&s3, &bucket, &prefix, cache.path())
        .await
        .unwrap();
    assert_eq!(
        artifact.uri,
        format!("s3://{bucket}/1/{run_id}/artifacts/model")
    );
    assert_predicts_like_python(&runtime().load_model(artifact).unwrap());

    // A restarted process in the same sandbox finds the copy and does not reach S3 at all.
    let unreachable = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let cached = fetch_model(&unreachable, &bucket, &prefix, cache.path())
        .await
        .unwrap();
    assert_predicts_like_python(&runtime().load_model(cached).unwrap());
}

#[tokio::test]
async fn model_loads_from_s3_by_model_id_in_the_mlflow_3_layout() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let model_id = "m-5a1c0f3e9b2d4c7e8f6a1b2c3d4e5f60";
    let bucket = upload_model(
        &s3,
        &bundled_model("bike-demand"),
        &format!("1/models/{model_id}/artifacts"),
    )
    .await;
    let (bucket, prefix) = location(&[
        ("MODEL_BUCKET", &bucket),
        ("MODEL_ID", model_id),
        ("RUN_ID", "r"),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let artifact = fetch_model(&s3, &bucket, &prefix, cache.path())
        .await
        .unwrap();
    assert_predicts_like_python(&runtime().load_model(artifact).unwrap());
}

#[tokio::test]
async fn wrong_run_id_names_the_s3_uri_tried() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let bucket = upload_model(
        &s3,
        &bundled_model("bike-demand"),
        "1/right/artifacts/model",
    )
    .await;
    let (bucket, prefix) = location(&[("MODEL_BUCKET", &bucket), ("RUN_ID", "wrong")]);
    let cache = tempfile::tempdir().unwrap();
    let error = fetch_model(&s3, &bucket, &prefix, cache.path())
        .await
        .unwrap_err();
    assert!(matches!(error, ArtifactError::NotFound { .. }), "{error}");
    let expected = format!("no model at s3://{bucket}/1/wrong/artifacts/model");
    assert!(error.to_string().starts_with(&expected), "{error}");
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "nothing half-written stays in the cache"
    );
}

#[tokio::test]
async fn missing_bucket_names_the_s3_uri_tried() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let cache = tempfile::tempdir().unwrap();
    let error = fetch_model(
        &s3,
        "no-such-bucket-here",
        "1/r/artifacts/model",
        cache.path(),
    )
    .await
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("s3://no-such-bucket-here/1/r/artifacts/model"),
        "{error}"
    );
}

#[tokio::test]
async fn onnx_external_data_files_are_downloaded_with_the_model() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let fixture = root().join("tests/fixtures/models/external-data");
    let bucket = upload_model(&s3, &fixture, "1/run/artifacts/model").await;
    let cache = tempfile::tempdir().unwrap();
    let artifact = fetch_model(&s3, &bucket, "1/run/artifacts/model", cache.path())
        .await
        .unwrap();
    assert!(artifact.onnx_path.with_file_name("weights.bin").is_file());
    let model = runtime().load_model(artifact).unwrap();
    // The fixture computes t1 + 2 t2 + hum / 2 - 3 weather_code + 10 from weights in weights.bin.
    assert_eq!(common::predict_rows(&model, &[2.0, 3.0, 50.0, 2.0]), [37.0]);
}

/// Every record on every shard of `stream`, as (partition key, data).
async fn read_stream(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, Vec<u8>)> {
    let records = read_shards(kinesis, stream).await;
    records
        .into_iter()
        .map(|(_, key, data)| (key, data))
        .collect()
}

async fn create_stream(kinesis: &aws_sdk_kinesis::Client, shards: i32) -> String {
    let stream = unique("predictions");
    kinesis
        .create_stream()
        .stream_name(&stream)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn two_thousand_events_are_published_in_at_least_four_calls_with_nothing_lost_or_duplicated()
{
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let stream = create_stream(&kinesis, 2).await;
    let data: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("{{\"pred_id\":{i}}}").into_bytes())
        .collect();
    let events: Vec<Outgoing<'_>> = data
        .iter()
        .enumerate()
        .map(|(i, data)| Outgoing {
            record: i,
            data,
            partition_key: i.to_string().into(),
        })
        .collect();
    let report = Publisher::new(kinesis.clone(), &stream, RetryPolicy::default())
        .publish(
            &events,
            tokio::time::Instant::now() + Duration::from_secs(60),
        )
        .await;
    assert_eq!(report.published, 2000);
    assert!(report.calls >= 4, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");

    let records = read_stream(&kinesis, &stream).await;
    assert_eq!(records.len(), 2000);
    let keys: HashSet<&str> = records.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys.len(), 2000, "no duplicates");
    for (key, data) in &records {
        assert_eq!(data, format!("{{\"pred_id\":{key}}}").as_bytes());
    }
}

#[tokio::test]
async fn handler_publishes_one_event_per_good_record_keyed_by_pred_id() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let stream = create_stream(&kinesis, 1).await;
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let publisher = Publisher::new(kinesis.clone(), &stream, RetryPolicy::default());
    let handler = Handler::new(model, "bike-demand", "run-7").publishing_to(publisher);
    let reference = reference();
    let good =
        |i: usize, id: serde_json::Value| payload(&reference.columns, &reference.rows[i], &id);
    let event = kinesis_event(&[
        good(0, 123.into()),
        b"{}".to_vec(),
        good(1, "ride-9".into()),
    ]);

    let response: serde_json::Value =
        serde_json::from_slice(&handler.handle_bytes(&event).await.unwrap().response).unwrap();
    assert_eq!(response["batchItemFailures"], serde_json::json!([]));
    assert_eq!(response["rejected"].as_array().unwrap().len(), 1);

    let mut published = read_stream(&kinesis, &stream).await;
    published.sort();
    assert_eq!(published.len(), 2);
    let events: Vec<serde_json::Value> = published
        .iter()
        .map(|(_, data)| serde_json::from_slice(data).unwrap())
        .collect();
    assert_eq!(published[0].0, "123");
    assert_eq!(events[0]["prediction"]["pred_id"], 123);
    assert_eq!(published[1].0, "ride-9");
    assert_eq!(events[1]["prediction"]["pred_id"], "ride-9");
    assert_eq!(events[1]["version"], "run-7");
    let expected = reference.models["bike-demand"][1];
    assert!(close(
        events[1]["prediction"]["cnt"].as_f64().unwrap(),
        f64::from(expected),
        1e-4
    ));
}

#[tokio::test]
async fn records_whose_predictions_cannot_be_published_are_reported_for_redelivery() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let no_wait = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let publisher = Publisher::new(kinesis, "stream-that-does-not-exist", no_wait);
    let handler = Handler::new(model, "bike-demand", "run-7").publishing_to(publisher);
    let reference = reference();
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            payload(
                &reference.columns,
                &reference.rows[i],
                &serde_json::json!(i),
            )
        })
        .collect();
    let event = kinesis_event(&payloads);

    let response: serde_json::Value =
        serde_json::from_slice(&handler.handle_bytes(&event).await.unwrap().response).unwrap();
    let reported: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["itemIdentifier"].as_str().unwrap())
        .collect();
    let sent: serde_json::Value = serde_json::from_slice(&event).unwrap();
    let sequence_numbers: Vec<&str> = sent["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["kinesis"]["sequenceNumber"].as_str().unwrap())
        .collect();
    assert_eq!(reported, sequence_numbers);
}

/// A handler of the bundled model (version `run-7`) publishing to a new stream and keeping
/// rejected records in another; returns it and the dead-letter stream's name.
async fn handler_with_dead_letters(kinesis: &aws_sdk_kinesis::Client) -> (Handler, String) {
    let output = create_stream(kinesis, 1).await;
    let dead = create_stream(kinesis, 1).await;
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let handler = Handler::new(model, "bike-demand", "run-7")
        .publishing_to(Publisher::new(
            kinesis.clone(),
            &output,
            RetryPolicy::default(),
        ))
        .dead_lettering_to(Publisher::new(
            kinesis.clone(),
            &dead,
            RetryPolicy::default(),
        ));
    (handler, dead)
}

#[tokio::test]
async fn rejected_records_are_kept_in_the_dead_letter_stream_as_they_arrived() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let (handler, dead) = handler_with_dead_letters(&kinesis).await;
    let reference = reference();
    let good = payload(
        &reference.columns,
        &reference.rows[0],
        &serde_json::json!(1),
    );
    let event = kinesis_event(&[good, b"{\"features\": []}".to_vec()]);

    let handled = handler.handle_bytes(&event).await.unwrap();
    assert_eq!(
        (handled.report.published, handled.report.dead_lettered),
        (1, 1)
    );
    assert_eq!(handled.report.redeliver, 0);

    let letters = read_stream(&kinesis, &dead).await;
    assert_eq!(letters.len(), 1);
    let (key, letter) = &letters[0];
    assert_eq!(key, "1", "the record's own partition key");
    let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
    assert_eq!(letter["code"], "features_not_an_object");
    assert_eq!(letter["version"], "run-7");
    let sent: serde_json::Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(letter["data"], sent["Records"][1]["kinesis"]["data"]);
    assert_eq!(
        letter["sequenceNumber"],
        sent["Records"][1]["kinesis"]["sequenceNumber"]
    );
}

#[tokio::test]
async fn a_rejected_record_of_kinesis_largest_size_is_kept_in_parts_beside_small_ones() {
    use base64::Engine as _;
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let (handler, dead) = handler_with_dead_letters(&kinesis).await;
    let reference = reference();
    let good = payload(
        &reference.columns,
        &reference.rows[0],
        &serde_json::json!(1),
    );
    // 1 MiB with its one-character partition key: the largest record Kinesis holds.
    let huge = vec![b'~'; 1024 * 1024 - 1];
    let event = kinesis_event(&[huge.clone(), good, b"not json".to_vec()]);

    let handled = handler.handle_bytes(&event).await.unwrap();
    let report = &handled.report;
    assert_eq!(
        (report.published, report.dead_lettered, report.redeliver),
        (1, 2, 0)
    );

    let letters = read_stream(&kinesis, &dead).await;
    let letters: Vec<serde_json::Value> = letters
        .iter()
        .map(|(_, letter)| serde_json::from_slice(letter).unwrap())
        .collect();
    let sent: serde_json::Value = serde_json::from_slice(&event).unwrap();
    let huge_sequence_number = &sent["Records"][0]["kinesis"]["sequenceNumber"];
    let mut parts: Vec<&serde_json::Value> = letters
        .iter()
        .filter(|letter| letter["sequenceNumber"] == *huge_sequence_number)
        .collect();
    assert_eq!(parts.len(), 2, "the big record's letter in two parts");
    parts.sort_by_key(|letter| letter["part"].as_u64());
    let data: String = parts
        .iter()
        .map(|part| part["data"].as_str().unwrap())
        .collect();
    let data = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert!(data == huge, "the parts hold the record's data exactly");
    assert!(parts.iter().all(|part| part["parts"] == 2));
    assert_eq!(letters.len(), 3);
}

#[tokio::test]
async fn rejected_records_the_dead_letter_stream_refuses_are_redelivered() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let no_wait = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let handler = Handler::new(model, "bike-demand", "run-7").dead_lettering_to(Publisher::new(
        kinesis,
        "dead-letters-that-do-not-exist",
        no_wait,
    ));
    let event = kinesis_event(&[b"not json".to_vec()]);
    let handled = handler.handle_bytes(&event).await.unwrap();
    assert_eq!(handled.report.redeliver, 1);
    let response: serde_json::Value = serde_json::from_slice(&handled.response).unwrap();
    assert_eq!(response["batchItemFailures"].as_array().unwrap().len(), 1);
}

/// Swapping the model is changing `RUN_ID`: a string-column pipeline and a classifier, each
/// uploaded at its run's MLflow path, are fetched from S3 by `RUN_ID` and publish events that
/// carry what Python onnxruntime predicts.
#[tokio::test]
async fn other_kinds_of_model_swap_in_by_run_id_and_publish_their_predictions() {
    let aws = aws().await;
    let s3 = aws_sdk_s3::Client::new(&aws);
    let kinesis = aws_sdk_kinesis::Client::new(&aws);
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/model-kinds/reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (kind, run_id) in [
        ("columns-float-string", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        ("classifier-tensor", "f9e8d7c6b5a4938271605f4e3d2c1b0a"),
    ] {
        let dir = root().join("tests/fixtures/model-kinds").join(kind);
        let bucket = upload_model(&s3, &dir, &format!("1/{run_id}/artifacts/model")).await;
        let (bucket, prefix) = location(&[("MODEL_BUCKET", &bucket), ("RUN_ID", run_id)]);
        let cache = tempfile::tempdir().unwrap();
        let artifact = fetch_model(&s3, &bucket, &prefix, cache.path())
            .await
            .unwrap();
        let model = runtime().load_model(artifact).unwrap();
        let stream = create_stream(&kinesis, 1).await;
        let publisher = Publisher::new(kinesis.clone(), &stream, RetryPolicy::default());
        let handler = Handler::new(model, kind, run_id).publishing_to(publisher);

        let records = &reference[kind]["records"].as_array().unwrap()[..20];
        let outputs = &reference[kind]["outputs"].as_array().unwrap()[..20];
        let payloads: Vec<Vec<u8>> = records
            .iter()
            .map(|record| serde_json::to_vec(record).unwrap())
            .collect();
        let response = handler
            .handle_bytes(&kinesis_event(&payloads))
            .await
            .unwrap();
        let response: serde_json::Value = serde_json::from_slice(&response.response).unwrap();
        assert_eq!(response["rejected"], serde_json::json!([]), "{kind}");
        assert_eq!(
            response["batchItemFailures"],
            serde_json::json!([]),
            "{kind}"
        );

        let published = read_stream(&kinesis, &stream).await;
        assert_eq!(published.len(), records.len(), "{kind}");
        for (key, data) in published {
            let event: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(event["version"], run_id);
            let prediction = &event["prediction"];
            assert_eq!(key, prediction["pred_id"].to_string(), "{kind}");
            let position = records
                .iter()
                .position(|record| record["pred_id"] == prediction["pred_id"])
                .unwrap();
            let expected = &outputs[position];
            match expected.get("value") {
                Some(value) => assert!(close(
                    prediction["cnt"].as_f64().unwrap(),
                    value.as_f64().unwrap(),
                    1e-4
                )),
                None => {
                    assert_eq!(prediction["label"], expected["label"], "{kind}");
                    for (class, probability) in expected["probabilities"].as_object().unwrap() {
                        assert!(close(
                            prediction["probabilities"][class].as_f64().unwrap(),
                            probability.as_f64().unwrap(),
                            1e-4
                        ));
                    }
                }
            }
        }
    }
}

/// Runs the function's cold start as Lambda would (the binary without arguments, publishing)
/// with `env`, and returns its log. No Runtime API answers, so a cold start that succeeds ends
/// when the function first asks for work.
fn cold_start(env: &[(&str, &str)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bike-prediction"))
        .current_dir(root())
        .env_remove("MODEL_URI")
        .env_remove("TEST_RUN")
        .env_remove("DEAD_LETTER_STREAM")
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success());
    String::from_utf8(output.stderr).unwrap()
}

#[tokio::test]
async fn a_cold_start_fails_naming_a_stream_that_does_not_exist_or_a_missing_region() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let output = create_stream(&kinesis, 1).await;
    let dead = create_stream(&kinesis, 1).await;
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .expect("the local services' region");

    let log = cold_start(&[("OUTPUT_STREAM", &output), ("DEAD_LETTER_STREAM", &dead)]);
    assert!(log.contains("\"message\":\"ready\""), "{log}");

    for (env, named) in [
        (vec![("OUTPUT_STREAM", "no-such-stream")], "no-such-stream"),
        (
            vec![
                ("OUTPUT_STREAM", &output),
                ("DEAD_LETTER_STREAM", "no-such-dead-letters"),
            ],
            "no-such-dead-letters",
        ),
    ] {
        let log = cold_start(&env);
        assert!(!log.contains("\"ready\""), "{log}");
        let expected = format!("Kinesis stream `{named}` in {region} cannot be used");
        assert!(
            log.contains("cold start failed") && log.contains(&expected),
            "{log}"
        );
        assert!(log.contains("ResourceNotFoundException"), "{log}");
    }

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bike-prediction"))
        .current_dir(root())
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("OUTPUT_STREAM", &output)
        .output()
        .unwrap();
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success());
    assert!(log.contains("no AWS region is set"), "{log}");
}

/// Uploads the files `files` (name, bytes) under `prefix` of `bucket`.
async fn upload_files(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    files: &[(String, Vec<u8>)],
) {
    for (name, data) in files {
        s3.put_object()
            .bucket(bucket)
            .key(format!("{prefix}/{name}"))
            .body(data.clone().into())
            .send()
            .await
            .unwrap();
    }
}

/// The files of a model directory, by name.
fn model_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// A run of the binary's `invoke` command on one reference row, and its peak resident memory.
struct Run {
    success: bool,
    stdout: Vec<u8>,
    stderr: String,
    peak_rss_bytes: u64,
}

/// Runs `bike-prediction invoke` on a one-record event of reference row 0, with `env`, and
/// measures its peak RSS. GNU time starts it and reports it: the child of a small process, its
/// peak is its own (a child of the test process would count the test's memory, shared with
/// it until `exec`, in its peak).
fn invoke_binary(env: &[(&str, &str)]) -> Run {
    let reference = reference();
    let event = kinesis_event(&[payload(
        &reference.columns,
        &reference.rows[0],
        &serde_json::json!(1),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let path = |name| dir.path().join(name);
    std::fs::write(path("event.json"), event).unwrap();
    let status = std::process::Command::new("/usr/bin/time")
        .arg("--format=%M")
        .arg("--output")
        .arg(path("peak"))
        .arg(env!("CARGO_BIN_EXE_bike-prediction"))
        .args(["invoke", "--event"])
        .arg(path("event.json"))
        .current_dir(root())
        .env_remove("MODEL_URI")
        .env_remove("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(path("out")).unwrap())
        .stderr(std::fs::File::create(path("err")).unwrap())
        .status()
        .expect("GNU time at /usr/bin/time");
    let peak = std::fs::read_to_string(path("peak")).unwrap();
    let kilobytes: u64 = peak.lines().last().unwrap().trim().parse().unwrap();
    Run {
        success: status.success(),
        stdout: std::fs::read(path("out")).unwrap(),
        stderr: std::fs::read_to_string(path("err")).unwrap(),
        peak_rss_bytes: kilobytes * 1024,
    }
}

/// The prediction of the one-record run, checked against Python's for `model`.
fn assert_run_predicts_like_python(run: &Run, model: &str) {
    assert!(run.success, "{}", run.stderr);
    let response: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let predicted = response["predictions"][0]["prediction"]["cnt"]
        .as_f64()
        .unwrap();
    let expected = f64::from(reference().models[model][0]);
    assert!(
        close(predicted, expected, 1e-4),
        "{model}: {predicted} vs {expected}"
    );
}

/// Names of the entries of a cache directory.
fn cache_entries(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn long_and_odd_model_locations_load_through_the_cold_start_each_in_its_own_entry() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let bucket = unique("models");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let shared = "s".repeat(240);
    // (prefix, model): the last two differ only after the part of the name kept readable.
    let locations = [
        (
            format!("1/{}/artifacts/model", "r".repeat(240)),
            "bike-demand",
        ),
        (
            format!("1/{}/artifacts/model", "R".repeat(1000)),
            "bike-demand",
        ),
        (
            "1/runé-ünïcödé-日本語/artifacts/model".to_owned(),
            "bike-demand",
        ),
        ("1/../../etc/artifacts/model".to_owned(), "bike-demand"),
        ("1//run////artifacts//model".to_owned(), "bike-demand"),
        (format!("1/{shared}/demand"), "bike-demand"),
        (format!("1/{shared}/linear"), "bike-linear"),
    ];
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    for (prefix, model) in &locations {
        upload_files(&s3, &bucket, prefix, &model_files(&bundled_model(model))).await;
        let uri = format!("s3://{bucket}/{prefix}");
        let run = invoke_binary(&[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("MODEL_URI", &uri),
            ("MODEL_CACHE_DIR", cache_dir),
        ]);
        assert!(
            run.stderr.contains("model downloaded"),
            "{prefix}: {}",
            run.stderr
        );
        assert_run_predicts_like_python(&run, model);
    }
    let entries = cache_entries(cache.path());
    assert_eq!(entries.len(), locations.len(), "{entries:?}");
    for entry in &entries {
        assert!(entry.len() <= 255 && !entry.contains('/'), "{entry}");
    }
    // A restarted process finds each model, the right one, without S3.
    for (prefix, model) in &locations {
        let uri = format!("s3://{bucket}/{prefix}");
        let run = invoke_binary(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("MODEL_URI", &uri),
            ("MODEL_CACHE_DIR", cache_dir),
        ]);
        assert!(
            run.stderr.contains("model found in the local cache"),
            "{prefix}: {}",
            run.stderr
        );
        assert_run_predicts_like_python(&run, model);
    }
}

#[tokio::test]
async fn cache_entry_cut_short_changed_or_of_another_location_is_fetched_again() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let prefix = "1/run/artifacts/model";
    let bucket = upload_model(&s3, &bundled_model("bike-demand"), prefix).await;
    let cache = tempfile::tempdir().unwrap();
    let artifact = fetch_model(&s3, &bucket, prefix, cache.path())
        .await
        .unwrap();
    let onnx = artifact.onnx_path.clone();
    let entry = onnx.parent().unwrap().to_owned();
    let size = std::fs::metadata(&onnx).unwrap().len();

    // Cut short (a disk full, a process killed while copying by hand): fetched again.
    std::fs::write(&onnx, b"").unwrap();
    let artifact = fetch_model(&s3, &bucket, prefix, cache.path())
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&onnx).unwrap().len(), size);
    assert_predicts_like_python(&runtime().load_model(artifact).unwrap());

    // Changed in place at the same size (100 bytes overwritten): fetched again.
    let original = std::fs::read(&onnx).unwrap();
    let mut changed = original.clone();
    changed[100..200].fill(0);
    std::fs::write(&onnx, &changed).unwrap();
    let artifact = fetch_model(&s3, &bucket, prefix, cache.path())
        .await
        .unwrap();
    assert!(
        std::fs::read(&onnx).unwrap() == original,
        "the model's bytes again"
    );
    assert_predicts_like_python(&runtime().load_model(artifact).unwrap());

    // Recorded as another location's: fetched again.
    let manifest = entry.join(bike_prediction::download::MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains(&format!("s3://{bucket}/{prefix}")), "{text}");
    std::fs::write(&manifest, text.replace(prefix, "1/other/artifacts/model")).unwrap();
    let artifact = fetch_model(&s3, &bucket, prefix, cache.path())
        .await
        .unwrap();
    assert!(std::fs::read_to_string(&manifest).unwrap().contains(prefix));
    assert_predicts_like_python(&runtime().load_model(artifact).unwrap());
}

/// Bytes of padding that make the models of the memory tests big.
const PADDING: usize = 64 * 1024 * 1024;

/// The external-data fixture made `PADDING` bytes bigger, in the ONNX file itself (an unknown
/// protobuf field, which ONNX Runtime reads and keeps while it builds the session) or in its
/// external-data file (after the bytes the graph uses, which ONNX Runtime never reads).
fn padded_model(in_onnx: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = model_files(&root().join("tests/fixtures/models/external-data"));
    for (name, data) in &mut files {
        if in_onnx && name == "model.onnx" {
            // Field 1000, length-delimited: tag (1000 << 3 | 2) and length as varints.
            prost::encoding::encode_varint(1000 << 3 | 2, data);
            prost::encoding::encode_varint(PADDING as u64, data);
            data.resize(data.len() + PADDING, 7);
        }
        if !in_onnx && name == "weights.bin" {
            data.resize(data.len() + PADDING, 7);
        }
    }
    files
}

#[tokio::test]
async fn downloading_a_model_takes_no_more_memory_than_loading_it_from_disk() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    for (in_onnx, shape) in [(false, "large external data"), (true, "large ONNX file")] {
        let files = padded_model(in_onnx);
        let local = tempfile::tempdir().unwrap();
        for (name, data) in &files {
            std::fs::write(local.path().join(name), data).unwrap();
        }
        let bucket = unique("models");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        upload_files(&s3, &bucket, "1/run/artifacts/model", &files).await;
        let cache = tempfile::tempdir().unwrap();

        let from_disk = invoke_binary(&[("MODEL_URI", local.path().to_str().unwrap())]);
        assert!(from_disk.success, "{}", from_disk.stderr);
        let from_s3 = invoke_binary(&[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("MODEL_URI", &format!("s3://{bucket}/1/run/artifacts/model")),
            ("MODEL_CACHE_DIR", cache.path().to_str().unwrap()),
        ]);
        assert!(from_s3.success, "{}", from_s3.stderr);
        assert!(
            from_s3.stderr.contains("model downloaded"),
            "{}",
            from_s3.stderr
        );
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        eprintln!(
            "{shape}, {} MiB more: peak RSS from disk {:.1} MiB, from S3 {:.1} MiB",
            PADDING >> 20,
            mib(from_disk.peak_rss_bytes),
            mib(from_s3.peak_rss_bytes)
        );
        // The download streams: it adds at most a few MiB of buffers and the S3 client, far
        // from another copy of the padding.
        assert!(
            from_s3.peak_rss_bytes < from_disk.peak_rss_bytes + PADDING as u64 / 4,
            "{shape}: from disk {} bytes, from S3 {} bytes",
            from_disk.peak_rss_bytes,
            from_s3.peak_rss_bytes
        );
    }
}

#[tokio::test]
async fn damaged_download_is_refused_and_leaves_no_cache_entry() {
    let aws = aws().await;
    let s3 = aws_sdk_s3::Client::new(&aws);
    let bucket = unique("models");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let prefix = "1/run/artifacts/model";
    upload_files(&s3, &bucket, prefix, &padded_model(true)).await;
    let s3_port: u16 = std::env::var("AWS_ENDPOINT_URL")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Past the small MLmodel answer, inside the ONNX file's body.
    let offset = 4 * 1024 * 1024;
    for (fault, expected) in [
        (common::relay::Fault::Flip(offset), "where the ETag says"),
        (common::relay::Fault::Cut(offset), "model.onnx"),
    ] {
        let relay = common::relay::damaging_relay(s3_port, fault);
        let through_relay = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .endpoint_url(&relay)
                .build(),
        );
        let cache = tempfile::tempdir().unwrap();
        let error = fetch_model(&through_relay, &bucket, prefix, cache.path())
            .await
            .unwrap_err();
        let message = bike_prediction::handler::error_chain(&error);
        assert!(message.contains(expected), "{fault:?}: {message}");
        assert!(
            message.contains(&format!("s3://{bucket}/{prefix}/model.onnx")),
            "{message}"
        );
        assert_eq!(
            cache_entries(cache.path()),
            Vec::<String>::new(),
            "{fault:?}"
        );
    }
}

#[tokio::test]
async fn model_larger_than_the_functions_memory_is_refused_before_it_is_written() {
    let s3 = aws_sdk_s3::Client::new(&aws().await);
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let bucket = unique("models");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let prefix = "1/run/artifacts/model";
    upload_files(&s3, &bucket, prefix, &padded_model(true)).await;
    let cache = tempfile::tempdir().unwrap();
    let run = invoke_binary(&[
        ("AWS_ENDPOINT_URL", &endpoint),
        ("MODEL_URI", &format!("s3://{bucket}/{prefix}")),
        ("MODEL_CACHE_DIR", cache.path().to_str().unwrap()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "32"),
    ]);
    assert!(!run.success);
    assert!(
        run.stderr.contains(&format!(
            "s3://{bucket}/{prefix}/model.onnx is {} bytes",
            PADDING + 317
        )) || run.stderr.contains("model.onnx is "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("AWS_LAMBDA_FUNCTION_MEMORY_SIZE=32 MB"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("give the function more memory"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("model downloaded"), "{}", run.stderr);
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());

    // The same with the library call, and a limit the model fits in.
    let limit = |megabytes| MemoryLimit {
        megabytes: Some(megabytes),
        reserved: 0,
    };
    let error = fetch_model_within(&s3, &bucket, prefix, cache.path(), limit(32))
        .await
        .unwrap_err();
    assert!(matches!(error, ArtifactError::TooLarge { .. }), "{error}");
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());
    fetch_model_within(&s3, &bucket, prefix, cache.path(), limit(128))
        .await
        .unwrap();
}

/// Every record of every shard of `stream`: (shard id, partition key, data).
async fn read_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<(String, String, Vec<u8>)> {
    let mut records = Vec::new();
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        loop {
            let page = kinesis
                .get_records()
                .shard_iterator(&iterator)
                .limit(10_000)
                .send()
                .await
                .unwrap();
            for record in page.records() {
                records.push((
                    shard.shard_id().to_owned(),
                    record.partition_key().unwrap_or_default().to_owned(),
                    record.data().as_ref().to_vec(),
                ));
            }
            match page.next_shard_iterator {
                Some(next) if !page.records.is_empty() => iterator = next,
                _ => break,
            }
        }
    }
    records
}

#[tokio::test]
async fn aggregated_events_land_on_their_key_s_shard_each_once_in_order() {
    use bike_prediction::pack::ShardMap;
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let stream = create_stream(&kinesis, 4).await;
    let shards = ShardMap::list(&kinesis, &stream).await.unwrap();
    assert_eq!(shards.len(), 4);
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let publisher = Publisher::new(kinesis.clone(), &stream, RetryPolicy::default());
    let handler = Handler::new(model, "bike-demand", "run-7")
        .publishing_to(publisher)
        .aggregating(shards.clone());
    let reference = reference();
    // 3,000 records; pred_ids repeat, so that a key's events must stay in order.
    let payloads: Vec<Vec<u8>> = (0..3000)
        .map(|i| {
            let row = &reference.rows[i % reference.rows.len()];
            payload(&reference.columns, row, &serde_json::json!(i % 1000))
        })
        .collect();
    let handled = handler
        .handle_bytes(&kinesis_event(&payloads))
        .await
        .unwrap();
    assert_eq!(handled.report.published, 3000);
    assert_eq!(handled.report.redeliver, 0);
    assert!(
        handled.report.put_records_calls <= 2,
        "{} calls for 3,000 small events",
        handled.report.put_records_calls
    );

    let mut events = Vec::new();
    for (shard, key, data) in read_shards(&kinesis, &stream).await {
        let records = common::deaggregate(&data).expect("an aggregated record");
        // The aggregate went to the shard of its own key, and so did each event in it.
        assert_eq!(shards.id(shards.shard_of(&key)), shard);
        for (event_key, event) in records {
            assert_eq!(shards.id(shards.shard_of(&event_key)), shard, "{event_key}");
            let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
            assert_eq!(event["prediction"]["pred_id"].to_string(), event_key);
            events.push((event_key, event));
        }
    }
    assert_eq!(events.len(), 3000);
    // Each key's events in the order of their records: row 0, 1000 and 2000 share pred_id 0.
    for key in 0..1000 {
        let rows: Vec<f64> = events
            .iter()
            .filter(|(event_key, _)| *event_key == key.to_string())
            .map(|(_, event)| event["prediction"]["cnt"].as_f64().unwrap())
            .collect();
        let expected: Vec<f64> = (0..3)
            .map(|n| {
                f64::from(reference.models["bike-demand"][(key + 1000 * n) % reference.rows.len()])
            })
            .collect();
        assert_eq!(rows.len(), 3, "{key}");
        for (actual, expected) in rows.iter().zip(&expected) {
            assert!(
                close(*actual, *expected, 1e-5),
                "{key}: {actual} {expected}"
            );
        }
    }
}

#[tokio::test]
async fn a_shard_map_that_no_longer_matches_the_stream_is_read_again() {
    use bike_prediction::pack::ShardMap;
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let stream = create_stream(&kinesis, 4).await;
    let shards = ShardMap::list(&kinesis, &stream).await.unwrap();
    // What a stream of one shard looked like before it was split in four.
    let old = ShardMap::new([("shardId-000000000000", "0", &*u128::MAX.to_string())]).unwrap();
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let publisher = Publisher::new(kinesis.clone(), &stream, RetryPolicy::default());
    let handler = Handler::new(model, "bike-demand", "run-7")
        .publishing_to(publisher)
        .aggregating(old);
    let reference = reference();
    let event = |first: usize| {
        let payloads: Vec<Vec<u8>> = (first..first + 200)
            .map(|i| {
                let row = &reference.rows[i % reference.rows.len()];
                payload(&reference.columns, row, &serde_json::json!(i))
            })
            .collect();
        kinesis_event(&payloads)
    };
    // The first batch goes out in one aggregate, to one shard: its keys' events are all
    // published, on the shard of the aggregate's key, not each on its own.
    let first = handler.handle_bytes(&event(0)).await.unwrap();
    assert_eq!(first.report.published, 200);
    let misplaced = |records: &[(String, String, Vec<u8>)]| {
        records
            .iter()
            .flat_map(|(shard, _, data)| {
                let events = common::deaggregate(data).unwrap();
                events
                    .into_iter()
                    .filter(|(key, _)| shards.id(shards.shard_of(key)) != shard)
                    .collect::<Vec<_>>()
            })
            .count()
    };
    let after_first = read_shards(&kinesis, &stream).await;
    assert!(misplaced(&after_first) > 0);
    // The answer named other shards than the map: the next batch reads the shards again.
    let second = handler.handle_bytes(&event(200)).await.unwrap();
    assert_eq!(second.report.published, 200);
    let all = read_shards(&kinesis, &stream).await;
    assert_eq!(
        misplaced(&all),
        misplaced(&after_first),
        "the second batch's events are in place"
    );
}

/// Sets `stream`'s largest record, as `UpdateMaxRecordSize` does on AWS.
async fn set_max_record_size(kinesis: &aws_sdk_kinesis::Client, stream: &str, kib: i32) {
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let arn = summary.stream_description_summary().unwrap().stream_arn();
    kinesis
        .update_max_record_size()
        .stream_arn(arn)
        .max_record_size_in_kib(kib)
        .send()
        .await
        .unwrap();
}

/// `count` good records with pred_ids from `first`.
fn good_event(first: usize, count: usize) -> Vec<u8> {
    let reference = reference();
    let payloads: Vec<Vec<u8>> = (first..first + count)
        .map(|i| {
            let row = &reference.rows[i % reference.rows.len()];
            payload(&reference.columns, row, &serde_json::json!(i))
        })
        .collect();
    kinesis_event(&payloads)
}

#[tokio::test]
async fn aggregates_too_large_for_a_stream_whose_records_shrank_go_out_as_their_events() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let stream = create_stream(&kinesis, 1).await;
    set_max_record_size(&kinesis, &stream, 2048).await;
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let publisher = Publisher::new(kinesis.clone(), &stream, RetryPolicy::default())
        .with_max_record_bytes(2048 * 1024);
    let handler = Handler::new(model, "bike-demand", "run-7")
        .publishing_to(publisher)
        .aggregating(bike_prediction::pack::ShardMap::even(1));
    let count = 12_000;
    // One aggregate of the whole batch: it fits 2 MiB records, not 1 MiB ones.
    let first = handler.handle_bytes(&good_event(0, count)).await.unwrap();
    assert_eq!(first.report.published, count);
    let records = read_stream(&kinesis, &stream).await;
    assert_eq!(records.len(), 1);
    assert!(
        records[0].1.len() > 1024 * 1024,
        "{} bytes",
        records[0].1.len()
    );
    set_max_record_size(&kinesis, &stream, 1024).await;
    // The aggregate is refused; its events are not: they go out one entry each.
    let second = handler
        .handle_bytes(&good_event(count, count))
        .await
        .unwrap();
    let report = &second.report;
    assert_eq!(
        (report.published, report.rejected, report.redeliver),
        (count, 0, 0)
    );
    let records = read_stream(&kinesis, &stream).await;
    assert_eq!(records.len(), 1 + count);
    // Then the record size is read again, and aggregates fit it.
    let third = handler
        .handle_bytes(&good_event(2 * count, count))
        .await
        .unwrap();
    assert_eq!(third.report.published, count);
    let records = read_stream(&kinesis, &stream).await;
    let aggregates: Vec<usize> = records
        .iter()
        .skip(1 + count)
        .map(|(key, data)| {
            assert!(common::deaggregate(data).is_some());
            key.len() + data.len()
        })
        .collect();
    assert_eq!(aggregates.len(), 2, "two aggregates of at most 1 MiB");
    assert!(
        aggregates.iter().all(|&size| size <= 1024 * 1024),
        "{aggregates:?}"
    );
}

#[tokio::test]
async fn a_dead_letter_split_for_records_larger_than_the_stream_has_now_is_delivered_again() {
    let kinesis = aws_sdk_kinesis::Client::new(&aws().await);
    let output = create_stream(&kinesis, 1).await;
    let dead = create_stream(&kinesis, 1).await;
    set_max_record_size(&kinesis, &dead, 2048).await;
    let model = common::load_model(&bundled_model("bike-demand")).unwrap();
    let handler = Handler::new(model, "bike-demand", "run-7")
        .publishing_to(Publisher::new(
            kinesis.clone(),
            &output,
            RetryPolicy::default(),
        ))
        .dead_lettering_to(
            Publisher::new(kinesis.clone(), &dead, RetryPolicy::default())
                .with_max_record_bytes(2048 * 1024),
        );
    set_max_record_size(&kinesis, &dead, 1024).await;
    // 900 KB that are not JSON: a letter of about 1.2 MB, one part for 2 MiB records.
    let bad = vec![b'~'; 900_000];
    let event = kinesis_event(&[bad]);
    let first = handler.handle_bytes(&event).await.unwrap();
    assert_eq!(
        (
            first.report.rejected,
            first.report.dead_lettered,
            first.report.redeliver
        ),
        (1, 0, 1),
        "re-delivered, not logged and dropped"
    );
    // Delivered again, the letter is split for the stream's records as they are now.
    let second = handler.handle_bytes(&event).await.unwrap();
    assert_eq!(
        (
            second.report.rejected,
            second.report.dead_lettered,
            second.report.redeliver
        ),
        (1, 1, 0)
    );
    let letters = read_stream(&kinesis, &dead).await;
    assert!(letters.len() >= 2, "{} parts", letters.len());
    assert!(
        letters
            .iter()
            .all(|(key, data)| key.len() + data.len() <= 1024 * 1024)
    );
}
