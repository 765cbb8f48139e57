//! Publishing events (predictions, dead letters) to a Kinesis stream with `PutRecords`.
//!
//! Events go out in calls of at most [`MAX_RECORDS_PER_CALL`] records and
//! [`MAX_BYTES_PER_CALL`] bytes, up to [`Publisher::concurrency`] calls at a time. An entry the
//! stream can never accept (data and partition key over the stream's record size, or a
//! partition key that is not 1 to 256 characters) is not sent at all, so that it cannot fail
//! the other entries of its call: it is returned as refused.
//!
//! `PutRecords` succeeds or fails per entry, so every entry's result is checked and only the
//! failed ones (throttling, internal failure) are sent again, after a backoff with full
//! jitter, for as long as the deadline the caller gives allows, and no entry goes ahead of an
//! earlier one waiting out its backoff. A stream that throttles also gets less at a time: the
//! calls in flight are halved when a call comes back throttled, the entries in them brought
//! down to one and a half times what the stream took of it, and both grow again while calls
//! come back clean
//! (`Window`). Entries still unpublished at the deadline are
//! returned to the caller, which reports their input records to Lambda for re-delivery:
//! nothing is dropped silently, and delivery is at-least-once.
//!
//! # Order
//! For each partition key, events reach the stream in the order given: an event is sent only
//! once every earlier event with the same key has been accepted, so no event overtakes an
//! earlier one of its key that failed. A key therefore never has two entries in flight, in one
//! call or in two. Events of different keys have no order between them (Kinesis orders only
//! within a shard). An event whose earlier event of the same key is never accepted is not
//! sent either, and both are returned as unpublished. A publisher made [`Publisher::unordered`]
//! (the dead letters') keeps no order, so that many records of one key are not sent one call
//! at a time.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::describe_stream_summary::DescribeStreamSummaryError;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use tokio::task::JoinSet;
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
/// Most `PutRecords` calls in flight at once to one stream when `PUBLISH_CONCURRENCY` is not
/// set (docs/PERFORMANCE.md has the measurements it is chosen from).
pub const DEFAULT_PUBLISH_CONCURRENCY: usize = 32;
/// Largest `PUBLISH_CONCURRENCY` taken.
pub const MAX_PUBLISH_CONCURRENCY: usize = 256;

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

/// How failed entries are sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most sends of one entry, the first included. The default has no such limit: the
    /// deadline ends resending.
    pub max_attempts: u32,
    /// Backoff before the first resend after a failure, doubled for each later one; the
    /// pause before resending throttled entries ([`Self::pause`]).
    pub base_delay: Duration,
    /// Longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Resends until the deadline, with backoffs of up to 0.1, 0.2, 0.4, 0.8 and then 1 s: a
    /// throttled shard's write limits are per second, so a longer wait gains nothing.
    fn default() -> Self {
        Self {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
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

    /// The pause before resending throttled entries: `base_delay`, give or take half of it.
    /// Not exponential: a shard's write limits refill continuously, and the calls in flight
    /// are what adapts to them.
    pub fn pause(&self) -> Duration {
        self.base_delay.mul_f64(0.5 + fastrand::f64())
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

impl Outgoing<'_> {
    /// What the entry counts for against Kinesis's size limits: data plus partition key.
    fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
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
    /// Entries the stream answered with `ProvisionedThroughputExceededException`, and entries
    /// of calls it answered with a throttling error.
    pub throttled: usize,
    /// The fewest calls in flight the publish was brought down to by throttling.
    pub lowest_concurrency: usize,
    /// Entries of calls that got no answer (cut off by the deadline or a timeout, the
    /// connection lost, the answer unreadable). The stream may have taken them all the same,
    /// so those of them left in [`Self::failed`] may already be on the stream: re-delivered,
    /// they are published twice.
    pub unanswered: usize,
    /// Entries accepted by another shard than the one they were meant for
    /// ([`Publisher::publish_to_shards`]): the stream's shards have changed.
    pub misrouted: usize,
    /// The records (positions in the event, [`Outgoing::record`]) whose entries could not be
    /// published, in the order given.
    pub failed: Vec<usize>,
    /// The records whose entries the stream can never accept, so were not sent, in the order
    /// given.
    pub refused: Vec<usize>,
    /// The records whose entries the stream refused as invalid when sent alone, with the
    /// error code it answered, in the order given.
    pub invalid: Vec<(usize, String)>,
    /// The last error seen, for the log.
    pub last_error: Option<String>,
}

impl PublishReport {
    /// Adds what another publish of other events did to this one's report: counts summed,
    /// records merged in order, the other's last error if it had one.
    pub fn absorb(&mut self, other: PublishReport) {
        // Of a publish that made no calls, the lowest concurrency means nothing.
        self.lowest_concurrency = match (self.calls, other.calls) {
            (_, 0) => self.lowest_concurrency,
            (0, _) => other.lowest_concurrency,
            _ => self.lowest_concurrency.min(other.lowest_concurrency),
        };
        self.published += other.published;
        self.calls += other.calls;
        self.resent += other.resent;
        self.throttled += other.throttled;
        self.unanswered += other.unanswered;
        self.misrouted += other.misrouted;
        self.failed.extend(other.failed);
        self.failed.sort_unstable();
        self.refused.extend(other.refused);
        self.refused.sort_unstable();
        self.invalid.extend(other.invalid);
        self.invalid.sort_unstable();
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
    }
}

/// Publishes events to one Kinesis stream.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    stream: String,
    retry: RetryPolicy,
    /// The stream's largest record, as last read ([`Self::refresh_record_size`]).
    max_record_bytes: Arc<AtomicUsize>,
    /// An entry was answered as invalid: the stream's record size may have changed since it
    /// was read, and is read again before the next publish.
    size_stale: Arc<AtomicBool>,
    concurrency: usize,
    ordered: bool,
}

/// Reads the largest record (data plus partition key) `stream` accepts, in bytes, with
/// `DescribeStreamSummary`: its `MaxRecordSizeInKiB`, or 1 MiB if it gives none.
pub async fn read_record_size(
    client: &Client,
    stream: &str,
) -> Result<usize, SdkError<DescribeStreamSummaryError, HttpResponse>> {
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await?;
    let kib = summary
        .stream_description_summary()
        .and_then(|summary| summary.max_record_size_in_kib())
        .and_then(|kib| usize::try_from(kib).ok())
        .filter(|&kib| kib > 0);
    Ok(kib.map_or(DEFAULT_MAX_RECORD_BYTES, |kib| kib * 1024))
}

impl Publisher {
    /// A publisher to `stream`, whose records may have up to [`DEFAULT_MAX_RECORD_BYTES`],
    /// with up to [`DEFAULT_PUBLISH_CONCURRENCY`] calls in flight.
    pub fn new(client: Client, stream: impl Into<String>, retry: RetryPolicy) -> Self {
        Self {
            client,
            stream: stream.into(),
            retry,
            max_record_bytes: Arc::new(AtomicUsize::new(DEFAULT_MAX_RECORD_BYTES)),
            size_stale: Arc::default(),
            concurrency: DEFAULT_PUBLISH_CONCURRENCY,
            ordered: true,
        }
    }

    /// The same publisher, for a stream whose records may have up to `bytes` (data plus
    /// partition key; the stream's `MaxRecordSizeInKiB`).
    pub fn with_max_record_bytes(self, bytes: usize) -> Self {
        self.max_record_bytes.store(bytes, Ordering::Relaxed);
        self
    }

    /// The same publisher, with up to `calls` calls in flight at once (at least one).
    pub fn with_concurrency(mut self, calls: usize) -> Self {
        self.concurrency = calls.max(1);
        self
    }

    /// The same publisher, keeping no order between the events of one partition key: they
    /// may share a call, or be in flight together.
    pub fn unordered(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// The stream events go to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Largest entry (data plus partition key) the stream accepts.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes.load(Ordering::Relaxed)
    }

    /// Reads the stream's record size again if an entry was answered as invalid since it was
    /// last read (`UpdateMaxRecordSize` may have changed it), within `deadline`. On failure
    /// the size known is kept, and read again next time.
    pub async fn refresh_record_size(&self, deadline: Instant) {
        if !self.size_stale.swap(false, Ordering::Relaxed) {
            return;
        }
        let read = tokio::time::timeout_at(deadline, read_record_size(&self.client, &self.stream));
        match read.await {
            Ok(Ok(bytes)) => {
                if bytes != self.max_record_bytes() {
                    tracing::info!(stream = %self.stream, bytes, "the stream's record size, read again");
                }
                self.max_record_bytes.store(bytes, Ordering::Relaxed);
            }
            failed => {
                let error = match failed {
                    Ok(Err(error)) => DisplayErrorContext(error).to_string(),
                    _ => DEADLINE_REACHED.into(),
                };
                tracing::warn!(stream = %self.stream, %error, "the stream's record size could not be read again");
                self.size_stale.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The Kinesis client it publishes with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Most calls in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Whether the stream can ever accept an entry of `data` under `partition_key`.
    pub fn accepts(&self, data: &[u8], partition_key: &str) -> bool {
        is_partition_key(partition_key)
            && data.len() + partition_key.len() <= self.max_record_bytes()
    }

    /// Publishes `events`, resending failed entries until they are accepted, the retry policy
    /// is spent or `deadline` comes; returns which could not be published. No call is started,
    /// and no call is waited for, past `deadline`.
    pub async fn publish(&self, events: &[Outgoing<'_>], deadline: Instant) -> PublishReport {
        self.publish_to_shards(events, &[], deadline).await
    }

    /// [`Self::publish`], counting in [`PublishReport::misrouted`] the events accepted by
    /// another shard than `shards` names for them (by position; events beyond its end are not
    /// checked).
    pub async fn publish_to_shards(
        &self,
        events: &[Outgoing<'_>],
        shards: &[&str],
        deadline: Instant,
    ) -> PublishReport {
        let mut report = PublishReport::default();
        let mut queue = Queue::new(events, self.ordered, |event| {
            self.accepts(event.data, &event.partition_key)
        });
        report.refused = queue
            .refused
            .iter()
            .map(|&index| record(events, index))
            .collect();
        let mut window = Window::new(self.concurrency);
        report.lowest_concurrency = window.calls;
        // Entries in the calls in flight.
        let mut in_flight_entries = 0;
        let max_bytes = MAX_BYTES_PER_CALL.max(self.max_record_bytes());
        let mut in_flight = JoinSet::new();
        loop {
            // Start calls while there is room, and find when the next backed-off entry is due.
            let mut wake = None;
            while in_flight.len() < window.calls && Instant::now() < deadline {
                let room = window.room(in_flight_entries);
                if room == 0 {
                    break;
                }
                let (call, due) = queue.next_call(Instant::now(), room, max_bytes);
                wake = due;
                if call.is_empty() {
                    break;
                }
                in_flight_entries += call.len();
                report.calls += 1;
                report.resent += call.iter().filter(|&&index| queue.sends(index) > 1).count();
                in_flight.spawn(self.send(events, call, window.epoch, deadline));
            }
            let wake = wake.filter(|due| *due < deadline);
            let answer = match (in_flight.is_empty(), wake) {
                (true, None) => break,
                (true, Some(due)) => {
                    tokio::time::sleep_until(due).await;
                    continue;
                }
                (false, Some(due)) if in_flight.len() < window.calls => {
                    tokio::select! {
                        answer = in_flight.join_next() => answer,
                        () = tokio::time::sleep_until(due) => continue,
                    }
                }
                (false, _) => in_flight.join_next().await,
            };
            let answer = match answer {
                Some(Ok(answer)) => answer,
                // A call that panicked takes the invocation down with it, as it would have
                // without a task of its own: its entries must not go unreported. (Nothing
                // cancels the tasks while the set is held here.)
                Some(Err(error)) => std::panic::resume_unwind(error.into_panic()),
                None => break,
            };
            in_flight_entries = in_flight_entries.saturating_sub(answer.indexes.len());
            self.settle(answer, shards, &mut queue, &mut window, &mut report);
            report.lowest_concurrency = report.lowest_concurrency.min(window.calls);
        }
        if queue.any_due() {
            // Entries were left only because the deadline came.
            report.last_error = Some(match report.last_error.take() {
                Some(error) => format!("{DEADLINE_REACHED}; the last error: {error}"),
                None => DEADLINE_REACHED.into(),
            });
        }
        report.failed = queue
            .unpublished()
            .map(|index| record(events, index))
            .collect();
        report.invalid = queue
            .invalid
            .into_iter()
            .map(|(index, answer)| (record(events, index), answer))
            .collect();
        report
    }

    /// One `PutRecords` call of the events at `indexes`, answered by `deadline` at most.
    fn send(
        &self,
        events: &[Outgoing<'_>],
        indexes: Vec<usize>,
        epoch: u64,
        deadline: Instant,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let wire = wire::Wire::new(wire::body(&self.stream, events, &indexes));
        let client = self.client.clone();
        let stream = self.stream.clone();
        async move {
            let left = deadline.saturating_duration_since(Instant::now());
            // Failed calls are sent again by the publisher, within the deadline and counted;
            // the SDK's own retries would send them again, uncounted.
            let config = aws_sdk_kinesis::config::Builder::default()
                .timeout_config(call_timeouts(left))
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled());
            let answer = wire.answer();
            // The entries are in the body `wire` sends; the SDK's input has none.
            let call = client
                .put_records()
                .stream_name(stream)
                .set_records(Some(Vec::new()))
                .customize()
                .config_override(config)
                .interceptor(wire)
                .send();
            let result = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(output)) => {
                    let body = answer.lock().ok().and_then(|mut body| body.take());
                    Ok(Answered { output, body })
                }
                Ok(Err(error)) => Err(CallError::from(error)),
                Err(_) => Err(CallError::Unanswered(DEADLINE_REACHED.into())),
            };
            Answer {
                indexes,
                epoch,
                result,
            }
        }
    }

    /// Takes in one call's answer: accepted entries are done, failed ones queued again.
    fn settle(
        &self,
        answer: Answer,
        shards: &[&str],
        queue: &mut Queue<'_>,
        window: &mut Window,
        report: &mut PublishReport,
    ) {
        let Answer {
            indexes,
            epoch,
            result,
        } = answer;
        // One wait for the whole call, so that its failed entries go out together again: an
        // exponential backoff after a failure, a short pause after throttling (the window
        // already sends the stream less; its limits refill continuously).
        let sends = indexes.iter().map(|&index| queue.sends(index)).max();
        let now = Instant::now();
        let due = now + self.retry.backoff(sends.unwrap_or(1));
        let throttled_due = now + self.retry.pause();
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                if matches!(error, CallError::Invalid { .. }) {
                    self.size_stale.store(true, Ordering::Relaxed);
                }
                match &error {
                    CallError::Throttled(_) => {
                        report.throttled += indexes.len();
                        window.throttled(epoch, 0);
                    }
                    CallError::Invalid { code, .. } if indexes.len() == 1 => {
                        for &index in &indexes {
                            queue.refuse(index, code);
                        }
                    }
                    CallError::Invalid { .. } => {
                        for &index in &indexes {
                            queue.send_alone(index);
                        }
                    }
                    CallError::Unanswered(_) => report.unanswered += indexes.len(),
                    CallError::Retry(_) => {}
                    CallError::Fatal(_) => queue.stop(),
                }
                let due = match error {
                    CallError::Throttled(_) => throttled_due,
                    _ => due,
                };
                report.last_error = Some(error.into_message());
                for &index in &indexes {
                    queue.retry(index, due, &self.retry);
                }
                return;
            }
        };
        let results = match output.results() {
            Ok(results) => results,
            Err(error) => {
                // The stream answered, but not in a way that says which entries it took.
                report.unanswered += indexes.len();
                report.last_error = Some(format!("the PutRecords answer does not read: {error}"));
                for &index in &indexes {
                    queue.retry(index, due, &self.retry);
                }
                return;
            }
        };
        let mut throttled = false;
        let mut accepted = 0;
        for (position, &index) in indexes.iter().enumerate() {
            match results.get(position) {
                Some(entry) if entry.accepted() => {
                    report.published += 1;
                    accepted += 1;
                    queue.accepted(index);
                    if shards.get(index).is_some_and(|shard| {
                        entry.shard_id.as_ref().map(wire::Text::as_str) != Some(*shard)
                    }) {
                        report.misrouted += 1;
                    }
                }
                entry => {
                    // A missing result entry counts as a failure: it was not confirmed.
                    let mut entry_due = due;
                    report.last_error = Some(match entry {
                        Some(entry) => {
                            let text = |text: &Option<wire::Text<'_>>| {
                                text.as_ref().map_or("", wire::Text::as_str).to_owned()
                            };
                            let code = text(&entry.error_code);
                            if code == THROUGHPUT_EXCEEDED {
                                report.throttled += 1;
                                throttled = true;
                                entry_due = throttled_due;
                            }
                            let message = text(&entry.error_message);
                            match entry.error_code {
                                Some(_) => format!("{code}: {message}"),
                                None => {
                                    "a result gives neither a sequence number nor an error".into()
                                }
                            }
                        }
                        None => format!(
                            "the answer has {} results for {} entries",
                            results.len(),
                            indexes.len()
                        ),
                    });
                    queue.retry(index, entry_due, &self.retry);
                }
            }
        }
        match throttled {
            true => window.throttled(epoch, accepted),
            false => window.clean(indexes.len()),
        }
    }
}

/// Why entries were left unsent or unconfirmed.
const DEADLINE_REACHED: &str = "the publishing deadline was reached";
/// The error code of an entry, or a call, over a shard's write limits.
const THROUGHPUT_EXCEEDED: &str = "ProvisionedThroughputExceededException";

/// The record of the event at `index`.
fn record(events: &[Outgoing<'_>], index: usize) -> usize {
    events.get(index).map_or(index, |event| event.record)
}

/// One call's answer, with the events (indexes) it was for.
struct Answer {
    indexes: Vec<usize>,
    /// The [`Window::epoch`] the call was started in.
    epoch: u64,
    result: Result<Answered, CallError>,
}

/// A successful call's output, and the body of its answer as it came.
struct Answered {
    output: PutRecordsOutput,
    body: Option<Vec<u8>>,
}

impl Answered {
    /// The entries' results, in the order of the call's entries: read from the answer's
    /// body, or from the SDK's output if the body was not kept (a client whose answers do
    /// not come over HTTP, as in tests).
    fn results<'a>(&'a self) -> Result<Vec<wire::EntryResult<'a>>, serde_json::Error> {
        match &self.body {
            Some(body) => wire::results(body),
            None => Ok(self
                .output
                .records()
                .iter()
                .map(|entry| {
                    let text = |text: Option<&'a str>| text.map(|text| wire::Text(text.into()));
                    wire::EntryResult {
                        sequence_number: text(entry.sequence_number()),
                        shard_id: text(entry.shard_id()),
                        error_code: text(entry.error_code()),
                        error_message: text(entry.error_message()),
                    }
                })
                .collect()),
        }
    }
}

/// Why a whole call failed, by what to do about it.
#[derive(Debug)]
enum CallError {
    /// Over the stream's limits: send again later, with fewer calls at a time.
    Throttled(String),
    /// The request is not valid: an entry in it cannot be taken as it is. Its entries are
    /// sent again one per call, so that the one at fault is found and refused alone. The
    /// error code is kept apart from the message, which may quote the entry.
    Invalid { code: String, message: String },
    /// Sending again cannot help: the stream does not exist, or may not be written to.
    /// Nothing more is sent.
    Fatal(String),
    /// No answer came (a timeout, a lost connection, an unreadable answer), so the stream may
    /// have taken the entries or not: send again later.
    Unanswered(String),
    /// Any other failure the service answered: send again later.
    Retry(String),
}

impl CallError {
    fn into_message(self) -> String {
        match self {
            Self::Throttled(message)
            | Self::Invalid { message, .. }
            | Self::Fatal(message)
            | Self::Unanswered(message)
            | Self::Retry(message) => message,
        }
    }
}

impl<R: std::fmt::Debug> From<SdkError<PutRecordsError, R>> for CallError {
    fn from(error: SdkError<PutRecordsError, R>) -> Self {
        let message = DisplayErrorContext(&error).to_string();
        let Some(error) = error.as_service_error() else {
            // Not built, so never sent: the SDK could not make the request. Everything else
            // (a timeout, a failed connection, an answer that does not read) may have reached
            // the stream.
            return match error {
                SdkError::ConstructionFailure(_) => Self::Retry(message),
                _ => Self::Unanswered(message),
            };
        };
        // The errors `PutRecords` declares, then those of every operation (which have no type).
        use PutRecordsError as E;
        match error {
            E::ProvisionedThroughputExceededException(_) | E::KmsThrottlingException(_) => {
                Self::Throttled(message)
            }
            E::InvalidArgumentException(_) => Self::Invalid {
                code: "InvalidArgumentException".into(),
                message,
            },
            E::ResourceNotFoundException(_)
            | E::AccessDeniedException(_)
            | E::KmsAccessDeniedException(_)
            | E::KmsDisabledException(_)
            | E::KmsInvalidStateException(_)
            | E::KmsNotFoundException(_)
            | E::KmsOptInRequired(_) => Self::Fatal(message),
            error => match error.code() {
                Some("LimitExceededException" | "ThrottlingException") => Self::Throttled(message),
                Some(code @ "ValidationException") => Self::Invalid {
                    code: code.into(),
                    message,
                },
                Some("UnrecognizedClientException" | "MissingAuthenticationToken") => {
                    Self::Fatal(message)
                }
                _ => Self::Retry(message),
            },
        }
    }
}

/// How much may be in flight: calls, and entries in them. When a call comes back throttled (a
/// shard took fewer than it was sent), the calls are halved and the entries brought down to
/// one and a half times what the stream took of it; both grow back while calls come back
/// clean: one more call for every `calls` clean ones, and half a clean call's entries more.
/// Between one call of [`MIN_ENTRIES_IN_FLIGHT`] entries and the publisher's concurrency of
/// full calls.
#[derive(Debug)]
struct Window {
    /// Calls in flight at most, and the most ever.
    calls: usize,
    max_calls: usize,
    /// Entries in flight at most, and the most ever.
    entries: usize,
    max_entries: usize,
    /// Clean answers since the calls last grew.
    clean: usize,
    /// Counts the decreases. Only a call started since the last one can cause another: the
    /// calls that were in flight together all saw the same throttling.
    epoch: u64,
}

/// The fewest entries a throttled publish keeps in flight.
const MIN_ENTRIES_IN_FLIGHT: usize = 50;

impl Window {
    fn new(max_calls: usize) -> Self {
        let max_calls = max_calls.max(1);
        let max_entries = max_calls * MAX_RECORDS_PER_CALL;
        Self {
            calls: max_calls,
            max_calls,
            entries: max_entries,
            max_entries,
            clean: 0,
            epoch: 0,
        }
    }

    /// A call started in `epoch` came back throttled, with `accepted` of its entries taken:
    /// the calls in flight are halved, and the entries brought down to half as many again as
    /// the stream took. (Halving the entries too would starve a stream of many shards, of which
    /// one throttling is enough to throttle a call.)
    fn throttled(&mut self, epoch: u64, accepted: usize) {
        if epoch == self.epoch {
            self.calls = (self.calls / 2).max(1);
            self.entries = (accepted + accepted / 2)
                .min(self.entries)
                .max(MIN_ENTRIES_IN_FLIGHT);
            self.clean = 0;
            self.epoch += 1;
        }
    }

    /// A call of `entries` came back with every entry accepted.
    fn clean(&mut self, entries: usize) {
        self.entries = (self.entries + entries.div_ceil(2)).min(self.max_entries);
        self.clean += 1;
        if self.clean >= self.calls && self.calls < self.max_calls {
            self.calls += 1;
            self.clean = 0;
        }
    }

    /// Entries the next call may hold, with `in_flight` entries in calls not yet answered.
    fn room(&self, in_flight: usize) -> usize {
        self.entries
            .saturating_sub(in_flight)
            .min(MAX_RECORDS_PER_CALL)
    }
}

/// The entries not yet accepted, in the order given, and the rules for which may go next.
struct Queue<'e> {
    events: &'e [Outgoing<'e>],
    /// For each entry (by index into `events`), whether it is waiting to be sent and when:
    /// `None` while it is in flight, accepted or refused.
    waiting: Vec<Option<Slot>>,
    /// No entry before this one is waiting.
    first: usize,
    /// The entries to be sent in a call of their own.
    alone: Vec<bool>,
    /// For each entry, the one before it with the same partition key, which must be settled
    /// before it may go (`None` for a key's first entry, and for every entry when unordered).
    earlier: Vec<Option<usize>>,
    /// The entries accepted, or refused for good.
    settled: Vec<bool>,
    /// Sends so far of each entry.
    sends: Vec<u32>,
    /// Entries the stream can never accept.
    refused: Vec<usize>,
    /// Entries the stream answered as invalid when sent alone, with its error code.
    invalid: Vec<(usize, String)>,
    /// Nothing more is to be sent.
    stopped: bool,
}

/// An entry waiting to be sent.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Not before then; `None`: never (its sends are spent, or publishing stopped).
    due: Option<Instant>,
}

impl<'e> Queue<'e> {
    /// A queue of `events`, but for those `accepts` says the stream can never take.
    fn new(
        events: &'e [Outgoing<'e>],
        ordered: bool,
        accepts: impl Fn(&Outgoing<'_>) -> bool,
    ) -> Self {
        let now = Instant::now();
        let (accepted, refused): (Vec<usize>, Vec<usize>) =
            (0..events.len()).partition(|&index| events.get(index).is_some_and(&accepts));
        let mut waiting = vec![None; events.len()];
        for &index in &accepted {
            if let Some(slot) = waiting.get_mut(index) {
                *slot = Some(Slot { due: Some(now) });
            }
        }
        let mut earlier = vec![None; events.len()];
        if ordered {
            let mut last: foldhash::HashMap<&str, usize> =
                foldhash::HashMap::with_capacity_and_hasher(accepted.len(), Default::default());
            for &index in &accepted {
                let key = events
                    .get(index)
                    .map_or("", |event| event.partition_key.as_ref());
                if let (Some(previous), Some(slot)) =
                    (last.insert(key, index), earlier.get_mut(index))
                {
                    *slot = Some(previous);
                }
            }
        }
        Self {
            events,
            waiting,
            first: 0,
            alone: vec![false; events.len()],
            earlier,
            settled: vec![false; events.len()],
            sends: vec![0; events.len()],
            refused,
            invalid: Vec::new(),
            stopped: false,
        }
    }

    /// Whether the entry at `index` may be sent: the entry before it of its key is settled.
    fn may_go(&self, index: usize) -> bool {
        match self.earlier.get(index).copied().flatten() {
            Some(earlier) => self.settled.get(earlier).copied().unwrap_or(true),
            None => true,
        }
    }

    fn settle(&mut self, index: usize) {
        if let Some(settled) = self.settled.get_mut(index) {
            *settled = true;
        }
    }

    fn sends(&self, index: usize) -> u32 {
        self.sends.get(index).copied().unwrap_or_default()
    }

    /// The next call: the waiting entries, in order, whose key has no earlier entry waiting or
    /// in flight, up to the first one waiting out its backoff at `now`, at most `max_entries`
    /// (at least one) and `max_bytes`. Also returns when that entry is due.
    fn next_call(
        &mut self,
        now: Instant,
        max_entries: usize,
        max_bytes: usize,
    ) -> (Vec<usize>, Option<Instant>) {
        let mut call = Vec::new();
        let mut bytes = 0;
        let mut wake: Option<Instant> = None;
        while self.waiting.get(self.first).is_some_and(Option::is_none) {
            self.first += 1;
        }
        for (index, slot) in self.waiting.iter().enumerate().skip(self.first) {
            let Some(slot) = slot else { continue };
            if !self.may_go(index) {
                continue;
            }
            // No entry goes ahead of an earlier one waiting out its backoff: Lambda re-delivers
            // a batch from its lowest record not published, so what is published past it
            // would be published again, and a throttled shard would be sent more than it
            // takes.
            let Some(due) = slot.due else { break };
            if due > now {
                wake = Some(due);
                break;
            }
            let alone = self.alone.get(index).copied().unwrap_or(false);
            if alone && !call.is_empty() {
                continue;
            }
            let size = self.events.get(index).map_or(0, Outgoing::size);
            if !call.is_empty() && (call.len() >= max_entries || bytes + size > max_bytes) {
                break;
            }
            call.push(index);
            bytes += size;
            if alone {
                break;
            }
        }
        if self.stopped {
            call.clear();
        }
        for &index in &call {
            if let Some(slot) = self.waiting.get_mut(index) {
                *slot = None;
            }
            if let Some(sends) = self.sends.get_mut(index) {
                *sends += 1;
            }
        }
        (call, wake)
    }

    /// The entry at `index` was accepted.
    fn accepted(&mut self, index: usize) {
        self.settle(index);
    }

    /// The entry at `index` failed: it waits again, until `due`, or for good once its sends
    /// are spent or publishing stopped. The entries after it of its key keep waiting behind it.
    fn retry(&mut self, index: usize, due: Instant, policy: &RetryPolicy) {
        // Refused for good: nothing to send again.
        if self.settled.get(index).copied().unwrap_or(false) {
            return;
        }
        let sends = self.sends(index);
        let due = (!self.stopped && sends < policy.max_attempts).then_some(due);
        self.wait(index, Slot { due });
    }

    /// The entry at `index` waits again, as `slot` says.
    fn wait(&mut self, index: usize, slot: Slot) {
        if let Some(waiting) = self.waiting.get_mut(index) {
            *waiting = Some(slot);
            self.first = self.first.min(index);
        }
    }

    /// The entry at `index` is to be sent in a call of its own from now on.
    fn send_alone(&mut self, index: usize) {
        if let Some(alone) = self.alone.get_mut(index) {
            *alone = true;
        }
        self.wait(index, Slot { due: None });
    }

    /// The entry at `index`, sent alone, was answered as invalid with `code`: it is never sent
    /// again, and no longer holds back the entries after it of its key.
    fn refuse(&mut self, index: usize, code: &str) {
        self.invalid.push((index, code.to_owned()));
        if let Some(waiting) = self.waiting.get_mut(index) {
            *waiting = None;
        }
        self.settle(index);
    }

    /// Nothing more is sent: every waiting entry stays unpublished.
    fn stop(&mut self) {
        self.stopped = true;
        for slot in self.waiting.iter_mut().flatten() {
            slot.due = None;
        }
    }

    /// Whether an entry is waiting that would still be sent, given the time.
    fn any_due(&self) -> bool {
        self.waiting
            .iter()
            .skip(self.first)
            .flatten()
            .any(|slot| slot.due.is_some())
    }

    /// The entries never accepted, in order (refused ones excluded).
    fn unpublished(&self) -> impl Iterator<Item = usize> + '_ {
        self.waiting
            .iter()
            .enumerate()
            .skip(self.first)
            .filter_map(|(index, slot)| slot.map(|_| index))
    }
}

mod wire;

#[cfg(test)]
mod tests;
