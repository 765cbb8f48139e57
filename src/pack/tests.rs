use std::borrow::Cow;

use super::*;

/// The user records of an aggregate: (partition key, data), read as the input side reads them.
fn read(aggregate: &[u8]) -> Vec<(String, Vec<u8>)> {
    let aggregate = crate::aggregate::decode(aggregate).unwrap();
    let keys = aggregate.partition_keys();
    aggregate
        .user_records()
        .map(|(key, data)| (keys[key].clone(), data.to_vec()))
        .collect()
}

fn even_shards(count: usize) -> ShardMap {
    ShardMap::even(count)
}

#[test]
fn even_shards_split_the_hash_space_as_kinesis_does() {
    // What `aws kinesis create-stream --shard-count N` lists, for N = 1, 3 and 4.
    let first_keys = |map: &ShardMap| -> Vec<u128> { map.shards.iter().map(|s| s.first).collect() };
    assert_eq!(first_keys(&ShardMap::even(1)), [0]);
    assert_eq!(
        first_keys(&ShardMap::even(3)),
        [
            0,
            113427455640312821154458202477256070485,
            226854911280625642308916404954512140970
        ]
    );
    assert_eq!(
        first_keys(&ShardMap::even(4)),
        [0, 1 << 126, 2 << 126, 3 << 126]
    );
    for count in 1..20 {
        let map = ShardMap::even(count);
        let ranges: Vec<(&str, String, String)> = map
            .shards
            .iter()
            .map(|s| (s.id.as_str(), s.first.to_string(), s.last.to_string()))
            .collect();
        let rebuilt = ShardMap::new(
            ranges
                .iter()
                .map(|(id, f, l)| (*id, f.as_str(), l.as_str())),
        );
        assert_eq!(rebuilt.unwrap(), map, "{count} shards cover the hash space");
    }
}

fn outgoing<'a>(keys: &'a [String], data: &'a [Vec<u8>]) -> Vec<Outgoing<'a>> {
    keys.iter()
        .zip(data)
        .enumerate()
        .map(|(record, (key, data))| Outgoing {
            record,
            data,
            partition_key: Cow::Borrowed(key),
        })
        .collect()
}

#[test]
fn the_hash_key_is_the_md5_of_the_partition_key_big_endian() {
    // MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
    assert_eq!(hash_key("a"), 0x0cc1_75b9_c0f1_b6a8_31c3_99e2_6977_2661);
    let shards = even_shards(4);
    assert_eq!(shards.shard_of("a"), 0);
    // The last hash key goes to the last shard, the first to the first.
    let map = ShardMap::new([("s0", "0", "99"), ("s1", "100", &u128::MAX.to_string())]).unwrap();
    assert_eq!(map.id(map.shard_of("a")), "s1");
}

#[test]
fn shard_maps_must_cover_the_hash_space() {
    let max = u128::MAX.to_string();
    assert!(ShardMap::new([("s0", "0", max.as_str())]).is_ok());
    for ranges in [
        vec![],
        vec![("s0", "1", max.as_str())],
        vec![("s0", "0", "10"), ("s1", "12", max.as_str())],
        vec![("s0", "0", "10")],
        vec![("s0", "0", "ten")],
    ] {
        assert!(ShardMap::new(ranges.clone()).is_err(), "{ranges:?}");
    }
}

#[test]
fn every_event_is_in_one_aggregate_of_its_key_s_shard_in_order() {
    let keys: Vec<String> = (0..3000).map(|i| format!("pred-{}", i % 700)).collect();
    let data: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!(r#"{{"pred_id":{i}}}"#).into_bytes())
        .collect();
    let events = outgoing(&keys, &data);
    let shards = even_shards(4);
    let packed = pack(&events, &shards, 8 * 1024);
    assert!(packed.plain.is_empty());
    assert!(packed.aggregates.len() > 8, "several per shard at 8 KiB");
    let mut seen = Vec::new();
    for aggregate in &packed.aggregates {
        assert!(aggregate.data.len() + aggregate.partition_key.len() <= 8 * 1024);
        let records = read(&aggregate.data);
        assert_eq!(records.len(), aggregate.events.len());
        for ((key, data), event) in records.iter().zip(&packed.events[aggregate.events.clone()]) {
            assert_eq!(shards.shard_of(key), aggregate.shard);
            assert_eq!(*key, event.partition_key);
            assert_eq!(data.as_slice(), event.data);
            seen.push(event.record);
        }
        // The aggregate goes to its shard under its shard's first key.
        assert_eq!(shards.shard_of(&aggregate.partition_key), aggregate.shard);
    }
    // Each event once; within a shard, in the order given.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, (0..3000).collect::<Vec<_>>());
    for shard in 0..4 {
        let of_shard: Vec<usize> = seen
            .iter()
            .copied()
            .filter(|&record| shards.shard_of(&keys[record]) == shard)
            .collect();
        assert!(
            of_shard.windows(2).all(|pair| pair[0] < pair[1]),
            "shard {shard}"
        );
        let keys_used: std::collections::HashSet<&str> = packed
            .aggregates
            .iter()
            .filter(|aggregate| aggregate.shard == shard)
            .map(|aggregate| aggregate.partition_key.as_str())
            .collect();
        assert_eq!(keys_used.len(), 1, "one Kinesis key per shard");
    }
}

#[test]
fn aggregates_are_filled_to_the_byte() {
    // Events of every size around the limit: each aggregate is as large as allowed, that is
    // the next event would not have fitted.
    let limit = 4096;
    let keys: Vec<String> = (0..400).map(|i| format!("k{}", i % 7)).collect();
    let data: Vec<Vec<u8>> = (0..400).map(|i| vec![b'x'; (i * 37) % 300]).collect();
    let events = outgoing(&keys, &data);
    let shards = even_shards(1);
    let packed = pack(&events, &shards, limit);
    for (aggregate, next) in packed
        .aggregates
        .iter()
        .zip(packed.aggregates.iter().skip(1))
    {
        let size = aggregate.data.len() + aggregate.partition_key.len();
        assert!(size <= limit);
        // Adding the next aggregate's first event would have gone over.
        let first = &packed.events[next.events.start];
        let mut with_next: Vec<Outgoing<'_>> = packed.events[aggregate.events.clone()].to_vec();
        with_next.push(first.clone());
        let bigger = super::pack(&with_next, &shards, usize::MAX);
        let bigger = &bigger.aggregates[0];
        assert!(bigger.data.len() + bigger.partition_key.len() > limit);
    }
    let records: usize = packed.aggregates.iter().map(|a| read(&a.data).len()).sum();
    assert_eq!(records, 400);
}

#[test]
fn an_event_too_large_for_an_aggregate_is_left_to_send_as_it_is() {
    let keys: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let data: Vec<Vec<u8>> = vec![vec![b'x'; 10], vec![b'y'; 1000], vec![b'z'; 10]];
    let events = outgoing(&keys, &data);
    let packed = pack(&events, &even_shards(1), 500);
    assert_eq!(packed.plain.len(), 1);
    assert_eq!(packed.plain[0].record, 1);
    assert_eq!(packed.events.len(), 2);
    assert_eq!(packed.aggregates.len(), 1);
}
