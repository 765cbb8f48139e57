//! `Model::predict` alone: one ONNX Runtime run over a batch of real rows.
//!
//! `inference/bike-demand/N` is the bundled gradient-boosting model, `inference/bike-linear/N`
//! a linear model with the same inputs: their difference is what the model itself costs, the
//! linear figure is mostly ONNX Runtime's fixed cost per run.

mod common;

use std::hint::black_box;

use bike_prediction::event;
use bike_prediction::kinesis::KinesisBatch;
use criterion::{Criterion, criterion_group, criterion_main};

fn inference(c: &mut Criterion) {
    for name in common::MODELS {
        // Loaded once, outside the timed closure, as at cold start.
        let model = common::load_model(name);
        assert_eq!(model.columns(), common::reference().columns);
        let mut group = c.benchmark_group(format!("inference/{name}"));
        for records in common::SIZES {
            // The very buffer the handler feeds the model: the event decoded.
            let event = common::kinesis_event(records);
            let kinesis = KinesisBatch::from_slice(&event).expect("a Kinesis event");
            let (_, inputs) = event::decode(&kinesis, model.layout());
            assert_eq!(inputs.rows, records);
            let id = common::batch(&mut group, records);
            group.bench_with_input(id, &inputs, |b, inputs| {
                b.iter(|| model.predict(black_box(inputs)).expect("inference runs"))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = inference
}
criterion_main!(benches);
