use super::*;

fn column(name: &str, kind: SignatureType) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        kind,
        required: true,
    }
}

fn input(name: &str, element: ElementType, shape: &[i64]) -> GraphInput {
    GraphInput {
        name: name.into(),
        element: Ok(element),
        shape: shape.to_vec(),
    }
}

fn columns(specs: &[(&str, SignatureType)]) -> InputSignature {
    InputSignature::Columns(
        specs
            .iter()
            .map(|(name, kind)| column(name, *kind))
            .collect(),
    )
}

use ElementType as E;
use SignatureType as S;

#[test]
fn one_matrix_input_takes_the_columns_in_signature_order() {
    let signature = columns(&[("t1", S::Double), ("hum", S::Long)]);
    let layout = InputLayout::bind(&signature, &[input("input", E::Float32, &[-1, 2])]).unwrap();
    assert_eq!(layout.form, FeatureForm::Object);
    assert_eq!(layout.names(), ["t1", "hum"]);
    assert_eq!(
        layout.inputs,
        [InputSpec {
            name: "input".into(),
            element: E::Float32,
            width: 2,
            vector: false
        }]
    );
    let columns: Vec<_> = layout.fields.iter().map(|f| (f.input, f.column)).collect();
    assert_eq!(columns, [(0, 0), (0, 1)]);
    assert!(!layout.fields[0].integral && layout.fields[1].integral);
    // A double column and a long column both feed a float32 matrix; the long one only with
    // integers, so the fast float path does not apply.
    assert!(!layout.is_plain_float_row());
    let plain = columns_layout(&[("t1", S::Double), ("t2", S::Float)]);
    assert!(plain.is_plain_float_row());
}

fn columns_layout(specs: &[(&str, SignatureType)]) -> InputLayout {
    let width = specs.len() as i64;
    InputLayout::bind(&columns(specs), &[input("x", E::Float32, &[-1, width])]).unwrap()
}

#[test]
fn one_input_per_column_is_matched_by_name_whatever_the_order() {
    let signature = columns(&[
        ("t1", S::Float),
        ("weather", S::String),
        ("hum", S::Long),
        ("unused", S::Double),
    ]);
    let graph = [
        input("hum", E::Int64, &[-1, 1]),
        input("weather", E::String, &[-1, 1]),
        input("t1", E::Float32, &[-1]),
    ];
    let layout = InputLayout::bind(&signature, &graph).unwrap();
    // Fields in the signature's order; a column no input uses is not asked of records.
    assert_eq!(layout.names(), ["t1", "weather", "hum"]);
    let inputs: Vec<_> = layout.fields.iter().map(|f| f.input).collect();
    assert_eq!(inputs, [2, 1, 0]);
    let vectors: Vec<_> = layout.inputs.iter().map(|i| i.vector).collect();
    assert_eq!(vectors, [false, false, true]);
    assert!(!layout.is_plain_float_row());
}

#[test]
fn a_single_column_model_with_a_single_input_binds_either_way() {
    let signature = columns(&[("x", S::Float)]);
    for graph in [
        input("x", E::Float32, &[-1, 1]),
        input("input", E::Float32, &[-1, 1]),
        input("input", E::Float32, &[-1]),
    ] {
        let layout = InputLayout::bind(&signature, std::slice::from_ref(&graph)).unwrap();
        assert_eq!(layout.names(), ["x"], "{graph:?}");
        assert_eq!(layout.inputs[0].width, 1);
    }
}

#[test]
fn tensor_signature_fills_one_matrix_from_an_array() {
    let signature = InputSignature::Tensor {
        dtype: S::Float,
        width: Some(4),
    };
    let layout = InputLayout::bind(&signature, &[input("input", E::Float32, &[-1, 4])]).unwrap();
    assert_eq!(layout.form, FeatureForm::Array);
    assert_eq!(layout.fields.len(), 4);
    assert_eq!(layout.fields[3].name, "features[3]");
    assert!(!layout.is_plain_float_row());
    // The graph may leave the width open; the signature says it, or the other way round.
    let open = InputLayout::bind(&signature, &[input("input", E::Float32, &[-1, -1])]).unwrap();
    assert_eq!(open.inputs[0].width, 4);
    let from_graph = InputSignature::Tensor {
        dtype: S::Double,
        width: None,
    };
    let layout = InputLayout::bind(&from_graph, &[input("input", E::Float64, &[-1, 3])]).unwrap();
    assert_eq!(layout.fields.len(), 3);
}

/// Each model the signature cannot fill is refused with a message naming what is missing.
#[test]
fn models_the_signature_cannot_fill_are_refused_with_what_is_missing() {
    let bike = columns(&[("t1", S::Float), ("t2", S::Float)]);
    let cases: Vec<(InputSignature, Vec<GraphInput>, &str)> = vec![
        (bike.clone(), vec![], "no inputs"),
        (
            bike.clone(),
            vec![input("input", E::Float32, &[-1, 3])],
            "does not have the signature's 2 columns",
        ),
        (
            bike.clone(),
            vec![input("input", E::Float32, &[-1, 2, 2])],
            "is not [N, F]",
        ),
        (
            bike.clone(),
            vec![
                input("t1", E::Float32, &[-1, 1]),
                input("wind", E::Float32, &[-1, 1]),
            ],
            "input `wind` has no column of that name",
        ),
        (
            bike.clone(),
            vec![
                input("t1", E::Float32, &[-1, 1]),
                input("t2", E::Float32, &[-1, 3]),
            ],
            "must be [N, 1] or [N]",
        ),
        (
            bike.clone(),
            vec![GraphInput {
                name: "input".into(),
                element: Err("Float16".into()),
                shape: vec![-1, 2],
            }],
            "element type Float16",
        ),
        (
            columns(&[("weather", S::String)]),
            vec![input("weather", E::Float32, &[-1, 1])],
            "column `weather` is `string`, which cannot feed input `weather` (float32",
        ),
        (
            columns(&[("t1", S::Double)]),
            vec![input("t1", E::Int64, &[-1, 1])],
            "column `t1` is `double`",
        ),
        (
            columns(&[("flag", S::Boolean)]),
            vec![input("flag", E::Float32, &[-1, 1])],
            "column `flag` is `boolean`",
        ),
        (
            InputSignature::Tensor {
                dtype: S::Float,
                width: Some(4),
            },
            vec![input("input", E::Float32, &[-1, 5])],
            "tensor is [-1, 4] but input `input` (float32 [-1, 5]) is [N, 5]",
        ),
        (
            InputSignature::Tensor {
                dtype: S::Float,
                width: None,
            },
            vec![input("input", E::Float32, &[-1, -1])],
            "says how many values a row has",
        ),
        (
            InputSignature::Tensor {
                dtype: S::Float,
                width: Some(2),
            },
            vec![
                input("a", E::Float32, &[-1, 2]),
                input("b", E::Float32, &[-1, 2]),
            ],
            "the signature is one tensor, but the graph has inputs `a`",
        ),
        (
            InputSignature::Tensor {
                dtype: S::String,
                width: Some(2),
            },
            vec![input("input", E::Float32, &[-1, 2])],
            "tensor is `string`",
        ),
    ];
    for (signature, graph, message) in cases {
        let error = InputLayout::bind(&signature, &graph).unwrap_err();
        assert!(error.contains(message), "{message}: {error}");
    }
}

/// The row-0 value `value` gives for one field of element type `element`, or the reason.
fn convert(
    element: ElementType,
    integral: bool,
    required: bool,
    value: Value<'_>,
) -> Result<Inputs, RejectReason> {
    let layout = InputLayout::new(
        FeatureForm::Object,
        vec![Field {
            name: "x".into(),
            element,
            integral,
            required,
            input: 0,
            column: 0,
        }],
        vec![InputSpec {
            name: "x".into(),
            element,
            width: 1,
            vector: false,
        }],
    );
    let mut inputs = layout.buffers(1);
    inputs.push_row(&layout);
    inputs.set(&layout, 0, value)?;
    inputs.finish_row();
    Ok(inputs)
}

fn ok(element: ElementType, value: Value<'_>) -> Buffer {
    convert(element, false, true, value)
        .unwrap()
        .buffers
        .remove(0)
}

fn rejected(element: ElementType, integral: bool, value: Value<'_>) -> RejectReason {
    convert(element, integral, true, value).unwrap_err()
}

#[test]
fn numbers_feed_float_inputs_rounded_to_the_input_type() {
    assert_eq!(
        ok(E::Float32, Value::Float(0.1)),
        Buffer::Float32(vec![0.1])
    );
    assert_eq!(ok(E::Float32, Value::Int(-3)), Buffer::Float32(vec![-3.0]));
    assert_eq!(
        ok(E::Float64, Value::Float(0.1)),
        Buffer::Float64(vec![0.1])
    );
    assert_eq!(
        ok(E::Float64, Value::UInt(u64::MAX)),
        Buffer::Float64(vec![u64::MAX as f64])
    );
    assert_eq!(
        ok(E::Float64, Value::Float(1e300)),
        Buffer::Float64(vec![1e300])
    );
    assert_eq!(
        rejected(E::Float32, false, Value::Float(1e300)),
        RejectReason::NonFiniteFeature {
            name: "x".into(),
            element: E::Float32
        }
    );
}

#[test]
fn integers_feed_integer_inputs_exactly_or_not_at_all() {
    assert_eq!(
        ok(E::Int64, Value::Int(i64::MIN)),
        Buffer::Int64(vec![i64::MIN])
    );
    assert_eq!(ok(E::Int64, Value::Float(2.0)), Buffer::Int64(vec![2]));
    assert_eq!(
        ok(E::Int64, Value::Float(-1e18)),
        Buffer::Int64(vec![-1_000_000_000_000_000_000])
    );
    assert_eq!(ok(E::Int32, Value::Int(-7)), Buffer::Int32(vec![-7]));
    assert_eq!(
        rejected(E::Int64, false, Value::Float(2.5)),
        RejectReason::NotAnInteger("x".into())
    );
    for too_big in [
        Value::UInt(1 << 63),
        Value::Float(1e19),
        Value::Float(-1e19),
    ] {
        assert_eq!(
            rejected(E::Int64, false, too_big),
            RejectReason::IntegerOutOfRange {
                name: "x".into(),
                element: E::Int64
            },
            "{too_big:?}"
        );
    }
    assert_eq!(
        rejected(E::Int32, false, Value::Int(1 << 31)),
        RejectReason::IntegerOutOfRange {
            name: "x".into(),
            element: E::Int32
        }
    );
    // An integer column of the signature feeding a float input takes only integers too.
    assert_eq!(
        rejected(E::Float32, true, Value::Float(2.5)),
        RejectReason::NotAnInteger("x".into())
    );
    assert!(convert(E::Float32, true, true, Value::Float(2.0)).is_ok());
}

#[test]
fn values_of_the_wrong_kind_are_rejected_with_their_own_reason() {
    let name = || "x".to_owned();
    for element in [E::Float32, E::Float64, E::Int64, E::Int32] {
        for value in [
            Value::Str("2"),
            Value::Bool(true),
            Value::Null,
            Value::Composite,
        ] {
            assert_eq!(
                rejected(element, false, value),
                RejectReason::NonNumericFeature(name()),
                "{element} {value:?}"
            );
        }
    }
    for value in [
        Value::Int(1),
        Value::Float(0.0),
        Value::Str("true"),
        Value::Null,
    ] {
        assert_eq!(
            rejected(E::Bool, false, value),
            RejectReason::NotABoolean(name()),
            "{value:?}"
        );
    }
    for value in [
        Value::Int(1),
        Value::Float(1.5),
        Value::Bool(false),
        Value::Null,
        Value::Composite,
    ] {
        assert_eq!(
            rejected(E::String, false, value),
            RejectReason::NotAString(name()),
            "{value:?}"
        );
    }
    assert_eq!(
        rejected(E::String, false, Value::Str("a\0b")),
        RejectReason::StringWithNul(name())
    );
    assert_eq!(ok(E::Bool, Value::Bool(true)), Buffer::Bool(vec![true]));
}

#[test]
fn strings_are_kept_end_to_end_in_one_buffer() {
    let inputs = convert(E::String, false, true, Value::Str("cloudy/misty é")).unwrap();
    assert_eq!(inputs.strings(0), ["cloudy/misty é"]);
}

#[test]
fn null_is_missing_for_an_optional_float_column_only() {
    let inputs = convert(E::Float32, false, false, Value::Null).unwrap();
    assert!(matches!(&inputs.buffers[0], Buffer::Float32(values) if values[0].is_nan()));
    let inputs = convert(E::Float64, true, false, Value::Null).unwrap();
    assert!(matches!(&inputs.buffers[0], Buffer::Float64(values) if values[0].is_nan()));
    assert_eq!(
        convert(E::Int64, false, false, Value::Null).unwrap_err(),
        RejectReason::NonNumericFeature("x".into())
    );
}

#[test]
fn a_discarded_row_leaves_nothing_behind() {
    let signature = columns(&[("a", S::String), ("b", S::Long)]);
    let graph = [
        input("a", E::String, &[-1, 1]),
        input("b", E::Int64, &[-1, 1]),
    ];
    let layout = InputLayout::bind(&signature, &graph).unwrap();
    let mut inputs = layout.buffers(2);
    inputs.push_row(&layout);
    inputs.set(&layout, 0, Value::Str("kept")).unwrap();
    inputs.set(&layout, 1, Value::Int(1)).unwrap();
    inputs.finish_row();
    let text = inputs.text.len();
    inputs.push_row(&layout);
    inputs.set(&layout, 0, Value::Str("dropped")).unwrap();
    inputs.discard_row(&layout, text);
    assert_eq!(inputs.rows, 1);
    assert_eq!(inputs.strings(0), ["kept"]);
    assert_eq!(inputs.buffers[1], Buffer::Int64(vec![1]));
    assert_eq!(inputs.text, "kept");
}
