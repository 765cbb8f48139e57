//! The binary's local `invoke` command, as a user runs it.

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use common::{kinesis_event, payload, reference, root};

fn bike_prediction(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bike-prediction"));
    command
        .args(args)
        .current_dir(root())
        .env_remove("MODEL_URI")
        .env_remove("TEST_RUN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout holds only the JSON response")
}

#[test]
fn invoke_predicts_the_seed_event_with_the_bundled_model() {
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[("RUN_ID", "abc123")],
    );
    let response = stdout_json(&output);
    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 1);
    assert_eq!(predictions[0]["model"], "bike-demand");
    assert_eq!(predictions[0]["version"], "abc123");
    assert_eq!(predictions[0]["prediction"]["pred_id"], 123);
    assert!(
        predictions[0]["prediction"]["cnt"]
            .as_f64()
            .unwrap()
            .is_finite()
    );
    assert_eq!(response["rejected"], serde_json::json!([]));
    assert_eq!(response["batchItemFailures"], serde_json::json!([]));
}

#[test]
fn invoke_reads_stdin_and_reports_bad_records_beside_good_ones() {
    let reference = reference();
    let good = payload(
        &reference.columns,
        &reference.rows[0],
        &serde_json::json!("a"),
    );
    let event = kinesis_event(&[good.clone(), b"{\"features\": 1}".to_vec(), good]);
    let output = bike_prediction(&["invoke", "--event", "-"], &event, &[]);
    let response = stdout_json(&output);
    assert_eq!(response["predictions"].as_array().unwrap().len(), 2);
    let rejected = response["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["code"], "features_not_an_object");
    assert_eq!(rejected[0]["partitionKey"], "1");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("record rejected"), "{logs}");
}

#[test]
fn invoke_handles_ten_thousand_records() {
    let reference = reference();
    let payloads: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            payload(
                &reference.columns,
                &reference.rows[i % reference.rows.len()],
                &serde_json::json!(i),
            )
        })
        .collect();
    let output = bike_prediction(&["invoke", "--event", "-"], &kinesis_event(&payloads), &[]);
    let response = stdout_json(&output);
    assert_eq!(response["predictions"].as_array().unwrap().len(), 10_000);
}

/// The JSON log lines of a run.
fn log_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn invoke_of_an_event_that_is_not_kinesis_fails_with_invalid_event_said_once() {
    let cases: &[(&[u8], &str)] = &[
        (br#"{"foo": "SECRET"}"#, "missing field `Records`"),
        (b"[]", "invalid type: sequence"),
        (br#""SECRET""#, "invalid type: a string"),
        (
            br#"{"Records": [{"kinesis": {"data": "U0VDUkVU"#,
            "EOF while parsing",
        ),
        (
            br#"{"Records": [{"eventID": "SECRET"}]}"#,
            "missing field `kinesis`",
        ),
        (br#"{"Records": ["SECRET"]}"#, "invalid type: a string"),
    ];
    for (event, detail) in cases {
        let shown = String::from_utf8_lossy(event);
        let output = bike_prediction(&["invoke", "--event", "-"], event, &[]);
        assert!(!output.status.success(), "{shown}");
        assert!(output.stdout.is_empty(), "{shown}");
        let logs = String::from_utf8_lossy(&output.stderr);
        let errors: Vec<_> = log_lines(&output)
            .into_iter()
            .filter(|line| line["level"] == "ERROR")
            .collect();
        assert_eq!(errors.len(), 1, "{shown}: {logs}");
        assert_eq!(errors[0]["error_type"], "InvalidEvent", "{shown}: {logs}");
        let message = errors[0]["error"].as_str().unwrap();
        assert!(
            message.starts_with("the event is not a Kinesis event: "),
            "{shown}: {message}"
        );
        assert!(message.contains(detail), "{shown}: {message}");
        assert_eq!(
            logs.matches("not a Kinesis event").count(),
            1,
            "{shown}: {logs}"
        );
        assert_eq!(logs.matches(detail).count(), 1, "{shown}: {logs}");
        assert!(!logs.contains("SECRET"), "{shown}: {logs}");
        assert!(!logs.contains("U0VDUkVU"), "{shown}: {logs}");
    }
}

#[test]
fn missing_onnx_runtime_library_is_a_clear_error() {
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("cannot load the ONNX Runtime library from /nonexistent/libonnxruntime.so"),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn file_that_is_not_a_library_is_a_clear_error() {
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[("ORT_DYLIB_PATH", "Cargo.toml")],
    );
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("cannot load the ONNX Runtime library from Cargo.toml"),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn bad_configuration_names_the_variable() {
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[("TEST_RUN", "perhaps")],
    );
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("TEST_RUN"), "{logs}");
}

#[test]
fn log_record_data_that_is_not_a_boolean_stops_the_cold_start() {
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[("LOG_RECORD_DATA", "perhaps")],
    );
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("cold start failed"), "{logs}");
    assert!(logs.contains("LOG_RECORD_DATA"), "{logs}");
}

#[test]
fn model_uri_selects_another_model_directory() {
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[
            ("MODEL_URI", "models/bike-linear"),
            ("MODEL_NAME", "linear"),
        ],
    );
    let response = stdout_json(&output);
    assert_eq!(response["predictions"][0]["model"], "linear");
}

#[test]
fn credentials_never_reach_the_logs_even_at_trace_level() {
    // Against the local S3 server, so that the SDK signs real requests with these credentials.
    let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
        panic!(
            "AWS_ENDPOINT_URL must point at the local services: run the tests with scripts/test.sh"
        );
    };
    let secret = "SECRETaccessKEYthatMUSTnotLEAK0123456789";
    let token = "SESSIONtokenTHATmustNOTleak9876543210";
    let output = bike_prediction(
        &["invoke", "--event", "events/sample.json"],
        b"",
        &[
            ("AWS_ENDPOINT_URL", &endpoint),
            ("AWS_ACCESS_KEY_ID", "AKIDLOCALTEST"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_SESSION_TOKEN", token),
            (
                "MODEL_URI",
                "s3://bucket-that-does-not-exist/1/run/artifacts/model",
            ),
            ("RUST_LOG", "trace"),
        ],
    );
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("s3://bucket-that-does-not-exist"),
        "the S3 request was made: {logs}"
    );
    assert!(!logs.contains(secret), "secret key in the logs");
    assert!(!logs.contains(token), "session token in the logs");
}

#[test]
fn rejected_records_are_logged_in_full_up_to_the_limit_and_as_a_digest_beyond_in_short_lines() {
    use base64::Engine as _;
    // The largest data logged in full: 48 KiB of base64. One byte more, and Kinesis's largest.
    let fits = vec![b'~'; 48 * 1024 / 4 * 3];
    let over = vec![b'~'; fits.len() + 1];
    let largest = vec![b'~'; 1024 * 1024];
    let event = kinesis_event(&[fits.clone(), over.clone(), largest]);
    let output = bike_prediction(&["invoke", "--event", "-"], &event, &[]);
    assert!(output.status.success());
    let log = String::from_utf8(output.stderr).unwrap();
    assert!(
        log.lines().all(|line| line.len() < 64 * 1024),
        "a log line of 64 KiB or more"
    );
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "record rejected")
        .collect();
    assert_eq!(rejected.len(), 3, "{log}");
    let base64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(rejected[0]["data"], base64.encode(&fits));
    assert!(rejected[0].get("data_sha256").is_none());
    for (line, data) in [
        (&rejected[1], &over),
        (&rejected[2], &vec![b'~'; 1024 * 1024]),
    ] {
        assert!(line.get("data").is_none(), "{line}");
        assert_eq!(line["data_bytes"], data.len());
        assert_eq!(line["data_sha256"].as_str().unwrap().len(), 64);
    }
    // Python: hashlib.sha256(b"~" * 1024 * 1024).hexdigest()
    assert_eq!(
        rejected[2]["data_sha256"],
        "0314ff3dbc00f2878d30325a79e9174a51a405a64a72b41824a79f3bb99ad81f"
    );
}

#[test]
fn log_lines_stay_short_whatever_the_escapes_keys_and_sequence_numbers() {
    // Data that is not base64 is logged as the text it was, escaped: its escaped size counts.
    let record = |data: &str, sequence_number: &str, partition_key: &str| {
        format!(
            r#"{{"kinesis":{{"data":"{data}","sequenceNumber":"{sequence_number}","partitionKey":"{partition_key}"}}}}"#
        )
    };
    let fits = "\\u0001".repeat(48 * 1024 / 6);
    let records = [
        record(&fits, "1", "k"),
        record(&"\\u0001".repeat(48 * 1024), "2", "k"),
        record(&"\\\"".repeat(48 * 1024), "3", "k"),
        record("eA==", &"9".repeat(300_000), &"\\u0002".repeat(200_000)),
    ];
    let event = format!(r#"{{"Records":[{}]}}"#, records.join(","));
    let output = bike_prediction(&["invoke", "--event", "-"], event.as_bytes(), &[]);
    assert!(output.status.success());
    let log = String::from_utf8(output.stderr).unwrap();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 64 * 1024, "a log line of {longest} bytes");
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "record rejected")
        .collect();
    assert_eq!(rejected.len(), 4, "{}", &log[..log.len().min(2000)]);
    assert_eq!(
        rejected[0]["data"].as_str().unwrap(),
        "\u{1}".repeat(48 * 1024 / 6)
    );
    for line in &rejected[1..3] {
        assert!(line.get("data").is_none() && line["data_sha256"].is_string());
    }
    let sequence_number = rejected[3]["sequence_number"].as_str().unwrap();
    assert!(
        sequence_number.ends_with("(300000 bytes in all)"),
        "{sequence_number}"
    );
    assert!(
        rejected[3]["partition_key"]
            .as_str()
            .unwrap()
            .ends_with("(200000 bytes in all)")
    );
}

#[test]
fn onnx_runtime_messages_are_json_lines_and_only_with_log_record_data() {
    // Every other record indexes outside the model's table: ONNX Runtime fails on the batch
    // and on each half it is split into, and says so with the index it was given.
    let payloads: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let id = if i % 2 == 0 { 1 } else { 99 };
            format!(r#"{{"features": {{"id": {id}}}, "pred_id": {i}}}"#).into_bytes()
        })
        .collect();
    let event = kinesis_event(&payloads);
    for (switch, messages) in [("false", false), ("true", true)] {
        let output = bike_prediction(
            &["invoke", "--event", "-"],
            &event,
            &[
                ("MODEL_URI", "tests/fixtures/models/gather-index"),
                ("LOG_RECORD_DATA", switch),
                ("RUST_LOG", "debug"),
            ],
        );
        let response = stdout_json(&output);
        assert_eq!(response["rejected"].as_array().unwrap().len(), 100);
        let log = String::from_utf8(output.stderr).unwrap();
        for line in log.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not JSON: {line}"
            );
        }
        let onnx_runtime = log
            .lines()
            .filter(|line| line.contains("\"ONNX Runtime\""))
            .count();
        assert_eq!(
            onnx_runtime > 0,
            messages,
            "LOG_RECORD_DATA={switch}: {onnx_runtime}"
        );
    }
}

#[test]
fn a_rejected_user_record_is_logged_with_its_sub_sequence_number_an_unreadable_aggregate_whole() {
    use bike_prediction::aggregate::{AggregatedRecord, Record, encode};
    let reference = reference();
    let good = payload(
        &reference.columns,
        &reference.rows[0],
        &serde_json::json!(1),
    );
    let record = |data: &[u8]| Record {
        partition_key_index: Some(0),
        explicit_hash_key_index: None,
        data: Some(data.to_vec().into()),
        tags: Vec::new(),
    };
    let aggregate = encode(&AggregatedRecord {
        partition_key_table: vec!["user-key".into()],
        explicit_hash_key_table: Vec::new(),
        records: vec![record(&good), record(b"not json")],
    });
    let corrupt = aggregate[..aggregate.len() - 1].to_vec();
    let output = bike_prediction(
        &["invoke", "--event", "-"],
        &kinesis_event(&[aggregate, corrupt]),
        &[],
    );
    assert!(output.status.success());
    let log = String::from_utf8(output.stderr).unwrap();
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == "record rejected")
        .collect();
    assert_eq!(rejected.len(), 2, "{log}");
    assert_eq!(rejected[0]["sub_sequence_number"], 1);
    assert_eq!(rejected[0]["partition_key"], "user-key");
    assert_eq!(rejected[0]["code"], "not_json");
    assert!(
        rejected[1].get("sub_sequence_number").is_none(),
        "{}",
        rejected[1]
    );
    assert_eq!(rejected[1]["partition_key"], "1");
    assert_eq!(rejected[1]["code"], "invalid_aggregate");
    let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(response["predictions"].as_array().unwrap().len(), 1);
}
