use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_smithy_mocks::{RuleMode, mock, mock_client};

use super::*;

/// No waiting between resends in tests.
const NO_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::ZERO,
    max_delay: Duration::ZERO,
};

fn events(data: &[Vec<u8>]) -> Vec<Outgoing<'_>> {
    data.iter()
        .enumerate()
        .map(|(i, data)| Outgoing {
            record: i,
            data,
            partition_key: Cow::Owned(i.to_string()),
        })
        .collect()
}

/// A deadline no test reaches.
fn later() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

fn ok_entry(i: usize) -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .sequence_number(i.to_string())
        .shard_id("shardId-000000000000")
        .build()
}

fn throttled_entry() -> PutRecordsResultEntry {
    PutRecordsResultEntry::builder()
        .error_code("ProvisionedThroughputExceededException")
        .error_message("Rate exceeded for shard")
        .build()
}

/// Partition keys of every `PutRecords` request the mock received, call by call.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A client whose `PutRecords` fails the entries whose partition key `fails` names (given how
/// many times that key was sent before) and accepts the rest.
fn client(fails: impl Fn(&str, usize) -> bool + Send + Sync + 'static) -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let rule = mock!(Client::put_records).then_compute_output(move |request| {
        let keys: Vec<String> = request
            .records()
            .iter()
            .map(|entry| entry.partition_key().unwrap_or_default().to_owned())
            .collect();
        let mut seen = recorder.lock().unwrap();
        let entries = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let earlier = seen.iter().flatten().filter(|k| *k == key).count();
                if fails(key, earlier) {
                    throttled_entry()
                } else {
                    ok_entry(i)
                }
            })
            .collect::<Vec<_>>();
        seen.push(keys);
        let failed = entries.iter().filter(|e| e.error_code().is_some()).count();
        PutRecordsOutput::builder()
            .failed_record_count(failed as i32)
            .set_records(Some(entries))
            .build()
            .unwrap()
    });
    (
        mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, &[&rule]),
        seen,
    )
}

#[tokio::test]
async fn two_thousand_events_go_out_in_four_calls_with_nothing_lost_or_duplicated() {
    let data: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("{{\"i\":{i}}}").into_bytes())
        .collect();
    let (client, seen) = client(|_, _| false);
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.published, 2000);
    assert_eq!(report.calls, 4);
    assert!(report.failed.is_empty());
    let mut keys: Vec<String> = seen.lock().unwrap().concat();
    keys.sort_by_key(|k| k.parse::<usize>().unwrap());
    assert_eq!(keys, (0..2000).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn only_failed_entries_are_resent() {
    let data: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a'; i + 1]).collect();
    // Keys 1 and 3 are throttled the first time only.
    let (client, seen) = client(|key, earlier| (key == "1" || key == "3") && earlier == 0);
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.published, 5);
    assert_eq!(report.resent, 2);
    assert!(report.failed.is_empty());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], ["1", "3"]);
}

#[tokio::test]
async fn entry_that_keeps_failing_is_returned_after_bounded_attempts() {
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let (client, seen) = client(|key, _| key == "2");
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.published, 2);
    assert_eq!(report.failed, [2]);
    assert_eq!(seen.lock().unwrap().len(), NO_BACKOFF.max_attempts as usize);
    assert!(
        report
            .last_error
            .unwrap()
            .contains("ProvisionedThroughputExceededException")
    );
}

#[tokio::test]
async fn failed_call_is_retried_then_reported_whole() {
    let rule =
        mock!(Client::put_records).then_error(|| PutRecordsError::unhandled("connection reset"));
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, &[&rule]);
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.published, 0);
    assert_eq!(report.failed, [0, 1, 2]);
    assert_eq!(rule.num_calls(), NO_BACKOFF.max_attempts as usize);
}

#[test]
fn calls_respect_the_byte_limit() {
    let big = vec![b'x'; 1024 * 1024 - 10];
    let data: Vec<Vec<u8>> = (0..11).map(|_| big.clone()).collect();
    let events = events(&data);
    let pending: Vec<usize> = (0..11).collect();
    let calls = calls(&events, &pending, DEFAULT_MAX_RECORD_BYTES);
    assert_eq!(calls.iter().map(|c| c.len()).collect::<Vec<_>>(), [5, 5, 1]);
}

#[test]
fn a_call_holds_exactly_5_mib_and_not_a_byte_more() {
    // Partition keys "0".."6" are one byte: each entry is exactly 1 MiB.
    let mib = vec![b'x'; DEFAULT_MAX_RECORD_BYTES - 1];
    let mut data: Vec<Vec<u8>> = (0..5).map(|_| mib.clone()).collect();
    data.push(Vec::new());
    let pending: Vec<usize> = (0..6).collect();
    let sizes = |data: &[Vec<u8>]| {
        let events = events(data);
        calls(&events, &pending, DEFAULT_MAX_RECORD_BYTES)
            .iter()
            .map(|call| call.len())
            .collect::<Vec<_>>()
    };
    // 5 MiB, then the sixth entry's one byte of key in a call of its own.
    assert_eq!(sizes(&data), [5, 1]);
    // Four entries and one byte short of a fifth: 5 MiB less one byte with the sixth's key.
    data[4].pop();
    assert_eq!(sizes(&data), [6]);
    // Streams of larger records take a call of one record of their size.
    let big = vec![b'x'; 8 * DEFAULT_MAX_RECORD_BYTES];
    let data = vec![big.clone(), big];
    let events = events(&data);
    let calls = calls(&events, &[0, 1], 10 * DEFAULT_MAX_RECORD_BYTES);
    assert_eq!(calls.len(), 2);
}

#[test]
fn backoff_grows_and_is_capped() {
    let policy = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(400),
    };
    for retry in 1..10 {
        let ceiling = Duration::from_millis((100u64 << (retry - 1)).min(400));
        for _ in 0..20 {
            assert!(policy.backoff(retry) <= ceiling, "retry {retry}");
        }
    }
}

#[tokio::test]
async fn entries_the_stream_can_never_accept_are_refused_without_failing_their_call() {
    let limit = DEFAULT_MAX_RECORD_BYTES;
    // Partition keys "0".."4" are one byte: data of `limit - 1` bytes is exactly the limit.
    let data: Vec<Vec<u8>> = vec![
        vec![b'a'; limit - 1],
        vec![b'b'; limit],
        b"small".to_vec(),
        vec![b'c'; 5 * limit],
        Vec::new(),
    ];
    let (client, seen) = client(|_, _| false);
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.refused, [1, 3]);
    assert!(report.failed.is_empty());
    assert_eq!(report.published, 3);
    assert_eq!(seen.lock().unwrap().concat(), ["0", "2", "4"]);
}

#[tokio::test]
async fn partition_keys_must_have_1_to_256_characters() {
    let publisher = Publisher::new(client(|_, _| false).0, "out", NO_BACKOFF);
    for (key, accepted) in [
        (String::new(), false),
        ("k".into(), true),
        ("é".repeat(256), true),
        ("k".repeat(256), true),
        ("k".repeat(257), false),
    ] {
        assert_eq!(
            publisher.accepts(b"x", &key),
            accepted,
            "{} chars",
            key.chars().count()
        );
    }
    // A stream of larger records takes larger entries.
    let publisher = publisher.with_max_record_bytes(10 * DEFAULT_MAX_RECORD_BYTES);
    assert!(publisher.accepts(&vec![b'x'; 6 * DEFAULT_MAX_RECORD_BYTES], "k"));
    assert!(!publisher.accepts(&vec![b'x'; 10 * DEFAULT_MAX_RECORD_BYTES], "k"));
}

#[tokio::test]
async fn no_resend_starts_past_the_deadline() {
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let (client, seen) = client(|_, _| true);
    let slow = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
    };
    let started = Instant::now();
    let report = Publisher::new(client, "out", slow)
        .publish(&events(&data), started + Duration::from_millis(300))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.failed, [0, 1, 2]);
    assert!(seen.lock().unwrap().len() < 10);
}

#[tokio::test]
async fn a_call_the_service_answers_with_an_error_is_sent_once_per_attempt_not_again_by_the_sdk() {
    use aws_sdk_kinesis::config::http::HttpResponse;
    let rule = mock!(Client::put_records)
        .then_http_response(|| HttpResponse::new(500u16.try_into().unwrap(), "{}".into()));
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, &[&rule]);
    let data: Vec<Vec<u8>> = vec![b"x".to_vec()];
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.failed, [0]);
    assert_eq!(report.calls, NO_BACKOFF.max_attempts as usize);
    assert_eq!(
        rule.num_calls(),
        report.calls,
        "HTTP requests = calls counted"
    );
}

#[tokio::test]
async fn entries_an_answer_leaves_out_are_failed_with_a_reason() {
    let rule = mock!(Client::put_records).then_output(|| {
        PutRecordsOutput::builder()
            .set_records(Some(Vec::new()))
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, &[&rule]);
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(
        (report.published, report.failed.clone()),
        (0, vec![0, 1, 2])
    );
    assert_eq!(
        report.last_error.as_deref(),
        Some("the answer has 0 results for 3 entries")
    );
}
