//! The student (BridgeNet) recorded on a tape, unfolded: conv → batch-norm → PReLU exactly as
//! `model::student` names its parameters, so trained parameters save as a normal student file.
//! It owns the training-mode graph and running-statistics update; not the optimiser or data.

use super::{Tape, Var};
use crate::error::{Error, Result};
use crate::model::student::{StudentParams, BLOCKS, BN_EPS, HEAD_CHANNELS};
use crate::ops::Conv2d;
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Whether batch-norm uses batch statistics (training) or the running ones (evaluation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// PyTorch's default running-statistics momentum.
pub const BN_MOMENTUM: f32 = 0.1;

/// Batch statistics of one training-mode batch-norm: (prefix, mean, biased variance, count).
#[derive(Clone, Debug)]
pub struct BnBatchStats {
    pub prefix: String,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub count: usize,
}

/// The recorded student: its trainable parameters as tape leaves and its embedding output.
pub struct StudentGraph {
    /// Trainable parameter name → leaf (running statistics are not trainable).
    pub params: BTreeMap<String, Var>,
    /// L2-normalised `[n, 128]` embedding.
    pub embedding: Var,
    pub bn_stats: Vec<BnBatchStats>,
}

/// Whether a student tensor is trained by gradient (running statistics are not).
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with("running_mean") || name.ends_with("running_var"))
}

/// Records the student's forward pass on `tape` for a normalised batch `x [n, 3, r, r]`.
pub fn record_student(
    tape: &mut Tape,
    p: &StudentParams,
    x: Tensor,
    mode: Mode,
) -> Result<StudentGraph> {
    let r = p.info.resolution;
    let [n, c, h, w] = x.dims4("student input")?;
    if c != 3 || h != r || w != r {
        return Err(Error::Shape(format!(
            "student input must be [n, 3, {r}, {r}], got [{n}, {c}, {h}, {w}]"
        )));
    }
    let mut params = BTreeMap::new();
    for (name, t) in &p.tensors {
        if is_trainable(name) {
            params.insert(name.clone(), tape.leaf(t.clone(), true));
        }
    }
    let mut g = StudentGraph {
        params,
        embedding: Var(0),
        bn_stats: Vec::new(),
    };
    let input = tape.leaf(x, false);
    let mut y = conv_bn_prelu(
        tape,
        p,
        &mut g,
        "stem",
        input,
        Conv2d::new(1, 1, 1),
        true,
        mode,
    )?;
    for b in BLOCKS {
        let dw = conv_bn_prelu(
            tape,
            p,
            &mut g,
            &format!("{}.dw", b.name),
            y,
            Conv2d::new(b.stride, 1, b.c_in),
            true,
            mode,
        )?;
        let mut pw = conv_bn_prelu(
            tape,
            p,
            &mut g,
            &format!("{}.pw", b.name),
            dw,
            Conv2d::new(1, 0, 1),
            true,
            mode,
        )?;
        if b.residual {
            pw = tape.add(pw, y)?;
        }
        y = pw;
    }
    let gdc_w = g.params["head.gdc.conv.weight"];
    let pooled = tape.global_depthwise(y, gdc_w)?;
    let pooled = batch_norm(tape, p, &mut g, "head.gdc.bn", pooled, mode)?;
    debug_assert_eq!(tape.value(pooled).shape()[1], HEAD_CHANNELS);
    let lw = g.params["head.linear.weight"];
    let emb = tape.linear(pooled, lw)?;
    let emb = batch_norm(tape, p, &mut g, "head.bn", emb, mode)?;
    g.embedding = tape.l2_normalize(emb)?;
    Ok(g)
}

fn batch_norm(
    tape: &mut Tape,
    p: &StudentParams,
    g: &mut StudentGraph,
    prefix: &str,
    x: Var,
    mode: Mode,
) -> Result<Var> {
    let gamma = g.params[&format!("{prefix}.weight")];
    let beta = g.params[&format!("{prefix}.bias")];
    match mode {
        Mode::Train => {
            let (y, mean, var) = tape.batch_norm_train(x, gamma, beta, BN_EPS)?;
            let count = tape.value(x).numel() / mean.len();
            g.bn_stats.push(BnBatchStats {
                prefix: prefix.to_string(),
                mean,
                var,
                count,
            });
            Ok(y)
        }
        Mode::Eval => tape.batch_norm_eval(
            x,
            gamma,
            beta,
            p.get(&format!("{prefix}.running_mean"))?.data(),
            p.get(&format!("{prefix}.running_var"))?.data(),
            BN_EPS,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_bn_prelu(
    tape: &mut Tape,
    p: &StudentParams,
    g: &mut StudentGraph,
    prefix: &str,
    x: Var,
    conv: Conv2d,
    prelu: bool,
    mode: Mode,
) -> Result<Var> {
    let w = g.params[&format!("{prefix}.conv.weight")];
    let y = tape.conv2d(x, w, conv)?;
    if prelu && mode == Mode::Train {
        // The same two tape nodes as below, written by one fused kernel.
        let bn = format!("{prefix}.bn");
        let gamma = g.params[&format!("{bn}.weight")];
        let beta = g.params[&format!("{bn}.bias")];
        let a = g.params[&format!("{prefix}.prelu.weight")];
        let (z, mean, var) = tape.batch_norm_prelu_train(y, gamma, beta, a, BN_EPS)?;
        let count = tape.value(y).numel() / mean.len();
        g.bn_stats.push(BnBatchStats {
            prefix: bn,
            mean,
            var,
            count,
        });
        return Ok(z);
    }
    let y = batch_norm(tape, p, g, &format!("{prefix}.bn"), y, mode)?;
    if prelu {
        let a = g.params[&format!("{prefix}.prelu.weight")];
        tape.prelu(y, a)
    } else {
        Ok(y)
    }
}

/// Folds one training batch's statistics into the running ones, as PyTorch does: exponential
/// average with `BN_MOMENTUM`, the variance unbiased by `count / (count − 1)`.
pub fn update_running_stats(p: &mut StudentParams, stats: &[BnBatchStats]) -> Result<()> {
    for s in stats {
        let unbias = s.count as f32 / (s.count.max(2) - 1) as f32;
        let mean_name = format!("{}.running_mean", s.prefix);
        let var_name = format!("{}.running_var", s.prefix);
        let rm = p
            .tensors
            .get_mut(&mean_name)
            .ok_or_else(|| Error::InvalidArgument(format!("student has no `{mean_name}`")))?;
        for (r, &m) in rm.data_mut().iter_mut().zip(&s.mean) {
            *r = (1.0 - BN_MOMENTUM) * *r + BN_MOMENTUM * m;
        }
        let rv = p
            .tensors
            .get_mut(&var_name)
            .ok_or_else(|| Error::InvalidArgument(format!("student has no `{var_name}`")))?;
        for (r, &v) in rv.data_mut().iter_mut().zip(&s.var) {
            *r = (1.0 - BN_MOMENTUM) * *r + BN_MOMENTUM * v * unbias;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::BufferPool;
    use crate::cpu::Kernels;
    use crate::model::student::StudentInfo;
    use crate::rng::Rng;

    /// A student with non-trivial BN statistics and slopes, so folding is really exercised.
    fn perturbed_student(r: usize, seed: u64) -> StudentParams {
        let mut p = StudentParams::random(StudentInfo::new(r).unwrap(), seed);
        let mut rng = Rng::new(seed + 1);
        for (name, t) in p.tensors.iter_mut() {
            if name.contains(".bn.") || name.contains("prelu") {
                for v in t.data_mut() {
                    *v = if name.ends_with("running_var") || name.ends_with("bn.weight") {
                        rng.range(0.5, 1.5)
                    } else {
                        rng.range(-0.3, 0.3)
                    };
                }
            }
        }
        p
    }

    #[test]
    fn eval_mode_graph_matches_folded_inference() {
        let k = Kernels::scalar();
        for (r, n) in [(8usize, 3usize), (13, 2)] {
            let p = perturbed_student(r, 7 + r as u64);
            let mut rng = Rng::new(99);
            let x = Tensor::new(
                &[n, 3, r, r],
                (0..n * 3 * r * r).map(|_| rng.normal()).collect(),
            )
            .unwrap();
            let mut tape = Tape::new(&k);
            let g = record_student(&mut tape, &p, x.clone(), Mode::Eval).unwrap();
            let ours = tape.value(g.embedding).clone();
            let reference = p.fold().unwrap().forward(&k, &x).unwrap();
            assert_eq!(ours.shape(), reference.shape());
            let worst = ours
                .data()
                .iter()
                .zip(reference.data())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            // Folding reorders the f32 arithmetic; unit-norm outputs agree to ~1e-6.
            assert!(
                worst < 1e-4,
                "r={r}: eval graph differs from StudentNet by {worst}"
            );
        }
    }

    #[test]
    fn training_graph_gives_every_trainable_parameter_a_gradient() {
        let k = Kernels::scalar();
        let mut p = perturbed_student(8, 3);
        let mut rng = Rng::new(5);
        let x = Tensor::new(&[4, 3, 8, 8], (0..4 * 192).map(|_| rng.normal()).collect()).unwrap();
        let mut tape = Tape::new(&k);
        let g = record_student(&mut tape, &p, x, Mode::Train).unwrap();
        let dout = Tensor::new(&[4, 128], (0..512).map(|_| rng.normal()).collect()).unwrap();
        tape.backward(g.embedding, dout).unwrap();
        for (name, v) in &g.params {
            let grad = tape
                .grad(*v)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            assert_eq!(grad.shape(), p.get(name).unwrap().shape());
            assert!(grad.data().iter().all(|v| v.is_finite()), "{name}");
            assert!(
                grad.data().iter().any(|v| *v != 0.0),
                "{name} gradient is all zero"
            );
        }
        let before = p.get("stem.bn.running_mean").unwrap().clone();
        update_running_stats(&mut p, &g.bn_stats).unwrap();
        assert_ne!(&before, p.get("stem.bn.running_mean").unwrap());
        assert_eq!(g.bn_stats.len(), 1 + 2 * BLOCKS.len() + 2);
    }

    /// The fused batch-norm + PReLU records the same values and gradients as the two ops
    /// recorded apart, on every table (its `y` is the unfused kernel's, `z` exactly `prelu(y)`).
    #[test]
    fn fused_batch_norm_prelu_records_what_the_two_ops_record() {
        let mut rng = Rng::new(21);
        let (n, c, h) = (3usize, 19usize, 5usize);
        let len = n * c * h * h;
        let x = Tensor::new(&[n, c, h, h], (0..len).map(|_| rng.normal()).collect()).unwrap();
        let per_channel = |rng: &mut Rng, base: f32| {
            Tensor::new(&[c], (0..c).map(|_| base + 0.3 * rng.normal()).collect()).unwrap()
        };
        let (gamma, beta, alpha) = (
            per_channel(&mut rng, 1.0),
            per_channel(&mut rng, 0.0),
            per_channel(&mut rng, 0.25),
        );
        let dout = Tensor::new(&[n, c, h, h], (0..len).map(|_| rng.normal()).collect()).unwrap();
        for k in std::iter::once(Kernels::scalar()).chain(Kernels::fast_tables()) {
            let run = |fused: bool| {
                let mut tape = Tape::new(&k);
                let xv = tape.leaf(x.clone(), true);
                let (g, b, a) = (
                    tape.leaf(gamma.clone(), true),
                    tape.leaf(beta.clone(), true),
                    tape.leaf(alpha.clone(), true),
                );
                let (out, mean, var) = if fused {
                    tape.batch_norm_prelu_train(xv, g, b, a, BN_EPS).unwrap()
                } else {
                    let (y, mean, var) = tape.batch_norm_train(xv, g, b, BN_EPS).unwrap();
                    (tape.prelu(y, a).unwrap(), mean, var)
                };
                tape.backward(out, dout.clone()).unwrap();
                let grads: Vec<Tensor> = [xv, g, b, a]
                    .iter()
                    .map(|v| tape.grad(*v).unwrap().clone())
                    .collect();
                (tape.value(out).clone(), mean, var, grads)
            };
            assert_eq!(run(true), run(false), "{}", k.isa.name());
        }
    }

    /// A tape on reused buffers gives bit for bit what a fresh tape gives: stale values from
    /// the previous step never leak into a result.
    #[test]
    fn a_tape_on_reused_buffers_matches_a_fresh_one() {
        let p = perturbed_student(8, 4);
        let mut rng = Rng::new(6);
        let mut batch = || Tensor::new(&[4, 3, 8, 8], (0..768).map(|_| rng.normal()).collect());
        let (a, b) = (batch().unwrap(), batch().unwrap());
        let dout = Tensor::new(
            &[4, 128],
            (0..512).map(|i| (i as f32 * 0.37).sin()).collect(),
        );
        let dout = dout.unwrap();
        for k in std::iter::once(Kernels::scalar()).chain(Kernels::fast_tables()) {
            let step = |pool: BufferPool, x: &Tensor| {
                let mut tape = Tape::with_pool(&k, pool);
                let g = record_student(&mut tape, &p, x.clone(), Mode::Train).unwrap();
                tape.backward(g.embedding, dout.clone()).unwrap();
                let mut out = vec![tape.value(g.embedding).clone()];
                out.extend(g.params.values().map(|v| tape.grad(*v).unwrap().clone()));
                (out, tape.into_pool())
            };
            let (fresh, _) = step(BufferPool::default(), &a);
            let (_, pool) = step(BufferPool::default(), &b);
            assert!(!pool.is_empty());
            let (reused, pool) = step(pool, &a);
            assert_eq!(fresh, reused, "{}", k.isa.name());
            // The pool holds what one step needs, not one more set per step: its size settles.
            let mut pool = pool;
            let mut held = Vec::new();
            for x in [&b, &a, &b, &a] {
                pool = step(pool, x).1;
                held.push(pool.len());
            }
            assert!(held.windows(2).skip(1).all(|w| w[0] == w[1]), "{held:?}");
        }
    }
}
