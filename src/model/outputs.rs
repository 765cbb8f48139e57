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
use ort::value::{DynMapValueType, TensorElementType, ValueType};

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

/// An output of the ONNX graph: its name and type.
pub type GraphOutput<'a> = (&'a str, &'a ValueType);

/// Describes the outputs for messages: `` `name` (Tensor<f32>(-1, 1)) ``.
fn describe(outputs: &[GraphOutput<'_>]) -> String {
    let outputs: Vec<String> = outputs
        .iter()
        .map(|(name, dtype)| format!("`{name}` ({dtype})"))
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
        outputs: &[GraphOutput<'_>],
        class_labels: impl FnOnce(&str) -> Result<Option<Vec<String>>, String>,
    ) -> Result<Self, String> {
        let unusable = || {
            format!(
                "its outputs are {}; the service writes a regressor's float tensor ([N], [N, 1] \
                 or [N, T]) or a classifier's int64 or string label [N] with, optionally, its \
                 probabilities (ZipMap or a float tensor [N, C])",
                describe(outputs)
            )
        };
        let &(first, first_type) = outputs.first().ok_or("it has no output")?;
        // A model with a label output is a classifier, whatever order its outputs come in.
        let has_label = outputs.iter().any(|(_, dtype)| is_label(dtype));
        if let ValueType::Tensor { ty, shape, .. } = first_type
            && is_float(*ty)
            && !has_label
        {
            let width = match &shape[..] {
                [_] => Some(1),
                [_, width] if *width > 0 => Some(*width as usize),
                [_, _] => None,
                _ => return Err(unusable()),
            };
            return Ok(Self::Regression {
                output: first.to_owned(),
                element: *ty,
                width,
            });
        }
        let &(label, label_type) = outputs
            .iter()
            .find(|(_, dtype)| is_label(dtype))
            .ok_or_else(unusable)?;
        let ValueType::Tensor { ty: element, .. } = label_type else {
            return Err(unusable());
        };
        let probabilities = outputs.iter().find_map(|&(output, dtype)| match dtype {
            ValueType::Sequence(item) => match item.as_ref() {
                ValueType::Map {
                    key: TensorElementType::Int64 | TensorElementType::String,
                    value: TensorElementType::Float32,
                } => Some((output, None)),
                _ => None,
            },
            ValueType::Tensor {
                ty: TensorElementType::Float32 | TensorElementType::Float64,
                shape,
                ..
            } if shape.len() == 2 => Some((output, shape.get(1).copied())),
            _ => None,
        });
        let probabilities = match probabilities {
            None => None,
            Some((output, None)) => Some(Probabilities {
                output: output.to_owned(),
                form: ProbabilityForm::ZipMap,
            }),
            Some((output, Some(width))) => {
                let classes = class_labels(output)?.ok_or_else(|| {
                    format!(
                        "its probabilities `{output}` are a tensor, but no classifier node \
                         producing them names the classes (a classlabels_strings, \
                         classlabels_int64s or classlabels_ints attribute)"
                    )
                })?;
                if width > 0 && width as usize != classes.len() {
                    return Err(format!(
                        "its probabilities `{output}` have {width} columns, but the graph names \
                         {} classes {classes:?}",
                        classes.len()
                    ));
                }
                Some(Probabilities {
                    output: output.to_owned(),
                    form: ProbabilityForm::Tensor(classes),
                })
            }
        };
        Ok(Self::Classification {
            label: label.to_owned(),
            element: *element,
            probabilities,
        })
    }

    /// Reads a classifier's ZipMap probabilities from the `[N, C]` tensor the ZipMap is made
    /// from (which the session was given as an extra output) instead of its sequence of maps:
    /// the same probabilities, classes in the ZipMap's order, without a map per row.
    pub fn read_zipmap_input(&mut self, zipmap: &crate::artifact::ZipMap) {
        if let Self::Classification {
            probabilities: Some(probabilities),
            ..
        } = self
            && probabilities.form == ProbabilityForm::ZipMap
            && probabilities.output == zipmap.output
        {
            *probabilities = Probabilities {
                output: zipmap.probabilities.clone(),
                form: ProbabilityForm::Tensor(zipmap.classes.clone()),
            };
        }
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
        match (self, predictions) {
            (Self::Regression { output, .. }, Predictions::Values { values, width }) => {
                let value = get(output)?;
                let shape = match values {
                    Values::Float32(values) => {
                        let (shape, read) = value.try_extract_tensor::<f32>()?;
                        values.extend_from_slice(read);
                        shape
                    }
                    Values::Float64(values) => {
                        let (shape, read) = value.try_extract_tensor::<f64>()?;
                        values.extend_from_slice(read);
                        shape
                    }
                };
                let per_row = check_rows(output, shape, rows)?;
                match *width {
                    0 => *width = per_row,
                    known if known != per_row => {
                        return Err(InferenceError::Output {
                            output: output.clone(),
                            detail: format!("it has {per_row} values per row, earlier {known}"),
                        });
                    }
                    _ => {}
                }
                Ok(())
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
                let per_row = match labels {
                    Labels::Int64(labels) => {
                        let (shape, read) = value.try_extract_tensor::<i64>()?;
                        labels.extend_from_slice(read);
                        check_rows(label, shape, rows)?
                    }
                    Labels::String(labels) => {
                        let (shape, read) = value.try_extract_strings()?;
                        let per_row = check_rows(label, shape, rows)?;
                        labels.extend(read);
                        per_row
                    }
                };
                if per_row != 1 {
                    return Err(InferenceError::Output {
                        output: label.clone(),
                        detail: format!("it has {per_row} labels per row"),
                    });
                }
                let Some(form) = form else {
                    return Ok(());
                };
                let value = get(&form.output)?;
                match &form.form {
                    ProbabilityForm::Tensor(_) => {
                        // float64 probabilities are written as float32, like float32 ones.
                        let double = matches!(
                            value.dtype(),
                            ValueType::Tensor {
                                ty: TensorElementType::Float64,
                                ..
                            }
                        );
                        let shape = match double {
                            true => {
                                let (shape, read) = value.try_extract_tensor::<f64>()?;
                                probabilities.extend(read.iter().map(|&p| p as f32));
                                shape
                            }
                            false => {
                                let (shape, read) = value.try_extract_tensor::<f32>()?;
                                probabilities.extend_from_slice(read);
                                shape
                            }
                        };
                        // A mismatch fails this run; its predictions are dropped with it.
                        let per_row = check_rows(&form.output, shape, rows)?;
                        if per_row != classes.len() {
                            return Err(InferenceError::Output {
                                output: form.output.clone(),
                                detail: format!(
                                    "it has {per_row} probabilities per row for the {} classes",
                                    classes.len()
                                ),
                            });
                        }
                    }
                    ProbabilityForm::ZipMap => {
                        let maps = value.try_extract_sequence::<DynMapValueType>()?;
                        if maps.len() != rows {
                            return Err(InferenceError::Output {
                                output: form.output.clone(),
                                detail: format!("it has {} maps for {rows} rows", maps.len()),
                            });
                        }
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

/// Checks that an output of this shape has one row per input row (its first dimension), and
/// returns its values per row.
fn check_rows(output: &str, shape: &[i64], rows: usize) -> Result<usize, InferenceError> {
    let first = shape.first().copied().unwrap_or(1);
    let per_row: i64 = shape.iter().skip(1).product();
    if first != rows as i64 || per_row < 1 {
        return Err(InferenceError::Output {
            output: output.to_owned(),
            detail: format!("its shape is {shape:?} for {rows} rows"),
        });
    }
    Ok(per_row as usize)
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

#[cfg(test)]
mod tests {
    use ort::value::{Shape, SymbolicDimensions};

    use super::*;

    fn tensor(ty: TensorElementType, shape: &[i64]) -> ValueType {
        ValueType::Tensor {
            ty,
            shape: Shape::new(shape.iter().copied()),
            dimension_symbols: SymbolicDimensions::empty(shape.len()),
        }
    }

    fn zipmap(key: TensorElementType) -> ValueType {
        ValueType::Sequence(Box::new(ValueType::Map {
            key,
            value: TensorElementType::Float32,
        }))
    }

    fn bind(outputs: &[(&str, ValueType)]) -> Result<OutputLayout, String> {
        let outputs: Vec<GraphOutput<'_>> = outputs.iter().map(|(n, t)| (*n, t)).collect();
        OutputLayout::bind(&outputs, |_| Ok(Some(vec!["a".into(), "b".into()])))
    }

    use TensorElementType::{Float32, Float64, Int64, String as Str};

    #[test]
    fn a_float_first_output_is_a_regressor_of_one_or_several_targets() {
        for (shape, width) in [
            (&[-1, 1][..], Some(1)),
            (&[-1][..], Some(1)),
            (&[-1, 3][..], Some(3)),
            (&[-1, -1][..], None),
        ] {
            let layout = bind(&[("variable", tensor(Float32, shape))]).unwrap();
            assert_eq!(
                layout,
                OutputLayout::Regression {
                    output: "variable".into(),
                    element: Float32,
                    width
                },
                "{shape:?}"
            );
        }
        let layout = bind(&[("y", tensor(Float64, &[-1, 1]))]).unwrap();
        assert!(matches!(
            layout,
            OutputLayout::Regression {
                element: Float64,
                ..
            }
        ));
    }

    #[test]
    fn a_label_and_probabilities_are_a_classifier() {
        let layout = bind(&[
            ("output_label", tensor(Str, &[-1])),
            ("output_probability", zipmap(Str)),
        ])
        .unwrap();
        assert_eq!(
            layout,
            OutputLayout::Classification {
                label: "output_label".into(),
                element: Str,
                probabilities: Some(Probabilities {
                    output: "output_probability".into(),
                    form: ProbabilityForm::ZipMap
                })
            }
        );
        let layout = bind(&[
            ("label", tensor(Int64, &[-1])),
            ("probabilities", tensor(Float32, &[-1, 2])),
        ])
        .unwrap();
        assert_eq!(
            layout,
            OutputLayout::Classification {
                label: "label".into(),
                element: Int64,
                probabilities: Some(Probabilities {
                    output: "probabilities".into(),
                    form: ProbabilityForm::Tensor(vec!["a".into(), "b".into()])
                })
            }
        );
        // Probabilities in float64, and the outputs in any order.
        let layout = bind(&[
            ("probabilities", tensor(Float64, &[-1, 2])),
            ("label", tensor(Int64, &[-1])),
        ])
        .unwrap();
        assert!(matches!(
            layout,
            OutputLayout::Classification {
                probabilities: Some(Probabilities {
                    form: ProbabilityForm::Tensor(_),
                    ..
                }),
                ..
            }
        ));
        let layout = bind(&[("label", tensor(Int64, &[-1, 1]))]).unwrap();
        assert!(matches!(
            layout,
            OutputLayout::Classification {
                probabilities: None,
                ..
            }
        ));
    }

    #[test]
    fn outputs_the_service_cannot_write_are_refused_with_what_they_are() {
        let cases: Vec<(Vec<(&str, ValueType)>, &str)> = vec![
            (vec![], "it has no output"),
            (
                vec![("y", tensor(Float32, &[-1, 2, 2]))],
                "its outputs are `y`",
            ),
            (
                vec![("text", tensor(Str, &[-1, 3]))],
                "a classifier's int64 or string label [N]",
            ),
            (
                vec![("seq", ValueType::Sequence(Box::new(tensor(Float32, &[-1]))))],
                "its outputs are `seq`",
            ),
            (
                vec![
                    ("label", tensor(Int64, &[-1])),
                    ("probabilities", tensor(Float32, &[-1, 3])),
                ],
                "have 3 columns, but the graph names 2 classes",
            ),
        ];
        for (outputs, message) in cases {
            let error = bind(&outputs).unwrap_err();
            assert!(error.contains(message), "{message}: {error}");
        }
        let outputs = [
            ("label", tensor(Int64, &[-1])),
            ("probabilities", tensor(Float32, &[-1, 3])),
        ];
        let outputs: Vec<GraphOutput<'_>> = outputs.iter().map(|(n, t)| (*n, t)).collect();
        let error = OutputLayout::bind(&outputs, |_| Ok(None)).unwrap_err();
        assert!(
            error.contains("no classifier node producing them names the classes"),
            "{error}"
        );
    }

    #[test]
    fn an_output_must_have_one_row_per_input_row() {
        assert_eq!(check_rows("y", &[3, 1], 3).unwrap(), 1);
        assert_eq!(check_rows("y", &[3], 3).unwrap(), 1);
        assert_eq!(check_rows("y", &[3, 2], 3).unwrap(), 2);
        for shape in [&[2, 3][..], &[1], &[3, 0], &[6]] {
            let error = check_rows("y", shape, 3).unwrap_err().to_string();
            assert!(
                error.contains("`y`") && error.contains("for 3 rows"),
                "{error}"
            );
        }
    }

    #[test]
    fn rows_of_predictions_are_read_by_position() {
        let values = Predictions::Values {
            values: Values::Float32(vec![1.0, 2.0, 3.0, 4.0]),
            width: 2,
        };
        assert_eq!(values.row(1), Some(Prediction::Float32(&[3.0, 4.0])));
        assert_eq!(values.row(2), None);
        let classes = Predictions::Classes {
            labels: Labels::String(vec!["a".into(), "b".into()]),
            classes: vec!["a".into(), "b".into()],
            probabilities: vec![0.9, 0.1, 0.2, 0.8],
        };
        let Some(Prediction::Class {
            label,
            probabilities,
            ..
        }) = classes.row(1)
        else {
            panic!("{classes:?}");
        };
        assert_eq!(label, Label::String("b"));
        assert_eq!(probabilities, [0.2, 0.8]);
    }
}
