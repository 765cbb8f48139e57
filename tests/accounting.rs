//! The accounting invariant: for every batch, records in = predictions published + records
//! rejected (and kept) + records reported for re-delivery, and a good record's prediction does
//! not depend on its neighbours. Batches mixing every kind of bad record with good ones, big
//! rejected records up to Kinesis's 1 MiB included, are generated; publishing goes to a Kinesis
//! client whose `PutRecords` persistently fails the entries of chosen records (SDK-level
//! injection), the dead-letter stream to one that accepts everything. Both refuse a whole call
//! with an entry over 1 MiB, as Kinesis does. Publishing to endpoints that accept connections
//! and never answer must end by the invocation's deadline with every unpublished record
//! reported. With KPL aggregates in the batch, each user record counts as one record, and an
//! aggregate is reported for re-delivery once, however many of its user records failed.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use bike_prediction::handler::Handler;
use bike_prediction::model::Model;
use bike_prediction::publish::{Outgoing, Publisher, RetryPolicy};
use bike_prediction::telemetry::BatchReport;
use common::{bundled_model, close, hung_kinesis, kinesis_event, load_model, payload, reference};
use proptest::prelude::*;

/// Every kind of record payload the generator mixes.
#[derive(Debug, Clone)]
enum Kind {
    /// Reference row `row`, whose prediction must come out.
    Good { row: usize },
    /// A payload that can never be predicted.
    Bad(&'static [u8]),
    /// Data of this many bytes that is not JSON.
    Huge(usize),
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
        30 => (0..2000usize).prop_map(|row| Kind::Good { row }),
        10 => proptest::sample::select(BAD).prop_map(Kind::Bad),
        // Up to Kinesis's largest record, whose dead letter is larger than a record.
        1 => proptest::sample::select(vec![1, 700 * 1024, MIB - 1, MIB]).prop_map(Kind::Huge),
    ]
}

const MIB: usize = 1024 * 1024;

/// What a stream accepted: each entry's partition key and data.
type Accepted = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A Kinesis client whose `PutRecords` fails, every time, the entries whose partition key is in
/// `failing`, and records the entries it accepted. Like Kinesis, it refuses a whole call with
/// an entry over 1 MiB (data and partition key) or over 5 MiB in all.
fn kinesis(failing: HashSet<String>) -> (Client, Accepted) {
    let accepted = Accepted::default();
    let recorder = accepted.clone();
    let client = common::in_process::kinesis(move |entries| {
        let size = |entry: &common::in_process::Entry| entry.data.len() + entry.partition_key.len();
        if entries.iter().any(|entry| size(entry) > MIB)
            || entries.iter().map(size).sum::<usize>() > 5 * MIB
        {
            return common::in_process::error_answer(400, "InvalidArgumentException");
        }
        let mut accepted = recorder.lock().unwrap();
        let results: Vec<Option<&str>> = entries
            .into_iter()
            .map(|entry| match failing.contains(&entry.partition_key) {
                true => Some("InternalFailure"),
                false => {
                    accepted.push((entry.partition_key, entry.data));
                    None
                }
            })
            .collect();
        common::in_process::answer(&results)
    });
    (client, accepted)
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
            Kind::Huge(size) => vec![b'~'; *size],
        }).collect();
        let event = kinesis_event(&payloads);
        let failing: HashSet<String> = failing_positions.iter().map(usize::to_string).collect();
        let (response, report, published, kept) = handle_failing(&event, failing.clone());

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
        let published: Vec<String> = published.lock().unwrap().iter().map(|(key, _)| key.clone()).collect();
        let published_set: HashSet<&String> = published.iter().collect();
        prop_assert_eq!(published.len(), published_set.len(), "nothing published twice");
        for &i in &good {
            let is_published = published_set.contains(&i.to_string());
            prop_assert_eq!(is_published, !expected_redeliver.contains(&i), "record {}", i);
        }
        let sequence_numbers: Vec<String> = serde_json::from_slice::<serde_json::Value>(&event).unwrap()["Records"]
            .as_array().unwrap().iter()
            .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned()).collect();
        // Every rejected record's data is in the dead-letter stream, whatever its size.
        let kept = letters(&kept.lock().unwrap());
        prop_assert_eq!(kept.len(), bad);
        for (position, kind) in kinds.iter().enumerate() {
            let sequence_number = &sequence_numbers[position];
            match kind {
                Kind::Good { .. } => prop_assert!(!kept.contains_key(&(sequence_number.clone(), None))),
                _ => prop_assert_eq!(&kept[&(sequence_number.clone(), None)], &payloads[position]),
            }
        }
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

/// A record's identity in its shard: its sequence number and, for a user record of an
/// aggregate, its sub-sequence number.
type Identity = (String, Option<u64>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Aggregates of good and bad user records among plain records and corrupt aggregates:
    /// every user record is published, rejected or re-delivered once, and an aggregate with a
    /// user record to re-deliver is reported once, by its sequence number.
    #[test]
    fn every_user_record_of_an_aggregate_is_accounted_for_and_its_aggregate_reported_once(
        records in proptest::collection::vec(
            prop_oneof![
                3 => kind().prop_filter("small", |kind| !matches!(kind, Kind::Huge(_))).prop_map(|kind| vec![kind]),
                2 => proptest::collection::vec(
                    kind().prop_filter("small", |kind| !matches!(kind, Kind::Huge(_))), 1..8),
            ],
            0..20,
        ),
        aggregated in proptest::collection::vec(proptest::prelude::any::<bool>(), 20),
        corrupt_at in proptest::option::of(0..20usize),
        failing_pred_ids in proptest::collection::hash_set(0..60usize, 0..15),
    ) {
        use bike_prediction::aggregate::{AggregatedRecord, Record, encode};
        let reference = reference();
        // pred_id = the user record's position among all user records.
        let mut next = 0;
        let mut user_payloads = Vec::new();
        let mut data = Vec::new();
        // For each Kinesis record: its user records' pred_ids and kinds (none if corrupt).
        let mut contents: Vec<Vec<(usize, Kind)>> = Vec::new();
        for (position, kinds) in records.iter().enumerate() {
            let payloads: Vec<(usize, Vec<u8>)> = kinds.iter().map(|kind| {
                let pred_id = next;
                next += 1;
                (pred_id, match kind {
                    Kind::Good { row } => payload(&reference.columns, &reference.rows[*row], &serde_json::json!(pred_id)),
                    Kind::Bad(bytes) => bytes.to_vec(),
                    Kind::Huge(size) => vec![b'~'; *size],
                })
            }).collect();
            user_payloads.extend(payloads.iter().cloned());
            let as_aggregate = kinds.len() > 1 || aggregated[position];
            if !as_aggregate {
                data.push(payloads[0].1.clone());
                contents.push(vec![(payloads[0].0, kinds[0].clone())]);
                continue;
            }
            let mut aggregate = encode(&AggregatedRecord {
                partition_key_table: vec!["a".into(), "b".into()],
                explicit_hash_key_table: Vec::new(),
                records: payloads.iter().map(|(pred_id, payload)| Record {
                    partition_key_index: Some((*pred_id % 2) as u64),
                    explicit_hash_key_index: None,
                    data: Some(payload.clone().into()),
                    tags: Vec::new(),
                }).collect(),
            });
            if corrupt_at == Some(position) {
                aggregate.pop();
                contents.push(Vec::new());
            } else {
                contents.push(payloads.iter().map(|(pred_id, _)| *pred_id).zip(kinds.iter().cloned()).collect());
            }
            data.push(aggregate);
        }
        let event = kinesis_event(&data);
        let sequence_numbers: Vec<String> = serde_json::from_slice::<serde_json::Value>(&event).unwrap()["Records"]
            .as_array().unwrap().iter()
            .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned()).collect();
        // Entries are put under the prediction's partition key, its pred_id.
        let failing: HashSet<String> = failing_pred_ids.iter().map(usize::to_string).collect();
        let (response, report, published, kept) = handle_failing(&event, failing.clone());

        let user_records: usize = contents.iter().map(|c| c.len().max(1)).sum();
        prop_assert_eq!(report.records, user_records);
        prop_assert_eq!(report.records, report.published + report.rejected + report.redeliver);
        let published: HashSet<String> = published.lock().unwrap().iter().map(|(key, _)| key.clone()).collect();
        let kept = letters(&kept.lock().unwrap());
        let mut expected_failures = Vec::new();
        let mut rejected = 0;
        for (position, users) in contents.iter().enumerate() {
            let sequence_number = &sequence_numbers[position];
            if users.is_empty() {
                // A corrupt aggregate: one rejection, its data kept as it came.
                rejected += 1;
                prop_assert_eq!(&kept[&(sequence_number.clone(), None)], &data[position]);
                continue;
            }
            let aggregated = data[position].starts_with(&bike_prediction::aggregate::MAGIC);
            let mut failed = false;
            for (sub, (pred_id, kind)) in users.iter().enumerate() {
                let identity = (sequence_number.clone(), aggregated.then_some(sub as u64));
                match kind {
                    Kind::Good { .. } if failing.contains(&pred_id.to_string()) => failed = true,
                    Kind::Good { .. } => prop_assert!(published.contains(&pred_id.to_string())),
                    _ => {
                        rejected += 1;
                        prop_assert_eq!(&kept[&identity], &user_payloads[*pred_id].1);
                    }
                }
            }
            if failed {
                expected_failures.push(sequence_number.clone());
            }
        }
        prop_assert_eq!(report.rejected, rejected);
        prop_assert_eq!(kept.len(), rejected);
        let reported: Vec<String> = response["batchItemFailures"].as_array().unwrap().iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned()).collect();
        prop_assert_eq!(reported, expected_failures);
    }
}

/// The data of each record kept in the dead-letter stream, by its identity, from its one
/// letter or its parts. The letters of an aggregate's user records come aggregated, those of
/// plain records as they are.
fn letters(accepted: &[(String, Vec<u8>)]) -> HashMap<Identity, Vec<u8>> {
    use base64::Engine as _;
    let mut parts: HashMap<Identity, Vec<(u64, String)>> = HashMap::new();
    let letters = accepted.iter().flat_map(|(key, data)| {
        match data.starts_with(&bike_prediction::aggregate::MAGIC) {
            true => common::deaggregate(data)
                .expect("an aggregate of letters that reads")
                .into_iter()
                .map(|(_, data)| (true, data))
                .collect::<Vec<_>>(),
            false => vec![(false, data.clone())],
        }
        .into_iter()
        .inspect(move |_| assert!(!key.is_empty()))
    });
    for (aggregated, letter) in letters {
        let letter: serde_json::Value = serde_json::from_slice(&letter).unwrap();
        assert_eq!(
            aggregated,
            letter.get("subSequenceNumber").is_some(),
            "user records' letters, and only theirs, come aggregated: {letter}"
        );
        let part = letter["part"].as_u64().unwrap_or(1);
        let data = letter["data"].as_str().unwrap().to_owned();
        let sequence_number = letter["sequenceNumber"].as_str().unwrap().to_owned();
        let identity = (sequence_number, letter["subSequenceNumber"].as_u64());
        parts.entry(identity).or_default().push((part, data));
    }
    parts
        .into_iter()
        .map(|(sequence_number, mut parts)| {
            parts.sort();
            let data: String = parts.into_iter().map(|(_, data)| data).collect();
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            (sequence_number, data)
        })
        .collect()
}

/// Each case builds its own handler, so each loads the model.
fn model() -> Model {
    load_model(&bundled_model("bike-demand")).unwrap()
}

/// Handles `event` publishing to a stream that fails the entries of the `failing` partition
/// keys and keeping rejected records in another: the response, the batch's report, and what
/// each stream accepted.
fn handle_failing(
    event: &[u8],
    failing: HashSet<String>,
) -> (serde_json::Value, BatchReport, Accepted, Accepted) {
    let (output, published) = kinesis(failing);
    let (dead_letter, kept) = kinesis(HashSet::new());
    let handler = Handler::new(model(), "bike-demand", "run")
        .publishing_to(Publisher::new(output, "out", NO_WAIT))
        .dead_lettering_to(Publisher::new(dead_letter, "dead", NO_WAIT));
    let handled = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(handler.handle_bytes(event))
        .unwrap();
    let response = serde_json::from_slice(&handled.response).unwrap();
    (response, handled.report, published, kept)
}

/// An entry per record of `data`, keyed by its position.
fn outgoing(data: &[Vec<u8>]) -> Vec<Outgoing<'_>> {
    data.iter()
        .enumerate()
        .map(|(record, data)| Outgoing {
            record,
            data,
            partition_key: record.to_string().into(),
        })
        .collect()
}

#[tokio::test]
async fn a_hung_endpoint_never_holds_publishing_past_the_deadline() {
    let data: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    let events = outgoing(&data);
    let client = hung_kinesis().await;
    for budget in [0, 700, 2500].map(std::time::Duration::from_millis) {
        let started = tokio::time::Instant::now();
        let report = Publisher::new(client.clone(), "out", RetryPolicy::default())
            .publish(&events, started + budget)
            .await;
        let took = started.elapsed();
        assert!(
            took < budget + std::time::Duration::from_millis(300),
            "{budget:?}: {took:?}"
        );
        assert_eq!(report.published, 0);
        assert_eq!(report.failed, (0..1000).collect::<Vec<_>>(), "{budget:?}");
        assert!(report.last_error.is_some());
    }
}

#[tokio::test]
async fn hung_streams_never_hold_the_invocation_past_its_deadline_and_nothing_is_lost() {
    let reference = reference();
    let mut payloads: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            payload(
                &reference.columns,
                &reference.rows[i],
                &serde_json::json!(i),
            )
        })
        .collect();
    payloads[10] = b"not json".to_vec();
    payloads[500] = vec![b'~'; MIB];
    let event = kinesis_event(&payloads);
    let records = bike_prediction::kinesis::KinesisBatch::from_slice(&event).unwrap();
    let (working, _) = kinesis(HashSet::new());
    // Which streams hang: the output, the dead-letter stream, or both.
    for (output_hangs, dead_letters_hang) in [(true, true), (true, false), (false, true)] {
        let hung = hung_kinesis().await;
        let stream = |hangs: bool| match hangs {
            true => hung.clone(),
            false => working.clone(),
        };
        let handler = Handler::new(model(), "bike-demand", "run")
            .publishing_to(Publisher::new(
                stream(output_hangs),
                "out",
                RetryPolicy::default(),
            ))
            .dead_lettering_to(Publisher::new(
                stream(dead_letters_hang),
                "dead",
                RetryPolicy::default(),
            ));
        let budget = std::time::Duration::from_millis(2500);
        let invocation = bike_prediction::handler::Invocation {
            deadline: Some(std::time::SystemTime::now() + budget),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let handled = handler.handle(&records, &invocation).await.unwrap();
        let took = started.elapsed();
        let case = format!("output hangs: {output_hangs}, dead letters hang: {dead_letters_hang}");
        assert!(took < budget, "{case}: {took:?}");
        let report = handled.report;
        assert_eq!(report.records, 1000, "{case}");
        assert_eq!(report.rejected, 2, "{case}");
        let expected_redelivered = match (output_hangs, dead_letters_hang) {
            (true, true) => 1000,
            (true, false) => 998,
            (false, _) => 2,
        };
        assert_eq!(report.redeliver, expected_redelivered, "{case}");
        assert_eq!(report.published, 998 * usize::from(!output_hangs), "{case}");
        assert_eq!(
            report.dead_lettered,
            2 * usize::from(!dead_letters_hang),
            "{case}"
        );
        let response: serde_json::Value = serde_json::from_slice(&handled.response).unwrap();
        assert_eq!(
            response["batchItemFailures"].as_array().unwrap().len(),
            expected_redelivered,
            "{case}"
        );
    }
}

#[tokio::test]
async fn events_the_output_stream_can_never_take_are_rejected_and_kept_not_redelivered() {
    let reference = reference();
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            payload(
                &reference.columns,
                &reference.rows[i],
                &serde_json::json!(i),
            )
        })
        .chain([b"not json".to_vec()])
        .collect();
    let event = kinesis_event(&payloads);
    let (output, published) = kinesis(HashSet::new());
    let (dead_letter, kept) = kinesis(HashSet::new());
    // An output stream of records smaller than any event: every event is refused unsent.
    let handler = Handler::new(model(), "bike-demand", "run")
        .publishing_to(Publisher::new(output, "out", NO_WAIT).with_max_record_bytes(64))
        .dead_lettering_to(Publisher::new(dead_letter, "dead", NO_WAIT));
    let handled = handler.handle_bytes(&event).await.unwrap();
    let report = handled.report;
    assert_eq!(
        (report.published, report.rejected, report.redeliver),
        (0, 21, 0)
    );
    assert_eq!(report.dead_lettered, 21);
    assert!(published.lock().unwrap().is_empty());
    let response: serde_json::Value = serde_json::from_slice(&handled.response).unwrap();
    let codes: Vec<&str> = response["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|code| **code == "event_too_large")
            .count(),
        20
    );
    assert_eq!(response["predictions"], serde_json::json!([]));
    let kept = letters(&kept.lock().unwrap());
    assert_eq!(kept.len(), 21);
}

#[tokio::test]
async fn a_slow_but_working_stream_gets_every_call_through_within_the_deadline() {
    // 3 s per call, more than an attempt's shortest timeout.
    let (client, accepted) = common::slow_kinesis(std::time::Duration::from_secs(3)).await;
    let data: Vec<Vec<u8>> = (0..600)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    let events = outgoing(&data);
    let started = tokio::time::Instant::now();
    let report = Publisher::new(client, "out", RetryPolicy::default())
        .publish(&events, started + std::time::Duration::from_secs(20))
        .await;
    assert_eq!(
        report.failed,
        Vec::<usize>::new(),
        "{:?}",
        report.last_error
    );
    assert_eq!((report.published, report.calls, report.resent), (600, 2, 0));
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        600,
        "each sent once"
    );
}

#[tokio::test]
async fn aggregates_of_thousands_of_bad_user_records_are_kept_in_a_few_dead_letter_records() {
    // A dead-letter stream of one shard, taking 1,000 records a second, and 10 s to publish
    // in: 24,000 letters sent one record each would take 24 s and be delivered again and
    // again; aggregated, they are a few records. (The margin is for a machine busy with other
    // test suites: they take about 2 s there.)
    let (dead_letters, dead) =
        common::fake_kinesis(std::time::Duration::from_millis(5), Some(1000.0)).await;
    let (output, published) = common::fake_kinesis(std::time::Duration::ZERO, None).await;
    let reference = reference();
    let mut payloads = Vec::new();
    for aggregate in 0..8 {
        let users: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("not json {aggregate}/{i}").into_bytes())
            .collect();
        let outgoing: Vec<Outgoing<'_>> = users
            .iter()
            .enumerate()
            .map(|(record, data)| Outgoing {
                record,
                data,
                partition_key: format!("user-{i}", i = record % 7).into(),
            })
            .collect();
        let packed = bike_prediction::pack::pack_groups(&outgoing, |_| 0, MIB);
        assert_eq!(packed.aggregates.len(), 1);
        payloads.push(packed.aggregates[0].data.clone());
        payloads.push(payload(
            &reference.columns,
            &reference.rows[aggregate],
            &serde_json::json!(aggregate),
        ));
    }
    let event = kinesis_event(&payloads);
    let records = bike_prediction::kinesis::KinesisBatch::from_slice(&event).unwrap();
    let handler = Handler::new(model(), "bike-demand", "run")
        .publishing_to(Publisher::new(output, "out", RetryPolicy::default()))
        .dead_lettering_to(
            Publisher::new(dead_letters, "dead", RetryPolicy::default()).unordered(),
        );
    let invocation = bike_prediction::handler::Invocation {
        deadline: Some(std::time::SystemTime::now() + std::time::Duration::from_secs(10)),
        ..Default::default()
    };
    let handled = handler.handle(&records, &invocation).await.unwrap();
    let report = handled.report;
    assert_eq!(
        (report.predicted, report.rejected, report.redeliver),
        (8, 24_000, 0),
        "{report:?}"
    );
    assert_eq!(report.dead_lettered, 24_000);
    assert_eq!(
        published.accepted.load(std::sync::atomic::Ordering::SeqCst),
        8
    );
    let kept = dead.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((8..=16).contains(&kept), "{kept} dead-letter records");
    assert_eq!(dead.throttled.load(std::sync::atomic::Ordering::SeqCst), 0);
}
