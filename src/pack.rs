//! Prediction events packed into KPL aggregated records by shard (`OUTPUT_AGGREGATION=kpl`).
//!
//! Each `PutRecords` entry counts against a shard's 1,000 records a second, whatever its size,
//! and costs the function the SDK's work for one entry. The Kinesis Producer Library's
//! aggregated format packs many user records into one Kinesis record: the magic bytes
//! [`MAGIC`], a protobuf `AggregatedRecord` (a table of partition keys, and the records, each
//! naming its key by index), then the MD5 digest of the protobuf. Consumers built on the KCL,
//! the `aws-kinesis-agg` deaggregators, or Lambda functions that de-aggregate (this one does)
//! read the user records back with their own partition keys.
//!
//! As the KPL does, events are grouped by the shard their partition key maps to, from the
//! output stream's hash-key ranges ([`ShardMap`], read with `ListShards` at cold start), so
//! that an event still lands on its key's shard. Every aggregate of one shard is sent under
//! the same Kinesis partition key (the first event's of that shard), so the publisher keeps the
//! aggregates of a shard in order, and with them each key's events.

use std::ops::Range;

use md5::{Digest, Md5};
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::aggregate::{self, DIGEST_BYTES, MAGIC};
use crate::publish::Outgoing;

/// Protobuf key bytes (field number << 3 | wire type 2, length-delimited) of the fields written.
const PARTITION_KEY_TABLE: u8 = (1 << 3) | 2;
const RECORDS: u8 = (3 << 3) | 2;
/// `Record.partition_key_index` (field 1, varint) and `Record.data` (field 3, bytes).
const RECORD_KEY_INDEX: u8 = 1 << 3;
const RECORD_DATA: u8 = (3 << 3) | 2;

/// The 128-bit hash key Kinesis gives `partition_key`: its MD5 digest, big-endian.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The open shards of a stream, by the hash-key range each takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// Sorted by the range's first hash key; the ranges cover the whole hash space.
    shards: Vec<Shard>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Shard {
    id: String,
    first: u128,
    last: u128,
}

impl ShardMap {
    /// A map of the open shards `(id, first hash key, last hash key)`, with the keys as
    /// `ListShards` gives them (decimal); fails unless the ranges cover the hash space.
    pub fn new<'a>(
        shards: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Result<Self, String> {
        let mut parsed = shards
            .into_iter()
            .map(|(id, first, last)| {
                let key = |text: &str| {
                    text.parse::<u128>()
                        .map_err(|_| format!("shard {id} has the hash key {text:?}"))
                };
                Ok(Shard {
                    id: id.to_owned(),
                    first: key(first)?,
                    last: key(last)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        parsed.sort_by_key(|shard| shard.first);
        let mut next = Some(0u128);
        for shard in &parsed {
            if Some(shard.first) != next || shard.last < shard.first {
                return Err(format!(
                    "the open shards' hash-key ranges do not cover the hash space (at shard {})",
                    shard.id
                ));
            }
            next = shard.last.checked_add(1);
        }
        if parsed.is_empty() || next.is_some() {
            return Err("the open shards' hash-key ranges do not cover the hash space".into());
        }
        Ok(Self { shards: parsed })
    }

    /// The shards of a new stream of `count` shards (at least one): Kinesis splits the hash
    /// space evenly, shard `i` starting at `i * floor(2^128 / count)`, the last one ending at
    /// the top.
    pub fn even(count: usize) -> Self {
        let count = count.max(1) as u128;
        // floor(2^128 / count), which fits from two shards on (one takes it all).
        let width = match count {
            1 => 0,
            _ => u128::MAX / count + u128::from(u128::MAX % count == count - 1),
        };
        let shards = (0..count)
            .map(|i| Shard {
                id: format!("shardId-{i:012}"),
                first: i * width,
                last: if i + 1 == count {
                    u128::MAX
                } else {
                    (i + 1) * width - 1
                },
            })
            .collect();
        Self { shards }
    }

    /// Reads the open shards of `stream` with `ListShards`.
    pub async fn list(client: &aws_sdk_kinesis::Client, stream: &str) -> Result<Self, String> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // A request with a token names no stream: the token does.
            let request = match &next_token {
                Some(token) => client.list_shards().next_token(token),
                None => client.list_shards().stream_name(stream),
            };
            let page = request
                .send()
                .await
                .map_err(|error| aws_sdk_kinesis::error::DisplayErrorContext(error).to_string())?;
            for shard in page.shards() {
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|range| range.ending_sequence_number().is_none());
                if let (true, Some(range)) = (open, shard.hash_key_range()) {
                    shards.push((
                        shard.shard_id().to_owned(),
                        range.starting_hash_key().to_owned(),
                        range.ending_hash_key().to_owned(),
                    ));
                }
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        Self::new(
            shards
                .iter()
                .map(|(id, first, last)| (id.as_str(), first.as_str(), last.as_str())),
        )
    }

    /// Number of open shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are none (never, for a map that was built).
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The position of the shard `partition_key` goes to.
    pub fn shard_of(&self, partition_key: &str) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        let hash = hash_key(partition_key);
        self.shards
            .partition_point(|shard| shard.first <= hash)
            .saturating_sub(1)
    }

    /// The id of the shard at `position`.
    pub fn id(&self, position: usize) -> &str {
        self.shards.get(position).map_or("", |shard| &shard.id)
    }
}

/// One aggregated record: its bytes, the Kinesis partition key it is sent under, and the
/// events (indexes into the events aggregated) it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedRecord {
    /// [`MAGIC`], the protobuf `AggregatedRecord`, its MD5 digest.
    pub data: Vec<u8>,
    /// The partition key of the first event of its shard.
    pub partition_key: String,
    /// The shard it is meant for.
    pub shard: usize,
    /// The events it holds, in order.
    pub events: Range<usize>,
}

/// Packs `events` into aggregated records of at most `max_record_bytes` each (data plus partition key),
/// each holding events of one shard of `shards`, in order. Also returns the events that do not
/// fit in an aggregate of their own (to send as they are).
///
/// The returned aggregates' `events` index into a list of the events in the order they were
/// packed, also returned: grouped by shard, and in the order given within a shard.
pub fn pack<'a>(events: &[Outgoing<'a>], shards: &ShardMap, max_record_bytes: usize) -> Packed<'a> {
    pack_groups(
        events,
        |event| shards.shard_of(&event.partition_key),
        max_record_bytes,
    )
}

/// [`pack`], with the events grouped by `group_of` (any numbers) rather than by shard: each
/// aggregate holds events of one group, under the partition key of the group's first event,
/// and its [`PackedRecord::shard`] is that group.
pub fn pack_groups<'a>(
    events: &[Outgoing<'a>],
    mut group_of: impl FnMut(&Outgoing<'a>) -> usize,
    max_record_bytes: usize,
) -> Packed<'a> {
    let mut packed = Packed::default();
    let mut builder: Option<Builder<'_>> = None;
    // Stable: each shard's events keep their order.
    let mut order: Vec<(usize, usize)> = events
        .iter()
        .enumerate()
        .map(|(index, event)| (group_of(event), index))
        .collect();
    order.sort_by_key(|(shard, _)| *shard);
    let mut shard_key: Option<(usize, String)> = None;
    for (shard, index) in order {
        let Some(event) = events.get(index) else {
            continue;
        };
        let key = match &shard_key {
            Some((current, key)) if *current == shard => key.clone(),
            _ => {
                let key = event.partition_key.to_string();
                shard_key = Some((shard, key.clone()));
                key
            }
        };
        if !Builder::fits_alone(event, &key, max_record_bytes) {
            packed.plain.push(event.clone());
            continue;
        }
        let full = builder.as_ref().is_some_and(|builder| {
            builder.shard != shard || !builder.fits(event, max_record_bytes)
        });
        if full && let Some(done) = builder.take() {
            packed.push(done);
        }
        let current = builder.get_or_insert_with(|| Builder::new(shard, key, packed.events.len()));
        current.add(event);
        packed.events.push(event.clone());
    }
    if let Some(done) = builder {
        packed.push(done);
    }
    packed
}

/// What [`aggregate`] made.
#[derive(Debug, Default)]
pub struct Packed<'a> {
    /// The aggregated records.
    pub aggregates: Vec<PackedRecord>,
    /// The events aggregated, in the order packed: each aggregate's `events` index into it.
    pub events: Vec<Outgoing<'a>>,
    /// Events too large for an aggregate of their own, in the order given.
    pub plain: Vec<Outgoing<'a>>,
}

impl Packed<'_> {
    fn push(&mut self, builder: Builder<'_>) {
        self.aggregates.push(builder.finish(self.events.len()));
    }
}

/// An aggregate being filled: the partition key table and the records so far, with the exact
/// size of the record they will make.
struct Builder<'e> {
    shard: usize,
    partition_key: String,
    first_event: usize,
    /// Distinct partition keys, in the order first met.
    keys: Vec<&'e str>,
    /// Each key's position in `keys`.
    key_index: foldhash::HashMap<&'e str, u64>,
    /// Each record's key index and data.
    records: Vec<(u64, &'e [u8])>,
    /// Bytes of the protobuf so far.
    protobuf: usize,
}

impl<'e> Builder<'e> {
    fn new(shard: usize, partition_key: String, first_event: usize) -> Self {
        Self {
            shard,
            partition_key,
            first_event,
            keys: Vec::new(),
            key_index: foldhash::HashMap::default(),
            records: Vec::new(),
            protobuf: 0,
        }
    }

    /// Bytes the record of `data` under key number `key_index` adds to the protobuf.
    fn record_len(key_index: u64, data: usize) -> usize {
        let record = 1 + encoded_len_varint(key_index) + 1 + encoded_len_varint(data as u64) + data;
        1 + encoded_len_varint(record as u64) + record
    }

    /// Bytes a new key adds to the partition key table.
    fn key_len(key: &str) -> usize {
        1 + encoded_len_varint(key.len() as u64) + key.len()
    }

    /// The Kinesis record's size (data plus partition key) for a protobuf of `protobuf` bytes.
    fn record_size(&self, protobuf: usize) -> usize {
        MAGIC.len() + protobuf + DIGEST_BYTES + self.partition_key.len()
    }

    /// Whether `event` alone makes an aggregate of at most `max_record_bytes` under `key`.
    fn fits_alone(event: &Outgoing<'_>, key: &str, max_record_bytes: usize) -> bool {
        let protobuf = Self::key_len(&event.partition_key) + Self::record_len(0, event.data.len());
        MAGIC.len() + protobuf + DIGEST_BYTES + key.len() <= max_record_bytes
    }

    /// The key index `event` would have, and the bytes it would add.
    fn growth(&self, event: &Outgoing<'_>) -> (u64, usize) {
        match self.key_index.get(event.partition_key.as_ref()) {
            Some(&index) => (index, Self::record_len(index, event.data.len())),
            None => {
                let index = self.keys.len() as u64;
                let key = Self::key_len(&event.partition_key);
                (index, key + Self::record_len(index, event.data.len()))
            }
        }
    }

    fn fits(&self, event: &Outgoing<'_>, max_record_bytes: usize) -> bool {
        let (_, growth) = self.growth(event);
        self.record_size(self.protobuf + growth) <= max_record_bytes
    }

    fn add(&mut self, event: &'e Outgoing<'_>) {
        let (index, growth) = self.growth(event);
        if index as usize == self.keys.len() {
            self.keys.push(&event.partition_key);
            self.key_index.insert(&event.partition_key, index);
        }
        self.records.push((index, event.data));
        self.protobuf += growth;
    }

    /// The aggregated record, holding the events from `first_event` to `end`.
    fn finish(self, end: usize) -> PackedRecord {
        let mut protobuf = Vec::with_capacity(self.protobuf);
        for key in &self.keys {
            protobuf.push(PARTITION_KEY_TABLE);
            encode_varint(key.len() as u64, &mut protobuf);
            protobuf.extend_from_slice(key.as_bytes());
        }
        for (index, data) in &self.records {
            let record = 1
                + encoded_len_varint(*index)
                + 1
                + encoded_len_varint(data.len() as u64)
                + data.len();
            protobuf.push(RECORDS);
            encode_varint(record as u64, &mut protobuf);
            protobuf.push(RECORD_KEY_INDEX);
            encode_varint(*index, &mut protobuf);
            protobuf.push(RECORD_DATA);
            encode_varint(data.len() as u64, &mut protobuf);
            protobuf.extend_from_slice(data);
        }
        PackedRecord {
            data: aggregate::frame(&protobuf),
            partition_key: self.partition_key,
            shard: self.shard,
            events: self.first_event..end,
        }
    }
}

#[cfg(test)]
mod tests;
