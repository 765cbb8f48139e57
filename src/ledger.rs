//! What happened to each record of one invocation, indexed by the record's position in the
//! event.
//!
//! Every stage reads and marks the same [`Ledger`]: decoding records each record as decoded
//! (with its row in the model's inputs) or rejected; encoding turns decoded records into
//! predicted ones (their event bytes) or rejects them; publishing and dead-lettering mark the
//! records whose entries could not be written for re-delivery; the response and the batch's
//! accounting are read from it. A record is never looked up through another list's index.

use std::borrow::Cow;
use std::ops::Range;

use crate::event::{RejectReason, partition_key};
use crate::kinesis::{KinesisBatch, KinesisRecord};

/// Where one record stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Decoded into row `row` of the model's inputs; waiting for its prediction.
    Decoded {
        /// The record's row in the inputs.
        row: usize,
    },
    /// Its prediction event is ready.
    Predicted {
        /// Where the event is in the ledger's event buffer.
        event: Range<usize>,
    },
    /// It can never be predicted.
    Rejected(RejectReason),
}

/// One record's entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where the record stands.
    pub fate: Fate,
    /// Where its `pred_id` JSON text is in the ledger's `pred_id` buffer (empty when rejected
    /// before it was read).
    pred_id: Range<usize>,
    /// Lambda must deliver it again: its event (or dead letter) could not be written.
    pub redeliver: bool,
}

/// The fates of one event's records.
#[derive(Debug, Clone)]
pub struct Ledger<'e> {
    records: &'e KinesisBatch,
    entries: Vec<Entry>,
    /// Every decoded record's `pred_id` JSON text, end to end.
    pred_ids: String,
    /// Every prediction event, end to end.
    events: Vec<u8>,
    /// Records predicted, rejected and to re-deliver, kept as entries change.
    predicted: usize,
    rejected: usize,
    redelivered: usize,
}

impl<'e> Ledger<'e> {
    /// An empty ledger for the records of `records`, to be filled in event order.
    pub fn new(records: &'e KinesisBatch) -> Self {
        Self {
            records,
            entries: Vec::with_capacity(records.len()),
            pred_ids: String::with_capacity(records.len() * 8),
            events: Vec::new(),
            predicted: 0,
            rejected: 0,
            redelivered: 0,
        }
    }

    /// The buffer the next record's `pred_id` text is appended to.
    pub fn pred_id_buffer(&mut self) -> &mut String {
        &mut self.pred_ids
    }

    /// Records the next record as decoded into `row`; its `pred_id` text is what was appended
    /// to [`Self::pred_id_buffer`] since `pred_id_start`.
    pub fn decoded(&mut self, row: usize, pred_id_start: usize) {
        self.entries.push(Entry {
            fate: Fate::Decoded { row },
            pred_id: pred_id_start..self.pred_ids.len(),
            redeliver: false,
        });
    }

    /// Records the next record as rejected; anything appended to the `pred_id` buffer since
    /// `pred_id_start` is dropped.
    pub fn rejected(&mut self, reason: RejectReason, pred_id_start: usize) {
        self.pred_ids.truncate(pred_id_start);
        self.rejected += 1;
        self.entries.push(Entry {
            fate: Fate::Rejected(reason),
            pred_id: pred_id_start..pred_id_start,
            redeliver: false,
        });
    }

    /// The buffer prediction events are appended to, sized for `bytes` more.
    pub fn event_buffer(&mut self, bytes: usize) -> &mut Vec<u8> {
        self.events.reserve(bytes);
        &mut self.events
    }

    /// Turns every decoded record whose row is in `rows` into a predicted one:
    /// `write(row, pred_id, events)` appends the record's event to `events` (`row` counted
    /// from `rows.start`), or says why the record is rejected instead (what it appended is then
    /// dropped). `pred_id` is the record's `pred_id` JSON text.
    pub fn encode_each(
        &mut self,
        rows: Range<usize>,
        mut write: impl FnMut(usize, &str, &mut Vec<u8>) -> Result<(), RejectReason>,
    ) {
        for entry in &mut self.entries {
            let Fate::Decoded { row } = entry.fate else {
                continue;
            };
            if !rows.contains(&row) {
                continue;
            }
            let start = self.events.len();
            let pred_id = self.pred_ids.get(entry.pred_id.clone()).unwrap_or_default();
            match write(row - rows.start, pred_id, &mut self.events) {
                Ok(()) => {
                    self.predicted += 1;
                    entry.fate = Fate::Predicted {
                        event: start..self.events.len(),
                    }
                }
                Err(reason) => {
                    self.events.truncate(start);
                    self.rejected += 1;
                    entry.fate = Fate::Rejected(reason);
                }
            }
        }
    }

    /// Rejects the predicted record at `index` (its event can never be published): its event
    /// is dropped.
    pub fn reject(&mut self, index: usize, reason: RejectReason) {
        if let Some(entry) = self.entries.get_mut(index)
            && matches!(entry.fate, Fate::Predicted { .. })
        {
            entry.fate = Fate::Rejected(reason);
            self.predicted -= 1;
            self.rejected += 1;
        }
    }

    /// The Kinesis record at `index` in the event.
    pub fn record(&self, index: usize) -> KinesisRecord<'e> {
        self.records.get(index).unwrap_or(KinesisRecord {
            data: Err(""),
            sequence_number: "",
            sub_sequence_number: None,
            partition_key: "",
            invalid_aggregate: None,
        })
    }

    /// Every record's entry, in event order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The `pred_id` of a decoded or predicted record, as the JSON text it had in the record
    /// (a number or a quoted string), so that it is echoed unchanged.
    pub fn pred_id(&self, entry: &Entry) -> &str {
        self.pred_ids.get(entry.pred_id.clone()).unwrap_or_default()
    }

    /// The Kinesis partition key for the prediction event of the record at `index`: its
    /// `pred_id` as text, like Python's `str(pred_id)` for strings and integers.
    pub fn partition_key(&self, index: usize) -> Cow<'_, str> {
        let pred_id = self.entries.get(index).map(|entry| self.pred_id(entry));
        partition_key(pred_id.unwrap_or_default()).unwrap_or_default()
    }

    /// Each predicted record's position and event, in event order.
    pub fn predicted(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match &entry.fate {
                Fate::Predicted { event } => {
                    Some((index, self.events.get(event.clone()).unwrap_or_default()))
                }
                _ => None,
            })
    }

    /// Each rejected record's position and reason, in event order.
    pub fn rejections(&self) -> impl Iterator<Item = (usize, &RejectReason)> + '_ {
        self.entries_if(self.rejected > 0)
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| match &entry.fate {
                Fate::Rejected(reason) => Some((index, reason)),
                _ => None,
            })
    }

    /// Why the record at `index` was rejected, if it was.
    pub fn rejection(&self, index: usize) -> Option<&RejectReason> {
        match self.entries.get(index).map(|entry| &entry.fate) {
            Some(Fate::Rejected(reason)) => Some(reason),
            _ => None,
        }
    }

    /// Marks the records at these positions for re-delivery.
    pub fn redeliver(&mut self, records: impl IntoIterator<Item = usize>) {
        for index in records {
            if let Some(entry) = self.entries.get_mut(index) {
                self.redelivered += usize::from(!entry.redeliver);
                entry.redeliver = true;
            }
        }
    }

    /// The sequence numbers of the records Lambda must deliver again, in event order. The user
    /// records of one aggregate share its sequence number, which is listed once: Lambda
    /// re-delivers the aggregate whole.
    pub fn redeliveries(&self) -> impl Iterator<Item = &'e str> + '_ {
        let mut last = None;
        self.entries_if(self.redelivered > 0)
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.redeliver)
            .map(|(index, _)| self.record(index))
            .filter(move |record| {
                let listed =
                    record.sub_sequence_number.is_some() && last == Some(record.sequence_number);
                last = Some(record.sequence_number);
                !listed
            })
            .map(|record| record.sequence_number)
    }

    /// Number of records in the event.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the event had no records.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many records are in each state: (predicted, rejected, to re-deliver).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.predicted, self.rejected, self.redelivered)
    }

    /// Every entry, or none when `any` is false: a list with nothing in it is not walked.
    fn entries_if(&self, any: bool) -> &[Entry] {
        match any {
            true => &self.entries,
            false => &[],
        }
    }

    /// Total bytes of all prediction events.
    pub fn event_bytes(&self) -> usize {
        self.events.len()
    }
}
