//! Registry models (`MODEL_URI=models:/...`) against real MLflow tracking servers, started by
//! `scripts/test.sh` with `scripts/local/mlflow.sh` (SQLite backend stores; one serving its
//! artifacts through its proxy, `MLFLOW_TEST_PROXY_URI`, one keeping them in the local S3,
//! `MLFLOW_TEST_S3_URI`), each holding `bike-demand` version 1 (models/bike-demand) and 2
//! (models/bike-linear), alias `champion` -> 1, registered with the real MLflow client, and
//! `bike-demand-runs` version 1 whose source is `runs:/<run of version 1>/model`.
//!
//! The function runs as a user runs it, `bike-prediction invoke`, on every reference row, and
//! its predictions are compared with Python onnxruntime's.

mod common;

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use common::{kinesis_event, reference, root};

/// Relative tolerance against the Python reference (both run the same graph in float32).
const TOLERANCE: f64 = 1e-4;

/// The tracking servers `scripts/test.sh` started.
fn servers() -> [(&'static str, String); 2] {
    ["MLFLOW_TEST_PROXY_URI", "MLFLOW_TEST_S3_URI"].map(|variable| {
        let uri = std::env::var(variable).unwrap_or_else(|_| {
            panic!("{variable} is not set: run the tests with scripts/test.sh (scripts/local/mlflow.sh)")
        });
        (variable, uri)
    })
}

/// Runs `bike-prediction invoke` on `event` with `env`, each run with its own model cache.
fn invoke(event: &[u8], env: &[(&str, &str)]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    invoke_cached(event, env, cache.path())
}

/// [`invoke`] with the model cache in `cache`.
fn invoke_cached(event: &[u8], env: &[(&str, &str)], cache: &std::path::Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bike-prediction"));
    command
        .args(["invoke", "--event", "-"])
        .current_dir(root())
        .env_remove("RUN_ID")
        .env_remove("MODEL_ID")
        .env_remove("MODEL_BUCKET")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env("MODEL_CACHE_DIR", cache)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    child.stdin.take().unwrap().write_all(event).unwrap();
    child.wait_with_output().unwrap()
}

/// One event of every reference row, `pred_id` its index.
fn reference_event() -> Vec<u8> {
    kinesis_event(&common::reference_payloads(&reference()))
}

/// Checks that `output` predicted every reference row as Python does with `model` (a
/// directory under models/), each event stamped `version`.
fn assert_served(output: &Output, model: &str, version: &str) {
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");
    let response: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let reference = reference();
    let expected = &reference.models[model];
    let predictions = response["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), reference.rows.len(), "{logs}");
    for event in predictions {
        assert_eq!(event["version"], version);
        let index = event["prediction"]["pred_id"].as_u64().unwrap() as usize;
        let actual = event["prediction"]["cnt"].as_f64().unwrap();
        let wanted = f64::from(expected[index]);
        assert!(
            (actual - wanted).abs() <= TOLERANCE * wanted.abs().max(1.0),
            "{model} row {index}: {actual} vs Python's {wanted}"
        );
    }
}

/// The `ready` log line.
fn ready(output: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "ready")
        .expect("a ready line")
}

#[test]
fn an_alias_serves_the_version_it_points_at_with_its_predictions_and_stamp() {
    let event = reference_event();
    for (server, uri) in servers() {
        let output = invoke(
            &event,
            &[
                ("MODEL_URI", "models:/bike-demand@champion"),
                ("MLFLOW_TRACKING_URI", &uri),
            ],
        );
        assert_served(&output, "bike-demand", "bike-demand/1");
        let ready = ready(&output);
        assert_eq!(ready["registered_model"], "bike-demand", "{server}");
        assert_eq!(ready["model_version"], "1", "{server}");
        assert_eq!(ready["run_id"].as_str().map(str::len), Some(32), "{server}");
        let location = ready["location"].as_str().unwrap();
        let scheme = match server {
            "MLFLOW_TEST_PROXY_URI" => "mlflow-artifacts://",
            _ => "s3://",
        };
        assert!(location.starts_with(scheme), "{server}: {location}");
        assert!(location.contains("/models/m-"), "{server}: {location}");
    }
}

#[test]
fn a_version_number_serves_that_version() {
    let event = reference_event();
    for (_, uri) in servers() {
        let output = invoke(
            &event,
            &[
                ("MODEL_URI", "models:/bike-demand/2"),
                ("MLFLOW_TRACKING_URI", &uri),
            ],
        );
        assert_served(&output, "bike-linear", "bike-demand/2");
    }
}

#[test]
fn a_runs_source_serves_the_model_logged_in_that_run() {
    let event = reference_event();
    for (_, uri) in servers() {
        let output = invoke(
            &event,
            &[
                ("MODEL_URI", "models:/bike-demand-runs/1"),
                ("MLFLOW_TRACKING_URI", &uri),
            ],
        );
        assert_served(&output, "bike-demand", "bike-demand-runs/1");
    }
}

#[test]
fn an_explicit_run_id_is_the_version_stamp() {
    let (_, uri) = &servers()[0];
    let output = invoke(
        &reference_event(),
        &[
            ("MODEL_URI", "models:/bike-demand/2"),
            ("MLFLOW_TRACKING_URI", uri),
            ("RUN_ID", "pinned-run"),
        ],
    );
    assert_served(&output, "bike-linear", "pinned-run");
}

/// The `cold start failed` error of a run that must not start.
fn cold_start_error(output: &Output) -> String {
    assert!(!output.status.success(), "the cold start succeeded");
    assert!(output.stdout.is_empty());
    let logs = String::from_utf8_lossy(&output.stderr);
    let line = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["message"] == "cold start failed")
        .unwrap_or_else(|| panic!("no cold start error in {logs}"));
    line["error"].as_str().unwrap().to_owned()
}

#[test]
fn a_wrong_alias_name_or_version_stops_the_cold_start_naming_the_uri_and_the_status() {
    let (_, uri) = &servers()[0];
    for (model, status) in [
        (
            "models:/bike-demand@nope",
            "HTTP 400 INVALID_PARAMETER_VALUE: Registered model alias nope not found.",
        ),
        (
            "models:/bike-demand/9",
            "HTTP 404 RESOURCE_DOES_NOT_EXIST: Model Version (name=bike-demand, version=9) not found",
        ),
        (
            "models:/nobody@champion",
            "HTTP 404 RESOURCE_DOES_NOT_EXIST: Registered Model with name=nobody not found",
        ),
    ] {
        let output = invoke(
            b"{}",
            &[("MODEL_URI", model), ("MLFLOW_TRACKING_URI", uri.as_str())],
        );
        let error = cold_start_error(&output);
        assert!(error.contains(model), "{model}: {error}");
        assert!(error.contains(uri.as_str()), "{model}: {error}");
        assert!(error.contains(status), "{model}: {error}");
    }
}

#[test]
fn an_unreachable_registry_stops_the_cold_start_naming_the_uri_and_the_cause() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tracking = format!("http://127.0.0.1:{port}");
    let output = invoke(
        b"{}",
        &[
            ("MODEL_URI", "models:/bike-demand@champion"),
            ("MLFLOW_TRACKING_URI", &tracking),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "2"),
        ],
    );
    let error = cold_start_error(&output);
    assert!(error.contains("models:/bike-demand@champion"), "{error}");
    assert!(error.contains(&tracking), "{error}");
    assert!(error.contains("Connection refused"), "{error}");
}

#[test]
fn tracking_credentials_never_reach_the_logs_even_at_trace_level() {
    let (_, uri) = &servers()[0];
    // The server runs without authentication and ignores the header; what matters is that the
    // function sends it and never prints it.
    let token = "TOKENthatMUSTnotLEAK0123456789";
    let password = "PASSWORDthatMUSTnotLEAK9876";
    // What the basic-auth header carries: base64("alice:" + password).
    let basic = base64_of(&format!("alice:{password}"));
    for credentials in [
        vec![("MLFLOW_TRACKING_TOKEN", token)],
        vec![
            ("MLFLOW_TRACKING_USERNAME", "alice"),
            ("MLFLOW_TRACKING_PASSWORD", password),
        ],
    ] {
        let mut env = vec![
            ("MODEL_URI", "models:/bike-demand@champion"),
            ("MLFLOW_TRACKING_URI", uri.as_str()),
            ("RUST_LOG", "trace"),
            ("LOG_RECORD_DATA", "True"),
        ];
        env.extend(credentials);
        let output = invoke(&reference_event(), &env);
        assert!(output.status.success());
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(logs.contains("\"ready\""), "{logs}");
        for secret in [token, password, basic.as_str()] {
            assert!(!logs.contains(secret), "a credential in the logs");
        }
    }
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn a_model_that_trickles_in_stops_the_cold_start_at_the_download_deadline() {
    // Both servers: through the artifact proxy, and from S3 (moto) for the S3-backed one.
    for (variable, uri) in servers() {
        let port: u16 = uri.rsplit(':').next().unwrap().parse().unwrap();
        // The registry's answers and MLmodel pass; the ONNX file, past them on the same
        // connection or on its own, comes one byte every 50 ms.
        let mut env = vec![
            ("MODEL_URI", "models:/bike-demand@champion".to_owned()),
            ("MODEL_DOWNLOAD_TIMEOUT", "2".to_owned()),
        ];
        if variable == "MLFLOW_TEST_PROXY_URI" {
            let relay = common::relay::damaging_relay(port, common::relay::Fault::Trickle(20_000));
            env.push(("MLFLOW_TRACKING_URI", relay));
        } else {
            let s3_port: u16 = std::env::var("AWS_ENDPOINT_URL")
                .expect("scripts/test.sh sets AWS_ENDPOINT_URL")
                .trim_end_matches('/')
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let relay =
                common::relay::damaging_relay(s3_port, common::relay::Fault::Trickle(20_000));
            env.push(("MLFLOW_TRACKING_URI", uri.clone()));
            env.push(("AWS_ENDPOINT_URL", relay));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let cache = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let output = invoke_cached(b"{}", &env, cache.path());
        let error = cold_start_error(&output);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{variable}: {:?}",
            started.elapsed()
        );
        assert!(
            error.contains("model.onnx did not arrive within 2 s (MODEL_DOWNLOAD_TIMEOUT)"),
            "{variable}: {error}"
        );
        // No partial copy is left behind.
        assert_eq!(
            std::fs::read_dir(cache.path()).unwrap().count(),
            0,
            "{variable}"
        );
    }
}

/// A tracking server on 127.0.0.1 that answers every request `200` with `answer`, in which
/// `{auth}` is replaced by the request's `Authorization` header as JSON escapes it: a server
/// quoting the credentials back. Lives until the test process ends.
fn echoing_server(answer: &'static str) -> String {
    use std::io::{BufRead as _, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorization = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                if let Some(value) = line.strip_prefix("authorization: ") {
                    authorization = value.trim().to_owned();
                }
                line.clear();
            }
            let escaped = serde_json::to_string(&authorization).unwrap();
            let body = answer.replace("{auth}", escaped.trim_matches('"'));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_server_quoting_the_credentials_back_in_its_answers_never_gets_them_logged() {
    let answers = [
        r#"{"model_version": {"name": "{auth}", "version": "1", "source": "models:/m-1", "status": "READY"}}"#,
        r#"{"model_version": {"name": "bike-demand", "version": "1", "source": "models:/m-1", "status": "{auth}"}}"#,
        r#"{"model_version": {"name": "bike-demand", "version": "1", "source": "s3://b/{auth}", "run_id": "{auth}"}}"#,
        r#"{"model_version": "{auth}"}"#,
    ];
    // A token and a password with characters JSON and Rust escape.
    let credentials: [&[(&str, &str)]; 2] = [
        &[("MLFLOW_TRACKING_TOKEN", r#"tok"en\SECRET42"#)],
        &[
            ("MLFLOW_TRACKING_USERNAME", "alice"),
            ("MLFLOW_TRACKING_PASSWORD", r#"pa"ss\SECRET42"#),
        ],
    ];
    for answer in answers {
        let server = echoing_server(answer);
        for credentials in credentials {
            let mut env = vec![
                ("MODEL_URI", "models:/bike-demand@champion"),
                ("MLFLOW_TRACKING_URI", server.as_str()),
                ("RUST_LOG", "trace"),
            ];
            env.extend_from_slice(credentials);
            let output = invoke(b"{}", &env);
            let error = cold_start_error(&output);
            assert!(
                error.contains("the answer holds the credentials sent to the server"),
                "{answer}: {error}"
            );
            let logs = String::from_utf8_lossy(&output.stderr);
            for secret in ["SECRET42", "YWxpY2U6"] {
                assert!(!logs.contains(secret), "{answer}: {logs}");
            }
        }
    }
}
