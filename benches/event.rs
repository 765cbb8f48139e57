//! Reading the raw Lambda Kinesis event.
//!
//! - `floor/N`: the least any handler must do with the event: parse its JSON with serde_json
//!   into borrowed strings, keeping only each record's `data` and `sequenceNumber`. No base64, no
//!   payload parsing. The whole handler is judged against this (issue 4: at most 1.5x).
//! - `decode/total/N`: the raw event into the model's `[N, F]` input buffer and the ledger, the `pred_id`s and the
//!   rejected records, in its two steps:
//!   - `decode/envelope/N`: `KinesisBatch::from_slice`, the event JSON into each record's
//!     base64-decoded `data`, `sequenceNumber` and `partitionKey`;
//!   - `decode/payloads/N`: `event::decode`, each record's payload into its row.

mod common;

use std::hint::black_box;

use bike_prediction::event;
use bike_prediction::inputs::InputLayout;
use bike_prediction::kinesis::KinesisBatch;
use criterion::{Criterion, criterion_group, criterion_main};

fn floor(c: &mut Criterion) {
    let mut group = c.benchmark_group("floor");
    for records in common::SIZES {
        let event = common::kinesis_event(records);
        assert_eq!(common::floor(&event), records);
        let id = common::batch(&mut group, records);
        group.bench_with_input(id, &event, |b, event| {
            b.iter(|| common::floor(black_box(event)))
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let layout = &InputLayout::float_columns(&common::reference().columns);
    let events: Vec<(usize, Vec<u8>)> = common::SIZES
        .into_iter()
        .map(|records| (records, common::kinesis_event(records)))
        .collect();

    let mut group = c.benchmark_group("decode/total");
    for (records, event) in &events {
        // The benches measure the path every good record takes: none may be rejected.
        let kinesis = KinesisBatch::from_slice(event).expect("a Kinesis event");
        let (ledger, inputs) = event::decode(&kinesis, layout);
        assert_eq!((ledger.len(), inputs.rows), (*records, *records));
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| {
                let kinesis = KinesisBatch::from_slice(black_box(event)).expect("a Kinesis event");
                black_box(event::decode(&kinesis, layout).1.rows)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode/envelope");
    for (records, event) in &events {
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| KinesisBatch::from_slice(black_box(event)).expect("a Kinesis event"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode/payloads");
    for (records, event) in &events {
        let kinesis = KinesisBatch::from_slice(event).expect("a Kinesis event");
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| event::decode(black_box(&kinesis), layout).1.rows)
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = floor, decode
}
criterion_main!(benches);
