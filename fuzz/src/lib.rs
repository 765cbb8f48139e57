//! What the fuzz targets in `fuzz_targets/` run: the service's path from raw event bytes to the
//! Lambda response, without the model, and the invariants that path must keep on any input.
//!
//! - [`check_event`] (target `event`): the fuzzer's bytes are the raw Lambda event, decoded for
//!   the bundled model (four float32 columns).
//! - [`check_payload`] (target `payload`): the fuzzer's bytes are one record's payload, put
//!   base64-encoded between two good records of a well-formed event, so that the payload
//!   parser is fuzzed deeply and not only the event envelope; the record's outcome is also
//!   compared with an independent reference decoder built on `serde_json::Value`.
//! - [`check_typed`] (target `typed`): the same, for layouts of every element type: one input
//!   per column (float32, float64, int64, int32, bool, string, optional ones, an integer column
//!   feeding a float input) and tensor signatures (`features` an array of 3) of each type; the
//!   predictions are a fake classifier's (or regressor's) derived from the row.
//!
//! - [`check_aggregate`] (target `aggregate`): the fuzzer's bytes are the protobuf message of
//!   a KPL aggregated record, framed with the magic and its MD5 digest (so that the digest
//!   check does not stop every input), between two good records: the aggregate is split into
//!   user records numbered 0, 1, 2, ... under its sequence number, or rejected whole.
//!
//! The checks live in this library, not in the targets, so that `cargo test` here replays the
//! committed corpus through them on the stable toolchain, without libFuzzer.

use std::sync::OnceLock;

use bike_prediction::aggregate;
use bike_prediction::artifact::{InputSignature, SignatureType};
use bike_prediction::event::{self, MAX_PARTITION_KEY_CHARS, MAX_RECORD_BYTES, RejectReason};
use bike_prediction::inputs::{Buffer, ElementType, FeatureForm, GraphInput, InputLayout, Inputs};
use bike_prediction::kinesis::KinesisBatch;
use bike_prediction::ledger::{Fate, Ledger};
use bike_prediction::model::{Labels, Predictions, Values};
use bike_prediction::output::{self, EventEncoder};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// The bundled model's input columns, in its order.
pub const COLUMNS: [&str; 4] = ["t1", "t2", "hum", "weather_code"];
/// The `model` and `version` stamped on the prediction events, and a regressor's value key.
const MODEL: &str = "bike-demand";
const VERSION: &str = "run";
const PREDICTION_FIELD: &str = "cnt";
/// The dead-letter stream's record size: small, so that fuzzed records' letters are split too.
const LETTER_LIMIT: usize = 4096;
/// The `pred_id` of every good record around the fuzzed payload.
const GOOD_PRED_ID: &str = "123";

// ---------------------------------------------------------------------------------------------
// Layouts

/// A layout the checks decode with, what the reference knows of it (written here, not read
/// from the library's layout), a good payload for it and the row that payload decodes to.
pub struct Spec {
    /// A short name, for messages and the seed table in the tests.
    pub name: &'static str,
    layout: InputLayout,
    form: FeatureForm,
    fields: Vec<RefField>,
    /// Values per row of each ONNX input.
    widths: Vec<usize>,
    good: &'static [u8],
    good_row: Vec<Cell>,
    /// The fake model: one batch's predictions from its inputs.
    predict: fn(&Spec, &Inputs) -> Predictions,
}

/// One value a record provides, as the reference sees it.
#[derive(Debug, Clone, PartialEq)]
struct RefField {
    name: String,
    element: ElementType,
    /// The signature types it as an integer (`integer` or `long`).
    integral: bool,
    required: bool,
    /// The ONNX input it feeds and its column in that input's row.
    input: usize,
    column: usize,
}

/// A column of the typed layout: name, signature type, the element type of its own ONNX
/// input, required.
type TypedColumn = (&'static str, SignatureType, ElementType, bool);

/// The typed layout: one `[N, 1]` input per column, as skl2onnx converts a DataFrame pipeline.
const TYPED_COLUMNS: [TypedColumn; 8] = [
    ("t1", SignatureType::Float, ElementType::Float32, true),
    ("t2", SignatureType::Double, ElementType::Float64, false),
    ("hum", SignatureType::Long, ElementType::Int64, true),
    ("code", SignatureType::Integer, ElementType::Int32, true),
    ("flag", SignatureType::Boolean, ElementType::Bool, true),
    ("weather", SignatureType::String, ElementType::String, true),
    // Optional, but an integer input has no missing value: a record must still give it.
    ("level", SignatureType::Long, ElementType::Int64, false),
    // An integer column feeding a float input: integers only, NaN when left out.
    ("n", SignatureType::Long, ElementType::Float32, false),
];

const GOOD: &[u8] =
    br#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "weather_code": 2}, "pred_id": 123}"#;
const GOOD_TYPED: &[u8] = br#"{"features": {"t1": 2, "t2": 3.5, "hum": 50, "code": -3, "flag": true, "weather": "cloudy", "level": 7, "n": 4}, "pred_id": 123}"#;

/// A tensor layout: its name, the signature's dtype, the input's element type, a good payload
/// and its row.
type TensorSpec = (
    &'static str,
    SignatureType,
    ElementType,
    &'static [u8],
    Vec<Cell>,
);

/// The bundled model's layout and every typed one, bound once.
struct Specs {
    bundled: Spec,
    typed: Vec<Spec>,
}

fn specs() -> &'static Specs {
    static SPECS: OnceLock<Specs> = OnceLock::new();
    SPECS.get_or_init(|| Specs {
        bundled: bundled_spec(),
        typed: typed_specs(),
    })
}

/// The layouts of the `typed` target, by name.
pub fn typed_spec_names() -> Vec<&'static str> {
    specs().typed.iter().map(|spec| spec.name).collect()
}

fn bundled_spec() -> Spec {
    let fields = COLUMNS
        .iter()
        .enumerate()
        .map(|(column, name)| RefField {
            name: (*name).into(),
            element: ElementType::Float32,
            integral: false,
            required: true,
            input: 0,
            column,
        })
        .collect();
    Spec::new(
        "bundled",
        InputLayout::float_columns(&COLUMNS),
        FeatureForm::Object,
        fields,
        vec![4],
        GOOD,
        [2.0, 3.5, 50.0, 2.0].map(Cell::F32).to_vec(),
        predict_sum,
    )
}

fn typed_specs() -> Vec<Spec> {
    use Cell::*;
    use ElementType as E;
    use SignatureType as S;
    let fields = TYPED_COLUMNS
        .iter()
        .enumerate()
        .map(|(input, (name, kind, element, required))| RefField {
            name: (*name).into(),
            element: *element,
            integral: matches!(kind, S::Integer | S::Long),
            required: *required,
            input,
            column: 0,
        })
        .collect();
    let columns = Spec::new(
        "columns",
        InputLayout::per_column(&TYPED_COLUMNS).expect("the typed layout binds"),
        FeatureForm::Object,
        fields,
        vec![1; TYPED_COLUMNS.len()],
        GOOD_TYPED,
        vec![
            F32(2.0),
            F64(3.5),
            I64(50),
            I32(-3),
            Bool(true),
            Str("cloudy".into()),
            I64(7),
            F32(4.0),
        ],
        predict_typed,
    );
    let tensors: [TensorSpec; 7] = [
        (
            "tensor-float",
            S::Float,
            E::Float32,
            br#"{"features": [2, 3.5, -1000.5], "pred_id": 123}"#,
            vec![F32(2.0), F32(3.5), F32(-1000.5)],
        ),
        (
            "tensor-long-as-float",
            S::Long,
            E::Float32,
            br#"{"features": [2, -3, 4.0], "pred_id": 123}"#,
            vec![F32(2.0), F32(-3.0), F32(4.0)],
        ),
        (
            "tensor-double",
            S::Double,
            E::Float64,
            br#"{"features": [0.1, 2, -1e300], "pred_id": 123}"#,
            vec![F64(0.1), F64(2.0), F64(-1e300)],
        ),
        (
            "tensor-long",
            S::Long,
            E::Int64,
            br#"{"features": [9007199254740993, -2, 0], "pred_id": 123}"#,
            vec![I64(9_007_199_254_740_993), I64(-2), I64(0)],
        ),
        (
            "tensor-integer",
            S::Integer,
            E::Int32,
            br#"{"features": [2147483647, -2147483648, 0], "pred_id": 123}"#,
            vec![I32(i32::MAX), I32(i32::MIN), I32(0)],
        ),
        (
            "tensor-boolean",
            S::Boolean,
            E::Bool,
            br#"{"features": [true, false, false], "pred_id": 123}"#,
            vec![Bool(true), Bool(false), Bool(false)],
        ),
        (
            "tensor-string",
            S::String,
            E::String,
            br#"{"features": ["a", "\u00e9\"", ""], "pred_id": 123}"#,
            vec![Str("a".into()), Str("é\"".into()), Str(String::new())],
        ),
    ];
    let mut specs = vec![columns];
    for (name, kind, element, good, good_row) in tensors {
        let signature = InputSignature::Tensor {
            dtype: kind,
            width: Some(3),
        };
        let graph = [GraphInput {
            name: "input".into(),
            element: Ok(element),
            shape: vec![-1, 3],
        }];
        let fields = (0..3)
            .map(|column| RefField {
                name: format!("features[{column}]"),
                element,
                integral: matches!(kind, S::Integer | S::Long),
                required: true,
                input: 0,
                column,
            })
            .collect();
        specs.push(Spec::new(
            name,
            InputLayout::bind(&signature, &graph).expect("a tensor layout binds"),
            FeatureForm::Array,
            fields,
            vec![3],
            good,
            good_row,
            predict_tensor,
        ));
    }
    specs
}

impl Spec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &'static str,
        layout: InputLayout,
        form: FeatureForm,
        fields: Vec<RefField>,
        widths: Vec<usize>,
        good: &'static [u8],
        good_row: Vec<Cell>,
        predict: fn(&Spec, &Inputs) -> Predictions,
    ) -> Self {
        // The library bound the layout as the reference expects it, or the comparisons below
        // would be of different things.
        assert_eq!(layout.form, form, "{name}");
        let bound: Vec<RefField> = layout
            .fields
            .iter()
            .map(|field| RefField {
                name: field.name.clone(),
                element: field.element,
                integral: field.integral,
                required: field.required,
                input: field.input,
                column: field.column,
            })
            .collect();
        assert_eq!(bound, fields, "{name}");
        let bound_widths: Vec<usize> = layout.inputs.iter().map(|input| input.width).collect();
        assert_eq!(bound_widths, widths, "{name}");
        for field in &fields {
            assert_eq!(layout.inputs[field.input].element, field.element, "{name}");
        }
        assert_eq!(good_row.len(), fields.len(), "{name}");
        Self {
            name,
            layout,
            form,
            fields,
            widths,
            good,
            good_row,
            predict,
        }
    }

    /// The value of `field` in row `row` of the library's inputs.
    fn cell(&self, inputs: &Inputs, field: usize, row: usize) -> Cell {
        let field = &self.fields[field];
        let index = row * self.widths[field.input] + field.column;
        let at = |length: usize| {
            assert!(
                index < length,
                "{}: no value {index} for {}",
                self.name,
                field.name
            );
            index
        };
        match &inputs.buffers[field.input] {
            Buffer::Float32(values) => Cell::F32(values[at(values.len())]),
            Buffer::Float64(values) => Cell::F64(values[at(values.len())]),
            Buffer::Int64(values) => Cell::I64(values[at(values.len())]),
            Buffer::Int32(values) => Cell::I32(values[at(values.len())]),
            Buffer::Bool(values) => Cell::Bool(values[at(values.len())]),
            Buffer::String(spans) => {
                let span = spans[at(spans.len())].clone();
                let text = inputs.text.get(span.clone()).unwrap_or_else(|| {
                    panic!("{}: string span {span:?} not in the text", self.name)
                });
                Cell::Str(text.to_owned())
            }
        }
    }

    fn row(&self, inputs: &Inputs, row: usize) -> Vec<Cell> {
        (0..self.fields.len())
            .map(|field| self.cell(inputs, field, row))
            .collect()
    }
}

/// One value of a row: what the library wrote, or what the reference says it should write.
#[derive(Debug, Clone)]
pub enum Cell {
    F32(f32),
    F64(f64),
    I64(i64),
    I32(i32),
    Bool(bool),
    Str(String),
}

impl PartialEq for Cell {
    /// Floats compare bit for bit (so `-0.0` is not `0.0`), except that any NaN is NaN.
    fn eq(&self, other: &Self) -> bool {
        use Cell::*;
        match (self, other) {
            (F32(a), F32(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (I64(a), I64(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Cell {
    fn as_f32(&self) -> f32 {
        match self {
            Cell::F32(value) => *value,
            Cell::F64(value) => *value as f32,
            Cell::I64(value) => *value as f32,
            Cell::I32(value) => *value as f32,
            Cell::Bool(value) => f32::from(u8::from(*value)),
            Cell::Str(text) => text.chars().count() as f32,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fake models

/// The bundled model's stand-in: the sum of the row's features, so that non-finite predictions
/// (an overflowing sum) happen too.
fn predict_sum(spec: &Spec, inputs: &Inputs) -> Predictions {
    let width = spec.widths[0];
    let values = match &inputs.buffers[0] {
        Buffer::Float32(values) => values
            .chunks_exact(width)
            .map(|row| row.iter().sum())
            .collect(),
        other => panic!("the bundled layout's input is {other:?}"),
    };
    Predictions::Values {
        values: Values::Float32(values),
        width: 1,
    }
}

/// Classes whose names need escaping, so that the probabilities object is written with care.
fn classes(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// A classifier over the typed columns: the label is the record's `weather` string as given;
/// the probabilities are `t1`, `t2` (NaN when left out, infinite beyond f32) and `n` (NaN when
/// left out).
fn predict_typed(spec: &Spec, inputs: &Inputs) -> Predictions {
    let mut labels = Vec::with_capacity(inputs.rows);
    let mut probabilities = Vec::with_capacity(inputs.rows * 3);
    for row in 0..inputs.rows {
        let Cell::Str(weather) = spec.cell(inputs, 5, row) else {
            panic!("weather is a string input")
        };
        labels.push(weather);
        for field in [0, 1, 7] {
            probabilities.push(spec.cell(inputs, field, row).as_f32());
        }
    }
    Predictions::Classes {
        labels: Labels::String(labels),
        classes: classes(&["low", "mid \"q\"", "h\u{e9}\\gh"]),
        probabilities,
    }
}

/// A prediction for each tensor layout, each of another kind.
fn predict_tensor(spec: &Spec, inputs: &Inputs) -> Predictions {
    let rows: Vec<Vec<Cell>> = (0..inputs.rows).map(|row| spec.row(inputs, row)).collect();
    let floats = |row: &[Cell]| row.iter().map(Cell::as_f32).collect::<Vec<f32>>();
    match spec.name {
        // A classifier: int64 labels; the last probability overflows now and then.
        "tensor-float" => Predictions::Classes {
            labels: Labels::Int64(rows.iter().map(|row| row[0].as_f32() as i64).collect()),
            classes: classes(&["0", "1", "2"]),
            probabilities: rows
                .iter()
                .flat_map(|row| {
                    let v = floats(row);
                    [v[0], v[1], v[0] + v[1] + v[2]]
                })
                .collect(),
        },
        // A regressor of three targets: the row itself.
        "tensor-long-as-float" => Predictions::Values {
            values: Values::Float32(rows.iter().flat_map(|row| floats(row)).collect()),
            width: 3,
        },
        // A float64 regressor: the sum, infinite now and then.
        "tensor-double" => Predictions::Values {
            values: Values::Float64(
                rows.iter()
                    .map(|row| {
                        row.iter()
                            .map(|cell| match cell {
                                Cell::F64(value) => *value,
                                other => panic!("{other:?} in a float64 tensor"),
                            })
                            .sum()
                    })
                    .collect(),
            ),
            width: 1,
        },
        "tensor-long" => Predictions::Classes {
            labels: Labels::Int64(
                rows.iter()
                    .map(|row| match row[0] {
                        Cell::I64(value) => value,
                        ref other => panic!("{other:?} in an int64 tensor"),
                    })
                    .collect(),
            ),
            classes: classes(&["a", "b"]),
            probabilities: rows.iter().flat_map(|row| floats(&row[1..])).collect(),
        },
        // Labels only: a classifier without a probability output.
        "tensor-integer" => Predictions::Classes {
            labels: Labels::Int64(
                rows.iter()
                    .map(|row| match row[0] {
                        Cell::I32(value) => i64::from(value),
                        ref other => panic!("{other:?} in an int32 tensor"),
                    })
                    .collect(),
            ),
            classes: Vec::new(),
            probabilities: Vec::new(),
        },
        // String labels; NaN when the last feature is true.
        "tensor-boolean" => Predictions::Classes {
            labels: Labels::String(
                rows.iter()
                    .map(|row| {
                        if row[0] == Cell::Bool(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .into()
                    })
                    .collect(),
            ),
            classes: classes(&["yes", "no"]),
            probabilities: rows
                .iter()
                .flat_map(|row| {
                    let last = if row[2] == Cell::Bool(true) {
                        f32::NAN
                    } else {
                        0.5
                    };
                    [row[1].as_f32(), last]
                })
                .collect(),
        },
        // The first string as the label; NaN when the other two are equal.
        "tensor-string" => Predictions::Classes {
            labels: Labels::String(
                rows.iter()
                    .map(|row| match &row[0] {
                        Cell::Str(text) => text.clone(),
                        other => panic!("{other:?} in a string tensor"),
                    })
                    .collect(),
            ),
            classes: classes(&["x", ""]),
            probabilities: rows
                .iter()
                .flat_map(|row| {
                    let same = if row[1] == row[2] {
                        f32::INFINITY
                    } else {
                        0.25
                    };
                    [row[1].as_f32(), same]
                })
                .collect(),
        },
        other => panic!("no fake model for {other}"),
    }
}

/// What the event of a row with this prediction must say, or `None` if the row has a
/// non-finite value and must be rejected instead. Read from the predictions here, not through
/// the library's `Predictions::row`.
#[derive(Debug)]
enum Expect {
    Values(Vec<Num>),
    Class {
        label: Value,
        probabilities: Vec<(String, f32)>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Num {
    F32(f32),
    F64(f64),
}

fn expected_prediction(predictions: &Predictions, row: usize) -> Option<Expect> {
    match predictions {
        Predictions::Values { values, width } => {
            let span = row * width..(row + 1) * width;
            let values: Vec<Num> = match values {
                Values::Float32(values) => values[span].iter().map(|v| Num::F32(*v)).collect(),
                Values::Float64(values) => values[span].iter().map(|v| Num::F64(*v)).collect(),
            };
            let finite = values.iter().all(|value| match value {
                Num::F32(value) => value.is_finite(),
                Num::F64(value) => value.is_finite(),
            });
            finite.then_some(Expect::Values(values))
        }
        Predictions::Classes {
            labels,
            classes,
            probabilities,
        } => {
            let label = match labels {
                Labels::Int64(labels) => Value::from(labels[row]),
                Labels::String(labels) => Value::from(labels[row].clone()),
            };
            let probabilities: Vec<(String, f32)> = match probabilities.is_empty() {
                true => Vec::new(),
                false => {
                    let row = &probabilities[row * classes.len()..(row + 1) * classes.len()];
                    classes.iter().cloned().zip(row.iter().copied()).collect()
                }
            };
            let finite = probabilities.iter().all(|(_, p)| p.is_finite());
            finite.then_some(Expect::Class {
                label,
                probabilities,
            })
        }
    }
}

/// A JSON number written for `expected`, read back: the same float.
fn same_number(written: &Value, expected: Num) -> bool {
    let Some(read) = written.as_f64() else {
        return false;
    };
    match expected {
        Num::F32(value) => (read as f32).to_bits() == value.to_bits(),
        Num::F64(value) => read.to_bits() == value.to_bits(),
    }
}

/// A prediction event: JSON with the model, the version, the prediction as expected and the
/// record's `pred_id` echoed.
fn check_prediction_event(json: &[u8], pred_id: &Value, expected: &Expect) -> Value {
    let event: Value = serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "prediction event is not JSON ({e}): {}",
            String::from_utf8_lossy(json)
        )
    });
    assert_eq!(event.as_object().map(Map::len), Some(3), "{event}");
    assert_eq!(event["model"], MODEL);
    assert_eq!(event["version"], VERSION);
    let prediction = event["prediction"]
        .as_object()
        .unwrap_or_else(|| panic!("prediction is not an object: {event}"));
    assert_eq!(prediction.get("pred_id"), Some(pred_id), "{event}");
    match expected {
        Expect::Values(values) => {
            assert_eq!(prediction.len(), 2, "{event}");
            let written = &prediction[PREDICTION_FIELD];
            match values.as_slice() {
                [value] => assert!(same_number(written, *value), "{event}: {values:?}"),
                values => {
                    let array = written.as_array().expect("several values are an array");
                    assert_eq!(array.len(), values.len(), "{event}");
                    for (written, value) in array.iter().zip(values) {
                        assert!(same_number(written, *value), "{event}: {values:?}");
                    }
                }
            }
        }
        Expect::Class {
            label,
            probabilities,
        } => {
            assert_eq!(prediction.get("label"), Some(label), "{event}");
            if probabilities.is_empty() {
                assert_eq!(prediction.len(), 2, "{event}");
            } else {
                assert_eq!(prediction.len(), 3, "{event}");
                let written = prediction["probabilities"]
                    .as_object()
                    .unwrap_or_else(|| panic!("probabilities are not an object: {event}"));
                assert_eq!(
                    written.len(),
                    probabilities.len(),
                    "one key per class: {event}"
                );
                for (class, p) in probabilities {
                    let value = written
                        .get(class)
                        .unwrap_or_else(|| panic!("no probability for {class:?}: {event}"));
                    assert!(same_number(value, Num::F32(*p)), "{event}: {class:?} {p}");
                }
            }
        }
    }
    event
}

// ---------------------------------------------------------------------------------------------
// The checks

/// Raw Lambda event bytes: an event that is not a Kinesis event is an error (never a panic);
/// any other goes through [`check_batch`] with the bundled model's layout.
pub fn check_event(event: &[u8]) {
    match KinesisBatch::from_slice(event) {
        Ok(records) => {
            check_batch(&records, &specs().bundled);
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// A KPL aggregated record of the protobuf bytes `message`, between two good records, decoded
/// for the bundled model: its user records follow each other under its sequence number,
/// numbered from 0, or it is rejected whole as `invalid_aggregate`; the good records are
/// predicted either way.
pub fn check_aggregate(message: &[u8]) {
    let spec = &specs().bundled;
    let data = aggregate::frame(message);
    let event = event_with_payloads(&[spec.good, &data, spec.good]);
    let records = KinesisBatch::from_slice(&event).expect("a well-formed event is read");
    let checked = check_batch(&records, spec);
    let last = records.len() - 1;
    for neighbour in [0, last] {
        let row = checked.rows[neighbour]
            .unwrap_or_else(|| panic!("good neighbour {neighbour} is rejected"));
        assert_eq!(spec.row(&checked.inputs, row), spec.good_row);
        assert_eq!(
            records
                .get(neighbour)
                .expect("a record")
                .sub_sequence_number,
            None
        );
    }
    let middle: Vec<_> = records.iter().skip(1).take(last - 1).collect();
    match aggregate::decode(&data) {
        Ok(found) => {
            assert_eq!(middle.len(), found.user_records().len());
            for (position, (record, (key, user_data))) in
                middle.iter().zip(found.user_records()).enumerate()
            {
                assert_eq!(record.sequence_number, "1");
                assert_eq!(record.sub_sequence_number, Some(position as u32));
                assert_eq!(record.partition_key, found.partition_keys()[key]);
                assert_eq!(record.data, Ok(user_data));
                assert_eq!(record.invalid_aggregate, None);
            }
        }
        Err(error) => {
            let [record] = middle.as_slice() else {
                panic!(
                    "an aggregate that cannot be read is {} records",
                    middle.len()
                )
            };
            assert_eq!(record.data, Ok(data.as_slice()));
            assert_eq!(record.invalid_aggregate, Some(&error));
            assert_eq!(
                checked.decoded[1],
                Fate::Rejected(RejectReason::InvalidAggregate(error))
            );
        }
    }
}

/// One record's payload, between two good records, decoded for the bundled model: the good ones
/// are predicted as if alone, and the fuzzed one is accepted or rejected as the reference
/// decoder says.
pub fn check_payload(payload: &[u8]) {
    let parsed = Parsed::of(payload);
    check_payload_with(payload, &parsed, &specs().bundled);
}

/// One record's payload, between two good records, decoded with each typed layout in turn
/// ([`check_payload`] for each).
pub fn check_typed(payload: &[u8]) {
    let parsed = Parsed::of(payload);
    for spec in &specs().typed {
        check_payload_with(payload, &parsed, spec);
    }
}

/// The code of what finally became of `payload` between two good records with the layout
/// named `layout` (`predicted`, or a rejection's code), after all the checks; for the tests.
pub fn final_outcome(payload: &[u8], layout: &str) -> &'static str {
    let specs = specs();
    let spec = std::iter::once(&specs.bundled)
        .chain(&specs.typed)
        .find(|spec| spec.name == layout)
        .unwrap_or_else(|| panic!("no layout {layout}"));
    check_payload_with(payload, &Parsed::of(payload), spec)
}

fn check_payload_with(payload: &[u8], parsed: &Parsed, spec: &Spec) -> &'static str {
    let event = event_with_payloads(&[spec.good, payload, spec.good]);
    let records = KinesisBatch::from_slice(&event).expect("a well-formed event is read");
    assert_eq!(records.len(), 3);
    assert_eq!(records.get(1).map(|record| record.data), Some(Ok(payload)));
    let checked = check_batch(&records, spec);
    let name = spec.name;
    if let Some(error) = records.get(1).and_then(|record| record.invalid_aggregate) {
        let reason = RejectReason::InvalidAggregate(error.clone());
        assert_eq!(checked.decoded[1], Fate::Rejected(reason), "{name}");
        return "invalid_aggregate";
    }

    for neighbour in [0, 2] {
        let row = checked.rows[neighbour]
            .unwrap_or_else(|| panic!("{name}: good neighbour {neighbour} is rejected"));
        assert_eq!(
            spec.row(&checked.inputs, row),
            spec.good_row,
            "{name}: neighbour {neighbour}"
        );
        let entry = &checked.ledger.entries()[neighbour];
        assert_eq!(checked.ledger.pred_id(entry), GOOD_PRED_ID, "{name}");
    }
    match parsed.expect(spec) {
        Expected::Accepted {
            row,
            pred_id,
            partition_key,
        } => {
            let decoded = checked.rows[1].unwrap_or_else(|| {
                panic!(
                    "{name}: rejected ({:?}), the reference accepts it with {row:?}",
                    checked.decoded[1]
                )
            });
            assert_eq!(spec.row(&checked.inputs, decoded), row, "{name}");
            let entry = &checked.ledger.entries()[1];
            let echoed: Value =
                serde_json::from_str(checked.ledger.pred_id(entry)).expect("checked JSON");
            assert_eq!(echoed, pred_id, "{name}");
            assert_eq!(checked.ledger.partition_key(1), partition_key, "{name}");
        }
        Expected::Rejected(problems) => {
            let Fate::Rejected(reason) = &checked.decoded[1] else {
                panic!(
                    "{name}: accepted as {:?}, the reference rejects it: {problems:?}",
                    checked.rows[1].map(|row| spec.row(&checked.inputs, row))
                );
            };
            // With one thing wrong, the library must name that thing.
            if let [problem] = problems.as_slice() {
                assert_eq!(reason, problem, "{name}: the only problem is {problem}");
            }
        }
        Expected::NotPredicted => assert!(
            matches!(checked.decoded[1], Fate::Rejected(_)),
            "{name}: a payload that repeats a key is predicted"
        ),
        Expected::Unknown => {}
    }
    match &checked.ledger.entries()[1].fate {
        Fate::Rejected(reason) => reason.code(),
        _ => "predicted",
    }
}

/// A batch after [`check_batch`]: the ledger (encoded, every event marked for re-delivery),
/// the inputs, each record's fate after decoding, and each decoded record's row.
pub struct Checked<'e> {
    ledger: Ledger<'e>,
    inputs: Inputs,
    decoded: Vec<Fate>,
    rows: Vec<Option<usize>>,
}

/// Decodes the records as the handler does, makes the spec's fake predictions, encodes the
/// prediction events, the response and the dead letters, and checks that every record is
/// accounted for exactly once and that everything written is valid JSON carrying what it
/// should.
pub fn check_batch<'e>(records: &'e KinesisBatch, spec: &Spec) -> Checked<'e> {
    let name = spec.name;
    let (mut ledger, inputs) = event::decode(records, &spec.layout);

    // Every record is decoded or rejected, once, in event order; decoded rows are numbered in
    // order, complete, and hold only values their inputs can take.
    assert_eq!(ledger.len(), records.len(), "{name}");
    assert_eq!(ledger.entries().len(), records.len(), "{name}");
    let decoded: Vec<Fate> = ledger.entries().iter().map(|e| e.fate.clone()).collect();
    let mut rows = Vec::with_capacity(records.len());
    for (index, entry) in ledger.entries().iter().enumerate() {
        assert!(
            !entry.redeliver,
            "{name}: record {index} marked before publishing"
        );
        match &entry.fate {
            Fate::Decoded { row } => {
                // A decoded record is UTF-8 text without a key repeated in any object.
                let data = ledger.record(index).data.unwrap_or_default();
                assert!(std::str::from_utf8(data).is_ok(), "{name}: record {index}");
                assert!(
                    !matches!(Parsed::of(data), Parsed::RepeatsAKey),
                    "{name}: record {index} repeats a key"
                );
                let next = rows.iter().flatten().count();
                assert_eq!(*row, next, "{name}: record {index} has row {row}");
                rows.push(Some(*row));
                assert!(ledger.record(index).data.is_ok());
                let text = ledger.pred_id(entry);
                let pred_id: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("pred_id {text:?} is not JSON: {e}"));
                assert!(pred_id.is_number() || pred_id.is_string(), "{pred_id}");
                let key = ledger.partition_key(index);
                assert!(
                    (1..=MAX_PARTITION_KEY_CHARS).contains(&key.chars().count()),
                    "partition key {key:?}"
                );
            }
            Fate::Rejected(reason) => {
                rows.push(None);
                assert!(!reason.code().is_empty());
                // An aggregate that cannot be read is rejected as that, whole; for any other
                // record, not UTF-8 anywhere is the first thing checked after the size.
                let record = ledger.record(index);
                if let Some(error) = record.invalid_aggregate {
                    assert_eq!(*reason, RejectReason::InvalidAggregate(error.clone()));
                } else if let Ok(data) = record.data
                    && data.len() <= MAX_RECORD_BYTES
                    && std::str::from_utf8(data).is_err()
                {
                    assert_eq!(*reason, RejectReason::NotUtf8, "{name}: record {index}");
                }
                assert!(!reason.to_string().is_empty());
                assert_ne!(*reason, RejectReason::NonFinitePrediction, "{name}");
                assert_eq!(
                    ledger.pred_id(entry),
                    "",
                    "{name}: a rejected record's pred_id"
                );
            }
            Fate::Predicted { .. } => panic!("{name}: record {index} predicted before encoding"),
        }
    }
    let accepted = rows.iter().flatten().count();
    assert_eq!(inputs.rows, accepted, "{name}: rows != records decoded");
    assert_eq!(ledger.counts(), (0, records.len() - accepted, 0), "{name}");
    assert_eq!(inputs.buffers.len(), spec.widths.len(), "{name}");
    for (buffer, width) in inputs.buffers.iter().zip(&spec.widths) {
        let length = match buffer {
            Buffer::Float32(values) => values.len(),
            Buffer::Float64(values) => values.len(),
            Buffer::Int64(values) => values.len(),
            Buffer::Int32(values) => values.len(),
            Buffer::Bool(values) => values.len(),
            Buffer::String(values) => values.len(),
        };
        assert_eq!(length, accepted * width, "{name}: {buffer:?}");
    }
    for row in 0..accepted {
        for (field, spec_field) in spec.fields.iter().enumerate() {
            let valid = match spec.cell(&inputs, field, row) {
                Cell::F32(value) => value.is_finite() || (value.is_nan() && !spec_field.required),
                Cell::F64(value) => value.is_finite() || (value.is_nan() && !spec_field.required),
                Cell::Str(text) => !text.contains('\0'),
                Cell::I64(_) | Cell::I32(_) | Cell::Bool(_) => true,
            };
            assert!(valid, "{name}: row {row}: {:?}", spec.row(&inputs, row));
        }
    }

    // One event per decoded record whose prediction is finite, with the model, the version,
    // the prediction and the echoed pred_id; a non-finite prediction is a rejection instead.
    let predictions = (spec.predict)(spec, &inputs);
    EventEncoder::new(MODEL, VERSION, PREDICTION_FIELD).encode(&mut ledger, &predictions);
    let mut events: Vec<Option<&[u8]>> = vec![None; records.len()];
    for (index, event) in ledger.predicted() {
        assert!(
            events[index].replace(event).is_none(),
            "{name}: record {index} twice"
        );
    }
    let mut parsed_events = Vec::new();
    for (index, entry) in ledger.entries().iter().enumerate() {
        match (&decoded[index], &entry.fate) {
            (Fate::Decoded { row }, fate) => match expected_prediction(&predictions, *row) {
                Some(expected) => {
                    assert!(
                        matches!(fate, Fate::Predicted { .. }),
                        "{name}: record {index} is {fate:?}, its prediction {expected:?}"
                    );
                    let event = events[index].expect("a predicted record has its event");
                    let pred_id: Value =
                        serde_json::from_str(ledger.pred_id(entry)).expect("checked");
                    parsed_events.push(check_prediction_event(event, &pred_id, &expected));
                }
                None => assert_eq!(
                    *fate,
                    Fate::Rejected(RejectReason::NonFinitePrediction),
                    "{name}: record {index}"
                ),
            },
            (Fate::Rejected(before), after) => {
                assert_eq!(
                    *after,
                    Fate::Rejected(before.clone()),
                    "{name}: record {index}"
                );
                assert!(events[index].is_none());
            }
            (Fate::Predicted { .. }, _) => unreachable!("checked above"),
        }
    }
    let predicted = parsed_events.len();
    let rejected: Vec<(usize, RejectReason)> = ledger
        .rejections()
        .map(|(index, reason)| (index, reason.clone()))
        .collect();
    assert_eq!(
        predicted + rejected.len(),
        records.len(),
        "events + rejected != records in"
    );
    assert_eq!(ledger.counts(), (predicted, rejected.len(), 0), "{name}");

    // The response, as the handler writes it; every event's record marked for re-delivery, as
    // if publishing had failed, so that the failures list is written too.
    let published: Vec<usize> = ledger.predicted().map(|(index, _)| index).collect();
    ledger.redeliver(published.iter().copied());
    assert_eq!(
        ledger.counts(),
        (predicted, rejected.len(), predicted),
        "{name}"
    );
    // An aggregate's user records are re-delivered by its sequence number, listed once.
    let mut failures: Vec<&str> = Vec::new();
    let mut last = None;
    for index in &published {
        let record = records.get(*index).expect("a record");
        if record.sub_sequence_number.is_none() || last != Some(record.sequence_number) {
            failures.push(record.sequence_number);
        }
        last = Some(record.sequence_number);
    }
    assert_eq!(
        ledger.redeliveries().collect::<Vec<_>>(),
        failures,
        "{name}"
    );
    let response = output::write_response(&ledger, None);
    let response: Value = serde_json::from_slice(&response).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&response)
        )
    });
    let listed = |field: &str| {
        response[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} is not a list: {response}"))
    };
    assert_eq!(*listed("predictions"), parsed_events, "{name}");
    assert_eq!(listed("rejected").len(), rejected.len());
    for (entry, (index, reason)) in listed("rejected").iter().zip(&rejected) {
        let record = ledger.record(*index);
        assert_eq!(entry["sequenceNumber"], record.sequence_number);
        assert_eq!(
            entry["subSequenceNumber"],
            serde_json::json!(record.sub_sequence_number)
        );
        assert_eq!(entry["partitionKey"], record.partition_key);
        assert_eq!(entry["code"], reason.code());
        assert_eq!(entry["reason"], reason.to_string());
    }
    assert_eq!(listed("batchItemFailures").len(), failures.len());
    for (entry, failure) in listed("batchItemFailures").iter().zip(&failures) {
        assert_eq!(entry["itemIdentifier"], *failure);
    }

    // Dead letters keep each rejected record's data exactly as it arrived.
    let rejected_at: Vec<usize> = rejected.iter().map(|(index, _)| *index).collect();
    let letters = output::dead_letters(&ledger, &rejected_at, MODEL, VERSION, LETTER_LIMIT);
    assert_eq!(letters.len(), rejected.len());
    for (letter, (index, reason)) in letters.iter().zip(&rejected) {
        assert_eq!(letter.record, *index, "{name}");
        let record = ledger.record(*index);
        let mut data = String::new();
        for (position, part) in letter.parts.iter().enumerate() {
            assert!(part.len() + letter.partition_key.len() <= LETTER_LIMIT);
            let json: Value = serde_json::from_slice(part).expect("a dead letter is JSON");
            assert_eq!(json["sequenceNumber"], record.sequence_number);
            assert_eq!(
                json["subSequenceNumber"],
                serde_json::json!(record.sub_sequence_number)
            );
            assert_eq!(json["partitionKey"], record.partition_key);
            assert_eq!(json["code"], reason.code());
            assert_eq!(json["reason"], reason.to_string());
            assert_eq!(json["model"], MODEL);
            assert_eq!(json["version"], VERSION);
            if letter.parts.len() > 1 {
                assert_eq!(json["part"], position + 1);
                assert_eq!(json["parts"], letter.parts.len());
            }
            data.push_str(json["data"].as_str().expect("data is a string"));
        }
        if letter.parts.is_empty() {
            continue;
        }
        match record.data {
            Ok(decoded) => assert_eq!(
                base64_simd::STANDARD.decode_to_vec(&data).ok().as_deref(),
                Some(decoded)
            ),
            Err(text) => assert_eq!(data, text),
        }
        let usable = |key: &str| (1..=256).contains(&key.chars().count());
        let expected_key = [record.partition_key, record.sequence_number]
            .into_iter()
            .find(|key| usable(key))
            .unwrap_or("dead-letter");
        assert_eq!(letter.partition_key, expected_key);
    }
    Checked {
        ledger,
        inputs,
        decoded,
        rows,
    }
}

/// A Kinesis event whose records carry these payloads.
pub fn event_with_payloads(payloads: &[&[u8]]) -> Vec<u8> {
    let records: Vec<String> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| {
            format!(
                r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"pk{i}","sequenceNumber":"{i}","data":"{}"}},"eventSource":"aws:kinesis"}}"#,
                base64_simd::STANDARD.encode_to_string(payload)
            )
        })
        .collect();
    format!(r#"{{"Records":[{}]}}"#, records.join(",")).into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The reference decoder

/// What the reference decoder says of a payload.
#[derive(Debug)]
enum Expected {
    /// Decoded into this row; the event echoes this `pred_id` under this partition key.
    Accepted {
        row: Vec<Cell>,
        pred_id: Value,
        partition_key: String,
    },
    /// Cannot be predicted, for each of these reasons (at least one); the service stops at the
    /// first it meets, so only a lone reason is compared.
    Rejected(Vec<RejectReason>),
    /// An object repeats a key: rejected, for that or for a problem met before it.
    NotPredicted,
    /// Not strict JSON otherwise (a number out of range, a lone surrogate): where the service
    /// and a `Value` may rightly differ.
    Unknown,
}

/// A payload parsed once by the reference, for every layout.
enum Parsed {
    TooLarge(usize),
    NotUtf8,
    /// JSON in which an object repeats a key.
    RepeatsAKey,
    /// Strict JSON, and the text of its `pred_id` if that is a number.
    Value(Value, Option<String>),
    Unknown,
}

impl Parsed {
    fn of(payload: &[u8]) -> Self {
        if payload.len() > MAX_RECORD_BYTES {
            return Self::TooLarge(payload.len());
        }
        if std::str::from_utf8(payload).is_err() {
            return Self::NotUtf8;
        }
        let value = match serde_json::from_slice::<Strict>(payload) {
            Ok(Strict(value)) => value,
            Err(error) if error.to_string().starts_with(REPEATED_KEY) => return Self::RepeatsAKey,
            Err(_) => return Self::Unknown,
        };
        // A number's partition key is its text as written, which a `Value` does not keep.
        let number_text = match value.get("pred_id") {
            Some(Value::Number(_)) => match serde_json::from_slice::<PredIdText>(payload) {
                Ok(raw) => Some(raw.pred_id.get().to_owned()),
                Err(_) => return Self::Unknown,
            },
            _ => None,
        };
        Self::Value(value, number_text)
    }

    /// The service's rules for a payload, written over a fully parsed `serde_json::Value`.
    fn expect(&self, spec: &Spec) -> Expected {
        let (value, number_text) = match self {
            Self::TooLarge(bytes) => {
                return Expected::Rejected(vec![RejectReason::TooLarge(*bytes)]);
            }
            Self::NotUtf8 => return Expected::Rejected(vec![RejectReason::NotUtf8]),
            Self::RepeatsAKey => return Expected::NotPredicted,
            Self::Unknown => return Expected::Unknown,
            Self::Value(value, number_text) => (value, number_text),
        };
        let Value::Object(payload) = value else {
            return Expected::Rejected(vec![RejectReason::NotAnObject]);
        };
        let mut problems = Vec::new();
        let partition_key = match payload.get("pred_id") {
            None => {
                problems.push(RejectReason::MissingPredId);
                None
            }
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(_)) => number_text.clone(),
            Some(_) => {
                problems.push(RejectReason::InvalidPredId);
                None
            }
        };
        if let Some(key) = &partition_key
            && !(1..=MAX_PARTITION_KEY_CHARS).contains(&key.chars().count())
        {
            problems.push(RejectReason::InvalidPredId);
        }
        let row = match payload.get("features") {
            None => {
                problems.push(RejectReason::MissingFeatures);
                None
            }
            Some(features) => features_row(features, spec, &mut problems),
        };
        match (row, partition_key) {
            (Some(row), Some(partition_key)) if problems.is_empty() => Expected::Accepted {
                row,
                pred_id: payload["pred_id"].clone(),
                partition_key,
            },
            _ => {
                assert!(!problems.is_empty());
                Expected::Rejected(problems)
            }
        }
    }
}

/// The row `features` makes, or `None` with what is wrong with it added to `problems`.
fn features_row(
    features: &Value,
    spec: &Spec,
    problems: &mut Vec<RejectReason>,
) -> Option<Vec<Cell>> {
    let values: Vec<Option<&Value>> = match (spec.form, features) {
        (FeatureForm::Object, Value::Object(features)) => spec
            .fields
            .iter()
            .map(|field| features.get(&field.name))
            .collect(),
        (FeatureForm::Object, _) => {
            problems.push(RejectReason::FeaturesNotAnObject);
            return None;
        }
        (FeatureForm::Array, Value::Array(items)) => {
            if items.len() != spec.fields.len() {
                problems.push(RejectReason::WrongFeatureCount {
                    expected: spec.fields.len(),
                    got: items.len(),
                });
            }
            // A short array is wrong for its length alone; its missing values are not named.
            (0..spec.fields.len().min(items.len()))
                .map(|position| items.get(position))
                .collect()
        }
        (FeatureForm::Array, _) => {
            problems.push(RejectReason::FeaturesNotAnArray);
            return None;
        }
    };
    let before = problems.len();
    let row: Vec<Cell> = spec
        .fields
        .iter()
        .zip(values)
        .filter_map(|(field, value)| {
            convert(field, value)
                .map_err(|problem| problems.push(problem))
                .ok()
        })
        .collect();
    (problems.len() == before).then_some(row)
}

/// A feature's value converted to its input's element type, by the documented rules
/// (`Inputs::set` in the service), or why it cannot be:
///
/// - float inputs take any number within the type's finite range, rounded to nearest (through
///   f64, as JSON numbers are read), and `null` or nothing for an optional column (NaN); a
///   column the signature types as an integer takes only integers (within int64, the range of
///   MLflow's `long`);
/// - integer inputs take numbers without a fraction (`2`, `2.0`, `2e0`) within the type's
///   range;
/// - bool inputs take `true` and `false`; string inputs take strings without NUL;
/// - a left-out column is missing, unless it is optional and its type has a missing value
///   (NaN: the float types).
fn convert(field: &RefField, value: Option<&Value>) -> Result<Cell, RejectReason> {
    let name = || field.name.clone();
    let nan = || match field.element {
        ElementType::Float64 => Cell::F64(f64::NAN),
        _ => Cell::F32(f32::NAN),
    };
    let is_float = matches!(field.element, ElementType::Float32 | ElementType::Float64);
    let Some(value) = value else {
        return match is_float && !field.required {
            true => Ok(nan()),
            false => Err(RejectReason::MissingFeature(name())),
        };
    };
    match field.element {
        ElementType::Float32 | ElementType::Float64 => {
            let number = match value {
                Value::Null if !field.required => return Ok(nan()),
                Value::Number(number) => number,
                _ => return Err(RejectReason::NonNumericFeature(name())),
            };
            if field.integral {
                whole_number(number, &field.name)?;
            }
            let wide = number.as_f64().expect("a JSON number is an f64");
            if field.element == ElementType::Float64 {
                return Ok(Cell::F64(wide));
            }
            let narrow = wide as f32;
            if narrow.is_infinite() {
                return Err(RejectReason::NonFiniteFeature {
                    name: name(),
                    element: ElementType::Float32,
                });
            }
            Ok(Cell::F32(narrow))
        }
        ElementType::Int64 | ElementType::Int32 => {
            let Value::Number(number) = value else {
                return Err(RejectReason::NonNumericFeature(name()));
            };
            let whole = whole_number(number, &field.name).map_err(|reason| match reason {
                // Beyond int64 is beyond the input's own type too, and named as such.
                RejectReason::IntegerOutOfRange { name, .. } => RejectReason::IntegerOutOfRange {
                    name,
                    element: field.element,
                },
                other => other,
            })?;
            if field.element == ElementType::Int64 {
                return Ok(Cell::I64(whole));
            }
            match i32::try_from(whole) {
                Ok(whole) => Ok(Cell::I32(whole)),
                Err(_) => Err(RejectReason::IntegerOutOfRange {
                    name: name(),
                    element: ElementType::Int32,
                }),
            }
        }
        ElementType::Bool => match value {
            Value::Bool(value) => Ok(Cell::Bool(*value)),
            _ => Err(RejectReason::NotABoolean(name())),
        },
        ElementType::String => match value {
            Value::String(text) if text.contains('\0') => Err(RejectReason::StringWithNul(name())),
            Value::String(text) => Ok(Cell::Str(text.clone())),
            _ => Err(RejectReason::NotAString(name())),
        },
    }
}

/// The int64 a JSON number is, if it is a whole number within int64.
fn whole_number(number: &Number, name: &str) -> Result<i64, RejectReason> {
    let out_of_range = || RejectReason::IntegerOutOfRange {
        name: name.to_owned(),
        element: ElementType::Int64,
    };
    if let Some(whole) = number.as_i64() {
        return Ok(whole);
    }
    if number.is_u64() {
        return Err(out_of_range());
    }
    let value = number.as_f64().expect("a JSON number is an f64");
    if value.trunc() != value {
        return Err(RejectReason::NotAnInteger(name.to_owned()));
    }
    // i64::MAX + 1 is 2^63; -2^63 as a float comes only from an integer written beyond i64
    // (i64::MIN itself is read as an i64), so it is out of range too.
    let bound = 2f64.powi(63);
    if value <= -bound || value >= bound {
        return Err(out_of_range());
    }
    Ok(value as i64)
}

/// The `pred_id` of a payload as the JSON text it has.
#[derive(serde::Deserialize)]
struct PredIdText<'a> {
    #[serde(borrow)]
    pred_id: &'a RawValue,
}

/// The error [`Strict`] fails with on a repeated key.
const REPEATED_KEY: &str = "repeated key";

/// A JSON value in which no object repeats a key, so that the reference never has to guess
/// which of two values counts.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without duplicate keys")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Strict, E> {
        Number::from_f64(value)
            .map(|number| Strict(Value::Number(number)))
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(value.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut values = Vec::new();
        while let Some(Strict(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Strict(Value::Array(values)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some((key, Strict(value))) = map.next_entry::<String, Strict>()? {
            if object.insert(key, value).is_some() {
                return Err(de::Error::custom(REPEATED_KEY));
            }
        }
        Ok(Strict(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------------------------
// Tree ensembles

/// ONNX Runtime for [`check_trees`], loaded once from `ORT_DYLIB_PATH` (`scripts/fuzz.sh` sets
/// it); `None` without it, and the ONNX Runtime half of the check is skipped.
fn onnx_runtime() -> Option<&'static bike_prediction::model::OnnxRuntime> {
    static RUNTIME: OnceLock<Option<bike_prediction::model::OnnxRuntime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let path = std::env::var_os("ORT_DYLIB_PATH")?;
            bike_prediction::model::OnnxRuntime::load(std::path::Path::new(&path)).ok()
        })
        .as_ref()
}

/// The fuzzer's bytes, read front to back; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    /// A value: mostly one of the ones trees meet at their edges (equal, adjacent, zero of
    /// either sign, infinite, NaN), else any four bytes.
    fn value(&mut self) -> f32 {
        const EDGES: [f32; 12] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            0.1,
            1e-45,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3.0,
        ];
        let pick = self.byte();
        match pick < 200 {
            true => EDGES[usize::from(pick) % EDGES.len()],
            false => f32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()]),
        }
    }
}

/// A `TreeEnsembleRegressor`'s attributes and rows from the fuzzer's bytes. A header byte says
/// whether the trees are well formed (node ids in order, children inside the tree) or anything
/// goes (duplicate ids, missing or cyclic children, negative features, unknown modes, target
/// ids out of range), which must all be refused.
pub fn trees_input(bytes: &[u8]) -> (bike_prediction::trees::ensemble::Attributes, Vec<f32>) {
    let mut b = Bytes(bytes);
    let header = b.byte();
    let well_formed = header & 1 == 0;
    let targets = 1 + i64::from(b.byte() % 3);
    const AGGREGATES: [&[u8]; 5] = [b"SUM", b"AVERAGE", b"MIN", b"MAX", b"MEDIAN"];
    const MODES: [&[u8]; 8] = [
        b"BRANCH_LEQ",
        b"BRANCH_LT",
        b"BRANCH_GTE",
        b"BRANCH_GT",
        b"BRANCH_EQ",
        b"BRANCH_NEQ",
        b"LEAF",
        b"BRANCH_MEMBER",
    ];
    let mut a = bike_prediction::trees::ensemble::Attributes {
        n_targets: Some(targets),
        aggregate_function: Some(AGGREGATES[usize::from(b.byte()) % AGGREGATES.len()].to_vec()),
        ..Default::default()
    };
    let base = match b.byte() % 4 {
        0 => 0,
        1 => 1,
        2 => targets as usize,
        _ => 2,
    };
    a.base_values = (0..base).map(|_| b.value()).collect();
    let trees = 1 + b.byte() % 4;
    for tree in 0..trees {
        // Well formed: a tree grown in preorder, each inner node's children after it. Otherwise
        // up to 16 nodes of any ids and children.
        let mut shape: Vec<(i64, Option<(i64, i64)>)> = Vec::new();
        match well_formed {
            true => grow(&mut b, &mut shape, 0),
            false => {
                for _ in 0..1 + b.byte() % 16 {
                    let id = i64::from(b.byte() % 18);
                    let children = (i64::from(b.byte() % 20) - 2, i64::from(b.byte() % 20) - 2);
                    shape.push((id, (b.byte() % 3 != 0).then_some(children)));
                }
            }
        }
        for (node, children) in shape {
            let shape_byte = b.byte();
            let mode = match children {
                None if well_formed => b"LEAF".as_slice(),
                _ if well_formed => MODES[usize::from(shape_byte) % 6],
                _ => MODES[usize::from(shape_byte) % MODES.len()],
            };
            let (no, yes) = children.unwrap_or((0, 0));
            a.nodes_treeids.push(i64::from(tree));
            a.nodes_nodeids.push(node);
            a.nodes_featureids
                .push(i64::from(b.byte() % 6) - i64::from(!well_formed));
            a.nodes_modes.push(mode.to_vec());
            a.nodes_values.push(b.value());
            a.nodes_truenodeids.push(yes);
            a.nodes_falsenodeids.push(no);
            a.nodes_missing_value_tracks_true
                .push(i64::from(b.byte() % 2));
            if mode == b"LEAF" || !well_formed {
                for _ in 0..1 + b.byte() % 2 {
                    a.target_treeids.push(i64::from(tree));
                    a.target_nodeids.push(node);
                    a.target_ids
                        .push(i64::from(b.byte()) % (targets + i64::from(!well_formed)));
                    a.target_weights.push(b.value());
                }
            }
        }
    }
    let rows = b.0.len().min(256);
    let values = (0..rows).map(|_| b.value()).collect();
    (a, values)
}

/// Grows a tree in preorder into `shape` (node ids in order; an inner node's `(false, true)`
/// children), up to depth 5, a byte deciding each node's kind.
fn grow(b: &mut Bytes<'_>, shape: &mut Vec<(i64, Option<(i64, i64)>)>, depth: u32) {
    let id = shape.len() as i64;
    shape.push((id, None));
    if depth >= 5 || b.byte() % 3 == 0 {
        return;
    }
    let no = shape.len() as i64;
    grow(b, shape, depth + 1);
    let yes = shape.len() as i64;
    grow(b, shape, depth + 1);
    if let Some(node) = shape.get_mut(id as usize) {
        node.1 = Some((no, yes));
    }
}

/// The target `trees`: the fuzzer's bytes as a tree ensemble and rows ([`trees_input`]).
/// Compiled and evaluated directly, nothing may panic or hang; through ONNX Runtime (with
/// `ORT_DYLIB_PATH`), the service's kernel is refused, never because the probe found the
/// kernels differ, or it gives ONNX Runtime's bits on the rows.
pub fn check_trees(bytes: &[u8]) {
    use bike_prediction::trees::{self, Outcome, ensemble::Ensemble};
    let (attributes, values) = trees_input(bytes);
    let Ok(ensemble) = Ensemble::regressor(&attributes) else {
        return;
    };
    let width = ensemble.width();
    let rows = values.len() / width;
    let x = &values[..rows * width];
    let mut out = vec![0.0f32; rows * ensemble.targets()];
    ensemble.predict(x, width, &mut out);

    let Some(runtime) = onnx_runtime() else {
        return;
    };
    let onnx = trees::regressor_model(&attributes);
    let (prepared, outcomes) = trees::prepare(&onnx, runtime.environment());
    let Some(prepared) = prepared else {
        for (_, outcome) in outcomes {
            if let Outcome::Left(reason) = outcome {
                assert!(!reason.contains("differ"), "{reason}");
            }
        }
        return;
    };
    if rows == 0 {
        return;
    }
    let reference = trees::run(&onnx, None, runtime.environment(), x, width)
        .expect("ONNX Runtime runs the node the probe ran");
    let ours = trees::run(
        &prepared.onnx,
        Some(&prepared),
        runtime.environment(),
        x,
        width,
    )
    .expect("the rewritten model runs");
    assert_eq!(ours.len(), reference.len());
    for (ours, theirs) in ours.iter().zip(&reference) {
        assert!(
            ours.same_bits(theirs),
            "{ours:?} against ONNX Runtime's {theirs:?}"
        );
    }
}
