//! `Model::predict` alone: one ONNX Runtime run over a batch of real rows.
//!
//! `inference/bike-demand/N` is the bundled gradient-boosting model, `inference/bike-linear/N`
//! a linear model with the same inputs: their difference is what the model itself costs, the
//! linear figure is mostly ONNX Runtime's fixed cost per run. `inference-threads/T/N` is the
//! bundled model on `T` threads (`INFERENCE_THREADS`; one below 2,653 MB in Lambda).

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

fn threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("inference-threads");
    let visible = std::thread::available_parallelism().map_or(1, usize::from);
    for threads in (1..=visible.min(4)).filter(|t| *t == 1 || t.is_power_of_two()) {
        let model = common::load_model_threaded("bike-demand", threads);
        for records in [1_000, 10_000] {
            let event = common::kinesis_event(records);
            let kinesis = KinesisBatch::from_slice(&event).expect("a Kinesis event");
            let (_, inputs) = event::decode(&kinesis, model.layout());
            group.throughput(criterion::Throughput::Elements(records as u64));
            let id = criterion::BenchmarkId::new(threads.to_string(), records);
            group.bench_with_input(id, &inputs, |b, inputs| {
                b.iter(|| model.predict(black_box(inputs)).expect("inference runs"))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = inference, threads
}
criterion_main!(benches);
