//! MLflow model directories: which ONNX file to load and which JSON feature feeds which column.
//!
//! An MLflow model directory holds an `MLmodel` YAML file next to the model data. We read two
//! things from it: the onnx flavor's `data` file, and the column-based input signature, whose
//! column names (in order) say which feature of a record goes into which column of the model's
//! `[N, F]` input. Nothing about the bike features is hard-coded: a model trained on other
//! features only needs a different signature.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Name of the model description file in an MLflow model directory.
pub const MLMODEL_FILE: &str = "MLmodel";

/// An MLflow model directory whose `MLmodel` has been read and checked.
#[derive(Debug, Clone)]
pub struct ModelArtifact {
    /// Where the model came from, for messages (a directory path or an `s3://` URI).
    pub uri: String,
    /// The ONNX file named by the onnx flavor's `data` key.
    pub onnx_path: PathBuf,
    /// Input feature names, in the column order of the model's `[N, F]` input.
    pub columns: Vec<String>,
}

/// Why an `MLmodel` file could not be used.
#[derive(Debug, Error)]
pub enum ArtifactError {
    /// The `MLmodel` file could not be read.
    #[error("no model at {uri}: cannot read {file}")]
    Unreadable {
        /// Model location.
        uri: String,
        /// The file that was tried.
        file: String,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `MLmodel` file is not valid YAML of the expected shape.
    #[error("{uri}/MLmodel is not a valid MLmodel file: {detail}")]
    Invalid {
        /// Model location.
        uri: String,
        /// What the parser said.
        detail: String,
    },
    /// The model has no onnx flavor, so there is no ONNX file to load.
    #[error("{uri}/MLmodel has no `onnx` flavor: only ONNX models can be served")]
    NoOnnxFlavor {
        /// Model location.
        uri: String,
    },
    /// The model does not say which feature feeds which input column.
    #[error(
        "{uri}/MLmodel has no column-based input signature ({detail}): the service needs the \
         signature's column names to know which record feature feeds which model input column"
    )]
    NoColumnSignature {
        /// Model location.
        uri: String,
        /// What exactly is missing.
        detail: String,
    },
}

impl ModelArtifact {
    /// Reads and checks `MLmodel` in a local model directory.
    pub fn read_dir(dir: &Path) -> Result<Self, ArtifactError> {
        let uri = dir.display().to_string();
        let file = dir.join(MLMODEL_FILE);
        let text = std::fs::read_to_string(&file).map_err(|source| ArtifactError::Unreadable {
            uri: uri.clone(),
            file: file.display().to_string(),
            source,
        })?;
        let mlmodel = MlModel::parse(&text, &uri)?;
        Ok(Self {
            onnx_path: dir.join(&mlmodel.onnx_data),
            columns: mlmodel.columns,
            uri,
        })
    }
}

/// The parts of an `MLmodel` file the service uses.
#[derive(Debug, Clone, PartialEq)]
pub struct MlModel {
    /// The onnx flavor's data file, relative to the model directory.
    pub onnx_data: String,
    /// Input column names from the signature, in order.
    pub columns: Vec<String>,
}

impl MlModel {
    /// Parses the text of an `MLmodel` file; `uri` names the model in error messages.
    pub fn parse(text: &str, uri: &str) -> Result<Self, ArtifactError> {
        let file: MlModelFile =
            serde_saphyr::from_str(text).map_err(|error| ArtifactError::Invalid {
                uri: uri.to_owned(),
                detail: error.to_string(),
            })?;
        let onnx_data =
            file.flavors
                .onnx
                .map(|onnx| onnx.data)
                .ok_or_else(|| ArtifactError::NoOnnxFlavor {
                    uri: uri.to_owned(),
                })?;
        if onnx_data.is_empty() || Path::new(&onnx_data).is_absolute() || onnx_data.contains("..") {
            return Err(ArtifactError::Invalid {
                uri: uri.to_owned(),
                detail: format!(
                    "onnx flavor `data: {onnx_data}` must be a file inside the model directory"
                ),
            });
        }
        let columns = signature_columns(file.signature, uri)?;
        Ok(Self { onnx_data, columns })
    }
}

/// `MLmodel` as written by `mlflow.onnx.save_model`; unknown keys are ignored.
#[derive(Deserialize)]
struct MlModelFile {
    #[serde(default)]
    flavors: Flavors,
    signature: Option<Signature>,
}

#[derive(Deserialize, Default)]
struct Flavors {
    onnx: Option<OnnxFlavor>,
}

#[derive(Deserialize)]
struct OnnxFlavor {
    data: String,
}

/// MLflow stores each side of the signature as a JSON string inside the YAML.
#[derive(Deserialize)]
struct Signature {
    inputs: Option<String>,
}

/// One entry of a signature's `inputs` JSON list.
#[derive(Deserialize)]
struct SignatureInput {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
}

/// MLflow column types that hold a number the service can feed as a float.
const NUMERIC_COLUMN_TYPES: [&str; 4] = ["float", "double", "integer", "long"];

fn signature_columns(
    signature: Option<Signature>,
    uri: &str,
) -> Result<Vec<String>, ArtifactError> {
    let missing = |detail: String| ArtifactError::NoColumnSignature {
        uri: uri.to_owned(),
        detail,
    };
    let inputs = signature
        .ok_or_else(|| missing("no `signature`".into()))?
        .inputs
        .ok_or_else(|| missing("no `signature.inputs`".into()))?;
    let inputs: Vec<SignatureInput> = serde_json::from_str(&inputs).map_err(|error| {
        missing(format!(
            "`signature.inputs` is not a JSON list of columns: {error}"
        ))
    })?;
    if inputs.is_empty() {
        return Err(missing("`signature.inputs` is empty".into()));
    }
    let mut columns = Vec::with_capacity(inputs.len());
    for (position, input) in inputs.into_iter().enumerate() {
        let Some(name) = input.name.filter(|name| !name.is_empty()) else {
            return Err(missing(format!("input {position} has no name")));
        };
        if !NUMERIC_COLUMN_TYPES.contains(&input.kind.as_str()) {
            return Err(missing(format!(
                "input `{name}` has type `{}`, expected one of {NUMERIC_COLUMN_TYPES:?}",
                input.kind
            )));
        }
        if columns.contains(&name) {
            return Err(missing(format!("input `{name}` appears twice")));
        }
        columns.push(name);
    }
    Ok(columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLMODEL: &str = r#"
artifact_path: model
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_version: 1.17.0
  python_function:
    data: model.onnx
    loader_module: mlflow.onnx
signature:
  inputs: '[{"type": "float", "name": "a", "required": true}, {"type": "double", "name": "b", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1]}}]'
"#;

    #[test]
    fn columns_come_from_the_signature_in_order() {
        let mlmodel = MlModel::parse(MLMODEL, "m").unwrap();
        assert_eq!(mlmodel.onnx_data, "model.onnx");
        assert_eq!(mlmodel.columns, ["a", "b"]);
    }

    #[test]
    fn model_without_onnx_flavor_is_refused() {
        let text = MLMODEL.replace(
            "  onnx:\n    code: null\n    data: model.onnx\n    onnx_version: 1.17.0\n",
            "",
        );
        let error = MlModel::parse(&text, "s3://b/p").unwrap_err();
        assert!(
            matches!(error, ArtifactError::NoOnnxFlavor { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("s3://b/p"));
    }

    #[test]
    fn tensor_signature_is_refused_with_the_reason() {
        let text = MLMODEL.replace(
            r#"'[{"type": "float", "name": "a", "required": true}, {"type": "double", "name": "b", "required": true}]'"#,
            r#"'[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'"#,
        );
        let error = MlModel::parse(&text, "m").unwrap_err().to_string();
        assert!(error.contains("input 0 has no name"), "{error}");
    }

    #[test]
    fn missing_signature_is_refused() {
        let text = MLMODEL.split("signature:").next().unwrap();
        let error = MlModel::parse(text, "m").unwrap_err().to_string();
        assert!(error.contains("no `signature`"), "{error}");
    }

    #[test]
    fn data_file_outside_the_directory_is_refused() {
        let text = MLMODEL.replace(
            "data: model.onnx\n    onnx_version",
            "data: ../x.onnx\n    onnx_version",
        );
        assert!(MlModel::parse(&text, "m").is_err());
    }

    #[test]
    fn string_column_is_refused() {
        let text = MLMODEL.replace(r#""type": "double""#, r#""type": "string""#);
        let error = MlModel::parse(&text, "m").unwrap_err().to_string();
        assert!(error.contains("input `b` has type `string`"), "{error}");
    }

    #[test]
    fn not_yaml_is_refused() {
        assert!(matches!(
            MlModel::parse("flavors: [", "m"),
            Err(ArtifactError::Invalid { .. })
        ));
    }
}
