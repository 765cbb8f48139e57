//! MLflow model directories: which ONNX file to load and what the model's input signature says.
//!
//! An MLflow model directory holds an `MLmodel` YAML file next to the model data. We read two
//! things from it: the onnx flavor's `data` file, and the input signature. A column-based
//! signature names the columns (with their MLflow types and whether they are required) that a
//! record's `features` object provides; a tensor-based signature gives the element type and
//! width of the one `[N, F]` tensor that a record's `features` array fills in column order.
//! [`crate::inputs::InputLayout`] matches either to the ONNX graph's inputs. Nothing about the bike features
//! is hard-coded: a model trained on other features only needs a different signature.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// Name of the model description file in an MLflow model directory.
pub const MLMODEL_FILE: &str = "MLmodel";
/// Largest `MLmodel` file read. It is YAML of a few KiB, read whole; its signature grows with
/// the model's columns, by well under a KiB each.
pub const MAX_MLMODEL_BYTES: u64 = 16 << 20;

/// An MLflow model directory whose `MLmodel` has been read and checked.
#[derive(Debug, Clone)]
pub struct ModelArtifact {
    /// Where the model came from, for messages (a directory path or an `s3://` URI).
    pub uri: String,
    /// The ONNX file named by the onnx flavor's `data` key.
    pub onnx_path: PathBuf,
    /// What the signature says the model's inputs are.
    pub signature: InputSignature,
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
    /// The store (S3, the tracking server's artifact proxy) answered with an error other than
    /// "not found", or could not be reached.
    #[error("cannot read {object} (model at {uri})")]
    Store {
        /// Model location.
        uri: String,
        /// The object that was tried.
        object: String,
        /// What the SDK or the HTTP client said.
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
    /// A file of the model is larger than what the function has room for; nothing of it was
    /// written.
    #[error(
        "{object} is {bytes} bytes, more than {room} ({available} bytes): the model at {uri} \
         cannot be loaded; give the function more {remedy}"
    )]
    TooLarge {
        /// Model location.
        uri: String,
        /// The object that does not fit.
        object: String,
        /// Its size, with the model's files fetched before it.
        bytes: u64,
        /// What it does not fit in.
        room: String,
        /// How many bytes there are.
        available: u64,
        /// What to raise.
        remedy: &'static str,
    },
    /// A file of the model is larger than a file of its kind can be.
    #[error(
        "{object} is larger than {most} bytes, the most such a file can be: the model at {uri} \
         cannot be loaded"
    )]
    Oversized {
        /// Model location.
        uri: String,
        /// The file.
        object: String,
        /// The largest such a file may be.
        most: u64,
    },
    /// A file of the model did not arrive within the download's time.
    #[error(
        "{object} did not arrive within {seconds} s (MODEL_DOWNLOAD_TIMEOUT); the model at \
         {uri} was not cached"
    )]
    TimedOut {
        /// Model location.
        uri: String,
        /// The file being fetched when the time ran out.
        object: String,
        /// The time the whole download had.
        seconds: f64,
    },
    /// A file of the model arrived shorter, longer or other than its store said it is.
    #[error("{object} arrived damaged ({detail}); the model at {uri} was not cached")]
    Damaged {
        /// Model location.
        uri: String,
        /// The object.
        object: String,
        /// What did not match.
        detail: String,
    },
    /// The ONNX file cannot be parsed to find its external data files.
    #[error("{object} is not an ONNX model: {detail}")]
    NotOnnx {
        /// The ONNX object.
        object: String,
        /// What the parser said.
        detail: String,
    },
    /// The model does not say which feature feeds which input.
    #[error(
        "{uri}/MLmodel has no usable input signature ({detail}): the service needs the \
         signature (save the model with `signature=infer_signature(X, y)`) to know which record \
         feature feeds which model input"
    )]
    NoSignature {
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
        let unreadable = |source| ArtifactError::Unreadable {
            uri: uri.clone(),
            file: file.display().to_string(),
            source,
        };
        if std::fs::metadata(&file).map_err(unreadable)?.len() > MAX_MLMODEL_BYTES {
            return Err(ArtifactError::Oversized {
                uri: uri.clone(),
                object: file.display().to_string(),
                most: MAX_MLMODEL_BYTES,
            });
        }
        let text = std::fs::read_to_string(&file).map_err(unreadable)?;
        let mlmodel = MlModel::parse(&text, &uri)?;
        Ok(Self {
            onnx_path: dir.join(&mlmodel.onnx_data),
            signature: mlmodel.signature,
            uri,
        })
    }
}

/// The parts of an `MLmodel` file the service uses.
#[derive(Debug, Clone, PartialEq)]
pub struct MlModel {
    /// The onnx flavor's data file, relative to the model directory.
    pub onnx_data: String,
    /// The input signature.
    pub signature: InputSignature,
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
                    "onnx flavor `data: {onnx_data:?}` must be a file inside the model directory"
                ),
            });
        }
        let signature = input_signature(file.signature, uri)?;
        Ok(Self {
            onnx_data,
            signature,
        })
    }
}

/// Whether `path` names a file inside a model directory (relative, no `..`, no control
/// character, not the name of the cache's own manifest), as data files and ONNX external-data
/// locations must.
pub fn is_inside_directory(path: &str) -> bool {
    !path.is_empty()
        && !path.chars().any(char::is_control)
        && Path::new(path).file_name() != Some(crate::download::MANIFEST_FILE.as_ref())
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
    let mut files = Vec::new();
    OnnxGraph::parse(onnx, object)?
        .graph
        .collect_external_files(&mut files);
    if let Some(bad) = files.iter().find(|file| !is_inside_directory(file)) {
        return Err(ArtifactError::NotOnnx {
            object: object.to_owned(),
            detail: format!("external data location {bad:?} is outside the model directory"),
        });
    }
    Ok(files)
}

/// What the service reads of an ONNX model's graph at load, parsed once: the classes of a
/// classifier's probabilities and the ZipMap that writes them.
#[derive(Debug, Clone)]
pub struct OnnxGraph {
    graph: onnx_proto::GraphProto,
}

impl OnnxGraph {
    /// Parses the graph of an ONNX model's bytes (`object` names it in errors).
    pub fn parse(onnx: &[u8], object: &str) -> Result<Self, ArtifactError> {
        use prost::Message as _;
        let model =
            onnx_proto::ModelProto::decode(onnx).map_err(|error| ArtifactError::NotOnnx {
                object: object.to_owned(),
                detail: error.to_string(),
            })?;
        Ok(Self {
            graph: model.graph.unwrap_or_default(),
        })
    }

    /// The classes of the classifier whose probabilities the model outputs as `output`, in
    /// the order of its probability columns; `None` if no node says.
    pub fn class_labels(&self, output: &str) -> Option<Vec<String>> {
        self.graph.class_labels(output)
    }

    /// Whether the model keeps any tensor in an external file.
    pub fn has_external_data(&self) -> bool {
        let mut external = Vec::new();
        self.graph.collect_external_files(&mut external);
        !external.is_empty()
    }

    /// Whether the model's graph has a tree-ensemble node.
    pub fn has_tree_ensembles(&self) -> bool {
        self.graph
            .node
            .iter()
            .any(|node| node.op_type.starts_with("TreeEnsemble"))
    }

    /// The ZipMap node writing a graph output of the model, if there is one and the model
    /// keeps no tensors in external files (it is then loaded from memory, where relative file
    /// names would not resolve).
    pub fn zipmap(&self) -> Option<ZipMap> {
        if self.has_external_data() {
            return None;
        }
        let is_output = |name: &str| self.graph.output.iter().any(|value| value.name == name);
        self.graph.node.iter().find_map(|node| {
            let (Some(output), Some(input)) = (node.output.first(), node.input.first()) else {
                return None;
            };
            if node.op_type != "ZipMap" || !is_output(output) || is_output(input) {
                return None;
            }
            Some(ZipMap {
                output: output.clone(),
                probabilities: input.clone(),
                classes: node.class_labels()?,
            })
        })
    }
}

/// A ZipMap node that writes a classifier's probabilities to a graph output as a sequence of
/// maps: reading each row's map costs far more than reading the `[N, C]` tensor it is made
/// from, so the service asks ONNX Runtime for that tensor too.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipMap {
    /// The graph output the ZipMap writes.
    pub output: String,
    /// Its input: the float probabilities `[N, C]`.
    pub probabilities: String,
    /// The classes of its columns, in order.
    pub classes: Vec<String>,
}

/// The model's bytes with `name`, a float tensor inside the graph, added to its outputs: a
/// model holding only that graph output, appended, which protobuf merges into the graph
/// already read (repeated fields of an embedded message add up).
pub fn with_float_output(onnx: &[u8], name: &str) -> Vec<u8> {
    use onnx_proto::*;
    use prost::Message as _;
    let extra = ModelProto {
        graph: Some(GraphProto {
            output: vec![ValueInfoProto {
                name: name.to_owned(),
                r#type: Some(TypeProto {
                    tensor_type: Some(TensorType { elem_type: FLOAT }),
                }),
            }],
            ..GraphProto::default()
        }),
    };
    let mut bytes = onnx.to_vec();
    bytes.extend(extra.encode_to_vec());
    bytes
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
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// Node attributes can hold tensors (`Constant`) and subgraphs (`If`, `Loop`, `Scan`), and
    /// a classifier's class labels.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(int64, repeated, tag = "8")]
        pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")]
        pub strings: Vec<Vec<u8>>,
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

    /// A graph output: its name and type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorType>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorType {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
    }

    /// `TensorProto.DataType.FLOAT`.
    pub const FLOAT: i32 = 1;

    /// `TensorProto.DataLocation.EXTERNAL`.
    const EXTERNAL: i32 = 1;

    impl GraphProto {
        /// The classes of the classifier whose probabilities come out as `output`: the
        /// `classlabels_*` attribute of the first node met walking back from `output` through
        /// the nodes producing it (first inputs; post-processing such as `Normalizer`, `Cast`
        /// or `Identity` sits between). If that walk meets none, the classes every classifier
        /// node of the graph names, when they all agree.
        pub fn class_labels(&self, output: &str) -> Option<Vec<String>> {
            let mut name = output;
            for _ in 0..self.node.len() {
                let Some(node) = self
                    .node
                    .iter()
                    .find(|node| node.output.iter().any(|o| o == name))
                else {
                    break;
                };
                if let Some(labels) = node.class_labels() {
                    return Some(labels);
                }
                match node.input.first() {
                    Some(input) => name = input,
                    None => break,
                }
            }
            let mut named = self.node.iter().filter_map(NodeProto::class_labels);
            let first = named.next()?;
            named.all(|labels| labels == first).then_some(first)
        }

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

    impl NodeProto {
        /// The node's `classlabels_strings`, `classlabels_int64s` (tree ensembles, ZipMap) or
        /// `classlabels_ints` (LinearClassifier, SVMClassifier) attribute, as text.
        pub fn class_labels(&self) -> Option<Vec<String>> {
            self.attribute
                .iter()
                .find_map(|attribute| match attribute.name.as_str() {
                    "classlabels_strings" if !attribute.strings.is_empty() => Some(
                        attribute
                            .strings
                            .iter()
                            .map(|label| String::from_utf8_lossy(label).into_owned())
                            .collect(),
                    ),
                    "classlabels_int64s" | "classlabels_ints" if !attribute.ints.is_empty() => {
                        Some(attribute.ints.iter().map(i64::to_string).collect())
                    }
                    _ => None,
                })
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

/// One entry of a signature's `inputs` JSON list: a column (`type` is its MLflow type) or a
/// tensor (`type` is `tensor`).
#[derive(Deserialize)]
struct SignatureInput {
    #[serde(rename = "type")]
    kind: String,
    /// A string, or a number for a DataFrame built from an array (`pd.DataFrame(X)` names its
    /// columns 0, 1, ...): records then use `"0"`, `"1"`, ... as keys.
    name: Option<serde_json::Value>,
    #[serde(default = "required_by_default")]
    required: bool,
    #[serde(rename = "tensor-spec")]
    tensor_spec: Option<TensorSpec>,
}

fn required_by_default() -> bool {
    true
}

#[derive(Deserialize)]
struct TensorSpec {
    dtype: String,
    shape: Vec<i64>,
}

/// What a model's `MLmodel` signature says about its inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum InputSignature {
    /// Named columns: a record's `features` is an object with these keys.
    Columns(Vec<ColumnSpec>),
    /// One unnamed `[N, F]` tensor: a record's `features` is an array of `F` values.
    Tensor {
        /// The tensor's element type.
        dtype: SignatureType,
        /// `F`, when the signature fixes it (`shape: [-1, F]`).
        width: Option<usize>,
    },
}

/// One column of a column-based signature.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    /// The column's name: the key of the feature in a record.
    pub name: String,
    /// Its MLflow type.
    pub kind: SignatureType,
    /// Whether a record must have it (`"required": false` lets it be left out).
    pub required: bool,
}

/// The MLflow types of a column, or the numpy dtypes of a tensor, that the service can feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureType {
    /// `boolean` (numpy `bool`).
    Boolean,
    /// `integer`: 32-bit integers (numpy `int32`).
    Integer,
    /// `long`: 64-bit integers (numpy `int64`).
    Long,
    /// `float`: 32-bit floats (numpy `float32`).
    Float,
    /// `double`: 64-bit floats (numpy `float64`).
    Double,
    /// `string` (numpy `str` or `object`).
    String,
}

impl SignatureType {
    /// The type of an MLflow column type name.
    fn of_column(name: &str) -> Option<Self> {
        Some(match name {
            "boolean" => Self::Boolean,
            "integer" => Self::Integer,
            "long" => Self::Long,
            "float" => Self::Float,
            "double" => Self::Double,
            "string" => Self::String,
            _ => return None,
        })
    }

    /// The type of a tensor spec's numpy dtype name.
    fn of_dtype(name: &str) -> Option<Self> {
        Some(match name {
            "bool" => Self::Boolean,
            "int32" => Self::Integer,
            "int64" => Self::Long,
            "float32" => Self::Float,
            "float64" => Self::Double,
            "str" | "object" => Self::String,
            _ => return None,
        })
    }

    /// The MLflow name of the type, as written in a column-based signature.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boolean => "boolean",
            Self::Integer => "integer",
            Self::Long => "long",
            Self::Float => "float",
            Self::Double => "double",
            Self::String => "string",
        }
    }
}

/// Column types the service can feed (MLflow's `binary` and `datetime` cannot be sent as
/// JSON values the way a producer would expect).
const COLUMN_TYPES: [&str; 6] = ["boolean", "integer", "long", "float", "double", "string"];

impl InputSignature {
    /// The column names of a column-based signature, in order; none for a tensor signature.
    pub fn column_names(&self) -> Vec<&str> {
        match self {
            Self::Columns(columns) => columns.iter().map(|column| column.name.as_str()).collect(),
            Self::Tensor { .. } => Vec::new(),
        }
    }
}

fn input_signature(
    signature: Option<Signature>,
    uri: &str,
) -> Result<InputSignature, ArtifactError> {
    let missing = |detail: String| ArtifactError::NoSignature {
        uri: uri.to_owned(),
        detail,
    };
    let inputs = signature
        .ok_or_else(|| missing("no `signature`".into()))?
        .inputs
        .ok_or_else(|| missing("no `signature.inputs`".into()))?;
    let inputs: Vec<SignatureInput> = serde_json::from_str(&inputs).map_err(|error| {
        missing(format!(
            "`signature.inputs` is not a JSON list of columns or tensors: {error}"
        ))
    })?;
    if inputs.is_empty() {
        return Err(missing("`signature.inputs` is empty".into()));
    }
    if inputs.iter().any(|input| input.kind == "tensor") {
        return tensor_signature(inputs, &missing);
    }
    let mut columns: Vec<ColumnSpec> = Vec::with_capacity(inputs.len());
    for (position, input) in inputs.into_iter().enumerate() {
        let name = match input.name {
            Some(serde_json::Value::String(name)) => Some(name),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        let Some(name) = name.filter(|name| !name.is_empty()) else {
            return Err(missing(format!("input {position} has no name")));
        };
        let Some(kind) = SignatureType::of_column(&input.kind) else {
            return Err(missing(format!(
                "input `{name}` has type `{}`, expected one of {COLUMN_TYPES:?}",
                input.kind
            )));
        };
        if columns.iter().any(|column| column.name == name) {
            return Err(missing(format!("input `{name}` appears twice")));
        }
        columns.push(ColumnSpec {
            name,
            kind,
            required: input.required,
        });
    }
    Ok(InputSignature::Columns(columns))
}

/// A tensor-based signature: exactly one unnamed-or-named tensor of shape `[-1]` or `[-1, F]`.
fn tensor_signature(
    inputs: Vec<SignatureInput>,
    missing: &dyn Fn(String) -> ArtifactError,
) -> Result<InputSignature, ArtifactError> {
    let [input] = <[SignatureInput; 1]>::try_from(inputs).map_err(|inputs| {
        missing(format!(
            "it has {} inputs, tensors among them; the service fills one `[N, F]` tensor \
             from a record's `features` array, or named columns from its `features` object",
            inputs.len()
        ))
    })?;
    let Some(spec) = input.tensor_spec else {
        return Err(missing("the tensor input has no `tensor-spec`".into()));
    };
    let Some(dtype) = SignatureType::of_dtype(&spec.dtype) else {
        return Err(missing(format!(
            "the tensor input has dtype `{}`, expected bool, int32, int64, float32, float64 or str",
            spec.dtype
        )));
    };
    let width = match spec.shape.as_slice() {
        [-1, width] if *width > 0 => Some(*width as usize),
        [-1, -1] => None,
        shape => {
            return Err(missing(format!(
                "the tensor input has shape {shape:?}; the service fills `[-1, F]`: one row of F \
                 values per record"
            )));
        }
    };
    Ok(InputSignature::Tensor { dtype, width })
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
    fn columns_come_from_the_signature_in_order_with_their_types() {
        let mlmodel = MlModel::parse(MLMODEL, "m").unwrap();
        assert_eq!(mlmodel.onnx_data, "model.onnx");
        assert_eq!(mlmodel.signature.column_names(), ["a", "b"]);
        let InputSignature::Columns(columns) = &mlmodel.signature else {
            panic!("{:?}", mlmodel.signature);
        };
        assert_eq!(columns[0].kind, SignatureType::Float);
        assert_eq!(columns[1].kind, SignatureType::Double);
        assert!(columns.iter().all(|column| column.required));
    }

    #[test]
    fn every_column_type_and_optional_columns_are_read() {
        let text = MLMODEL.replace(
            r#"'[{"type": "float", "name": "a", "required": true}, {"type": "double", "name": "b", "required": true}]'"#,
            r#"'[{"type": "boolean", "name": "a"}, {"type": "integer", "name": "b", "required": false}, {"type": "long", "name": "c"}, {"type": "string", "name": "d"}]'"#,
        );
        let mlmodel = MlModel::parse(&text, "m").unwrap();
        let InputSignature::Columns(columns) = &mlmodel.signature else {
            panic!("{:?}", mlmodel.signature);
        };
        let kinds: Vec<_> = columns.iter().map(|column| column.kind).collect();
        use SignatureType::*;
        assert_eq!(kinds, [Boolean, Integer, Long, String]);
        let required: Vec<_> = columns.iter().map(|column| column.required).collect();
        assert_eq!(required, [true, false, true, true]);
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
    fn tensor_signature_gives_the_dtype_and_width() {
        let with_inputs = |inputs: &str| {
            MLMODEL.replace(
                r#"'[{"type": "float", "name": "a", "required": true}, {"type": "double", "name": "b", "required": true}]'"#,
                inputs,
            )
        };
        let text = with_inputs(
            r#"'[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'"#,
        );
        assert_eq!(
            MlModel::parse(&text, "m").unwrap().signature,
            InputSignature::Tensor {
                dtype: SignatureType::Float,
                width: Some(4)
            }
        );
        for (inputs, message) in [
            (
                r#"'[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4, 2]}}]'"#,
                "shape [-1, 4, 2]",
            ),
            (
                r#"'[{"type": "tensor", "tensor-spec": {"dtype": "float16", "shape": [-1, 4]}}]'"#,
                "dtype `float16`",
            ),
            (
                r#"'[{"type": "tensor", "name": "x", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}, {"type": "tensor", "name": "y", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'"#,
                "it has 2 inputs",
            ),
        ] {
            let error = MlModel::parse(&with_inputs(inputs), "m")
                .unwrap_err()
                .to_string();
            assert!(error.contains(message), "{error}");
        }
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
    fn column_of_a_type_json_cannot_carry_is_refused() {
        let text = MLMODEL.replace(r#""type": "double""#, r#""type": "binary""#);
        let error = MlModel::parse(&text, "m").unwrap_err().to_string();
        assert!(error.contains("input `b` has type `binary`"), "{error}");
    }

    #[test]
    fn paths_outside_the_model_directory_are_recognised() {
        for inside in ["model.onnx", "data/weights.bin", "./model.onnx"] {
            assert!(is_inside_directory(inside), "{inside}");
        }
        for outside in [
            "",
            "/etc/passwd",
            "../model.onnx",
            "data/../../x",
            "model.onnx\nforged",
            "w\u{0}.bin",
            "data/w\r.bin",
            ".bike-prediction-download.json",
            "data/.bike-prediction-download.json",
        ] {
            assert!(!is_inside_directory(outside), "{outside:?}");
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
            initializer: vec![external("sub.bin")],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    attribute: vec![AttributeProto {
                        t: Some(external("const.bin")),
                        g: Some(Box::new(subgraph)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                initializer: vec![
                    external("weights.bin"),
                    TensorProto::default(),
                    external("weights.bin"),
                ],
                output: vec![],
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

    /// The classes of `output` in the ONNX model `onnx`.
    fn class_labels(onnx: &[u8], output: &str) -> Option<Vec<String>> {
        OnnxGraph::parse(onnx, "m").unwrap().class_labels(output)
    }

    #[test]
    fn class_labels_are_read_from_any_classifier_attribute() {
        use onnx_proto::*;
        use prost::Message as _;
        let model = |name: &str, ints: Vec<i64>, strings: Vec<Vec<u8>>| {
            ModelProto {
                graph: Some(GraphProto {
                    node: vec![NodeProto {
                        output: vec!["probabilities".into()],
                        attribute: vec![AttributeProto {
                            name: name.into(),
                            ints,
                            strings,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    initializer: vec![],
                    output: vec![],
                }),
            }
            .encode_to_vec()
        };
        for name in ["classlabels_int64s", "classlabels_ints"] {
            let labels = class_labels(&model(name, vec![0, 2, 7], vec![]), "probabilities");
            assert_eq!(labels.unwrap(), ["0", "2", "7"], "{name}");
        }
        let strings = model(
            "classlabels_strings",
            vec![],
            vec![b"low".to_vec(), b"high".to_vec()],
        );
        let labels = class_labels(&strings, "probabilities");
        assert_eq!(labels.unwrap(), ["low", "high"]);
        let labels = class_labels(&model("axis", vec![1], vec![]), "probabilities");
        assert_eq!(labels, None);
    }

    #[test]
    fn class_labels_come_from_the_classifier_that_produces_the_probabilities() {
        use onnx_proto::*;
        use prost::Message as _;
        let classifier = |input: &str, outputs: [&str; 2], labels: [&str; 3]| NodeProto {
            op_type: "LinearClassifier".into(),
            input: vec![input.into()],
            output: outputs.map(String::from).to_vec(),
            attribute: vec![AttributeProto {
                name: "classlabels_strings".into(),
                strings: labels.map(|l| l.as_bytes().to_vec()).to_vec(),
                ..Default::default()
            }],
        };
        let normalizer = NodeProto {
            op_type: "Normalizer".into(),
            input: vec!["raw".into()],
            output: vec!["probabilities".into()],
            attribute: vec![],
        };
        let graph = |nodes: Vec<NodeProto>| {
            ModelProto {
                graph: Some(GraphProto {
                    node: nodes,
                    initializer: vec![],
                    output: vec![],
                }),
            }
            .encode_to_vec()
        };
        let onnx = graph(vec![
            classifier("input", ["aux_label", "aux"], ["c", "b", "a"]),
            classifier("input", ["label", "raw"], ["a", "b", "c"]),
            normalizer.clone(),
        ]);
        let labels = class_labels(&onnx, "probabilities");
        assert_eq!(labels.unwrap(), ["a", "b", "c"]);
        // Not on the way back, and two classifiers disagree: nobody can say.
        let onnx = graph(vec![
            classifier("input", ["aux_label", "aux"], ["c", "b", "a"]),
            classifier("input", ["label", "other"], ["a", "b", "c"]),
        ]);
        assert_eq!(class_labels(&onnx, "probabilities"), None);
    }

    #[test]
    fn numbered_columns_of_a_dataframe_built_from_an_array_are_keyed_by_their_number() {
        let text = MLMODEL.replace(
            r#"'[{"type": "float", "name": "a", "required": true}, {"type": "double", "name": "b", "required": true}]'"#,
            r#"'[{"type": "double", "name": 0, "required": true}, {"type": "double", "name": 1, "required": true}]'"#,
        );
        let mlmodel = MlModel::parse(&text, "m").unwrap();
        assert_eq!(mlmodel.signature.column_names(), ["0", "1"]);
    }

    #[test]
    fn not_yaml_is_refused() {
        assert!(matches!(
            MlModel::parse("flavors: [", "m"),
            Err(ArtifactError::Invalid { .. })
        ));
    }
}
