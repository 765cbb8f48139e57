//! Tree-ensemble inference on the service's kernel against ONNX Runtime's, in one run:
//! `trees/<model>/<kernel>/N` is `Model::predict` over `N` real rows, the whole graph
//! (preprocessing included), with the model's tree nodes on `native` (`crate::trees`) or on
//! `onnxruntime` (`TREE_KERNEL=onnxruntime`). The models are the bundled gradient-boosting
//! model (300 trees of depth 3) and tree models of `tests/fixtures/model-kinds/`: LightGBM
//! (100 trees of 31 leaves), a random forest (100 trees of depth 6 at most) and XGBoost (50
//! trees of depth 4).

mod common;

use std::hint::black_box;

use bike_prediction::artifact::ModelArtifact;
use bike_prediction::event;
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::trees::TreeKernel;
use criterion::{Criterion, criterion_group, criterion_main};

/// The tree models, by name and directory under the repository.
const MODELS: [(&str, &str); 4] = [
    ("bike-demand", "models/bike-demand"),
    (
        "lightgbm-large",
        "tests/fixtures/model-kinds/lightgbm-large",
    ),
    ("random-forest", "tests/fixtures/model-kinds/random-forest"),
    ("xgboost", "tests/fixtures/model-kinds/xgboost-regressor"),
];

fn trees(c: &mut Criterion) {
    for (name, dir) in MODELS {
        let mut group = c.benchmark_group(format!("trees/{name}"));
        for (kernel, label) in [
            (TreeKernel::Native, "native"),
            (TreeKernel::OnnxRuntime, "onnxruntime"),
        ] {
            let artifact = ModelArtifact::read_dir(&common::root().join(dir)).expect("a model");
            let model = common::runtime()
                .load_model_with(artifact, 1, kernel)
                .expect("the model loads");
            assert_eq!(
                model.native_tree_ensembles(),
                usize::from(kernel == TreeKernel::Native)
            );
            for records in [1_000, 10_000] {
                let event = common::kinesis_event(records);
                let kinesis = KinesisBatch::from_slice(&event).expect("a Kinesis event");
                let (_, inputs) = event::decode(&kinesis, model.layout());
                assert_eq!(inputs.rows, records);
                common::batch(&mut group, records);
                let id = criterion::BenchmarkId::new(label, records);
                group.bench_with_input(id, &inputs, |b, inputs| {
                    b.iter(|| model.predict(black_box(inputs)).expect("inference runs"))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = trees
}
criterion_main!(benches);
