//! Decoding record payloads straight into the model's `[N, F]` input buffer.
//!
//! Each record's data (already base64-decoded by [`crate::kinesis`]) is the JSON payload
//! `{"features": {...}, "pred_id": ...}`. It is parsed without building a map: each feature
//! value is written into its column of the record's row as it is read, and the `pred_id` text
//! is copied into one buffer for the batch. A record that cannot be predicted becomes a
//! [`Rejection`] with a [`RejectReason`]; it never fails the batch.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::kinesis::{KeySeed, KinesisBatch, KinesisRecord};

/// Largest record data Kinesis accepts (1 MiB); larger data cannot have come from a stream.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Most records Lambda puts in one Kinesis event. Larger events (local tools) are handled the
/// same way, with inference in chunks of [`crate::model::MAX_INFERENCE_ROWS`].
pub const MAX_BATCH_RECORDS: usize = 10_000;

/// Why a record cannot be predicted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RejectReason {
    /// The decoded data is larger than [`MAX_RECORD_BYTES`].
    #[error("data is {0} bytes, more than Kinesis's 1 MiB record limit")]
    TooLarge(usize),
    /// `kinesis.data` is not valid base64.
    #[error("data is not valid base64")]
    InvalidBase64,
    /// The decoded data is not UTF-8 text.
    #[error("data is not UTF-8 text")]
    NotUtf8,
    /// The decoded data is not JSON.
    #[error("data is not valid JSON: {0}")]
    NotJson(String),
    /// The payload is JSON but not an object.
    #[error("data is not a JSON object")]
    NotAnObject,
    /// The payload has no `features` key.
    #[error("`features` is missing")]
    MissingFeatures,
    /// `features` is not a JSON object.
    #[error("`features` is not a JSON object")]
    FeaturesNotAnObject,
    /// The payload has no `pred_id` key.
    #[error("`pred_id` is missing")]
    MissingPredId,
    /// `pred_id` is neither a number nor a string that can be a Kinesis partition key.
    #[error("`pred_id` must be a number or a string of 1 to 256 characters")]
    InvalidPredId,
    /// A feature the model needs is absent.
    #[error("feature `{0}` is missing")]
    MissingFeature(String),
    /// A feature the model needs is not a number (a string, bool, null, array or object).
    #[error("feature `{0}` is not a number")]
    NonNumericFeature(String),
    /// A feature is a number too large for a float32.
    #[error("feature `{0}` is not a finite number in float32 range")]
    NonFiniteFeature(String),
    /// A feature's value is not valid JSON, such as Python's `NaN` or `Infinity`.
    #[error("feature `{name}` is not valid JSON ({detail}); NaN and Infinity are not JSON numbers")]
    InvalidFeatureJson {
        /// The feature.
        name: String,
        /// What the JSON parser said.
        detail: String,
    },
    /// The model returned NaN or infinity for the record, which JSON cannot carry.
    #[error("the model returned a non-finite prediction")]
    NonFinitePrediction,
}

impl RejectReason {
    /// A short stable code for the reason, for counting and alerting.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::InvalidBase64 => "invalid_base64",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson(_) => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::MissingFeatures => "missing_features",
            Self::FeaturesNotAnObject => "features_not_an_object",
            Self::MissingPredId => "missing_pred_id",
            Self::InvalidPredId => "invalid_pred_id",
            Self::MissingFeature(_) => "missing_feature",
            Self::NonNumericFeature(_) => "non_numeric_feature",
            Self::NonFiniteFeature(_) => "non_finite_feature",
            Self::InvalidFeatureJson { .. } => "invalid_feature_json",
            Self::NonFinitePrediction => "non_finite_prediction",
        }
    }
}

/// A record of the batch that can be predicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The record's position in the event.
    pub record: usize,
    /// Where the record's `pred_id` JSON text is in [`Batch::pred_id`].
    pred_id: Range<usize>,
}

/// A record of the batch that cannot be predicted, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The record's position in the event.
    pub record: usize,
    /// Why it was rejected.
    pub reason: RejectReason,
}

/// A decoded event: the accepted records' features as one row-major `[N, F]` buffer, and the
/// rejected records with their reasons.
#[derive(Debug)]
pub struct Batch<'e> {
    /// The event's records.
    pub records: &'e KinesisBatch,
    /// Row `i` (columns in the model's order) belongs to `accepted[i]`.
    pub features: Vec<f32>,
    /// Records that can be predicted, in event order.
    pub accepted: Vec<Accepted>,
    /// Records that cannot, in event order.
    pub rejected: Vec<Rejection>,
    /// The accepted records' `pred_id` JSON texts, end to end (one allocation per batch).
    pred_ids: String,
}

impl<'e> Batch<'e> {
    /// The Kinesis record at `index` in the event.
    pub fn record(&self, index: usize) -> KinesisRecord<'e> {
        self.records.get(index).unwrap_or(KinesisRecord {
            data: Err(""),
            sequence_number: "",
            partition_key: "",
        })
    }

    /// The `pred_id` of an accepted record, as the JSON text it had in the record (a number or a
    /// quoted string), so that it is echoed unchanged.
    pub fn pred_id(&self, record: &Accepted) -> &str {
        self.pred_ids
            .get(record.pred_id.clone())
            .unwrap_or_default()
    }

    /// The Kinesis partition key for an accepted record's prediction event: its `pred_id` as
    /// text, like Python's `str(pred_id)` for strings and integers.
    pub fn partition_key(&self, record: &Accepted) -> Cow<'_, str> {
        partition_key(self.pred_id(record)).unwrap_or_default()
    }

    /// Number of records in the event.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the event had no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Longest Kinesis partition key, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// The text of a `pred_id` given as JSON text: a string's contents, or a number as written.
fn partition_key(pred_id: &str) -> Option<Cow<'_, str>> {
    match pred_id
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(plain) if !plain.contains('\\') => Some(Cow::Borrowed(plain)),
        Some(_) => serde_json::from_str::<String>(pred_id).ok().map(Cow::Owned),
        None => Some(Cow::Borrowed(pred_id)),
    }
}

/// Decodes every record's payload; `columns` are the model's input feature names in order.
pub fn decode<'e>(records: &'e KinesisBatch, columns: &[String]) -> Batch<'e> {
    let mut batch = Batch {
        records,
        features: Vec::with_capacity(records.len() * columns.len()),
        accepted: Vec::with_capacity(records.len()),
        rejected: Vec::new(),
        pred_ids: String::with_capacity(records.len() * 8),
    };
    let parser = PayloadParser { columns };
    for (index, record) in records.iter().enumerate() {
        let row_start = batch.features.len();
        // NaN marks a column not set yet: stored feature values are always finite.
        batch.features.resize(row_start + columns.len(), f32::NAN);
        let row = batch.features.get_mut(row_start..).unwrap_or_default();
        let pred_id_start = batch.pred_ids.len();
        let parsed = match record.data {
            Ok(data) if data.len() > MAX_RECORD_BYTES => Err(RejectReason::TooLarge(data.len())),
            Ok(data) => parser.parse(data, row, &mut batch.pred_ids),
            Err(_) => Err(RejectReason::InvalidBase64),
        };
        match parsed {
            Ok(()) => batch.accepted.push(Accepted {
                record: index,
                pred_id: pred_id_start..batch.pred_ids.len(),
            }),
            Err(reason) => {
                batch.features.truncate(row_start);
                batch.pred_ids.truncate(pred_id_start);
                batch.rejected.push(Rejection {
                    record: index,
                    reason,
                });
            }
        }
    }
    batch
}

/// Parses record payloads for a model with these input columns.
struct PayloadParser<'c> {
    columns: &'c [String],
}

impl PayloadParser<'_> {
    /// Writes the features of one record's payload into `row` (all NaN on entry) and appends
    /// its `pred_id` JSON text to `pred_ids`: by the [`fast`] path when the payload has the
    /// plain form, else by the general parser, which also says why a payload is rejected.
    fn parse(
        &self,
        payload: &[u8],
        row: &mut [f32],
        pred_ids: &mut String,
    ) -> Result<(), RejectReason> {
        let pred_id_start = pred_ids.len();
        if fast::parse(payload, self.columns, row, pred_ids) {
            return Ok(());
        }
        row.fill(f32::NAN);
        pred_ids.truncate(pred_id_start);
        self.parse_general(payload, row, pred_ids)
    }

    /// [`Self::parse`] by serde_json alone, for any payload.
    fn parse_general(
        &self,
        payload: &[u8],
        row: &mut [f32],
        pred_ids: &mut String,
    ) -> Result<(), RejectReason> {
        if payload.trim_ascii_start().first() != Some(&b'{') {
            return Err(match serde_json::from_slice::<IgnoredAny>(payload) {
                Ok(_) => RejectReason::NotAnObject,
                Err(error) => not_json(payload, &error),
            });
        }
        let mut found = Found::default();
        let mut reason = None;
        // From bytes: serde_json checks UTF-8 in the strings it reads (keys, `pred_id`); the
        // strings of fields the service ignores are skipped unchecked.
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        let visitor = PayloadVisitor {
            columns: self.columns,
            row: &mut *row,
            pred_id_start: pred_ids.len(),
            pred_ids,
            found: &mut found,
            reason: &mut reason,
        };
        let parsed = deserializer
            .deserialize_map(visitor)
            .and_then(|()| deserializer.end());
        if let Some(reason) = reason {
            return Err(reason);
        }
        parsed.map_err(|error| not_json(payload, &error))?;
        if !found.features {
            return Err(RejectReason::MissingFeatures);
        }
        if !found.pred_id {
            return Err(RejectReason::MissingPredId);
        }
        let unset = self
            .columns
            .iter()
            .zip(row.iter())
            .find(|(_, value)| value.is_nan());
        match unset {
            Some((missing, _)) => Err(RejectReason::MissingFeature(missing.clone())),
            None => Ok(()),
        }
    }
}

/// Whether a JSON number's text is a finite f64. Only an exponent or 300-odd digits can
/// overflow, so the common `123` is not parsed at all.
fn is_finite_number(text: &str) -> bool {
    let may_overflow = text.len() > 300 || text.contains(['e', 'E']);
    !may_overflow || text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The reason for a payload that failed to parse: not UTF-8, or else not JSON.
fn not_json(payload: &[u8], error: &serde_json::Error) -> RejectReason {
    match std::str::from_utf8(payload) {
        Err(_) => RejectReason::NotUtf8,
        Ok(_) => RejectReason::NotJson(error.to_string()),
    }
}

/// Which top-level keys of the payload were seen.
#[derive(Default)]
struct Found {
    features: bool,
    pred_id: bool,
}

/// Visits the payload object. On a problem it records the most specific [`RejectReason`] it
/// knows in `reason` and returns an error to stop parsing.
struct PayloadVisitor<'a, 'c> {
    columns: &'c [String],
    row: &'a mut [f32],
    pred_ids: &'a mut String,
    /// Where this record's `pred_id` starts in `pred_ids`.
    pred_id_start: usize,
    found: &'a mut Found,
    reason: &'a mut Option<RejectReason>,
}

impl<'de> Visitor<'de> for PayloadVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with `features` and `pred_id`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed(&["features", "pred_id"]))? {
            match key {
                Some(0) => {
                    self.found.features = true;
                    let seed = FeaturesSeed {
                        columns: self.columns,
                        row: self.row,
                        reason: self.reason,
                    };
                    map.next_value_seed(seed)?;
                }
                Some(_) => {
                    self.found.pred_id = true;
                    let pred_id: &RawValue = map.next_value()?;
                    let text = pred_id.get();
                    let is_number_or_string = match text.as_bytes().first() {
                        Some(b'"') => true,
                        // A number beyond f64 (`1e400`) is infinity to Python and an error to
                        // serde_json: echoed, it would make the prediction event unreadable.
                        Some(b'-' | b'0'..=b'9') => is_finite_number(text),
                        _ => false,
                    };
                    let key_length = partition_key(text).map_or(0, |key| key.chars().count());
                    if !is_number_or_string || !(1..=MAX_PARTITION_KEY_CHARS).contains(&key_length)
                    {
                        *self.reason = Some(RejectReason::InvalidPredId);
                        return Err(de::Error::custom("invalid pred_id"));
                    }
                    // A repeated key replaces the earlier value, as in Python's `json`.
                    self.pred_ids.truncate(self.pred_id_start);
                    self.pred_ids.push_str(text);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A feature's value as the JSON has it: a number, or anything else (which is skipped).
enum FeatureValue {
    Number(f64),
    NotANumber,
}

impl<'de> serde::Deserialize<'de> for FeatureValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FeatureValueVisitor)
    }
}

struct FeatureValueVisitor;

impl<'de> Visitor<'de> for FeatureValueVisitor {
    type Value = FeatureValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature value")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<FeatureValue, E> {
        Ok(FeatureValue::Number(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<FeatureValue, E> {
        Ok(FeatureValue::Number(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<FeatureValue, E> {
        Ok(FeatureValue::Number(value as f64))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<FeatureValue, E> {
        Ok(FeatureValue::NotANumber)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<FeatureValue, E> {
        Ok(FeatureValue::NotANumber)
    }

    fn visit_unit<E: de::Error>(self) -> Result<FeatureValue, E> {
        Ok(FeatureValue::NotANumber)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<FeatureValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FeatureValue::NotANumber)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeatureValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(FeatureValue::NotANumber)
    }
}

/// Deserializes the `features` object into the row.
struct FeaturesSeed<'a, 'c> {
    columns: &'c [String],
    row: &'a mut [f32],
    reason: &'a mut Option<RejectReason>,
}

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FeaturesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of feature values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(column) = map.next_key_seed(KeySeed(self.columns))? {
            let known =
                column.and_then(|column| self.columns.get(column).zip(self.row.get_mut(column)));
            let Some((name, slot)) = known else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value = match map.next_value::<FeatureValue>() {
                Ok(value) => value,
                Err(error) => {
                    *self.reason = Some(RejectReason::InvalidFeatureJson {
                        name: name.clone(),
                        detail: error.to_string(),
                    });
                    return Err(error);
                }
            };
            let FeatureValue::Number(value) = value else {
                *self.reason = Some(RejectReason::NonNumericFeature(name.clone()));
                return Err(de::Error::custom("non-numeric feature"));
            };
            let value = value as f32;
            if !value.is_finite() {
                *self.reason = Some(RejectReason::NonFiniteFeature(name.clone()));
                return Err(de::Error::custom("non-finite feature"));
            }
            *slot = value;
        }
        Ok(())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_an_object()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object()
    }
}

impl FeaturesSeed<'_, '_> {
    fn not_an_object<E: de::Error>(self) -> Result<(), E> {
        *self.reason = Some(RejectReason::FeaturesNotAnObject);
        Err(E::custom("`features` is not an object"))
    }
}

mod fast;
#[cfg(test)]
mod tests;
