//! Step 1, cross-dataset distillation: the frozen teacher's features of every fixed view
//! (computed once, resumably, into a memory-mapped cache), the bridge head trained on them with
//! margin softmax over the public identities plus a similarity-structure term (and, when asked,
//! on the teacher's features of low-resolution copies, held to their views' by a consistency
//! term), and the adapted features written back to the cache for step 2. It never trains the
//! student.

use super::head::{BridgeHead, CENTRES, FC1, FC2};
use super::progress_bar;
use crate::autograd::loss::{cosine_regression, margin_softmax, relation_distillation, Margin};
use crate::autograd::Tape;
use crate::cpu::Kernels;
use crate::data::image::{to_input, Rgb8};
use crate::data::loader::epoch_order;
use crate::data::views::ViewSource;
use crate::error::{Error, Result};
use crate::model::student::Normalization;
use crate::model::teacher::{Teacher, TEACHER_EMBEDDING, TEACHER_RESOLUTION};
use crate::optim::{clip_grad_norm, Decay, Optimizer, Rule, Schedule};
use crate::tensor::Tensor;
use crate::weights::{self, StoreDtype, WeightFile};
use std::collections::BTreeMap;
use std::path::Path;

/// The `format` metadata value of a feature cache.
pub const FEATURES_FORMAT: &str = "bridgeface.features/1";
/// Raw (unit) teacher features of every view, `[views, 128]`.
pub const RAW: &str = "raw";
/// Adapted (unit) features of every view, `[views, 128]`; present once step 1 finished.
pub const ADAPTED: &str = "adapted";

/// How the head is trained.
#[derive(Clone, Debug)]
pub struct HeadConfig {
    pub hidden: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub weight_decay: f32,
    pub scale: f32,
    pub margin: Margin,
    /// Weight of the similarity-structure term (batch cosine matrix of the adapted features
    /// against the raw teacher's).
    pub structure_weight: f32,
    /// Weight of the resolution-consistency term: 1 − cos between the adapted features of a
    /// view and of its low-resolution copy (used only when low-resolution features are given).
    pub lr_consistency: f32,
    pub seed: u64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            hidden: 256,
            epochs: 20,
            batch: 256,
            lr: 2e-3,
            weight_decay: 1e-4,
            scale: 30.0,
            margin: Margin::CosFace(0.3),
            structure_weight: 1000.0,
            lr_consistency: 10.0,
            seed: 0,
        }
    }
}

/// The teacher's input tensor of a 112×112 chip (raw 0..255 values, as SFace takes them).
pub(crate) fn teacher_input(view: &Rgb8) -> Result<Tensor> {
    let raw = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    to_input(view, TEACHER_RESOLUTION, &raw)
}

/// Unit teacher features of every chip of `views`, `[count, 128]` row-major. Rows already in
/// the cache at `cache` (same `identity` metadata) are reused, and the cache is rewritten after
/// every chunk, so an interrupted run resumes where it stopped.
pub fn teacher_features(
    k: &Kernels,
    teacher: &Teacher,
    views: &dyn ViewSource,
    cache: &Path,
    identity: &BTreeMap<String, String>,
    threads: usize,
    progress: bool,
) -> Result<Vec<f32>> {
    let total = views.count();
    let d = TEACHER_EMBEDDING;
    let mut feats = vec![0.0f32; total * d];
    let mut done = 0usize;
    if cache.exists() {
        if let Ok(w) = WeightFile::open(cache) {
            let same = identity
                .iter()
                .all(|(key, v)| w.metadata().get(key) == Some(v));
            if same && w.entry(RAW).is_ok_and(|e| e.shape == [total, d]) {
                done = w.meta("done")?.parse().unwrap_or(0).min(total);
                feats[..done * d].copy_from_slice(&w.view_f32(RAW)?[..done * d]);
            }
        }
    }
    let bar = progress_bar(total as u64, "teacher features", "views", progress);
    bar.set_position(done as u64);
    let chunk = 256usize;
    let threads = threads.max(1);
    while done < total {
        let end = (done + chunk).min(total);
        // The teacher splits each chunk over the threads itself.
        let xs = (done..end)
            .map(|j| teacher_input(&views.chip(j)?))
            .collect::<Result<Vec<_>>>()?;
        let e = teacher.forward_threads(k, &Tensor::stack(&xs)?, threads)?;
        feats[done * d..end * d].copy_from_slice(e.data());
        bar.inc((end - done) as u64);
        done = end;
        let mut meta = identity.clone();
        meta.insert("format".into(), FEATURES_FORMAT.into());
        meta.insert("done".into(), done.to_string());
        let t = Tensor::new(&[total, d], feats.clone())?;
        weights::save(cache, &[(RAW.to_string(), &t)], &meta, StoreDtype::F32)?;
    }
    bar.finish_and_clear();
    Ok(feats)
}

/// Loss summary of one head epoch.
#[derive(Clone, Copy, Debug)]
pub struct HeadEpoch {
    pub epoch: usize,
    pub class_loss: f64,
    pub structure_loss: f64,
    /// Mean 1 − cos between views and their low-resolution copies (0 without them).
    pub lr_loss: f64,
    pub accuracy: f64,
}

/// Teacher features of low-resolution copies of some views, for a resolution-aware head:
/// `raw [rows, 128]` and, for each row, the view (row of the head's main features) it copies.
pub struct LrFeatures<'a> {
    pub raw: &'a [f32],
    pub hr_row: Vec<usize>,
}

/// Trains `head` on unit teacher features `raw [m, 128]` with `labels [m]`: margin softmax of
/// the adapted features against the (normalised) class centres, plus `structure_weight` times
/// the relation loss between the adapted and raw batch cosine matrices. With `lr`, each batch
/// also takes the low-resolution copies of its views: margin softmax on their adapted features
/// too, and `lr_consistency` times 1 − cos between each copy's adapted feature and its view's
/// (both sides get the gradient, so the head learns to drop what low resolution loses).
/// AdamW, cosine decay.
pub fn train_head(
    k: &Kernels,
    head: &mut BridgeHead,
    raw: &[f32],
    labels: &[usize],
    cfg: &HeadConfig,
    lr: Option<&LrFeatures>,
    progress: bool,
) -> Result<Vec<HeadEpoch>> {
    let d = TEACHER_EMBEDDING;
    let m = labels.len();
    if raw.len() != m * d || m < 2 {
        return Err(Error::Shape(format!(
            "{} feature values for {m} labels (need at least 2 rows of {d})",
            raw.len()
        )));
    }
    let classes = head.classes();
    if let Some(l) = labels.iter().find(|&&l| l >= classes) {
        return Err(Error::InvalidArgument(format!(
            "label {l} but the head has {classes} class centres"
        )));
    }
    if cfg.epochs == 0 || cfg.batch < 2 {
        return Err(Error::InvalidArgument(
            "the head needs at least 1 epoch and a batch of at least 2".into(),
        ));
    }
    let copies = copies_of_views(lr, m, cfg)?;
    let batch = cfg.batch.min(m);
    let per_epoch = m / batch;
    let schedule = Schedule {
        base_lr: cfg.lr,
        warmup: per_epoch as u64,
        total: (cfg.epochs * per_epoch) as u64,
        decay: Decay::Cosine { min_lr: 0.0 },
    };
    let mut opt = Optimizer::new(
        Rule::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        },
        cfg.weight_decay,
    )?;
    let bar = progress_bar(schedule.total, "bridge head", "steps", progress);
    let mut history = Vec::new();
    let mut step = 0u64;
    for epoch in 0..cfg.epochs {
        let order = epoch_order(m, cfg.seed ^ HEAD_ORDER_STREAM, epoch);
        let (mut cl, mut sl, mut ll, mut correct) = (0.0f64, 0.0f64, 0.0f64, 0usize);
        for b in 0..per_epoch {
            let batch_views = HeadBatch {
                idx: &order[b * batch..(b + 1) * batch],
                raw,
                labels,
                copies: &copies,
                lr,
            };
            let (losses, grads) = head_gradients(k, head, &batch_views, cfg)?;
            if !losses.is_finite() {
                return Err(Error::parameter(
                    "head_lr",
                    format!("bridge head training diverged at step {step}; lower `head_lr`"),
                ));
            }
            apply_head_step(head, &mut opt, grads, schedule.lr(step))?;
            step += 1;
            cl += losses.class as f64;
            sl += losses.structure as f64;
            ll += losses.consistency as f64;
            correct += losses.correct;
            bar.set_message(format!(
                "epoch {}/{} loss {:.3} + {:.4}",
                epoch + 1,
                cfg.epochs,
                losses.class,
                losses.structure
            ));
            bar.inc(1);
        }
        history.push(HeadEpoch {
            epoch,
            class_loss: cl / per_epoch as f64,
            structure_loss: sl / per_epoch as f64,
            lr_loss: ll / per_epoch as f64,
            accuracy: correct as f64 / (per_epoch * batch) as f64,
        });
    }
    bar.finish_and_clear();
    Ok(history)
}

/// Mixed into the seed for the head's batch order, so that it never follows the same stream as
/// the views drawn from the same seed.
const HEAD_ORDER_STREAM: u64 = 0x4EAD;

/// For each view, the low-resolution rows that copy it (empty without copies); checks the
/// copies' shapes and the consistency weight.
fn copies_of_views(lr: Option<&LrFeatures>, m: usize, cfg: &HeadConfig) -> Result<Vec<Vec<usize>>> {
    let d = TEACHER_EMBEDDING;
    let mut copies: Vec<Vec<usize>> = vec![Vec::new(); m];
    if let Some(lr) = lr {
        if lr.raw.len() != lr.hr_row.len() * d {
            return Err(Error::Shape(format!(
                "{} low-resolution feature values for {} rows of {d}",
                lr.raw.len(),
                lr.hr_row.len()
            )));
        }
        for (l, &j) in lr.hr_row.iter().enumerate() {
            copies
                .get_mut(j)
                .ok_or_else(|| {
                    Error::Shape(format!("low-resolution row {l} copies view {j} of {m}"))
                })?
                .push(l);
        }
        if !(cfg.lr_consistency >= 0.0 && cfg.lr_consistency.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "the resolution-consistency weight must be ≥ 0, got {}",
                cfg.lr_consistency
            )));
        }
    }
    Ok(copies)
}

/// The rows of one step of the head: which views, their features and labels, and their
/// low-resolution copies.
struct HeadBatch<'a> {
    idx: &'a [usize],
    raw: &'a [f32],
    labels: &'a [usize],
    copies: &'a [Vec<usize>],
    lr: Option<&'a LrFeatures<'a>>,
}

/// Each head tensor's gradient, by name, in the head's tensor order.
type NamedGrads = Vec<(String, Vec<f32>)>;

/// One step's loss terms (unweighted) and correctly classified views.
struct HeadLosses {
    class: f32,
    structure: f32,
    lr_class: f32,
    consistency: f32,
    correct: usize,
}

impl HeadLosses {
    fn is_finite(&self) -> bool {
        [self.class, self.structure, self.lr_class, self.consistency]
            .iter()
            .all(|v| v.is_finite())
    }
}

/// Records the head on one batch and its low-resolution copies, computes every loss term
/// (margin softmax on views and copies, the structure term, the copies' consistency with their
/// views) and runs the backward pass; returns the losses and each head tensor's gradient, in the
/// head's tensor order.
fn head_gradients(
    k: &Kernels,
    head: &BridgeHead,
    hb: &HeadBatch,
    cfg: &HeadConfig,
) -> Result<(HeadLosses, NamedGrads)> {
    let d = TEACHER_EMBEDDING;
    let classes = head.classes();
    let batch = hb.idx.len();
    let mut x = Vec::with_capacity(batch * d);
    for &i in hb.idx {
        x.extend_from_slice(&hb.raw[i * d..(i + 1) * d]);
    }
    let y: Vec<usize> = hb.idx.iter().map(|&i| hb.labels[i]).collect();
    let mut tape = Tape::new(k);
    let t = tape.leaf(Tensor::new(&[batch, d], x.clone())?, false);
    let (a, mut leaves) = head.record(&mut tape, t)?;
    let centres = tape.leaf(head.get(CENTRES)?.clone(), true);
    leaves.insert(CENTRES.to_string(), centres);
    let unit = tape.l2_normalize(centres)?;
    let cos = tape.linear(a, unit)?;
    // The low-resolution copies of this batch's views: (position in the batch, row).
    let pairs: Vec<(usize, usize)> = hb
        .idx
        .iter()
        .enumerate()
        .flat_map(|(p, &i)| hb.copies[i].iter().map(move |&l| (p, l)))
        .collect();
    let low = match hb.lr {
        Some(lr) if !pairs.is_empty() => {
            let mut xl = Vec::with_capacity(pairs.len() * d);
            for &(_, l) in &pairs {
                xl.extend_from_slice(&lr.raw[l * d..(l + 1) * d]);
            }
            let tl = tape.leaf(Tensor::new(&[pairs.len(), d], xl)?, false);
            let al = BridgeHead::record_with(&mut tape, tl, &leaves)?;
            let cos_l = tape.linear(al, unit)?;
            Some((al, cos_l))
        }
        _ => None,
    };
    let mut dcos = vec![0.0f32; batch * classes];
    let (lc, ok) = margin_softmax(
        tape.value(cos).data(),
        batch,
        classes,
        &y,
        cfg.scale as f64,
        cfg.margin,
        &mut dcos,
    )?;
    let mut da = vec![0.0f32; batch * d];
    let ls = relation_distillation(tape.value(a).data(), &x, batch, d, &mut da)?;
    da.iter_mut().for_each(|g| *g *= cfg.structure_weight);
    // Low-resolution copies: margin softmax, and consistency with their views.
    let mut low_grads = None;
    let (mut lcl, mut lconsist) = (0.0f32, 0.0f32);
    if let Some((al, cos_l)) = low {
        let p = pairs.len();
        let yl: Vec<usize> = pairs.iter().map(|&(q, _)| y[q]).collect();
        let mut dcos_l = vec![0.0f32; p * classes];
        (lcl, _) = margin_softmax(
            tape.value(cos_l).data(),
            p,
            classes,
            &yl,
            cfg.scale as f64,
            cfg.margin,
            &mut dcos_l,
        )?;
        let av = tape.value(a).data();
        let mut ah = Vec::with_capacity(p * d);
        for &(q, _) in &pairs {
            ah.extend_from_slice(&av[q * d..(q + 1) * d]);
        }
        let alv = tape.value(al).data();
        let (mut dal, mut dah) = (vec![0.0f32; p * d], vec![0.0f32; p * d]);
        lconsist = cosine_regression(alv, &ah, p, d, &mut dal)?;
        cosine_regression(&ah, alv, p, d, &mut dah)?;
        let w = cfg.lr_consistency;
        dal.iter_mut().for_each(|g| *g *= w);
        for (row, &(q, _)) in dah.chunks(d).zip(&pairs) {
            for (o, g) in da[q * d..(q + 1) * d].iter_mut().zip(row) {
                *o += w * g;
            }
        }
        low_grads = Some((al, dal, cos_l, dcos_l, p));
    }
    let losses = HeadLosses {
        class: lc,
        structure: ls,
        lr_class: lcl,
        consistency: lconsist,
        correct: ok,
    };
    if !losses.is_finite() {
        return Ok((losses, Vec::new()));
    }
    tape.add_grad(a, Tensor::new(&[batch, d], da)?)?;
    match low_grads {
        // The copies were recorded last: seed every gradient, then run back from them.
        Some((al, dal, cos_l, dcos_l, p)) => {
            tape.add_grad(cos, Tensor::new(&[batch, classes], dcos)?)?;
            tape.add_grad(al, Tensor::new(&[p, d], dal)?)?;
            tape.backward(cos_l, Tensor::new(&[p, classes], dcos_l)?)?;
        }
        None => tape.backward(cos, Tensor::new(&[batch, classes], dcos)?)?,
    }
    let mut grads: Vec<(String, Vec<f32>)> = Vec::new();
    for (name, v) in &leaves {
        let g = tape.grad(*v).map(|g| g.data().to_vec());
        let len = head.get(name)?.numel();
        grads.push((name.clone(), g.unwrap_or_else(|| vec![0.0; len])));
    }
    Ok((losses, grads))
}

/// Clips the head's gradients (global norm 5) and takes one AdamW step at `lr`, with weight
/// decay on the two linear layers only.
fn apply_head_step(
    head: &mut BridgeHead,
    opt: &mut Optimizer,
    mut grads: Vec<(String, Vec<f32>)>,
    lr: f32,
) -> Result<()> {
    let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|(_, g)| g.as_mut_slice()).collect();
    clip_grad_norm(&mut views, 5.0);
    let mut updates: Vec<(&str, &mut [f32], &[f32], bool)> = Vec::new();
    for ((name, t), (gname, g)) in head.tensors.iter_mut().zip(&grads) {
        if name != gname {
            return Err(Error::Shape(format!(
                "head gradient `{gname}` does not match tensor `{name}`"
            )));
        }
        let decay = name == FC1 || name == FC2;
        updates.push((name.as_str(), t.data_mut(), g.as_slice(), decay));
    }
    opt.step(&mut updates, lr)
}

/// Adapted features of every row of `raw`, in chunks.
pub fn adapt_all(k: &Kernels, head: &BridgeHead, raw: &[f32]) -> Result<Vec<f32>> {
    let d = TEACHER_EMBEDDING;
    let mut out = Vec::with_capacity(raw.len());
    for chunk in raw.chunks(1024 * d) {
        let t = Tensor::new(&[chunk.len() / d, d], chunk.to_vec())?;
        out.extend_from_slice(head.forward(k, &t)?.data());
    }
    Ok(out)
}

/// Writes the finished cache: raw and adapted features with the run's identity metadata.
pub fn write_cache(
    cache: &Path,
    identity: &BTreeMap<String, String>,
    raw: &[f32],
    adapted: &[f32],
) -> Result<()> {
    let d = TEACHER_EMBEDDING;
    let rows = raw.len() / d;
    let mut meta = identity.clone();
    meta.insert("format".into(), FEATURES_FORMAT.into());
    meta.insert("done".into(), rows.to_string());
    let r = Tensor::new(&[rows, d], raw.to_vec())?;
    let a = Tensor::new(&[rows, d], adapted.to_vec())?;
    weights::save(
        cache,
        &[(RAW.to_string(), &r), (ADAPTED.to_string(), &a)],
        &meta,
        StoreDtype::F32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Teacher-like features: `classes` unit centres, each row a noisy copy of its class's.
    fn clustered(classes: usize, per: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let d = TEACHER_EMBEDDING;
        let mut rng = Rng::new(seed);
        let centres: Vec<f32> = (0..classes * d).map(|_| rng.normal()).collect();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for c in 0..classes {
            for _ in 0..per {
                let mut row: Vec<f32> = (0..d)
                    .map(|j| centres[c * d + j] + noise * rng.normal())
                    .collect();
                let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v /= n);
                x.extend(row);
                y.push(c);
            }
        }
        (x, y)
    }

    fn mean_cos(x: &[f32], y: &[usize], same: bool) -> f64 {
        let d = TEACHER_EMBEDDING;
        let (mut s, mut n) = (0.0f64, 0usize);
        for i in 0..y.len() {
            for j in i + 1..y.len() {
                if (y[i] == y[j]) == same {
                    let c: f32 = (0..d).map(|k| x[i * d + k] * x[j * d + k]).sum();
                    s += c as f64;
                    n += 1;
                }
            }
        }
        s / n as f64
    }

    #[test]
    fn head_training_makes_identities_more_compact_and_keeps_structure() {
        let k = crate::cpu::kernels().unwrap();
        let (x, y) = clustered(6, 8, 1.3, 3);
        let mut head = BridgeHead::new(64, 6, 1).unwrap();
        let cfg = HeadConfig {
            epochs: 30,
            batch: 16,
            lr: 5e-3,
            structure_weight: 1.0,
            ..HeadConfig::default()
        };
        let hist = train_head(k, &mut head, &x, &y, &cfg, None, false).unwrap();
        assert!(
            hist.last().unwrap().class_loss < 0.5 * hist[0].class_loss,
            "{hist:?}"
        );
        let a = adapt_all(k, &head, &x).unwrap();
        let gap_raw = mean_cos(&x, &y, true) - mean_cos(&x, &y, false);
        let gap_adapted = mean_cos(&a, &y, true) - mean_cos(&a, &y, false);
        assert!(
            gap_adapted > gap_raw + 0.05,
            "same-minus-different cosine gap {gap_raw:.3} → {gap_adapted:.3}"
        );
        // The structure term keeps each feature near where the teacher put it.
        let d = TEACHER_EMBEDDING;
        let self_cos: f64 = (0..y.len())
            .map(|i| (0..d).map(|k| x[i * d + k] * a[i * d + k]).sum::<f32>() as f64)
            .sum::<f64>()
            / y.len() as f64;
        assert!(
            self_cos > 0.3,
            "adapted features moved far from the teacher's: {self_cos}"
        );
        assert!(train_head(k, &mut head, &x, &y[..3], &cfg, None, false).is_err());
    }

    /// Mean cosine between row `l` of `lo` and row `rows[l]` of `hi`.
    fn pair_cos(lo: &[f32], hi: &[f32], rows: &[usize]) -> f64 {
        let d = TEACHER_EMBEDDING;
        rows.iter()
            .enumerate()
            .map(|(l, &j)| (0..d).map(|k| lo[l * d + k] * hi[j * d + k]).sum::<f32>() as f64)
            .sum::<f64>()
            / rows.len() as f64
    }

    #[test]
    fn resolution_consistency_brings_copies_to_their_views() {
        // Identity lives in the first 96 dimensions; views carry detail in the last 32 that
        // their low-resolution copies replace with artefacts. A resolution-aware head must learn
        // to ignore those dimensions, so a copy's adapted feature lands on its view's.
        let d = TEACHER_EMBEDDING;
        let (classes, per) = (6, 8);
        let mut rng = Rng::new(11);
        let centres: Vec<f32> = (0..classes * d)
            .map(|j| if j % d < 96 { rng.normal() } else { 0.0 })
            .collect();
        let unit = |mut v: Vec<f32>| {
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.iter_mut().for_each(|a| *a /= n);
            v
        };
        let (mut x, mut y, mut xl, mut rows) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for c in 0..classes {
            for _ in 0..per {
                let base: Vec<f32> = (0..d)
                    .map(|j| centres[c * d + j] + if j < 96 { 0.3 * rng.normal() } else { 0.0 })
                    .collect();
                let mut hr = base.clone();
                let mut lo = base;
                for j in 96..d {
                    hr[j] = 2.0 * rng.normal();
                    lo[j] = 2.0 * rng.normal();
                }
                rows.push(y.len());
                x.extend(unit(hr));
                xl.extend(unit(lo));
                y.push(c);
            }
        }
        let cfg = HeadConfig {
            epochs: 40,
            batch: 16,
            lr: 5e-3,
            structure_weight: 1.0,
            lr_consistency: 10.0,
            ..HeadConfig::default()
        };
        let k = crate::cpu::kernels().unwrap();
        let raw_cos = pair_cos(&xl, &x, &rows);
        let lr = LrFeatures {
            raw: &xl,
            hr_row: rows.clone(),
        };
        let mut aware = BridgeHead::new(64, classes, 1).unwrap();
        let hist = train_head(k, &mut aware, &x, &y, &cfg, Some(&lr), false).unwrap();
        assert!(hist[0].lr_loss > 0.0, "{hist:?}");
        assert!(
            hist.last().unwrap().lr_loss < 0.5 * hist[0].lr_loss,
            "{hist:?}"
        );
        let mut plain = BridgeHead::new(64, classes, 1).unwrap();
        let plain_hist = train_head(k, &mut plain, &x, &y, &cfg, None, false).unwrap();
        assert!(plain_hist.iter().all(|h| h.lr_loss == 0.0));
        let cos = |h: &BridgeHead| {
            pair_cos(
                &adapt_all(k, h, &xl).unwrap(),
                &adapt_all(k, h, &x).unwrap(),
                &rows,
            )
        };
        let (c_aware, c_plain) = (cos(&aware), cos(&plain));
        assert!(
            c_aware > c_plain + 0.1 && c_aware > raw_cos + 0.1,
            "copy-to-view cosine: raw {raw_cos:.3}, plain head {c_plain:.3}, aware head {c_aware:.3}"
        );
        // A copy pointing past the views, or features of the wrong length, are refused.
        let bad = LrFeatures {
            raw: &xl,
            hr_row: rows.iter().map(|&j| j + y.len()).collect(),
        };
        assert!(train_head(k, &mut plain, &x, &y, &cfg, Some(&bad), false).is_err());
        let short = LrFeatures {
            raw: &xl[..d],
            hr_row: rows,
        };
        assert!(train_head(k, &mut plain, &x, &y, &cfg, Some(&short), false).is_err());
    }
}
