//! The committed corpus through the targets' checks, and what the typed seeds are for.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every input of a target's committed corpus passes `check`.
fn replay(target: &str, check: fn(&[u8])) {
    let corpus = corpus_dir(target);
    let mut inputs = 0;
    let mut failed = Vec::new();
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&input)).is_err() {
            failed.push(path.display().to_string());
        }
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", corpus.display());
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

#[test]
fn event_corpus_passes_the_checks() {
    replay("event", super::check_event);
}

#[test]
fn payload_corpus_passes_the_checks() {
    replay("payload", super::check_payload);
}

#[test]
fn trees_corpus_passes_the_checks() {
    replay("trees", super::check_trees);
}

#[test]
fn aggregate_corpus_passes_the_checks() {
    replay("aggregate", super::check_aggregate);
}

/// What each aggregate seed becomes between two good records: how many records the batch has.
#[test]
fn aggregate_seeds_are_split_or_rejected_whole() {
    for (file, records) in [
        ("good-three-records-two-keys.bin", 5),
        ("explicit-hash-key-and-not-json.bin", 4),
        ("tags.bin", 3),
        ("key-index-beyond-table.bin", 3),
        ("keys-without-records.bin", 3),
        ("empty.bin", 3),
        ("not-protobuf.bin", 3),
    ] {
        let message = std::fs::read(corpus_dir("aggregate").join(file)).unwrap();
        let data = bike_prediction::aggregate::frame(&message);
        let event = super::event_with_payloads(&[b"{}", &data, b"{}"]);
        let batch = bike_prediction::kinesis::KinesisBatch::from_slice(&event).unwrap();
        assert_eq!(batch.len(), records, "{file}");
        let middle = batch.get(1).unwrap();
        assert_eq!(
            middle.invalid_aggregate.is_some(),
            records == 3 && file != "tags.bin",
            "{file}"
        );
    }
}

#[test]
fn typed_corpus_passes_the_checks() {
    replay("typed", super::check_typed);
}

/// The bundled model's payloads are payloads too: missing typed columns, features of the wrong
/// form, and all the bad JSON.
#[test]
fn payload_corpus_passes_the_typed_checks() {
    replay("payload", super::check_typed);
}

#[test]
fn typed_corpus_passes_the_payload_checks() {
    replay("typed", super::check_payload);
}

/// Each layout's good payload is predicted.
#[test]
fn every_layout_predicts_its_good_payload() {
    let specs = super::specs();
    for spec in std::iter::once(&specs.bundled).chain(&specs.typed) {
        assert_eq!(
            super::final_outcome(spec.good, spec.name),
            "predicted",
            "{}",
            spec.name
        );
    }
}

/// What each typed seed is for: the seed, a layout, and what becomes of the seed between two
/// good records with that layout (`predicted`, or the rejection's code).
const SEEDS: &[(&str, &str, &str)] = &[
    ("good.json", "columns", "predicted"),
    ("good-string-pred-id.json", "columns", "predicted"),
    ("good-escaped.json", "columns", "predicted"),
    ("good-whole-floats.json", "columns", "predicted"),
    // Decoded; `t2` beyond f32 makes a probability infinite.
    ("good-extremes.json", "columns", "non_finite_prediction"),
    ("good-extra-keys.json", "columns", "predicted"),
    ("good-unicode-weather.json", "columns", "predicted"),
    // A repeated key is rejected, unless a problem met before it has rejected the record.
    ("duplicate-keys.json", "columns", "duplicate_key"),
    (
        "duplicate-keys-bad-first.json",
        "columns",
        "non_numeric_feature",
    ),
    // Decoded with `t2` NaN, which the fake classifier passes on as a probability.
    ("optional-null.json", "columns", "non_finite_prediction"),
    ("optional-missing.json", "columns", "non_finite_prediction"),
    (
        "probability-overflow.json",
        "columns",
        "non_finite_prediction",
    ),
    ("non-numeric-string.json", "columns", "non_numeric_feature"),
    (
        "non-numeric-null-required.json",
        "columns",
        "non_numeric_feature",
    ),
    (
        "non-numeric-bool-for-int.json",
        "columns",
        "non_numeric_feature",
    ),
    (
        "non-numeric-optional-int-null.json",
        "columns",
        "non_numeric_feature",
    ),
    ("non-finite-f32.json", "columns", "non_finite_feature"),
    ("not-an-integer.json", "columns", "not_an_integer"),
    (
        "not-an-integer-float-input.json",
        "columns",
        "not_an_integer",
    ),
    ("out-of-range-u64.json", "columns", "integer_out_of_range"),
    ("out-of-range-1e19.json", "columns", "integer_out_of_range"),
    ("out-of-range-int32.json", "columns", "integer_out_of_range"),
    (
        "out-of-range-int32-negative.json",
        "columns",
        "integer_out_of_range",
    ),
    (
        "out-of-range-float-input.json",
        "columns",
        "integer_out_of_range",
    ),
    ("not-a-boolean-number.json", "columns", "not_a_boolean"),
    ("not-a-boolean-string.json", "columns", "not_a_boolean"),
    ("not-a-string-number.json", "columns", "not_a_string"),
    ("not-a-string-null.json", "columns", "not_a_string"),
    ("not-a-string-array.json", "columns", "not_a_string"),
    ("string-with-nul.json", "columns", "string_with_nul"),
    ("missing-int.json", "columns", "missing_feature"),
    ("missing-optional-int.json", "columns", "missing_feature"),
    ("nan-feature.json", "columns", "invalid_feature_json"),
    ("lone-surrogate.json", "columns", "invalid_feature_json"),
    ("not-utf8-weather.json", "columns", "not_utf8"),
    ("features-null.json", "columns", "features_not_an_object"),
    ("tensor-floats.json", "columns", "features_not_an_object"),
    ("tensor-floats.json", "tensor-float", "predicted"),
    ("good.json", "tensor-float", "features_not_an_array"),
    (
        "features-null.json",
        "tensor-float",
        "features_not_an_array",
    ),
    (
        "tensor-scalar.json",
        "tensor-float",
        "features_not_an_array",
    ),
    ("tensor-short.json", "tensor-float", "wrong_feature_count"),
    ("tensor-long.json", "tensor-float", "wrong_feature_count"),
    ("tensor-empty.json", "tensor-float", "wrong_feature_count"),
    (
        "tensor-f32-overflow.json",
        "tensor-float",
        "non_finite_feature",
    ),
    (
        "tensor-sum-overflow.json",
        "tensor-float",
        "non_finite_prediction",
    ),
    ("tensor-nan.json", "tensor-float", "invalid_feature_json"),
    ("tensor-mixed.json", "tensor-float", "non_numeric_feature"),
    ("tensor-nested.json", "tensor-float", "non_numeric_feature"),
    (
        "tensor-missing-pred-id.json",
        "tensor-float",
        "missing_pred_id",
    ),
    ("tensor-ints.json", "tensor-long-as-float", "predicted"),
    (
        "tensor-whole-floats.json",
        "tensor-long-as-float",
        "predicted",
    ),
    (
        "tensor-floats.json",
        "tensor-long-as-float",
        "not_an_integer",
    ),
    (
        "tensor-long-bad-first.json",
        "tensor-long-as-float",
        "not_an_integer",
    ),
    ("tensor-f32-overflow.json", "tensor-double", "predicted"),
    ("tensor-floats.json", "tensor-double", "predicted"),
    ("tensor-i64-extremes.json", "tensor-long", "predicted"),
    // Read as a float, it rounds to -2^63 exactly: out of range, not i64::MIN.
    (
        "tensor-i64-below-min.json",
        "tensor-long",
        "integer_out_of_range",
    ),
    ("tensor-whole-floats.json", "tensor-long", "predicted"),
    (
        "tensor-i64-2-63.json",
        "tensor-long",
        "integer_out_of_range",
    ),
    ("tensor-floats.json", "tensor-long", "not_an_integer"),
    ("tensor-ints.json", "tensor-integer", "predicted"),
    (
        "tensor-i64-extremes.json",
        "tensor-integer",
        "integer_out_of_range",
    ),
    ("tensor-bools.json", "tensor-integer", "non_numeric_feature"),
    (
        "tensor-bools.json",
        "tensor-boolean",
        "non_finite_prediction",
    ),
    ("tensor-ints.json", "tensor-boolean", "not_a_boolean"),
    ("tensor-strings.json", "tensor-string", "predicted"),
    (
        "tensor-strings-equal.json",
        "tensor-string",
        "non_finite_prediction",
    ),
    ("tensor-nul.json", "tensor-string", "string_with_nul"),
    ("tensor-ints.json", "tensor-string", "not_a_string"),
    ("tensor-mixed.json", "tensor-string", "not_a_string"),
];

#[test]
fn typed_seeds_end_as_the_table_says() {
    let mut wrong = Vec::new();
    for (file, layout, expected) in SEEDS {
        let payload = std::fs::read(corpus_dir("typed").join(file)).unwrap();
        let outcome = super::final_outcome(&payload, layout);
        if outcome != *expected {
            wrong.push(format!(
                "{file} with {layout}: {outcome}, expected {expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The seeds cover every layout, every value conversion's rejection and a non-finite
/// classifier prediction.
#[test]
fn typed_seeds_cover_every_layout_and_reason() {
    let layouts: BTreeSet<&str> = SEEDS.iter().map(|(_, layout, _)| *layout).collect();
    let all: BTreeSet<&str> = super::typed_spec_names().into_iter().collect();
    assert_eq!(layouts, all);
    let outcomes: BTreeSet<&str> = SEEDS.iter().map(|(_, _, outcome)| *outcome).collect();
    for code in [
        "predicted",
        "duplicate_key",
        "features_not_an_object",
        "features_not_an_array",
        "wrong_feature_count",
        "missing_feature",
        "non_numeric_feature",
        "non_finite_feature",
        "not_an_integer",
        "integer_out_of_range",
        "not_a_boolean",
        "not_a_string",
        "string_with_nul",
        "invalid_feature_json",
        "non_finite_prediction",
    ] {
        assert!(outcomes.contains(code), "no seed ends as {code}");
    }
}

/// The reference decoder decides every strict seed itself, as the table says: it accepts
/// exactly the seeds that are decoded (predicted, or rejected only for their prediction), and
/// it names the reason of those with one thing wrong. Only the seeds that are not strict JSON
/// are left to the library.
#[test]
fn the_reference_decides_the_strict_seeds_as_the_table_says() {
    use super::{Expected, Parsed};
    let not_strict = ["nan-feature.json", "lone-surrogate.json", "tensor-nan.json"];
    let repeat_a_key = ["duplicate-keys.json", "duplicate-keys-bad-first.json"];
    let specs = super::specs();
    for (file, layout, outcome) in SEEDS {
        let payload = std::fs::read(corpus_dir("typed").join(file)).unwrap();
        let spec = specs
            .typed
            .iter()
            .find(|spec| spec.name == *layout)
            .unwrap();
        let expected = Parsed::of(&payload).expect(spec);
        let decoded = matches!(*outcome, "predicted" | "non_finite_prediction");
        match expected {
            Expected::Unknown => assert!(not_strict.contains(file), "{file}: unknown"),
            Expected::NotPredicted => {
                assert!(repeat_a_key.contains(file), "{file}: repeats a key");
                assert!(!decoded, "{file} with {layout}: repeats a key");
            }
            Expected::Accepted { .. } => assert!(decoded, "{file} with {layout}: accepted"),
            Expected::Rejected(problems) => {
                assert!(!decoded, "{file} with {layout}: rejected for {problems:?}");
                assert!(
                    problems.iter().any(|problem| problem.code() == *outcome),
                    "{file} with {layout}: {problems:?}, not {outcome}"
                );
            }
        }
    }
}
