//! One-target scores of a block with AVX2: the [`BLOCK`] rows' descents of a tree are the 8
//! lanes of one register.
//!
//! - A tree of depth 5 or less in the perfect layout has at most 31 inner slots and 32
//!   leaves: its thresholds, columns and leaf weights are each one to four registers, read
//!   per row with permutes (and blends between the registers). A step is then one gather (each
//!   row's value), the table reads, a compare and the next slot. Four such trees of the same
//!   depth descend together, so that their gathers overlap.
//! - Deeper trees in the perfect layout gather their thresholds, columns and weights too, four
//!   of one depth together as well; a tree in the perfect layout without three more of its
//!   depth after it descends alone.
//! - A tree without that layout descends as in the scalar code, its leaves loaded into a
//!   register.
//!
//! The weights are combined lane by lane in tree order, so each row's score is the scalar
//! code's to the bit.

use super::{Aggregate, BLOCK, Compiled, FastNode, PerfectTree, descend_block, node_at};

/// Trees descending together.
const GROUP: usize = 4;
/// The deepest tree whose slots are read from registers (32 slots, four registers).
const SMALL_DEPTH: u32 = 5;

/// The value at each lane's `slot` of the table of `2^depth` values at `table` (at least 8
/// read): from one, two or four registers up to depth 5 ([`SMALL_DEPTH`]), gathered from
/// memory for deeper trees.
///
/// # Safety
/// AVX2, and `max(2^depth, 8)` values readable at `table`; slots below `2^depth`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn lookup(
    table: *const f32,
    depth: u32,
    slot: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: by the caller.
    let part =
        |k: usize| unsafe { _mm256_permutevar8x32_ps(_mm256_loadu_ps(table.add(8 * k)), slot) };
    // The sign bit of each lane set by its slot's bit 3 (4): which register of a pair (pairs).
    let bit3 = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(slot));
    let bit4 = _mm256_castsi256_ps(_mm256_slli_epi32::<27>(slot));
    if depth > SMALL_DEPTH {
        // SAFETY: by the caller.
        return unsafe { _mm256_i32gather_ps::<4>(table, slot) };
    }
    match depth {
        0..=3 => part(0),
        4 => _mm256_blendv_ps(part(0), part(1), bit3),
        _ => _mm256_blendv_ps(
            _mm256_blendv_ps(part(0), part(1), bit3),
            _mm256_blendv_ps(part(2), part(3), bit3),
            bit4,
        ),
    }
}

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
    let mut score = _mm256_setzero_ps();
    let trees = &ensemble.trees;
    let mut t = 0;
    while t < trees.len() {
        // Four trees of one depth in the perfect layout, together.
        if let Some(group) = trees.get(t..t + GROUP) {
            let places: [Option<PerfectTree>; GROUP] = std::array::from_fn(|g| group[g].perfect);
            if let [Some(a), Some(b), Some(c), Some(d)] = places
                && [b, c, d].iter().all(|p| p.depth == a.depth)
            {
                let places = [a, b, c, d];
                // SAFETY: each table read is of at most 32 values from a tree's start, inside
                // the padded layout (`Perfect::pad`), at slots below `2^depth`; columns are
                // below `width * BLOCK`.
                let depth = places[0].depth;
                let weights: [__m256; GROUP] = unsafe {
                    let thresholds = places.map(|p| perfect.thresholds.as_ptr().add(p.inner));
                    let columns =
                        places.map(|p| perfect.columns.as_ptr().add(p.inner).cast::<f32>());
                    let mut slot = [_mm256_setzero_si256(); GROUP];
                    for _ in 0..depth {
                        for g in 0..GROUP {
                            let column = _mm256_castps_si256(lookup(columns[g], depth, slot[g]));
                            let offset = _mm256_add_epi32(column, lanes);
                            let x = _mm256_i32gather_ps::<4>(block.as_ptr(), offset);
                            let threshold = lookup(thresholds[g], depth, slot[g]);
                            let holds =
                                _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, threshold));
                            let doubled = _mm256_add_epi32(_mm256_add_epi32(slot[g], slot[g]), one);
                            slot[g] = _mm256_sub_epi32(doubled, holds);
                        }
                    }
                    let first_leaf = _mm256_set1_epi32((1 << depth) - 1);
                    std::array::from_fn(|g| {
                        let values = perfect.values.as_ptr().add(places[g].leaves);
                        lookup(values, depth, _mm256_sub_epi32(slot[g], first_leaf))
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
