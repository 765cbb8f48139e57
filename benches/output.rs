//! Writing the output of a batch.
//!
//! - `output/events/N`: `EventEncoder::encode`, one prediction event per record.
//! - `output/response/N`: `output::write_response`, those events (and no rejections or
//!   failures) into the Lambda response.
//!
//! The predictions are Python onnxruntime's for the same rows, so the numbers written are the
//! real model's (their digits are what float formatting costs), without running a model here.

mod common;

use std::hint::black_box;

use bike_prediction::event;
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::output::{self, EventEncoder};
use criterion::{Criterion, criterion_group, criterion_main};

fn output(c: &mut Criterion) {
    let columns = &common::reference().columns;
    let encoder = EventEncoder::new("bike-demand", "run");
    let mut inputs = Vec::new();
    for records in common::SIZES {
        let event = common::kinesis_event(records);
        let kinesis = KinesisBatch::from_slice(&event).expect("a Kinesis event");
        let predictions = common::reference_predictions("bike-demand", records);
        inputs.push((records, kinesis, predictions));
    }

    let mut group = c.benchmark_group("output/events");
    for (records, kinesis, predictions) in &inputs {
        let batch = event::decode(kinesis, columns);
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| encoder.encode(black_box(&batch), black_box(predictions)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("output/response");
    for (records, kinesis, predictions) in &inputs {
        let batch = event::decode(kinesis, columns);
        let (events, rejected) = encoder.encode(&batch, predictions);
        assert_eq!((events.len(), rejected.len()), (*records, 0));
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| output::write_response(&batch, black_box(&events), &rejected, &[]))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = output
}
criterion_main!(benches);
