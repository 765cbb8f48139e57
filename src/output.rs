//! Prediction events and the Lambda response, written as JSON into preallocated buffers.
//!
//! A prediction event is
//! `{"model": <name>, "version": <RUN_ID>, "prediction": {"cnt": <float>, "pred_id": <echoed>}}`
//! (README, "Compatibility"),
//! with the regressor's value under [`crate::config::Config::prediction_field`] (`cnt` unless
//! set; an array for several targets). A classifier's prediction is
//! `{"label": <label>, "probabilities": {"<class>": <probability>, ...}, "pred_id": ...}`.
//! The response is `{"predictions": [<events>], "rejected": [...], "batchItemFailures": [...]}`:
//! `batchItemFailures` is Lambda's partial-batch response, listing only records to re-deliver.
//! A rejected user record of a KPL aggregate is listed with its `subSequenceNumber` beside its
//! aggregate's `sequenceNumber`.

use std::borrow::Cow;
use std::ops::Range;

use serde::Serialize;

use sha2::Digest as _;

use crate::event::{RejectReason, is_partition_key};
use crate::kinesis::KinesisRecord;
use crate::ledger::Ledger;
use crate::model::{Label, Prediction, Predictions, RowsPredicted, Values};

/// Bytes a prediction event takes besides the model name, version and `pred_id`; used to size
/// the output buffer once per batch.
const EVENT_OVERHEAD: usize = 80;

/// Writes prediction events stamped with the model's name and version.
#[derive(Debug, Clone)]
pub struct EventEncoder {
    /// `{"model":<name>,"version":<version>,"prediction":{`, escaped once at start-up.
    prefix: Vec<u8>,
    /// The prefix and `"<field>":`, the key of a regressor's value.
    value_prefix: Vec<u8>,
}

impl EventEncoder {
    /// An encoder for events of model `model_name` at `version` (the MLflow `RUN_ID`), writing
    /// a regressor's value under `prediction_field`.
    pub fn new(model_name: &str, version: &str, prediction_field: &str) -> Self {
        let mut prefix = Vec::new();
        prefix.extend_from_slice(b"{\"model\":");
        write_json(&mut prefix, model_name);
        prefix.extend_from_slice(b",\"version\":");
        write_json(&mut prefix, version);
        prefix.extend_from_slice(b",\"prediction\":{");
        let mut value_prefix = prefix.clone();
        write_json(&mut value_prefix, prediction_field);
        value_prefix.push(b':');
        Self {
            prefix,
            value_prefix,
        }
    }

    /// Writes the event of every decoded record of `ledger` from the predictions of its rows
    /// ([`Model::predict_isolating`](crate::model::Model::predict_isolating)); a record whose
    /// rows ONNX Runtime failed on is rejected with what it said.
    pub fn encode_batch(&self, ledger: &mut Ledger<'_>, predicted: &[RowsPredicted]) {
        if let [(rows, Ok(predictions))] = predicted {
            ledger.event_buffer(ledger.len() * (self.value_prefix.len() + EVENT_OVERHEAD));
            return self.encode_rows(ledger, predictions, rows.clone());
        }
        // Rows come in event order, and so do the ranges: one pass over both.
        let mut ranges = predicted.iter().peekable();
        ledger.encode_each(0..usize::MAX, |row, pred_id, out| {
            while ranges.next_if(|(rows, _)| rows.end <= row).is_some() {}
            match ranges.peek() {
                Some((rows, Ok(predictions))) if rows.contains(&row) => {
                    let prediction = predictions
                        .row(row - rows.start)
                        .ok_or(RejectReason::NonFinitePrediction)?;
                    self.write_prediction(out, prediction)?;
                    end_event(out, pred_id);
                    Ok(())
                }
                Some((_, Err(error))) => Err(RejectReason::InferenceFailed(
                    crate::handler::error_chain(error),
                )),
                _ => Err(RejectReason::NonFinitePrediction),
            }
        });
    }

    /// Writes the event of every decoded record of `ledger`, whose row of `predictions` is its
    /// prediction. A record whose prediction is not finite (JSON cannot carry it) is rejected
    /// instead.
    pub fn encode(&self, ledger: &mut Ledger<'_>, predictions: &Predictions) {
        ledger.event_buffer(ledger.len() * (self.value_prefix.len() + EVENT_OVERHEAD));
        self.encode_rows(ledger, predictions, 0..usize::MAX);
    }

    /// [`Self::encode`] for the records of rows `rows`, predicted in `predictions`.
    fn encode_rows(&self, ledger: &mut Ledger<'_>, predictions: &Predictions, rows: Range<usize>) {
        // One float32 value per row, the most common model: written straight from the values,
        // the shape of every other prediction decided row by row.
        if let Predictions::Values {
            values: Values::Float32(values),
            width: 1,
        } = predictions
        {
            ledger.encode_each(rows, |row, pred_id, out| {
                let value = values.get(row).copied().unwrap_or(f32::NAN);
                if !value.is_finite() {
                    return Err(RejectReason::NonFinitePrediction);
                }
                out.extend_from_slice(&self.value_prefix);
                write_json(out, &value);
                end_event(out, pred_id);
                Ok(())
            });
            return;
        }
        ledger.encode_each(rows, |row, pred_id, out| {
            let prediction = predictions
                .row(row)
                .ok_or(RejectReason::NonFinitePrediction)?;
            self.write_prediction(out, prediction)?;
            end_event(out, pred_id);
            Ok(())
        });
    }

    fn write_prediction(
        &self,
        out: &mut Vec<u8>,
        prediction: Prediction<'_>,
    ) -> Result<(), RejectReason> {
        match prediction {
            Prediction::Float32(values) => {
                out.extend_from_slice(&self.value_prefix);
                write_values(out, values, |value| value.is_finite())
            }
            Prediction::Float64(values) => {
                out.extend_from_slice(&self.value_prefix);
                write_values(out, values, |value| value.is_finite())
            }
            Prediction::Class {
                label,
                classes,
                probabilities,
            } => {
                out.extend_from_slice(&self.prefix);
                out.extend_from_slice(b"\"label\":");
                match label {
                    Label::Int64(label) => write_json(out, &label),
                    Label::String(label) => write_json(out, label),
                }
                if probabilities.is_empty() {
                    return Ok(());
                }
                if !probabilities.iter().all(|p| p.is_finite()) {
                    return Err(RejectReason::NonFinitePrediction);
                }
                out.extend_from_slice(b",\"probabilities\":{");
                write_list(out, classes.iter().zip(probabilities), |out, (class, p)| {
                    write_json(out, class);
                    out.push(b':');
                    write_json(out, p);
                });
                out.push(b'}');
                Ok(())
            }
        }
    }
}

/// Ends an event: the echoed `pred_id` and the closing braces.
fn end_event(out: &mut Vec<u8>, pred_id: &str) {
    out.extend_from_slice(b",\"pred_id\":");
    out.extend_from_slice(pred_id.as_bytes());
    out.extend_from_slice(b"}}");
}

/// Writes one value, or several as an array; all must be finite.
fn write_values<T: Serialize + Copy>(
    out: &mut Vec<u8>,
    values: &[T],
    finite: impl Fn(T) -> bool,
) -> Result<(), RejectReason> {
    if !values.iter().all(|&value| finite(value)) {
        return Err(RejectReason::NonFinitePrediction);
    }
    match values {
        [value] => write_json(out, value),
        values => {
            out.push(b'[');
            write_list(out, values, |out, value| write_json(out, value));
            out.push(b']');
        }
    }
    Ok(())
}

/// A rejected record as listed in the response, and the start of its dead letter.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RejectedEntry<'a> {
    sequence_number: &'a str,
    /// A user record of an aggregate is identified by its position in it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_sequence_number: Option<u32>,
    partition_key: &'a str,
    code: &'static str,
    reason: String,
}

impl<'a> RejectedEntry<'a> {
    fn new(record: &KinesisRecord<'a>, reason: &RejectReason) -> Self {
        Self {
            sequence_number: record.sequence_number,
            sub_sequence_number: record.sub_sequence_number,
            partition_key: record.partition_key,
            code: reason.code(),
            reason: reason.to_string(),
        }
    }
}

/// Largest response Lambda takes back from a function: 6 MB. A larger one fails the
/// invocation, and the event source mapping then retries the whole batch.
pub const MAX_RESPONSE_BYTES: usize = 6_000_000;

/// Writes the handler's response from the ledger: every prediction event, every rejected
/// record, and the records Lambda should re-deliver (those that could not be published).
///
/// With a `limit`, the response stays within it: the records to re-deliver come first (if
/// even they do not fit, only the first is listed, which is all Lambda needs: it re-delivers
/// from the lowest sequence number reported), then the rejected records, then the
/// predictions; any left out are counted in `"omitted": {"predictions": n, "rejected": n}`.
pub fn write_response(ledger: &Ledger<'_>, limit: Option<usize>) -> Vec<u8> {
    // `{"predictions":[],"rejected":[],"batchItemFailures":[]}` and the omitted counts.
    const FRAME: usize = 128;
    let limit = limit.unwrap_or(usize::MAX);
    let write_failure = |out: &mut Vec<u8>, sequence_number: &str| {
        out.extend_from_slice(b"{\"itemIdentifier\":");
        write_json(out, sequence_number);
        out.push(b'}');
    };
    let mut failures = Vec::new();
    write_list(&mut failures, ledger.redeliveries(), write_failure);
    if failures.len() + FRAME > limit {
        failures.clear();
        write_list(&mut failures, ledger.redeliveries().take(1), write_failure);
    }
    let mut budget = limit.saturating_sub(FRAME + failures.len());

    let mut rejected = Vec::new();
    let mut omitted_rejected = 0;
    for (record, reason) in ledger.rejections() {
        let start = rejected.len();
        if start > 0 {
            rejected.push(b',');
        }
        write_json(
            &mut rejected,
            &RejectedEntry::new(&ledger.record(record), reason),
        );
        if rejected.len() > budget {
            rejected.truncate(start);
            omitted_rejected += 1;
        }
    }
    budget = budget.saturating_sub(rejected.len());

    let (predicted, _, _) = ledger.counts();
    let mut out = Vec::with_capacity(
        ledger.event_bytes().min(budget) + predicted + rejected.len() + failures.len() + FRAME,
    );
    out.extend_from_slice(b"{\"predictions\":[");
    let mut omitted_predictions = 0;
    let mut written = 0;
    for (_, event) in ledger.predicted() {
        let size = event.len() + usize::from(written > 0);
        if size > budget - written.min(budget) {
            omitted_predictions += 1;
            continue;
        }
        if written > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
        written += size;
    }
    out.extend_from_slice(b"],\"rejected\":[");
    out.extend_from_slice(&rejected);
    out.extend_from_slice(b"],\"batchItemFailures\":[");
    out.extend_from_slice(&failures);
    out.push(b']');
    if omitted_predictions + omitted_rejected > 0 {
        out.extend_from_slice(b",\"omitted\":{\"predictions\":");
        write_json(&mut out, &omitted_predictions);
        out.extend_from_slice(b",\"rejected\":");
        write_json(&mut out, &omitted_rejected);
        out.push(b'}');
    }
    out.push(b'}');
    out
}

/// A rejected record as kept in the dead-letter stream: everything needed to inspect it and
/// to replay it (`data` is the record's data exactly as it arrived, base64). A letter too
/// large for one stream record is split into `parts` letters, numbered from 1 in `part`, each
/// with a slice of `data` (a multiple of 4 base64 characters, so each slice decodes alone).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetterJson<'a> {
    #[serde(flatten)]
    entry: &'a RejectedEntry<'a>,
    data: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parts: Option<usize>,
    model: &'a str,
    version: &'a str,
}

/// The dead letter of one rejected record, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'e> {
    /// The record's position in the event.
    pub record: usize,
    /// The partition key to put it under.
    pub partition_key: &'e str,
    /// The letter's JSON: one document, or its parts in order when it does not fit in one
    /// stream record; none when even its description without data does not fit.
    pub parts: Vec<Vec<u8>>,
}

/// Smallest slice of data a part carries: below it, the letter's description alone takes
/// nearly a whole record, which a real Kinesis record never makes it do.
const MIN_PART_DATA: usize = 1024;

/// The dead letter of each rejected record of the ledger at `rejected` (positions in the
/// event), each part within `max_record_bytes` with its partition key: the record's own
/// partition key, or its sequence number if that is not a usable key.
pub fn dead_letters<'e>(
    ledger: &Ledger<'e>,
    rejected: &[usize],
    model: &str,
    version: &str,
    max_record_bytes: usize,
) -> Vec<DeadLetter<'e>> {
    rejected
        .iter()
        .filter_map(|&index| Some((index, ledger.rejection(index)?)))
        .map(|(index, reason)| {
            let record = ledger.record(index);
            let partition_key = letter_key(&record);
            let entry = RejectedEntry::new(&record, reason);
            let data = original_data(record.data);
            let letter = |data: &str, part: Option<(usize, usize)>| {
                let mut json = Vec::new();
                let letter = DeadLetterJson {
                    entry: &entry,
                    data,
                    part: part.map(|(part, _)| part),
                    parts: part.map(|(_, parts)| parts),
                    model,
                    version,
                };
                write_json(&mut json, &letter);
                json
            };
            let budget = max_record_bytes.saturating_sub(partition_key.len());
            let whole = letter(&data, None);
            let parts = match whole.len() <= budget {
                true => vec![whole],
                false => split_letter(&data, budget, letter),
            };
            DeadLetter {
                record: index,
                partition_key,
                parts,
            }
        })
        .collect()
}

/// The parts of a letter whose data does not fit in one record of `budget` bytes: slices of
/// `data` as large as fit, each written by `letter`; none if a slice of [`MIN_PART_DATA`]
/// would not fit.
fn split_letter(
    data: &str,
    budget: usize,
    letter: impl Fn(&str, Option<(usize, usize)>) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    // What a part takes besides its data, counting up to 20 digits for each part number.
    let overhead = letter("", Some((usize::MAX, usize::MAX))).len();
    // A multiple of 4, so that base64 is cut between its 4-character groups.
    let room = budget.saturating_sub(overhead) / 4 * 4;
    if room < MIN_PART_DATA {
        return Vec::new();
    }
    let slices = slices(data, room);
    let parts: Vec<Vec<u8>> = slices
        .iter()
        .enumerate()
        .map(|(position, data)| letter(data, Some((position + 1, slices.len()))))
        .collect();
    match parts.iter().all(|part| part.len() <= budget) {
        true => parts,
        false => Vec::new(),
    }
}

/// `text` cut into slices that take at most `room` bytes each as JSON string contents.
fn slices(text: &str, room: usize) -> Vec<&str> {
    let mut slices = Vec::new();
    let (mut start, mut taken) = (0, 0);
    for (position, character) in text.char_indices() {
        let size = escaped_len(character);
        if taken + size > room && position > start {
            slices.extend(text.get(start..position));
            (start, taken) = (position, 0);
        }
        taken += size;
    }
    slices.extend(text.get(start..).filter(|rest| !rest.is_empty()));
    slices
}

/// Longest partition key or sequence number, as JSON string contents, written whole into a log
/// line; Kinesis's are at most 256 characters and 128 digits.
pub const MAX_LOGGED_FIELD: usize = 1024;

/// `text` for a log line: whole, or its start within [`MAX_LOGGED_FIELD`] and its size.
pub fn logged_field(text: &str) -> Cow<'_, str> {
    if escaped_size(text) <= MAX_LOGGED_FIELD {
        return Cow::Borrowed(text);
    }
    let start = slices(text, MAX_LOGGED_FIELD / 2)
        .into_iter()
        .next()
        .unwrap_or_default();
    Cow::Owned(format!("{start}... ({} bytes in all)", text.len()))
}

/// Bytes `text` takes as JSON string contents.
fn escaped_size(text: &str) -> usize {
    text.chars().map(escaped_len).sum()
}

/// Bytes `character` takes inside a JSON string as `serde_json` writes it.
fn escaped_len(character: char) -> usize {
    match character {
        '"' | '\\' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r' => 2,
        '\0'..='\u{1f}' => 6,
        _ => character.len_utf8(),
    }
}

/// The partition key of a record's dead letter: its own partition key, else its sequence
/// number, else a fixed key, whichever Kinesis can take first.
fn letter_key<'e>(record: &KinesisRecord<'e>) -> &'e str {
    [record.partition_key, record.sequence_number]
        .into_iter()
        .find(|key| is_partition_key(key))
        .unwrap_or("dead-letter")
}

/// A record's data as it arrived in the event: base64 text.
pub fn original_data<'a>(data: Result<&'a [u8], &'a str>) -> Cow<'a, str> {
    match data {
        Ok(decoded) => Cow::Owned(base64_simd::STANDARD.encode_to_string(decoded)),
        Err(undecodable) => Cow::Borrowed(undecodable),
    }
}

/// Longest record data, as base64 characters, written into a log line: with the rest of the
/// `record rejected` line it stays under 64 KiB, inside CloudWatch Logs' limit on one log
/// event and the size Lambda's log capture is known to deliver as one line.
pub const MAX_LOGGED_DATA: usize = 48 * 1024;

/// How a rejected record's data is written into the log when there is no dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoggedData<'a> {
    /// In full, as it arrived (base64).
    Full(Cow<'a, str>),
    /// Too large for a log line: its size and SHA-256 digest, to find and check it in the input
    /// stream by its sequence number.
    Digest {
        /// Bytes of the data as it arrived (decoded from base64 when it could be).
        bytes: usize,
        /// SHA-256 of those bytes, lowercase hex.
        sha256: String,
    },
}

/// The log form of a record's data: in full up to [`MAX_LOGGED_DATA`] base64 characters, a
/// digest beyond.
pub fn logged_data<'a>(data: Result<&'a [u8], &'a str>) -> LoggedData<'a> {
    let bytes = match data {
        Ok(decoded) if decoded.len().div_ceil(3) * 4 <= MAX_LOGGED_DATA => {
            return LoggedData::Full(original_data(data));
        }
        Err(text) if escaped_size(text) <= MAX_LOGGED_DATA => {
            return LoggedData::Full(text.into());
        }
        Ok(decoded) => decoded,
        Err(text) => text.as_bytes(),
    };
    let digest = sha2::Sha256::digest(bytes);
    LoggedData::Digest {
        bytes: bytes.len(),
        sha256: digest.iter().map(|byte| format!("{byte:02x}")).collect(),
    }
}

/// Appends the items separated by commas, each written by `write`.
fn write_list<T>(
    out: &mut Vec<u8>,
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(&mut Vec<u8>, T),
) {
    for (position, item) in items.into_iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        write(out, item);
    }
}

/// Appends `value` as JSON. Writing our own plain data types into a `Vec` cannot fail.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let written = serde_json::to_writer(&mut *out, value);
    debug_assert!(written.is_ok(), "serializing into a Vec failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event;
    use crate::inputs::InputLayout;
    use crate::kinesis::KinesisBatch;
    use crate::model::{Labels, Values};

    fn event_with(payloads: &[&str]) -> Vec<u8> {
        use base64::Engine as _;
        let records: Vec<String> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                format!(
                    r#"{{"kinesis":{{"partitionKey":"p{i}","sequenceNumber":"{i}","data":"{}"}}}}"#,
                    base64::engine::general_purpose::STANDARD.encode(payload)
                )
            })
            .collect();
        format!(r#"{{"Records":[{}]}}"#, records.join(",")).into_bytes()
    }

    fn values(values: &[f32], width: usize) -> Predictions {
        Predictions::Values {
            values: Values::Float32(values.to_vec()),
            width,
        }
    }

    /// The events the encoder writes for `payloads` (one float column `x`) and `predictions`.
    fn encoded(
        encoder: &EventEncoder,
        payloads: &[&str],
        predictions: &Predictions,
    ) -> Vec<serde_json::Value> {
        let raw = event_with(payloads);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        encoder.encode(&mut ledger, predictions);
        ledger
            .predicted()
            .map(|(_, json)| serde_json::from_slice(json).unwrap())
            .collect()
    }

    #[test]
    fn event_has_the_documented_shape_and_echoes_pred_id_unchanged() {
        let encoder = EventEncoder::new("bike \"demand\"", "run-1", "cnt");
        let events = encoded(
            &encoder,
            &[
                r#"{"features":{"x":1},"pred_id":123}"#,
                r#"{"features":{"x":2},"pred_id":"a\"b"}"#,
            ],
            &values(&[1.5, 20.25], 1),
        );
        assert_eq!(
            events[0],
            serde_json::json!({"model": "bike \"demand\"", "version": "run-1", "prediction": {"cnt": 1.5, "pred_id": 123}})
        );
        assert_eq!(events[1]["prediction"]["pred_id"], "a\"b");
    }

    #[test]
    fn bundled_model_event_bytes_are_unchanged() {
        let raw = event_with(&[r#"{"features":{"x":1},"pred_id":123}"#]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        EventEncoder::new("bike-demand", "local", "cnt").encode(&mut ledger, &values(&[19.44], 1));
        let (_, event) = ledger.predicted().next().unwrap();
        assert_eq!(
            std::str::from_utf8(event).unwrap(),
            r#"{"model":"bike-demand","version":"local","prediction":{"cnt":19.44,"pred_id":123}}"#
        );
    }

    #[test]
    fn prediction_field_and_several_targets() {
        let encoder = EventEncoder::new("m", "v", "demand \"now\"");
        let events = encoded(
            &encoder,
            &[r#"{"features":{"x":1},"pred_id":1}"#],
            &values(&[1.5, -2.0], 2),
        );
        assert_eq!(
            events[0]["prediction"],
            serde_json::json!({"demand \"now\"": [1.5, -2.0], "pred_id": 1})
        );
        let events = encoded(
            &encoder,
            &[r#"{"features":{"x":1},"pred_id":1}"#],
            &Predictions::Values {
                values: Values::Float64(vec![0.1]),
                width: 1,
            },
        );
        assert_eq!(events[0]["prediction"]["demand \"now\""], 0.1);
    }

    #[test]
    fn classifier_event_has_the_label_as_given_and_probabilities_by_class() {
        let encoder = EventEncoder::new("m", "v", "cnt");
        let payloads = [
            r#"{"features":{"x":1},"pred_id":1}"#,
            r#"{"features":{"x":2},"pred_id":2}"#,
        ];
        let strings = Predictions::Classes {
            labels: Labels::String(vec!["high".into(), "low \"x\"".into()]),
            classes: vec!["high".into(), "low \"x\"".into()],
            probabilities: vec![0.75, 0.25, 0.5, 0.5],
        };
        let events = encoded(&encoder, &payloads, &strings);
        assert_eq!(
            events[0]["prediction"],
            serde_json::json!({"label": "high", "probabilities": {"high": 0.75, "low \"x\"": 0.25}, "pred_id": 1})
        );
        assert_eq!(events[1]["prediction"]["label"], "low \"x\"");
        let integers = Predictions::Classes {
            labels: Labels::Int64(vec![2, 0]),
            classes: vec!["0".into(), "2".into()],
            probabilities: vec![0.1, 0.9, 0.8, 0.2],
        };
        let events = encoded(&encoder, &payloads, &integers);
        assert_eq!(
            events[0]["prediction"],
            serde_json::json!({"label": 2, "probabilities": {"0": 0.1, "2": 0.9}, "pred_id": 1})
        );
        let labels_only = Predictions::Classes {
            labels: Labels::Int64(vec![2, 0]),
            classes: vec![],
            probabilities: vec![],
        };
        let events = encoded(&encoder, &payloads, &labels_only);
        assert_eq!(
            events[1]["prediction"],
            serde_json::json!({"label": 0, "pred_id": 2})
        );
    }

    #[test]
    fn non_finite_prediction_is_rejected_not_written() {
        let raw = event_with(&[
            r#"{"features":{"x":1},"pred_id":1}"#,
            r#"{"features":{"x":2},"pred_id":2}"#,
            r#"{"features":{"x":3},"pred_id":3}"#,
        ]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        let predictions = Predictions::Classes {
            labels: Labels::Int64(vec![0, 1, 1]),
            classes: vec!["0".into(), "1".into()],
            probabilities: vec![0.5, 0.5, 1.0, f32::NAN, 0.0, f32::INFINITY],
        };
        EventEncoder::new("m", "v", "cnt").encode(&mut ledger, &predictions);
        let predicted: Vec<usize> = ledger.predicted().map(|(record, _)| record).collect();
        assert_eq!(predicted, [0]);
        let rejected: Vec<_> = ledger.rejections().collect();
        assert_eq!(
            rejected,
            [
                (1, &RejectReason::NonFinitePrediction),
                (2, &RejectReason::NonFinitePrediction)
            ]
        );
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        EventEncoder::new("m", "v", "cnt").encode(&mut ledger, &values(&[f32::NAN, 3.0, 1.0], 1));
        let predicted: Vec<usize> = ledger.predicted().map(|(record, _)| record).collect();
        assert_eq!(predicted, [1, 2]);
    }

    #[test]
    fn dead_letter_keeps_the_record_as_it_arrived_with_its_reason() {
        let raw = event_with(&["not json"]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        let letters = dead_letters(&ledger, &[0], "m", "v1", 1 << 20);
        let DeadLetter {
            record,
            partition_key,
            parts,
        } = &letters[0];
        let [json] = &parts[..] else {
            panic!("{} parts", parts.len())
        };
        let letter: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!((*record, *partition_key), (0, "p0"));
        assert!(letter.get("part").is_none() && letter.get("parts").is_none());
        assert_eq!(letter["sequenceNumber"], "0");
        assert_eq!(letter["code"], "not_json");
        assert_eq!(letter["version"], "v1");
        use base64::Engine as _;
        let data =
            base64::engine::general_purpose::STANDARD.decode(letter["data"].as_str().unwrap());
        assert_eq!(data.unwrap(), b"not json");
    }

    #[test]
    fn response_lists_predictions_rejections_and_failures() {
        let raw = event_with(&[r#"{"features":{"x":1},"pred_id":1}"#, "not json"]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        EventEncoder::new("m", "v", "cnt").encode(&mut ledger, &values(&[2.0], 1));
        ledger.redeliver([0]);
        let response = write_response(&ledger, None);
        let response: serde_json::Value = serde_json::from_slice(&response).unwrap();
        assert_eq!(response["predictions"][0]["prediction"]["cnt"], 2.0);
        assert_eq!(response["rejected"][0]["sequenceNumber"], "1");
        assert_eq!(response["rejected"][0]["partitionKey"], "p1");
        assert_eq!(response["rejected"][0]["code"], "not_json");
        assert_eq!(
            response["batchItemFailures"],
            serde_json::json!([{"itemIdentifier": "0"}])
        );
    }

    #[test]
    fn user_records_are_identified_by_sub_sequence_number_and_their_aggregate_re_delivered_once() {
        use crate::kinesis::tests::{aggregated, event_of};
        let good = |x: u32| format!(r#"{{"features":{{"x":{x}}},"pred_id":{x}}}"#);
        let (one, two, three) = (good(1), good(2), good(3));
        let aggregate = aggregated(
            &["a", "b"],
            &[(0, two.as_bytes()), (1, b"not json"), (0, three.as_bytes())],
        );
        let mut corrupt = aggregated(&["c"], &[(0, b"lost")]);
        corrupt.truncate(10);
        let raw = event_of(&[one.as_bytes(), &aggregate, &corrupt]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        EventEncoder::new("m", "v", "cnt").encode(&mut ledger, &values(&[1.0, 2.0, 3.0], 1));
        let pred_ids: Vec<_> = ledger
            .predicted()
            .map(|(index, _)| ledger.partition_key(index))
            .collect();
        assert_eq!(pred_ids, ["1", "2", "3"]);
        // The plain record and both predicted user records of the aggregate fail to publish.
        ledger.redeliver([0, 1, 3]);
        assert_eq!(ledger.counts(), (3, 2, 3));
        let response: serde_json::Value =
            serde_json::from_slice(&write_response(&ledger, None)).unwrap();
        assert_eq!(
            response["batchItemFailures"],
            serde_json::json!([{"itemIdentifier": "1"}, {"itemIdentifier": "2"}])
        );
        let rejected = &response["rejected"];
        assert_eq!(
            rejected[0],
            serde_json::json!({
                "sequenceNumber": "2", "subSequenceNumber": 1, "partitionKey": "b",
                "code": "not_json", "reason": "data is not valid JSON: expected ident at line 1 column 2"
            })
        );
        assert_eq!(
            rejected[1],
            serde_json::json!({
                "sequenceNumber": "3", "partitionKey": "k3", "code": "invalid_aggregate",
                "reason": "data is a KPL aggregated record that cannot be read: its 10 bytes are too few for the magic number and the 16-byte MD5 digest"
            })
        );

        let letters = dead_letters(&ledger, &[2, 4], "m", "v", 1 << 20);
        use base64::Engine as _;
        let letter = |index: usize| -> (serde_json::Value, Vec<u8>) {
            let json: serde_json::Value = serde_json::from_slice(&letters[index].parts[0]).unwrap();
            let data = base64::engine::general_purpose::STANDARD
                .decode(json["data"].as_str().unwrap())
                .unwrap();
            (json, data)
        };
        let (json, data) = letter(0);
        assert_eq!((letters[0].record, letters[0].partition_key), (2, "b"));
        assert_eq!(
            (&json["sequenceNumber"], &json["subSequenceNumber"]),
            (&"2".into(), &1.into())
        );
        assert_eq!(data, b"not json");
        let (json, data) = letter(1);
        assert_eq!((letters[1].record, letters[1].partition_key), (4, "k3"));
        assert!(json.get("subSequenceNumber").is_none());
        assert_eq!(json["code"], "invalid_aggregate");
        assert_eq!(data, corrupt, "the aggregate's data as it came");
    }

    /// The ledger of `raw`, every record rejected as not JSON unless it is a good record of
    /// one float column `x`.
    fn rejected_ledger(raw: &KinesisBatch) -> Ledger<'_> {
        event::decode(raw, &InputLayout::float_columns(&["x"])).0
    }

    /// The record data `letter` carries, from all its parts, checking each part fits `limit`.
    fn reassembled(letter: &DeadLetter<'_>, limit: usize) -> Vec<u8> {
        use base64::Engine as _;
        let mut data = String::new();
        for (position, part) in letter.parts.iter().enumerate() {
            assert!(
                part.len() + letter.partition_key.len() <= limit,
                "part {position}: {} bytes over {limit}",
                part.len() + letter.partition_key.len()
            );
            let json: serde_json::Value = serde_json::from_slice(part).unwrap();
            if letter.parts.len() > 1 {
                assert_eq!(json["part"], position + 1);
                assert_eq!(json["parts"], letter.parts.len());
                let slice = json["data"].as_str().unwrap();
                // Every part decodes alone.
                assert!(
                    base64::engine::general_purpose::STANDARD
                        .decode(slice)
                        .is_ok()
                );
            }
            data.push_str(json["data"].as_str().unwrap());
        }
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    }

    #[test]
    fn a_dead_letter_that_fits_one_record_exactly_is_one_letter_one_byte_more_is_split() {
        let payload = "x".repeat(10_000);
        let raw = event_with(&[&payload]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let ledger = rejected_ledger(&records);
        let whole = &dead_letters(&ledger, &[0], "m", "v", usize::MAX)[0];
        let exact = whole.parts[0].len() + whole.partition_key.len();

        let letter = &dead_letters(&ledger, &[0], "m", "v", exact)[0];
        assert_eq!(letter.parts.len(), 1);
        assert_eq!(reassembled(letter, exact), payload.as_bytes());

        for limit in [exact - 1, exact / 2, 4096] {
            let letter = &dead_letters(&ledger, &[0], "m", "v", limit)[0];
            assert!(letter.parts.len() >= 2, "{limit}");
            assert_eq!(reassembled(letter, limit), payload.as_bytes(), "{limit}");
        }
    }

    #[test]
    fn a_rejected_record_at_kinesis_size_limit_fits_a_1_mib_dead_letter_stream_in_parts() {
        // 1 MiB of data, the most a Kinesis record holds, and its partition key.
        let payload = "y".repeat(1024 * 1024 - 2);
        let raw = event_with(&[&payload]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let ledger = rejected_ledger(&records);
        let limit = 1024 * 1024;
        let letter = &dead_letters(&ledger, &[0], "m", "v", limit)[0];
        assert_eq!(letter.parts.len(), 2);
        assert_eq!(reassembled(letter, limit), payload.as_bytes());
    }

    #[test]
    fn undecodable_data_with_escapes_and_wide_characters_is_split_on_character_boundaries() {
        // Not base64: kept as the text it was, which JSON escapes (quotes, control characters)
        // or carries as multi-byte UTF-8.
        let text = "\\\"\\u0001é€😀".repeat(2000);
        let raw = format!(
            r#"{{"Records":[{{"kinesis":{{"partitionKey":"k","sequenceNumber":"1","data":"{text}"}}}}]}}"#
        );
        let records = KinesisBatch::from_slice(raw.as_bytes()).unwrap();
        let ledger = rejected_ledger(&records);
        let expected = match records.get(0).unwrap().data {
            Err(text) => text.to_owned(),
            Ok(_) => panic!("the data decoded"),
        };
        for limit in [2048, 5000, 1 << 20] {
            let letter = &dead_letters(&ledger, &[0], "m", "v", limit)[0];
            let mut data = String::new();
            for part in &letter.parts {
                assert!(part.len() + letter.partition_key.len() <= limit, "{limit}");
                let json: serde_json::Value = serde_json::from_slice(part).unwrap();
                data.push_str(json["data"].as_str().unwrap());
            }
            assert_eq!(data, expected, "{limit}");
        }
    }

    #[test]
    fn dead_letter_keys_are_the_record_key_else_its_sequence_number_when_kinesis_can_take_them() {
        let long = "k".repeat(257);
        let raw = format!(
            r#"{{"Records":[
            {{"kinesis":{{"partitionKey":"","sequenceNumber":"11","data":"eA=="}}}},
            {{"kinesis":{{"partitionKey":"{long}","sequenceNumber":"12","data":"eA=="}}}},
            {{"kinesis":{{"partitionKey":"","sequenceNumber":"","data":"eA=="}}}},
            {{"kinesis":{{"partitionKey":"{}","sequenceNumber":"14","data":"eA=="}}}}]}}"#,
            "é".repeat(256)
        );
        let records = KinesisBatch::from_slice(raw.as_bytes()).unwrap();
        let ledger = rejected_ledger(&records);
        let keys: Vec<&str> = dead_letters(&ledger, &[0, 1, 2, 3], "m", "v", 1 << 20)
            .iter()
            .map(|letter| letter.partition_key)
            .collect();
        let wide = "é".repeat(256);
        assert_eq!(keys, ["11", "12", "dead-letter", wide.as_str()]);
    }

    #[test]
    fn logged_data_is_in_full_up_to_the_limit_and_a_digest_beyond() {
        let fits = MAX_LOGGED_DATA / 4 * 3;
        let data = vec![b'a'; fits];
        let LoggedData::Full(text) = logged_data(Ok(&data)) else {
            panic!("{fits} bytes are {} base64 characters", fits / 3 * 4)
        };
        assert_eq!(text.len(), MAX_LOGGED_DATA);
        let data = vec![b'a'; fits + 1];
        assert!(matches!(
            logged_data(Ok(&data)),
            LoggedData::Digest { bytes, .. } if bytes == fits + 1
        ));
        // Undecodable text is logged as it was, and digested as its bytes.
        let text = "!".repeat(MAX_LOGGED_DATA + 1);
        assert!(matches!(logged_data(Err(&text[1..])), LoggedData::Full(_)));
        assert!(matches!(
            logged_data(Err(&text)),
            LoggedData::Digest { bytes, .. } if bytes == text.len()
        ));
        let LoggedData::Digest { sha256, bytes } = logged_data(Ok(&abc_block())) else {
            panic!("not a digest")
        };
        assert_eq!(bytes, abc_block().len());
        assert_eq!(sha256, ABC_BLOCK_SHA256);
    }

    /// "abc" repeated past the log limit, and its SHA-256 from Python's `hashlib`
    /// (`hashlib.sha256(b"abc" * 20000).hexdigest()`).
    fn abc_block() -> Vec<u8> {
        b"abc".repeat(20_000)
    }
    const ABC_BLOCK_SHA256: &str =
        "3d6ab72a9526babd989fae0859439ff5934bb194f416bdb102a9b1c03dbe6d70";

    #[test]
    fn responses_stay_within_the_limit_keeping_failures_then_rejections_then_predictions() {
        // 300 records: every third not JSON, the others predicted, every fifth to re-deliver.
        let payloads: Vec<String> = (0..300)
            .map(|i| match i % 3 {
                0 => format!("not json {i}"),
                _ => format!(
                    r#"{{"features":{{"x":{i}}},"pred_id":"{}"}}"#,
                    "\\u0001".repeat(i)
                ),
            })
            .collect();
        let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let raw = event_with(&payloads);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
        EventEncoder::new("m", "v", "cnt").encode(&mut ledger, &values(&[1.0; 200], 1));
        ledger.redeliver((0..300).filter(|i| i % 5 == 1));
        let (predicted, rejected, redelivered) = ledger.counts();
        let full = write_response(&ledger, None);
        for limit in [200, 1000, 5000, 20_000, 100_000, full.len() - 1, full.len()] {
            let response = write_response(&ledger, Some(limit));
            assert!(response.len() <= limit, "{limit}: {} bytes", response.len());
            let json: serde_json::Value = serde_json::from_slice(&response).unwrap();
            let listed = |field: &str| json[field].as_array().unwrap().len();
            let omitted = |field: &str| json["omitted"][field].as_u64().unwrap_or(0) as usize;
            assert_eq!(
                listed("predictions") + omitted("predictions"),
                predicted,
                "{limit}"
            );
            assert_eq!(
                listed("rejected") + omitted("rejected"),
                rejected,
                "{limit}"
            );
            let failures = listed("batchItemFailures");
            assert!(
                failures == redelivered || failures == 1,
                "{limit}: {failures}"
            );
            assert_eq!(json["batchItemFailures"][0]["itemIdentifier"], "1");
        }
        // Within the limit by the frame's allowance, nothing is left out.
        assert!(write_response(&ledger, Some(full.len() + 128)) == full);
    }

    proptest::proptest! {
        #[test]
        fn escaped_lengths_are_those_serde_json_writes(character: char) {
            let written = serde_json::to_string(&character.to_string()).unwrap();
            proptest::prop_assert_eq!(escaped_len(character), written.len() - 2);
        }
    }

    fn probability() -> impl proptest::strategy::Strategy<Value = f32> {
        use proptest::prelude::*;
        prop_oneof![
            8 => 0.0f32..=1.0,
            1 => any::<f32>(),
            1 => proptest::sample::select(vec![f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE]),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// Any labels, class names and probabilities: each record's event is JSON with the
        /// label exactly as given and one probability per class, each the model's float32
        /// exactly, or the record is rejected because one of its probabilities is not finite.
        #[test]
        fn classifier_events_carry_labels_and_probabilities_exactly(
            classes in proptest::collection::btree_set("[ -~\u{e9}\u{1F600}\\\"]{0,8}", 1..5),
            rows in proptest::collection::vec(
                (proptest::prelude::any::<i64>(), "[ -~\u{e9}\"\\\u{0}-\u{1f}]{0,10}", proptest::collection::vec(probability(), 5)),
                1..6,
            ),
            string_labels in proptest::prelude::any::<bool>(),
        ) {
            let classes: Vec<String> = classes.into_iter().collect();
            let width = classes.len();
            let payloads: Vec<String> = (0..rows.len())
                .map(|i| format!(r#"{{"features":{{"x":{i}}},"pred_id":{i}}}"#))
                .collect();
            let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
            let raw = event_with(&payloads);
            let records = KinesisBatch::from_slice(&raw).unwrap();
            let (mut ledger, _) = event::decode(&records, &InputLayout::float_columns(&["x"]));
            let probabilities: Vec<f32> = rows.iter().flat_map(|(_, _, p)| p[..width].to_vec()).collect();
            let labels = match string_labels {
                true => Labels::String(rows.iter().map(|(_, label, _)| label.clone()).collect()),
                false => Labels::Int64(rows.iter().map(|(label, _, _)| *label).collect()),
            };
            let predictions = Predictions::Classes { labels, classes: classes.clone(), probabilities };
            EventEncoder::new("m", "v", "cnt").encode(&mut ledger, &predictions);
            let events: std::collections::BTreeMap<usize, &[u8]> = ledger.predicted().collect();
            for (index, (number, text, row)) in rows.iter().enumerate() {
                let row = &row[..width];
                let Some(json) = events.get(&index) else {
                    proptest::prop_assert!(row.iter().any(|p| !p.is_finite()), "row {index} rejected");
                    continue;
                };
                proptest::prop_assert!(row.iter().all(|p| p.is_finite()));
                let event: serde_json::Value = serde_json::from_slice(json).unwrap();
                let prediction = &event["prediction"];
                let label = match string_labels {
                    true => serde_json::json!(text),
                    false => serde_json::json!(number),
                };
                proptest::prop_assert_eq!(&prediction["label"], &label);
                proptest::prop_assert_eq!(&prediction["pred_id"], &serde_json::json!(index));
                let written = prediction["probabilities"].as_object().unwrap();
                proptest::prop_assert_eq!(written.len(), width);
                for (class, probability) in classes.iter().zip(row) {
                    let value = written[class].as_f64().unwrap() as f32;
                    proptest::prop_assert_eq!(value.to_bits(), probability.to_bits(), "{}", class);
                }
            }
        }
    }
}
