//! The service's tree-ensemble kernel (`bike_prediction::trees`) against ONNX Runtime's own, on
//! the bundled model and the tree models of `tests/fixtures/model-kinds/`: it engages where it
//! supports the model, and predicts exactly what ONNX Runtime's kernel predicts.

mod common;

use std::path::{Path, PathBuf};

use bike_prediction::artifact::ModelArtifact;
use bike_prediction::model::{Model, Predictions};
use bike_prediction::trees::TreeKernel;
use common::{bundled_model, predict_rows, root, runtime};

fn load(dir: &Path, kernel: TreeKernel) -> Model {
    runtime()
        .load_model_with(ModelArtifact::read_dir(dir).unwrap(), 1, kernel)
        .unwrap()
}

/// Rows spread over the columns' plausible ranges, with a fixed-seed generator: `[rows, width]`.
fn rows(width: usize, rows: usize, scale: &[f32]) -> Vec<f32> {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    (0..rows * width)
        .map(|i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let unit = (seed >> 11) as f32 / (1u64 << 53) as f32;
            (unit * scale[i % width]).round()
        })
        .collect()
}

/// Both kernels on the same rows: the same bits for every prediction (the service's kernel sums
/// the trees in ONNX Runtime's order on one thread).
fn assert_same_predictions(dir: PathBuf, scale: &[f32]) {
    let native = load(&dir, TreeKernel::Native);
    let reference = load(&dir, TreeKernel::OnnxRuntime);
    assert_eq!(native.native_tree_ensembles(), 1, "{}", dir.display());
    assert_eq!(reference.native_tree_ensembles(), 0);
    let x = rows(scale.len(), 5_000, scale);
    let ours = predict_rows(&native, &x);
    let theirs = predict_rows(&reference, &x);
    assert_eq!(ours.len(), theirs.len());
    for (row, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "row {row}: {a} vs ONNX Runtime {b}"
        );
    }
}

#[test]
fn bundled_model_runs_on_the_service_kernel_and_predicts_the_same_bits() {
    // t1, t2, hum, weather_code
    assert_same_predictions(bundled_model("bike-demand"), &[40.0, 45.0, 100.0, 5.0]);
}

/// Every regressor tree model of `tests/fixtures/model-kinds/`: LightGBM (small, and 100 trees
/// of 31 leaves), a random forest and XGBoost.
#[test]
fn tree_regressors_of_every_library_run_on_the_service_kernel_with_the_same_bits() {
    for kind in [
        "lightgbm-regressor",
        "lightgbm-large",
        "random-forest",
        "xgboost-regressor",
    ] {
        assert_same_predictions(
            root().join("tests/fixtures/model-kinds").join(kind),
            &[40.0, 45.0, 100.0, 5.0],
        );
    }
}

/// On several threads the kernel splits a batch between them, and every prediction keeps its
/// bits: the same as on one thread, and as ONNX Runtime's kernel on one thread.
#[test]
fn batches_split_between_threads_give_the_same_bits() {
    for dir in [
        bundled_model("bike-demand"),
        root().join("tests/fixtures/model-kinds/lightgbm-large"),
    ] {
        let threaded = runtime()
            .load_model_with(
                ModelArtifact::read_dir(&dir).unwrap(),
                2,
                TreeKernel::Native,
            )
            .unwrap();
        assert_eq!(threaded.native_tree_ensembles(), 1);
        let reference = load(&dir, TreeKernel::OnnxRuntime);
        let x = rows(4, 5_000, &[40.0, 45.0, 100.0, 5.0]);
        let (ours, theirs) = (predict_rows(&threaded, &x), predict_rows(&reference, &x));
        assert!(
            ours.iter()
                .zip(&theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert_eq!(ours.len(), 5_000);
    }
}

/// The model's predictions on `rows` rows of `x` (`width` float columns).
fn predict_any(model: &Model, x: &[f32], width: usize) -> Predictions {
    let layout = model.layout();
    let mut inputs = layout.buffers(x.len() / width);
    for row in x.chunks(width) {
        inputs.push_row(layout);
        for (field, value) in row.iter().enumerate() {
            let value = bike_prediction::inputs::Value::Float(f64::from(*value));
            inputs.set(layout, field, value).unwrap();
        }
        inputs.finish_row();
    }
    model.predict(&inputs).unwrap()
}

/// The tree classifiers of `tests/fixtures/model-kinds/` (scikit-learn's gradient boosting and
/// XGBoost, three classes, softmax probabilities) run on the service's kernel: the same labels
/// as ONNX Runtime's kernel, and probabilities within 1e-5 relative (the softmax's `exp` may be
/// another implementation's).
#[test]
fn tree_classifiers_run_on_the_service_kernel_with_the_same_labels() {
    for kind in ["classifier-tensor", "xgboost-classifier"] {
        let dir = root().join("tests/fixtures/model-kinds").join(kind);
        let native = load(&dir, TreeKernel::Native);
        let reference = load(&dir, TreeKernel::OnnxRuntime);
        assert_eq!(native.native_tree_ensembles(), 1, "{kind}");
        let width = native.layout().fields.len();
        let x = rows(width, 5_000, &[40.0, 45.0, 100.0, 5.0]);
        let (
            Predictions::Classes {
                labels: ours,
                probabilities: our_p,
                ..
            },
            Predictions::Classes {
                labels: theirs,
                probabilities: their_p,
                ..
            },
        ) = (
            predict_any(&native, &x, width),
            predict_any(&reference, &x, width),
        )
        else {
            panic!("{kind}: not a classifier's predictions");
        };
        assert_eq!(ours, theirs, "{kind}");
        assert_eq!(our_p.len(), their_p.len());
        for (i, (a, b)) in our_p.iter().zip(&their_p).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "{kind} value {i}: {a} against {b}"
            );
        }
    }
}

/// A tree node the kernel does not support (here a regressor's PROBIT transform) stays on ONNX
/// Runtime's kernel, saying why, and the model predicts as with `TREE_KERNEL=onnxruntime`.
#[test]
fn an_unsupported_tree_node_falls_back_to_onnx_runtime() {
    use bike_prediction::trees::{self, Outcome, ensemble::Attributes};
    let attributes = Attributes {
        n_targets: Some(1),
        post_transform: Some(b"PROBIT".to_vec()),
        nodes_treeids: vec![0, 0, 0],
        nodes_nodeids: vec![0, 1, 2],
        nodes_featureids: vec![0, 0, 0],
        nodes_modes: vec![b"BRANCH_LEQ".to_vec(), b"LEAF".to_vec(), b"LEAF".to_vec()],
        nodes_values: vec![0.5, 0.0, 0.0],
        nodes_truenodeids: vec![1, 0, 0],
        nodes_falsenodeids: vec![2, 0, 0],
        target_treeids: vec![0, 0],
        target_nodeids: vec![1, 2],
        target_ids: vec![0, 0],
        target_weights: vec![0.2, 0.7],
        ..Attributes::default()
    };
    let onnx = trees::regressor_model(&attributes);
    let environment = runtime().environment();
    let (prepared, outcomes) = trees::prepare(&onnx, environment);
    assert!(prepared.is_none());
    let [(_, Outcome::Left(reason))] = outcomes.as_slice() else {
        panic!("{outcomes:?}");
    };
    assert!(reason.contains("PROBIT"), "{reason}");

    // Through `Model`: the same file in a model directory, beside an MLmodel of one column.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), &onnx).unwrap();
    std::fs::write(
        dir.path().join("MLmodel"),
        "flavors:\n  onnx:\n    data: model.onnx\n    onnx_version: 1.17.0\n\
         signature:\n  inputs: '[{\"type\": \"float\", \"name\": \"x\", \"required\": true}]'\n\
         \x20 outputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\", \"shape\": [-1, 1]}}]'\n",
    )
    .unwrap();
    let fallback = load(dir.path(), TreeKernel::Native);
    let reference = load(dir.path(), TreeKernel::OnnxRuntime);
    assert_eq!(fallback.native_tree_ensembles(), 0);
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let (ours, theirs) = (predict_rows(&fallback, &x), predict_rows(&reference, &x));
    assert_eq!(ours.len(), 64);
    assert!(
        ours.iter()
            .zip(&theirs)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

/// Random small ensembles (every mode, missing-value tracks, NaN and infinite thresholds, one
/// to three targets, every aggregate, base values, float and double attributes; regressors,
/// and classifiers of three to five classes with and without a softmax), written as ONNX
/// models of one tree-ensemble node, through both kernels on rows of values
/// at, beside and between the thresholds, NaN and infinities: the service's kernel must be
/// refused, or give ONNX Runtime's bits exactly.
mod random_ensembles {
    use bike_prediction::trees::{self, Outcome};
    use ort::session::Session;
    use ort::value::TensorRef;
    use proptest::prelude::*;
    use prost::Message as _;

    use super::runtime;

    /// Values thresholds and inputs are drawn from, so that rows meet thresholds exactly,
    /// just beside them, at infinities and at NaN.
    const VALUES: [f64; 12] = [
        -1.0,
        0.0,
        -0.0,
        0.1,
        0.5,
        1.0,
        2.5,
        1e-45,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        3.0,
    ];
    const MODES: [&str; 6] = [
        "BRANCH_LEQ",
        "BRANCH_LT",
        "BRANCH_GTE",
        "BRANCH_GT",
        "BRANCH_EQ",
        "BRANCH_NEQ",
    ];
    const AGGREGATES: [&str; 4] = ["SUM", "AVERAGE", "MIN", "MAX"];

    /// One drawn node: (mode, 6 for a leaf; feature; threshold in `VALUES`; missing value
    /// tracks true; weights of a leaf, less one).
    type NodeDraw = (usize, usize, usize, bool, usize);

    #[derive(Debug, Clone)]
    struct Spec {
        width: usize,
        /// 0: a regressor; 1, 2: a classifier of `targets + 2` classes, scores as they are or
        /// through a softmax.
        classifier: usize,
        targets: usize,
        aggregate: usize,
        base: usize,
        as_tensor: bool,
        trees: Vec<Vec<NodeDraw>>,
        weights: Vec<(usize, f64)>,
        rows: Vec<usize>,
    }

    /// Trees as lists of node draws, laid out in preorder: a node is a leaf when its mode
    /// draw is 6, at depth 3, or when the draws run out.
    fn spec() -> impl Strategy<Value = Spec> {
        let node = (
            0..7usize,
            0..4usize,
            0..VALUES.len(),
            any::<bool>(),
            0..3usize,
        );
        (
            1..4usize,
            1..4usize,
            0..4usize,
            0..3usize,
            any::<bool>(),
            prop::collection::vec(prop::collection::vec(node, 1..16), 1..5),
            // Weights of both zeros too: MIN and MAX turn a -0 score into +0.
            prop::collection::vec(
                (
                    0..3usize,
                    prop_oneof![4 => -3.0..3.0f64, 1 => Just(-0.0), 1 => Just(0.0)],
                ),
                64,
            ),
            prop::collection::vec(0..VALUES.len(), 0..120),
            0..3usize,
        )
            .prop_map(
                |(width, targets, aggregate, base, as_tensor, trees, weights, rows, classifier)| {
                    Spec {
                        width,
                        classifier,
                        targets,
                        aggregate,
                        base,
                        as_tensor,
                        trees,
                        weights,
                        rows,
                    }
                },
            )
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Attribute {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(int32, tag = "20")]
        r#type: i32,
        #[prost(int64, tag = "3")]
        i: i64,
        #[prost(bytes = "vec", tag = "4")]
        s: Vec<u8>,
        #[prost(message, optional, tag = "5")]
        t: Option<Tensor>,
        #[prost(float, repeated, tag = "7")]
        floats: Vec<f32>,
        #[prost(int64, repeated, tag = "8")]
        ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        strings: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Tensor {
        #[prost(int64, repeated, tag = "1")]
        dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        data_type: i32,
        #[prost(double, repeated, tag = "10")]
        double_data: Vec<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Node {
        #[prost(string, repeated, tag = "1")]
        input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        output: Vec<String>,
        #[prost(string, tag = "3")]
        name: String,
        #[prost(string, tag = "4")]
        op_type: String,
        #[prost(string, tag = "7")]
        domain: String,
        #[prost(message, repeated, tag = "5")]
        attribute: Vec<Attribute>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct ValueInfo {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, optional, tag = "2")]
        r#type: Option<Type>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Type {
        #[prost(message, optional, tag = "1")]
        tensor_type: Option<TensorType>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct TensorType {
        #[prost(int32, tag = "1")]
        elem_type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Graph {
        #[prost(message, repeated, tag = "1")]
        node: Vec<Node>,
        #[prost(string, tag = "2")]
        name: String,
        #[prost(message, repeated, tag = "11")]
        input: Vec<ValueInfo>,
        #[prost(message, repeated, tag = "12")]
        output: Vec<ValueInfo>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Opset {
        #[prost(string, tag = "1")]
        domain: String,
        #[prost(int64, tag = "2")]
        version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Model {
        #[prost(int64, tag = "1")]
        ir_version: i64,
        #[prost(message, optional, tag = "7")]
        graph: Option<Graph>,
        #[prost(message, repeated, tag = "8")]
        opset_import: Vec<Opset>,
    }

    fn ints(name: &str, values: Vec<i64>) -> Attribute {
        Attribute {
            name: name.into(),
            r#type: 7,
            ints: values,
            ..Attribute::default()
        }
    }

    fn floats_or_tensor(name: &str, values: Vec<f64>, as_tensor: bool) -> Attribute {
        match as_tensor {
            false => Attribute {
                name: name.into(),
                r#type: 6,
                floats: values.iter().map(|&v| v as f32).collect(),
                ..Attribute::default()
            },
            true => Attribute {
                name: format!("{name}_as_tensor"),
                r#type: 4,
                t: Some(Tensor {
                    dims: vec![values.len() as i64],
                    data_type: 11,
                    double_data: values,
                }),
                ..Attribute::default()
            },
        }
    }

    /// The ONNX model of `spec`'s ensemble.
    fn model(spec: &Spec) -> Vec<u8> {
        let classes = match spec.classifier {
            0 => spec.targets,
            _ => spec.targets + 2,
        };
        let mut a: [Vec<i64>; 6] = Default::default(); // tree, node, feature, true, false, missing
        let (mut modes, mut values) = (Vec::new(), Vec::new());
        let mut targets: [Vec<i64>; 3] = Default::default(); // tree, node, id
        let mut weights = Vec::new();
        let mut weight_draws = spec.weights.iter().cycle();
        for (tree, nodes) in spec.trees.iter().enumerate() {
            // Preorder: node i's children are laid out after it; `next` is the next free id.
            fn build(
                nodes: &[NodeDraw],
                at: &mut usize,
                depth: usize,
                out: &mut Vec<(usize, Option<(usize, usize)>)>,
            ) -> usize {
                let id = out.len();
                let draw = nodes[*at % nodes.len()];
                *at += 1;
                out.push((draw.0, None));
                if draw.0 == 6 || depth >= 3 || *at >= nodes.len() {
                    return id;
                }
                let no = build(nodes, at, depth + 1, out);
                let yes = build(nodes, at, depth + 1, out);
                out[id].1 = Some((yes, no));
                id
            }
            let mut shape = Vec::new();
            build(nodes, &mut 0, 0, &mut shape);
            for (id, (_, children)) in shape.iter().enumerate() {
                let draw = nodes[id % nodes.len()];
                a[0].push(tree as i64);
                a[1].push(id as i64);
                a[2].push((draw.1 % spec.width) as i64);
                a[5].push(i64::from(draw.3));
                values.push(VALUES[draw.2]);
                match children {
                    Some((yes, no)) => {
                        modes.push(MODES[draw.0 % 6].as_bytes().to_vec());
                        a[3].push(*yes as i64);
                        a[4].push(*no as i64);
                    }
                    None => {
                        modes.push(b"LEAF".to_vec());
                        a[3].push(0);
                        a[4].push(0);
                        let count = 1 + draw.4 % 2;
                        for _ in 0..count {
                            let (target, weight) = *weight_draws.next().unwrap();
                            targets[0].push(tree as i64);
                            targets[1].push(id as i64);
                            targets[2].push((target % classes) as i64);
                            weights.push(weight);
                        }
                    }
                }
            }
        }
        let [treeids, nodeids, featureids, trueids, falseids, missing] = a;
        let [ttree, tnode, tid] = targets;
        let base: Vec<f64> = match spec.base {
            0 => vec![],
            1 => vec![0.25],
            _ => (0..classes).map(|j| j as f64 - 0.5).collect(),
        };
        let text = |name: &str, value: &str| Attribute {
            name: name.into(),
            r#type: 3,
            s: value.as_bytes().to_vec(),
            ..Attribute::default()
        };
        let mut attribute = match spec.classifier {
            0 => vec![
                text("aggregate_function", AGGREGATES[spec.aggregate]),
                Attribute {
                    name: "n_targets".into(),
                    r#type: 2,
                    i: spec.targets as i64,
                    ..Attribute::default()
                },
            ],
            transform => vec![
                text("post_transform", ["NONE", "SOFTMAX"][transform - 1]),
                ints(
                    "classlabels_int64s",
                    (0..classes as i64).map(|c| 10 * c + 1).collect(),
                ),
            ],
        };
        let votes = match spec.classifier {
            0 => "target",
            _ => "class",
        };
        attribute.extend([
            ints("nodes_treeids", treeids),
            ints("nodes_nodeids", nodeids),
            ints("nodes_featureids", featureids),
            ints("nodes_truenodeids", trueids),
            ints("nodes_falsenodeids", falseids),
            ints("nodes_missing_value_tracks_true", missing),
            Attribute {
                name: "nodes_modes".into(),
                r#type: 8,
                strings: modes,
                ..Attribute::default()
            },
            floats_or_tensor("nodes_values", values, spec.as_tensor),
            ints(&format!("{votes}_treeids"), ttree),
            ints(&format!("{votes}_nodeids"), tnode),
            ints(&format!("{votes}_ids"), tid),
            floats_or_tensor(&format!("{votes}_weights"), weights, spec.as_tensor),
        ]);
        if !base.is_empty() {
            attribute.push(floats_or_tensor("base_values", base, spec.as_tensor));
        }
        let tensor = |name: &str, elem_type: i32| ValueInfo {
            name: name.into(),
            r#type: Some(Type {
                tensor_type: Some(TensorType { elem_type }),
            }),
        };
        let (op_type, outputs) = match spec.classifier {
            0 => ("TreeEnsembleRegressor", vec![tensor("Y", 1)]),
            _ => (
                "TreeEnsembleClassifier",
                vec![tensor("L", 7), tensor("Y", 1)],
            ),
        };
        Model {
            ir_version: 8,
            opset_import: vec![
                Opset {
                    domain: String::new(),
                    version: 17,
                },
                Opset {
                    domain: "ai.onnx.ml".into(),
                    version: 3,
                },
            ],
            graph: Some(Graph {
                node: vec![Node {
                    input: vec!["X".into()],
                    output: outputs.iter().map(|o| o.name.clone()).collect(),
                    name: "trees".into(),
                    op_type: op_type.into(),
                    domain: "ai.onnx.ml".into(),
                    attribute,
                }],
                name: "random".into(),
                input: vec![tensor("X", 1)],
                output: outputs,
            }),
        }
        .encode_to_vec()
    }

    /// A classifier's labels (`L`, if any) and the scores or values (`Y`) of `onnx` for `x`
    /// (`[rows, width]`), on one thread, with `domain` registered.
    fn run(
        onnx: &[u8],
        x: &[f32],
        width: usize,
        domain: Option<ort::operator::OperatorDomain>,
    ) -> ort::Result<(Option<Vec<i64>>, Vec<f32>)> {
        let mut builder = Session::builder(runtime().environment())?.with_intra_threads(1)?;
        if let Some(domain) = domain {
            builder = builder.with_operators(domain)?;
        }
        let mut session = builder.commit_from_memory(onnx)?;
        let input = TensorRef::from_array_view(([x.len() / width, width], x))?;
        let outputs = session.run(ort::inputs![input])?;
        let labels = match outputs.get("L") {
            Some(labels) => Some(labels.try_extract_tensor::<i64>()?.1.to_vec()),
            None => None,
        };
        let (_, values) = outputs["Y"].try_extract_tensor::<f32>()?;
        Ok((labels, values.to_vec()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn the_service_kernel_is_refused_or_gives_onnx_runtime_bits(spec in spec()) {
            let onnx = model(&spec);
            let x: Vec<f32> = (0..spec.rows.len() / spec.width * spec.width)
                .map(|i| VALUES[spec.rows[i]] as f32)
                .collect();
            let (prepared, outcomes) = trees::prepare(&onnx, runtime().environment());
            prop_assert_eq!(outcomes.len(), 1);
            let reference = run(&onnx, &x, spec.width, None);
            match (&outcomes[0].1, prepared) {
                (Outcome::Native, Some(prepared)) => {
                    let reference = reference.expect("ONNX Runtime runs what the probe ran");
                    let (labels, ours) =
                        run(&prepared.onnx, &x, spec.width, Some(prepared.domain().unwrap()))
                            .expect("the rewritten model runs");
                    let (reference_labels, reference) = reference;
                    prop_assert_eq!(labels, reference_labels);
                    prop_assert_eq!(ours.len(), reference.len());
                    // A softmax's `exp` may be another implementation's: 1e-5 relative.
                    let softmax = spec.classifier == 2;
                    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
                        let close = softmax && (a - b).abs() <= 1e-5 * b.abs();
                        prop_assert!(
                            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || close,
                            "value {}: {} vs ONNX Runtime {}", i, a, b
                        );
                    }
                }
                // Refused for a reason, or because ONNX Runtime refuses the node too; never
                // because the probe found the kernels differ, which would be a mistake of this
                // kernel that the probe hid.
                (Outcome::Left(reason), None) => {
                    prop_assert!(!reason.contains("differ"), "{}", reason)
                }
                (outcome, prepared) => {
                    prop_assert!(false, "{:?} with a model: {}", outcome, prepared.is_some())
                }
            }
        }
    }
}
