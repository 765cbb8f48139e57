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
    /// A file of the model could not be found.
    #[error("no model at {uri}: {object} does not exist")]
    NotFound {
        /// Model location.
        uri: String,
        /// The missing object or file.
        object: String,
    },
    /// S3 answered with an error other than "not found", or could not be reached.
    #[error("cannot read {object} (model at {uri})")]
    S3 {
        /// Model location.
        uri: String,
        /// The object that was tried.
        object: String,
        /// What the SDK said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The downloaded model could not be written to the local cache.
    #[error("cannot write the model from {uri} to {path}")]
    Cache {
        /// Model location.
        uri: String,
        /// Where it was being written.
        path: String,
        /// Underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The ONNX file cannot be parsed to find its external data files.
    #[error("{object} is not an ONNX model: {detail}")]
    NotOnnx {
        /// The ONNX object.
        object: String,
        /// What the parser said.
        detail: String,
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
        Self::read_dir_from(dir, dir.display().to_string())
    }

    /// Reads and checks `MLmodel` in a local copy of the model at `uri`.
    pub fn read_dir_from(dir: &Path, uri: String) -> Result<Self, ArtifactError> {
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
        if !is_inside_directory(&onnx_data) {
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

/// Whether `path` names a file inside a model directory (relative, no `..`), as data files
/// and ONNX external-data locations must.
pub fn is_inside_directory(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path).components().all(|part| {
            matches!(
                part,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// The external-data files an ONNX model refers to (ONNX can keep large tensors in separate
/// files beside the model), relative to the model's directory, without duplicates.
pub fn external_data_files(onnx: &[u8], object: &str) -> Result<Vec<String>, ArtifactError> {
    use prost::Message as _;
    let model = onnx_proto::ModelProto::decode(onnx).map_err(|error| ArtifactError::NotOnnx {
        object: object.to_owned(),
        detail: error.to_string(),
    })?;
    let mut files = Vec::new();
    if let Some(graph) = &model.graph {
        graph.collect_external_files(&mut files);
    }
    if let Some(bad) = files.iter().find(|file| !is_inside_directory(file)) {
        return Err(ArtifactError::NotOnnx {
            object: object.to_owned(),
            detail: format!("external data location {bad:?} is outside the model directory"),
        });
    }
    Ok(files)
}

/// The few fields of ONNX's protobuf schema (onnx/onnx.proto) that say where tensor data lives;
/// every other field is skipped while decoding.
mod onnx_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// Node attributes can hold tensors (`Constant`) and subgraphs (`If`, `Loop`, `Scan`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        #[prost(message, optional, boxed, tag = "6")]
        pub g: Option<Box<GraphProto>>,
        #[prost(message, repeated, tag = "10")]
        pub tensors: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub graphs: Vec<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `TensorProto.DataLocation.EXTERNAL`.
    const EXTERNAL: i32 = 1;

    impl GraphProto {
        pub fn collect_external_files(&self, files: &mut Vec<String>) {
            let attributes = self.node.iter().flat_map(|node| &node.attribute);
            let attribute_tensors = attributes
                .clone()
                .flat_map(|a| a.t.iter().chain(&a.tensors));
            for tensor in self.initializer.iter().chain(attribute_tensors) {
                tensor.collect_external_file(files);
            }
            for attribute in attributes {
                for graph in attribute.g.as_deref().into_iter().chain(&attribute.graphs) {
                    graph.collect_external_files(files);
                }
            }
        }
    }

    impl TensorProto {
        fn collect_external_file(&self, files: &mut Vec<String>) {
            if self.data_location != EXTERNAL {
                return;
            }
            let location = self
                .external_data
                .iter()
                .find(|entry| entry.key == "location");
            if let Some(entry) = location.filter(|entry| !files.contains(&entry.value)) {
                files.push(entry.value.clone());
            }
        }
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
    fn paths_outside_the_model_directory_are_recognised() {
        for inside in ["model.onnx", "data/weights.bin", "./model.onnx"] {
            assert!(is_inside_directory(inside), "{inside}");
        }
        for outside in ["", "/etc/passwd", "../model.onnx", "data/../../x"] {
            assert!(!is_inside_directory(outside), "{outside}");
        }
    }

    #[test]
    fn external_data_locations_are_found_in_the_onnx_graph() {
        use onnx_proto::*;
        use prost::Message as _;
        let external = |location: &str| TensorProto {
            external_data: vec![StringStringEntryProto {
                key: "location".into(),
                value: location.into(),
            }],
            data_location: 1,
        };
        let subgraph = GraphProto {
            node: vec![],
            initializer: vec![external("sub.bin")],
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    attribute: vec![AttributeProto {
                        t: Some(external("const.bin")),
                        g: Some(Box::new(subgraph)),
                        ..Default::default()
                    }],
                }],
                initializer: vec![
                    external("weights.bin"),
                    TensorProto::default(),
                    external("weights.bin"),
                ],
            }),
        };
        let files = external_data_files(&model.encode_to_vec(), "m").unwrap();
        assert_eq!(files, ["weights.bin", "const.bin", "sub.bin"]);
    }

    #[test]
    fn onnx_without_external_data_needs_no_other_file() {
        let onnx = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/bike-linear/model.onnx"
        ))
        .unwrap();
        assert_eq!(
            external_data_files(&onnx, "m").unwrap(),
            Vec::<String>::new()
        );
        assert!(external_data_files(b"\xff\xff not onnx", "m").is_err());
    }

    #[test]
    fn not_yaml_is_refused() {
        assert!(matches!(
            MlModel::parse("flavors: [", "m"),
            Err(ArtifactError::Invalid { .. })
        ));
    }
}
