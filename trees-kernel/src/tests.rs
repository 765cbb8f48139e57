//! The evaluator's paths against each other on random ensembles: the vector path, the scalar
//! block paths (perfect and fast layouts) and the exact per-row path must give the same bits.
//! (`tests/trees.rs` compares the default path with ONNX Runtime's kernel.)

use proptest::prelude::*;

use super::*;

/// Thresholds and row values: equal, adjacent, infinite and NaN ones.
const VALUES: [f32; 10] = [
    -1.0,
    0.0,
    -0.0,
    0.1,
    0.5,
    1.0,
    1e-45,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];
const MODES: [&[u8]; 7] = [
    b"BRANCH_LEQ",
    b"BRANCH_LT",
    b"BRANCH_GTE",
    b"BRANCH_GT",
    b"BRANCH_EQ",
    b"BRANCH_NEQ",
    b"LEAF",
];

/// Attributes of random trees: each tree a preorder list of draws (mode, feature, threshold,
/// missing tracks true, weight), a leaf where the draw is a leaf, at depth `max_depth`, or when
/// the draws run out; or every tree complete, of one depth.
fn attributes() -> impl Strategy<Value = (Attributes, Vec<f32>, usize)> {
    let draw = (
        0..MODES.len(),
        0..3i64,
        0..VALUES.len(),
        any::<bool>(),
        -2.0..2.0f32,
    );
    (
        prop::collection::vec(prop::collection::vec(draw, 1..40), 1..12),
        1..3usize,
        0..4usize,
        any::<bool>(),
        prop::collection::vec(0..VALUES.len(), 0..200),
        1..10usize,
        any::<bool>(),
    )
        .prop_map(
            |(trees, targets, aggregate, leq_only, rows, max_depth, complete)| {
                // Complete trees of one depth up to 7 take the vector path's groups of four.
                let max_depth = if complete { max_depth % 8 } else { max_depth };
                let mut a = Attributes {
                    n_targets: Some(targets as i64),
                    aggregate_function: Some(
                        [&b"SUM"[..], b"AVERAGE", b"MIN", b"MAX"][aggregate].to_vec(),
                    ),
                    ..Attributes::default()
                };
                for (tree, draws) in trees.iter().enumerate() {
                    let mut next = 0;
                    let mut nodes = Vec::new();
                    grow(draws, &mut next, 0, (max_depth, complete), &mut nodes);
                    for (id, (draw, children)) in nodes.iter().enumerate() {
                        a.nodes_treeids.push(tree as i64);
                        a.nodes_nodeids.push(id as i64);
                        a.nodes_featureids.push(draw.1);
                        a.nodes_values.push(VALUES[draw.2]);
                        a.nodes_missing_value_tracks_true.push(i64::from(draw.3));
                        match children {
                            Some((no, yes)) => {
                                let mode = if leq_only { 0 } else { draw.0 % 6 };
                                a.nodes_modes.push(MODES[mode].to_vec());
                                a.nodes_falsenodeids.push(*no as i64);
                                a.nodes_truenodeids.push(*yes as i64);
                            }
                            None => {
                                a.nodes_modes.push(b"LEAF".to_vec());
                                a.nodes_falsenodeids.push(0);
                                a.nodes_truenodeids.push(0);
                                for target in 0..targets {
                                    a.target_treeids.push(tree as i64);
                                    a.target_nodeids.push(id as i64);
                                    a.target_ids.push(target as i64);
                                    a.target_weights.push(draw.4 + target as f32);
                                }
                            }
                        }
                    }
                }
                let x = rows.iter().map(|&v| VALUES[v]).collect();
                (a, x, 3)
            },
        )
}

type Draw = (usize, i64, usize, bool, f32);

fn grow(
    draws: &[Draw],
    next: &mut usize,
    depth: usize,
    (max_depth, complete): (usize, bool),
    nodes: &mut Vec<(Draw, Option<(usize, usize)>)>,
) -> usize {
    let id = nodes.len();
    let draw = draws[*next % draws.len()];
    *next += 1;
    nodes.push((draw, None));
    let leaf = !complete && (draw.0 == 6 || *next >= draws.len());
    if leaf || depth >= max_depth {
        return id;
    }
    let no = grow(draws, next, depth + 1, (max_depth, complete), nodes);
    let yes = grow(draws, next, depth + 1, (max_depth, complete), nodes);
    nodes[id].1 = Some((no, yes));
    id
}

fn predict(ensemble: &Compiled<f32>, x: &[f32], width: usize) -> Vec<u32> {
    let mut out = vec![0.0f32; x.len() / width * ensemble.targets];
    ensemble.predict(&x[..x.len() / width * width], width, &mut out);
    out.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn every_path_gives_the_exact_paths_bits((attributes, x, width) in attributes()) {
        let Ok(mut ensemble) = Compiled::<f32>::new(&attributes) else {
            return Ok(());
        };
        let default = predict(&ensemble, &x, width);
        ensemble.vector = false;
        let scalar = predict(&ensemble, &x, width);
        let perfect = std::mem::take(&mut ensemble.trees);
        ensemble.trees = perfect.iter().map(|tree| Tree { perfect: None, ..*tree }).collect();
        let fast = predict(&ensemble, &x, width);
        ensemble.fast = None;
        let exact = predict(&ensemble, &x, width);
        prop_assert_eq!(&default, &exact, "vector (where the CPU has it)");
        prop_assert_eq!(&scalar, &exact, "scalar, perfect layout");
        prop_assert_eq!(&fast, &exact, "scalar, fast layout");
    }
}
