//! Decoding record payloads straight into the model's input buffers.
//!
//! Each record's data (already base64-decoded by [`crate::kinesis`]) is the JSON payload
//! `{"features": {...}, "pred_id": ...}` (or `"features": [...]` for a model with a tensor
//! signature). It is parsed without building a map: each feature value is converted to the
//! element type of the input it feeds and written into the record's row as it is read
//! ([`crate::inputs`]), and the `pred_id` text is copied into the [`Ledger`]. A record that
//! cannot be predicted is entered in the ledger as rejected, with a [`RejectReason`]; it never
//! fails the batch.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::aggregate::AggregateError;
use crate::inputs::{ElementType, FeatureForm, InputLayout, Inputs, Value};
use crate::kinesis::KinesisBatch;
use crate::ledger::Ledger;

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
    /// The decoded data starts with the Kinesis Producer Library's aggregate magic but cannot
    /// be read as an aggregate; the whole Kinesis record is rejected.
    #[error("data is a KPL aggregated record that cannot be read: {0}")]
    InvalidAggregate(AggregateError),
    /// The decoded data is not UTF-8 text.
    #[error("data is not UTF-8 text")]
    NotUtf8,
    /// The decoded data is not JSON.
    #[error("data is not valid JSON: {0}")]
    NotJson(String),
    /// The payload is JSON but not an object.
    #[error("data is not a JSON object")]
    NotAnObject,
    /// An object of the payload has a key twice (`features`, `pred_id`, a feature, or any
    /// other key at any depth): which value the producer meant is ambiguous.
    #[error("key `{0}` appears twice in one object")]
    DuplicateKey(String),
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
    /// `features` is not a JSON array, for a model with a tensor signature.
    #[error("`features` is not a JSON array of the model's input values")]
    FeaturesNotAnArray,
    /// `features` is an array of the wrong length, for a model with a tensor signature.
    #[error("`features` has {got} values, but the model takes {expected}")]
    WrongFeatureCount {
        /// Values the model takes.
        expected: usize,
        /// Values the record has.
        got: usize,
    },
    /// A feature the model needs is absent (or optional, but of a type with no missing value).
    #[error("feature `{0}` is missing")]
    MissingFeature(String),
    /// A feature the model needs as a number is not one (a string, bool, null, array or
    /// object).
    #[error("feature `{0}` is not a number")]
    NonNumericFeature(String),
    /// A feature is a number too large for its float input.
    #[error("feature `{name}` is not a finite number in {element} range")]
    NonFiniteFeature {
        /// The feature.
        name: String,
        /// The input's element type.
        element: ElementType,
    },
    /// A feature the model needs as an integer has a fraction (`2.5`).
    #[error("feature `{0}` is not an integer")]
    NotAnInteger(String),
    /// A feature the model needs as an integer is beyond the input's range.
    #[error("feature `{name}` is out of {element} range")]
    IntegerOutOfRange {
        /// The feature.
        name: String,
        /// The input's element type.
        element: ElementType,
    },
    /// A feature the model needs as a boolean is not `true` or `false`.
    #[error("feature `{0}` is not a boolean")]
    NotABoolean(String),
    /// A feature the model needs as a string is not one.
    #[error("feature `{0}` is not a string")]
    NotAString(String),
    /// A string feature contains a NUL character, which ONNX Runtime's strings cannot hold.
    #[error("feature `{0}` contains a NUL character")]
    StringWithNul(String),
    /// A feature's value is not valid JSON, such as Python's `NaN` or `Infinity`.
    #[error("feature `{name}` is not valid JSON ({detail}); NaN and Infinity are not JSON numbers")]
    InvalidFeatureJson {
        /// The feature.
        name: String,
        /// What the JSON parser said.
        detail: String,
    },
    /// ONNX Runtime could not predict the record (alone, the rest of the batch predicted).
    #[error("ONNX Runtime could not predict the record: {0}")]
    InferenceFailed(String),
    /// The model returned NaN or infinity for the record, which JSON cannot carry.
    #[error("the model returned a non-finite prediction")]
    NonFinitePrediction,
    /// The record's prediction event is larger than the output stream takes.
    #[error(
        "its prediction event is {bytes} bytes with its partition key, more than the output stream's record limit of {limit} bytes"
    )]
    EventTooLarge {
        /// The event's size with its partition key.
        bytes: usize,
        /// The stream's largest record.
        limit: usize,
    },
    /// The output stream answered its prediction event, sent alone, as invalid.
    #[error("the output stream refused its prediction event as invalid ({code})")]
    EventRefused {
        /// The error code the stream answered.
        code: String,
    },
}

impl RejectReason {
    /// A [`Self::DuplicateKey`] naming `key` by at most [`MAX_KEY_IN_REASON`] characters: a
    /// key the model does not know is the record's own text, which may be of any size.
    pub fn duplicate_key(key: &str) -> Self {
        match key.char_indices().nth(MAX_KEY_IN_REASON) {
            Some((end, _)) => Self::DuplicateKey(format!("{}...", key.get(..end).unwrap_or(key))),
            None => Self::DuplicateKey(key.into()),
        }
    }

    /// A short stable code for the reason, for counting and alerting.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidAggregate(_) => "invalid_aggregate",
            Self::NotUtf8 => "not_utf8",
            Self::NotJson(_) => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::DuplicateKey(_) => "duplicate_key",
            Self::MissingFeatures => "missing_features",
            Self::FeaturesNotAnObject => "features_not_an_object",
            Self::MissingPredId => "missing_pred_id",
            Self::InvalidPredId => "invalid_pred_id",
            Self::FeaturesNotAnArray => "features_not_an_array",
            Self::WrongFeatureCount { .. } => "wrong_feature_count",
            Self::MissingFeature(_) => "missing_feature",
            Self::NonNumericFeature(_) => "non_numeric_feature",
            Self::NonFiniteFeature { .. } => "non_finite_feature",
            Self::NotAnInteger(_) => "not_an_integer",
            Self::IntegerOutOfRange { .. } => "integer_out_of_range",
            Self::NotABoolean(_) => "not_a_boolean",
            Self::NotAString(_) => "not_a_string",
            Self::StringWithNul(_) => "string_with_nul",
            Self::InvalidFeatureJson { .. } => "invalid_feature_json",
            Self::InferenceFailed(_) => "inference_failed",
            Self::NonFinitePrediction => "non_finite_prediction",
            Self::EventTooLarge { .. } => "event_too_large",
            Self::EventRefused { .. } => "event_refused",
        }
    }
}

/// Most characters of a repeated key a `duplicate_key` reason names.
pub const MAX_KEY_IN_REASON: usize = 64;

/// Longest Kinesis partition key, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Whether Kinesis takes `key` as a partition key: 1 to [`MAX_PARTITION_KEY_CHARS`]
/// characters.
pub fn is_partition_key(key: &str) -> bool {
    (1..=MAX_PARTITION_KEY_CHARS).contains(&key.chars().count())
}

/// The text of a `pred_id` given as JSON text: a string's contents, or a number as written.
pub(crate) fn partition_key(pred_id: &str) -> Option<Cow<'_, str>> {
    match pred_id
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(plain) if !plain.contains('\\') => Some(Cow::Borrowed(plain)),
        Some(_) => serde_json::from_str::<String>(pred_id).ok().map(Cow::Owned),
        None => Some(Cow::Borrowed(pred_id)),
    }
}

/// Decodes every record's payload into the model's inputs, laid out by `layout`, and enters
/// each record in a new ledger as decoded (with its row) or rejected.
pub fn decode<'e>(records: &'e KinesisBatch, layout: &InputLayout) -> (Ledger<'e>, Inputs) {
    let mut ledger = Ledger::new(records);
    let mut inputs = layout.buffers(records.len());
    let mut parser = PayloadParser {
        layout,
        plain: layout.is_plain_float_row(),
        seen: vec![false; layout.fields.len()],
        keys: Keys::default(),
    };
    for record in records.iter() {
        let pred_id_start = ledger.pred_id_buffer().len();
        let text_start = inputs.text.len();
        inputs.push_row(layout);
        let parsed = match record.data {
            Ok(data) if data.len() > MAX_RECORD_BYTES => Err(RejectReason::TooLarge(data.len())),
            Ok(data) => parser.parse(data, &mut inputs, ledger.pred_id_buffer()),
            Err(_) => Err(RejectReason::InvalidBase64),
        };
        // An aggregate that cannot be read is rejected as that. Its data, which starts with the
        // magic, is never UTF-8 (`C2` cannot follow `F3 89 9A`), so it never parses: asking
        // only of rejected records keeps the question off the path of good ones.
        let parsed = parsed.map_err(|reason| match record.invalid_aggregate {
            Some(error) => RejectReason::InvalidAggregate(error.clone()),
            None => reason,
        });
        match parsed {
            Ok(()) => {
                ledger.decoded(inputs.rows, pred_id_start);
                inputs.finish_row();
            }
            Err(reason) => {
                inputs.discard_row(layout, text_start);
                ledger.rejected(reason, pred_id_start);
            }
        }
    }
    (ledger, inputs)
}

/// Parses record payloads for a model with this input layout.
struct PayloadParser<'l> {
    layout: &'l InputLayout,
    /// The layout is one float32 row the fast path can write.
    plain: bool,
    /// Which fields the record being parsed has set.
    seen: Vec<bool>,
    /// The keys of the record's objects that name no field.
    keys: Keys,
}

impl PayloadParser<'_> {
    /// Writes the features of one record's payload into the row being written (placeholders on
    /// entry) and appends its `pred_id` JSON text to `pred_ids`: by the [`fast`] path when the
    /// payload has the plain form and the model one float32 input, else by the general parser,
    /// which also says why a payload is rejected.
    fn parse(
        &mut self,
        payload: &[u8],
        inputs: &mut Inputs,
        pred_ids: &mut String,
    ) -> Result<(), RejectReason> {
        let pred_id_start = pred_ids.len();
        if self.plain {
            if let Some(row) = inputs.plain_float_row(self.layout) {
                if fast::parse(payload, self.layout.field_names(), row, pred_ids) {
                    return Ok(());
                }
                row.fill(f32::NAN);
            }
            pred_ids.truncate(pred_id_start);
        }
        self.parse_general(payload, inputs, pred_ids)
    }

    /// [`Self::parse`] by serde_json alone, for any payload.
    fn parse_general(
        &mut self,
        payload: &[u8],
        inputs: &mut Inputs,
        pred_ids: &mut String,
    ) -> Result<(), RejectReason> {
        // The whole payload, ignored fields included, must be UTF-8: serde_json alone checks
        // only the strings it reads. Checked once here, so the parse below reads text.
        let Ok(text) = std::str::from_utf8(payload) else {
            return Err(RejectReason::NotUtf8);
        };
        if !text.trim_ascii_start().starts_with('{') {
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => RejectReason::NotAnObject,
                Err(error) => RejectReason::NotJson(error.to_string()),
            });
        }
        self.seen.fill(false);
        self.keys.clear();
        let mut found = Found::default();
        let mut reason = None;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let visitor = PayloadVisitor {
            row: Row {
                layout: self.layout,
                inputs: &mut *inputs,
                seen: &mut self.seen,
                keys: &mut self.keys,
                reason: &mut reason,
            },
            pred_ids,
            found: &mut found,
        };
        let parsed = deserializer
            .deserialize_map(visitor)
            .and_then(|()| deserializer.end());
        if let Some(reason) = reason {
            return Err(reason);
        }
        parsed.map_err(|error| RejectReason::NotJson(error.to_string()))?;
        if !found.features {
            return Err(RejectReason::MissingFeatures);
        }
        if !found.pred_id {
            return Err(RejectReason::MissingPredId);
        }
        let unset = self
            .layout
            .fields
            .iter()
            .zip(&self.seen)
            .find(|(field, seen)| {
                !**seen && (field.required || !field.element.has_missing_value())
            });
        match unset {
            Some((missing, _)) => Err(RejectReason::MissingFeature(missing.name.clone())),
            None => Ok(()),
        }
    }
}

/// Whether a JSON number's text is a finite f64. Only an exponent or 300-odd digits can
/// overflow, so the common `123` is not parsed at all.
#[inline]
fn is_finite_number(text: &str) -> bool {
    let may_overflow = text.len() > 300 || text.contains(['e', 'E']);
    !may_overflow || text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Which top-level keys of the payload were seen.
#[derive(Default)]
struct Found {
    features: bool,
    pred_id: bool,
}

/// Visits the payload object. On a problem it records the most specific [`RejectReason`] it
/// knows in `reason` and returns an error to stop parsing.
struct PayloadVisitor<'a, 'l> {
    row: Row<'a, 'l>,
    pred_ids: &'a mut String,
    found: &'a mut Found,
}

/// The row being written, and where to say why it cannot be.
struct Row<'a, 'l> {
    layout: &'l InputLayout,
    inputs: &'a mut Inputs,
    /// Which fields have been set.
    seen: &'a mut [bool],
    /// The keys read that name no field.
    keys: &'a mut Keys,
    reason: &'a mut Option<RejectReason>,
}

impl Row<'_, '_> {
    /// Sets `field` to `value`; on a value that does not fit, records the reason and returns
    /// an error to stop parsing.
    fn set<E: de::Error>(&mut self, field: usize, value: Value<'_>) -> Result<(), E> {
        match self.inputs.set(self.layout, field, value) {
            Ok(()) => {
                if let Some(seen) = self.seen.get_mut(field) {
                    *seen = true;
                }
                Ok(())
            }
            Err(reason) => self.fail(reason),
        }
    }

    fn fail<E: de::Error>(&mut self, reason: RejectReason) -> Result<(), E> {
        *self.reason = Some(reason);
        Err(E::custom("rejected"))
    }

    /// Skips a value the service does not use; rejects the record if an object inside it has
    /// a key twice.
    fn ignore<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<(), A::Error> {
        let value: &RawValue = map.next_value()?;
        match self.keys.repeated_in(value.get()) {
            Some(key) => self.fail(RejectReason::duplicate_key(&key)),
            None => Ok(()),
        }
    }

    /// Rejects the record if a key has appeared twice in the object whose keys start at `mark`
    /// (which has been read to its end).
    fn close<E: de::Error>(&mut self, mark: Mark) -> Result<(), E> {
        match self.keys.close(mark) {
            Some(key) => self.fail(RejectReason::duplicate_key(&key)),
            None => Ok(()),
        }
    }

    /// The name of `field`, for messages.
    fn name(&self, field: usize) -> String {
        self.layout
            .fields
            .get(field)
            .map(|field| field.name.clone())
            .unwrap_or_default()
    }
}

impl<'de> Visitor<'de> for PayloadVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with `features` and `pred_id`")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mark = self.row.keys.mark();
        let top_level = |key: &[u8]| match key {
            b"features" => Some(0),
            b"pred_id" => Some(1),
            _ => None,
        };
        while let Some(key) = map.next_key_seed(KeySeed {
            lookup: top_level,
            keys: &mut *self.row.keys,
        })? {
            match key {
                Some(0) if self.found.features => {
                    return self.row.fail(RejectReason::DuplicateKey("features".into()));
                }
                Some(0) => {
                    self.found.features = true;
                    map.next_value_seed(FeaturesSeed(&mut self.row))?;
                }
                Some(_) if self.found.pred_id => {
                    return self.row.fail(RejectReason::DuplicateKey("pred_id".into()));
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
                        return self.row.fail(RejectReason::InvalidPredId);
                    }
                    self.pred_ids.push_str(text);
                }
                None => self.row.ignore(&mut map)?,
            }
        }
        self.row.close(mark)
    }
}

/// Deserializes one feature value into its field of the row.
struct ValueSeed<'r, 'a, 'l> {
    row: &'r mut Row<'a, 'l>,
    field: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature value")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.row.set(self.field, Value::Float(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.row.set(self.field, Value::Int(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        let value = match i64::try_from(value) {
            Ok(value) => Value::Int(value),
            Err(_) => Value::UInt(value),
        };
        self.row.set(self.field, value)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.row.set(self.field, Value::Bool(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.row.set(self.field, Value::Str(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.row.set(self.field, Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.row.set(self.field, Value::Composite)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.row.set(self.field, Value::Composite)
    }
}

/// Deserializes an object key into what `lookup` finds for it (a field, or one of the payload's
/// keys), or `None` for a key it does not know, which is kept in `keys`; without allocating
/// for a known key.
struct KeySeed<'k, F> {
    lookup: F,
    keys: &'k mut Keys,
}

impl<'de, F: FnOnce(&[u8]) -> Option<usize>> DeserializeSeed<'de> for KeySeed<'_, F> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl<'de, F: FnOnce(&[u8]) -> Option<usize>> Visitor<'de> for KeySeed<'_, F> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<usize>, E> {
        let found = (self.lookup)(key);
        if found.is_none() {
            self.keys.push(key);
        }
        Ok(found)
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(key.as_bytes())
    }
}

/// The keys read in the payload's objects that name nothing the service reads, so that a key
/// repeated in one object is found at any depth: each object's keys are appended as they are
/// read and compared, sorted, when the object ends (O(k log k) for k keys, whatever the
/// object's width). Fields and the payload's own keys are checked by their flags instead.
#[derive(Default)]
struct Keys {
    bytes: Vec<u8>,
    spans: Vec<Range<usize>>,
    /// The objects open in the value [`Keys::repeated_in`] is scanning.
    open: Vec<Mark>,
}

/// Where an object's keys start in [`Keys`].
#[derive(Clone, Copy)]
struct Mark {
    spans: usize,
    bytes: usize,
}

impl Keys {
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.open.clear();
    }

    /// Where the keys of an object starting now will be.
    fn mark(&self) -> Mark {
        Mark {
            spans: self.spans.len(),
            bytes: self.bytes.len(),
        }
    }

    fn push(&mut self, key: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.spans.push(start..self.bytes.len());
    }

    /// A key pushed twice since `mark`, if any (as text); forgets the keys pushed since.
    fn close(&mut self, mark: Mark) -> Option<String> {
        let bytes = &self.bytes;
        let key = |span: &Range<usize>| bytes.get(span.clone()).unwrap_or_default();
        let spans = self.spans.get_mut(mark.spans..).unwrap_or_default();
        let mut repeated = None;
        if spans.len() > 1 {
            spans.sort_unstable_by(|one, other| key(one).cmp(key(other)));
            repeated = spans.windows(2).find_map(|pair| match pair {
                [one, other] if key(one) == key(other) => {
                    Some(String::from_utf8_lossy(key(one)).into_owned())
                }
                _ => None,
            });
        }
        self.spans.truncate(mark.spans);
        self.bytes.truncate(mark.bytes);
        repeated
    }

    /// A key that appears twice in one object inside `json`, valid JSON text (as serde_json
    /// skipped it), if any. A scan of the text rather than a parse, so that what serde_json
    /// skips without reading (a number beyond f64, say) is skipped here too.
    fn repeated_in(&mut self, json: &str) -> Option<String> {
        if !json.starts_with(['{', '[']) {
            return None;
        }
        let bytes = json.as_bytes();
        let base = self.open.len();
        let mut at = 0;
        while let Some(&byte) = bytes.get(at) {
            match byte {
                b'{' => self.open.push(self.mark()),
                b'}' => {
                    let mark = self.open.pop()?;
                    if let Some(key) = self.close(mark) {
                        self.open.truncate(base);
                        return Some(key);
                    }
                }
                b'"' => {
                    let end = string_end(bytes, at)?;
                    let rest = bytes.get(end + 1..).unwrap_or_default();
                    if rest.trim_ascii_start().first() == Some(&b':') {
                        let quoted = json.get(at..=end)?;
                        self.push_quoted(quoted);
                    }
                    at = end;
                }
                _ => {}
            }
            at += 1;
        }
        None
    }

    /// Pushes the key a JSON string spells: its bytes as written, or unescaped by serde_json
    /// as the parser reads keys (a lone surrogate as WTF-8).
    fn push_quoted(&mut self, quoted: &str) {
        let contents = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        if !contents.contains('\\') {
            self.push(contents.as_bytes());
            return;
        }
        let seed = KeySeed {
            lookup: |_: &[u8]| None,
            keys: self,
        };
        // Valid JSON text: the string has been read once already.
        let _ = seed.deserialize(&mut serde_json::Deserializer::from_str(quoted));
    }
}

/// The position of the quote that ends the JSON string starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match bytes.get(at)? {
            b'"' => return Some(at),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// Deserializes the `features` object (or array, for a tensor signature) into the row.
struct FeaturesSeed<'r, 'a, 'l>(&'r mut Row<'a, 'l>);

impl<'de> DeserializeSeed<'de> for FeaturesSeed<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FeaturesSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the feature values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let row = self.0;
        if row.layout.form != FeatureForm::Object {
            return row.fail(RejectReason::FeaturesNotAnArray);
        }
        let names = row.layout.field_names();
        let mark = row.keys.mark();
        while let Some(column) = map.next_key_seed(KeySeed {
            lookup: |key: &[u8]| names.position(key),
            keys: &mut *row.keys,
        })? {
            let Some(field) = column else {
                row.ignore(&mut map)?;
                continue;
            };
            if row.seen.get(field) == Some(&true) {
                return row.fail(RejectReason::duplicate_key(&row.name(field)));
            }
            let seed = ValueSeed {
                row: &mut *row,
                field,
            };
            if let Err(error) = map.next_value_seed(seed) {
                invalid_json(row, field, &error);
                return Err(error);
            }
        }
        row.close(mark)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let row = self.0;
        if row.layout.form != FeatureForm::Array {
            return row.fail(RejectReason::FeaturesNotAnObject);
        }
        let expected = row.layout.fields.len();
        let mut got = 0;
        loop {
            let element = if got < expected {
                let seed = ValueSeed {
                    row: &mut *row,
                    field: got,
                };
                seq.next_element_seed(seed)
                    .inspect_err(|error| invalid_json(row, got, error))?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if element.is_none() {
                break;
            }
            got += 1;
        }
        if got != expected {
            return row.fail(RejectReason::WrongFeatureCount { expected, got });
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_the_form()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_the_form()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_the_form()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_the_form()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_the_form()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_the_form()
    }
}

impl FeaturesSeed<'_, '_, '_> {
    /// `features` is neither an object nor an array.
    fn not_the_form<E: de::Error>(self) -> Result<(), E> {
        let reason = match self.0.layout.form {
            FeatureForm::Object => RejectReason::FeaturesNotAnObject,
            FeatureForm::Array => RejectReason::FeaturesNotAnArray,
        };
        self.0.fail(reason)
    }
}

/// A feature value the JSON parser failed on (such as Python's `NaN`) is named, unless the
/// value was read and rejected for its own reason.
fn invalid_json(row: &mut Row<'_, '_>, field: usize, error: &impl fmt::Display) {
    if row.reason.is_none() {
        *row.reason = Some(RejectReason::InvalidFeatureJson {
            name: row.name(field),
            detail: error.to_string(),
        });
    }
}

mod fast;
#[cfg(test)]
mod tests;
