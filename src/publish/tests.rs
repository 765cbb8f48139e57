use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
#[path = "../../tests/common/in_process.rs"]
mod in_process;
use in_process::{answer, answering, connection_reset, error_answer, kinesis};

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

/// Partition keys of every `PutRecords` request the server received, call by call.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A client whose `PutRecords` fails the entries whose partition key `fails` names (given how
/// many times that key was sent before) and accepts the rest.
fn client(fails: impl Fn(&str, usize) -> bool + Send + Sync + 'static) -> (Client, Seen) {
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let client = kinesis(move |entries| {
        let keys: Vec<String> = entries
            .into_iter()
            .map(|entry| entry.partition_key)
            .collect();
        let mut seen = recorder.lock().unwrap();
        let results: Vec<Option<&str>> = keys
            .iter()
            .map(|key| {
                let earlier = seen.iter().flatten().filter(|k| *k == key).count();
                fails(key, earlier).then_some(THROUGHPUT_EXCEEDED)
            })
            .collect();
        seen.push(keys);
        answer(&results)
    });
    (client, seen)
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
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let client = answering(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
        Err(connection_reset())
    });
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.published, 0);
    assert_eq!(report.failed, [0, 1, 2]);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        NO_BACKOFF.max_attempts as usize
    );
}

/// The sizes of the calls a queue of `events` makes when every call is accepted at once.
fn call_sizes(events: &[Outgoing<'_>], max_record_bytes: usize) -> Vec<usize> {
    let mut queue = Queue::new(events, true, |_| true);
    let max_bytes = MAX_BYTES_PER_CALL.max(max_record_bytes);
    let mut sizes = Vec::new();
    loop {
        let (call, _) = queue.next_call(Instant::now(), MAX_RECORDS_PER_CALL, max_bytes);
        if call.is_empty() {
            return sizes;
        }
        sizes.push(call.len());
        for index in call {
            queue.accepted(index);
        }
    }
}

#[test]
fn calls_respect_the_byte_limit() {
    let big = vec![b'x'; 1024 * 1024 - 10];
    let data: Vec<Vec<u8>> = (0..11).map(|_| big.clone()).collect();
    assert_eq!(
        call_sizes(&events(&data), DEFAULT_MAX_RECORD_BYTES),
        [5, 5, 1]
    );
}

#[test]
fn calls_respect_the_record_limit() {
    let data: Vec<Vec<u8>> = (0..1201).map(|_| b"x".to_vec()).collect();
    assert_eq!(
        call_sizes(&events(&data), DEFAULT_MAX_RECORD_BYTES),
        [500, 500, 201]
    );
}

#[test]
fn a_call_holds_exactly_5_mib_and_not_a_byte_more() {
    // Partition keys "0".."6" are one byte: each entry is exactly 1 MiB.
    let mib = vec![b'x'; DEFAULT_MAX_RECORD_BYTES - 1];
    let mut data: Vec<Vec<u8>> = (0..5).map(|_| mib.clone()).collect();
    data.push(Vec::new());
    let sizes = |data: &[Vec<u8>]| call_sizes(&events(data), DEFAULT_MAX_RECORD_BYTES);
    // 5 MiB, then the sixth entry's one byte of key in a call of its own.
    assert_eq!(sizes(&data), [5, 1]);
    // Four entries and one byte short of a fifth: 5 MiB less one byte with the sixth's key.
    data[4].pop();
    assert_eq!(sizes(&data), [6]);
    // Streams of larger records take a call of one record of their size.
    let big = vec![b'x'; 8 * DEFAULT_MAX_RECORD_BYTES];
    let data = vec![big.clone(), big];
    assert_eq!(
        call_sizes(&events(&data), 10 * DEFAULT_MAX_RECORD_BYTES),
        [1, 1]
    );
}

#[test]
fn the_pause_after_throttling_is_the_base_delay_give_or_take_half() {
    let policy = RetryPolicy::default();
    for _ in 0..100 {
        let pause = policy.pause();
        assert!(pause >= policy.base_delay / 2 && pause <= policy.base_delay * 3 / 2);
    }
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
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let client = answering(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
        Ok(HttpResponse::new(500u16.try_into().unwrap(), "{}".into()))
    });
    let data: Vec<Vec<u8>> = vec![b"x".to_vec()];
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!(report.failed, [0]);
    assert_eq!(report.calls, NO_BACKOFF.max_attempts as usize);
    assert_eq!(
        requests.load(Ordering::Relaxed),
        report.calls,
        "HTTP requests = calls counted"
    );
}

#[tokio::test]
async fn entries_an_answer_leaves_out_are_failed_with_a_reason() {
    // A successful answer with no results at all.
    let client = answering(|_| {
        let body = r#"{"FailedRecordCount":0,"Records":[]}"#;
        Ok(HttpResponse::new(200u16.try_into().unwrap(), body.into()))
    });
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

/// Events `0..keys.len()` with the partition keys `keys`.
fn keyed<'a>(data: &'a [u8], keys: &[&'a str]) -> Vec<Outgoing<'a>> {
    keys.iter()
        .enumerate()
        .map(|(record, key)| Outgoing {
            record,
            data,
            partition_key: Cow::Borrowed(key),
        })
        .collect()
}

#[tokio::test]
async fn a_key_has_one_entry_per_call_and_its_events_go_in_order() {
    let keys = ["k", "a", "k", "b", "k"];
    let (client, seen) = client(|_, _| false);
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&keyed(b"x", &keys), later())
        .await;
    assert_eq!(report.published, 5);
    assert_eq!(
        *seen.lock().unwrap(),
        [vec!["k", "a", "b"], vec!["k"], vec!["k"]]
    );
}

#[tokio::test]
async fn an_unordered_publisher_sends_one_key_s_events_together() {
    let keys = ["k"; 5];
    let (client, seen) = client(|_, _| false);
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .unordered()
        .publish(&keyed(b"x", &keys), later())
        .await;
    assert_eq!(report.published, 5);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn no_event_is_sent_after_an_earlier_one_of_its_key_that_is_never_accepted() {
    // The first "k" always fails: the later ones are never sent, other keys are.
    let keys = ["k", "a", "k", "b", "k"];
    let (client, seen) = client(|key, _| key == "k");
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&keyed(b"x", &keys), later())
        .await;
    assert_eq!(report.published, 2);
    assert_eq!(report.failed, [0, 2, 4]);
    let sent_k = seen
        .lock()
        .unwrap()
        .concat()
        .iter()
        .filter(|k| *k == "k")
        .count();
    assert_eq!(sent_k, NO_BACKOFF.max_attempts as usize);
}

/// A failure pattern that depends on the key, its earlier sends and a seed.
fn flaky(seed: u64) -> impl Fn(&str, usize) -> bool + Send + Sync + 'static {
    move |key, earlier| {
        let mut hash = seed ^ (earlier as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for byte in key.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        hash.is_multiple_of(3)
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever fails, each key's events are accepted in the order given, a key never has two
    /// entries in one call, and every event is either accepted once or reported as failed,
    /// together with every later event of its key.
    #[test]
    fn each_key_s_events_are_accepted_in_order(
        keys in proptest::collection::vec(0u8..6, 1..80),
        seed in proptest::prelude::any::<u64>(),
        concurrency in 1usize..5,
    ) {
        let keys: Vec<String> = keys.iter().map(|key| format!("key{key}")).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let events = keyed(b"x", &key_refs);
        let fails = flaky(seed);
        let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = accepted.clone();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let client = kinesis(move |entries| {
        let keys: Vec<String> = entries.into_iter().map(|entry| entry.partition_key).collect();
            let mut seen = seen.lock().unwrap();
            let mut log = log.lock().unwrap();
            let mut in_call = std::collections::HashSet::new();
            let results: Vec<Option<&str>> = keys
                .into_iter()
                .map(|key| {
                    assert!(in_call.insert(key.clone()), "{key} twice in one call");
                    let earlier = seen.iter().filter(|k| **k == key).count();
                    seen.push(key.clone());
                    if fails(&key, earlier) {
                        Some(THROUGHPUT_EXCEEDED)
                    } else {
                        log.push(key);
                        None
                    }
                })
                .collect();
            answer(&results)
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let report = runtime.block_on(
            Publisher::new(client, "out", NO_BACKOFF)
                .with_concurrency(concurrency)
                .publish(&events, later()),
        );
        // Which of each key's events were accepted: a prefix of them, in order.
        let accepted = accepted.lock().unwrap();
        let mut published = vec![false; events.len()];
        for key in accepted.iter() {
            let next = (0..events.len())
                .find(|&i| keys[i] == *key && !published[i])
                .unwrap();
            proptest::prop_assert!(
                (0..next).all(|i| keys[i] != *key || published[i]),
                "{key} overtook an earlier event"
            );
            published[next] = true;
        }
        let failed: Vec<usize> = (0..events.len()).filter(|&i| !published[i]).collect();
        proptest::prop_assert_eq!(&report.failed, &failed);
        proptest::prop_assert_eq!(report.published, accepted.len());
        for &i in &failed {
            proptest::prop_assert!((i..events.len()).all(|j| keys[j] != keys[i] || !published[j]));
        }
    }
}

#[tokio::test]
async fn a_stream_that_does_not_exist_is_not_called_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let client = answering(move |_| {
        counted.fetch_add(1, Ordering::Relaxed);
        let body = r#"{"__type":"ResourceNotFoundException","message":"Stream out not found"}"#;
        Ok(HttpResponse::new(400u16.try_into().unwrap(), body.into()))
    });
    let data: Vec<Vec<u8>> = (0..1200).map(|_| b"x".to_vec()).collect();
    let report = Publisher::new(client, "out", RetryPolicy::default())
        .with_concurrency(1)
        .publish(&events(&data), later())
        .await;
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(report.failed.len(), 1200);
    assert!(report.last_error.unwrap().contains("not found"));
}

#[tokio::test]
async fn an_entry_the_stream_finds_invalid_is_found_alone_and_refused() {
    let keys = ["a", "bad", "c", "d"];
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let recorder = calls.clone();
    let client = kinesis(move |entries| {
        let keys: Vec<String> = entries
            .into_iter()
            .map(|entry| entry.partition_key)
            .collect();
        let invalid = keys.iter().any(|key| key == "bad");
        let count = keys.len();
        recorder.lock().unwrap().push(keys);
        match invalid {
            true => error_answer(400, "ValidationException"),
            false => answer(&vec![None; count]),
        }
    });
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .with_concurrency(1)
        .publish(&keyed(b"x", &keys), later())
        .await;
    assert_eq!(report.published, 3);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.invalid, [(1, "ValidationException".to_owned())]);
    let calls = calls.lock().unwrap();
    assert_eq!(calls[0].len(), 4);
    assert!(calls[1..].iter().all(|call| call.len() == 1), "{calls:?}");
}

#[test]
fn throttling_halves_what_is_in_flight_once_per_round_and_clean_calls_restore_it() {
    let mut window = Window::new(16);
    assert_eq!(
        (window.calls, window.entries),
        (16, 16 * MAX_RECORDS_PER_CALL)
    );
    let epoch = window.epoch;
    // Sixteen calls of one round come back throttled: one halving.
    for _ in 0..16 {
        window.throttled(epoch, 4000);
    }
    assert_eq!((window.calls, window.entries), (8, 6000));
    // A call of which the stream took 300: no more than 450 in flight.
    window.throttled(window.epoch, 300);
    assert_eq!((window.calls, window.entries), (4, 450));
    for _ in 0..10 {
        window.throttled(window.epoch, 0);
    }
    assert_eq!((window.calls, window.entries), (1, MIN_ENTRIES_IN_FLIGHT));
    // The next call holds what is left of the entries allowed in flight.
    assert_eq!(window.room(0), MIN_ENTRIES_IN_FLIGHT);
    assert_eq!(window.room(MIN_ENTRIES_IN_FLIGHT), 0);
    // Clean calls: half their entries more each, one more call after as many as the limit.
    window.clean(50);
    assert_eq!((window.calls, window.entries), (2, 75));
    window.clean(75);
    assert_eq!((window.calls, window.entries), (2, 113));
    window.clean(113);
    assert_eq!(window.calls, 3);
    for _ in 0..1000 {
        window.clean(MAX_RECORDS_PER_CALL);
    }
    assert_eq!(
        (window.calls, window.entries),
        (16, 16 * MAX_RECORDS_PER_CALL)
    );
    assert_eq!(window.room(0), MAX_RECORDS_PER_CALL);
}

#[tokio::test]
async fn throttled_entries_are_resent_until_the_deadline_by_default() {
    // The default sets no limit on sends: the deadline ends them.
    assert_eq!(RetryPolicy::default().max_attempts, u32::MAX);
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let (client, seen) = client(|_, _| true);
    let started = Instant::now();
    let report = Publisher::new(client, "out", policy)
        .publish(&events(&data), started + Duration::from_secs(1))
        .await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1100), "{elapsed:?}");
    assert_eq!(report.failed, [0, 1, 2]);
    // Pauses of at most 75 ms (50 ms, give or take half) within 1 s: at least 13 sends.
    let sends = seen.lock().unwrap().len();
    assert!(sends >= 13, "{sends}");
    assert_eq!(report.throttled, report.calls * 3);
    assert!(
        report.last_error.unwrap().starts_with(DEADLINE_REACHED),
        "the log says why the entries are left"
    );
}

#[tokio::test]
async fn a_successful_answer_that_does_not_read_leaves_its_entries_unanswered_and_resent() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let client =
        kinesis(
            move |keys| match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => HttpResponse::new(200u16.try_into().unwrap(), r#"{"Records":[{"#.into()),
                _ => answer(&vec![None; keys.len()]),
            },
        );
    let data: Vec<Vec<u8>> = (0..3).map(|_| b"x".to_vec()).collect();
    let report = Publisher::new(client, "out", NO_BACKOFF)
        .publish(&events(&data), later())
        .await;
    assert_eq!((report.published, report.calls, report.resent), (3, 2, 3));
    assert_eq!(report.unanswered, 3);
    assert!(
        report
            .last_error
            .as_deref()
            .unwrap()
            .contains("does not read")
    );
}
