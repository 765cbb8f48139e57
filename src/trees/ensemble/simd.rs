//! One-target scores of a block with AVX2: the [`BLOCK`] rows' descents of a tree are the 8
//! lanes of one register.
//!
//! - A tree of depth 3 or less in the perfect layout has at most 7 inner slots and 8 leaves:
//!   its thresholds, columns and leaf weights are each one register, read per row with a
//!   permute. A step is then one gather (each row's value), two permutes, a compare and the
//!   next slot. Four such trees of the same depth descend together, so that their gathers
//!   overlap.
//! - A deeper tree in the perfect layout gathers its thresholds and columns too.
//! - A tree without that layout descends as in the scalar code, its leaves loaded into a
//!   register.
//!
//! The weights are combined lane by lane in tree order, so each row's score is the scalar
//! code's to the bit.

use super::{Aggregate, BLOCK, Compiled, FastNode, PerfectTree, descend_block, node_at};

/// Trees descending together.
const GROUP: usize = 4;
/// The deepest tree whose slots fit one register.
const SMALL_DEPTH: u32 = 3;

/// Whether this CPU has AVX2.
#[cfg(target_arch = "x86_64")]
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU has AVX2: never, off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn available() -> bool {
    false
}

/// The scores of the rows of the transposed `block` (each tree's weight folded in as
/// [`Compiled::fold`] does).
///
/// # Safety
/// The CPU must have AVX2 ([`available`]), `fast` must be `ensemble`'s fast layout, `block`
/// `width * BLOCK` values, and `width * BLOCK` must fit an `i32` (the gathers' offsets).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fold(
    ensemble: &Compiled<f32>,
    fast: &[FastNode<f32>],
    block: &[f32],
) -> [f32; BLOCK] {
    use std::arch::x86_64::*;
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let one = _mm256_set1_epi32(1);
    let perfect = &ensemble.perfect;
    let combine = |score: __m256, weights: __m256, first: bool| match ensemble.aggregate {
        Aggregate::Sum | Aggregate::Average => _mm256_add_ps(score, weights),
        _ if first => weights,
        // `min_ps(w, score)` is `w < score ? w : score` (the second operand on NaN and on
        // equal zeros), the scalar rule; `max_ps` likewise.
        Aggregate::Min => _mm256_min_ps(weights, score),
        Aggregate::Max => _mm256_max_ps(weights, score),
    };
    let small = |place: &Option<PerfectTree>| place.filter(|p| p.depth <= SMALL_DEPTH);
    let mut score = _mm256_setzero_ps();
    let trees = &ensemble.trees;
    let mut t = 0;
    while t < trees.len() {
        // Four small trees of one depth, together.
        if let Some(group) = trees.get(t..t + GROUP) {
            let places: [Option<PerfectTree>; GROUP] =
                std::array::from_fn(|g| small(&group[g].perfect));
            if let [Some(a), Some(b), Some(c), Some(d)] = places
                && [b, c, d].iter().all(|p| p.depth == a.depth)
            {
                let places = [a, b, c, d];
                // SAFETY: each load reads 8 values from a tree's start, inside the padded
                // layout (`Perfect::pad`); slots stay below 8, columns below `width * BLOCK`.
                let weights: [__m256; GROUP] = unsafe {
                    let thresholds: [__m256; GROUP] = std::array::from_fn(|g| {
                        _mm256_loadu_ps(perfect.thresholds.as_ptr().add(places[g].inner))
                    });
                    let columns: [__m256i; GROUP] = std::array::from_fn(|g| {
                        _mm256_loadu_si256(perfect.columns.as_ptr().add(places[g].inner).cast())
                    });
                    let mut slot = [_mm256_setzero_si256(); GROUP];
                    for _ in 0..places[0].depth {
                        for g in 0..GROUP {
                            let column = _mm256_permutevar8x32_epi32(columns[g], slot[g]);
                            let offset = _mm256_add_epi32(column, lanes);
                            let x = _mm256_i32gather_ps::<4>(block.as_ptr(), offset);
                            let threshold = _mm256_permutevar8x32_ps(thresholds[g], slot[g]);
                            let holds =
                                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, threshold));
                            let doubled = _mm256_add_epi32(_mm256_add_epi32(slot[g], slot[g]), one);
                            slot[g] = _mm256_sub_epi32(doubled, holds);
                        }
                    }
                    let first_leaf = _mm256_set1_epi32((1 << places[0].depth) - 1);
                    std::array::from_fn(|g| {
                        let values = _mm256_loadu_ps(perfect.values.as_ptr().add(places[g].leaves));
                        _mm256_permutevar8x32_ps(values, _mm256_sub_epi32(slot[g], first_leaf))
                    })
                };
                for (g, weights) in weights.into_iter().enumerate() {
                    score = combine(score, weights, t + g == 0);
                }
                t += GROUP;
                continue;
            }
        }
        let tree = &trees[t];
        let weights = match &tree.perfect {
            // SAFETY: the slots of a tree are inside its part of the perfect layout, its
            // columns below `width * BLOCK` (`Perfect::add`), as in `Perfect::leaves`.
            Some(place) => unsafe {
                let thresholds = perfect.thresholds.as_ptr().add(place.inner);
                let columns = perfect.columns.as_ptr().add(place.inner).cast::<i32>();
                let mut slot = _mm256_setzero_si256();
                for _ in 0..place.depth {
                    let column = _mm256_i32gather_epi32::<4>(columns, slot);
                    let x =
                        _mm256_i32gather_ps::<4>(block.as_ptr(), _mm256_add_epi32(column, lanes));
                    let threshold = _mm256_i32gather_ps::<4>(thresholds, slot);
                    // All ones where x <= threshold (false for a NaN threshold).
                    let holds = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, threshold));
                    // 2i + 1, or 2i + 2 where it holds.
                    let doubled = _mm256_add_epi32(_mm256_add_epi32(slot, slot), one);
                    slot = _mm256_sub_epi32(doubled, holds);
                }
                let first_leaf = _mm256_set1_epi32((1 << place.depth) - 1);
                let values = perfect.values.as_ptr().add(place.leaves);
                _mm256_i32gather_ps::<4>(values, _mm256_sub_epi32(slot, first_leaf))
            },
            None => {
                // SAFETY: leaf offsets are node offsets (`fast_form`).
                let weights = descend_block(fast, tree, block)
                    .map(|offset| unsafe { node_at(fast, offset) }.value);
                // SAFETY: eight floats.
                unsafe { _mm256_loadu_ps(weights.as_ptr()) }
            }
        };
        score = combine(score, weights, t == 0);
        t += 1;
    }
    let mut out = [0.0f32; BLOCK];
    // SAFETY: eight floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), score) };
    out
}
