//! Prediction events and the Lambda response, written as JSON into preallocated buffers.
//!
//! A prediction event keeps the original Python service's shape:
//! `{"model": <name>, "version": <RUN_ID>, "prediction": {"cnt": <float>, "pred_id": <echoed>}}`.
//! The response is `{"predictions": [<events>], "rejected": [...], "batchItemFailures": [...]}`:
//! `batchItemFailures` is Lambda's partial-batch response, listing only records to re-deliver.

use std::borrow::Cow;

use serde::Serialize;

use crate::event::{Batch, RejectReason, Rejection};
use crate::kinesis::KinesisRecord;

/// Bytes a prediction event takes besides the model name, version and `pred_id`; used to size
/// the output buffer once per batch.
const EVENT_OVERHEAD: usize = 80;

/// Writes prediction events stamped with the model's name and version.
#[derive(Debug, Clone)]
pub struct EventEncoder {
    /// `{"model":<name>,"version":<version>,"prediction":{"cnt":`, escaped once at start-up.
    prefix: Vec<u8>,
}

impl EventEncoder {
    /// An encoder for events of model `model_name` at `version` (the MLflow `RUN_ID`).
    pub fn new(model_name: &str, version: &str) -> Self {
        let mut prefix = Vec::new();
        prefix.extend_from_slice(b"{\"model\":");
        write_json(&mut prefix, model_name);
        prefix.extend_from_slice(b",\"version\":");
        write_json(&mut prefix, version);
        prefix.extend_from_slice(b",\"prediction\":{\"cnt\":");
        Self { prefix }
    }

    /// Writes one event per accepted record of `batch`; `predictions[i]` belongs to
    /// `batch.accepted[i]`. A record whose prediction is not finite (JSON cannot carry it) is
    /// returned as a rejection instead.
    pub fn encode(
        &self,
        batch: &Batch<'_>,
        predictions: &[f32],
    ) -> (PredictionEvents, Vec<Rejection>) {
        let mut events = PredictionEvents {
            json: Vec::with_capacity(batch.accepted.len() * (self.prefix.len() + EVENT_OVERHEAD)),
            ends: Vec::with_capacity(batch.accepted.len()),
            records: Vec::with_capacity(batch.accepted.len()),
        };
        let mut rejected = Vec::new();
        for (index, (record, &cnt)) in batch.accepted.iter().zip(predictions).enumerate() {
            if !cnt.is_finite() {
                rejected.push(Rejection {
                    record: record.record,
                    reason: RejectReason::NonFinitePrediction,
                });
                continue;
            }
            events.json.extend_from_slice(&self.prefix);
            write_json(&mut events.json, &cnt);
            events.json.extend_from_slice(b",\"pred_id\":");
            events
                .json
                .extend_from_slice(batch.pred_id(record).as_bytes());
            events.json.extend_from_slice(b"}}");
            events.ends.push(events.json.len());
            events.records.push(index);
        }
        (events, rejected)
    }
}

/// The prediction events of one batch, end to end in one buffer.
#[derive(Debug, Default)]
pub struct PredictionEvents {
    json: Vec<u8>,
    /// End offset of each event in `json`.
    ends: Vec<usize>,
    /// For each event, the index of its record in [`Batch::accepted`].
    records: Vec<usize>,
}

impl PredictionEvents {
    /// The events, each a JSON document, with the index of its record in [`Batch::accepted`].
    pub fn iter(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.records
            .iter()
            .zip(starts.zip(self.ends.iter().copied()))
            .map(|(&record, (start, end))| (record, self.json.get(start..end).unwrap_or_default()))
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of all events.
    pub fn byte_len(&self) -> usize {
        self.json.len()
    }
}

/// A rejected record as listed in the response, and the start of its dead letter.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RejectedEntry<'a> {
    sequence_number: &'a str,
    partition_key: &'a str,
    code: &'static str,
    reason: String,
}

impl<'a> RejectedEntry<'a> {
    fn new(record: &KinesisRecord<'a>, rejection: &Rejection) -> Self {
        Self {
            sequence_number: record.sequence_number,
            partition_key: record.partition_key,
            code: rejection.reason.code(),
            reason: rejection.reason.to_string(),
        }
    }
}

/// Writes the handler's response. `failures` are the sequence numbers of records Lambda should
/// re-deliver (records that could not be published).
pub fn write_response(
    batch: &Batch<'_>,
    events: &PredictionEvents,
    rejected: &[Rejection],
    failures: &[&str],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.byte_len() + events.len() + 128 * (rejected.len() + 1));
    out.extend_from_slice(b"{\"predictions\":[");
    write_list(&mut out, events.iter(), |out, (_, event)| {
        out.extend_from_slice(event)
    });
    out.extend_from_slice(b"],\"rejected\":[");
    write_list(&mut out, rejected, |out, rejection| {
        write_json(
            out,
            &RejectedEntry::new(&batch.record(rejection.record), rejection),
        );
    });
    out.extend_from_slice(b"],\"batchItemFailures\":[");
    write_list(&mut out, failures, |out, sequence_number| {
        out.extend_from_slice(b"{\"itemIdentifier\":");
        write_json(out, sequence_number);
        out.push(b'}');
    });
    out.extend_from_slice(b"]}");
    out
}

/// A rejected record as kept in the dead-letter stream: everything needed to inspect it and
/// to replay it (`data` is the record's data exactly as it arrived, base64).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetter<'a> {
    #[serde(flatten)]
    entry: RejectedEntry<'a>,
    data: Cow<'a, str>,
    model: &'a str,
    version: &'a str,
}

/// The dead-letter document of each rejected record, and the partition key to put it under:
/// the record's own partition key (the sequence number if it had none).
pub fn dead_letters<'b>(
    batch: &Batch<'b>,
    rejected: &[Rejection],
    model: &str,
    version: &str,
) -> Vec<(Vec<u8>, &'b str)> {
    rejected
        .iter()
        .map(|rejection| {
            let record = batch.record(rejection.record);
            let letter = DeadLetter {
                entry: RejectedEntry::new(&record, rejection),
                data: original_data(record.data),
                model,
                version,
            };
            let mut json = Vec::new();
            write_json(&mut json, &letter);
            let key = match record.partition_key {
                "" => record.sequence_number,
                key => key,
            };
            (json, key)
        })
        .collect()
}

/// A record's data as it arrived in the event: base64 text.
pub fn original_data<'a>(data: Result<&'a [u8], &'a str>) -> Cow<'a, str> {
    match data {
        Ok(decoded) => Cow::Owned(base64_simd::STANDARD.encode_to_string(decoded)),
        Err(undecodable) => Cow::Borrowed(undecodable),
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
    use crate::kinesis::KinesisBatch;

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

    #[test]
    fn event_has_the_original_shape_and_echoes_pred_id_unchanged() {
        let columns = vec!["x".to_owned()];
        let raw = event_with(&[
            r#"{"features":{"x":1},"pred_id":123}"#,
            r#"{"features":{"x":2},"pred_id":"a\"b"}"#,
        ]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let batch = event::decode(&records, &columns);
        let (events, rejected) =
            EventEncoder::new("bike \"demand\"", "run-1").encode(&batch, &[1.5, 20.25]);
        assert!(rejected.is_empty());
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|(_, json)| serde_json::from_slice(json).unwrap())
            .collect();
        assert_eq!(
            events[0],
            serde_json::json!({"model": "bike \"demand\"", "version": "run-1", "prediction": {"cnt": 1.5, "pred_id": 123}})
        );
        assert_eq!(events[1]["prediction"]["pred_id"], "a\"b");
    }

    #[test]
    fn non_finite_prediction_is_rejected_not_written() {
        let columns = vec!["x".to_owned()];
        let raw = event_with(&[
            r#"{"features":{"x":1},"pred_id":1}"#,
            r#"{"features":{"x":2},"pred_id":2}"#,
        ]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let batch = event::decode(&records, &columns);
        let (events, rejected) = EventEncoder::new("m", "v").encode(&batch, &[f32::NAN, 3.0]);
        assert_eq!(
            events.iter().map(|(record, _)| record).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(batch.record(rejected[0].record).sequence_number, "0");
        assert_eq!(rejected[0].reason, RejectReason::NonFinitePrediction);
    }

    #[test]
    fn dead_letter_keeps_the_record_as_it_arrived_with_its_reason() {
        let columns = vec!["x".to_owned()];
        let raw = event_with(&["not json"]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let batch = event::decode(&records, &columns);
        let letters = dead_letters(&batch, &batch.rejected, "m", "v1");
        let (json, key) = &letters[0];
        let letter: serde_json::Value = serde_json::from_slice(json).unwrap();
        assert_eq!(*key, "p0");
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
        let columns = vec!["x".to_owned()];
        let raw = event_with(&[r#"{"features":{"x":1},"pred_id":1}"#, "not json"]);
        let records = KinesisBatch::from_slice(&raw).unwrap();
        let batch = event::decode(&records, &columns);
        let (events, _) = EventEncoder::new("m", "v").encode(&batch, &[2.0]);
        let response = write_response(&batch, &events, &batch.rejected, &["0"]);
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
}
