//! The accounting invariant: for every batch, records in = predictions published + records
//! rejected (and kept) + records reported for re-delivery, and a good record's prediction does
//! not depend on its neighbours. Batches mixing every kind of bad record with good ones are
//! generated; publishing goes to a Kinesis client whose `PutRecords` persistently fails the
//! entries of chosen records (SDK-level injection), the dead-letter stream to one that accepts
//! everything.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use bike_prediction::handler::Handler;
use bike_prediction::model::Model;
use bike_prediction::publish::{Publisher, RetryPolicy};
use common::{bundled_model, close, kinesis_event, load_model, payload, reference};
use proptest::prelude::*;

/// Every kind of record payload the generator mixes.
#[derive(Debug, Clone)]
enum Kind {
    /// Reference row `row`, whose prediction must come out.
    Good { row: usize },
    /// A payload that can never be predicted.
    Bad(&'static [u8]),
}

const BAD: &[&[u8]] = &[
    b"\xff\xfe not utf-8",
    b"not json",
    b"[1, 2]",
    b"{\"pred_id\": 1}",
    b"{\"features\": null, \"pred_id\": 1}",
    b"{\"features\": {\"t1\": 1, \"t2\": 2, \"hum\": 3}, \"pred_id\": 1}",
    b"{\"features\": {\"t1\": \"1\", \"t2\": 2, \"hum\": 3, \"weather_code\": 1}, \"pred_id\": 1}",
    b"{\"features\": {\"t1\": NaN, \"t2\": 2, \"hum\": 3, \"weather_code\": 1}, \"pred_id\": 1}",
    b"{\"features\": {\"t1\": 1e308, \"t2\": 2, \"hum\": 3, \"weather_code\": 1}, \"pred_id\": 1}",
    b"{\"features\": {\"t1\": 1, \"t2\": 2, \"hum\": 3, \"weather_code\": 1}}",
    b"{\"features\": {\"t1\": 1, \"t2\": 2, \"hum\": 3, \"weather_code\": 1}, \"pred_id\": null}",
    b"{\"features\": {\"t1\": 1, \"t2\": 2, \"hum\": 3, \"weather_code\": 1}, \"pred_id\": {}}",
];

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => (0..2000usize).prop_map(|row| Kind::Good { row }),
        1 => proptest::sample::select(BAD).prop_map(Kind::Bad),
    ]
}

/// A Kinesis client whose `PutRecords` fails, every time, the entries whose partition key is in
/// `failing`, and records the partition keys it accepted.
fn kinesis(failing: HashSet<String>) -> (Client, Arc<Mutex<Vec<String>>>) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let recorder = accepted.clone();
    let rule = mock!(Client::put_records).then_compute_output(move |request| {
        let mut accepted = recorder.lock().unwrap();
        let entries: Vec<PutRecordsResultEntry> = request
            .records()
            .iter()
            .map(|entry| {
                let key = entry.partition_key().unwrap_or_default().to_owned();
                if failing.contains(&key) {
                    PutRecordsResultEntry::builder()
                        .error_code("InternalFailure")
                        .error_message("injected")
                        .build()
                } else {
                    accepted.push(key);
                    PutRecordsResultEntry::builder()
                        .sequence_number("1")
                        .shard_id("s")
                        .build()
                }
            })
            .collect();
        let failed = entries.iter().filter(|e| e.error_code().is_some()).count();
        PutRecordsOutput::builder()
            .failed_record_count(failed as i32)
            .set_records(Some(entries))
            .build()
            .unwrap()
    });
    (
        mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, &[&rule]),
        accepted,
    )
}

const NO_WAIT: RetryPolicy = RetryPolicy {
    max_attempts: 2,
    base_delay: std::time::Duration::ZERO,
    max_delay: std::time::Duration::ZERO,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_record_is_published_rejected_or_redelivered_exactly_once(
        kinds in proptest::collection::vec(kind(), 0..60),
        failing_positions in proptest::collection::hash_set(0..60usize, 0..5),
    ) {
        let reference = reference();
        // pred_id = the record's position, so that every record is traceable.
        let payloads: Vec<Vec<u8>> = kinds.iter().enumerate().map(|(position, kind)| match kind {
            Kind::Good { row } => payload(&reference.columns, &reference.rows[*row], &serde_json::json!(position)),
            Kind::Bad(bytes) => bytes.to_vec(),
        }).collect();
        let event = kinesis_event(&payloads);
        let failing: HashSet<String> = failing_positions.iter().map(usize::to_string).collect();
        let (output, published) = kinesis(failing.clone());
        let (dead_letter, kept) = kinesis(HashSet::new());

        let handler = Handler::new(model(), "bike-demand", "run")
            .publishing_to(Publisher::new(output, "out", NO_WAIT))
            .dead_lettering_to(Publisher::new(dead_letter, "dead", NO_WAIT));
        let handled = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
            .block_on(handler.handle_bytes(&event)).unwrap();
        let response: serde_json::Value = serde_json::from_slice(&handled.response).unwrap();
        let report = handled.report;

        let good: Vec<usize> = kinds.iter().enumerate()
            .filter(|(_, kind)| matches!(kind, Kind::Good { .. })).map(|(i, _)| i).collect();
        let bad = kinds.len() - good.len();
        let expected_redeliver: HashSet<usize> = good.iter().copied()
            .filter(|i| failing.contains(&i.to_string())).collect();

        // The invariant, in counts and record by record.
        prop_assert_eq!(report.records, kinds.len());
        prop_assert_eq!(report.records, report.published + report.rejected + report.redeliver);
        prop_assert_eq!(report.rejected, bad);
        prop_assert_eq!(report.dead_lettered, bad);
        prop_assert_eq!(kept.lock().unwrap().len(), bad);
        let published: Vec<String> = published.lock().unwrap().clone();
        let published_set: HashSet<&String> = published.iter().collect();
        prop_assert_eq!(published.len(), published_set.len(), "nothing published twice");
        for &i in &good {
            let is_published = published_set.contains(&i.to_string());
            prop_assert_eq!(is_published, !expected_redeliver.contains(&i), "record {}", i);
        }
        let sequence_numbers: Vec<String> = serde_json::from_slice::<serde_json::Value>(&event).unwrap()["Records"]
            .as_array().unwrap().iter()
            .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned()).collect();
        let reported: HashSet<String> = response["batchItemFailures"].as_array().unwrap().iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned()).collect();
        let expected: HashSet<String> = expected_redeliver.iter().map(|&i| sequence_numbers[i].clone()).collect();
        prop_assert_eq!(reported, expected);

        // Good records' predictions are those Python gives for their rows, whatever the neighbours.
        let predictions: HashMap<u64, f64> = response["predictions"].as_array().unwrap().iter()
            .map(|e| (e["prediction"]["pred_id"].as_u64().unwrap(), e["prediction"]["cnt"].as_f64().unwrap()))
            .collect();
        prop_assert_eq!(predictions.len(), good.len());
        for &i in &good {
            let Kind::Good { row } = kinds[i] else { unreachable!() };
            let expected = f64::from(reference.models["bike-demand"][row]);
            prop_assert!(close(predictions[&(i as u64)], expected, 1e-4));
        }
    }
}

/// Each case builds its own handler, so each loads the model.
fn model() -> Model {
    load_model(&bundled_model("bike-demand")).unwrap()
}
