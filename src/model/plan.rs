//! A prepared execution plan for an imported `Graph`: conv and linear weights packed once, at
//! load; convs fused with a following PReLU/ReLU; activations kept in the blocked
//! `[C/16][N][H][W][16]` layout between blocked-capable ops and converted only at the
//! boundaries with ops that need NCHW. It must compute what `Graph::run` computes (up to float
//! rounding); it parses no ONNX and owns no arithmetic loops (those live in `cpu`).

use crate::cpu::packed::{self, ConvRoute, Epilogue, PointwiseShape};
use crate::cpu::{ConvGeom, Kernels};
use crate::error::{Error, Result};
use crate::model::graph::{Graph, Node, Op};
use crate::ops;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// A conv with its weights packed for its route, bias and fused activation padded to blocks.
#[derive(Clone, Debug)]
struct PackedConv {
    route: ConvRoute,
    c_in: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    stride: [usize; 2],
    pads: [usize; 4],
    groups: usize,
    /// Packed weights (blocked routes) or the original OIHW weights (reference route).
    weight: Vec<f32>,
    /// Padded bias (blocked routes) or the plain bias (reference route).
    bias: Vec<f32>,
    /// Fused activation slopes (ReLU = zeros), padded for blocked routes, plain otherwise.
    act: Option<Vec<f32>>,
}

#[derive(Clone, Debug)]
enum Step {
    Conv {
        conv: Box<PackedConv>,
        input: String,
        output: String,
    },
    Linear {
        m: usize,
        k: usize,
        /// `[blocks(m)][k][16]`.
        weight: Vec<f32>,
        bias: Vec<f32>,
        input: String,
        output: String,
    },
    /// Any other node, by index into the graph's nodes.
    Node(usize),
}

/// An activation value: NCHW (any rank) or blocked 4-D `[n, c, h, w]`.
enum Val {
    Plain(Tensor),
    Blocked { data: Vec<f32>, shape: [usize; 4] },
}

impl Val {
    fn shape(&self) -> Vec<usize> {
        match self {
            Val::Plain(t) => t.shape().to_vec(),
            Val::Blocked { shape, .. } => shape.to_vec(),
        }
    }

    fn into_plain(self) -> Result<Tensor> {
        match self {
            Val::Plain(t) => Ok(t),
            Val::Blocked { data, shape } => {
                let [n, c, h, w] = shape;
                let mut y = vec![0.0; n * c * h * w];
                packed::unblock_nchw(&data, n, c, h * w, &mut y);
                Tensor::new(&shape, y)
            }
        }
    }

    /// The blocked data and shape; a plain value must be 4-D.
    fn into_blocked(self) -> Result<(Vec<f32>, [usize; 4])> {
        match self {
            Val::Blocked { data, shape } => Ok((data, shape)),
            Val::Plain(t) => {
                let [n, c, h, w] = t.dims4("blocked-layout input")?;
                Ok((packed::block_nchw(t.data(), n, c, h * w), [n, c, h, w]))
            }
        }
    }
}

/// A graph prepared to run fast: see the module header.
#[derive(Clone, Debug)]
pub struct GraphPlan {
    graph: Graph,
    steps: Vec<Step>,
}

/// How many nodes read each value, graph outputs counting as readers.
fn readers(graph: &Graph) -> HashMap<&str, usize> {
    let mut r: HashMap<&str, usize> = HashMap::new();
    for n in &graph.spec.nodes {
        for i in &n.inputs {
            *r.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph.spec.outputs {
        *r.entry(o.as_str()).or_default() += 1;
    }
    r
}

fn param<'a>(graph: &'a Graph, name: &str) -> Result<&'a Tensor> {
    graph
        .params
        .get(name)
        .ok_or_else(|| Error::Shape(format!("graph parameter `{name}` is missing")))
}

impl GraphPlan {
    /// Validates the graph and packs its conv and linear weights.
    pub fn new(graph: Graph) -> Result<GraphPlan> {
        graph.validate()?;
        let readers = readers(&graph);
        let nodes = &graph.spec.nodes;
        let mut steps = Vec::with_capacity(nodes.len());
        let mut i = 0;
        while i < nodes.len() {
            let node = &nodes[i];
            match &node.op {
                Op::Conv {
                    weight,
                    bias,
                    stride,
                    pads,
                    groups,
                } => {
                    // Fuse the next node when it is the only reader and a PReLU or ReLU.
                    let next = nodes.get(i + 1).filter(|n| {
                        n.inputs[0] == node.output
                            && readers.get(node.output.as_str()) == Some(&1)
                            && matches!(n.op, Op::PRelu { .. } | Op::Relu)
                    });
                    let conv = pack_conv(
                        &graph,
                        node,
                        weight,
                        bias.as_deref(),
                        *stride,
                        *pads,
                        *groups,
                        next,
                    )?;
                    let fused = next.is_some() && conv.act.is_some();
                    let output = if fused {
                        nodes[i + 1].output.clone()
                    } else {
                        node.output.clone()
                    };
                    steps.push(Step::Conv {
                        conv: Box::new(conv),
                        input: node.inputs[0].clone(),
                        output,
                    });
                    i += if fused { 2 } else { 1 };
                    continue;
                }
                Op::Linear { weight, bias } => {
                    let w = param(&graph, weight)?;
                    let [m, k] = w.dims2("linear weight")?;
                    let b = match bias {
                        Some(b) => {
                            let b = param(&graph, b)?.data();
                            if b.len() != m {
                                return Err(Error::Shape(format!(
                                    "node `{}`: linear bias has {} values, expected {m}",
                                    node.name,
                                    b.len()
                                )));
                            }
                            packed::pad_channels(b)
                        }
                        None => vec![0.0; packed::padded(m)],
                    };
                    steps.push(Step::Linear {
                        m,
                        k,
                        weight: packed::pack_linear(w.data(), k, m),
                        bias: b,
                        input: node.inputs[0].clone(),
                        output: node.output.clone(),
                    });
                }
                _ => steps.push(Step::Node(i)),
            }
            i += 1;
        }
        // Packed weights replace the originals: keep only what the unpacked nodes read.
        let mut graph = graph;
        let used: std::collections::HashSet<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Node(i) => Some(&graph.spec.nodes[*i]),
                _ => None,
            })
            .flat_map(|n| n.op.params().into_iter().map(str::to_string))
            .collect();
        graph.params.retain(|name, _| used.contains(name));
        Ok(GraphPlan { graph, steps })
    }

    /// The graph this plan runs, holding only the parameters its unpacked nodes read.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the plan on named inputs and returns the outputs in `spec.outputs` order, as
    /// `Graph::run` does. Intermediate values are dropped after their last use.
    pub fn run(&self, k: &Kernels, inputs: Vec<(String, Tensor)>) -> Result<Vec<Tensor>> {
        let last = self.last_uses();
        let mut values = self.start(inputs)?;
        self.run_steps(k, &mut values, &last, 0..self.steps.len())?;
        self.finish(values)
    }

    /// Where the plan's per-sample tail starts: the last `Linear` step, when every step from
    /// it on treats each row of the batch alone (linear, affine, activations, add). `None` when
    /// there is no such tail.
    pub fn batched_tail(&self) -> Option<usize> {
        let start = self
            .steps
            .iter()
            .rposition(|s| matches!(s, Step::Linear { .. }))?;
        let per_sample = self.steps[start..].iter().all(|s| match s {
            Step::Linear { .. } => true,
            Step::Conv { .. } => false,
            Step::Node(i) => matches!(
                self.graph.spec.nodes[*i].op,
                Op::Affine { .. } | Op::PRelu { .. } | Op::Relu | Op::Sigmoid | Op::Add
            ),
        });
        per_sample.then_some(start)
    }

    /// Runs several sets of named inputs, as `run` on each with the outputs concatenated along
    /// the batch dimension (the same numbers: every row is computed alone). The steps before
    /// `batched_tail` run one set at a time, so each run's activations stay in cache; the tail
    /// runs once on all rows together, so a large linear weight (SFace's 25 MB) is read once
    /// per call instead of once per set.
    pub fn run_many(&self, k: &Kernels, runs: Vec<Vec<(String, Tensor)>>) -> Result<Vec<Tensor>> {
        let last = self.last_uses();
        let Some(tail) = self.batched_tail() else {
            let outs = runs
                .into_iter()
                .map(|r| self.run(k, r))
                .collect::<Result<Vec<_>>>()?;
            return concat_runs(outs);
        };
        // The values alive at the tail, per run, in a fixed name order.
        let mut names: Vec<&str> = Vec::new();
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for r in runs {
            let mut values = self.start(r)?;
            self.run_steps(k, &mut values, &last, 0..tail)?;
            if names.is_empty() {
                names = values.keys().copied().collect();
                names.sort_unstable();
            }
            let mut row = Vec::with_capacity(names.len());
            for n in &names {
                let v = values
                    .remove(n)
                    .ok_or_else(|| Error::Shape(format!("value `{n}` is not available")))?;
                row.push(v.into_plain()?);
            }
            rows.push(row);
        }
        if rows.is_empty() {
            return Err(Error::InvalidArgument("no inputs to run".into()));
        }
        let mut values: HashMap<&str, Val> = HashMap::new();
        for (j, n) in names.iter().enumerate() {
            let col: Vec<Tensor> = rows
                .iter_mut()
                .map(|r| std::mem::replace(&mut r[j], Tensor::zeros(&[0])))
                .collect();
            values.insert(n, Val::Plain(concat_batch(col)?));
        }
        self.run_steps(k, &mut values, &last, tail..self.steps.len())?;
        self.finish(values)
    }

    /// The graph inputs, checked against the spec's shapes.
    fn start(&self, inputs: Vec<(String, Tensor)>) -> Result<HashMap<&str, Val>> {
        let g = &self.graph;
        let mut values: HashMap<&str, Val> = HashMap::new();
        for gi in &g.spec.inputs {
            let t = inputs
                .iter()
                .find(|(n, _)| *n == gi.name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("graph input `{}` was not given", gi.name))
                })?;
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
            values.insert(&gi.name, Val::Plain(t));
        }
        Ok(values)
    }

    /// The last step reading each value (outputs: never dropped).
    fn last_uses(&self) -> HashMap<&str, usize> {
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (s, step) in self.steps.iter().enumerate() {
            for i in self.step_inputs(step) {
                last.insert(i, s);
            }
        }
        for o in &self.graph.spec.outputs {
            last.insert(o, usize::MAX);
        }
        last
    }

    /// Runs the steps in `range` on `values`, dropping each value after its last use.
    fn run_steps<'a>(
        &'a self,
        k: &Kernels,
        values: &mut HashMap<&'a str, Val>,
        last: &HashMap<&'a str, usize>,
        range: std::ops::Range<usize>,
    ) -> Result<()> {
        for s in range {
            let step = &self.steps[s];
            let ins = self.step_inputs(step);
            let first = ins[0];
            let x = if last.get(first) == Some(&s) && !ins[1..].contains(&first) {
                values.remove(first)
            } else {
                values.get(first).map(clone_val)
            }
            .ok_or_else(|| Error::Shape(format!("value `{first}` is not available")))?;
            let (out, y) = self.eval(k, step, x, values).map_err(|e| match e {
                Error::Shape(m) => Error::Shape(format!("step {s}: {m}")),
                other => other,
            })?;
            for inp in &ins[1..] {
                if last.get(inp) == Some(&s) {
                    values.remove(inp);
                }
            }
            values.insert(out, y);
        }
        Ok(())
    }

    /// The outputs in `spec.outputs` order.
    fn finish(&self, mut values: HashMap<&str, Val>) -> Result<Vec<Tensor>> {
        self.graph
            .spec
            .outputs
            .iter()
            .map(|o| {
                values
                    .remove(o.as_str())
                    .ok_or_else(|| Error::Shape(format!("output `{o}` was not computed")))?
                    .into_plain()
            })
            .collect()
    }

    fn step_inputs<'a>(&'a self, step: &'a Step) -> Vec<&'a str> {
        match step {
            Step::Conv { input, .. } | Step::Linear { input, .. } => vec![input.as_str()],
            Step::Node(i) => self.graph.spec.nodes[*i]
                .inputs
                .iter()
                .map(String::as_str)
                .collect(),
        }
    }

    fn eval<'a>(
        &'a self,
        k: &Kernels,
        step: &'a Step,
        x: Val,
        values: &HashMap<&str, Val>,
    ) -> Result<(&'a str, Val)> {
        match step {
            Step::Conv { conv, output, .. } => Ok((output, run_conv(k, conv, x)?)),
            Step::Linear {
                m,
                k: kk,
                weight,
                bias,
                output,
                ..
            } => {
                let t = x.into_plain()?;
                let [n, width] = t.dims2("linear input")?;
                if width != *kk {
                    return Err(Error::Shape(format!(
                        "linear weight takes inputs of width {kk}, got {width}"
                    )));
                }
                let mp = packed::padded(*m);
                let mut yp = vec![0.0; n * mp];
                (k.linear_packed)(n, *kk, *m, t.data(), weight, bias, &mut yp);
                let y: Vec<f32> = yp
                    .chunks_exact(mp)
                    .flat_map(|r| r[..*m].iter().copied())
                    .collect();
                Ok((output, Val::Plain(Tensor::new(&[n, *m], y)?)))
            }
            Step::Node(i) => {
                let node = &self.graph.spec.nodes[*i];
                Ok((&node.output, self.eval_node(k, node, x, values)?))
            }
        }
    }

    fn eval_node(
        &self,
        k: &Kernels,
        node: &Node,
        x: Val,
        values: &HashMap<&str, Val>,
    ) -> Result<Val> {
        let with_name = |e: Error| match e {
            Error::Shape(m) => Error::Shape(format!("node `{}`: {m}", node.name)),
            other => other,
        };
        if let Val::Blocked { mut data, shape } = x {
            let [n, c, h, w] = shape;
            let pixels = n * h * w;
            let widen = |v: &[f32]| -> Option<Vec<f32>> {
                match v.len() {
                    1 => Some(packed::pad_channels(&vec![v[0]; c])),
                    l if l == c => Some(packed::pad_channels(v)),
                    _ => None,
                }
            };
            match &node.op {
                Op::Identity => return Ok(Val::Blocked { data, shape }),
                Op::Relu => {
                    packed::prelu_blocked(&mut data, pixels, &vec![0.0; packed::padded(c)]);
                    return Ok(Val::Blocked { data, shape });
                }
                Op::PRelu { slope } => {
                    let s = param(&self.graph, slope)?.data();
                    if s.len() == c {
                        packed::prelu_blocked(&mut data, pixels, &packed::pad_channels(s));
                        return Ok(Val::Blocked { data, shape });
                    }
                }
                Op::Affine { scale, shift } => {
                    let sc = widen(param(&self.graph, scale)?.data());
                    let sh = widen(param(&self.graph, shift)?.data());
                    if let (Some(sc), Some(sh)) = (sc, sh) {
                        packed::affine_blocked(&mut data, pixels, &sc, &sh);
                        return Ok(Val::Blocked { data, shape });
                    }
                }
                Op::Add => {
                    if let Some(Val::Blocked { data: b, shape: bs }) =
                        values.get(node.inputs[1].as_str())
                    {
                        if *bs == shape {
                            (k.add)(&mut data, b);
                            return Ok(Val::Blocked { data, shape });
                        }
                    }
                }
                _ => {}
            }
            // Anything else runs on NCHW.
            let t = Val::Blocked { data, shape }.into_plain()?;
            return self.eval_plain(k, node, t, values).map_err(with_name);
        }
        let Val::Plain(t) = x else {
            unreachable!("blocked values return above")
        };
        self.eval_plain(k, node, t, values).map_err(with_name)
    }

    /// One node on NCHW through `Graph`'s own executor.
    fn eval_plain(
        &self,
        k: &Kernels,
        node: &Node,
        x: Tensor,
        values: &HashMap<&str, Val>,
    ) -> Result<Val> {
        let mut others = HashMap::new();
        for name in &node.inputs[1..] {
            let v = values
                .get(name.as_str())
                .ok_or_else(|| Error::Shape(format!("value `{name}` missing")))?;
            others.insert(name.clone(), clone_val(v).into_plain()?);
        }
        Ok(Val::Plain(self.graph.eval_node(k, node, x, &others)?))
    }
}

/// Tensors of equal trailing shape stacked along dimension 0.
fn concat_batch(parts: Vec<Tensor>) -> Result<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| Error::InvalidArgument("nothing to concatenate".into()))?;
    let rest = first.shape().get(1..).unwrap_or(&[]).to_vec();
    let mut rows = 0;
    let mut data = Vec::with_capacity(parts.iter().map(Tensor::numel).sum());
    for p in &parts {
        if p.shape().is_empty() || p.shape()[1..] != rest[..] {
            return Err(Error::Shape(format!(
                "cannot stack {:?} under {:?}",
                p.shape(),
                first.shape()
            )));
        }
        rows += p.shape()[0];
        data.extend_from_slice(p.data());
    }
    let mut shape = vec![rows];
    shape.extend(rest);
    Tensor::new(&shape, data)
}

/// Per-run output lists stacked output by output.
fn concat_runs(outs: Vec<Vec<Tensor>>) -> Result<Vec<Tensor>> {
    let n = outs.first().map_or(0, Vec::len);
    let mut cols: Vec<Vec<Tensor>> = (0..n).map(|_| Vec::new()).collect();
    for o in outs {
        for (c, t) in cols.iter_mut().zip(o) {
            c.push(t);
        }
    }
    cols.into_iter().map(concat_batch).collect()
}

fn clone_val(v: &Val) -> Val {
    match v {
        Val::Plain(t) => Val::Plain(t.clone()),
        Val::Blocked { data, shape } => Val::Blocked {
            data: data.clone(),
            shape: *shape,
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn pack_conv(
    graph: &Graph,
    node: &Node,
    weight: &str,
    bias: Option<&str>,
    stride: [usize; 2],
    pads: [usize; 4],
    groups: usize,
    act_node: Option<&Node>,
) -> Result<PackedConv> {
    let bad = |m: String| Error::Shape(format!("node `{}`: {m}", node.name));
    let w = param(graph, weight)?;
    let [c_out, cin_g, kh, kw] = w.dims4("conv weight").map_err(|e| bad(e.to_string()))?;
    if groups == 0 || stride[0] == 0 || stride[1] == 0 || c_out % groups != 0 {
        return Err(bad(format!(
            "conv weight {:?} with groups {groups} and stride {stride:?} is not computable",
            w.shape()
        )));
    }
    let c_in = cin_g * groups;
    let bias = match bias {
        Some(b) => {
            let b = param(graph, b)?.data();
            if b.len() != c_out {
                return Err(bad(format!(
                    "conv bias has {} values, expected {c_out}",
                    b.len()
                )));
            }
            b.to_vec()
        }
        None => vec![0.0; c_out],
    };
    let act = match act_node.map(|n| &n.op) {
        Some(Op::Relu) => Some(vec![0.0; c_out]),
        Some(Op::PRelu { slope }) => {
            let s = param(graph, slope)?.data();
            (s.len() == c_out).then(|| s.to_vec())
        }
        _ => None,
    };
    // Only the geometry's kernel, stride, padding, channels and groups choose the route.
    let probe = ConvGeom {
        n: 1,
        c_in,
        h: kh,
        w: kw,
        c_out,
        kh,
        kw,
        stride_h: stride[0],
        stride_w: stride[1],
        pad_t: pads[0],
        pad_l: pads[1],
        pad_b: pads[2],
        pad_r: pads[3],
        groups,
    };
    let route = packed::conv_route(&probe);
    let taps = kh * kw;
    let (weight, bias, act) = match route {
        ConvRoute::Pointwise => (
            packed::pack_pointwise(w.data(), c_in, c_out),
            packed::pad_channels(&bias),
            act.map(|a| packed::pad_channels(&a)),
        ),
        ConvRoute::Depthwise => (
            packed::pack_depthwise(w.data(), c_in, taps),
            packed::pad_channels(&bias),
            act.map(|a| packed::pad_channels(&a)),
        ),
        ConvRoute::Direct => (
            packed::pack_direct(w.data(), c_in, c_out, taps),
            packed::pad_channels(&bias),
            act.map(|a| packed::pad_channels(&a)),
        ),
        ConvRoute::Reference => (w.data().to_vec(), bias, act),
    };
    Ok(PackedConv {
        route,
        c_in,
        c_out,
        kh,
        kw,
        stride,
        pads,
        groups,
        weight,
        bias,
        act,
    })
}

fn run_conv(k: &Kernels, c: &PackedConv, x: Val) -> Result<Val> {
    let shape = x.shape();
    let &[n, c_in, h, w] = shape.as_slice() else {
        return Err(Error::Shape(format!(
            "conv input must be 4-D, got {shape:?}"
        )));
    };
    if c_in != c.c_in {
        return Err(Error::Shape(format!(
            "conv takes {} input channels, got {c_in}",
            c.c_in
        )));
    }
    let g = ConvGeom {
        n,
        c_in,
        h,
        w,
        c_out: c.c_out,
        kh: c.kh,
        kw: c.kw,
        stride_h: c.stride[0],
        stride_w: c.stride[1],
        pad_t: c.pads[0],
        pad_l: c.pads[1],
        pad_b: c.pads[2],
        pad_r: c.pads[3],
        groups: c.groups,
    };
    g.validate()?;
    let (oh, ow) = (g.out_h(), g.out_w());
    let out_shape = [n, c.c_out, oh, ow];
    let ep = Epilogue {
        bias: &c.bias,
        prelu: c.act.as_deref(),
        residual: None,
    };
    let out_len = packed::padded(c.c_out) * n * oh * ow;
    match c.route {
        ConvRoute::Pointwise => {
            let (xb, _) = x.into_blocked()?;
            let s = PointwiseShape {
                pixels: n * h * w,
                c_in,
                c_out: c.c_out,
            };
            let mut y = vec![0.0; out_len];
            (k.pointwise_packed)(&s, &xb, &c.weight, &ep, &mut y);
            Ok(Val::Blocked {
                data: y,
                shape: out_shape,
            })
        }
        ConvRoute::Depthwise => {
            let (xb, _) = x.into_blocked()?;
            let mut y = vec![0.0; out_len];
            (k.depthwise_packed)(&g, &xb, &c.weight, &ep, &mut y);
            Ok(Val::Blocked {
                data: y,
                shape: out_shape,
            })
        }
        ConvRoute::Direct => {
            let t = x.into_plain()?;
            let mut y = vec![0.0; out_len];
            (k.direct_conv_packed)(&g, t.data(), &c.weight, &ep, &mut y);
            Ok(Val::Blocked {
                data: y,
                shape: out_shape,
            })
        }
        ConvRoute::Reference => {
            let t = x.into_plain()?;
            let mut y = Tensor::zeros(&out_shape);
            (k.conv2d)(&g, t.data(), &c.weight, Some(&c.bias), y.data_mut());
            if let Some(a) = &c.act {
                ops::prelu(k, &mut y, a)?;
            }
            Ok(Val::Plain(y))
        }
    }
}
