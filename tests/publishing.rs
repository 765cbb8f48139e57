//! Publishing against a local Kinesis server over HTTP: calls in flight together, fewer of them
//! under throttling, and every entry published exactly once or reported.

mod common;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bike_prediction::publish::{Outgoing, Publisher, RetryPolicy};
use tokio::time::Instant;

fn events(data: &[Vec<u8>]) -> Vec<Outgoing<'_>> {
    data.iter()
        .enumerate()
        .map(|(record, data)| Outgoing {
            record,
            data,
            partition_key: Cow::Owned(format!("pred-{record}")),
        })
        .collect()
}

fn payloads(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!(r#"{{"pred_id":{i},"prediction":{{"cnt":1.5}}}}"#).into_bytes())
        .collect()
}

#[tokio::test]
async fn calls_go_out_together_up_to_the_concurrency() {
    let (client, stats) = common::fake_kinesis(Duration::from_millis(50), None).await;
    let data = payloads(10_000);
    for concurrency in [1, 4, 16] {
        stats.max_in_flight.store(0, Ordering::SeqCst);
        let report = Publisher::new(client.clone(), "out", RetryPolicy::default())
            .with_concurrency(concurrency)
            .publish(&events(&data), Instant::now() + Duration::from_secs(60))
            .await;
        assert_eq!(report.published, 10_000);
        assert_eq!(report.calls, 20);
        assert!(report.failed.is_empty());
        // 20 calls of 50 ms each: the calls overlap as far as the concurrency allows.
        assert_eq!(
            stats.max_in_flight.load(Ordering::SeqCst),
            concurrency,
            "concurrency {concurrency}"
        );
    }
    assert_eq!(stats.accepted.load(Ordering::SeqCst), 30_000);
}

#[tokio::test]
async fn a_throttling_stream_gets_fewer_calls_at_once_and_every_entry_once() {
    // One shard's worth: 1,000 records a second.
    let (client, stats) = common::fake_kinesis(Duration::from_millis(5), Some(1000.0)).await;
    let data = payloads(4000);
    let report = Publisher::new(client, "out", RetryPolicy::default())
        .with_concurrency(16)
        .publish(&events(&data), Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(report.published, 4000, "{report:?}");
    assert!(report.failed.is_empty());
    assert!(report.throttled > 0);
    assert_eq!(report.throttled, stats.throttled.load(Ordering::SeqCst));
    assert!(report.lowest_concurrency < 16, "{report:?}");
    // Each entry accepted exactly once.
    let mut keys = stats.keys.lock().unwrap().clone();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4000);
    assert_eq!(stats.accepted.load(Ordering::SeqCst), 4000);
}

#[tokio::test]
async fn a_stream_throttled_past_the_deadline_leaves_the_rest_reported() {
    // 1,000 records a second and a 2.5 s deadline for 10,000 records: some 3,500 go out.
    let (client, stats) = common::fake_kinesis(Duration::from_millis(5), Some(1000.0)).await;
    let data = payloads(10_000);
    let started = Instant::now();
    let report = Publisher::new(client, "out", RetryPolicy::default())
        .publish(&events(&data), started + Duration::from_millis(2500))
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let accepted = stats.accepted.load(Ordering::SeqCst);
    assert_eq!(report.published + report.failed.len(), 10_000);
    assert!(accepted > 1000 && accepted < 10_000, "{accepted}");
    // The calls the deadline cut off may have been taken all the same: the stream has every
    // entry reported published, and beyond them at most the unanswered ones.
    assert!(report.published <= accepted, "{report:?}");
    assert!(
        accepted - report.published <= report.unanswered,
        "{report:?}"
    );
    let keys: std::collections::HashSet<String> =
        stats.keys.lock().unwrap().iter().cloned().collect();
    assert_eq!(keys.len(), accepted, "no entry accepted twice");
    let reported_yet_accepted = report
        .failed
        .iter()
        .filter(|record| keys.contains(&format!("pred-{record}")))
        .count();
    assert_eq!(reported_yet_accepted, accepted - report.published);
    assert!(report.last_error.as_deref().unwrap().contains("deadline"));
}

#[tokio::test]
async fn entries_of_calls_never_answered_are_reported_and_counted_unanswered() {
    let client = common::hung_kinesis().await;
    let data = payloads(1200);
    let started = Instant::now();
    let report = Publisher::new(client, "out", RetryPolicy::default())
        .with_concurrency(2)
        .publish(&events(&data), started + Duration::from_millis(1500))
        .await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(report.published, 0);
    assert_eq!(report.failed.len(), 1200);
    // Two calls of 500 went out and were never answered; the last 200 were never sent
    // (the window was full), or sent and never answered as well.
    assert!(report.unanswered >= 1000, "{report:?}");
    assert!(report.unanswered <= 500 * report.calls, "{report:?}");
}
