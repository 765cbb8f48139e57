//! The ONNX protobuf, at the level the rewrite needs: the model's fields walked as bytes (so
//! that everything not touched is kept exactly as written, fields this code does not know
//! included), and the tree-ensemble nodes decoded.

use prost::Message as _;
use prost::encoding::{decode_varint, encode_varint};

use super::ensemble::Attributes;

/// `ModelProto.ir_version`.
const MODEL_IR_VERSION: u32 = 1;
/// `ModelProto.graph`.
const MODEL_GRAPH: u32 = 7;
/// `ModelProto.opset_import`.
const MODEL_OPSET_IMPORT: u32 = 8;
/// `GraphProto.node`.
const GRAPH_NODE: u32 = 1;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One field of a protobuf message, as written.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// The wire type.
    pub wire: u8,
    /// The whole field: key and value.
    pub raw: &'a [u8],
    /// A length-delimited field's contents (empty for the other wire types).
    pub payload: &'a [u8],
}

/// The fields of a message, in order; `None` if the bytes are not a well-formed message (or use
/// the deprecated groups).
pub fn fields(mut bytes: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let key = decode_varint(&mut bytes).ok()?;
        let number = u32::try_from(key >> 3).ok()?;
        let wire = (key & 7) as u8;
        let mut payload: &[u8] = &[];
        match wire {
            VARINT => {
                decode_varint(&mut bytes).ok()?;
            }
            FIXED64 => bytes = bytes.get(8..)?,
            FIXED32 => bytes = bytes.get(4..)?,
            LEN => {
                let len = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
                payload = bytes.get(..len)?;
                bytes = bytes.get(len..)?;
            }
            _ => return None,
        }
        let used = start.len() - bytes.len();
        fields.push(Field {
            number,
            wire,
            raw: start.get(..used)?,
            payload,
        });
    }
    Some(fields)
}

/// Appends a length-delimited field.
pub fn put_len(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    encode_varint(u64::from(number) << 3 | u64::from(LEN), out);
    encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The model with every node of its main graph passed through `node`, which returns the bytes
/// of the node to write instead, or `None` to keep it; `None` if the bytes are not an ONNX
/// model this can walk.
pub fn map_nodes(onnx: &[u8], mut node: impl FnMut(&[u8]) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(onnx.len());
    for field in fields(onnx)? {
        if field.number != MODEL_GRAPH || field.wire != LEN {
            out.extend_from_slice(field.raw);
            continue;
        }
        let mut graph = Vec::with_capacity(field.payload.len());
        for graph_field in fields(field.payload)? {
            match (graph_field.number, graph_field.wire) {
                (GRAPH_NODE, LEN) => match node(graph_field.payload) {
                    Some(replacement) => put_len(&mut graph, GRAPH_NODE, &replacement),
                    None => graph.extend_from_slice(graph_field.raw),
                },
                _ => graph.extend_from_slice(graph_field.raw),
            }
        }
        put_len(&mut out, MODEL_GRAPH, &graph);
    }
    Some(out)
}

/// The model's `ir_version` and `opset_import` fields, as written (for a model of one node
/// that keeps the original's versions).
pub fn versions(onnx: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields(onnx).unwrap_or_default() {
        if field.number == MODEL_IR_VERSION || field.number == MODEL_OPSET_IMPORT {
            out.extend_from_slice(field.raw);
        }
    }
    out
}

/// The bytes to append to a model so that it imports operator set `domain`, version 1
/// (protobuf merges a repeated field written again into the one before).
pub fn import_domain(domain: &str) -> Vec<u8> {
    let opset = OperatorSetIdProto {
        domain: domain.to_owned(),
        version: 1,
    };
    let mut out = Vec::new();
    put_len(&mut out, MODEL_OPSET_IMPORT, &opset.encode_to_vec());
    out
}

/// A node's bytes for `op_type` in `domain` with one integer attribute.
pub fn node(
    name: &str,
    inputs: &[String],
    outputs: &[String],
    (domain, op_type): (&str, &str),
    (attribute, value): (&str, i64),
) -> Vec<u8> {
    NodeProto {
        input: inputs.to_vec(),
        output: outputs.to_vec(),
        name: name.to_owned(),
        op_type: op_type.to_owned(),
        domain: domain.to_owned(),
        attribute: vec![AttributeProto {
            name: attribute.to_owned(),
            r#type: ATTRIBUTE_INT,
            i: value,
            ..AttributeProto::default()
        }],
    }
    .encode_to_vec()
}

/// A model of one graph: `node` (as written), float input `input` of shape `[N, width]` and
/// the `outputs` (name and `TensorProto.DataType`), with the versions of the model it comes
/// from ([`versions`]).
pub fn single_node_model(
    versions: &[u8],
    node: &[u8],
    (input, width): (&str, usize),
    outputs: &[(String, i32)],
) -> Vec<u8> {
    let tensor = |name: &str, elem_type: i32, shape: Option<TensorShapeProto>| ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type, shape }),
        }),
    };
    let rows = Dimension {
        dim_value: None,
        dim_param: Some("N".to_owned()),
    };
    let columns = Dimension {
        dim_value: Some(width as i64),
        dim_param: None,
    };
    let shape = TensorShapeProto {
        dim: vec![rows, columns],
    };
    let mut graph = Vec::new();
    put_len(&mut graph, GRAPH_NODE, node);
    let rest = GraphProto {
        name: "probe".to_owned(),
        input: vec![tensor(input, FLOAT, Some(shape))],
        output: outputs
            .iter()
            .map(|(name, elem)| tensor(name, *elem, None))
            .collect(),
    };
    graph.extend(rest.encode_to_vec());
    let mut model = versions.to_vec();
    put_len(&mut model, MODEL_GRAPH, &graph);
    model
}

/// A model of one `TreeEnsembleRegressor` node with `attributes` (the `*_as_tensor` ones as
/// `double` tensors), float input `X` and output `Y`, in ONNX IR 8 with the default opset 17
/// and `ai.onnx.ml` 3.
pub fn regressor_model(a: &Attributes) -> Vec<u8> {
    let ints = |name: &str, ints: &[i64]| AttributeProto {
        name: name.to_owned(),
        r#type: ATTRIBUTE_INTS,
        ints: ints.to_vec(),
        ..AttributeProto::default()
    };
    let floats = |name: &str, floats: &[f32]| AttributeProto {
        name: name.to_owned(),
        r#type: ATTRIBUTE_FLOATS,
        floats: floats.to_vec(),
        ..AttributeProto::default()
    };
    let doubles = |name: &str, values: &[f64]| AttributeProto {
        name: name.to_owned(),
        r#type: ATTRIBUTE_TENSOR,
        t: Some(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DOUBLE,
            double_data: values.to_vec(),
            ..TensorProto::default()
        }),
        ..AttributeProto::default()
    };
    let text = |name: &str, value: &Option<Vec<u8>>| {
        value.as_ref().map(|s| AttributeProto {
            name: name.to_owned(),
            r#type: ATTRIBUTE_STRING,
            s: s.clone(),
            ..AttributeProto::default()
        })
    };
    let mut attribute: Vec<AttributeProto> = [
        text("aggregate_function", &a.aggregate_function),
        text("post_transform", &a.post_transform),
        a.n_targets.map(|n| AttributeProto {
            name: "n_targets".to_owned(),
            r#type: ATTRIBUTE_INT,
            i: n,
            ..AttributeProto::default()
        }),
        Some(AttributeProto {
            name: "nodes_modes".to_owned(),
            r#type: ATTRIBUTE_STRINGS,
            strings: a.nodes_modes.clone(),
            ..AttributeProto::default()
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    attribute.extend([
        ints("nodes_treeids", &a.nodes_treeids),
        ints("nodes_nodeids", &a.nodes_nodeids),
        ints("nodes_featureids", &a.nodes_featureids),
        ints("nodes_truenodeids", &a.nodes_truenodeids),
        ints("nodes_falsenodeids", &a.nodes_falsenodeids),
        ints(
            "nodes_missing_value_tracks_true",
            &a.nodes_missing_value_tracks_true,
        ),
        ints("target_treeids", &a.target_treeids),
        ints("target_nodeids", &a.target_nodeids),
        ints("target_ids", &a.target_ids),
    ]);
    for (name, f32s, f64s) in [
        ("nodes_values", &a.nodes_values, &a.nodes_values_f64),
        ("target_weights", &a.target_weights, &a.target_weights_f64),
        ("base_values", &a.base_values, &a.base_values_f64),
    ] {
        if !f32s.is_empty() {
            attribute.push(floats(name, f32s));
        }
        if !f64s.is_empty() {
            attribute.push(doubles(&format!("{name}_as_tensor"), f64s));
        }
    }
    let node = NodeProto {
        input: vec!["X".to_owned()],
        output: vec!["Y".to_owned()],
        name: "trees".to_owned(),
        op_type: "TreeEnsembleRegressor".to_owned(),
        domain: "ai.onnx.ml".to_owned(),
        attribute,
    };
    let mut versions = Vec::new();
    encode_varint(
        u64::from(MODEL_IR_VERSION) << 3 | u64::from(VARINT),
        &mut versions,
    );
    encode_varint(8, &mut versions);
    for (domain, version) in [("", 17), ("ai.onnx.ml", 3)] {
        let opset = OperatorSetIdProto {
            domain: domain.to_owned(),
            version,
        };
        put_len(&mut versions, MODEL_OPSET_IMPORT, &opset.encode_to_vec());
    }
    let width = a
        .nodes_featureids
        .iter()
        .max()
        .map_or(1, |&f| f.max(0) as usize + 1);
    let outputs = [("Y".to_owned(), FLOAT)];
    single_node_model(&versions, &node.encode_to_vec(), ("X", width), &outputs)
}

/// A decoded node; `None` if the bytes are not a node.
pub fn decode_node(bytes: &[u8]) -> Option<NodeProto> {
    NodeProto::decode(bytes).ok()
}

impl NodeProto {
    /// The attributes of a tree-ensemble node, or why they cannot be read.
    pub fn tree_attributes(&self) -> Result<Attributes, String> {
        let mut a = Attributes {
            classifier: self.op_type == "TreeEnsembleClassifier",
            ..Attributes::default()
        };
        for attribute in &self.attribute {
            let tensor = || attribute.doubles(&attribute.name);
            match attribute.name.as_str() {
                "aggregate_function" => a.aggregate_function = Some(attribute.s.clone()),
                "post_transform" => a.post_transform = Some(attribute.s.clone()),
                "n_targets" => a.n_targets = Some(attribute.i),
                "base_values" => a.base_values.clone_from(&attribute.floats),
                "base_values_as_tensor" => a.base_values_f64 = tensor()?,
                "nodes_treeids" => a.nodes_treeids.clone_from(&attribute.ints),
                "nodes_nodeids" => a.nodes_nodeids.clone_from(&attribute.ints),
                "nodes_featureids" => a.nodes_featureids.clone_from(&attribute.ints),
                "nodes_modes" => a.nodes_modes.clone_from(&attribute.strings),
                "nodes_values" => a.nodes_values.clone_from(&attribute.floats),
                "nodes_values_as_tensor" => a.nodes_values_f64 = tensor()?,
                "nodes_truenodeids" => a.nodes_truenodeids.clone_from(&attribute.ints),
                "nodes_falsenodeids" => a.nodes_falsenodeids.clone_from(&attribute.ints),
                "nodes_missing_value_tracks_true" => a
                    .nodes_missing_value_tracks_true
                    .clone_from(&attribute.ints),
                // A classifier's votes are a regressor's targets, by another name.
                "target_treeids" | "class_treeids" => a.target_treeids.clone_from(&attribute.ints),
                "target_nodeids" | "class_nodeids" => a.target_nodeids.clone_from(&attribute.ints),
                "target_ids" | "class_ids" => a.target_ids.clone_from(&attribute.ints),
                "target_weights" | "class_weights" => {
                    a.target_weights.clone_from(&attribute.floats)
                }
                "target_weights_as_tensor" | "class_weights_as_tensor" => {
                    a.target_weights_f64 = tensor()?
                }
                "classlabels_int64s" => a.classlabels_int64s.clone_from(&attribute.ints),
                "classlabels_strings" => a.classlabels_strings.clone_from(&attribute.strings),
                // Not used for inference.
                "nodes_hitrates" => {}
                "nodes_hitrates_as_tensor" => {}
                other => return Err(format!("attribute {other:?} is not supported")),
            }
            if attribute.name.ends_with("_as_tensor") {
                a.as_tensor = true;
            }
        }
        Ok(a)
    }
}

impl AttributeProto {
    /// The values of a `double` tensor attribute.
    fn doubles(&self, name: &str) -> Result<Vec<f64>, String> {
        let Some(tensor) = &self.t else {
            return Err(format!("attribute {name:?} holds no tensor"));
        };
        if tensor.data_type != DOUBLE {
            return Err(format!("attribute {name:?} is not a double tensor"));
        }
        if tensor.data_location != 0 {
            return Err(format!(
                "attribute {name:?} keeps its data in an external file"
            ));
        }
        if !tensor.raw_data.is_empty() {
            if tensor.raw_data.len() % 8 != 0 {
                return Err(format!("attribute {name:?} has a partial value"));
            }
            return Ok(tensor
                .raw_data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(<[u8; 8]>::try_from(b).unwrap_or_default()))
                .collect());
        }
        Ok(tensor.double_data.clone())
    }
}

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
pub const INT64: i32 = 7;
/// `TensorProto.DataType.DOUBLE`.
const DOUBLE: i32 = 11;
/// `AttributeProto.AttributeType`: FLOAT, INT, STRING, TENSOR, FLOATS, INTS, STRINGS.
const ATTRIBUTE_INT: i32 = 2;
const ATTRIBUTE_STRING: i32 = 3;
const ATTRIBUTE_TENSOR: i32 = 4;
const ATTRIBUTE_FLOATS: i32 = 6;
const ATTRIBUTE_INTS: i32 = 7;
const ATTRIBUTE_STRINGS: i32 = 8;

// These messages decode a tree-ensemble node whole, attribute values and tensors included;
// `crate::artifact` has its own, which walk the whole graph but skip tensor contents (a model's
// initializers can be gigabytes).

/// The fields of onnx/onnx.proto's `NodeProto` the rewrite reads and writes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// Input names.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    /// Output names.
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    /// The node's name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// The operator.
    #[prost(string, tag = "4")]
    pub op_type: String,
    /// The operator's domain.
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Attributes.
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `AttributeProto`, the value kinds tree ensembles use.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "20")]
    r#type: i32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(bytes = "vec", tag = "4")]
    s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    strings: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

/// The graph fields a single-node model adds after its node.
#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a size, or a name for a size given at run time.
#[derive(Clone, PartialEq, prost::Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}
