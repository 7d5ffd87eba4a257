//! A small dataflow graph IR for imported networks (SFace, YuNet): nodes, named parameters, its
//! safetensors storage, and an executor that runs each node through `ops`. It parses no ONNX.

use crate::cpu::Kernels;
use crate::error::{Error, Result};
use crate::ops::{self, Conv2d};
use crate::tensor::Tensor;
use crate::weights::{self, StoreDtype, WeightFile};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Value of the `architecture` metadata key of a graph weight file.
pub const GRAPH_ARCHITECTURE: &str = "bridgeface-graph";
/// Metadata key holding the JSON graph description.
pub const GRAPH_KEY: &str = "graph";

/// One operation. Parameter tensors are referred to by name in `Graph::params`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Op {
    /// 2-D convolution, OIHW weights, optional bias (BN already folded in).
    Conv {
        weight: String,
        bias: Option<String>,
        stride: [usize; 2],
        /// top, left, bottom, right
        pads: [usize; 4],
        groups: usize,
    },
    /// `y = x·wᵀ + b`, `w: [m, k]`, on a 2-D input.
    Linear {
        weight: String,
        bias: Option<String>,
    },
    /// Per-channel `x * scale + shift` over dimension 1 (a lone BN, or Sub/Mul by constants).
    Affine {
        scale: String,
        shift: String,
    },
    /// Per-channel slope on negative values.
    PRelu {
        slope: String,
    },
    Relu,
    Sigmoid,
    /// Elementwise sum of two equally shaped inputs.
    Add,
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        pads: [usize; 4],
    },
    /// Nearest upscaling, asymmetric coordinates, floor rounding.
    ResizeNearest {
        scale: [f32; 2],
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// ONNX Reshape semantics: 0 copies the input's dimension, -1 is inferred.
    Reshape {
        shape: Vec<i64>,
    },
    /// Collapses to 2-D at `axis`.
    Flatten {
        axis: usize,
    },
    /// Passes its input through (inference Dropout).
    Identity,
}

impl Op {
    /// The parameter names this op reads.
    pub fn params(&self) -> Vec<&str> {
        match self {
            Op::Conv { weight, bias, .. } | Op::Linear { weight, bias } => {
                let mut v = vec![weight.as_str()];
                v.extend(bias.as_deref());
                v
            }
            Op::Affine { scale, shift } => vec![scale, shift],
            Op::PRelu { slope } => vec![slope],
            _ => Vec::new(),
        }
    }

    /// How many value inputs the op takes.
    pub fn arity(&self) -> usize {
        if matches!(self, Op::Add) {
            2
        } else {
            1
        }
    }
}

/// One node: an op, the values it reads, the value it writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub output: String,
}

/// A graph input: its name and shape (`None` for a free dimension such as the batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphInput {
    pub name: String,
    pub shape: Vec<Option<usize>>,
}

/// The structure of a graph, without its parameters (what is stored as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    pub inputs: Vec<GraphInput>,
    pub outputs: Vec<String>,
    pub nodes: Vec<Node>,
}

/// A runnable graph: structure plus parameter tensors.
#[derive(Clone, Debug)]
pub struct Graph {
    pub spec: GraphSpec,
    pub params: BTreeMap<String, Tensor>,
    /// Free-form metadata carried into the weight file (source file, sha256, ...).
    pub metadata: BTreeMap<String, String>,
}

impl Graph {
    /// Checks that every node's inputs are defined before use, every parameter exists with a
    /// usable shape, and every output is produced.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(format!("graph: {m}")));
        let mut defined: std::collections::HashSet<&str> =
            self.spec.inputs.iter().map(|i| i.name.as_str()).collect();
        for n in &self.spec.nodes {
            if n.inputs.len() != n.op.arity() {
                return bad(format!(
                    "node `{}` has {} inputs, its op takes {}",
                    n.name,
                    n.inputs.len(),
                    n.op.arity()
                ));
            }
            for i in &n.inputs {
                if !defined.contains(i.as_str()) {
                    return bad(format!(
                        "node `{}` reads `{i}` before anything writes it",
                        n.name
                    ));
                }
            }
            for p in n.op.params() {
                if !self.params.contains_key(p) {
                    return bad(format!("node `{}` needs parameter `{p}`, absent", n.name));
                }
            }
            defined.insert(&n.output);
        }
        for o in &self.spec.outputs {
            if !defined.contains(o.as_str()) {
                return bad(format!("output `{o}` is never written"));
            }
        }
        Ok(())
    }

    /// Writes the graph as safetensors: parameters as tensors, structure as JSON metadata.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut meta = self.metadata.clone();
        meta.insert("architecture".into(), GRAPH_ARCHITECTURE.into());
        meta.insert(
            GRAPH_KEY.into(),
            serde_json::to_string(&self.spec)
                .map_err(|e| Error::InvalidArgument(format!("cannot encode graph: {e}")))?,
        );
        let named: Vec<(String, &Tensor)> =
            self.params.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::save(path, &named, &meta, StoreDtype::F32)
    }

    /// Reads a graph written by `save` (or `bridge import-onnx`).
    pub fn load(path: impl AsRef<Path>) -> Result<Graph> {
        let w = WeightFile::open(path)?;
        let arch = w.meta("architecture")?;
        if arch != GRAPH_ARCHITECTURE {
            return Err(Error::Metadata {
                key: "architecture".into(),
                reason: format!(
                    "`{arch}` is not an imported graph; make one with `bridge import-onnx`"
                ),
            });
        }
        let spec: GraphSpec =
            serde_json::from_str(w.meta(GRAPH_KEY)?).map_err(|e| Error::Metadata {
                key: GRAPH_KEY.into(),
                reason: format!("not a valid graph description: {e}"),
            })?;
        let mut params = BTreeMap::new();
        for e in w.entries() {
            let t = w.tensor(&e.name, &e.shape)?;
            if t.data().iter().any(|v| !v.is_finite()) {
                return Err(Error::WeightFormat {
                    path: w.path().to_path_buf(),
                    reason: format!("tensor `{}` holds NaN or infinite values", e.name),
                });
            }
            params.insert(e.name.clone(), t);
        }
        let metadata = w
            .metadata()
            .iter()
            .filter(|(k, _)| k.as_str() != GRAPH_KEY && k.as_str() != "architecture")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let g = Graph {
            spec,
            params,
            metadata,
        };
        g.validate()?;
        Ok(g)
    }

    fn param(&self, name: &str) -> Result<&Tensor> {
        self.params
            .get(name)
            .ok_or_else(|| Error::Shape(format!("graph parameter `{name}` is missing")))
    }

    /// Runs the graph on named inputs and returns the outputs in `spec.outputs` order.
    /// Intermediate values are dropped after their last use.
    pub fn run(&self, k: &Kernels, inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
        let mut values: HashMap<String, Tensor> = HashMap::new();
        for gi in &self.spec.inputs {
            let pos = inputs.iter().position(|(n, _)| *n == gi.name);
            let t = match pos {
                Some(p) => inputs[p].1.clone(),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "graph input `{}` was not given",
                        gi.name
                    )))
                }
            };
            let fits = t.shape().len() == gi.shape.len()
                && t.shape()
                    .iter()
                    .zip(&gi.shape)
                    .all(|(d, want)| want.map_or(true, |w| w == *d));
            if !fits {
                return Err(Error::Shape(format!(
                    "graph input `{}` must have shape {:?} (None = any), got {:?}",
                    gi.name,
                    gi.shape,
                    t.shape()
                )));
            }
            values.insert(gi.name.clone(), t);
        }
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (i, n) in self.spec.nodes.iter().enumerate() {
            for inp in &n.inputs {
                last_use.insert(inp, i);
            }
        }
        for o in &self.spec.outputs {
            last_use.insert(o, usize::MAX);
        }
        for (i, node) in self.spec.nodes.iter().enumerate() {
            // Take the first input by value when this node is its last reader, so in-place ops
            // need no copy.
            let first = &node.inputs[0];
            let x =
                if last_use.get(first.as_str()) == Some(&i) && !node.inputs[1..].contains(first) {
                    values.remove(first)
                } else {
                    values.get(first).cloned()
                }
                .ok_or_else(|| Error::Shape(format!("value `{first}` is not available")))?;
            let y = self.eval(k, node, x, &values).map_err(|e| match e {
                Error::Shape(m) => Error::Shape(format!("node `{}`: {m}", node.name)),
                other => other,
            })?;
            for inp in &node.inputs[1..] {
                if last_use.get(inp.as_str()) == Some(&i) {
                    values.remove(inp);
                }
            }
            values.insert(node.output.clone(), y);
        }
        self.spec
            .outputs
            .iter()
            .map(|o| {
                values
                    .remove(o)
                    .ok_or_else(|| Error::Shape(format!("output `{o}` was not computed")))
            })
            .collect()
    }

    /// One node on NCHW values (for `plan::GraphPlan`'s fallback): `x` is its first input,
    /// `values` holds the others.
    pub(crate) fn eval_node(
        &self,
        k: &Kernels,
        node: &Node,
        x: Tensor,
        values: &HashMap<String, Tensor>,
    ) -> Result<Tensor> {
        self.eval(k, node, x, values)
    }

    fn eval(
        &self,
        k: &Kernels,
        node: &Node,
        mut x: Tensor,
        values: &HashMap<String, Tensor>,
    ) -> Result<Tensor> {
        Ok(match &node.op {
            Op::Conv {
                weight,
                bias,
                stride,
                pads,
                groups,
            } => {
                let b = match bias {
                    Some(b) => Some(self.param(b)?.data()),
                    None => None,
                };
                let p = Conv2d {
                    stride: (stride[0], stride[1]),
                    pads: *pads,
                    groups: *groups,
                };
                ops::conv2d(k, &x, self.param(weight)?, b, p)?
            }
            Op::Linear { weight, bias } => {
                let b = match bias {
                    Some(b) => Some(self.param(b)?.data()),
                    None => None,
                };
                ops::linear(k, &x, self.param(weight)?, b)?
            }
            Op::Affine { scale, shift } => {
                // A single value (a scalar Sub/Mul) applies to every channel.
                let c = x.shape().get(1).copied().unwrap_or(1);
                let widen = |v: &[f32]| {
                    if v.len() == 1 {
                        vec![v[0]; c]
                    } else {
                        v.to_vec()
                    }
                };
                let (sc, sh) = (
                    widen(self.param(scale)?.data()),
                    widen(self.param(shift)?.data()),
                );
                ops::channel_affine(&mut x, &sc, &sh)?;
                x
            }
            Op::PRelu { slope } => {
                ops::prelu(k, &mut x, self.param(slope)?.data())?;
                x
            }
            Op::Relu => {
                ops::relu(k, &mut x);
                x
            }
            Op::Sigmoid => {
                ops::sigmoid(&mut x);
                x
            }
            Op::Add => {
                let b = values
                    .get(&node.inputs[1])
                    .ok_or_else(|| Error::Shape(format!("value `{}` missing", node.inputs[1])))?;
                ops::add(k, &mut x, b)?;
                x
            }
            Op::MaxPool {
                kernel,
                stride,
                pads,
            } => ops::max_pool2d(&x, (kernel[0], kernel[1]), (stride[0], stride[1]), *pads)?,
            Op::ResizeNearest { scale } => ops::resize_nearest(&x, scale[0], scale[1])?,
            Op::Transpose { perm } => ops::transpose(&x, perm)?,
            Op::Reshape { shape } => {
                let target = reshape_target(x.shape(), shape)?;
                x.reshape(&target)?
            }
            Op::Flatten { axis } => {
                let s = x.shape();
                if *axis > s.len() {
                    return Err(Error::Shape(format!(
                        "flatten axis {axis} beyond rank {}",
                        s.len()
                    )));
                }
                let outer: usize = s[..*axis].iter().product();
                let inner: usize = s[*axis..].iter().product();
                x.reshape(&[outer, inner])?
            }
            Op::Identity => x,
        })
    }
}

/// Resolves an ONNX Reshape target (0 = copy, -1 = infer) against an input shape.
pub fn reshape_target(input: &[usize], shape: &[i64]) -> Result<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        match d {
            0 => out.push(*input.get(i).ok_or_else(|| {
                Error::Shape(format!("reshape {shape:?}: no dimension {i} to copy"))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d > 0 => out.push(d as usize),
            _ => return Err(Error::Shape(format!("reshape target {shape:?} is invalid"))),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || total % known != 0 {
            return Err(Error::Shape(format!(
                "cannot reshape {input:?} to {shape:?}"
            )));
        }
        out[i] = total / known;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Kernels;

    fn t(shape: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::new(shape, data).unwrap()
    }

    /// conv(1×1, w=2, b=1) → relu → add(input) → flatten, hand-computed.
    fn small_graph() -> Graph {
        let mut params = BTreeMap::new();
        params.insert("w".into(), t(&[1, 1, 1, 1], vec![2.0]));
        params.insert("b".into(), t(&[1], vec![1.0]));
        Graph {
            spec: GraphSpec {
                inputs: vec![GraphInput {
                    name: "x".into(),
                    shape: vec![None, Some(1), Some(2), Some(2)],
                }],
                outputs: vec!["out".into()],
                nodes: vec![
                    Node {
                        name: "c".into(),
                        op: Op::Conv {
                            weight: "w".into(),
                            bias: Some("b".into()),
                            stride: [1, 1],
                            pads: [0; 4],
                            groups: 1,
                        },
                        inputs: vec!["x".into()],
                        output: "y".into(),
                    },
                    Node {
                        name: "r".into(),
                        op: Op::Relu,
                        inputs: vec!["y".into()],
                        output: "z".into(),
                    },
                    Node {
                        name: "a".into(),
                        op: Op::Add,
                        inputs: vec!["z".into(), "x".into()],
                        output: "s".into(),
                    },
                    Node {
                        name: "f".into(),
                        op: Op::Flatten { axis: 1 },
                        inputs: vec!["s".into()],
                        output: "out".into(),
                    },
                ],
            },
            params,
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn executor_computes_a_hand_checked_graph_and_survives_a_save_load_round_trip() {
        let g = small_graph();
        g.validate().unwrap();
        let k = Kernels::scalar();
        let x = t(&[1, 1, 2, 2], vec![1.0, -1.0, 0.5, -3.0]);
        // relu(2x+1) + x
        let want = [4.0, -1.0, 2.5, -3.0];
        let out = g.run(&k, vec![("x".into(), x.clone())]).unwrap();
        assert_eq!(out[0].shape(), [1, 4]);
        assert_eq!(out[0].data(), want);
        let dir = std::env::temp_dir().join(format!("bf-graph-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.safetensors");
        g.save(&p).unwrap();
        let back = Graph::load(&p).unwrap();
        assert_eq!(back.spec, g.spec);
        assert_eq!(back.run(&k, vec![("x".into(), x)]).unwrap()[0].data(), want);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_inputs_and_broken_graphs_are_errors() {
        let g = small_graph();
        let k = Kernels::scalar();
        let wrong = t(&[1, 2, 2, 2], vec![0.0; 8]);
        assert!(g.run(&k, vec![("x".into(), wrong)]).is_err());
        assert!(g.run(&k, vec![]).is_err());
        let mut broken = small_graph();
        broken.params.remove("w");
        assert!(broken.validate().is_err());
        let mut cyclic = small_graph();
        cyclic.spec.nodes.swap(0, 1);
        assert!(cyclic.validate().is_err());
    }

    #[test]
    fn reshape_target_copies_and_infers() {
        assert_eq!(
            reshape_target(&[1, 80, 80, 4], &[1, -1, 4]).unwrap(),
            [1, 6400, 4]
        );
        assert_eq!(reshape_target(&[2, 3, 4], &[0, -1]).unwrap(), [2, 12]);
        assert!(reshape_target(&[2, 3], &[4, -1]).is_err());
        assert!(reshape_target(&[2, 3], &[-1, -1]).is_err());
    }
}
