//! One invocation: raw event bytes -> decoded records and inputs -> one inference ->
//! prediction events -> publisher -> response bytes, with every record's fate kept in one
//! [`Ledger`].

use std::time::{Duration, Instant, SystemTime};

use lambda_runtime::Diagnostic;
use thiserror::Error;

use crate::config::DEFAULT_PREDICTION_FIELD;
use crate::event::{self, RejectReason};
use crate::kinesis::{EventError, KinesisBatch};
use crate::ledger::Ledger;
use crate::model::{InferenceError, Model};
use crate::output::{self, DeadLetter, EventEncoder, LoggedData};
use crate::pack::{self, ShardMap};
use crate::promotion::Promotion;
use crate::publish::{Outgoing, PublishReport, Publisher};
use crate::registry::ModelVersion;
use crate::telemetry::BatchReport;

/// Why an invocation failed as a whole. Bad records never fail it: they are rejected, those
/// ONNX Runtime fails on included.
#[derive(Debug, Error)]
pub enum HandlerError {
    /// The event is not a Kinesis event.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The model's outputs are not what it declared, whatever the records.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match error {
            HandlerError::Event(_) => "InvalidEvent",
            HandlerError::Inference(_) => "InferenceFailed",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error_chain(&error),
        }
    }
}

/// Formats an error with all its sources, `outer: inner: innermost`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Time kept back from the invocation's deadline when publishing: publishing ends this long
/// before Lambda would stop the invocation, leaving time to write the response and send it.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// How long publishing may take in an invocation without a deadline (outside Lambda), when
/// `PUBLISH_BUDGET_SECONDS` does not say.
pub const DEFAULT_PUBLISH_BUDGET: Duration = Duration::from_secs(30);

/// The invocation being handled, from Lambda's context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// Lambda's request id (empty outside Lambda).
    pub request_id: String,
    /// When Lambda stops the invocation; `None` outside Lambda, or when the one given has
    /// already passed.
    pub deadline: Option<SystemTime>,
    /// Largest response the caller takes; `None`: no limit (outside Lambda).
    pub response_limit: Option<usize>,
}

impl From<&lambda_runtime::Context> for Invocation {
    fn from(context: &lambda_runtime::Context) -> Self {
        Self {
            request_id: context.request_id.clone(),
            // Lambda sends the time it stops the invocation, in the future by construction. A
            // deadline already past (the local emulator sends the timeout's length instead)
            // is not one: the invocation is then handled as if it had none.
            deadline: Some(context.deadline()).filter(|deadline| *deadline > SystemTime::now()),
            response_limit: Some(output::MAX_RESPONSE_BYTES),
        }
    }
}

impl Invocation {
    /// When publishing must be over: [`DEADLINE_MARGIN`] before the deadline, and no later
    /// than `budget` from now if there is one; without a deadline, `budget` or
    /// [`DEFAULT_PUBLISH_BUDGET`] from now.
    pub fn publishing_deadline(&self, budget: Option<Duration>) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let left = match self.deadline {
            Some(deadline) => deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(DEADLINE_MARGIN),
            None => DEFAULT_PUBLISH_BUDGET,
        };
        now + budget.map_or(left, |budget| match self.deadline {
            Some(_) => budget.min(left),
            None => budget,
        })
    }
}

/// Everything an invocation needs, built once at cold start ([`crate::startup`]).
pub struct Handler {
    /// The model served and how its events are stamped; replaced whole when a new registry
    /// version is promoted, each invocation using the one it started with.
    serving: std::sync::Mutex<std::sync::Arc<Serving>>,
    model_name: String,
    /// Key of a regressor's value in each event's `prediction` object.
    prediction_field: String,
    /// An explicit `RUN_ID`: the version on events whatever registry version serves.
    pinned_version: Option<String>,
    /// With `MODEL_REFRESH_SECONDS`: the alias followed.
    promotion: Option<Promotion>,
    /// Where prediction events go; `None` with `TEST_RUN`: predictions are only returned.
    publisher: Option<Publisher>,
    /// Where rejected records are kept; `None`: they are logged in full.
    dead_letters: Option<Publisher>,
    /// Longest publishing may take in one invocation, if shorter than its deadline allows.
    publish_budget: Option<Duration>,
    /// With `OUTPUT_AGGREGATION=kpl`: prediction events go out in KPL aggregated records.
    aggregation: Option<Aggregation>,
}

/// A model and what its events are stamped with.
pub struct Serving {
    model: std::sync::Arc<Model>,
    /// The `version` on prediction events and dead letters.
    version: String,
    /// The registry version the model is, if it is one.
    registered: Option<ModelVersion>,
    encoder: EventEncoder,
}

impl Serving {
    fn new(
        model: std::sync::Arc<Model>,
        model_name: &str,
        version: String,
        registered: Option<ModelVersion>,
        prediction_field: &str,
    ) -> Self {
        Self {
            encoder: EventEncoder::new(model_name, &version, prediction_field),
            model,
            version,
            registered,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The `version` stamped on events.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The registry version served, if the model is one.
    pub fn registered(&self) -> Option<&ModelVersion> {
        self.registered.as_ref()
    }
}

/// The output stream's shards, for packing prediction events by shard.
struct Aggregation {
    shards: std::sync::Mutex<std::sync::Arc<ShardMap>>,
    /// An aggregate landed on another shard than its own: the stream's shards have changed,
    /// and are read again before the next invocation publishes.
    stale: std::sync::atomic::AtomicBool,
}

/// The response of one invocation and what happened to each record.
#[derive(Debug)]
pub struct Handled {
    /// The JSON response for Lambda.
    pub response: Vec<u8>,
    /// The batch's accounting.
    pub report: BatchReport,
}

impl Handler {
    /// A handler predicting with `model` and stamping events with `model_name` and `version`,
    /// a regressor's value under `cnt`; it publishes nothing until given a publisher.
    pub fn new(model: Model, model_name: &str, version: &str) -> Self {
        let serving = Serving::new(
            std::sync::Arc::new(model),
            model_name,
            version.into(),
            None,
            DEFAULT_PREDICTION_FIELD,
        );
        Self {
            serving: std::sync::Mutex::new(std::sync::Arc::new(serving)),
            model_name: model_name.into(),
            prediction_field: DEFAULT_PREDICTION_FIELD.into(),
            pinned_version: None,
            promotion: None,
            publisher: None,
            dead_letters: None,
            publish_budget: None,
            aggregation: None,
        }
    }

    /// Publishes prediction events in KPL aggregated records, packed by the shards of `shards`
    /// (`OUTPUT_AGGREGATION=kpl`).
    pub fn aggregating(mut self, shards: ShardMap) -> Self {
        self.aggregation = Some(Aggregation {
            shards: std::sync::Mutex::new(std::sync::Arc::new(shards)),
            stale: std::sync::atomic::AtomicBool::new(false),
        });
        self
    }

    /// Ends publishing `budget` after it starts at the latest (`PUBLISH_BUDGET_SECONDS`).
    pub fn with_publish_budget(mut self, budget: Option<Duration>) -> Self {
        self.publish_budget = budget;
        self
    }

    /// Writes a regressor's value under `field` in the `prediction` object.
    pub fn with_prediction_field(mut self, field: &str) -> Self {
        self.prediction_field = field.into();
        self.restamp();
        self
    }

    /// The model is registry version `registered`: events carry its `<name>/<version>`
    /// unless `run_id` (an explicit `RUN_ID`) is given, which they carry instead, whatever
    /// version serves later.
    pub fn registered(mut self, registered: ModelVersion, run_id: Option<&str>) -> Self {
        self.pinned_version = run_id.map(str::to_owned);
        let version = self.stamp(Some(&registered));
        self.set_serving(self.serving().model.clone(), version, Some(registered));
        self
    }

    /// Follows the alias of `promotion` at the start of invocations (`MODEL_REFRESH_SECONDS`).
    pub fn promoting(mut self, promotion: Promotion) -> Self {
        self.promotion = Some(promotion);
        self
    }

    /// Stamps the events of the serving model again, after the prediction field changed.
    fn restamp(&mut self) {
        let current = self.serving();
        let registered = current.registered.clone();
        self.set_serving(current.model.clone(), current.version.clone(), registered);
    }

    /// Serves `model`, its events stamped `version`, from the next invocation on; returns it.
    fn set_serving(
        &self,
        model: std::sync::Arc<Model>,
        version: String,
        registered: Option<ModelVersion>,
    ) -> std::sync::Arc<Serving> {
        let serving = std::sync::Arc::new(Serving::new(
            model,
            &self.model_name,
            version,
            registered,
            &self.prediction_field,
        ));
        match self.serving.lock() {
            Ok(mut current) => *current = serving.clone(),
            Err(poisoned) => *poisoned.into_inner() = serving.clone(),
        }
        serving
    }

    /// The `version` on the events of `registered`: the pinned `RUN_ID`, else the registry's
    /// `<name>/<version>`, else the one the handler was made with.
    fn stamp(&self, registered: Option<&ModelVersion>) -> String {
        match (&self.pinned_version, registered) {
            (Some(pinned), _) => pinned.clone(),
            (None, Some(registered)) => registered.stamp(),
            (None, None) => self.serving().version.clone(),
        }
    }

    /// Publishes prediction events with `publisher`.
    pub fn publishing_to(mut self, publisher: Publisher) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Keeps rejected records with `publisher` (the dead-letter stream).
    pub fn dead_lettering_to(mut self, publisher: Publisher) -> Self {
        self.dead_letters = Some(publisher);
        self
    }

    /// The model predictions are made with now, and how its events are stamped.
    pub fn serving(&self) -> std::sync::Arc<Serving> {
        match self.serving.lock() {
            Ok(serving) => serving.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The model an invocation predicts with: the current one, or, when a promotion check is
    /// due and the alias moved, the new version, swapped in for this invocation and the ones
    /// after it. Returns it with the milliseconds the check took (0 when none was due).
    async fn serving_for(&self, invocation: &Invocation) -> (std::sync::Arc<Serving>, f64) {
        let current = self.serving();
        let (Some(promotion), Some(registered)) = (&self.promotion, current.registered()) else {
            return (current, 0.0);
        };
        let started = Instant::now();
        // A refresh may take half the time the invocation has left; the batch needs the rest.
        let budget = invocation.deadline.map(|deadline| {
            deadline
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                / 2
        });
        // Boxed: the check's state (REST calls, a download, a model build) is large and rare,
        // and would otherwise sit in every invocation's future.
        let Some(loaded) =
            Box::pin(promotion.check(registered, current.model().uri(), budget)).await
        else {
            return (current, started.elapsed().as_secs_f64() * 1e3);
        };
        let version = self.stamp(loaded.registered.as_ref());
        let promoted = self.set_serving(
            std::sync::Arc::new(loaded.model),
            version,
            loaded.registered,
        );
        (promoted, started.elapsed().as_secs_f64() * 1e3)
    }

    /// The prediction stream's publisher, if predictions are published.
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }

    /// The dead-letter stream's publisher, if there is one.
    pub fn dead_letter_publisher(&self) -> Option<&Publisher> {
        self.dead_letters.as_ref()
    }

    /// Handles one raw Kinesis event (JSON bytes) outside Lambda (no deadline) and returns the
    /// JSON response.
    pub async fn handle_bytes(&self, event: &[u8]) -> Result<Handled, HandlerError> {
        let records = KinesisBatch::from_slice(event)?;
        self.handle(&records, &Invocation::default()).await
    }

    /// Handles the records of one Kinesis event: every record ends up predicted (and
    /// published), rejected (and kept), or reported in `batchItemFailures` for re-delivery.
    pub async fn handle(
        &self,
        records: &KinesisBatch,
        invocation: &Invocation,
    ) -> Result<Handled, HandlerError> {
        let started = Instant::now();
        let (serving, refresh_ms) = self.serving_for(invocation).await;
        let refreshed = Instant::now();
        let (mut ledger, inputs) = event::decode(records, serving.model.layout());
        let decoded = Instant::now();
        let predictions = serving.model.predict_isolating(&inputs)?;
        let predicted = Instant::now();
        serving.encoder.encode_batch(&mut ledger, &predictions);
        let encoded = Instant::now();

        let registered = serving.registered();
        let mut report = BatchReport {
            request_id: invocation.request_id.clone(),
            version: serving.version.clone(),
            registered_model: registered.map(|version| version.name.clone()),
            model_version: registered.map(|version| version.version.clone()),
            run_id: registered.and_then(|version| version.run_id.clone()),
            refresh_ms,
            ..BatchReport::default()
        };
        let deadline = invocation.publishing_deadline(self.publish_budget);
        self.deliver(&mut ledger, &serving.version, deadline, &mut report)
            .await;
        let published = Instant::now();
        let response = output::write_response(&ledger, invocation.response_limit);

        report.records = ledger.len();
        (report.predicted, report.rejected, report.redeliver) = ledger.counts();
        report.decode_ms = (decoded - refreshed).as_secs_f64() * 1e3;
        report.inference_ms = (predicted - decoded).as_secs_f64() * 1e3;
        report.publish_ms = (published - encoded).as_secs_f64() * 1e3;
        report.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report.emit();
        Ok(Handled { response, report })
    }

    /// Publishes every prediction event and keeps every rejected record, both at once and
    /// until `deadline`. A record whose event or dead letter a stream did not accept is marked
    /// for re-delivery; one whose event the output stream can never accept (too large, or
    /// refused as invalid) is rejected and kept like the others.
    async fn deliver(
        &self,
        ledger: &mut Ledger<'_>,
        version: &str,
        deadline: tokio::time::Instant,
        report: &mut BatchReport,
    ) {
        // A stream whose record size may have changed (an entry was answered as invalid) is
        // asked again before events are packed and letters split by it.
        let refresh = |publisher: &Option<Publisher>| {
            let publisher = publisher.clone();
            async move {
                if let Some(publisher) = publisher {
                    publisher.refresh_record_size(deadline).await;
                }
            }
        };
        tokio::join!(refresh(&self.publisher), refresh(&self.dead_letters));
        let rejected: Vec<usize> = ledger.rejections().map(|(index, _)| index).collect();
        let unpublishable = {
            let events: Vec<Outgoing<'_>> = match self.publisher {
                Some(_) => ledger
                    .predicted()
                    .map(|(record, data)| Outgoing {
                        record,
                        data,
                        partition_key: ledger.partition_key(record),
                    })
                    .collect(),
                None => Vec::new(),
            };
            let letters = self.dead_letters_of(ledger, &rejected, version);
            let (published, kept) = tokio::join!(
                self.publish_events(&events, deadline),
                self.keep(ledger, &rejected, &letters, deadline),
            );
            let limit = self
                .publisher
                .as_ref()
                .map_or(0, Publisher::max_record_bytes);
            // Both in event order.
            let mut unpublishable: Vec<(usize, RejectReason)> = events
                .iter()
                .filter(|event| published.refused.binary_search(&event.record).is_ok())
                .map(|event| {
                    let bytes = event.data.len() + event.partition_key.len();
                    (event.record, RejectReason::EventTooLarge { bytes, limit })
                })
                .collect();
            unpublishable.extend(published.invalid.iter().map(|(record, code)| {
                let code = code.clone();
                (*record, RejectReason::EventRefused { code })
            }));
            unpublishable.sort_by_key(|(record, _)| *record);
            drop(events);
            if let Some(publisher) = &self.publisher {
                report.published = published.published;
                account(report, &published, publisher.stream());
            }
            ledger.redeliver(published.failed);
            self.account_kept(report, ledger, kept);
            unpublishable
        };
        if unpublishable.is_empty() {
            return;
        }
        let rejected: Vec<usize> = unpublishable.iter().map(|(record, _)| *record).collect();
        for (record, reason) in unpublishable {
            ledger.reject(record, reason);
        }
        let letters = self.dead_letters_of(ledger, &rejected, version);
        let kept = self.keep(ledger, &rejected, &letters, deadline).await;
        self.account_kept(report, ledger, kept);
    }

    /// Adds what keeping rejected records did to the batch's accounting; records whose dead
    /// letters were not written are marked for re-delivery.
    fn account_kept(&self, report: &mut BatchReport, ledger: &mut Ledger<'_>, kept: Kept) {
        if let Some(stream) = &self.dead_letters {
            report.dead_lettered += kept.kept;
            account(report, &kept.published, stream.stream());
            ledger.redeliver(kept.published.failed);
        }
    }

    /// Publishes prediction events to the output stream, if there is one, as they are or
    /// aggregated.
    async fn publish_events(
        &self,
        events: &[Outgoing<'_>],
        deadline: tokio::time::Instant,
    ) -> PublishReport {
        match (&self.publisher, &self.aggregation) {
            (Some(_), _) if events.is_empty() => PublishReport::default(),
            (Some(publisher), Some(aggregation)) => {
                self.publish_aggregated(publisher, aggregation, events, deadline)
                    .await
            }
            (Some(publisher), None) => publisher.publish(events, deadline).await,
            (None, _) => PublishReport::default(),
        }
    }

    /// Publishes `events` packed into aggregated records, one shard's events per record
    /// (those too large for one go as they are), and reports what happened to each event.
    async fn publish_aggregated(
        &self,
        publisher: &Publisher,
        aggregation: &Aggregation,
        events: &[Outgoing<'_>],
        deadline: tokio::time::Instant,
    ) -> PublishReport {
        use std::sync::atomic::Ordering;
        if aggregation.stale.swap(false, Ordering::Relaxed) {
            // Within the publishing deadline, like every call of the invocation.
            let listed = tokio::time::timeout_at(
                deadline,
                ShardMap::list(publisher.client(), publisher.stream()),
            )
            .await
            .unwrap_or_else(|_| Err("the publishing deadline was reached".into()));
            match listed {
                Ok(shards) => {
                    tracing::info!(
                        shards = shards.len(),
                        "the output stream's shards, read again"
                    );
                    if let Ok(mut current) = aggregation.shards.lock() {
                        *current = std::sync::Arc::new(shards);
                    }
                }
                Err(error) => tracing::warn!(
                    %error,
                    "the output stream's shards could not be read again; the ones known are used"
                ),
            }
        }
        let shards = match aggregation.shards.lock() {
            Ok(shards) => shards.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let packed = pack::pack(events, &shards, publisher.max_record_bytes());
        let expected: Vec<&str> = packed
            .aggregates
            .iter()
            .map(|aggregate| shards.id(aggregate.shard))
            .collect();
        let report = publish_packed(publisher, &packed, &expected, deadline).await;
        if report.misrouted > 0 {
            aggregation.stale.store(true, Ordering::Relaxed);
        }
        report
    }

    /// The dead letters of the rejected records at `rejected`, if there is a dead-letter
    /// stream.
    fn dead_letters_of<'e>(
        &self,
        ledger: &Ledger<'e>,
        rejected: &[usize],
        version: &str,
    ) -> Vec<DeadLetter<'e>> {
        match &self.dead_letters {
            Some(stream) => output::dead_letters(
                ledger,
                rejected,
                &self.model_name,
                version,
                stream.max_record_bytes(),
            ),
            None => Vec::new(),
        }
    }

    /// Keeps the rejected records at `rejected`: their `letters` in the dead-letter stream if
    /// there is one (until `deadline`; the letters of an aggregate's user records packed into
    /// aggregates of their own), else in the log, in full up to [`output::MAX_LOGGED_DATA`] and
    /// as a digest beyond. Every rejected record is logged.
    async fn keep(
        &self,
        ledger: &Ledger<'_>,
        rejected: &[usize],
        letters: &[DeadLetter<'_>],
        deadline: tokio::time::Instant,
    ) -> Kept {
        for &index in rejected {
            let record = ledger.record(index);
            let reason = ledger.rejection(index);
            match self.dead_letters {
                Some(_) => tracing::warn!(
                    sequence_number = %output::logged_field(record.sequence_number),
                    sub_sequence_number = record.sub_sequence_number,
                    partition_key = %output::logged_field(record.partition_key),
                    code = reason.map(RejectReason::code),
                    reason = reason.map(logged_reason),
                    "record rejected"
                ),
                None => log_data(tracing::Level::WARN, &record, "record rejected", reason),
            }
        }
        let Some(dead_letters) = &self.dead_letters else {
            return Kept::default();
        };
        let outgoing: Vec<Outgoing<'_>> = letters
            .iter()
            .flat_map(|letter| {
                letter.parts.iter().map(|part| Outgoing {
                    record: letter.record,
                    data: part,
                    partition_key: letter.partition_key.into(),
                })
            })
            .collect();
        // The letters of an aggregate's user records go out aggregated as well, so that an
        // aggregate of many bad user records makes a few dead-letter stream records, not one
        // each; the letters of plain records go out as they are.
        let (user_letters, plain_letters): (Vec<Outgoing<'_>>, Vec<Outgoing<'_>>) = outgoing
            .into_iter()
            .partition(|letter| ledger.record(letter.record).sub_sequence_number.is_some());
        let mut aggregates: foldhash::HashMap<&str, usize> = foldhash::HashMap::default();
        let packed = pack::pack_groups(
            &user_letters,
            |letter| {
                let next = aggregates.len();
                *aggregates
                    .entry(ledger.record(letter.record).sequence_number)
                    .or_insert(next)
            },
            dead_letters.max_record_bytes(),
        );
        let (mut published, packed_published) = tokio::join!(
            async {
                match plain_letters.is_empty() {
                    true => PublishReport::default(),
                    false => dead_letters.publish(&plain_letters, deadline).await,
                }
            },
            async {
                match user_letters.is_empty() {
                    true => PublishReport::default(),
                    false => publish_packed(dead_letters, &packed, &[], deadline).await,
                }
            },
        );
        published.absorb(packed_published);
        // A letter answered as invalid was split for a record size the stream no longer has
        // (it is read again before the next publish): the record is delivered again, to be
        // kept then, rather than logged.
        published
            .failed
            .extend(published.invalid.drain(..).map(|(record, _)| record));
        published.failed.sort_unstable();
        published.failed.dedup();
        // A letter is kept when all its parts are. The lists are in event order.
        let refused = |record: &usize| published.refused.binary_search(record).is_ok();
        let unkept =
            |record: &usize| published.failed.binary_search(record).is_ok() || refused(record);
        let mut kept = 0;
        for letter in letters {
            if letter.parts.is_empty() || refused(&letter.record) {
                log_data(
                    tracing::Level::ERROR,
                    &ledger.record(letter.record),
                    "the dead letter of a rejected record is larger than the dead-letter \
                     stream's records even without its data; its data is logged instead",
                    None,
                );
            } else if !unkept(&letter.record) {
                kept += 1;
            }
        }
        Kept { kept, published }
    }
}

/// Publishes `packed`: its aggregates, then its events too large for one as they are, and
/// reports what happened to each event (by [`Outgoing::record`]). `expected` names the shard
/// each aggregate is meant for, to count those accepted elsewhere in
/// [`PublishReport::misrouted`] (none checked if empty).
async fn publish_packed(
    publisher: &Publisher,
    packed: &pack::Packed<'_>,
    expected: &[&str],
    deadline: tokio::time::Instant,
) -> PublishReport {
    // Entry `i` is aggregate `i`, then come the plain events.
    let mut entries: Vec<Outgoing<'_>> = packed
        .aggregates
        .iter()
        .enumerate()
        .map(|(position, aggregate)| Outgoing {
            record: position,
            data: &aggregate.data,
            partition_key: aggregate.partition_key.as_str().into(),
        })
        .collect();
    let aggregates = entries.len();
    entries.extend(
        packed
            .plain
            .iter()
            .enumerate()
            .map(|(position, event)| Outgoing {
                record: aggregates + position,
                ..event.clone()
            }),
    );
    let mut report = publisher
        .publish_to_shards(&entries, expected, deadline)
        .await;
    // An aggregate the stream answers as invalid (its record size shrank since it was
    // read) is no fault of its events: they go out again one entry each.
    let (invalid_aggregates, invalid_plain): (Vec<_>, Vec<_>) = report
        .invalid
        .drain(..)
        .partition(|(entry, _)| *entry < aggregates);
    report.invalid = invalid_plain;
    let unpacked: Vec<Outgoing<'_>> = invalid_aggregates
        .iter()
        .filter_map(|(entry, _)| packed.aggregates.get(*entry))
        .flat_map(|aggregate| {
            packed
                .events
                .get(aggregate.events.clone())
                .unwrap_or_default()
        })
        .cloned()
        .collect();
    let unpacked_report = match unpacked.is_empty() {
        true => PublishReport::default(),
        false => publisher.publish(&unpacked, deadline).await,
    };
    // From entries back to the events' records, in event order.
    let records = |entry: usize| -> Vec<usize> {
        match packed.aggregates.get(entry) {
            Some(aggregate) => packed
                .events
                .get(aggregate.events.clone())
                .unwrap_or_default()
                .iter()
                .map(|event| event.record)
                .collect(),
            None => packed
                .plain
                .get(entry - aggregates)
                .map(|event| event.record)
                .into_iter()
                .collect(),
        }
    };
    let sorted = |entries: &[usize]| {
        let mut records: Vec<usize> = entries.iter().flat_map(|&entry| records(entry)).collect();
        records.sort_unstable();
        records
    };
    // Entries back to records; the unpacked events' report is in records already.
    report.failed = sorted(&report.failed);
    report.refused = sorted(&report.refused);
    let mut invalid: Vec<(usize, String)> = report
        .invalid
        .iter()
        .flat_map(|(entry, code)| {
            records(*entry)
                .into_iter()
                .map(|record| (record, code.clone()))
        })
        .collect();
    invalid.sort_unstable();
    report.invalid = invalid;
    report.absorb(unpacked_report);
    report.published = (packed.events.len() + packed.plain.len())
        .saturating_sub(report.failed.len() + report.refused.len() + report.invalid.len());
    report
}

/// What keeping rejected records in the dead-letter stream did.
#[derive(Debug, Default)]
struct Kept {
    /// Records whose dead letters were all written.
    kept: usize,
    /// The dead letters' publish.
    published: PublishReport,
}

/// A rejection's reason for a log line, cut to [`output::MAX_LOGGED_FIELD`].
fn logged_reason(reason: &RejectReason) -> String {
    output::logged_field(&reason.to_string()).into_owned()
}

/// Logs a rejected record with its data: in full up to [`output::MAX_LOGGED_DATA`], as its size
/// and SHA-256 beyond (the record stays in the input stream at its sequence number for the
/// stream's retention period).
fn log_data(
    level: tracing::Level,
    record: &crate::kinesis::KinesisRecord<'_>,
    message: &str,
    reason: Option<&RejectReason>,
) {
    let data = output::logged_data(record.data);
    let (full, bytes, sha256) = match &data {
        LoggedData::Full(data) => (Some(data.as_ref()), None, None),
        LoggedData::Digest { bytes, sha256 } => (None, Some(*bytes), Some(sha256.as_str())),
    };
    let code = reason.map(RejectReason::code);
    let reason = reason.map(logged_reason);
    macro_rules! log {
        ($level:expr) => {
            tracing::event!(
                $level,
                sequence_number = %output::logged_field(record.sequence_number),
                sub_sequence_number = record.sub_sequence_number,
                partition_key = %output::logged_field(record.partition_key),
                code,
                reason,
                data = full,
                data_bytes = bytes,
                data_sha256 = sha256,
                "{message}"
            )
        };
    }
    match level {
        tracing::Level::ERROR => log!(tracing::Level::ERROR),
        _ => log!(tracing::Level::WARN),
    }
}

/// Adds one publish's calls to the batch's accounting, and logs the records it could not
/// publish.
fn account(report: &mut BatchReport, published: &PublishReport, stream: &str) {
    report.put_records_calls += published.calls;
    report.put_records_resent += published.resent;
    report.put_records_throttled += published.throttled;
    if !published.failed.is_empty() {
        tracing::error!(
            stream,
            unpublished = published.failed.len(),
            calls = published.calls,
            resent = published.resent,
            throttled = published.throttled,
            unanswered = published.unanswered,
            lowest_concurrency = published.lowest_concurrency,
            last_error = published.last_error.as_deref().unwrap_or_default(),
            "records not published; they are reported for re-delivery"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(deadline_ms: u64) -> lambda_runtime::Context {
        let mut context = lambda_runtime::Context::default();
        context.deadline = deadline_ms;
        context
    }

    #[test]
    fn a_deadline_in_the_future_bounds_publishing_one_already_past_is_ignored() {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let invocation = Invocation::from(&context(now_ms + 3000));
        assert!(invocation.deadline.is_some());
        let left = invocation.publishing_deadline(None) - tokio::time::Instant::now();
        assert!(left <= Duration::from_millis(2500) && left > Duration::from_millis(2000));
        assert_eq!(invocation.response_limit, Some(output::MAX_RESPONSE_BYTES));

        // What the local Lambda emulator sends: the timeout's length, a time in 1970.
        for deadline in [0, 600_000, now_ms - 1] {
            let invocation = Invocation::from(&context(deadline));
            assert_eq!(invocation.deadline, None, "{deadline}");
            let left = invocation.publishing_deadline(None) - tokio::time::Instant::now();
            assert!(
                left > DEFAULT_PUBLISH_BUDGET - Duration::from_secs(1),
                "{deadline}"
            );
        }
    }

    #[test]
    fn a_publish_budget_shortens_the_deadline_but_never_lengthens_it() {
        let in_3_s = Invocation {
            deadline: Some(SystemTime::now() + Duration::from_secs(3)),
            ..Invocation::default()
        };
        let left = |invocation: &Invocation, budget| {
            invocation.publishing_deadline(budget) - tokio::time::Instant::now()
        };
        let second = Some(Duration::from_secs(1));
        assert!(left(&in_3_s, second) <= Duration::from_secs(1));
        assert!(left(&in_3_s, Some(Duration::from_secs(60))) <= Duration::from_millis(2500));
        // Without a deadline, the budget replaces the default.
        let none = Invocation::default();
        assert!(left(&none, second) <= Duration::from_secs(1));
        assert!(left(&none, Some(Duration::from_secs(60))) > Duration::from_secs(59));
    }
}
