//! Publishing events (predictions, dead letters) to a Kinesis stream with `PutRecords`.
//!
//! Events go out in calls of at most [`MAX_RECORDS_PER_CALL`] records and
//! [`MAX_BYTES_PER_CALL`] bytes. An entry the stream can never accept (data and partition key
//! over the stream's record size, or a partition key that is not 1 to 256 characters) is not
//! sent at all, so that it cannot fail the other entries of its call: it is returned as
//! refused. `PutRecords` succeeds or fails per entry, so every entry's result is checked and
//! only the failed ones (throttling, internal failure) are sent again, with exponential backoff
//! and full jitter, up to [`RetryPolicy::max_attempts`] times, and never past the deadline the
//! caller gives. Entries that still fail are returned to the caller, which reports their input
//! records to Lambda for re-delivery: nothing is dropped silently, and delivery is
//! at-least-once.

use std::borrow::Cow;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::time::Instant;

use crate::event::is_partition_key;

/// Most records one `PutRecords` call accepts.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Most bytes (data plus partition keys) one `PutRecords` call accepts: 5 MiB, or one record
/// of a stream whose records may be larger.
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// Largest record (data plus partition key) of a stream that does not say otherwise: 1 MiB,
/// Kinesis's default `MaxRecordSizeInKiB`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The shortest wait for one `PutRecords` attempt's answer. An attempt may wait for up to half
/// the time left before the deadline, so that an endpoint that is slow but working gets its
/// calls through, while one that never answers is given up in time for another attempt; the
/// SDK's attempts of one call together wait no longer than the time left.
pub const PUT_RECORDS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the SDK's attempts of one call together outside of publishing (the cold
/// start's `DescribeStreamSummary`).
pub const PUT_RECORDS_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// The timeouts for the Kinesis client that publishes, for calls without a deadline.
pub fn timeouts() -> aws_sdk_kinesis::config::timeout::TimeoutConfig {
    aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(PUT_RECORDS_ATTEMPT_TIMEOUT)
        .operation_timeout(PUT_RECORDS_OPERATION_TIMEOUT)
        .build()
}

/// The timeouts of one `PutRecords` call made with `left` until the deadline.
fn call_timeouts(left: Duration) -> aws_sdk_kinesis::config::timeout::TimeoutConfig {
    aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(PUT_RECORDS_ATTEMPT_TIMEOUT.max(left / 2).min(left))
        .operation_timeout(left)
        .build()
}

/// How failed entries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends of one entry, the first included.
    pub max_attempts: u32,
    /// Backoff before the first resend; doubled for each later one.
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five sends with backoffs of up to 0.1, 0.2, 0.4 and 0.8 s: at most 1.5 s of waiting.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The backoff before resend number `retry` (1 for the first resend): a uniformly random
    /// duration up to `min(max_delay, base_delay * 2^(retry - 1))` ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// One event to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The position in the event of the record the entry is for.
    pub record: usize,
    /// The event's bytes.
    pub data: &'a [u8],
    /// The Kinesis partition key.
    pub partition_key: Cow<'a, str>,
}

/// What happened to one publish.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Events the stream accepted.
    pub published: usize,
    /// `PutRecords` calls made.
    pub calls: usize,
    /// Entries sent again after a failure.
    pub resent: usize,
    /// The records (positions in the event, [`Outgoing::record`]) whose entries could not be
    /// published, in the order given.
    pub failed: Vec<usize>,
    /// The records whose entries the stream can never accept, so were not sent.
    pub refused: Vec<usize>,
    /// The last error seen, for the log.
    pub last_error: Option<String>,
}

/// Publishes events to one Kinesis stream.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    stream: String,
    retry: RetryPolicy,
    max_record_bytes: usize,
}

impl Publisher {
    /// A publisher to `stream`, whose records may have up to [`DEFAULT_MAX_RECORD_BYTES`].
    pub fn new(client: Client, stream: impl Into<String>, retry: RetryPolicy) -> Self {
        Self {
            client,
            stream: stream.into(),
            retry,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }

    /// The same publisher, for a stream whose records may have up to `bytes` (data plus
    /// partition key; the stream's `MaxRecordSizeInKiB`).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// The stream events go to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Largest entry (data plus partition key) the stream accepts.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Whether the stream can ever accept an entry of `data` under `partition_key`.
    pub fn accepts(&self, data: &[u8], partition_key: &str) -> bool {
        is_partition_key(partition_key) && data.len() + partition_key.len() <= self.max_record_bytes
    }

    /// Publishes `events`, resending failed entries until they are accepted, the retry policy
    /// is spent or `deadline` comes; returns which could not be published. No call is started,
    /// and no call is waited for, past `deadline`.
    pub async fn publish(&self, events: &[Outgoing<'_>], deadline: Instant) -> PublishReport {
        let mut report = PublishReport::default();
        let (mut pending, refused): (Vec<usize>, Vec<usize>) =
            (0..events.len()).partition(|&index| {
                events
                    .get(index)
                    .is_some_and(|event| self.accepts(event.data, &event.partition_key))
            });
        report.refused = records(events, &refused);
        for attempt in 1..=self.retry.max_attempts {
            if pending.is_empty() {
                break;
            }
            if attempt > 1 {
                let backoff = self.retry.backoff(attempt - 1);
                if Instant::now() + backoff >= deadline {
                    break;
                }
                report.resent += pending.len();
                tokio::time::sleep(backoff).await;
            }
            let mut failed = Vec::new();
            for call in calls(events, &pending, self.max_record_bytes) {
                if Instant::now() >= deadline {
                    report.last_error = Some(DEADLINE_REACHED.into());
                    failed.extend_from_slice(call);
                    continue;
                }
                report.calls += 1;
                self.put_records(events, call, deadline, &mut report, &mut failed)
                    .await;
            }
            pending = failed;
        }
        report.failed = records(events, &pending);
        report
    }

    /// Sends one `PutRecords` call of the events at `indexes`, waiting for its answer until
    /// `deadline` at most; pushes the failed ones to `failed`.
    async fn put_records(
        &self,
        events: &[Outgoing<'_>],
        indexes: &[usize],
        deadline: Instant,
        report: &mut PublishReport,
        failed: &mut Vec<usize>,
    ) {
        let entries = indexes
            .iter()
            .filter_map(|&index| events.get(index))
            .map(|event| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(event.data))
                    .partition_key(event.partition_key.as_ref())
                    .build()
            });
        let entries: Result<Vec<_>, _> = entries.collect();
        let result = match entries {
            Ok(entries) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Failed calls are resent here, within the deadline and counted; the SDK's own
                // retries would resend them again, uncounted.
                let timeouts = aws_sdk_kinesis::config::Builder::default()
                    .timeout_config(call_timeouts(left))
                    .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled());
                let call = self
                    .client
                    .put_records()
                    .stream_name(&self.stream)
                    .set_records(Some(entries))
                    .customize()
                    .config_override(timeouts)
                    .send();
                match tokio::time::timeout_at(deadline, call).await {
                    Ok(answer) => answer.map_err(|error| {
                        aws_sdk_kinesis::error::DisplayErrorContext(error).to_string()
                    }),
                    Err(_) => Err(DEADLINE_REACHED.into()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        match result {
            Ok(output) => {
                let results = output.records();
                for (position, &index) in indexes.iter().enumerate() {
                    match results.get(position) {
                        Some(entry) if entry.error_code().is_none() => report.published += 1,
                        entry => {
                            // A missing result entry counts as a failure: it was not confirmed.
                            report.last_error = Some(match entry {
                                Some(entry) => format!(
                                    "{}: {}",
                                    entry.error_code().unwrap_or_default(),
                                    entry.error_message().unwrap_or_default()
                                ),
                                None => format!(
                                    "the answer has {} results for {} entries",
                                    results.len(),
                                    indexes.len()
                                ),
                            });
                            failed.push(index);
                        }
                    }
                }
            }
            Err(error) => {
                report.last_error = Some(error);
                failed.extend_from_slice(indexes);
            }
        }
    }
}

/// Why entries were left unsent or unconfirmed.
const DEADLINE_REACHED: &str = "the publishing deadline was reached";

/// The records of the events at `indexes`.
fn records(events: &[Outgoing<'_>], indexes: &[usize]) -> Vec<usize> {
    indexes
        .iter()
        .filter_map(|&index| events.get(index))
        .map(|event| event.record)
        .collect()
}

/// Splits `pending` (indexes into `events`) into calls within the record and byte limits:
/// [`MAX_BYTES_PER_CALL`], or one record of `max_record_bytes` if that is more.
fn calls<'p>(
    events: &[Outgoing<'_>],
    pending: &'p [usize],
    max_record_bytes: usize,
) -> Vec<&'p [usize]> {
    let max_bytes = MAX_BYTES_PER_CALL.max(max_record_bytes);
    let mut calls = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (position, &index) in pending.iter().enumerate() {
        let size = events
            .get(index)
            .map_or(0, |event| event.data.len() + event.partition_key.len());
        let count = position - start;
        if count > 0 && (count == MAX_RECORDS_PER_CALL || bytes + size > max_bytes) {
            calls.extend(pending.get(start..position));
            start = position;
            bytes = 0;
        }
        bytes += size;
    }
    if start < pending.len() {
        calls.extend(pending.get(start..));
    }
    calls
}

#[cfg(test)]
mod tests;
