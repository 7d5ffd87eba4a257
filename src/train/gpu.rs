//! The training step with the student's network on a GPU (feature `cuda`): converts named
//! parameters to `cuda::train`'s plain layers and gradients back, and runs the host part (loss,
//! clip, optimiser, running statistics) with the same code as the CPU step. No kernels here.

use super::{
    apply_gradients, classify_and_backward, Objective, StepStats, TrainConfig, TrainState,
    CLASSIFIER,
};
use crate::autograd::student::{is_trainable, BnBatchStats};
use crate::autograd::Tape;
use crate::cpu::Kernels;
use crate::cuda::layers::{BnStats, TrainBlock, TrainConv, TrainLayers};
use crate::cuda::train::CudaTrainNet;
use crate::cuda::CudaDevice;
use crate::error::{Error, Result};
use crate::model::student::{StudentParams, BLOCKS, BN_EPS, STEM_CHANNELS};
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

fn data(p: &StudentParams, name: &str) -> Result<Vec<f32>> {
    Ok(p.get(name)?.data().to_vec())
}

fn unit(p: &StudentParams, prefix: &str) -> Result<TrainConv> {
    Ok(TrainConv {
        weight: data(p, &format!("{prefix}.conv.weight"))?,
        gamma: data(p, &format!("{prefix}.bn.weight"))?,
        beta: data(p, &format!("{prefix}.bn.bias"))?,
        alpha: data(p, &format!("{prefix}.prelu.weight"))?,
    })
}

/// The trainable parameters of `p` as the GPU's plain layers (running statistics stay here).
pub fn train_layers(p: &StudentParams) -> Result<TrainLayers> {
    let mut blocks = Vec::with_capacity(BLOCKS.len());
    for b in BLOCKS {
        blocks.push(TrainBlock {
            dw: unit(p, &format!("{}.dw", b.name))?,
            pw: unit(p, &format!("{}.pw", b.name))?,
            c_in: b.c_in,
            c_out: b.c_out,
            stride: b.stride,
            residual: b.residual,
        });
    }
    let layers = TrainLayers {
        resolution: p.info.resolution,
        stem: unit(p, "stem")?,
        blocks,
        gdc_weight: data(p, "head.gdc.conv.weight")?,
        gdc_bn: (data(p, "head.gdc.bn.weight")?, data(p, "head.gdc.bn.bias")?),
        linear_weight: data(p, "head.linear.weight")?,
        head_bn: (data(p, "head.bn.weight")?, data(p, "head.bn.bias")?),
    };
    debug_assert_eq!(layers.stem_channels(), STEM_CHANNELS);
    layers.validate()?;
    Ok(layers)
}

/// Gradients in the GPU's layout, named as the student's parameters.
pub fn named_gradients(g: TrainLayers) -> BTreeMap<String, Vec<f32>> {
    let mut out = BTreeMap::new();
    let mut put_unit = |prefix: &str, u: TrainConv| {
        out.insert(format!("{prefix}.conv.weight"), u.weight);
        out.insert(format!("{prefix}.bn.weight"), u.gamma);
        out.insert(format!("{prefix}.bn.bias"), u.beta);
        out.insert(format!("{prefix}.prelu.weight"), u.alpha);
    };
    put_unit("stem", g.stem);
    for (spec, b) in BLOCKS.iter().zip(g.blocks) {
        put_unit(&format!("{}.dw", spec.name), b.dw);
        put_unit(&format!("{}.pw", spec.name), b.pw);
    }
    out.insert("head.gdc.conv.weight".into(), g.gdc_weight);
    out.insert("head.gdc.bn.weight".into(), g.gdc_bn.0);
    out.insert("head.gdc.bn.bias".into(), g.gdc_bn.1);
    out.insert("head.linear.weight".into(), g.linear_weight);
    out.insert("head.bn.weight".into(), g.head_bn.0);
    out.insert("head.bn.bias".into(), g.head_bn.1);
    out
}

/// The GPU's batch statistics under the names `record_student` gives them, in its order.
fn named_stats(stats: BnStats) -> Result<Vec<BnBatchStats>> {
    let mut prefixes = vec!["stem.bn".to_string()];
    for b in BLOCKS {
        prefixes.push(format!("{}.dw.bn", b.name));
        prefixes.push(format!("{}.pw.bn", b.name));
    }
    prefixes.push("head.gdc.bn".into());
    prefixes.push("head.bn".into());
    if prefixes.len() != stats.len() {
        return Err(Error::Shape(format!(
            "the GPU returned {} batch statistics, the student has {} batch-norms",
            stats.len(),
            prefixes.len()
        )));
    }
    Ok(prefixes
        .into_iter()
        .zip(stats)
        .map(|(prefix, (mean, var, count))| BnBatchStats {
            prefix,
            mean,
            var,
            count,
        })
        .collect())
}

/// The student's network resident on one GPU for a training run.
pub struct GpuTrainer {
    net: Option<CudaTrainNet>,
    dev: Arc<CudaDevice>,
}

impl GpuTrainer {
    /// Opens GPU `ordinal` (compiling the kernels); fails with one line when CUDA is unusable.
    pub fn open(ordinal: usize) -> Result<GpuTrainer> {
        Ok(GpuTrainer {
            net: None,
            dev: Arc::new(CudaDevice::open(ordinal)?),
        })
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// `objective_step` with the network's forward and backward on the GPU: the same loss,
    /// gradient clipping, optimiser and running-statistics update, from the same host code.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        k: &Kernels,
        cfg: &TrainConfig,
        state: &mut TrainState,
        x: Tensor,
        labels: &[usize],
        indices: &[usize],
        lr: f32,
        objective: &dyn Objective,
    ) -> Result<StepStats> {
        let n = labels.len();
        if indices.len() != n {
            return Err(Error::Shape(format!(
                "{} sample indices for a batch of {n}",
                indices.len()
            )));
        }
        let [xn, ..] = x.dims4("student input")?;
        if xn != n {
            return Err(Error::Shape(format!("{xn} faces but {n} labels")));
        }
        let layers = train_layers(&state.params)?;
        let net = match self.net.as_mut() {
            Some(net) => {
                net.set_params(&layers)?;
                net
            }
            None => self
                .net
                .insert(CudaTrainNet::new(self.dev.clone(), &layers, BN_EPS)?),
        };
        let (pre, stats) = net.forward(x.data(), n)?;
        let m = pre.len() / n;
        let mut tape = Tape::new(k);
        let pre_var = tape.leaf(Tensor::new(&[n, m], pre)?, true);
        let emb = tape.l2_normalize(pre_var)?;
        let head = classify_and_backward(&mut tape, emb, cfg, state, labels, indices, objective)?;
        let demb = tape
            .grad(pre_var)
            .map(|t| t.data().to_vec())
            .unwrap_or_else(|| vec![0.0; n * m]);
        let cg = tape
            .grad(head.centres)
            .map(|t| t.data().to_vec())
            .unwrap_or_else(|| vec![0.0; state.classifier.numel()]);
        drop(tape);
        let mut named = named_gradients(net.backward(&demb)?);
        let mut grads = Vec::with_capacity(named.len() + 1);
        for name in state.params.tensors.keys().filter(|n| is_trainable(n)) {
            let g = named.remove(name).ok_or_else(|| {
                Error::Shape(format!("the GPU returned no gradient for `{name}`"))
            })?;
            grads.push((name.clone(), g));
        }
        if let Some(extra) = named.keys().next() {
            return Err(Error::Shape(format!(
                "the GPU returned a gradient for `{extra}`, which the student does not train"
            )));
        }
        grads.push((CLASSIFIER.into(), cg));
        apply_gradients(cfg, state, grads, &named_stats(stats)?, lr)?;
        Ok(StepStats {
            loss: head.loss,
            correct: head.correct,
            faces: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::student::{record_student, Mode};
    use crate::model::student::StudentInfo;
    use crate::rng::Rng;

    /// The GPU layout names every trainable parameter once, with its own values, and nothing
    /// else; runs without a GPU.
    #[test]
    fn device_layout_round_trips_every_trainable_parameter() {
        for r in [8, 13] {
            let mut p = StudentParams::random(StudentInfo::new(r).unwrap(), 4);
            // Distinct values everywhere, so a swapped pair of tensors would show.
            let mut rng = Rng::new(9);
            for t in p.tensors.values_mut() {
                t.data_mut().iter_mut().for_each(|v| *v = rng.normal());
            }
            let named = named_gradients(train_layers(&p).unwrap());
            let trainable: Vec<&String> = p.tensors.keys().filter(|n| is_trainable(n)).collect();
            assert_eq!(named.keys().collect::<Vec<_>>(), trainable, "r={r}");
            for (name, v) in &named {
                assert_eq!(v.as_slice(), p.get(name).unwrap().data(), "{name}");
            }
        }
    }

    /// The GPU's statistics are named in the order `record_student` reports them.
    #[test]
    fn device_batch_statistics_take_the_cpu_graph_names() {
        let r = 8;
        let p = StudentParams::random(StudentInfo::new(r).unwrap(), 1);
        let k = Kernels::scalar();
        let mut tape = Tape::new(&k);
        let x = Tensor::new(&[2, 3, r, r], vec![0.5; 2 * 3 * r * r]).unwrap();
        let g = record_student(&mut tape, &p, x, Mode::Train).unwrap();
        let fake: BnStats = g
            .bn_stats
            .iter()
            .map(|s| (s.mean.clone(), s.var.clone(), s.count))
            .collect();
        let named = named_stats(fake).unwrap();
        let ours: Vec<&str> = named.iter().map(|s| s.prefix.as_str()).collect();
        let cpu: Vec<&str> = g.bn_stats.iter().map(|s| s.prefix.as_str()).collect();
        assert_eq!(ours, cpu);
        assert!(named_stats(Vec::new()).is_err());
    }
}
