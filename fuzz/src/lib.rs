//! What the fuzz targets in `fuzz_targets/` run: the service's path from raw event bytes to the
//! Lambda response, without the model, and the invariants that path must keep on any input.
//!
//! - [`check_event`] (target `event`): the fuzzer's bytes are the raw Lambda event.
//! - [`check_payload`] (target `payload`): the fuzzer's bytes are one record's payload, put
//!   base64-encoded between two good records of a well-formed event, so that the payload
//!   parser is fuzzed deeply and not only the event envelope; the record's outcome is also
//!   compared with an independent reference decoder built on `serde_json::Value`.
//!
//! The checks live in this library, not in the targets, so that `cargo test` here replays the
//! committed corpus through them on the stable toolchain, without libFuzzer.

use bike_prediction::event::{self, Batch, MAX_PARTITION_KEY_CHARS, RejectReason};
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::output::{self, EventEncoder};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// The bundled model's input columns, in its order.
pub const COLUMNS: [&str; 4] = ["t1", "t2", "hum", "weather_code"];
/// The `model` and `version` stamped on the prediction events.
const MODEL: &str = "bike-demand";
const VERSION: &str = "run";
/// The good record around the fuzzed payload, and the row and `pred_id` it decodes to.
const GOOD: &[u8] =
    br#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 123}"#;
const GOOD_ROW: [f32; 4] = [2.0, 3.5, 50.0, 2.0];
const GOOD_PRED_ID: &str = "123";

fn columns() -> Vec<String> {
    COLUMNS.map(String::from).to_vec()
}

/// Raw Lambda event bytes: an event that is not a Kinesis event is an error (never a panic);
/// any other goes through [`check_batch`].
pub fn check_event(event: &[u8]) {
    match KinesisBatch::from_slice(event) {
        Ok(records) => {
            check_batch(&records, &columns());
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// One record's payload, between two good records: the good ones are predicted as if alone,
/// and the fuzzed one is accepted or rejected as the reference decoder says.
pub fn check_payload(payload: &[u8]) {
    let event = event_with_payloads(&[GOOD, payload, GOOD]);
    let records = KinesisBatch::from_slice(&event).expect("a well-formed event is read");
    assert_eq!(records.len(), 3);
    assert_eq!(records.get(1).map(|record| record.data), Some(Ok(payload)));
    let columns = columns();
    let batch = check_batch(&records, &columns);

    let row_of = |record: usize| {
        let position = batch.accepted.iter().position(|a| a.record == record)?;
        let row = batch.features.chunks_exact(COLUMNS.len()).nth(position)?;
        Some((row, &batch.accepted[position]))
    };
    for neighbour in [0, 2] {
        let (row, accepted) = row_of(neighbour).expect("a good neighbour is accepted");
        assert_eq!(row, GOOD_ROW, "good neighbour {neighbour}");
        assert_eq!(batch.pred_id(accepted), GOOD_PRED_ID);
    }
    let outcome = row_of(1);
    match reference(payload) {
        Expected::Accepted {
            row,
            pred_id,
            partition_key,
        } => {
            let (decoded, accepted) = outcome.unwrap_or_else(|| {
                panic!("rejected ({:?}), the reference accepts it", batch.rejected)
            });
            assert_eq!(decoded, row);
            let echoed: Value = serde_json::from_str(batch.pred_id(accepted)).expect("JSON");
            assert_eq!(echoed, pred_id);
            assert_eq!(batch.partition_key(accepted), partition_key);
        }
        Expected::Rejected => assert!(
            outcome.is_none(),
            "accepted, the reference rejects it: {:?}",
            outcome.map(|(row, _)| row)
        ),
        Expected::Unknown => {}
    }
}

/// Decodes the records as the handler does, makes a fake prediction for each row (the sum of
/// its features, so that non-finite predictions happen too), encodes the prediction events,
/// the response and the dead letters, and checks that every record is accounted for exactly
/// once and that everything written is valid JSON carrying what it should.
pub fn check_batch<'e>(records: &'e KinesisBatch, columns: &[String]) -> Batch<'e> {
    let batch = event::decode(records, columns);
    let width = columns.len();

    // Every record is accepted or rejected, once, and accepted rows are complete and finite.
    assert_eq!(batch.len(), records.len());
    assert_eq!(
        batch.accepted.len() + batch.rejected.len(),
        records.len(),
        "records in != accepted + rejected"
    );
    let mut seen = vec![false; records.len()];
    let decided = batch.accepted.iter().map(|a| a.record);
    for record in decided.chain(batch.rejected.iter().map(|r| r.record)) {
        assert!(!std::mem::replace(&mut seen[record], true), "record {record} counted twice");
    }
    assert_eq!(batch.features.len(), batch.accepted.len() * width);
    assert!(
        batch.features.iter().all(|value| value.is_finite()),
        "{:?}",
        batch.features
    );
    for accepted in &batch.accepted {
        assert!(batch.record(accepted.record).data.is_ok());
        let pred_id: Value = serde_json::from_str(batch.pred_id(accepted))
            .unwrap_or_else(|e| panic!("pred_id {:?} is not JSON: {e}", batch.pred_id(accepted)));
        assert!(pred_id.is_number() || pred_id.is_string(), "{pred_id}");
        let key = batch.partition_key(accepted);
        assert!(
            (1..=MAX_PARTITION_KEY_CHARS).contains(&key.chars().count()),
            "partition key {key:?}"
        );
    }
    for rejection in &batch.rejected {
        assert!(!rejection.reason.code().is_empty());
        assert!(!rejection.reason.to_string().is_empty());
    }

    // One event per finite prediction, with the model, the version and the echoed pred_id.
    let predictions: Vec<f32> = batch
        .features
        .chunks_exact(width)
        .map(|row| row.iter().sum())
        .collect();
    let (events, mut rejected) = EventEncoder::new(MODEL, VERSION).encode(&batch, &predictions);
    let non_finite = predictions.iter().filter(|p| !p.is_finite()).count();
    assert_eq!(rejected.len(), non_finite);
    assert!(
        rejected
            .iter()
            .all(|r| r.reason == RejectReason::NonFinitePrediction)
    );
    assert_eq!(events.len() + rejected.len(), batch.accepted.len());
    for (index, json) in events.iter() {
        let event: Value = serde_json::from_slice(json).unwrap_or_else(|e| {
            panic!(
                "prediction event is not JSON ({e}): {}",
                String::from_utf8_lossy(json)
            )
        });
        let accepted = &batch.accepted[index];
        let pred_id: Value = serde_json::from_str(batch.pred_id(accepted)).expect("checked");
        assert_eq!(event.as_object().map(Map::len), Some(3), "{event}");
        assert_eq!(event["model"], MODEL);
        assert_eq!(event["version"], VERSION);
        assert_eq!(event["prediction"].as_object().map(Map::len), Some(2), "{event}");
        assert_eq!(event["prediction"]["pred_id"], pred_id);
        let cnt = event["prediction"]["cnt"].as_f64().expect("cnt is a number");
        assert_eq!(cnt as f32, predictions[index]);
    }

    // The response, as the handler writes it; every event's record reported for re-delivery,
    // as if publishing had failed, so that the failures list is written too.
    rejected.extend(batch.rejected.iter().cloned());
    rejected.sort_by_key(|rejection| rejection.record);
    assert_eq!(events.len() + rejected.len(), records.len());
    let failures: Vec<&str> = events
        .iter()
        .map(|(index, _)| batch.record(batch.accepted[index].record).sequence_number)
        .collect();
    let response = output::write_response(&batch, &events, &rejected, &failures);
    let response: Value = serde_json::from_slice(&response).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&response)
        )
    });
    let listed = |field: &str| response[field].as_array().map(Vec::len);
    assert_eq!(listed("predictions"), Some(events.len()));
    assert_eq!(listed("rejected"), Some(rejected.len()));
    assert_eq!(listed("batchItemFailures"), Some(failures.len()));
    for (entry, rejection) in response["rejected"].as_array().into_iter().flatten().zip(&rejected) {
        let record = batch.record(rejection.record);
        assert_eq!(entry["sequenceNumber"], record.sequence_number);
        assert_eq!(entry["partitionKey"], record.partition_key);
        assert_eq!(entry["code"], rejection.reason.code());
    }
    for (entry, failure) in response["batchItemFailures"].as_array().into_iter().flatten().zip(&failures) {
        assert_eq!(entry["itemIdentifier"], *failure);
    }

    // Dead letters keep each rejected record's data exactly as it arrived.
    let letters = output::dead_letters(&batch, &rejected, MODEL, VERSION);
    assert_eq!(letters.len(), rejected.len());
    for ((json, key), rejection) in letters.iter().zip(&rejected) {
        let letter: Value = serde_json::from_slice(json).expect("a dead letter is JSON");
        let record = batch.record(rejection.record);
        assert_eq!(letter["sequenceNumber"], record.sequence_number);
        assert_eq!(letter["code"], rejection.reason.code());
        let data = letter["data"].as_str().expect("data is a string");
        match record.data {
            Ok(decoded) => assert_eq!(
                base64_simd::STANDARD.decode_to_vec(data).ok().as_deref(),
                Some(decoded)
            ),
            Err(text) => assert_eq!(data, text),
        }
        let expected_key = match record.partition_key {
            "" => record.sequence_number,
            key => key,
        };
        assert_eq!(*key, expected_key);
    }
    batch
}

/// A Kinesis event whose records carry these payloads.
pub fn event_with_payloads(payloads: &[&[u8]]) -> Vec<u8> {
    let records: Vec<String> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            format!(
                r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"pk{i}","sequenceNumber":"{i}","data":"{}"}},"eventSource":"aws:kinesis"}}"#,
                base64_simd::STANDARD.encode_to_string(payload)
            )
        })
        .collect();
    format!(r#"{{"Records":[{}]}}"#, records.join(",")).into_bytes()
}

/// What the reference decoder says of a payload.
enum Expected {
    /// Predicted with this row; the event echoes this `pred_id` under this partition key.
    Accepted {
        row: [f32; 4],
        pred_id: Value,
        partition_key: String,
    },
    /// Cannot be predicted.
    Rejected,
    /// Not strict JSON (a duplicate key, a number out of range, text that is not UTF-8 in a
    /// field the service skips unread): where the service and a `Value` may rightly differ.
    Unknown,
}

/// The service's rules, written over a fully parsed `serde_json::Value`.
fn reference(payload: &[u8]) -> Expected {
    let Ok(Strict(value)) = serde_json::from_slice::<Strict>(payload) else {
        return Expected::Unknown;
    };
    let Some(Value::Object(features)) = value.get("features") else {
        return Expected::Rejected;
    };
    let mut row = [0.0; 4];
    for (slot, column) in row.iter_mut().zip(COLUMNS) {
        match features.get(column).and_then(Value::as_f64) {
            Some(number) if (number as f32).is_finite() => *slot = number as f32,
            _ => return Expected::Rejected,
        }
    }
    let partition_key = match value.get("pred_id") {
        Some(Value::String(text)) => text.clone(),
        // A number's key is its text as written, which a `Value` does not keep.
        Some(Value::Number(_)) => match serde_json::from_slice::<PredIdText>(payload) {
            Ok(raw) => raw.pred_id.get().to_owned(),
            Err(_) => return Expected::Unknown,
        },
        _ => return Expected::Rejected,
    };
    if !(1..=MAX_PARTITION_KEY_CHARS).contains(&partition_key.chars().count()) {
        return Expected::Rejected;
    }
    Expected::Accepted {
        row,
        pred_id: value["pred_id"].clone(),
        partition_key,
    }
}

/// The `pred_id` of a payload as the JSON text it has.
#[derive(serde::Deserialize)]
struct PredIdText<'a> {
    #[serde(borrow)]
    pred_id: &'a RawValue,
}

/// A JSON value in which no object repeats a key, so that the reference never has to guess
/// which of two values counts.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicate keys")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Strict, E> {
        Number::from_f64(value)
            .map(|number| Strict(Value::Number(number)))
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(value.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut values = Vec::new();
        while let Some(Strict(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Strict(Value::Array(values)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some((key, Strict(value))) = map.next_entry::<String, Strict>()? {
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom("duplicate key"));
            }
        }
        Ok(Strict(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every input of a target's committed corpus passes its checks.
    fn replay(target: &str, check: fn(&[u8])) {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&corpus).unwrap() {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(outcome.is_ok(), "{}", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "no corpus in {}", corpus.display());
    }

    #[test]
    fn event_corpus_passes_the_checks() {
        replay("event", super::check_event);
    }

    #[test]
    fn payload_corpus_passes_the_checks() {
        replay("payload", super::check_payload);
    }
}
