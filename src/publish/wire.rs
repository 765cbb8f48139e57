//! The body of a `PutRecords` call and its answer, written and read here rather than through
//! the SDK's per-entry types.
//!
//! The SDK would copy each event into a `PutRecordsRequestEntry`, serialize the entries one
//! by one, and parse every result of the answer into owned strings (a sequence number and a
//! shard id per entry, which the publisher only looks at). At hundreds of entries per call
//! that per-entry work is most of what publishing costs the CPU (docs/PERFORMANCE.md,
//! "Publishing"). Everything else stays the SDK's: the call is still its `PutRecords`
//! operation, with its endpoint, headers, SigV4 signature (computed over the body written
//! here), timeouts and error parsing.
//!
//! [`Wire`] is an interceptor added to one call of an input with no records. Before the
//! request is signed, it puts the body written by [`body`] in place of the SDK's; when a
//! successful answer comes, it keeps the answer's body for [`results`] to read and gives the
//! SDK one with no results to parse. An answer that is an error reaches the SDK unchanged.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_sdk_kinesis::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::BoxError;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::{Body, Frame};
use serde::Deserialize;

use super::Outgoing;

/// The JSON body of a `PutRecords` call to `stream` of the events at `indexes`, in that
/// order: each event's data in base64 and its partition key.
pub fn body(stream: &str, events: &[Outgoing<'_>], indexes: &[usize]) -> Vec<u8> {
    let entries = indexes.iter().filter_map(|&index| events.get(index));
    // `{"Data":"","PartitionKey":""},` around each entry, and a few bytes of escapes.
    let capacity = entries
        .clone()
        .map(|event| event.data.len().div_ceil(3) * 4 + event.partition_key.len() + 40)
        .sum::<usize>()
        + stream.len()
        + 40;
    let mut body = Vec::with_capacity(capacity);
    body.extend_from_slice(b"{\"StreamName\":");
    json_string(&mut body, stream);
    body.extend_from_slice(b",\"Records\":[");
    for (position, event) in entries.enumerate() {
        if position > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"Data\":\"");
        base64_simd::STANDARD.encode_append(event.data, &mut body);
        body.extend_from_slice(b"\",\"PartitionKey\":");
        json_string(&mut body, &event.partition_key);
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    body
}

/// Appends `text` as a JSON string.
fn json_string(out: &mut Vec<u8>, text: &str) {
    let plain = text
        .bytes()
        .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing a `str` into a `Vec` fails on neither side.
        serde_json::to_writer(&mut *out, text).unwrap_or_default();
    }
}

/// One entry's result in an answer, in the order of the call's entries.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct EntryResult<'a> {
    /// Where the entry is on its shard, if it was taken.
    #[serde(rename = "SequenceNumber", borrow, default)]
    pub sequence_number: Option<Text<'a>>,
    /// The shard that took the entry.
    #[serde(rename = "ShardId", borrow, default)]
    pub shard_id: Option<Text<'a>>,
    /// Why the entry was not taken; `None` if it was.
    #[serde(rename = "ErrorCode", borrow, default)]
    pub error_code: Option<Text<'a>>,
    #[serde(rename = "ErrorMessage", borrow, default)]
    pub error_message: Option<Text<'a>>,
}

/// A string of an answer: borrowed from it unless it has escapes.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl EntryResult<'_> {
    /// Whether the stream took the entry: it gives a sequence number and no error. (An
    /// answer giving neither says nothing, and the entry is sent again.)
    pub fn accepted(&self) -> bool {
        self.error_code.is_none() && self.sequence_number.is_some()
    }
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<EntryResult<'a>>,
}

/// The entries' results in the body of a successful `PutRecords` answer.
pub fn results(answer: &[u8]) -> Result<Vec<EntryResult<'_>>, serde_json::Error> {
    match all_accepted(answer) {
        Some(results) => Ok(results),
        None => serde_json::from_slice::<Answer<'_>>(answer).map(|answer| answer.records),
    }
}

/// The results of an answer written exactly as Kinesis writes one whose entries were all
/// accepted, read by one forward scan:
/// `{"FailedRecordCount":0,"Records":[{"SequenceNumber":"<digits>","ShardId":"<id>"},...]}`,
/// with `,"EncryptionType":"<letters>"` or not before the last brace. `None` for any other
/// text (other spacing or order, a failed entry, escapes), which serde_json then reads.
fn all_accepted(answer: &[u8]) -> Option<Vec<EntryResult<'_>>> {
    /// The run of bytes at the start of `text` that `keep` accepts, and the rest.
    fn split(text: &[u8], keep: impl Fn(u8) -> bool) -> (&[u8], &[u8]) {
        text.split_at(
            text.iter()
                .position(|&byte| !keep(byte))
                .unwrap_or(text.len()),
        )
    }
    let mut rest = answer.strip_prefix(br#"{"FailedRecordCount":0,"Records":["#)?;
    let mut results = Vec::new();
    match rest.strip_prefix(b"]") {
        Some(after) => rest = after,
        None => loop {
            rest = rest.strip_prefix(br#"{"SequenceNumber":""#)?;
            let (digits, after) = split(rest, |byte| byte.is_ascii_digit());
            if digits.is_empty() {
                return None;
            }
            rest = after.strip_prefix(br#"","ShardId":""#)?;
            let (shard, after) = split(rest, |byte| {
                byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
            });
            let shard = std::str::from_utf8(shard)
                .ok()
                .filter(|id| !id.is_empty())?;
            let digits = std::str::from_utf8(digits).ok()?;
            results.push(EntryResult {
                sequence_number: Some(Text(Cow::Borrowed(digits))),
                shard_id: Some(Text(Cow::Borrowed(shard))),
                error_code: None,
                error_message: None,
            });
            rest = after.strip_prefix(b"\"}")?;
            match rest.split_first()? {
                (b',', after) => rest = after,
                (b']', after) => {
                    rest = after;
                    break;
                }
                _ => return None,
            }
        },
    }
    if let Some(after) = rest.strip_prefix(br#","EncryptionType":""#) {
        let (_, after) = split(after, |byte| byte.is_ascii_alphabetic());
        rest = after.strip_prefix(b"\"")?;
    }
    (rest == b"}").then_some(results)
}

/// Where the body of a call's successful answer is left.
pub type AnswerSlot = Arc<Mutex<Option<Vec<u8>>>>;

/// Sends one call's [`body`] in place of the SDK's, and keeps its successful answer's body.
#[derive(Debug)]
pub struct Wire {
    body: Bytes,
    answer: AnswerSlot,
}

impl Wire {
    /// An interceptor sending `body`.
    pub fn new(body: Vec<u8>) -> Self {
        Self {
            body: Bytes::from(body),
            answer: Arc::default(),
        }
    }

    /// Where the body of a successful answer is left, once the SDK has read it.
    pub fn answer(&self) -> AnswerSlot {
        Arc::clone(&self.answer)
    }
}

/// What the SDK reads in place of a successful answer.
const NO_RESULTS: &[u8] = br#"{"FailedRecordCount":0,"Records":[]}"#;

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "PutRecordsWire"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        request
            .headers_mut()
            .insert("content-length", self.body.len().to_string());
        *request.body_mut() = SdkBody::from(self.body.clone());
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if response.status().is_success() {
            let answer = std::mem::replace(response.body_mut(), SdkBody::taken());
            *response.body_mut() = SdkBody::from_body_1_x(Keep {
                answer,
                read: Vec::new(),
                slot: Arc::clone(&self.answer),
                done: false,
            });
        }
        Ok(())
    }
}

/// A body that reads the answer to its end into `slot`, then yields [`NO_RESULTS`].
struct Keep {
    answer: SdkBody,
    read: Vec<u8>,
    slot: AnswerSlot,
    done: bool,
}

impl Body for Keep {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.answer).poll_frame(context) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        self.read.extend_from_slice(data);
                    }
                }
                Poll::Ready(None) => {
                    let read = std::mem::take(&mut self.read);
                    if let Ok(mut slot) = self.slot.lock() {
                        *slot = Some(read);
                    }
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(NO_RESULTS)))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_holds_each_entry_in_base64_with_its_key_escaped() {
        let events = [
            Outgoing {
                record: 0,
                data: b"{\"pred_id\":1}",
                partition_key: Cow::Borrowed("1"),
            },
            Outgoing {
                record: 1,
                data: &[0, 255, 7],
                partition_key: Cow::Borrowed("a \"quoted\" key\n"),
            },
        ];
        let written = body("out", &events, &[1, 0]);
        let read: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(
            read,
            serde_json::json!({
                "StreamName": "out",
                "Records": [
                    {"Data": "AP8H", "PartitionKey": "a \"quoted\" key\n"},
                    {"Data": "eyJwcmVkX2lkIjoxfQ==", "PartitionKey": "1"},
                ]
            })
        );
        assert!(written.len() <= written.capacity());
        // Keys as serde_json writes them, escapes and all.
        for key in ["k", "\u{7f}é\u{1f}", "\\", "a\tb", "\u{2028}"] {
            let mut out = Vec::new();
            json_string(&mut out, key);
            assert_eq!(out, serde_json::to_vec(key).unwrap(), "{key:?}");
        }
        assert_eq!(
            body("s", &events, &[]),
            br#"{"StreamName":"s","Records":[]}"#
        );
    }

    #[test]
    fn results_read_accepted_and_failed_entries_in_order() {
        let answer = br#"{"FailedRecordCount":1,"EncryptionType":"NONE","Records":[
            {"SequenceNumber":"4959","ShardId":"shardId-000000000001"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard \"x\""},
            {"SequenceNumber":"4960","ShardId":"shardId-000000000000","ErrorCode":null}]}"#;
        let read = results(answer).unwrap();
        assert_eq!(read.len(), 3);
        let text = |text: &Option<Text<'_>>| text.as_ref().map(|text| text.as_str().to_owned());
        assert_eq!(text(&read[0].shard_id).unwrap(), "shardId-000000000001");
        // Borrowed from the answer, not copied.
        assert!(matches!(read[0].shard_id, Some(Text(Cow::Borrowed(_)))));
        assert_eq!(read[0].error_code, None);
        assert_eq!(
            text(&read[1].error_code).unwrap(),
            "ProvisionedThroughputExceededException"
        );
        assert_eq!(
            text(&read[1].error_message).unwrap(),
            "Rate exceeded for shard \"x\""
        );
        assert_eq!(read[2].error_code, None);
        assert!(read[0].accepted() && !read[1].accepted() && read[2].accepted());
        // A result with neither a sequence number nor an error says nothing was taken.
        let empty = results(br#"{"FailedRecordCount":0,"Records":[{}]}"#).unwrap();
        assert!(!empty[0].accepted());
        assert!(results(b"{\"Records\":").is_err());
        assert!(results(b"{}").is_err());
    }

    #[test]
    fn answers_of_entries_all_accepted_read_the_same_by_the_scan_and_by_serde() {
        fn read(answer: &str) -> Option<Vec<EntryResult<'_>>> {
            results(answer.as_bytes()).ok()
        }
        fn serde(answer: &str) -> Option<Vec<EntryResult<'_>>> {
            serde_json::from_str::<Answer<'_>>(answer)
                .ok()
                .map(|answer| answer.records)
        }
        let entry = r#"{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000003"}"#;
        let answers = [
            format!(r#"{{"FailedRecordCount":0,"Records":[{entry},{entry}]}}"#),
            format!(r#"{{"FailedRecordCount":0,"Records":[{entry}],"EncryptionType":"KMS"}}"#),
            r#"{"FailedRecordCount":0,"Records":[]}"#.to_owned(),
            // Not the compact form: left to serde, read the same.
            format!(r#"{{ "FailedRecordCount": 0, "Records": [{entry}] }}"#),
            format!(r#"{{"Records":[{entry}],"FailedRecordCount":0}}"#),
            r#"{"FailedRecordCount":0,"Records":[{"ShardId":"shardId-1","SequenceNumber":"1"}]}"#
                .to_owned(),
            r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ShardId":"shard\u0049d"}]}"#
                .to_owned(),
        ];
        for answer in &answers {
            assert!(read(answer).is_some(), "{answer}");
            assert_eq!(read(answer), serde(answer), "{answer}");
        }
        assert!(all_accepted(answers[0].as_bytes()).is_some());
        assert!(all_accepted(answers[1].as_bytes()).is_some());
        assert!(all_accepted(answers[3].as_bytes()).is_none());
        // Cut or changed anywhere, the compact form is not taken for what it is not.
        let whole = answers[1].as_bytes();
        for end in 0..whole.len() {
            let cut = &whole[..end];
            assert!(
                all_accepted(cut).is_none(),
                "{}",
                String::from_utf8_lossy(cut)
            );
        }
        for position in 0..whole.len() {
            let mut changed = whole.to_vec();
            changed[position] = b'"';
            if let Some(scanned) = all_accepted(&changed) {
                let text = String::from_utf8_lossy(&changed);
                assert_eq!(Some(scanned), serde(&text), "{text}");
            }
        }
    }
}
