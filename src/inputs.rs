//! The model's input tensors: how a record's features bind to them, and the typed buffers one
//! batch fills.
//!
//! At load, [`InputLayout::bind`] matches the MLmodel signature to the ONNX graph's inputs:
//!
//! - a column-based signature and one `[N, F]` input: the columns, in the signature's order,
//!   are the `F` columns of that input;
//! - a column-based signature and one input per column (`[N, 1]` or `[N]`), matched by name,
//!   as skl2onnx converts DataFrame pipelines;
//! - a tensor-based signature and one `[N, F]` input: a record's `features` is an array of the
//!   `F` values in column order.
//!
//! Each record's features become one row of every input. A JSON value is converted to the
//! element type of the ONNX input it feeds, exactly or not at all: see [`InputLayout`] and
//! [`Inputs::set`] for the rules, which follow MLflow's pyfunc schema enforcement (a `double`
//! column feeds a float32 input; an integer column takes only integers).

use std::fmt;
use std::ops::Range;

use crate::artifact::{ColumnSpec, InputSignature, SignatureType};
use crate::event::RejectReason;

/// The element types of ONNX inputs the service can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// `tensor(float)`.
    Float32,
    /// `tensor(double)`.
    Float64,
    /// `tensor(int64)`.
    Int64,
    /// `tensor(int32)`.
    Int32,
    /// `tensor(bool)`.
    Bool,
    /// `tensor(string)`.
    String,
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Float32 => "float32",
            Self::Float64 => "float64",
            Self::Int64 => "int64",
            Self::Int32 => "int32",
            Self::Bool => "bool",
            Self::String => "string",
        })
    }
}

impl ElementType {
    /// Whether a value of this signature type can feed an input of this element type: floats
    /// feed float inputs, integers feed integer and float inputs, booleans and strings only
    /// their own kind.
    fn accepts(self, kind: SignatureType) -> bool {
        use SignatureType as S;
        match self {
            Self::Float32 | Self::Float64 => {
                matches!(kind, S::Float | S::Double | S::Integer | S::Long)
            }
            Self::Int64 | Self::Int32 => matches!(kind, S::Integer | S::Long),
            Self::Bool => kind == S::Boolean,
            Self::String => kind == S::String,
        }
    }

    /// Whether the type has a value for "missing" (NaN), so that an optional column may be
    /// left out.
    pub fn has_missing_value(self) -> bool {
        matches!(self, Self::Float32 | Self::Float64)
    }
}

/// An input of the ONNX graph as the session declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphInput {
    /// The input's name.
    pub name: String,
    /// Its element type, or `None` (with a description) for a type the service cannot fill.
    pub element: Result<ElementType, String>,
    /// Its shape; `-1` for a dimension the graph leaves open.
    pub shape: Vec<i64>,
}

/// One value a record provides: a column of a column-based signature, or a position in the
/// `features` array of a tensor-based one.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The column name (the key in `features`), or `features[i]` for a position.
    pub name: String,
    /// The element type of the input it feeds.
    pub element: ElementType,
    /// The signature declares integers (`integer`, `long`, `int32`, `int64`): a number with a
    /// fraction is rejected even for a float input.
    pub integral: bool,
    /// Whether a record must provide it.
    pub required: bool,
    /// Which input it feeds, as an index into [`InputLayout::inputs`].
    pub input: usize,
    /// Its column within that input's row.
    pub column: usize,
}

/// One ONNX input the service fills: `[N, width]`, or `[N]` when `width` is 1 and the graph
/// declares one dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// The ONNX input's name.
    pub name: String,
    /// Its element type.
    pub element: ElementType,
    /// Values per row.
    pub width: usize,
    /// Whether the graph declares `[N]` rather than `[N, width]`.
    pub vector: bool,
}

/// How a record's `features` carries its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureForm {
    /// An object keyed by column name (column-based signature).
    Object,
    /// An array of values in column order (tensor-based signature).
    Array,
}

/// How record features fill the model's inputs; built once at load.
#[derive(Debug, Clone, PartialEq)]
pub struct InputLayout {
    /// Object or array.
    pub form: FeatureForm,
    /// What a record provides, in the signature's order.
    pub fields: Vec<Field>,
    /// The ONNX inputs, in the graph's order.
    pub inputs: Vec<InputSpec>,
    /// The graph fixes its batch size to one row (`[1, F]`, as `torch.onnx.export` writes
    /// without `dynamic_axes`): each run takes one row.
    pub one_row_per_run: bool,
    /// The field names, for looking keys up.
    names: FieldNames,
}

/// The names of a layout's fields, and how a key is looked up among them: by scanning them
/// for the few columns most models have, by hashing for wide models, where scanning every
/// name for every key would make decoding quadratic in the number of columns.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldNames {
    names: Vec<String>,
    index: Option<std::collections::HashMap<String, usize>>,
}

/// Fields beyond which keys are looked up by hashing.
const SCANNED_FIELDS: usize = 16;

impl FieldNames {
    /// The names, in field order.
    pub fn new(names: Vec<String>) -> Self {
        let index = (names.len() > SCANNED_FIELDS).then(|| {
            let mut index = std::collections::HashMap::with_capacity(names.len());
            for (position, name) in names.iter().enumerate() {
                index.entry(name.clone()).or_insert(position);
            }
            index
        });
        Self { names, index }
    }

    /// The field a key names, if any. Keys are compared as bytes: a key that is not UTF-8
    /// cannot be a name. Inlined into the payload parsers' loops, where a call per key would
    /// cost more than the scan.
    #[inline(always)]
    pub fn position(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            None => self.names.iter().position(|name| name.as_bytes() == key),
            Some(index) => index.get(std::str::from_utf8(key).ok()?).copied(),
        }
    }

    /// The names, in field order.
    pub fn as_slice(&self) -> &[String] {
        &self.names
    }
}

impl InputLayout {
    /// Binds the signature to the graph's inputs, or says what does not fit.
    pub fn bind(signature: &InputSignature, graph: &[GraphInput]) -> Result<Self, String> {
        let mut layout = match signature {
            InputSignature::Columns(columns) => bind_columns(columns, graph)?,
            InputSignature::Tensor { dtype, width } => bind_tensor(*dtype, *width, graph)?,
        };
        if let Some(fixed) = graph
            .iter()
            .find(|input| input.shape.first().is_some_and(|&rows| rows > 1))
        {
            return Err(format!(
                "input {} fixes the batch to {} rows; export the model with a dynamic first \
                 dimension (skl2onnx: `[None, F]`; torch.onnx.export: `dynamic_axes`)",
                describe_input(fixed),
                fixed.shape.first().copied().unwrap_or_default()
            ));
        }
        layout.one_row_per_run = graph.iter().any(|input| input.shape.first() == Some(&1));
        Ok(layout)
    }

    /// A layout of float32 columns filling one `[N, F]` input named `input`: the bundled
    /// models' layout, and a short way to build one in tests and benches.
    pub fn float_columns<S: AsRef<str>>(columns: &[S]) -> Self {
        let fields = columns
            .iter()
            .enumerate()
            .map(|(column, name)| Field {
                name: name.as_ref().to_owned(),
                element: ElementType::Float32,
                integral: false,
                required: true,
                input: 0,
                column,
            })
            .collect();
        Self::new(
            FeatureForm::Object,
            fields,
            vec![InputSpec {
                name: "input".into(),
                element: ElementType::Float32,
                width: columns.len(),
                vector: false,
            }],
        )
    }

    /// The layout of a graph with one `[N, 1]` input per column, bound to a column signature,
    /// as skl2onnx converts a DataFrame pipeline: each column is (name, signature type, the
    /// input's element type, required). A short way to build one in tests and fuzzing.
    pub fn per_column(
        columns: &[(&str, SignatureType, ElementType, bool)],
    ) -> Result<Self, String> {
        let signature = InputSignature::Columns(
            columns
                .iter()
                .map(|&(name, kind, _, required)| ColumnSpec {
                    name: name.into(),
                    kind,
                    required,
                })
                .collect(),
        );
        let graph: Vec<GraphInput> = columns
            .iter()
            .map(|&(name, _, element, _)| GraphInput {
                name: name.into(),
                element: Ok(element),
                shape: vec![-1, 1],
            })
            .collect();
        Self::bind(&signature, &graph)
    }

    fn new(form: FeatureForm, fields: Vec<Field>, inputs: Vec<InputSpec>) -> Self {
        let names = FieldNames::new(fields.iter().map(|field| field.name.clone()).collect());
        Self {
            form,
            fields,
            inputs,
            one_row_per_run: false,
            names,
        }
    }

    /// The field names, in order.
    pub fn names(&self) -> &[String] {
        self.names.as_slice()
    }

    /// The field names, for looking keys up.
    pub fn field_names(&self) -> &FieldNames {
        &self.names
    }

    /// Whether the whole row is one float32 input filled by float columns in order, so that
    /// the fast payload path can write it directly.
    pub fn is_plain_float_row(&self) -> bool {
        self.form == FeatureForm::Object
            && matches!(self.inputs.as_slice(), [input] if input.element == ElementType::Float32)
            && self
                .fields
                .iter()
                .enumerate()
                .all(|(position, field)| field.column == position && !field.integral)
    }

    /// Empty buffers for a batch of up to `rows` records.
    pub fn buffers(&self, rows: usize) -> Inputs {
        let buffers = self
            .inputs
            .iter()
            .map(|input| Buffer::with_capacity(input.element, rows * input.width))
            .collect();
        Inputs {
            rows: 0,
            buffers,
            text: String::new(),
        }
    }
}

/// Describes the graph's inputs for messages: `name (float32 [-1, 4])`.
fn describe(graph: &[GraphInput]) -> String {
    if graph.is_empty() {
        return "none".into();
    }
    let inputs: Vec<String> = graph.iter().map(describe_input).collect();
    inputs.join(", ")
}

fn describe_input(input: &GraphInput) -> String {
    let element = match &input.element {
        Ok(element) => element.to_string(),
        Err(other) => other.clone(),
    };
    format!("`{}` ({element} {:?})", input.name, input.shape)
}

/// The number of values per row of an input of this shape: `[N]` is 1, `[N, F]` is F (`None`
/// when the graph leaves F open), anything else cannot be filled row by row.
fn row_width(shape: &[i64]) -> Result<Option<usize>, ()> {
    match shape {
        [_] => Ok(Some(1)),
        [_, width] if *width > 0 => Ok(Some(*width as usize)),
        [_, _] => Ok(None),
        _ => Err(()),
    }
}

fn element_of(input: &GraphInput) -> Result<ElementType, String> {
    input.element.clone().map_err(|other| {
        format!(
            "input {} has element type {other}; the service fills float32, float64, int64, \
             int32, bool and string inputs",
            describe_input(input)
        )
    })
}

fn integral(kind: SignatureType) -> bool {
    matches!(kind, SignatureType::Integer | SignatureType::Long)
}

fn check_accepts(
    column: &ColumnSpec,
    input: &GraphInput,
    element: ElementType,
) -> Result<(), String> {
    if element.accepts(column.kind) {
        return Ok(());
    }
    Err(format!(
        "the signature's column `{}` is `{}`, which cannot feed input {}",
        column.name,
        column.kind.name(),
        describe_input(input)
    ))
}

fn bind_columns(columns: &[ColumnSpec], graph: &[GraphInput]) -> Result<InputLayout, String> {
    let names: Vec<&str> = columns.iter().map(|column| column.name.as_str()).collect();
    let by_name = graph
        .iter()
        .all(|input| names.contains(&input.name.as_str()));
    match graph {
        [] => Err("the ONNX graph has no inputs".into()),
        // One input holding every column, unless it is itself one of several columns.
        [input] if !(by_name && columns.len() > 1) => {
            let element = element_of(input)?;
            let width = row_width(&input.shape).map_err(|()| {
                format!(
                    "input {} is not [N, F]: the service fills one row per record",
                    describe_input(input)
                )
            })?;
            if width.is_some_and(|width| width != columns.len())
                || (input.shape.len() == 1 && columns.len() != 1)
            {
                return Err(format!(
                    "input {} does not have the signature's {} columns {names:?} \
                     (expected [N, {}])",
                    describe_input(input),
                    columns.len(),
                    columns.len()
                ));
            }
            let mut fields = Vec::with_capacity(columns.len());
            for (position, column) in columns.iter().enumerate() {
                check_accepts(column, input, element)?;
                fields.push(Field {
                    name: column.name.clone(),
                    element,
                    integral: integral(column.kind),
                    required: column.required,
                    input: 0,
                    column: position,
                });
            }
            let spec = InputSpec {
                name: input.name.clone(),
                element,
                width: columns.len(),
                vector: input.shape.len() == 1,
            };
            Ok(InputLayout::new(FeatureForm::Object, fields, vec![spec]))
        }
        _ => {
            let mut fields = Vec::new();
            let mut inputs = Vec::with_capacity(graph.len());
            for (index, input) in graph.iter().enumerate() {
                let Some(column) = columns.iter().find(|column| column.name == input.name) else {
                    return Err(format!(
                        "the graph has inputs {}; input `{}` has no column of that name in the \
                         signature's columns {names:?}",
                        describe(graph),
                        input.name
                    ));
                };
                let element = element_of(input)?;
                if row_width(&input.shape) != Ok(Some(1)) && row_width(&input.shape) != Ok(None) {
                    return Err(format!(
                        "input {} is fed by the one column `{}`, so it must be [N, 1] or [N]",
                        describe_input(input),
                        column.name
                    ));
                }
                check_accepts(column, input, element)?;
                inputs.push(InputSpec {
                    name: input.name.clone(),
                    element,
                    width: 1,
                    vector: input.shape.len() == 1,
                });
                fields.push(Field {
                    name: column.name.clone(),
                    element,
                    integral: integral(column.kind),
                    required: column.required,
                    input: index,
                    column: 0,
                });
            }
            // In the signature's order, which is the order a reader of the MLmodel expects in
            // messages; columns no input uses are not asked of records.
            fields.sort_by_key(|field| names.iter().position(|name| *name == field.name));
            Ok(InputLayout::new(FeatureForm::Object, fields, inputs))
        }
    }
}

fn bind_tensor(
    dtype: SignatureType,
    width: Option<usize>,
    graph: &[GraphInput],
) -> Result<InputLayout, String> {
    let [input] = graph else {
        return Err(format!(
            "the signature is one tensor, but the graph has inputs {}: the service fills one \
             [N, F] input from a record's `features` array",
            describe(graph)
        ));
    };
    let element = element_of(input)?;
    let graph_width = match row_width(&input.shape) {
        Ok(width) if input.shape.len() == 2 => width,
        _ => {
            return Err(format!(
                "input {} is not [N, F]: the service fills one row per record",
                describe_input(input)
            ));
        }
    };
    let width = match (width, graph_width) {
        (Some(signature), Some(graph)) if signature != graph => {
            return Err(format!(
                "the signature's tensor is [-1, {signature}] but input {} is [N, {graph}]",
                describe_input(input)
            ));
        }
        (Some(width), _) | (None, Some(width)) => width,
        (None, None) => {
            return Err(format!(
                "neither the signature nor input {} says how many values a row has",
                describe_input(input)
            ));
        }
    };
    if !element.accepts(dtype) {
        return Err(format!(
            "the signature's tensor is `{}`, which cannot feed input {}",
            dtype.name(),
            describe_input(input)
        ));
    }
    let fields = (0..width)
        .map(|column| Field {
            name: format!("features[{column}]"),
            element,
            integral: integral(dtype),
            required: true,
            input: 0,
            column,
        })
        .collect();
    let spec = InputSpec {
        name: input.name.clone(),
        element,
        width,
        vector: false,
    };
    Ok(InputLayout::new(FeatureForm::Array, fields, vec![spec]))
}

/// One batch's values for one ONNX input, row-major `[rows, width]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Buffer {
    /// float32 values.
    Float32(Vec<f32>),
    /// float64 values.
    Float64(Vec<f64>),
    /// int64 values.
    Int64(Vec<i64>),
    /// int32 values.
    Int32(Vec<i32>),
    /// bool values.
    Bool(Vec<bool>),
    /// Strings, as ranges of [`Inputs::text`].
    String(Vec<Range<usize>>),
}

impl Buffer {
    fn with_capacity(element: ElementType, capacity: usize) -> Self {
        match element {
            ElementType::Float32 => Self::Float32(Vec::with_capacity(capacity)),
            ElementType::Float64 => Self::Float64(Vec::with_capacity(capacity)),
            ElementType::Int64 => Self::Int64(Vec::with_capacity(capacity)),
            ElementType::Int32 => Self::Int32(Vec::with_capacity(capacity)),
            ElementType::Bool => Self::Bool(Vec::with_capacity(capacity)),
            ElementType::String => Self::String(Vec::with_capacity(capacity)),
        }
    }

    /// Appends one row of `width` placeholder values: NaN for floats, so that an optional
    /// column a record leaves out is missing as MLflow has it.
    #[inline]
    fn push_row(&mut self, width: usize) {
        match self {
            Self::Float32(values) => values.resize(values.len() + width, f32::NAN),
            Self::Float64(values) => values.resize(values.len() + width, f64::NAN),
            Self::Int64(values) => values.resize(values.len() + width, 0),
            Self::Int32(values) => values.resize(values.len() + width, 0),
            Self::Bool(values) => values.resize(values.len() + width, false),
            Self::String(values) => values.resize(values.len() + width, 0..0),
        }
    }

    fn truncate(&mut self, length: usize) {
        match self {
            Self::Float32(values) => values.truncate(length),
            Self::Float64(values) => values.truncate(length),
            Self::Int64(values) => values.truncate(length),
            Self::Int32(values) => values.truncate(length),
            Self::Bool(values) => values.truncate(length),
            Self::String(values) => values.truncate(length),
        }
    }
}

/// A feature value as read from the JSON, before conversion to its input's element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A JSON integer that fits an i64.
    Int(i64),
    /// A JSON integer beyond i64 but within u64.
    UInt(u64),
    /// Any other JSON number.
    Float(f64),
    /// A JSON string (unescaped).
    Str(&'a str),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// An array or an object.
    Composite,
}

/// The values of one batch for every input of the model, filled row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Rows written (records accepted).
    pub rows: usize,
    /// One buffer per input of the layout.
    pub buffers: Vec<Buffer>,
    /// The text of every string value, end to end.
    pub text: String,
}

impl Inputs {
    /// Starts the next row: every input gets a row of placeholders.
    #[inline]
    pub fn push_row(&mut self, layout: &InputLayout) {
        for (buffer, input) in self.buffers.iter_mut().zip(&layout.inputs) {
            buffer.push_row(input.width);
        }
    }

    /// Drops the row being written (its record was rejected).
    pub fn discard_row(&mut self, layout: &InputLayout, text_start: usize) {
        for (buffer, input) in self.buffers.iter_mut().zip(&layout.inputs) {
            buffer.truncate(self.rows * input.width);
        }
        self.text.truncate(text_start);
    }

    /// Keeps the row being written.
    pub fn finish_row(&mut self) {
        self.rows += 1;
    }

    /// The float32 values of the row being written, when the layout is one float32 input.
    pub fn plain_float_row(&mut self, layout: &InputLayout) -> Option<&mut [f32]> {
        let width = layout.inputs.first()?.width;
        match self.buffers.first_mut()? {
            Buffer::Float32(values) => values.get_mut(self.rows * width..),
            _ => None,
        }
    }

    /// Writes `value` into `field` of the row being written, converted to the field's element
    /// type, or says why it cannot be:
    ///
    /// - float inputs take any number within the type's finite range (rounded to nearest),
    ///   and `null` for an optional column (NaN); a column the signature types as an integer
    ///   (`integer` or `long`) takes only whole numbers within int64, as MLflow's `long`;
    /// - integer inputs take numbers without a fraction (`2` or `2.0`) within the type's range;
    /// - bool inputs take `true` and `false`; string inputs take strings (without NUL, which
    ///   ONNX Runtime's strings cannot hold).
    pub fn set(
        &mut self,
        layout: &InputLayout,
        field: usize,
        value: Value<'_>,
    ) -> Result<(), RejectReason> {
        let Some(spec) = layout.fields.get(field) else {
            return Ok(());
        };
        let width = layout.inputs.get(spec.input).map_or(1, |input| input.width);
        let index = self.rows * width + spec.column;
        let name = || spec.name.clone();
        let Some(buffer) = self.buffers.get_mut(spec.input) else {
            return Ok(());
        };
        // An integer column feeding a float input: whole numbers only (integer inputs check
        // that themselves, against their own range).
        let float_input = matches!(buffer, Buffer::Float32(_) | Buffer::Float64(_));
        if spec.integral && float_input && !matches!(value, Value::Null) {
            integer(value, ElementType::Int64, name)?;
        }
        match buffer {
            Buffer::Float32(values) => {
                let value = float(value, spec, name)? as f32;
                if !value.is_finite() && !value.is_nan() {
                    return Err(RejectReason::NonFiniteFeature {
                        name: name(),
                        element: ElementType::Float32,
                    });
                }
                put(values, index, value);
            }
            Buffer::Float64(values) => put(values, index, float(value, spec, name)?),
            Buffer::Int64(values) => put(values, index, integer(value, ElementType::Int64, name)?),
            Buffer::Int32(values) => {
                let value = integer(value, ElementType::Int32, name)?;
                let value = i32::try_from(value).map_err(|_| RejectReason::IntegerOutOfRange {
                    name: name(),
                    element: ElementType::Int32,
                })?;
                put(values, index, value);
            }
            Buffer::Bool(values) => match value {
                Value::Bool(value) => put(values, index, value),
                _ => return Err(RejectReason::NotABoolean(name())),
            },
            Buffer::String(values) => match value {
                Value::Str(text) if text.contains('\0') => {
                    return Err(RejectReason::StringWithNul(name()));
                }
                Value::Str(text) => {
                    let start = self.text.len();
                    self.text.push_str(text);
                    put(values, index, start..self.text.len());
                }
                _ => return Err(RejectReason::NotAString(name())),
            },
        }
        Ok(())
    }

    /// The strings of input `input` (a string input), in row-major order.
    pub fn strings(&self, input: usize) -> Vec<&str> {
        self.strings_in(input, 0..usize::MAX).collect()
    }

    /// The strings at positions `span` (row-major) of input `input`, a string input.
    pub fn strings_in(&self, input: usize, span: Range<usize>) -> impl Iterator<Item = &str> + '_ {
        let spans = match self.buffers.get(input) {
            Some(Buffer::String(spans)) => spans.as_slice(),
            _ => &[],
        };
        spans
            .iter()
            .skip(span.start)
            .take(span.end.saturating_sub(span.start))
            .map(|span| self.text.get(span.clone()).unwrap_or_default())
    }
}

fn put<T>(values: &mut [T], index: usize, value: T) {
    if let Some(slot) = values.get_mut(index) {
        *slot = value;
    }
}

/// A number as a float; `null` is NaN for an optional column.
fn float(value: Value<'_>, spec: &Field, name: impl Fn() -> String) -> Result<f64, RejectReason> {
    let value = match value {
        Value::Int(value) => value as f64,
        Value::UInt(value) => value as f64,
        Value::Float(value) => value,
        Value::Null if !spec.required => f64::NAN,
        _ => return Err(RejectReason::NonNumericFeature(name())),
    };
    Ok(value)
}

/// A number without a fraction, as an i64; `element` is the type named when it is beyond
/// even an i64.
fn integer(
    value: Value<'_>,
    element: ElementType,
    name: impl Fn() -> String,
) -> Result<i64, RejectReason> {
    // 2^63 as an f64: every f64 below it in magnitude with no fraction fits an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match value {
        Value::Int(value) => Ok(value),
        Value::Float(value) if value.fract() != 0.0 => Err(RejectReason::NotAnInteger(name())),
        // Exactly -2^63 as a float only comes from an integer written beyond i64 (one within
        // it is read as an i64), rounded: out of range.
        Value::Float(value) if value > -LIMIT && value < LIMIT => Ok(value as i64),
        Value::UInt(_) | Value::Float(_) => Err(RejectReason::IntegerOutOfRange {
            name: name(),
            element,
        }),
        _ => Err(RejectReason::NonNumericFeature(name())),
    }
}

#[cfg(test)]
mod tests;
