//! ONNX → `model::graph::Graph`: decodes the protobuf, maps each supported op to the IR, and
//! folds batch-norms and constant affine chains into the layers before them. Runs nothing.

use super::proto::{attribute_type, data_type, AttributeProto, ModelProto, NodeProto, TensorProto};
use crate::error::{Error, Result};
use crate::model::graph::{Graph, GraphInput, GraphSpec, Node, Op};
use crate::tensor::Tensor;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The ONNX ops the importer understands.
pub const SUPPORTED_OPS: [&str; 17] = [
    "Conv",
    "BatchNormalization",
    "PRelu",
    "Relu",
    "Sigmoid",
    "Add",
    "Sub",
    "Mul",
    "MaxPool",
    "Resize",
    "Transpose",
    "Reshape",
    "Flatten",
    "Gemm",
    "MatMul",
    "Dropout",
    "Identity",
];

fn err(msg: impl Into<String>) -> Error {
    Error::Onnx(msg.into())
}

/// A constant from the initializers: f32 values or integers, with its dims.
#[derive(Clone, Debug)]
enum Const {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<i64>),
}

fn decode_tensor(t: &TensorProto) -> Result<Const> {
    if !t.external_data.is_empty() || t.data_location == 1 {
        return Err(err(format!(
            "initializer `{}` keeps its data in an external file, which is not supported",
            t.name
        )));
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| err(format!("`{}` has dim {d}", t.name))))
        .collect::<Result<_>>()?;
    // The element count is checked before anything is sized from it: dims whose product
    // overflows would otherwise wrap to a small number and match a short data field.
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            err(format!(
                "initializer `{}` has dims {:?} whose element count overflows",
                t.name, t.dims
            ))
        })?;
    let raw = &t.raw_data;
    let c = match t.data_type {
        data_type::FLOAT => {
            let v: Vec<f32> = if !raw.is_empty() {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            } else {
                t.float_data.clone()
            };
            Const::F32(dims, v)
        }
        data_type::DOUBLE => {
            let v: Vec<f32> = if !raw.is_empty() {
                raw.chunks_exact(8)
                    .map(|c| {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                    })
                    .collect()
            } else {
                t.double_data.iter().map(|&v| v as f32).collect()
            };
            Const::F32(dims, v)
        }
        data_type::INT64 => {
            let v: Vec<i64> = if !raw.is_empty() {
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()
            } else {
                t.int64_data.clone()
            };
            Const::I64(v)
        }
        data_type::INT32 => {
            let v: Vec<i64> = if !raw.is_empty() {
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect()
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            Const::I64(v)
        }
        other => {
            return Err(err(format!(
                "initializer `{}` has data type {other}; only float, double, int32 and int64 are supported",
                t.name
            )))
        }
    };
    let len = match &c {
        Const::F32(_, v) => v.len(),
        Const::I64(v) => v.len(),
    };
    if len != n {
        return Err(err(format!(
            "initializer `{}` has {len} values for dims {:?}",
            t.name, t.dims
        )));
    }
    Ok(c)
}

struct Attrs<'a> {
    node: &'a NodeProto,
    map: HashMap<&'a str, &'a AttributeProto>,
}

impl<'a> Attrs<'a> {
    fn new(node: &'a NodeProto) -> Self {
        Attrs {
            node,
            map: node
                .attribute
                .iter()
                .map(|a| (a.name.as_str(), a))
                .collect(),
        }
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.map.get(name).map_or(default, |a| a.i)
    }
    fn float(&self, name: &str, default: f32) -> f32 {
        self.map.get(name).map_or(default, |a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.map.get(name).map(|a| a.ints.clone())
    }
    fn string(&self, name: &str, default: &str) -> String {
        self.map.get(name).map_or(default.to_string(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }
    fn unsupported(&self, what: &str) -> Error {
        err(format!(
            "node `{}` ({}): {what} is not supported",
            self.node.name, self.node.op_type
        ))
    }
    /// Rejects any attribute outside `known`, so nothing is silently ignored.
    fn only(&self, known: &[&str]) -> Result<()> {
        for a in &self.node.attribute {
            if !known.contains(&a.name.as_str()) {
                return Err(self.unsupported(&format!("attribute `{}`", a.name)));
            }
            if a.r#type != 0
                && ![
                    attribute_type::FLOAT,
                    attribute_type::INT,
                    attribute_type::STRING,
                    attribute_type::INTS,
                    attribute_type::FLOATS,
                    attribute_type::TENSOR,
                ]
                .contains(&a.r#type)
            {
                return Err(
                    self.unsupported(&format!("attribute type {} of `{}`", a.r#type, a.name))
                );
            }
        }
        Ok(())
    }
}

/// Whether a constant broadcasts against NCHW as one value per channel: a scalar, or a single
/// non-1 dimension three from the end (`[C, 1, 1]`, `[1, C, 1, 1]`).
fn per_channel(dims: &[usize], numel: usize) -> bool {
    let non_one: Vec<usize> = (0..dims.len()).filter(|&i| dims[i] != 1).collect();
    numel == 1 || (non_one.len() == 1 && dims.len() - non_one[0] == 3)
}

fn to_usize(v: &[i64], what: &str) -> Result<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| err(format!("{what} holds negative value {x}"))))
        .collect()
}

/// Decodes ONNX bytes and converts them to a graph.
pub fn import_bytes(bytes: &[u8]) -> Result<Graph> {
    let model =
        ModelProto::decode(bytes).map_err(|e| err(format!("not a valid ONNX protobuf: {e}")))?;
    import_model(&model)
}

/// Reads and converts an `.onnx` file; the file name and its sha256 go into the metadata.
pub fn import_file(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut g = import_bytes(&bytes).map_err(|e| match e {
        Error::Onnx(m) => Error::Onnx(format!("{}: {m}", path.display())),
        other => other,
    })?;
    g.metadata.insert(
        "source_onnx".into(),
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    g.metadata.insert(
        "source_sha256".into(),
        crate::assets::sha256_reader(&bytes[..]).map_err(|e| Error::io(path, e))?,
    );
    Ok(g)
}

/// Converts a decoded model.
pub fn import_model(model: &ModelProto) -> Result<Graph> {
    for o in &model.opset_import {
        if (o.domain.is_empty() || o.domain == "ai.onnx") && !(7..=21).contains(&o.version) {
            return Err(err(format!(
                "opset {} is outside the supported 7..=21",
                o.version
            )));
        }
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| err("the model has no graph"))?;
    let mut consts: HashMap<&str, Const> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(t.name.as_str(), decode_tensor(t)?);
    }
    let has_reshape = graph.node.iter().any(|n| n.op_type == "Reshape");
    let mut inputs = Vec::new();
    for vi in &graph.input {
        if consts.contains_key(vi.name.as_str()) {
            continue; // IR < 4 lists initializers among the inputs.
        }
        let tt = vi
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| err(format!("input `{}` is not a tensor", vi.name)))?;
        if tt.elem_type != data_type::FLOAT {
            return Err(err(format!(
                "input `{}` has element type {}; only float inputs are supported",
                vi.name, tt.elem_type
            )));
        }
        let mut shape: Vec<Option<usize>> = tt
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| d.dim_value.filter(|&v| v > 0).map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default();
        // Let the batch vary when no Reshape could have baked a batch size into the graph.
        if !has_reshape && shape.len() == 4 {
            shape[0] = None;
        }
        inputs.push(GraphInput {
            name: vi.name.clone(),
            shape,
        });
    }
    if inputs.is_empty() {
        return Err(err("the graph has no non-constant input"));
    }
    let mut b = Builder {
        consts,
        nodes: Vec::new(),
        params: BTreeMap::new(),
    };
    for (idx, n) in graph.node.iter().enumerate() {
        b.convert(idx, n)?;
    }
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut g = Graph {
        spec: GraphSpec {
            inputs,
            outputs,
            nodes: b.nodes,
        },
        params: b.params,
        metadata: BTreeMap::new(),
    };
    fold_affines(&mut g)?;
    prune_params(&mut g);
    g.validate()?;
    g.metadata
        .insert("producer".into(), model.producer_name.clone());
    Ok(g)
}

struct Builder<'a> {
    consts: HashMap<&'a str, Const>,
    nodes: Vec<Node>,
    params: BTreeMap<String, Tensor>,
}

impl<'a> Builder<'a> {
    fn f32_const(&self, name: &str, node: &NodeProto) -> Result<(Vec<usize>, Vec<f32>)> {
        match self.consts.get(name) {
            Some(Const::F32(d, v)) => Ok((d.clone(), v.clone())),
            Some(Const::I64(..)) => Err(err(format!(
                "node `{}` ({}): input `{name}` must be a float constant",
                node.name, node.op_type
            ))),
            None => Err(err(format!(
                "node `{}` ({}): input `{name}` must be a constant initializer",
                node.name, node.op_type
            ))),
        }
    }

    fn add_param(&mut self, name: String, shape: &[usize], data: Vec<f32>) -> Result<String> {
        self.params.insert(name.clone(), Tensor::new(shape, data)?);
        Ok(name)
    }

    fn push(&mut self, name: String, op: Op, inputs: Vec<String>, output: &str) {
        self.nodes.push(Node {
            name,
            op,
            inputs,
            output: output.to_string(),
        });
    }

    fn convert(&mut self, idx: usize, n: &'a NodeProto) -> Result<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(err(format!(
                "node `{}`: op {}::{} from a custom domain is not supported",
                n.name, n.domain, n.op_type
            )));
        }
        let name = if n.name.is_empty() {
            format!("n{idx}_{}", n.op_type)
        } else {
            n.name.clone()
        };
        let a = Attrs::new(n);
        let output = n
            .output
            .first()
            .ok_or_else(|| err(format!("node `{name}` has no output")))?;
        let node_name = name.clone();
        let input = |i: usize| -> Result<String> {
            n.input
                .get(i)
                .filter(|s| !s.is_empty())
                .cloned()
                .ok_or_else(|| {
                    err(format!(
                        "node `{node_name}` ({}) lacks input {i}",
                        n.op_type
                    ))
                })
        };
        match n.op_type.as_str() {
            "Conv" => {
                a.only(&[
                    "kernel_shape",
                    "strides",
                    "pads",
                    "group",
                    "dilations",
                    "auto_pad",
                ])?;
                if a.string("auto_pad", "NOTSET") != "NOTSET" {
                    return Err(a.unsupported("auto_pad other than NOTSET"));
                }
                if a.ints("dilations")
                    .is_some_and(|d| d.iter().any(|&x| x != 1))
                {
                    return Err(a.unsupported("dilation other than 1"));
                }
                let (wd, wv) = self.f32_const(&input(1)?, n)?;
                if wd.len() != 4 {
                    return Err(a.unsupported(&format!("a {}-D conv weight", wd.len())));
                }
                if let Some(ks) = a.ints("kernel_shape") {
                    if to_usize(&ks, "kernel_shape")? != wd[2..] {
                        return Err(err(format!(
                            "node `{name}`: kernel_shape disagrees with its weight"
                        )));
                    }
                }
                let s = to_usize(&a.ints("strides").unwrap_or(vec![1, 1]), "strides")?;
                let p = to_usize(&a.ints("pads").unwrap_or(vec![0; 4]), "pads")?;
                if s.len() != 2 || p.len() != 4 {
                    return Err(a.unsupported("a non-2-D stride or pad list"));
                }
                let groups = usize::try_from(a.int("group", 1))
                    .map_err(|_| err(format!("node `{name}`: bad group")))?;
                let weight = self.add_param(format!("{name}.weight"), &wd, wv)?;
                let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                    Some(bn) => {
                        let (bd, bv) = self.f32_const(bn, n)?;
                        Some(self.add_param(format!("{name}.bias"), &[bd.iter().product()], bv)?)
                    }
                    None => None,
                };
                let op = Op::Conv {
                    weight,
                    bias,
                    stride: [s[0], s[1]],
                    // ONNX orders pads as (begin_h, begin_w, end_h, end_w).
                    pads: [p[0], p[1], p[2], p[3]],
                    groups,
                };
                self.push(name, op, vec![input(0)?], output);
            }
            "BatchNormalization" => {
                a.only(&["epsilon", "momentum", "spatial", "training_mode"])?;
                if a.int("training_mode", 0) != 0 {
                    return Err(a.unsupported("training_mode=1"));
                }
                let eps = a.float("epsilon", 1e-5);
                let (_, gamma) = self.f32_const(&input(1)?, n)?;
                let (_, beta) = self.f32_const(&input(2)?, n)?;
                let (_, mean) = self.f32_const(&input(3)?, n)?;
                let (_, var) = self.f32_const(&input(4)?, n)?;
                let c = gamma.len();
                if beta.len() != c || mean.len() != c || var.len() != c {
                    return Err(err(format!(
                        "node `{name}`: BN parameters differ in length"
                    )));
                }
                let scale: Vec<f32> = (0..c).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
                let shift: Vec<f32> = (0..c).map(|i| beta[i] - mean[i] * scale[i]).collect();
                let sc = self.add_param(format!("{name}.scale"), &[c], scale)?;
                let sh = self.add_param(format!("{name}.shift"), &[c], shift)?;
                self.push(
                    name,
                    Op::Affine {
                        scale: sc,
                        shift: sh,
                    },
                    vec![input(0)?],
                    output,
                );
            }
            "Sub" | "Mul" => {
                a.only(&[])?;
                let (d, v) = self.f32_const(&input(1)?, n).map_err(|_| {
                    a.unsupported("anything but a value combined with a constant (in that order)")
                })?;
                if !per_channel(&d, v.len()) {
                    return Err(a.unsupported(&format!("a constant of shape {d:?}")));
                }
                let c = v.len();
                let (scale, shift) = if n.op_type == "Sub" {
                    (vec![1.0; c], v.iter().map(|x| -x).collect())
                } else {
                    (v, vec![0.0; c])
                };
                let sc = self.add_param(format!("{name}.scale"), &[c], scale)?;
                let sh = self.add_param(format!("{name}.shift"), &[c], shift)?;
                self.push(
                    name,
                    Op::Affine {
                        scale: sc,
                        shift: sh,
                    },
                    vec![input(0)?],
                    output,
                );
            }
            "PRelu" => {
                a.only(&[])?;
                let (d, v) = self.f32_const(&input(1)?, n)?;
                if !per_channel(&d, v.len()) {
                    return Err(a.unsupported(&format!("a slope of shape {d:?}")));
                }
                let c = v.len();
                let slope = self.add_param(format!("{name}.slope"), &[c], v)?;
                self.push(name, Op::PRelu { slope }, vec![input(0)?], output);
            }
            "Relu" | "Sigmoid" | "Dropout" | "Identity" => {
                a.only(&["ratio", "seed", "is_test"])?;
                let op = match n.op_type.as_str() {
                    "Relu" => Op::Relu,
                    "Sigmoid" => Op::Sigmoid,
                    _ => Op::Identity,
                };
                self.push(name, op, vec![input(0)?], output);
            }
            "Add" => {
                a.only(&[])?;
                let (x, y) = (input(0)?, input(1)?);
                if self.consts.contains_key(x.as_str()) || self.consts.contains_key(y.as_str()) {
                    return Err(a.unsupported("Add with a constant"));
                }
                self.push(name, Op::Add, vec![x, y], output);
            }
            "MaxPool" => {
                a.only(&[
                    "kernel_shape",
                    "strides",
                    "pads",
                    "ceil_mode",
                    "dilations",
                    "auto_pad",
                    "storage_order",
                ])?;
                if a.int("ceil_mode", 0) != 0 || a.string("auto_pad", "NOTSET") != "NOTSET" {
                    return Err(a.unsupported("ceil_mode or auto_pad"));
                }
                if a.ints("dilations")
                    .is_some_and(|d| d.iter().any(|&x| x != 1))
                {
                    return Err(a.unsupported("dilation other than 1"));
                }
                if n.output.len() > 1 {
                    return Err(a.unsupported("the Indices output"));
                }
                let k = to_usize(&a.ints("kernel_shape").unwrap_or_default(), "kernel_shape")?;
                let s = to_usize(&a.ints("strides").unwrap_or(vec![1, 1]), "strides")?;
                let p = to_usize(&a.ints("pads").unwrap_or(vec![0; 4]), "pads")?;
                if k.len() != 2 || s.len() != 2 || p.len() != 4 {
                    return Err(a.unsupported("a non-2-D pooling window"));
                }
                let op = Op::MaxPool {
                    kernel: [k[0], k[1]],
                    stride: [s[0], s[1]],
                    pads: [p[0], p[1], p[2], p[3]],
                };
                self.push(name, op, vec![input(0)?], output);
            }
            "Resize" | "Upsample" => {
                a.only(&[
                    "mode",
                    "coordinate_transformation_mode",
                    "nearest_mode",
                    "cubic_coeff_a",
                    "exclude_outside",
                    "extrapolation_value",
                ])?;
                if a.string("mode", "nearest") != "nearest" {
                    return Err(a.unsupported("a mode other than nearest"));
                }
                if a.string("coordinate_transformation_mode", "half_pixel") != "asymmetric"
                    && n.op_type == "Resize"
                {
                    return Err(a.unsupported("a coordinate transformation other than asymmetric"));
                }
                if a.string("nearest_mode", "round_prefer_floor") != "floor"
                    && n.op_type == "Resize"
                {
                    return Err(a.unsupported("a nearest_mode other than floor"));
                }
                let scales_name = if n.op_type == "Upsample" {
                    input(1)?
                } else {
                    input(2)?
                };
                let (_, sc) = self.f32_const(&scales_name, n)?;
                if sc.len() != 4 || sc[0] != 1.0 || sc[1] != 1.0 {
                    return Err(
                        a.unsupported(&format!("scales {sc:?} (only spatial scaling of NCHW)"))
                    );
                }
                self.push(
                    name,
                    Op::ResizeNearest {
                        scale: [sc[2], sc[3]],
                    },
                    vec![input(0)?],
                    output,
                );
            }
            "Transpose" => {
                a.only(&["perm"])?;
                let perm = to_usize(
                    &a.ints("perm")
                        .ok_or_else(|| a.unsupported("Transpose without perm"))?,
                    "perm",
                )?;
                self.push(name, Op::Transpose { perm }, vec![input(0)?], output);
            }
            "Reshape" => {
                a.only(&["allowzero"])?;
                if a.int("allowzero", 0) != 0 {
                    return Err(a.unsupported("allowzero=1"));
                }
                let shape = match self.consts.get(input(1)?.as_str()) {
                    Some(Const::I64(v)) => v.clone(),
                    _ => return Err(a.unsupported("a shape that is not an int64 constant")),
                };
                self.push(name, Op::Reshape { shape }, vec![input(0)?], output);
            }
            "Flatten" => {
                a.only(&["axis"])?;
                let axis = usize::try_from(a.int("axis", 1))
                    .map_err(|_| a.unsupported("a negative flatten axis"))?;
                self.push(name, Op::Flatten { axis }, vec![input(0)?], output);
            }
            "Gemm" | "MatMul" => {
                let (trans_b, alpha, beta) = if n.op_type == "Gemm" {
                    a.only(&["alpha", "beta", "transA", "transB"])?;
                    if a.int("transA", 0) != 0 {
                        return Err(a.unsupported("transA=1"));
                    }
                    (
                        a.int("transB", 0) != 0,
                        a.float("alpha", 1.0),
                        a.float("beta", 1.0),
                    )
                } else {
                    a.only(&[])?;
                    (false, 1.0, 1.0)
                };
                let (bd, bv) = self.f32_const(&input(1)?, n)?;
                if bd.len() != 2 {
                    return Err(a.unsupported(&format!("a {}-D weight", bd.len())));
                }
                // Our linear wants [m, k]; ONNX's B is [k, m] unless transB.
                let (m, k) = if trans_b {
                    (bd[0], bd[1])
                } else {
                    (bd[1], bd[0])
                };
                let mut w = vec![0.0f32; m * k];
                for o in 0..m {
                    for i in 0..k {
                        w[o * k + i] = alpha
                            * if trans_b {
                                bv[o * k + i]
                            } else {
                                bv[i * m + o]
                            };
                    }
                }
                let weight = self.add_param(format!("{name}.weight"), &[m, k], w)?;
                let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
                    Some(cn) => {
                        let (_, cv) = self.f32_const(cn, n)?;
                        let cv: Vec<f32> = match cv.len() {
                            1 => vec![cv[0] * beta; m],
                            l if l == m => cv.iter().map(|v| v * beta).collect(),
                            _ => return Err(a.unsupported("a bias that is not per output")),
                        };
                        Some(self.add_param(format!("{name}.bias"), &[m], cv)?)
                    }
                    None => None,
                };
                self.push(name, Op::Linear { weight, bias }, vec![input(0)?], output);
            }
            other => {
                return Err(err(format!(
                    "op `{other}` (node `{name}`) is not supported; the importer handles {}",
                    SUPPORTED_OPS.join(", ")
                )))
            }
        }
        Ok(())
    }
}

/// Folds each `Affine` into the Conv, Linear or Affine that alone feeds it, so BN costs nothing
/// at run time. An affine whose producer has other readers (or is a graph output) stays.
fn fold_affines(g: &mut Graph) -> Result<()> {
    loop {
        let mut readers: HashMap<String, usize> = HashMap::new();
        for n in &g.spec.nodes {
            for i in &n.inputs {
                *readers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &g.spec.outputs {
            *readers.entry(o.clone()).or_default() += 1;
        }
        let mut done = false;
        for ai in 0..g.spec.nodes.len() {
            let Op::Affine { scale, shift } = g.spec.nodes[ai].op.clone() else {
                continue;
            };
            let src = g.spec.nodes[ai].inputs[0].clone();
            let Some(pi) = g.spec.nodes.iter().position(|n| n.output == src) else {
                continue;
            };
            if readers.get(&src) != Some(&1) {
                continue;
            }
            let sc = g.params[&scale].data().to_vec();
            let sh = g.params[&shift].data().to_vec();
            let producer = g.spec.nodes[pi].clone();
            let folded = match &producer.op {
                Op::Conv { weight, bias, .. } | Op::Linear { weight, bias } => {
                    let c_out = g.params[weight].shape()[0];
                    if sc.len() != c_out && sc.len() != 1 {
                        continue;
                    }
                    let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
                    let mut w = g.params[weight].clone();
                    let row = w.numel() / c_out;
                    for (oc, chunk) in w.data_mut().chunks_mut(row).enumerate() {
                        for x in chunk {
                            *x *= at(&sc, oc);
                        }
                    }
                    let old_b = bias
                        .as_ref()
                        .map(|b| g.params[b].data().to_vec())
                        .unwrap_or(vec![0.0; c_out]);
                    let b: Vec<f32> = (0..c_out)
                        .map(|oc| old_b[oc] * at(&sc, oc) + at(&sh, oc))
                        .collect();
                    let bias_name = format!("{}.bias", producer.name);
                    g.params.insert(weight.clone(), w);
                    g.params
                        .insert(bias_name.clone(), Tensor::new(&[c_out], b)?);
                    let mut op = producer.op.clone();
                    match &mut op {
                        Op::Conv { bias, .. } | Op::Linear { bias, .. } => *bias = Some(bias_name),
                        _ => unreachable!("matched above"),
                    }
                    op
                }
                Op::Affine {
                    scale: s1,
                    shift: t1,
                } => {
                    let (s1v, t1v) = (g.params[s1].data().to_vec(), g.params[t1].data().to_vec());
                    let c = s1v.len().max(sc.len());
                    if (s1v.len() != 1 && s1v.len() != c) || (sc.len() != 1 && sc.len() != c) {
                        continue;
                    }
                    let at = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
                    let ns: Vec<f32> = (0..c).map(|i| at(&s1v, i) * at(&sc, i)).collect();
                    let nt: Vec<f32> = (0..c)
                        .map(|i| at(&t1v, i) * at(&sc, i) + at(&sh, i))
                        .collect();
                    g.params.insert(s1.clone(), Tensor::new(&[c], ns)?);
                    g.params.insert(t1.clone(), Tensor::new(&[c], nt)?);
                    producer.op.clone()
                }
                _ => continue,
            };
            let out = g.spec.nodes[ai].output.clone();
            g.spec.nodes[pi].op = folded;
            g.spec.nodes[pi].output = out;
            g.spec.nodes.remove(ai);
            done = true;
            break;
        }
        if !done {
            return Ok(());
        }
    }
}

/// Drops parameters no node reads (e.g. the BN statistics after folding).
fn prune_params(g: &mut Graph) {
    let used: std::collections::HashSet<String> = g
        .spec
        .nodes
        .iter()
        .flat_map(|n| n.op.params().into_iter().map(str::to_string))
        .collect();
    g.params.retain(|k, _| used.contains(k));
}

#[cfg(test)]
mod tests {
    use super::super::proto::*;
    use super::*;

    fn model_with(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> ModelProto {
        let dim = |v: i64| Dimension {
            dim_value: Some(v),
            dim_param: None,
        };
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![ValueInfoProto {
                    name: "x".into(),
                    r#type: Some(TypeProto {
                        tensor_type: Some(TypeProtoTensor {
                            elem_type: data_type::FLOAT,
                            shape: Some(TensorShapeProto {
                                dim: vec![dim(1), dim(2), dim(2), dim(2)],
                            }),
                        }),
                    }),
                    ..Default::default()
                }],
                output: vec![ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            float_data: v.to_vec(),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], out: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            ..Default::default()
        }
    }

    #[test]
    fn an_unsupported_op_is_an_error_naming_it() {
        let m = model_with(vec![node("Softmax", &["x"], "y")], vec![]);
        let e = import_bytes(&m.encode_to_vec()).unwrap_err().to_string();
        assert!(e.contains("Softmax") && e.contains("not supported"), "{e}");
        assert!(import_bytes(b"\xff\xff not protobuf").is_err());
    }

    #[test]
    fn conv_then_batchnorm_folds_into_one_conv_with_the_same_output() {
        // 1×1 conv 2→2 channels, then BN; folded it must be a single Conv node.
        let m = model_with(
            vec![
                node("Conv", &["x", "w"], "c"),
                node("BatchNormalization", &["c", "g", "b", "m", "v"], "y"),
            ],
            vec![
                floats("w", &[2, 2, 1, 1], &[1.0, 2.0, -1.0, 0.5]),
                floats("g", &[2], &[2.0, 0.5]),
                floats("b", &[2], &[0.1, -0.2]),
                floats("m", &[2], &[0.3, 1.0]),
                floats("v", &[2], &[4.0, 0.25]),
            ],
        );
        let g = import_bytes(&m.encode_to_vec()).unwrap();
        assert_eq!(g.spec.nodes.len(), 1);
        assert!(matches!(g.spec.nodes[0].op, Op::Conv { .. }));
        // Batch 3 is allowed: no Reshape bakes in the file's batch of 1.
        assert_eq!(g.spec.inputs[0].shape, [None, Some(2), Some(2), Some(2)]);
        let xs: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect();
        let x = Tensor::new(&[1, 2, 2, 2], xs.clone()).unwrap();
        let y = g
            .run(&crate::cpu::Kernels::scalar(), vec![("x".into(), x)])
            .unwrap();
        let eps = 1e-5f32;
        for p in 0..4 {
            let (a, b) = (xs[p], xs[4 + p]);
            let c0 = a + 2.0 * b;
            let c1 = -a + 0.5 * b;
            let y0 = (c0 - 0.3) / (4.0 + eps).sqrt() * 2.0 + 0.1;
            let y1 = (c1 - 1.0) / (0.25 + eps).sqrt() * 0.5 - 0.2;
            assert!((y[0].data()[p] - y0).abs() < 1e-5);
            assert!((y[0].data()[4 + p] - y1).abs() < 1e-5);
        }
    }
}
