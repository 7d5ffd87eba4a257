//! Optimisers (SGD with momentum and weight decay, AdamW), learning-rate schedules with warm-up,
//! and global-norm gradient clipping, over named parameters. Updates values in place; it must not
//! know about tapes, models or data, and its state is plain named tensors for checkpoints.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// The update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// PyTorch's SGD: `b ← μ·b + (g + λ·p)` (`b = g + λ·p` on the first step), `p ← p − lr·b`.
    Sgd { momentum: f32 },
    /// AdamW (Loshchilov & Hutter): decoupled decay `p ← p − lr·λ·p`, then the Adam step.
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

/// An optimiser and its per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    pub rule: Rule,
    pub weight_decay: f32,
    /// Completed steps (AdamW's bias correction uses it).
    pub steps: u64,
    /// First moment (SGD momentum buffer or Adam's m) per parameter.
    first: BTreeMap<String, Vec<f32>>,
    /// Adam's second moment per parameter.
    second: BTreeMap<String, Vec<f32>>,
}

impl Optimizer {
    pub fn new(rule: Rule, weight_decay: f32) -> Result<Self> {
        let ok = match rule {
            Rule::Sgd { momentum } => (0.0..1.0).contains(&momentum),
            Rule::AdamW { beta1, beta2, eps } => {
                (0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0
            }
        };
        if !ok || weight_decay.is_nan() || weight_decay < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "optimiser settings {rule:?}, weight decay {weight_decay} are out of range"
            )));
        }
        Ok(Optimizer {
            rule,
            weight_decay,
            steps: 0,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
        })
    }

    /// Applies one update to every `(name, value, gradient, decay?)`; `decay` false exempts a
    /// parameter (batch-norm and PReLU) from weight decay. Counts one step.
    pub fn step(&mut self, params: &mut [(&str, &mut [f32], &[f32], bool)], lr: f32) -> Result<()> {
        self.steps += 1;
        for (name, p, g, decay) in params.iter_mut() {
            if p.len() != g.len() {
                return Err(Error::Shape(format!(
                    "parameter `{name}` has {} values but its gradient {}",
                    p.len(),
                    g.len()
                )));
            }
            let wd = if *decay { self.weight_decay } else { 0.0 };
            match self.rule {
                Rule::Sgd { momentum } => {
                    let fresh = !self.first.contains_key(*name);
                    let buf = self
                        .first
                        .entry(name.to_string())
                        .or_insert_with(|| vec![0.0; p.len()]);
                    for ((pv, &gv), b) in p.iter_mut().zip(g.iter()).zip(buf.iter_mut()) {
                        let d = gv + wd * *pv;
                        *b = if fresh { d } else { momentum * *b + d };
                        *pv -= lr * *b;
                    }
                }
                Rule::AdamW { beta1, beta2, eps } => {
                    let t = self.steps as i32;
                    let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                    let m = self
                        .first
                        .entry(name.to_string())
                        .or_insert_with(|| vec![0.0; p.len()]);
                    let v = self
                        .second
                        .entry(name.to_string())
                        .or_insert_with(|| vec![0.0; p.len()]);
                    for (((pv, &gv), mv), vv) in p
                        .iter_mut()
                        .zip(g.iter())
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        *pv -= lr * wd * *pv;
                        *mv = beta1 * *mv + (1.0 - beta1) * gv;
                        *vv = beta2 * *vv + (1.0 - beta2) * gv * gv;
                        *pv -= lr * (*mv / c1) / ((*vv / c2).sqrt() + eps);
                    }
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`optim.m.NAME`, `optim.v.NAME`) for a checkpoint.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (prefix, map) in [("optim.m.", &self.first), ("optim.v.", &self.second)] {
            for (name, v) in map {
                out.push((
                    format!("{prefix}{name}"),
                    Tensor::new(&[v.len()], v.clone())?,
                ));
            }
        }
        Ok(out)
    }

    /// Restores state saved by `state_tensors` (other names are ignored).
    pub fn load_state(&mut self, steps: u64, tensors: &BTreeMap<String, Tensor>) {
        self.steps = steps;
        self.first.clear();
        self.second.clear();
        for (name, t) in tensors {
            if let Some(p) = name.strip_prefix("optim.m.") {
                self.first.insert(p.to_string(), t.data().to_vec());
            } else if let Some(p) = name.strip_prefix("optim.v.") {
                self.second.insert(p.to_string(), t.data().to_vec());
            }
        }
    }
}

/// How the learning rate decays after warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decay {
    /// Half-cosine from the base rate down to `min_lr` at the last step.
    Cosine { min_lr: f32 },
    /// Multiply by `gamma` every `every` steps (counted after warm-up).
    Step { every: u64, gamma: f32 },
}

/// A learning-rate schedule: linear warm-up from 0 over `warmup` steps, then `decay`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub base_lr: f32,
    pub warmup: u64,
    pub total: u64,
    pub decay: Decay,
}

impl Schedule {
    /// The rate for step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.base_lr * (step + 1) as f32 / self.warmup as f32;
        }
        let s = step - self.warmup;
        match self.decay {
            Decay::Cosine { min_lr } => {
                let span = self.total.saturating_sub(self.warmup).max(1);
                let t = (s.min(span)) as f64 / span as f64;
                let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                min_lr + (self.base_lr - min_lr) * c as f32
            }
            Decay::Step { every, gamma } => {
                self.base_lr * gamma.powi((s / every.max(1)).min(i32::MAX as u64) as i32)
            }
        }
    }
}

/// Scales all gradients together so their global L2 norm is at most `max_norm`; returns the
/// norm before clipping.
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt() as f32;
    if norm > max_norm && norm > 0.0 {
        let s = max_norm / norm;
        for g in grads.iter_mut() {
            for v in g.iter_mut() {
                *v *= s;
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_momentum_and_decay_follow_the_formula_over_two_steps() {
        let mut opt = Optimizer::new(Rule::Sgd { momentum: 0.9 }, 0.1).unwrap();
        let mut p = vec![1.0f32, -2.0];
        let g = [0.5f32, 0.25];
        opt.step(&mut [("w", &mut p, &g, true)], 0.1).unwrap();
        // b = g + 0.1 p = [0.6, 0.05]; p = p − 0.1 b.
        assert!(
            (p[0] - 0.94).abs() < 1e-6 && (p[1] - -2.005).abs() < 1e-6,
            "{p:?}"
        );
        opt.step(&mut [("w", &mut p, &g, true)], 0.1).unwrap();
        // b = 0.9·[0.6, 0.05] + g + 0.1 p = [0.54 + 0.594, 0.045 + 0.0495].
        let b = [0.54 + 0.5 + 0.094, 0.045 + 0.25 - 0.2005];
        assert!((p[0] - (0.94 - 0.1 * b[0])).abs() < 1e-6, "{p:?}");
        assert!((p[1] - (-2.005 - 0.1 * b[1])).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr_plus_decay() {
        let mut opt = Optimizer::new(
            Rule::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            0.01,
        )
        .unwrap();
        let mut p = vec![2.0f32, -1.0];
        opt.step(&mut [("w", &mut p, &[3.0, -0.5], true)], 0.1)
            .unwrap();
        // Bias-corrected m/√v = sign(g) on the first step.
        assert!((p[0] - (2.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-5, "{p:?}");
        assert!((p[1] - (-(1.0 - 0.001) + 0.1)).abs() < 1e-5, "{p:?}");
    }

    #[test]
    fn schedules_warm_up_then_decay() {
        let s = Schedule {
            base_lr: 1.0,
            warmup: 4,
            total: 14,
            decay: Decay::Cosine { min_lr: 0.0 },
        };
        assert!((s.lr(0) - 0.25).abs() < 1e-6 && (s.lr(3) - 1.0).abs() < 1e-6);
        assert!((s.lr(4) - 1.0).abs() < 1e-6);
        assert!((s.lr(9) - 0.5).abs() < 1e-6);
        assert!(s.lr(14).abs() < 1e-6);
        let st = Schedule {
            base_lr: 1.0,
            warmup: 0,
            total: 100,
            decay: Decay::Step {
                every: 10,
                gamma: 0.1,
            },
        };
        assert_eq!(st.lr(9), 1.0);
        assert!((st.lr(10) - 0.1).abs() < 1e-7 && (st.lr(25) - 0.01).abs() < 1e-8);
    }

    #[test]
    fn clipping_scales_to_the_max_norm_only_when_above_it() {
        let mut a = vec![3.0f32];
        let mut b = vec![4.0f32];
        let n = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert!((n - 5.0).abs() < 1e-6);
        assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
        let n = clip_grad_norm(&mut [&mut a, &mut b], 10.0);
        assert!((n - 1.0).abs() < 1e-6 && (a[0] - 0.6).abs() < 1e-6);
    }
}
