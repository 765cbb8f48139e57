//! One tree ensemble, compiled from the attributes of an ONNX-ML `TreeEnsembleRegressor` node
//! into flat arrays, and its evaluation over a batch of rows.
//!
//! The semantics are ONNX Runtime's (its CPU kernel is the reference the probe compares with):
//!
//! - Trees are taken in the order their first node appears in the attributes; that node is the
//!   tree's root.
//! - A node sends a row to its true child when `x CMP threshold` holds (`CMP` from the node's
//!   mode), or when `x` is NaN and the node's `nodes_missing_value_tracks_true` is 1.
//! - Thresholds, leaf weights and base values are compared and summed in the threshold type:
//!   `f32`, or `f64` when the model gives any of them as `*_as_tensor` attributes. A row's score
//!   is summed tree by tree, in tree order.
//! - With one target, a leaf counts its first weight (by node, then attribute order); with
//!   several, every weight goes to its target.
//! - The base value is added after aggregation: with one target, `base_values[0]` when there is
//!   exactly one; with several, `base_values[j]` when there is one per target, to the targets a
//!   leaf gave a weight to. A target no leaf gave a weight to is 0.
//!
//! Anything ONNX Runtime would refuse at load, or that this evaluator does not reproduce, is
//! refused here with the reason, and the node is left to ONNX Runtime.

// Every index into the node and attribute arrays is checked when an ensemble is compiled
// (attribute lengths, children, features below the width) and `predict` is given rows of at
// least that width; it runs under `catch_unwind` (`super::operator`, `super::probe`).
#![allow(clippy::indexing_slicing, clippy::needless_range_loop)]

use std::collections::HashMap;

mod simd;
#[cfg(test)]
mod tests;

/// Why an ensemble is left to ONNX Runtime.
pub type Refusal = String;

/// How the leaves a row reaches are combined into its score (`aggregate_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// The sum of the leaves' weights.
    Sum,
    /// Their mean over the trees.
    Average,
    /// The smallest.
    Min,
    /// The largest.
    Max,
}

/// A node's comparison (`nodes_modes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `x <= threshold`.
    Leq,
    /// `x < threshold`.
    Lt,
    /// `x >= threshold`.
    Gte,
    /// `x > threshold`.
    Gt,
    /// `x == threshold`.
    Eq,
    /// `x != threshold`.
    Neq,
    /// A leaf.
    Leaf,
}

impl Mode {
    fn parse(mode: &[u8]) -> Result<Self, Refusal> {
        Ok(match mode {
            b"BRANCH_LEQ" => Self::Leq,
            b"BRANCH_LT" => Self::Lt,
            b"BRANCH_GTE" => Self::Gte,
            b"BRANCH_GT" => Self::Gt,
            b"BRANCH_EQ" => Self::Eq,
            b"BRANCH_NEQ" => Self::Neq,
            b"LEAF" => Self::Leaf,
            other => {
                return Err(format!(
                    "node mode {:?} is not supported",
                    String::from_utf8_lossy(other)
                ));
            }
        })
    }
}

/// The number type thresholds, weights and scores are kept and computed in.
pub trait Threshold:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Div<Output = Self>
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// A value no number compares `<=` to: the "never true" threshold.
    const NEVER: Self;
    /// An input value, as ONNX Runtime converts it for the comparison.
    fn from_input(x: f32) -> Self;
    /// A value of an `f32` attribute.
    fn from_f32(x: f32) -> Self;
    /// A value of an `f64` (`*_as_tensor`) attribute; only `f64` ensembles read them.
    fn from_f64(x: f64) -> Self;
    /// A tree count, as a divisor.
    fn from_count(count: usize) -> Self;
    /// The largest value below `self` (for `x < t` as `x <= below(t)`); [`Self::NEVER`] for
    /// -inf and NaN.
    fn below(self) -> Self;
    /// The score as the `f32` output holds it.
    fn to_output(self) -> f32;
    /// Whether this is NaN.
    fn is_nan(self) -> bool;
}

impl Threshold for f32 {
    const ZERO: Self = 0.0;
    const NEVER: Self = f32::NAN;
    fn from_input(x: f32) -> Self {
        x
    }
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn from_count(count: usize) -> Self {
        count as f32
    }
    fn below(self) -> Self {
        if self.is_nan() || self == f32::NEG_INFINITY {
            Self::NEVER
        } else {
            self.next_down()
        }
    }
    fn to_output(self) -> f32 {
        self
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

impl Threshold for f64 {
    const ZERO: Self = 0.0;
    const NEVER: Self = f64::NAN;
    fn from_input(x: f32) -> Self {
        f64::from(x)
    }
    fn from_f32(x: f32) -> Self {
        f64::from(x)
    }
    fn from_f64(x: f64) -> Self {
        x
    }
    fn from_count(count: usize) -> Self {
        count as f64
    }
    fn below(self) -> Self {
        if self.is_nan() || self == f64::NEG_INFINITY {
            Self::NEVER
        } else {
            self.next_down()
        }
    }
    fn to_output(self) -> f32 {
        self as f32
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

/// The attributes of a tree-ensemble node, as read from the model (`*_as_tensor` values in
/// the `_f64` fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    /// `aggregate_function` (default `SUM`).
    pub aggregate_function: Option<Vec<u8>>,
    /// `post_transform` (default `NONE`).
    pub post_transform: Option<Vec<u8>>,
    /// `n_targets`.
    pub n_targets: Option<i64>,
    /// `base_values`.
    pub base_values: Vec<f32>,
    /// `base_values_as_tensor`.
    pub base_values_f64: Vec<f64>,
    /// `nodes_treeids`.
    pub nodes_treeids: Vec<i64>,
    /// `nodes_nodeids`.
    pub nodes_nodeids: Vec<i64>,
    /// `nodes_featureids`.
    pub nodes_featureids: Vec<i64>,
    /// `nodes_modes`.
    pub nodes_modes: Vec<Vec<u8>>,
    /// `nodes_values`.
    pub nodes_values: Vec<f32>,
    /// `nodes_values_as_tensor`.
    pub nodes_values_f64: Vec<f64>,
    /// `nodes_truenodeids`.
    pub nodes_truenodeids: Vec<i64>,
    /// `nodes_falsenodeids`.
    pub nodes_falsenodeids: Vec<i64>,
    /// `nodes_missing_value_tracks_true`.
    pub nodes_missing_value_tracks_true: Vec<i64>,
    /// `target_treeids`.
    pub target_treeids: Vec<i64>,
    /// `target_nodeids`.
    pub target_nodeids: Vec<i64>,
    /// `target_ids`.
    pub target_ids: Vec<i64>,
    /// `target_weights`.
    pub target_weights: Vec<f32>,
    /// `target_weights_as_tensor`.
    pub target_weights_f64: Vec<f64>,
    /// Whether any `*_as_tensor` attribute is present (thresholds are then `f64`).
    pub as_tensor: bool,
    /// A `TreeEnsembleClassifier`'s: its `class_*` attributes are in the `target_*` fields.
    pub classifier: bool,
    /// `classlabels_int64s`.
    pub classlabels_int64s: Vec<i64>,
    /// `classlabels_strings`.
    pub classlabels_strings: Vec<Vec<u8>>,
}

/// A compiled ensemble in either threshold type.
#[derive(Debug)]
pub enum Ensemble {
    /// Thresholds and weights in `f32`.
    F32(Compiled<f32>),
    /// Thresholds and weights in `f64`.
    F64(Compiled<f64>),
}

impl Ensemble {
    /// Compiles a regressor's or a classifier's attributes ([`Attributes::classifier`]), or says
    /// why the node is left to ONNX Runtime.
    pub fn regressor(attributes: &Attributes) -> Result<Self, Refusal> {
        match attributes.as_tensor {
            false => Compiled::new(attributes).map(Self::F32),
            true => Compiled::new(attributes).map(Self::F64),
        }
    }

    /// A classifier's class labels, in the order of its scores; `None` for a regressor.
    pub fn classes(&self) -> Option<&[i64]> {
        match self {
            Self::F32(c) => c.classes.as_deref(),
            Self::F64(c) => c.classes.as_deref(),
        }
    }

    /// Whether a classifier's scores are exactly ONNX Runtime's (no transform), or only close
    /// (a softmax, whose `exp` may be another implementation's).
    pub fn exact(&self) -> bool {
        match self {
            Self::F32(c) => !c.softmax,
            Self::F64(c) => !c.softmax,
        }
    }

    /// A classifier's labels (`rows` of them) and scores (`rows * classes`, row-major) for the
    /// rows of `x`, as [`Self::predict`] reads them.
    pub fn classify(&self, x: &[f32], stride: usize, labels: &mut [i64], scores: &mut [f32]) {
        match self {
            Self::F32(c) => c.classify(x, stride, labels, scores),
            Self::F64(c) => c.classify(x, stride, labels, scores),
        }
    }

    /// Columns each input row must have.
    pub fn width(&self) -> usize {
        match self {
            Self::F32(c) => c.width,
            Self::F64(c) => c.width,
        }
    }

    /// Scores per row.
    pub fn targets(&self) -> usize {
        match self {
            Self::F32(c) => c.targets,
            Self::F64(c) => c.targets,
        }
    }

    /// Trees.
    pub fn trees(&self) -> usize {
        match self {
            Self::F32(c) => c.trees.len(),
            Self::F64(c) => c.trees.len(),
        }
    }

    /// The distinct thresholds of each input column, as `f64`, sorted (for the probe).
    pub fn thresholds(&self) -> Vec<Vec<f64>> {
        match self {
            Self::F32(c) => c.thresholds(f64::from),
            Self::F64(c) => c.thresholds(|t| t),
        }
    }

    /// Scores `rows` rows of `x` (row-major, `stride` columns each, `stride >=` [`Self::width`])
    /// into `out` (`rows * targets` values, row-major).
    pub fn predict(&self, x: &[f32], stride: usize, out: &mut [f32]) {
        match self {
            Self::F32(c) => c.predict(x, stride, out),
            Self::F64(c) => c.predict(x, stride, out),
        }
    }
}

/// One node of the flat layout. Inner nodes send a row to `children[1]` when the comparison
/// holds and to `children[0]` otherwise; a leaf is its own two children, so a descent can run
/// a fixed number of steps, and its `value` is its (first) weight.
#[derive(Debug, Clone, Copy)]
struct Node<T> {
    value: T,
    feature: u32,
    children: [u32; 2],
}

/// The rule of one node as the model states it, for rows with a NaN.
#[derive(Debug, Clone, Copy)]
struct Rule {
    mode: Mode,
    missing_true: bool,
}

#[derive(Debug, Clone, Copy)]
struct Tree {
    root: u32,
    /// The root's byte offset in the fast layout.
    fast_root: u32,
    /// Where the tree is in the perfect layout, when it has one ([`Perfect`]).
    perfect: Option<PerfectTree>,
    /// The longest path from the root to a leaf, in steps.
    depth: u32,
}

/// An ensemble in threshold type `T`.
#[derive(Debug)]
pub struct Compiled<T> {
    /// Nodes as the model states them (thresholds and modes unchanged).
    nodes: Vec<Node<T>>,
    rules: Vec<Rule>,
    /// The same nodes in the layout for rows without NaN ([`FastNode`]); `None` when a mode
    /// has no `x <= t` form (`==`, `!=`).
    fast: Option<Vec<FastNode<T>>>,
    /// The small trees again, as complete binary trees ([`Perfect`]).
    perfect: Perfect<T>,
    /// Each leaf's weights, `(target, weight)`, by node (empty for inner nodes); used with
    /// several targets.
    weights: Vec<Vec<(u32, T)>>,
    trees: Vec<Tree>,
    targets: usize,
    width: usize,
    aggregate: Aggregate,
    /// The base value of each target, when it is added.
    base: Option<Vec<T>>,
    /// One-target blocks are scored with AVX2 ([`simd`]): `f32` thresholds on a CPU with it.
    vector: bool,
    /// A classifier's labels, by class.
    classes: Option<Vec<i64>>,
    /// A classifier's scores go through a softmax (`post_transform` SOFTMAX).
    softmax: bool,
}

/// Rows evaluated together against one tree: their descents are independent, so the CPU
/// overlaps them.
const BLOCK: usize = 8;

impl<T: Threshold> Compiled<T> {
    fn new(a: &Attributes) -> Result<Self, Refusal> {
        // Each value list as a tensor (`f64`) if given so, else as floats.
        let in_t = |floats: &[f32], doubles: &[f64]| -> Vec<T> {
            match doubles.is_empty() {
                true => floats.iter().map(|&v| T::from_f32(v)).collect(),
                false => doubles.iter().map(|&v| T::from_f64(v)).collect(),
            }
        };
        let values = in_t(&a.nodes_values, &a.nodes_values_f64);
        let target_weights = in_t(&a.target_weights, &a.target_weights_f64);
        let base = in_t(&a.base_values, &a.base_values_f64);
        if a.classifier && a.aggregate_function.is_some() {
            return Err("a classifier has no aggregate_function".to_owned());
        }
        let aggregate = match a.aggregate_function.as_deref().unwrap_or(b"SUM") {
            b"SUM" => Aggregate::Sum,
            b"AVERAGE" => Aggregate::Average,
            b"MIN" => Aggregate::Min,
            b"MAX" => Aggregate::Max,
            other => {
                return Err(format!(
                    "aggregate_function {:?} is not supported",
                    String::from_utf8_lossy(other)
                ));
            }
        };
        let softmax = match (a.classifier, a.post_transform.as_deref().unwrap_or(b"NONE")) {
            (_, b"NONE") => false,
            (true, b"SOFTMAX") => true,
            (classifier, other) => {
                return Err(format!(
                    "post_transform {:?} of a {} is not supported",
                    String::from_utf8_lossy(other),
                    if classifier {
                        "classifier"
                    } else {
                        "regressor"
                    }
                ));
            }
        };
        let classes = match a.classifier {
            false => None,
            true if !a.classlabels_strings.is_empty() => {
                return Err("classifiers with string labels are not supported".to_owned());
            }
            true if a.classlabels_int64s.len() < 3 => {
                return Err("classifiers of fewer than 3 classes are not supported".to_owned());
            }
            true => Some(a.classlabels_int64s.clone()),
        };
        let targets = match (&classes, a.n_targets) {
            (Some(classes), _) => classes.len(),
            (None, Some(n)) if n > 0 => usize::try_from(n).map_err(|_| "n_targets is too large")?,
            _ => return Err("n_targets must be positive".to_owned()),
        };
        let n = a.nodes_treeids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".to_owned());
        }
        let same = [
            a.nodes_nodeids.len(),
            a.nodes_featureids.len(),
            a.nodes_modes.len(),
            a.nodes_truenodeids.len(),
            a.nodes_falsenodeids.len(),
            values.len(),
        ];
        if same.iter().any(|&len| len != n) {
            return Err("the nodes_* attributes differ in length".to_owned());
        }
        if (!a.nodes_values.is_empty() && !a.nodes_values_f64.is_empty())
            || (!a.base_values.is_empty() && !a.base_values_f64.is_empty())
            || (!a.target_weights.is_empty() && !a.target_weights_f64.is_empty())
        {
            return Err("an attribute is given both as floats and as a tensor".to_owned());
        }
        if a.target_ids.len() != a.target_nodeids.len()
            || a.target_treeids.len() != a.target_nodeids.len()
            || target_weights.len() != a.target_nodeids.len()
        {
            return Err("the target_* attributes differ in length".to_owned());
        }
        let id = |value: i64, what: &str| -> Result<i32, Refusal> {
            i32::try_from(value).map_err(|_| format!("{what} {value} is out of range"))
        };

        // Index every node by (tree, node) id.
        let mut index: HashMap<(i32, i32), u32> = HashMap::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        let mut rules = Vec::with_capacity(n);
        let mut width = 0usize;
        for i in 0..n {
            let key = (
                id(a.nodes_treeids[i], "tree id")?,
                id(a.nodes_nodeids[i], "node id")?,
            );
            if index.insert(key, i as u32).is_some() {
                return Err(format!("node {} of tree {} is given twice", key.1, key.0));
            }
            let feature = id(a.nodes_featureids[i], "feature id")?;
            let feature = u32::try_from(feature).map_err(|_| "a feature id is negative")?;
            width = width.max(feature as usize + 1);
            let mode = Mode::parse(&a.nodes_modes[i])?;
            let missing_true = a.nodes_missing_value_tracks_true.get(i) == Some(&1);
            nodes.push(Node {
                value: values[i],
                feature,
                children: [i as u32; 2],
            });
            rules.push(Rule { mode, missing_true });
        }
        for i in 0..n {
            if rules[i].mode == Mode::Leaf {
                continue;
            }
            let tree = a.nodes_treeids[i] as i32;
            let child = |target: i64, which: &str| -> Result<u32, Refusal> {
                if target < 0 || target >= n as i64 {
                    return Err(format!("a {which} id {target} is out of range"));
                }
                match index.get(&(tree, target as i32)) {
                    Some(&j) if j as usize == i => Err(format!("a node is its own {which}")),
                    Some(&j) => Ok(j),
                    None => Err(format!(
                        "the {which} {target} of tree {tree} does not exist"
                    )),
                }
            };
            nodes[i].children = [
                child(a.nodes_falsenodeids[i], "false node")?,
                child(a.nodes_truenodeids[i], "true node")?,
            ];
        }

        // Leaf weights, by (tree, node) id and then attribute order.
        let mut order: Vec<usize> = (0..a.target_nodeids.len()).collect();
        order.sort_by_key(|&i| (a.target_treeids[i], a.target_nodeids[i], i));
        let mut weights: Vec<Vec<(u32, T)>> = vec![Vec::new(); n];
        for i in order {
            let key = (
                id(a.target_treeids[i], "target tree id")?,
                id(a.target_nodeids[i], "target node id")?,
            );
            let Some(&node) = index.get(&key) else {
                return Err(format!(
                    "a weight names node {} of tree {}, which does not exist",
                    key.1, key.0
                ));
            };
            let node = node as usize;
            if rules[node].mode != Mode::Leaf {
                // ONNX Runtime ignores weights on inner nodes.
                continue;
            }
            let weight = target_weights[i];
            let target = a.target_ids[i];
            if !(0..targets as i64).contains(&target) {
                return Err(format!("target id {target} is out of range"));
            }
            if weights[node].is_empty() {
                nodes[node].value = weight;
            }
            weights[node].push((target.max(0) as u32, weight));
        }
        if let Some(leaf) = (0..n).find(|&i| rules[i].mode == Mode::Leaf && weights[i].is_empty()) {
            return Err(format!(
                "leaf {} of tree {} has no weight",
                a.nodes_nodeids[leaf], a.nodes_treeids[leaf]
            ));
        }

        // A tree starts wherever the tree id changes from the node before. A tree whose nodes
        // are not all together, or with nodes its root does not reach, is refused: converters
        // write neither, and ONNX Runtime's handling of them is its own.
        let mut trees = Vec::new();
        let mut depths: Vec<Option<u32>> = vec![None; n];
        let mut seen_trees = std::collections::HashSet::new();
        for i in 0..n {
            if i == 0 || a.nodes_treeids[i] != a.nodes_treeids[i - 1] {
                if !seen_trees.insert(a.nodes_treeids[i]) {
                    return Err(format!(
                        "the nodes of tree {} are not all together",
                        a.nodes_treeids[i]
                    ));
                }
                let depth = depth_from(i, &nodes, &rules, &mut depths)?;
                trees.push(Tree {
                    root: i as u32,
                    fast_root: (i * std::mem::size_of::<FastNode<T>>()) as u32,
                    perfect: None,
                    depth,
                });
            }
        }

        if let Some(lost) = (0..n).find(|&i| depths[i].is_none()) {
            return Err(format!(
                "node {} of tree {} is not reached from its tree's root",
                a.nodes_nodeids[lost], a.nodes_treeids[lost]
            ));
        }
        let fast = fast_form(&nodes, &rules);
        let mut perfect = Perfect {
            thresholds: Vec::new(),
            columns: Vec::new(),
            values: Vec::new(),
            nodes: Vec::new(),
        };
        if let Some(fast) = &fast {
            for tree in &mut trees {
                tree.perfect = perfect.add(fast, tree);
            }
            perfect.pad();
        }
        let base = match targets {
            1 => (base.len() == 1).then_some(base),
            _ => (base.len() == targets).then_some(base),
        };
        let vector = simd::available()
            && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
            && i32::try_from(width * BLOCK).is_ok();
        Ok(Self {
            vector,
            classes,
            softmax,
            nodes,
            rules,
            fast,
            perfect,
            weights,
            trees,
            targets,
            width,
            aggregate,
            base,
        })
    }

    fn thresholds(&self, to_f64: impl Fn(T) -> f64) -> Vec<Vec<f64>> {
        let mut columns = vec![Vec::new(); self.width];
        for (node, rule) in self.nodes.iter().zip(&self.rules) {
            if rule.mode != Mode::Leaf {
                columns[node.feature as usize].push(to_f64(node.value));
            }
        }
        for column in &mut columns {
            column.sort_by(f64::total_cmp);
            column.dedup_by(|a, b| a.total_cmp(b).is_eq());
        }
        columns
    }

    /// See [`Ensemble::predict`].
    fn predict(&self, x: &[f32], stride: usize, out: &mut [f32]) {
        let targets = self.targets;
        let rows = out.len() / targets;
        debug_assert!(stride >= self.width && x.len() >= rows * stride);
        // One block of rows, transposed: column `f` of row `r` at `f * BLOCK + r`.
        let mut block = vec![0.0f32; self.width * BLOCK];
        let mut block_out = vec![0.0f32; BLOCK * targets];
        let mut scores = vec![(T::ZERO, false); BLOCK * targets];
        for start in (0..rows).step_by(BLOCK) {
            let count = BLOCK.min(rows - start);
            let x = &x[start * stride..(start + count) * stride];
            let out = &mut out[start * targets..(start + count) * targets];
            match &self.fast {
                Some(fast) if transpose(x, stride, self.width, &mut block) => {
                    if targets == 1 {
                        let score = self.fold_block(fast, &block);
                        for (out, score) in block_out.iter_mut().zip(score) {
                            *out = self.finish(score);
                        }
                    } else {
                        scores.fill((T::ZERO, false));
                        for tree in &self.trees {
                            let leaves = self.leaves_block(fast, tree, &block);
                            for (r, leaf) in leaves.into_iter().enumerate() {
                                let scores = &mut scores[r * targets..(r + 1) * targets];
                                self.add_weights(leaf as usize, scores);
                            }
                        }
                        self.finish_targets(&scores, &mut block_out);
                    }
                    out.copy_from_slice(&block_out[..count * targets]);
                }
                _ => {
                    for (r, out) in out.chunks_exact_mut(targets).enumerate() {
                        self.predict_row(&x[r * stride..(r + 1) * stride], &mut scores, out);
                    }
                }
            }
        }
    }

    /// See [`Ensemble::classify`].
    fn classify(&self, x: &[f32], stride: usize, labels: &mut [i64], out: &mut [f32]) {
        let classes = self.targets;
        let rows = labels.len();
        let mut block = vec![0.0f32; self.width * BLOCK];
        let mut scores = vec![(T::ZERO, false); BLOCK * classes];
        for start in (0..rows).step_by(BLOCK) {
            let count = BLOCK.min(rows - start);
            let x = &x[start * stride..(start + count) * stride];
            scores.fill((T::ZERO, false));
            match &self.fast {
                Some(fast) if transpose(x, stride, self.width, &mut block) => {
                    for tree in &self.trees {
                        let leaves = self.leaves_block(fast, tree, &block);
                        for (r, leaf) in leaves.into_iter().enumerate() {
                            let scores = &mut scores[r * classes..(r + 1) * classes];
                            self.add_weights(leaf as usize, scores);
                        }
                    }
                }
                _ => {
                    for r in 0..count {
                        let x = &x[r * stride..(r + 1) * stride];
                        for tree in &self.trees {
                            let scores = &mut scores[r * classes..(r + 1) * classes];
                            self.add_weights(self.descend_exact(tree, x) as usize, scores);
                        }
                    }
                }
            }
            for r in 0..count {
                let row = start + r;
                self.finish_classes(
                    &mut scores[r * classes..(r + 1) * classes],
                    &mut labels[row],
                    &mut out[row * classes..(row + 1) * classes],
                );
            }
        }
    }

    /// A classifier's label and scores from one row's class scores, as ONNX Runtime's
    /// classifier finishes them: base values added (a class no leaf weighted takes its base
    /// value), the label of the first class of the highest score among those with one, then
    /// the scores, through a softmax with `post_transform` SOFTMAX.
    fn finish_classes(&self, scores: &mut [(T, bool)], label: &mut i64, out: &mut [f32]) {
        if let Some(base) = &self.base {
            for ((score, has), &b) in scores.iter_mut().zip(base) {
                *score = if *has { *score + b } else { b };
                *has = true;
            }
        }
        let mut best: Option<(usize, T)> = None;
        for (k, &(score, has)) in scores.iter().enumerate() {
            if has && best.is_none_or(|(_, max)| score > max) {
                best = Some((k, score));
            }
        }
        let classes = self.classes.as_deref().unwrap_or_default();
        *label = best
            .and_then(|(k, _)| classes.get(k))
            .copied()
            .unwrap_or_default();
        for (out, &(score, _)) in out.iter_mut().zip(scores.iter()) {
            *out = score.to_output();
        }
        if self.softmax {
            let max = out
                .iter()
                .fold(-f32::MAX, |max, &v| if v > max { v } else { max });
            let mut sum = 0.0f32;
            for v in out.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            for v in out.iter_mut() {
                *v /= sum;
            }
        }
    }

    /// One row by the nodes' own rules (a row with a NaN, or an ensemble with `==` or `!=`
    /// nodes); `scores` is scratch of at least `targets` values.
    fn predict_row(&self, x: &[f32], scores: &mut [(T, bool)], out: &mut [f32]) {
        if self.targets == 1 {
            let mut score = T::ZERO;
            for (t, tree) in self.trees.iter().enumerate() {
                let w = self.nodes[self.descend_exact(tree, x) as usize].value;
                score = match self.aggregate {
                    Aggregate::Sum | Aggregate::Average => score + w,
                    Aggregate::Min if t == 0 || w < score => w,
                    Aggregate::Max if t == 0 || w > score => w,
                    Aggregate::Min | Aggregate::Max => score,
                };
            }
            out[0] = self.finish(score);
            return;
        }
        let scores = &mut scores[..self.targets];
        scores.fill((T::ZERO, false));
        for tree in &self.trees {
            self.add_weights(self.descend_exact(tree, x) as usize, scores);
        }
        self.finish_targets(scores, out);
    }

    /// The leaf row `x` reaches in `tree`, by the nodes' own rules.
    fn descend_exact(&self, tree: &Tree, x: &[f32]) -> u32 {
        let mut at = tree.root as usize;
        loop {
            let rule = self.rules[at];
            let node = &self.nodes[at];
            if rule.mode == Mode::Leaf {
                return at as u32;
            }
            let v = T::from_input(x[node.feature as usize]);
            let t = node.value;
            let holds = match rule.mode {
                Mode::Leq => v <= t,
                Mode::Lt => v < t,
                Mode::Gte => v >= t,
                Mode::Gt => v > t,
                Mode::Eq => v == t,
                Mode::Neq => v != t,
                Mode::Leaf => false,
            } || (rule.missing_true && v.is_nan());
            at = node.children[usize::from(holds)] as usize;
        }
    }

    /// The scores of one target for the [`BLOCK`] rows of the transposed `block`, with AVX2
    /// where [`Self::vector`] says so.
    fn fold_block(&self, fast: &[FastNode<T>], block: &[f32]) -> [T; BLOCK] {
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            let any: &dyn std::any::Any = self;
            let ensemble = any.downcast_ref::<Compiled<f32>>();
            if let Some((ensemble, Some(fast))) = ensemble.map(|e| (e, e.fast.as_deref())) {
                // SAFETY: `vector` is set only with AVX2, `f32` and offsets that fit an i32;
                // `fast` is this ensemble's layout and `block` `width * BLOCK` values.
                let scores = unsafe { simd::fold(ensemble, fast, block) };
                return scores.map(T::from_f32);
            }
        }
        match self.aggregate {
            Aggregate::Sum | Aggregate::Average => self.fold(fast, block, |score, w, _| score + w),
            Aggregate::Min => self.fold(
                fast,
                block,
                |score, w, first| {
                    if first || w < score { w } else { score }
                },
            ),
            Aggregate::Max => self.fold(
                fast,
                block,
                |score, w, first| {
                    if first || w > score { w } else { score }
                },
            ),
        }
    }

    /// The scores of one target for the [`BLOCK`] rows of `block`: each tree's leaf weight
    /// folded in, tree by tree (`fold(score, weight, first tree)`).
    #[inline(always)]
    fn fold(
        &self,
        fast: &[FastNode<T>],
        block: &[f32],
        fold: impl Fn(T, T, bool) -> T,
    ) -> [T; BLOCK] {
        let mut score = [T::ZERO; BLOCK];
        for (t, tree) in self.trees.iter().enumerate() {
            let weights = match &tree.perfect {
                Some(perfect) => self.perfect.leaves(perfect, block, |p, leaf| {
                    // SAFETY: `leaf` is one of the tree's leaf slots (`Perfect::leaves`).
                    unsafe { *p.values.get_unchecked(leaf) }
                }),
                None => descend_block(fast, tree, block).map(|offset| {
                    // SAFETY: a leaf offset is a node's (`fast_form`).
                    unsafe { node_at(fast, offset) }.value
                }),
            };
            for r in 0..BLOCK {
                score[r] = fold(score[r], weights[r], t == 0);
            }
        }
        score
    }

    /// The leaves (node indices) the [`BLOCK`] rows of `block` reach in `tree`.
    fn leaves_block(&self, fast: &[FastNode<T>], tree: &Tree, block: &[f32]) -> [u32; BLOCK] {
        match &tree.perfect {
            Some(perfect) => self.perfect.leaves(perfect, block, |p, leaf| p.nodes[leaf]),
            None => descend_block(fast, tree, block)
                .map(|offset| offset / std::mem::size_of::<FastNode<T>>() as u32),
        }
    }

    /// Adds the weights of `leaf` (a node index) to a row's `scores`, one per target.
    fn add_weights(&self, leaf: usize, scores: &mut [(T, bool)]) {
        for &(target, w) in &self.weights[leaf] {
            let (score, has) = &mut scores[target as usize];
            *score = match self.aggregate {
                Aggregate::Sum | Aggregate::Average => *score + w,
                Aggregate::Min if !*has || w < *score => w,
                Aggregate::Max if !*has || w > *score => w,
                Aggregate::Min | Aggregate::Max => *score,
            };
            *has = true;
        }
    }

    /// A one-target score, aggregated over the trees, as the output holds it.
    fn finish(&self, score: T) -> f32 {
        let origin = self.base.as_ref().map_or(T::ZERO, |b| b[0]);
        match self.aggregate {
            Aggregate::Average => score / T::from_count(self.trees.len()) + origin,
            _ => score + origin,
        }
        .to_output()
    }

    /// Rows of several targets' scores (`(score, whether a leaf gave one)`), as the output
    /// holds them.
    fn finish_targets(&self, scores: &[(T, bool)], out: &mut [f32]) {
        let trees = T::from_count(self.trees.len());
        for (j, (&(score, has), out)) in scores.iter().zip(out).enumerate() {
            let base = self.base.as_ref().map(|b| b[j % self.targets]);
            // A target no leaf gave a weight to is 0, base value or not. MIN and MAX add the
            // score to the base value or to 0 (so a -0 score comes out +0); SUM adds the base
            // value to the score only when there is one.
            let value = match (self.aggregate, has) {
                (_, false) => T::ZERO,
                (Aggregate::Sum, true) => base.map_or(score, |b| score + b),
                (Aggregate::Min | Aggregate::Max, true) => base.unwrap_or(T::ZERO) + score,
                (Aggregate::Average, true) => base.map_or(score / trees, |b| score / trees + b),
            };
            *out = value.to_output();
        }
    }
}

/// One node of the fast layout: every comparison as `x <= value` (children swapped, `x < t`
/// as `x <= below(t)`), children as byte offsets into the layout, the column as its offset in
/// a transposed block, so that one step of a descent is a few instructions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FastNode<T> {
    value: T,
    /// `feature * BLOCK`.
    column: u32,
    /// Byte offsets of the children: `[x > value, x <= value]`; a leaf's are its own.
    children: [u32; 2],
}

/// The node at byte `offset` of `fast`.
///
/// # Safety
/// `offset` must be `i * size_of::<FastNode<T>>()` for some `i < fast.len()`.
#[inline(always)]
unsafe fn node_at<T>(fast: &[FastNode<T>], offset: u32) -> &FastNode<T> {
    debug_assert!((offset as usize) < std::mem::size_of_val(fast));
    // SAFETY: by the caller, inside `fast` and aligned like its elements.
    unsafe {
        &*fast
            .as_ptr()
            .cast::<u8>()
            .add(offset as usize)
            .cast::<FastNode<T>>()
    }
}

/// Transposes the rows of `x` (`stride` apart, the first `width` columns) into `block`,
/// repeating the first row where there are fewer than [`BLOCK`]; `false` (and `block` partly
/// written) if a value is NaN.
fn transpose(x: &[f32], stride: usize, width: usize, block: &mut [f32]) -> bool {
    let rows = x.len() / stride;
    let mut nan = false;
    for r in 0..BLOCK {
        let row = &x[(if r < rows { r } else { 0 }) * stride..][..width];
        for (f, &v) in row.iter().enumerate() {
            nan |= v.is_nan();
            block[f * BLOCK + r] = v;
        }
    }
    !nan
}

/// The leaves (byte offsets) the [`BLOCK`] rows of the transposed `block` reach in `tree`:
/// each step moves every row one level down (a leaf stays where it is), with no branch on the
/// data, so the CPU overlaps the rows' descents.
#[inline(always)]
fn descend_block<T: Threshold>(fast: &[FastNode<T>], tree: &Tree, block: &[f32]) -> [u32; BLOCK] {
    debug_assert!(block.len() >= BLOCK);
    let mut at = [tree.fast_root; BLOCK];
    for _ in 0..tree.depth {
        for r in 0..BLOCK {
            // SAFETY: roots and children are node offsets (`fast_form`); a node's column is
            // below `width * BLOCK`, the length of `block` (`Compiled::predict`).
            unsafe {
                let node = node_at(fast, at[r]);
                let v = T::from_input(*block.get_unchecked(node.column as usize + r));
                at[r] = *node.children.get_unchecked(usize::from(v <= node.value));
            }
        }
    }
    at
}

/// Small trees laid out as complete binary trees of their depth, level by level: a row at
/// slot `i` goes to `2i + 1` or, when `x <= threshold`, to `2i + 2`, so a step needs no child
/// to be loaded. A leaf above the last level is padded with nodes that always go to `2i + 1`
/// (a NaN threshold) down to copies of itself.
#[derive(Debug)]
struct Perfect<T> {
    /// The inner slots' thresholds, in the fast layout's `x <= t` form.
    thresholds: Vec<T>,
    /// The inner slots' columns in a transposed block (`feature * BLOCK`).
    columns: Vec<u32>,
    /// The leaf slots' (first) weights.
    values: Vec<T>,
    /// The leaf slots' nodes (for their weights with several targets).
    nodes: Vec<u32>,
}

/// One tree's place in [`Perfect`].
#[derive(Debug, Clone, Copy)]
struct PerfectTree {
    /// Its first inner slot.
    inner: usize,
    /// Its first leaf slot.
    leaves: usize,
    depth: u32,
}

/// The deepest tree given the perfect layout, and how much larger than the tree its padded
/// layout may be.
const PERFECT_DEPTH: u32 = 8;
const PERFECT_GROWTH: usize = 4;

impl<T: Threshold> Perfect<T> {
    /// Adds `tree` when it is small enough, and says where; `None` leaves it to the fast
    /// layout.
    fn add(&mut self, fast: &[FastNode<T>], tree: &Tree) -> Option<PerfectTree> {
        let size = std::mem::size_of::<FastNode<T>>() as u32;
        if tree.depth > PERFECT_DEPTH {
            return None;
        }
        let slots = 1usize << tree.depth;
        let reachable = count_reachable(fast, tree.fast_root / size);
        if slots > PERFECT_GROWTH * reachable + 2 {
            return None;
        }
        let place = PerfectTree {
            inner: self.thresholds.len(),
            leaves: self.values.len(),
            depth: tree.depth,
        };
        // Level by level, each slot's node (a leaf repeats down its padding).
        let mut level = vec![tree.fast_root / size];
        for _ in 0..tree.depth {
            let mut next = Vec::with_capacity(level.len() * 2);
            for &node in &level {
                let n = &fast[node as usize];
                if n.children == [node * size; 2] {
                    // A leaf: always to 2i + 1, and itself on both sides.
                    self.thresholds.push(T::NEVER);
                    self.columns.push(0);
                    next.extend([node, node]);
                } else {
                    self.thresholds.push(n.value);
                    self.columns.push(n.column);
                    next.extend(n.children.map(|offset| offset / size));
                }
            }
            level = next;
        }
        for node in level {
            self.values.push(fast[node as usize].value);
            self.nodes.push(node);
        }
        Some(place)
    }

    /// Room after the last tree for vector loads of 32 slots from any tree's start ([`simd`]
    /// loads a small tree's slots whole).
    fn pad(&mut self) {
        for _ in 0..32 {
            self.thresholds.push(T::NEVER);
            self.columns.push(0);
            self.values.push(T::ZERO);
            self.nodes.push(0);
        }
    }

    /// What `leaf(self, slot)` gives for the leaf slot each of the [`BLOCK`] rows of `block`
    /// reaches in `tree`.
    #[inline(always)]
    fn leaves<V: Copy>(
        &self,
        tree: &PerfectTree,
        block: &[f32],
        leaf: impl Fn(&Self, usize) -> V,
    ) -> [V; BLOCK] {
        let thresholds = &self.thresholds[tree.inner..];
        let columns = &self.columns[tree.inner..];
        let mut at = [0usize; BLOCK];
        for _ in 0..tree.depth {
            for r in 0..BLOCK {
                // SAFETY: before the last level a slot is below 2^depth - 1, the tree's inner
                // slots; columns are below `width * BLOCK`, the length of `block`.
                unsafe {
                    let i = at[r];
                    let v =
                        T::from_input(*block.get_unchecked(*columns.get_unchecked(i) as usize + r));
                    at[r] = 2 * i + 1 + usize::from(v <= *thresholds.get_unchecked(i));
                }
            }
        }
        let first_leaf = (1usize << tree.depth) - 1;
        at.map(|slot| leaf(self, tree.leaves + slot - first_leaf))
    }
}

/// The nodes reachable from `root` (an index into `fast`), a tree's size.
fn count_reachable<T>(fast: &[FastNode<T>], root: u32) -> usize {
    let size = std::mem::size_of::<FastNode<T>>() as u32;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if seen.insert(node) {
            for child in fast[node as usize].children {
                if child / size != node {
                    stack.push(child / size);
                }
            }
        }
    }
    seen.len()
}

/// The fast layout of `nodes`; `None` if a mode has no `x <= t` form (`==`, `!=`) or the
/// ensemble is too large for `u32` offsets.
fn fast_form<T: Threshold>(nodes: &[Node<T>], rules: &[Rule]) -> Option<Vec<FastNode<T>>> {
    let size = std::mem::size_of::<FastNode<T>>();
    u32::try_from(nodes.len().checked_mul(size)?).ok()?;
    let offset = |index: u32| index * size as u32;
    nodes
        .iter()
        .zip(rules)
        .map(|(node, rule)| {
            let [no, yes] = node.children;
            let t = node.value;
            let (value, [no, yes]) = match rule.mode {
                Mode::Leaf => (t, node.children),
                Mode::Eq | Mode::Neq => return None,
                // A NaN threshold compares false in the modes below: always `no`.
                _ if t.is_nan() => (t, [no, no]),
                Mode::Leq => (t, [no, yes]),
                // x > t is !(x <= t).
                Mode::Gt => (t, [yes, no]),
                // x < t is x <= below(t).
                Mode::Lt => (t.below(), [no, yes]),
                // x >= t is !(x < t).
                Mode::Gte => (t.below(), [yes, no]),
            };
            Some(FastNode {
                value,
                column: node.feature.checked_mul(BLOCK as u32)?,
                children: [offset(no), offset(yes)],
            })
        })
        .collect()
}

/// The depth of the tree under node `at`, memoised in `depths`; refuses a cycle.
fn depth_from<T>(
    at: usize,
    nodes: &[Node<T>],
    rules: &[Rule],
    depths: &mut [Option<u32>],
) -> Result<u32, Refusal> {
    // An explicit stack: a degenerate tree can be thousands of levels deep.
    let mut stack = vec![(at, false)];
    let mut visiting = vec![false; nodes.len()];
    while let Some((i, expanded)) = stack.pop() {
        if depths[i].is_some() {
            continue;
        }
        if rules[i].mode == Mode::Leaf {
            depths[i] = Some(0);
            continue;
        }
        let [no, yes] = nodes[i].children.map(|c| c as usize);
        if expanded {
            visiting[i] = false;
            let below = depths[no].unwrap_or(0).max(depths[yes].unwrap_or(0));
            depths[i] = Some(below + 1);
            continue;
        }
        if visiting[i] {
            return Err("a tree has a cycle".to_owned());
        }
        visiting[i] = true;
        stack.push((i, true));
        for child in [no, yes] {
            if depths[child].is_none() {
                if visiting[child] {
                    return Err("a tree has a cycle".to_owned());
                }
                stack.push((child, false));
            }
        }
    }
    depths[at].ok_or_else(|| "a tree has a cycle".to_owned())
}
