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
use bike_prediction::inputs::InputLayout;
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::model::{Predictions, Values};
use bike_prediction::output::{self, EventEncoder};
use criterion::{Criterion, criterion_group, criterion_main};

fn output(c: &mut Criterion) {
    let layout = &InputLayout::float_columns(&common::reference().columns);
    let encoder = EventEncoder::new("bike-demand", "run", "cnt");
    let mut inputs = Vec::new();
    for records in common::SIZES {
        let event = common::kinesis_event(records);
        let kinesis = KinesisBatch::from_slice(&event).expect("a Kinesis event");
        let predictions = Predictions::Values {
            values: Values::Float32(common::reference_predictions("bike-demand", records)),
            width: 1,
        };
        inputs.push((records, kinesis, predictions));
    }

    let mut group = c.benchmark_group("output/events");
    for (records, kinesis, predictions) in &inputs {
        let (ledger, _) = event::decode(kinesis, layout);
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter_batched_ref(
                || ledger.clone(),
                |ledger| encoder.encode(black_box(ledger), black_box(predictions)),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    let mut group = c.benchmark_group("output/response");
    for (records, kinesis, predictions) in &inputs {
        let (mut ledger, _) = event::decode(kinesis, layout);
        encoder.encode(&mut ledger, predictions);
        assert_eq!(ledger.predicted().count(), *records);
        let id = common::batch(&mut group, *records);
        group.bench_function(id, |b| {
            b.iter(|| output::write_response(black_box(&ledger), None))
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
