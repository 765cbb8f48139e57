//! The Lambda Kinesis event, read in one pass into a compact form.
//!
//! The event is up to about 7 MB of JSON for 10,000 records, and almost all of it is fields the
//! service does not use. [`KinesisBatch`] implements `Deserialize` itself, so the Lambda
//! runtime's one parse of the request body is the only one: each record's base64 `data` is
//! decoded straight into one buffer shared by the whole batch, and its `sequenceNumber` and
//! `partitionKey` go into one string; every other field is skipped. No allocation is made per
//! record, and the base64 text is never checked as UTF-8 (the base64 decoder checks it anyway);
//! it is decoded with SIMD instructions where the CPU has them (`base64-simd`), several times
//! faster than a scalar decoder on this, the largest part of the event.
//!
//! A record the Kinesis Producer Library aggregated ([`crate::aggregate`]) is split as it is
//! read into its user records, each one record of the batch from then on: its data is copied
//! over the aggregate's in the data buffer, its partition key is the one in the aggregate's
//! table (each key of the table copied once into the text buffer), and it keeps the aggregate's
//! sequence number with its position in the aggregate as its sub-sequence number. An aggregate
//! that cannot be read stays one record, with its data as it came and what is wrong with it.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::aggregate::{self, AggregateError};

/// The event could not be read as a Kinesis event at all. Lambda never sends such an event to
/// a function behind a Kinesis event source mapping, so this fails the invocation.
///
/// The detail says what is wrong and where (line and column), never a string value of the
/// event: a record's data stays out of the message and so out of the logs.
#[derive(Debug, Clone, Error)]
#[error("the event is not a Kinesis event: {detail}")]
pub struct EventError {
    detail: String,
}

impl EventError {
    fn new(error: &impl fmt::Display) -> Self {
        Self {
            detail: error.to_string(),
        }
    }
}

/// A Lambda invocation body read as a Kinesis event, or why it is not one.
///
/// The Lambda runtime deserializes the body into this type, in the same single pass as a
/// [`KinesisBatch`]. Its `Deserialize` never fails: a failure there would be answered by the
/// runtime itself, under the runtime's own error type, before the handler could report it as
/// an invalid event.
#[derive(Debug)]
pub struct EventBody(pub Result<KinesisBatch, EventError>);

impl<'de> Deserialize<'de> for EventBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(
            KinesisBatch::deserialize(deserializer).map_err(|error| EventError::new(&error)),
        ))
    }
}

/// The records of one Lambda Kinesis event: what the service needs of each, end to end.
#[derive(Debug, Default, Clone)]
pub struct KinesisBatch {
    /// Every record's decoded `data`.
    data: Vec<u8>,
    /// Every record's `sequenceNumber` and `partitionKey`, and the `data` that is not base64.
    text: String,
    records: Vec<Spans>,
    /// Why each aggregate that cannot be read cannot be, in event order.
    invalid_aggregates: Vec<AggregateError>,
}

/// Where one record's fields are in [`KinesisBatch`]'s buffers.
#[derive(Debug, Clone)]
struct Spans {
    /// In `data` when decoded; in `text` when it is not valid base64.
    data: Result<Range<usize>, Range<usize>>,
    sequence_number: Range<usize>,
    partition_key: Range<usize>,
    aggregation: Aggregation,
}

/// Whether a record came in an aggregate.
#[derive(Debug, Clone)]
enum Aggregation {
    /// A record of its own.
    None,
    /// A user record of an aggregate, at this position in it. A 1 MiB record holds fewer than
    /// 2^32 user records.
    UserRecord(u32),
    /// Data with the aggregate magic that cannot be read as an aggregate, for the reason at
    /// this position in `invalid_aggregates` (which keeps `Spans` free of anything to drop).
    Invalid(u32),
}

/// One record of a [`KinesisBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KinesisRecord<'a> {
    /// The record's data, base64-decoded, or the text that is not valid base64 (kept so that
    /// a rejected record can be passed on as it came).
    pub data: Result<&'a [u8], &'a str>,
    /// The record's sequence number in its shard (a user record's is its aggregate's).
    pub sequence_number: &'a str,
    /// A user record's position in its aggregate, from 0 as the KCL numbers them; `None` for a
    /// record that was not aggregated.
    pub sub_sequence_number: Option<u32>,
    /// The partition key the producer gave the record (a user record's from its aggregate's
    /// table).
    pub partition_key: &'a str,
    /// Why the record's data, which starts with the aggregate magic, cannot be read as an
    /// aggregate: the record is rejected whole.
    pub invalid_aggregate: Option<&'a AggregateError>,
}

impl KinesisBatch {
    /// Reads a raw Lambda Kinesis event.
    pub fn from_slice(event: &[u8]) -> Result<Self, EventError> {
        serde_json::from_slice(event).map_err(|error| EventError::new(&error))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record at `index`, in event order.
    pub fn get(&self, index: usize) -> Option<KinesisRecord<'_>> {
        self.records.get(index).map(|spans| self.record(spans))
    }

    /// The records, in event order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = KinesisRecord<'_>> + '_ {
        self.records.iter().map(|spans| self.record(spans))
    }

    fn record<'a>(&'a self, spans: &'a Spans) -> KinesisRecord<'a> {
        let (sub_sequence_number, invalid_aggregate) = match spans.aggregation {
            Aggregation::None => (None, None),
            Aggregation::UserRecord(position) => (Some(position), None),
            Aggregation::Invalid(at) => (None, self.invalid_aggregates.get(at as usize)),
        };
        KinesisRecord {
            data: match &spans.data {
                Ok(decoded) => Ok(self.data.get(decoded.clone()).unwrap_or_default()),
                Err(invalid) => Err(self.text.get(invalid.clone()).unwrap_or_default()),
            },
            sequence_number: self
                .text
                .get(spans.sequence_number.clone())
                .unwrap_or_default(),
            partition_key: self
                .text
                .get(spans.partition_key.clone())
                .unwrap_or_default(),
            sub_sequence_number,
            invalid_aggregate,
        }
    }

    /// Appends the record whose data is at `data`: its user records if it is an aggregate.
    #[inline]
    fn push(
        &mut self,
        data: Result<Range<usize>, Range<usize>>,
        sequence_number: Range<usize>,
        partition_key: Range<usize>,
    ) {
        let aggregation = match &data {
            Ok(decoded)
                if self
                    .data
                    .get(decoded.clone())
                    .is_some_and(aggregate::is_aggregated) =>
            {
                match self.push_user_records(decoded.clone(), &sequence_number) {
                    Ok(()) => return,
                    Err(error) => {
                        let at = u32::try_from(self.invalid_aggregates.len()).unwrap_or(u32::MAX);
                        self.invalid_aggregates.push(error);
                        Aggregation::Invalid(at)
                    }
                }
            }
            _ => Aggregation::None,
        };
        self.records.push(Spans {
            data,
            sequence_number,
            partition_key,
            aggregation,
        });
    }

    /// Appends the user records of the aggregate at `data` in the data buffer, which their
    /// data replace; on an error nothing is changed.
    #[cold]
    fn push_user_records(
        &mut self,
        data: Range<usize>,
        sequence_number: &Range<usize>,
    ) -> Result<(), AggregateError> {
        let found = aggregate::decode(self.data.get(data.clone()).unwrap_or_default())?;
        // The user records' data are slices of the aggregate's decoded message, a copy: the
        // aggregate's bytes in the buffer can be written over.
        self.data.truncate(data.start);
        self.data.reserve(found.data_bytes());
        let keys: Vec<Range<usize>> = found
            .partition_keys()
            .iter()
            .map(|key| {
                let start = self.text.len();
                self.text.push_str(key);
                start..self.text.len()
            })
            .collect();
        self.records.reserve(found.user_records().len());
        for (position, (key, user_data)) in found.user_records().enumerate() {
            let start = self.data.len();
            self.data.extend_from_slice(user_data);
            self.records.push(Spans {
                data: Ok(start..self.data.len()),
                sequence_number: sequence_number.clone(),
                partition_key: keys.get(key).cloned().unwrap_or_default(),
                aggregation: Aggregation::UserRecord(u32::try_from(position).unwrap_or(u32::MAX)),
            });
        }
        Ok(())
    }
}

/// Keys of the event, a record and a record's `kinesis` object that the service reads.
const EVENT_KEYS: &[&str] = &["Records"];
const RECORD_KEYS: &[&str] = &["kinesis"];
const KINESIS_KEYS: &[&str] = &["data", "sequenceNumber", "partitionKey"];

impl<'de> Deserialize<'de> for KinesisBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = KinesisBatch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kinesis event: an object with `Records`")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(string_in_place_of(&self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KinesisBatch, A::Error> {
        let mut batch = None;
        while let Some(key) = map.next_key_seed(KeySeed(EVENT_KEYS))? {
            match key {
                // A second list would replace the first, and its records would be lost.
                Some(_) if batch.is_some() => return Err(de::Error::duplicate_field("Records")),
                Some(_) => {
                    let mut records = KinesisBatch::default();
                    map.next_value_seed(RecordsSeed(&mut records))?;
                    batch = Some(records);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        batch.ok_or_else(|| de::Error::missing_field("Records"))
    }
}

/// Reads the `Records` list into the batch.
struct RecordsSeed<'b>(&'b mut KinesisBatch);

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of Kinesis records")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(string_in_place_of(&self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut records: A) -> Result<(), A::Error> {
        if let Some(count) = records.size_hint() {
            self.0.records.reserve(count);
        }
        while records
            .next_element_seed(RecordSeed(&mut *self.0))?
            .is_some()
        {}
        Ok(())
    }
}

/// Reads one record (`{"kinesis": {...}, "eventID": ...}`) and appends it to the batch.
struct RecordSeed<'b>(&'b mut KinesisBatch);

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kinesis event record with a `kinesis` object")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(string_in_place_of(&self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key_seed(KeySeed(RECORD_KEYS))? {
            match key {
                Some(_) if !found => {
                    found = true;
                    map.next_value_seed(KinesisSeed(&mut *self.0))?;
                }
                Some(_) => return Err(de::Error::duplicate_field("kinesis")),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if found {
            Ok(())
        } else {
            Err(de::Error::missing_field("kinesis"))
        }
    }
}

/// Reads a record's `kinesis` object and appends the record to the batch.
struct KinesisSeed<'b>(&'b mut KinesisBatch);

impl<'de> DeserializeSeed<'de> for KinesisSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KinesisSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a `kinesis` object with `data` and `sequenceNumber`")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(string_in_place_of(&self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let batch = self.0;
        let mut data = None;
        let mut sequence_number = None;
        let mut partition_key = None;
        while let Some(key) = map.next_key_seed(KeySeed(KINESIS_KEYS))? {
            let seen = match key {
                Some(0) => data.is_some(),
                Some(1) => sequence_number.is_some(),
                Some(_) => partition_key.is_some(),
                None => false,
            };
            if let (true, Some(index)) = (seen, key) {
                return Err(de::Error::duplicate_field(
                    KINESIS_KEYS.get(index).copied().unwrap_or("kinesis"),
                ));
            }
            match key {
                Some(0) => {
                    let seed = DataSeed {
                        data: &mut batch.data,
                        text: &mut batch.text,
                    };
                    data = Some(map.next_value_seed(seed)?);
                }
                Some(1) => sequence_number = Some(map.next_value_seed(TextSeed(&mut batch.text))?),
                Some(_) => partition_key = Some(map.next_value_seed(TextSeed(&mut batch.text))?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let data = data.ok_or_else(|| de::Error::missing_field("data"))?;
        let sequence_number =
            sequence_number.ok_or_else(|| de::Error::missing_field("sequenceNumber"))?;
        // Lambda always sends a partition key; its absence is harmless.
        let partition_key = partition_key.unwrap_or(0..0);
        batch.push(data, sequence_number, partition_key);
        Ok(())
    }
}

/// The error for a string where a container belongs, without the string: serde's default
/// message quotes it, and it may be a record's data. The containers are read with
/// `deserialize_any` so that a string reaches their `visit_str` (serde_json's
/// `deserialize_map` would write the message itself, string included).
fn string_in_place_of<E: de::Error>(expected: &dyn de::Expected) -> E {
    E::invalid_type(Unexpected::Other("a string"), expected)
}

/// Base64-decodes a `data` string onto the end of the data buffer and returns where it went;
/// text that is not valid base64 goes to the text buffer instead (the record is then rejected,
/// not the event).
struct DataSeed<'b> {
    data: &'b mut Vec<u8>,
    text: &'b mut String,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Result<Range<usize>, Range<usize>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        // As bytes: serde_json then skips the UTF-8 check that a `str` would need.
        deserializer.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = Result<Range<usize>, Range<usize>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("base64 data")
    }

    fn visit_bytes<E: de::Error>(self, encoded: &[u8]) -> Result<Self::Value, E> {
        let start = self.data.len();
        // `decode_append` reserves exactly what it needs, which would reallocate the buffer
        // for every record; reserving first grows it geometrically instead.
        self.data.reserve(encoded.len() / 4 * 3 + 3);
        match base64_simd::STANDARD.decode_append(encoded, self.data) {
            Ok(()) => Ok(Ok(start..self.data.len())),
            Err(_) => {
                self.data.truncate(start);
                let start = self.text.len();
                self.text.push_str(&String::from_utf8_lossy(encoded));
                Ok(Err(start..self.text.len()))
            }
        }
    }

    fn visit_str<E: de::Error>(self, encoded: &str) -> Result<Self::Value, E> {
        self.visit_bytes(encoded.as_bytes())
    }
}

/// Appends a string to the text buffer and returns where it went.
struct TextSeed<'b>(&'b mut String);

impl<'de> DeserializeSeed<'de> for TextSeed<'_> {
    type Value = Range<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for TextSeed<'_> {
    type Value = Range<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let start = self.0.len();
        self.0.push_str(text);
        Ok(start..self.0.len())
    }
}

/// Deserializes an object key into its index in a list of known names, or `None` for a key
/// the service does not use, without allocating. Keys are compared as bytes, which spares a
/// UTF-8 check per key: a key that is not UTF-8 cannot equal a name, so it is simply unknown.
pub(crate) struct KeySeed<'n, N>(pub(crate) &'n [N]);

impl<'de, N: AsRef<str>> DeserializeSeed<'de> for KeySeed<'_, N> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl<'de, N: AsRef<str>> Visitor<'de> for KeySeed<'_, N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<usize>, E> {
        Ok(self
            .0
            .iter()
            .position(|name| name.as_ref().as_bytes() == key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(key.as_bytes())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn seed_event_is_read_with_decoded_data() {
        let batch = KinesisBatch::from_slice(include_bytes!("../events/sample.json")).unwrap();
        assert_eq!(batch.len(), 1);
        let record = batch.get(0).unwrap();
        assert_eq!(record.sequence_number, "123456789123456789123456789");
        assert_eq!(record.partition_key, "1");
        let data: serde_json::Value = serde_json::from_slice(record.data.unwrap()).unwrap();
        assert_eq!(data["pred_id"], 123);
    }

    #[test]
    fn invalid_base64_marks_only_that_record() {
        let event = br#"{"Records": [
            {"kinesis": {"data": "!!", "sequenceNumber": "1", "partitionKey": "a"}},
            {"kinesis": {"data": "aGk=", "sequenceNumber": "2", "partitionKey": "b"}, "eventID": "x"}
        ]}"#;
        let batch = KinesisBatch::from_slice(event).unwrap();
        let records: Vec<_> = batch.iter().collect();
        assert_eq!(records[0].data, Err("!!"));
        assert_eq!(records[1].data, Ok(&b"hi"[..]));
        assert_eq!(
            (records[1].sequence_number, records[1].partition_key),
            ("2", "b")
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let event = br#"{"Records": [{"kinesis": {"data": "aGk\/", "sequenceNumber": "\u0031", "partitionKey": "p\"k"}}]}"#;
        let batch = KinesisBatch::from_slice(event).unwrap();
        let record = batch.get(0).unwrap();
        assert_eq!(record.sequence_number, "1");
        assert_eq!(record.partition_key, "p\"k");
        assert_eq!(record.data, Ok(&[0x68, 0x69, 0x3f][..]));
    }

    #[test]
    fn event_that_is_not_a_kinesis_event_is_an_error() {
        for event in [
            &b"not json"[..],
            b"{}",
            b"[]",
            br#"{"Records": 1}"#,
            br#"{"Records": [{}]}"#,
            br#"{"Records": [{"kinesis": {}}]}"#,
            br#"{"Records": [{"kinesis": {"data": "aGk="}}]}"#,
            br#"{"Records": [{"kinesis": {"data": 1, "sequenceNumber": "1"}}]}"#,
        ] {
            assert!(
                KinesisBatch::from_slice(event).is_err(),
                "{}",
                String::from_utf8_lossy(event)
            );
        }
    }

    /// Events that are not Kinesis events, each with a string that must not reach the message.
    const NOT_KINESIS: &[&[u8]] = &[
        b"SECRET not json",
        br#""SECRET""#,
        br#"{"foo": "SECRET"}"#,
        br#"["SECRET"]"#,
        b"[]",
        b"1",
        br#"{"Records": "SECRET"}"#,
        br#"{"Records": ["SECRET"]}"#,
        br#"{"Records": [{"kinesis": "SECRET"}]}"#,
        br#"{"Records": [{"eventID": "SECRET"}]}"#,
        br#"{"Records": [{"kinesis": {"data": "U0VDUkVU"}}]}"#,
        br#"{"Records": [{"kinesis": {"data": "U0VDUkVU", "sequenceNumber": 1}}]}"#,
        br#"{"Records": [{"kinesis": {"data": "U0VDUkVU", "sequenceNumber": "1"}}"#,
        br#"{"Records": [{"kinesis": {"data": "U0VDUkVU"#,
    ];

    /// What the Lambda runtime does with the body: `serde_path_to_error` over serde_json.
    fn as_the_runtime_reads_it(event: &[u8]) -> Result<KinesisBatch, EventError> {
        let mut deserializer = serde_json::Deserializer::from_slice(event);
        let body: EventBody = serde_path_to_error::deserialize(&mut deserializer)
            .expect("reading an event body never fails");
        body.0
    }

    #[test]
    fn event_that_is_not_kinesis_says_what_is_wrong_without_its_strings() {
        for event in NOT_KINESIS {
            let shown = String::from_utf8_lossy(event);
            for error in [
                KinesisBatch::from_slice(event).unwrap_err(),
                as_the_runtime_reads_it(event).unwrap_err(),
            ] {
                let message = error.to_string();
                assert!(
                    message.starts_with("the event is not a Kinesis event: "),
                    "{shown}: {message}"
                );
                assert!(message.contains(" at line 1 column "), "{shown}: {message}");
                assert!(!message.contains("SECRET"), "{shown}: {message}");
                assert!(!message.contains("U0VDUkVU"), "{shown}: {message}");
                assert!(std::error::Error::source(&error).is_none(), "said once");
            }
        }
    }

    #[test]
    fn event_errors_name_the_missing_or_wrong_part() {
        let cases: &[(&[u8], &str)] = &[
            (b"{}", "missing field `Records`"),
            (b"[]", "expected a Kinesis event: an object with `Records`"),
            (
                br#""x""#,
                "invalid type: a string, expected a Kinesis event",
            ),
            (br#"{"Records": [{}]}"#, "missing field `kinesis`"),
            (
                br#"{"Records": [{"kinesis": {"data": "aGk="}}]}"#,
                "missing field `sequenceNumber`",
            ),
            (br#"{"Records": ["#, "EOF while parsing a list"),
            // A key given twice in the envelope: a second value would replace the first.
            (
                br#"{"Records": [{"kinesis": {"data": "eA==", "sequenceNumber": "1"}}], "Records": []}"#,
                "duplicate field `Records`",
            ),
            (
                br#"{"Records": [{"kinesis": {"data": "eA==", "data": "eQ==", "sequenceNumber": "1"}}]}"#,
                "duplicate field `data`",
            ),
            (
                br#"{"Records": [{"kinesis": {"data": "eA==", "sequenceNumber": "1", "sequenceNumber": "2"}}]}"#,
                "duplicate field `sequenceNumber`",
            ),
            (
                br#"{"Records": [{"kinesis": {"partitionKey": "a", "data": "eA==", "sequenceNumber": "1", "partitionKey": "b"}}]}"#,
                "duplicate field `partitionKey`",
            ),
            (
                br#"{"Records": [{"kinesis": {"data": "eA==", "sequenceNumber": "1"}, "kinesis": {"data": "eA==", "sequenceNumber": "2"}}]}"#,
                "duplicate field `kinesis`",
            ),
        ];
        for (event, expected) in cases {
            for error in [
                as_the_runtime_reads_it(event).unwrap_err(),
                KinesisBatch::from_slice(event).unwrap_err(),
            ] {
                let message = error.to_string();
                assert!(message.contains(expected), "{message}");
            }
        }
    }

    /// An aggregate of these user records (partition key, data) with its key table.
    pub(crate) fn aggregated(keys: &[&str], records: &[(u64, &[u8])]) -> Vec<u8> {
        use crate::aggregate::{AggregatedRecord, Record, encode};
        encode(&AggregatedRecord {
            partition_key_table: keys.iter().map(|key| (*key).into()).collect(),
            explicit_hash_key_table: Vec::new(),
            records: records
                .iter()
                .map(|(key, data)| Record {
                    partition_key_index: Some(*key),
                    explicit_hash_key_index: None,
                    data: Some(prost::bytes::Bytes::copy_from_slice(data)),
                    tags: Vec::new(),
                })
                .collect(),
        })
    }

    /// An event of records with this data, sequence numbers 1, 2, ... and keys `k1`, `k2`, ...
    pub(crate) fn event_of(data: &[&[u8]]) -> Vec<u8> {
        let records: Vec<String> = data
            .iter()
            .enumerate()
            .map(|(i, data)| {
                format!(
                    r#"{{"kinesis":{{"data":"{}","sequenceNumber":"{}","partitionKey":"k{}"}}}}"#,
                    base64_simd::STANDARD.encode_to_string(data),
                    i + 1,
                    i + 1
                )
            })
            .collect();
        format!(r#"{{"Records":[{}]}}"#, records.join(",")).into_bytes()
    }

    #[test]
    fn an_aggregate_is_read_as_its_user_records_with_their_keys_and_positions() {
        let aggregate = aggregated(&["a", "b"], &[(1, b"one"), (0, b"two"), (1, b"")]);
        let mut corrupt = aggregated(&["c"], &[(0, b"lost")]);
        corrupt.pop();
        let event = event_of(&[b"plain", &aggregate, &corrupt, b"last"]);
        let batch = KinesisBatch::from_slice(&event).unwrap();
        let read: Vec<_> = batch
            .iter()
            .map(|record| {
                (
                    record.data.unwrap(),
                    record.sequence_number,
                    record.sub_sequence_number,
                    record.partition_key,
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                (&b"plain"[..], "1", None, "k1"),
                (b"one", "2", Some(0), "b"),
                (b"two", "2", Some(1), "a"),
                (b"", "2", Some(2), "b"),
                (&corrupt, "3", None, "k3"),
                (b"last", "4", None, "k4"),
            ]
        );
        let invalid: Vec<_> = batch
            .iter()
            .map(|record| record.invalid_aggregate)
            .collect();
        assert_eq!(
            invalid,
            [
                None,
                None,
                None,
                None,
                Some(&AggregateError::WrongDigest),
                None
            ]
        );
    }

    #[test]
    fn aggregates_side_by_side_keep_their_own_data_and_keys() {
        let first = aggregated(&["a"], &[(0, b"x".repeat(1000).as_slice()), (0, b"y")]);
        let second = aggregated(&["b", "c"], &[(1, b"z")]);
        let event = event_of(&[&first, &second, &second]);
        let batch = KinesisBatch::from_slice(&event).unwrap();
        let x = b"x".repeat(1000);
        let read: Vec<_> = batch
            .iter()
            .map(|record| {
                (
                    record.data.unwrap(),
                    record.partition_key,
                    record.sequence_number,
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                (x.as_slice(), "a", "1"),
                (b"y", "a", "1"),
                (b"z", "c", "2"),
                (b"z", "c", "3"),
            ]
        );
    }

    #[test]
    fn runtime_reading_gives_the_same_records() {
        let event = include_bytes!("../events/sample.json");
        let batch = as_the_runtime_reads_it(event).unwrap();
        let direct = KinesisBatch::from_slice(event).unwrap();
        assert_eq!(
            batch.iter().collect::<Vec<_>>(),
            direct.iter().collect::<Vec<_>>()
        );
    }
}
