//! Reading the model's outputs: a regressor's values, or a classifier's label and
//! probabilities.
//!
//! - **Regressor**: the first output is a float tensor `[N]`, `[N, 1]` (one value per row) or
//!   `[N, T]` (T targets).
//! - **Classifier**: an int64 or string label tensor `[N]`, as skl2onnx, onnxmltools and
//!   LightGBM write it, and optionally the class probabilities, either as ZipMap's sequence of
//!   maps (class to probability) or as a float tensor `[N, C]` whose columns are the classes
//!   in the order of the classifier node's `classlabels_*` attribute.

use ort::session::SessionOutputs;
use ort::value::{DynMapValueType, Outlet, TensorElementType, ValueType};

use super::InferenceError;

/// What the model's outputs are, found at load.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputLayout {
    /// A regressor.
    Regression {
        /// The output read.
        output: String,
        /// Its element type (float32 or float64).
        element: TensorElementType,
        /// Values per row, when the graph fixes it.
        width: Option<usize>,
    },
    /// A classifier.
    Classification {
        /// The label output.
        label: String,
        /// The label's element type (int64 or string).
        element: TensorElementType,
        /// The probability output, if the model has one.
        probabilities: Option<Probabilities>,
    },
}

/// A classifier's probability output.
#[derive(Debug, Clone, PartialEq)]
pub struct Probabilities {
    /// The output's name.
    pub output: String,
    /// How it is laid out.
    pub form: ProbabilityForm,
}

/// How a classifier gives its probabilities.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbabilityForm {
    /// ZipMap: one map of class to probability per row.
    ZipMap,
    /// A float32 tensor `[N, C]`; these are the classes of its columns.
    Tensor(Vec<String>),
}

impl std::fmt::Display for OutputLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Regression {
                output, element, ..
            } => {
                write!(f, "regressor: `{output}` ({element})")
            }
            Self::Classification {
                label,
                element,
                probabilities,
            } => {
                write!(f, "classifier: label `{label}` ({element})")?;
                match probabilities {
                    Some(Probabilities {
                        output,
                        form: ProbabilityForm::ZipMap,
                    }) => write!(f, ", probabilities `{output}` (ZipMap)"),
                    Some(Probabilities {
                        output,
                        form: ProbabilityForm::Tensor(classes),
                    }) => write!(f, ", probabilities `{output}` (classes {classes:?})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The predictions of one batch, row `i` for the record in row `i` of the inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// A regressor's values, `width` per row.
    Values {
        /// The values, row-major.
        values: Values,
        /// Values per row (0 until the first rows are read).
        width: usize,
    },
    /// A classifier's labels, and the probability of each class for each row.
    Classes {
        /// One label per row.
        labels: Labels,
        /// The classes, as text, in the order of each row's probabilities.
        classes: Vec<String>,
        /// `classes.len()` per row, row-major; empty when the model gives none.
        probabilities: Vec<f32>,
    },
}

/// A regressor's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// From a float32 output.
    Float32(Vec<f32>),
    /// From a float64 output.
    Float64(Vec<f64>),
}

/// A classifier's labels, as the model gives them.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Integer labels.
    Int64(Vec<i64>),
    /// String labels.
    String(Vec<String>),
}

/// One row of [`Predictions`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prediction<'p> {
    /// A regressor's float32 values for the row.
    Float32(&'p [f32]),
    /// A regressor's float64 values for the row.
    Float64(&'p [f64]),
    /// A classifier's label and class probabilities for the row.
    Class {
        /// The label.
        label: Label<'p>,
        /// The classes.
        classes: &'p [String],
        /// Their probabilities (empty when the model gives none).
        probabilities: &'p [f32],
    },
}

/// A classifier's label for one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label<'p> {
    /// An integer label.
    Int64(i64),
    /// A string label.
    String(&'p str),
}

impl Predictions {
    /// The prediction for row `row`, if there is one.
    pub fn row(&self, row: usize) -> Option<Prediction<'_>> {
        match self {
            Self::Values { values, width } => {
                let span = row * width..(row + 1) * width;
                match values {
                    Values::Float32(values) => values.get(span).map(Prediction::Float32),
                    Values::Float64(values) => values.get(span).map(Prediction::Float64),
                }
            }
            Self::Classes {
                labels,
                classes,
                probabilities,
            } => {
                let label = match labels {
                    Labels::Int64(labels) => Label::Int64(*labels.get(row)?),
                    Labels::String(labels) => Label::String(labels.get(row)?),
                };
                let width = classes.len();
                let probabilities = match probabilities.is_empty() {
                    true => &[],
                    false => probabilities.get(row * width..(row + 1) * width)?,
                };
                Some(Prediction::Class {
                    label,
                    classes,
                    probabilities,
                })
            }
        }
    }
}

/// Describes an output for messages: `name (Tensor<f32>(-1, 1))`.
fn describe(outputs: &[Outlet]) -> String {
    let outputs: Vec<String> = outputs
        .iter()
        .map(|output| format!("`{}` ({})", output.name(), output.dtype()))
        .collect();
    outputs.join(", ")
}

fn is_float(ty: TensorElementType) -> bool {
    matches!(ty, TensorElementType::Float32 | TensorElementType::Float64)
}

/// Whether this is a label output: int64 or string, one per row.
fn is_label(dtype: &ValueType) -> bool {
    matches!(dtype, ValueType::Tensor { ty: TensorElementType::Int64 | TensorElementType::String, shape, .. }
        if shape.len() == 1 || (shape.len() == 2 && shape.get(1) == Some(&1)))
}

impl OutputLayout {
    /// Finds what the outputs are; `class_labels` reads the classifier's classes from the
    /// graph when the probabilities are a tensor.
    pub fn bind(
        outputs: &[Outlet],
        class_labels: impl FnOnce() -> Result<Option<Vec<String>>, String>,
    ) -> Result<Self, String> {
        let unusable = || {
            format!(
                "its outputs are {}; the service writes a regressor's float tensor ([N], [N, 1] \
                 or [N, T]) or a classifier's int64 or string label [N] with, optionally, its \
                 probabilities (ZipMap or a float tensor [N, C])",
                describe(outputs)
            )
        };
        let first = outputs.first().ok_or("it has no output")?;
        if let ValueType::Tensor { ty, shape, .. } = first.dtype()
            && is_float(*ty)
        {
            let width = match &shape[..] {
                [_] => Some(1),
                [_, width] if *width > 0 => Some(*width as usize),
                [_, _] => None,
                _ => return Err(unusable()),
            };
            return Ok(Self::Regression {
                output: first.name().to_owned(),
                element: *ty,
                width,
            });
        }
        let label = outputs
            .iter()
            .find(|output| is_label(output.dtype()))
            .ok_or_else(unusable)?;
        let ValueType::Tensor { ty: element, .. } = label.dtype() else {
            return Err(unusable());
        };
        let probabilities = outputs.iter().find_map(|output| match output.dtype() {
            ValueType::Sequence(item) => match item.as_ref() {
                ValueType::Map {
                    key: TensorElementType::Int64 | TensorElementType::String,
                    value: TensorElementType::Float32,
                } => Some((output, None)),
                _ => None,
            },
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 2 => Some((output, shape.get(1).copied())),
            _ => None,
        });
        let probabilities = match probabilities {
            None => None,
            Some((output, None)) => Some(Probabilities {
                output: output.name().to_owned(),
                form: ProbabilityForm::ZipMap,
            }),
            Some((output, Some(width))) => {
                let classes = class_labels()?.ok_or_else(|| {
                    format!(
                        "its probabilities `{}` are a tensor, but no node of the graph names the \
                         classes (a classlabels_strings or classlabels_int64s attribute)",
                        output.name()
                    )
                })?;
                if width > 0 && width as usize != classes.len() {
                    return Err(format!(
                        "its probabilities `{}` have {width} columns, but the graph names {} \
                         classes {classes:?}",
                        output.name(),
                        classes.len()
                    ));
                }
                Some(Probabilities {
                    output: output.name().to_owned(),
                    form: ProbabilityForm::Tensor(classes),
                })
            }
        };
        Ok(Self::Classification {
            label: label.name().to_owned(),
            element: *element,
            probabilities,
        })
    }

    /// Empty predictions of this layout, with room for `rows` rows.
    pub fn empty(&self, rows: usize) -> Predictions {
        match self {
            Self::Regression { element, width, .. } => {
                let capacity = rows * width.unwrap_or(1);
                let values = match element {
                    TensorElementType::Float64 => Values::Float64(Vec::with_capacity(capacity)),
                    _ => Values::Float32(Vec::with_capacity(capacity)),
                };
                Predictions::Values {
                    values,
                    width: width.unwrap_or(0),
                }
            }
            Self::Classification {
                element,
                probabilities,
                ..
            } => {
                let labels = match element {
                    TensorElementType::String => Labels::String(Vec::with_capacity(rows)),
                    _ => Labels::Int64(Vec::with_capacity(rows)),
                };
                let classes = match probabilities.as_ref().map(|p| &p.form) {
                    Some(ProbabilityForm::Tensor(classes)) => classes.clone(),
                    _ => Vec::new(),
                };
                Predictions::Classes {
                    labels,
                    probabilities: Vec::with_capacity(rows * classes.len()),
                    classes,
                }
            }
        }
    }

    /// Appends the predictions of one `session.run` over `rows` rows.
    pub fn append(
        &self,
        outputs: &SessionOutputs<'_>,
        rows: usize,
        predictions: &mut Predictions,
    ) -> Result<(), InferenceError> {
        let get = |name: &str| {
            outputs.get(name).ok_or_else(|| InferenceError::Output {
                output: name.to_owned(),
                detail: "ONNX Runtime did not return it".into(),
            })
        };
        let length = |got: usize, per_row: usize| match got == rows * per_row {
            true => Ok(()),
            false => Err(InferenceError::OutputLength { rows, got }),
        };
        match (self, predictions) {
            (Self::Regression { output, .. }, Predictions::Values { values, width }) => {
                let value = get(output)?;
                let got = match values {
                    Values::Float32(values) => {
                        let (_, read) = value.try_extract_tensor::<f32>()?;
                        values.extend_from_slice(read);
                        read.len()
                    }
                    Values::Float64(values) => {
                        let (_, read) = value.try_extract_tensor::<f64>()?;
                        values.extend_from_slice(read);
                        read.len()
                    }
                };
                if *width == 0 && rows > 0 {
                    *width = (got / rows).max(1);
                }
                length(got, *width)
            }
            (
                Self::Classification {
                    label,
                    probabilities: form,
                    ..
                },
                Predictions::Classes {
                    labels,
                    classes,
                    probabilities,
                },
            ) => {
                let value = get(label)?;
                let got = match labels {
                    Labels::Int64(labels) => {
                        let (_, read) = value.try_extract_tensor::<i64>()?;
                        labels.extend_from_slice(read);
                        read.len()
                    }
                    Labels::String(labels) => {
                        let (_, read) = value.try_extract_strings()?;
                        let got = read.len();
                        labels.extend(read);
                        got
                    }
                };
                length(got, 1)?;
                let Some(form) = form else {
                    return Ok(());
                };
                let value = get(&form.output)?;
                match &form.form {
                    ProbabilityForm::Tensor(_) => {
                        let (_, read) = value.try_extract_tensor::<f32>()?;
                        length(read.len(), classes.len())?;
                        probabilities.extend_from_slice(read);
                    }
                    ProbabilityForm::ZipMap => {
                        let maps = value.try_extract_sequence::<DynMapValueType>()?;
                        length(maps.len(), 1)?;
                        for map in &maps {
                            append_map(map, &form.output, classes, probabilities)?;
                        }
                    }
                }
                Ok(())
            }
            _ => Err(InferenceError::Output {
                output: String::new(),
                detail: "the predictions do not match the model's outputs".into(),
            }),
        }
    }
}

/// Appends one row's probabilities from a ZipMap map. The first map gives the classes (in the
/// map's order, which ONNX Runtime keeps sorted); every later map must have the same.
fn append_map(
    map: &ort::value::DynMap,
    output: &str,
    classes: &mut Vec<String>,
    probabilities: &mut Vec<f32>,
) -> Result<(), InferenceError> {
    let pairs: Vec<(String, f32)> = match map.dtype() {
        ValueType::Map {
            key: TensorElementType::String,
            ..
        } => map.try_extract_key_values::<String, f32>()?,
        _ => map
            .try_extract_key_values::<i64, f32>()?
            .into_iter()
            .map(|(class, probability)| (class.to_string(), probability))
            .collect(),
    };
    if classes.is_empty() {
        classes.extend(pairs.iter().map(|(class, _)| class.clone()));
    }
    let same = pairs.len() == classes.len()
        && pairs
            .iter()
            .zip(classes.iter())
            .all(|((class, _), known)| class == known);
    if !same {
        return Err(InferenceError::Output {
            output: output.to_owned(),
            detail: format!("a row's classes are not {classes:?}"),
        });
    }
    probabilities.extend(pairs.iter().map(|(_, probability)| *probability));
    Ok(())
}
