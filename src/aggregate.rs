//! Records the Kinesis Producer Library (KPL) aggregated: one Kinesis record carrying many user
//! records.
//!
//! The format (`aggregation-format.md` in awslabs/amazon-kinesis-producer) is the magic bytes
//! [`MAGIC`], a protobuf (proto2) `AggregatedRecord`, and the 16-byte MD5 digest of the protobuf
//! bytes. Each user record names its partition key by its index in the message's partition-key
//! table, and may name an explicit hash key in a second table and carry tags; the service reads
//! only the key and the data, but checks the rest as the KCL's parser would.
//!
//! The KCL and the `aws-kinesis-agg` deaggregators hand a record with the magic whose digest or
//! protobuf is wrong to the application as if it were not aggregated; such data is never a
//! payload this service takes (it is not UTF-8), so [`decode`] says instead what is wrong with
//! it, and the record is rejected whole. An index beyond its table, which those libraries log
//! while dropping the user records after it, is also an error of the whole record here.

use md5::{Digest as _, Md5};
use prost::Message as _;
use prost::bytes::Bytes;
use thiserror::Error;

/// The first four bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Bytes of the MD5 digest that ends an aggregated record.
pub const DIGEST_BYTES: usize = 16;

/// The protobuf message of an aggregated record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    /// The user records' partition keys, each once or as often as used.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// The user records' explicit hash keys.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in the order they were added.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// One user record of an [`AggregatedRecord`].
///
/// The fields the format declares `required` are optional here, so that a record without one
/// is found and rejected, as the KCL's parser rejects it, instead of read as index 0 or no data.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Its partition key's index in the partition-key table (required).
    #[prost(uint64, optional, tag = "1")]
    pub partition_key_index: Option<u64>,
    /// Its explicit hash key's index in the explicit-hash-key table.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// Its data (required). As `Bytes`, decoded from the message's own buffer without a copy.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub data: Option<Bytes>,
    /// Its tags.
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// A tag of a user record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    /// The tag's key (required).
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    /// The tag's value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// Why data that starts with [`MAGIC`] is not an aggregated record that can be read. The
/// message says what is wrong and where, never a key or data of the record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AggregateError {
    /// Shorter than the magic number and the digest.
    #[error("its {0} bytes are too few for the magic number and the 16-byte MD5 digest")]
    Truncated(usize),
    /// The digest is not the MD5 of the protobuf bytes: the record was cut or altered.
    #[error("its MD5 digest does not match its protobuf message")]
    WrongDigest,
    /// The protobuf bytes are not an `AggregatedRecord`. prost's message names the field and
    /// what is wrong with it, never a value.
    #[error("its protobuf message cannot be decoded: {0}")]
    Undecodable(prost::DecodeError),
    /// A user record lacks a field the format requires.
    #[error("user record {record} has no `{field}`")]
    MissingField {
        /// The user record's position in the message.
        record: usize,
        /// The field.
        field: &'static str,
    },
    /// A user record names a key beyond its table.
    #[error("user record {record} has {table} index {index}, but the table has {len} keys")]
    IndexOutOfTable {
        /// The user record's position in the message.
        record: usize,
        /// The table: `partition_key` or `explicit_hash_key`.
        table: &'static str,
        /// The index given.
        index: u64,
        /// Keys in the table.
        len: usize,
    },
    /// The message holds no user records: nothing in it could be predicted or re-delivered.
    #[error("it holds no user records")]
    Empty,
    /// A key of the partition-key table is not a Kinesis partition key (1 to 256 characters),
    /// which no producer can have put. Each user record's key goes into its dead letter, so a
    /// huge key shared by many user records would make letters many times the aggregate's
    /// size.
    #[error("partition key {index} of its table has {chars} characters, not 1 to 256")]
    BadPartitionKey {
        /// The key's position in the table.
        index: usize,
        /// Its length in characters.
        chars: usize,
    },
}

/// Whether `data` is an aggregated record (starts with [`MAGIC`]).
#[inline]
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// An aggregated record whose every user record has its data and a partition key in the table.
#[derive(Debug, Clone)]
pub struct Aggregate(AggregatedRecord);

impl Aggregate {
    /// The partition-key table.
    pub fn partition_keys(&self) -> &[String] {
        &self.0.partition_key_table
    }

    /// Each user record's partition key (an index into [`Self::partition_keys`]) and data, in
    /// order: the first is sub-sequence number 0, as the KCL numbers them.
    pub fn user_records(&self) -> impl ExactSizeIterator<Item = (usize, &[u8])> + '_ {
        self.0.records.iter().map(|record| {
            let key = record.partition_key_index.unwrap_or_default();
            let data = record.data.as_deref().unwrap_or_default();
            (usize::try_from(key).unwrap_or(usize::MAX), data)
        })
    }

    /// Total bytes of the user records' data.
    pub fn data_bytes(&self) -> usize {
        self.0
            .records
            .iter()
            .map(|record| record.data.as_ref().map_or(0, Bytes::len))
            .sum()
    }
}

/// Reads an aggregated record (`data` starts with [`MAGIC`]) and checks that each of its user
/// records can be read: its digest, its protobuf, every required field and every key index.
pub fn decode(data: &[u8]) -> Result<Aggregate, AggregateError> {
    let body = data.get(MAGIC.len()..).unwrap_or_default();
    let Some(split) = body.len().checked_sub(DIGEST_BYTES) else {
        return Err(AggregateError::Truncated(data.len()));
    };
    let (message, digest) = body.split_at(split);
    if Md5::digest(message).as_slice() != digest {
        return Err(AggregateError::WrongDigest);
    }
    // One copy of the message, which the user records' data are slices of.
    let message = AggregatedRecord::decode(Bytes::copy_from_slice(message))
        .map_err(AggregateError::Undecodable)?;
    if let Some((index, key)) = message
        .partition_key_table
        .iter()
        .enumerate()
        .find(|(_, key)| !crate::event::is_partition_key(key))
    {
        return Err(AggregateError::BadPartitionKey {
            index,
            chars: key.chars().count(),
        });
    }
    if message.records.is_empty() {
        return Err(AggregateError::Empty);
    }
    for (position, record) in message.records.iter().enumerate() {
        let missing = |field| AggregateError::MissingField {
            record: position,
            field,
        };
        let in_table = |index: u64, table, len: usize| match usize::try_from(index) {
            Ok(at) if at < len => Ok(()),
            _ => Err(AggregateError::IndexOutOfTable {
                record: position,
                table,
                index,
                len,
            }),
        };
        let key = record
            .partition_key_index
            .ok_or_else(|| missing("partition_key_index"))?;
        in_table(key, "partition_key", message.partition_key_table.len())?;
        if let Some(index) = record.explicit_hash_key_index {
            in_table(
                index,
                "explicit_hash_key",
                message.explicit_hash_key_table.len(),
            )?;
        }
        if record.data.is_none() {
            return Err(missing("data"));
        }
        if record.tags.iter().any(|tag| tag.key.is_none()) {
            return Err(missing("tags.key"));
        }
    }
    Ok(Aggregate(message))
}

/// Writes `message` as an aggregated record, for the tests and tools that make them (the
/// service packs its own output with `crate::pack`, which frames its protobuf with [`frame`]).
pub fn encode(message: &AggregatedRecord) -> Vec<u8> {
    frame(&message.encode_to_vec())
}

/// Frames protobuf bytes (an `AggregatedRecord`'s or not) as an aggregated record: the magic,
/// the bytes and their MD5.
pub fn frame(protobuf: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(MAGIC.len() + protobuf.len() + DIGEST_BYTES);
    data.extend_from_slice(&MAGIC);
    data.extend_from_slice(protobuf);
    data.extend_from_slice(&Md5::digest(protobuf));
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: u64, data: &[u8]) -> Record {
        Record {
            partition_key_index: Some(key),
            explicit_hash_key_index: None,
            data: Some(Bytes::copy_from_slice(data)),
            tags: Vec::new(),
        }
    }

    fn message(keys: &[&str], records: Vec<Record>) -> AggregatedRecord {
        AggregatedRecord {
            partition_key_table: keys.iter().map(|key| (*key).into()).collect(),
            explicit_hash_key_table: Vec::new(),
            records,
        }
    }

    fn read(aggregate: &Aggregate) -> Vec<(&str, &[u8])> {
        aggregate
            .user_records()
            .map(|(key, data)| (aggregate.partition_keys()[key].as_str(), data))
            .collect()
    }

    #[test]
    fn user_records_are_read_in_order_with_their_keys() {
        let data = encode(&message(
            &["a", "b"],
            vec![record(1, b"one"), record(0, b""), record(1, b"three")],
        ));
        assert!(is_aggregated(&data));
        let aggregate = decode(&data).unwrap();
        assert_eq!(
            read(&aggregate),
            [("b", &b"one"[..]), ("a", b""), ("b", b"three")]
        );
        assert_eq!(aggregate.data_bytes(), 8);
    }

    #[test]
    fn explicit_hash_keys_and_tags_are_checked_and_skipped() {
        let mut tagged = record(0, b"x");
        tagged.explicit_hash_key_index = Some(1);
        tagged.tags = vec![
            Tag {
                key: Some("k".into()),
                value: None,
            },
            Tag {
                key: Some("k2".into()),
                value: Some("v".into()),
            },
        ];
        let mut aggregated = message(&["a"], vec![tagged.clone(), record(0, b"y")]);
        aggregated.explicit_hash_key_table = vec!["1".into(), "2".into()];
        let aggregate = decode(&encode(&aggregated)).unwrap();
        assert_eq!(read(&aggregate), [("a", &b"x"[..]), ("a", b"y")]);

        tagged.explicit_hash_key_index = Some(2);
        aggregated.records[0] = tagged.clone();
        assert_eq!(
            decode(&encode(&aggregated)).unwrap_err(),
            AggregateError::IndexOutOfTable {
                record: 0,
                table: "explicit_hash_key",
                index: 2,
                len: 2
            }
        );
        tagged.explicit_hash_key_index = None;
        tagged.tags[1].key = None;
        aggregated.records[0] = tagged;
        assert_eq!(
            decode(&encode(&aggregated)).unwrap_err(),
            AggregateError::MissingField {
                record: 0,
                field: "tags.key"
            }
        );
    }

    #[test]
    fn every_corrupt_form_is_an_error_saying_what_is_wrong() {
        let good = encode(&message(
            &["a"],
            vec![record(0, b"data"), record(0, b"more")],
        ));
        assert!(decode(&good).is_ok());

        for length in [4, 5, 19] {
            assert_eq!(
                decode(&good[..length]).unwrap_err(),
                AggregateError::Truncated(length),
                "{length}"
            );
        }
        // Cut, or a byte changed: the digest no longer matches.
        assert_eq!(
            decode(&good[..good.len() - 1]).unwrap_err(),
            AggregateError::WrongDigest
        );
        let mut altered = good.clone();
        altered[8] ^= 1;
        assert_eq!(decode(&altered).unwrap_err(), AggregateError::WrongDigest);

        // Bytes that are not protobuf, with a matching digest.
        let error = decode(&frame(&[0xff; 3])).unwrap_err();
        assert!(matches!(error, AggregateError::Undecodable(_)), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("its protobuf message cannot be decoded: ")
        );

        // A partition key that is not UTF-8.
        let mut bad_key = prost::Message::encode_to_vec(&message(&["a"], vec![record(0, b"x")]));
        let at = bad_key.iter().position(|&byte| byte == b'a').unwrap();
        bad_key[at] = 0xff;
        assert!(matches!(
            decode(&frame(&bad_key)).unwrap_err(),
            AggregateError::Undecodable(_)
        ));

        assert_eq!(
            decode(&encode(&message(
                &["a"],
                vec![record(0, b"x"), record(1, b"y")]
            )))
            .unwrap_err(),
            AggregateError::IndexOutOfTable {
                record: 1,
                table: "partition_key",
                index: 1,
                len: 1
            }
        );
        assert_eq!(
            decode(&encode(&message(&[], vec![record(u64::MAX, b"x")]))).unwrap_err(),
            AggregateError::IndexOutOfTable {
                record: 0,
                table: "partition_key",
                index: u64::MAX,
                len: 0
            }
        );
        // Table keys that are not partition keys: empty, or over 256 characters.
        let long = "k".repeat(257);
        for (keys, index, chars) in [(vec!["a", ""], 1, 0), (vec![long.as_str()], 0, 257)] {
            assert_eq!(
                decode(&encode(&message(&keys, vec![record(0, b"x")]))).unwrap_err(),
                AggregateError::BadPartitionKey { index, chars }
            );
        }
        let widest = "é".repeat(256);
        assert!(decode(&encode(&message(&[widest.as_str()], vec![record(0, b"x")]))).is_ok());
        let mut keyless = record(0, b"x");
        keyless.partition_key_index = None;
        assert_eq!(
            decode(&encode(&message(&["a"], vec![keyless]))).unwrap_err(),
            AggregateError::MissingField {
                record: 0,
                field: "partition_key_index"
            }
        );
        let mut dataless = record(0, b"x");
        dataless.data = None;
        assert_eq!(
            decode(&encode(&message(&["a"], vec![record(0, b"x"), dataless]))).unwrap_err(),
            AggregateError::MissingField {
                record: 1,
                field: "data"
            }
        );
        // The magic and the digest of nothing; and a key table without records.
        assert_eq!(
            decode(&encode(&message(&[], vec![]))).unwrap_err(),
            AggregateError::Empty
        );
        assert_eq!(
            decode(&encode(&message(&["a"], vec![]))).unwrap_err(),
            AggregateError::Empty
        );
    }

    #[test]
    fn errors_do_not_quote_keys_or_data() {
        let secret = encode(&message(&["SECRET"], vec![record(3, b"SECRET")]));
        let mut cut = secret.clone();
        cut.truncate(cut.len() - 3);
        for data in [secret, cut, frame(b"\x0aSECRET")] {
            let message = decode(&data).unwrap_err().to_string();
            assert!(!message.contains("SECRET"), "{message}");
        }
    }

    fn arbitrary_message() -> impl proptest::strategy::Strategy<Value = AggregatedRecord> {
        use proptest::prelude::*;
        let keys = proptest::collection::vec("[ -~é😀]{1,12}", 1..5);
        let hash_keys = proptest::collection::vec("[0-9]{1,39}", 0..3);
        (keys, hash_keys).prop_flat_map(|(keys, hash_keys)| {
            let (key_count, hash_count) = (keys.len() as u64, hash_keys.len() as u64);
            let tag =
                ("[a-z]{0,5}", proptest::option::of("[a-z]{0,5}")).prop_map(|(key, value)| Tag {
                    key: Some(key),
                    value,
                });
            let hash_index = match hash_count {
                0 => Just(None).boxed(),
                n => proptest::option::of(0..n).boxed(),
            };
            let record = (
                0..key_count,
                hash_index,
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::collection::vec(tag, 0..2),
            )
                .prop_map(|(key, hash, data, tags)| Record {
                    partition_key_index: Some(key),
                    explicit_hash_key_index: hash,
                    data: Some(Bytes::from(data)),
                    tags,
                });
            proptest::collection::vec(record, 1..20).prop_map(move |records| AggregatedRecord {
                partition_key_table: keys.clone(),
                explicit_hash_key_table: hash_keys.clone(),
                records,
            })
        })
    }

    proptest::proptest! {
        /// Any aggregated record reads back as the user records, keys and data it was made of.
        #[test]
        fn random_aggregates_read_back_as_written(message in arbitrary_message()) {
            let aggregate = decode(&encode(&message)).unwrap();
            let read: Vec<(String, Vec<u8>)> = aggregate
                .user_records()
                .map(|(key, data)| (aggregate.partition_keys()[key].clone(), data.to_vec()))
                .collect();
            let written: Vec<(String, Vec<u8>)> = message
                .records
                .iter()
                .map(|record| {
                    let key = record.partition_key_index.unwrap() as usize;
                    (message.partition_key_table[key].clone(), record.data.clone().unwrap().to_vec())
                })
                .collect();
            proptest::prop_assert_eq!(read, written);
        }

        /// Any bytes after the magic, with or without a matching digest, are read or refused,
        /// never a panic.
        #[test]
        fn random_bytes_after_the_magic_never_panic(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            digest in proptest::prelude::any::<bool>(),
        ) {
            let data = match digest {
                true => frame(&body),
                false => [&MAGIC[..], &body].concat(),
            };
            if let Ok(aggregate) = decode(&data) {
                for (key, record) in aggregate.user_records() {
                    proptest::prop_assert!(key < aggregate.partition_keys().len());
                    proptest::prop_assert!(record.len() <= data.len());
                }
            }
        }
    }
}
