//! Step 2, resolution-adapted distillation: the multi-task objective on the student's unit
//! embeddings of degraded views (λ₁ feature mimic of the high-resolution targets, λ_lr mimic of
//! the teacher's feature of exactly the student's input, λ₂ identity classification, λ₃
//! relation, λ₄ contrastive), and the starting state for each target kind.
//! The epoch loop itself is `train::run_objective`; this module holds no loop and reads no files.

use crate::autograd::loss::{contrastive_distillation, cosine_regression, relation_distillation};
use crate::error::{Error, Result};
use crate::model::student::EMBEDDING_SIZE;
use crate::tensor::Tensor;
use crate::train::{Objective, TrainConfig, TrainState};
use std::sync::Mutex;

/// What the student imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing: classification only, from random class centres (ablation a).
    Scratch,
    /// The raw teacher features, with no step 1 (ablation b).
    Direct,
    /// The adapted features of the bridge (the method).
    Bridge,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Scratch => "scratch",
            Target::Direct => "direct",
            Target::Bridge => "bridge",
        }
    }
}

/// The loss weights of step 2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lambdas {
    /// Feature mimic (1 − cosine to the target).
    pub mimic: f32,
    /// Margin-softmax identity classification.
    pub class: f32,
    /// Relation distillation (batch cosine matrices).
    pub relation: f32,
    /// Contrastive distillation: each student feature must pick out its own target among the
    /// batch's (InfoNCE at scale `contrast_scale`).
    pub contrast: f32,
    pub contrast_scale: f32,
    /// Consistent mimic: 1 − cosine to the teacher's feature of exactly the student's input
    /// (needs low-resolution targets). When it is on, the relation and contrastive terms use
    /// those targets too, since every one of them is learnable from the input.
    pub lr: f32,
}

impl Default for Lambdas {
    fn default() -> Self {
        Lambdas {
            mimic: 10.0,
            class: 1.0,
            relation: 0.0,
            contrast: 1.0,
            contrast_scale: 16.0,
            lr: 0.0,
        }
    }
}

/// Unit target rows looked up by sample index.
pub trait TargetRows: Sync {
    /// The rows of `indices`, `[indices.len(), 128]` row-major.
    fn gather(&self, indices: &[usize]) -> Result<Vec<f32>>;
}

/// Targets held in one `[samples, 128]` slice (a memory-mapped cache, or rows in memory).
pub struct Rows<'a>(pub &'a [f32]);

impl TargetRows for Rows<'_> {
    fn gather(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let d = EMBEDDING_SIZE;
        let rows = self.0.len() / d;
        let mut t = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            if i >= rows {
                return Err(Error::Shape(format!(
                    "sample {i} has no target (the cache holds {rows})"
                )));
            }
            t.extend_from_slice(&self.0[i * d..(i + 1) * d]);
        }
        Ok(t)
    }
}

/// The mean cosine of the student to its main target over the steps since it was last read:
/// how well the student fits its training inputs, logged per epoch.
#[derive(Debug, Default)]
pub struct FitMeter(Mutex<(f64, usize)>);

impl FitMeter {
    fn add(&self, emb: &[f32], targets: &[f32]) {
        let d = EMBEDDING_SIZE;
        let sum: f64 = emb
            .chunks(d)
            .zip(targets.chunks(d))
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>())
            .sum();
        if let Ok(mut m) = self.0.lock() {
            m.0 += sum;
            m.1 += emb.len() / d;
        }
    }

    /// The mean since the last call (NaN when nothing was added), and a fresh start.
    pub fn take(&self) -> f64 {
        match self.0.lock() {
            Ok(mut m) => {
                let mean = if m.1 == 0 { f64::NAN } else { m.0 / m.1 as f64 };
                *m = (0.0, 0);
                mean
            }
            Err(_) => f64::NAN,
        }
    }
}

/// The multi-task objective over high-resolution targets (unit rows by sample, one per view),
/// optional low-resolution targets (the teacher's feature of each sample's exact input), and
/// the samples' identity labels (the contrastive term keeps one person's samples from
/// competing).
pub struct Multitask<'a> {
    pub targets: &'a dyn TargetRows,
    pub lr_targets: Option<&'a dyn TargetRows>,
    pub labels: &'a [usize],
    pub lambdas: Lambdas,
    /// Where the fit to the main target is measured, if anywhere.
    pub fit: Option<&'a FitMeter>,
}

impl Objective for Multitask<'_> {
    fn class_weight(&self) -> f32 {
        self.lambdas.class
    }

    fn embedding_loss(&self, emb: &[f32], indices: &[usize], demb: &mut [f32]) -> Result<f32> {
        let d = EMBEDDING_SIZE;
        let n = indices.len();
        let l = self.lambdas;
        if l.mimic == 0.0 && l.relation == 0.0 && l.contrast == 0.0 && l.lr == 0.0 {
            return Ok(0.0);
        }
        if l.lr != 0.0 && self.lr_targets.is_none() {
            return Err(Error::InvalidArgument(
                "the low-resolution mimic weight is set but there are no low-resolution targets \
                 (label a store and train on it)"
                    .into(),
            ));
        }
        let hr = if l.mimic != 0.0 || l.lr == 0.0 {
            self.targets.gather(indices)?
        } else {
            Vec::new()
        };
        let lr_rows = match (self.lr_targets, l.lr != 0.0) {
            (Some(t), true) => t.gather(indices)?,
            _ => Vec::new(),
        };
        // The main target: the learnable one when there is one.
        let t = if lr_rows.is_empty() { &hr } else { &lr_rows };
        if t.len() != n * d {
            return Err(Error::Shape(format!(
                "{} target values for {n} samples",
                t.len()
            )));
        }
        if let Some(fit) = self.fit {
            fit.add(emb, t);
        }
        let labels = if l.contrast != 0.0 {
            indices
                .iter()
                .map(|&i| {
                    self.labels.get(i).copied().ok_or_else(|| {
                        Error::Shape(format!(
                            "sample {i} has no label (the set holds {})",
                            self.labels.len()
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let mut g = vec![0.0f32; n * d];
        let mut loss = 0.0;
        if l.mimic != 0.0 {
            loss += l.mimic * cosine_regression(emb, &hr, n, d, &mut g)?;
            for (o, v) in demb.iter_mut().zip(&g) {
                *o += l.mimic * v;
            }
        }
        if l.lr != 0.0 {
            loss += l.lr * cosine_regression(emb, &lr_rows, n, d, &mut g)?;
            for (o, v) in demb.iter_mut().zip(&g) {
                *o += l.lr * v;
            }
        }
        if l.relation != 0.0 {
            loss += l.relation * relation_distillation(emb, t, n, d, &mut g)?;
            for (o, v) in demb.iter_mut().zip(&g) {
                *o += l.relation * v;
            }
        }
        if l.contrast != 0.0 {
            let scale = f64::from(l.contrast_scale);
            loss += l.contrast * contrastive_distillation(emb, t, &labels, n, d, scale, &mut g)?;
            for (o, v) in demb.iter_mut().zip(&g) {
                *o += l.contrast * v;
            }
        }
        Ok(loss)
    }
}

/// Normalised class means of `targets` by `labels` (`classes` rows; an empty class keeps a
/// zero row, which the loss's normalisation leaves harmless).
pub fn class_means(targets: &[f32], labels: &[usize], classes: usize) -> Result<Tensor> {
    let d = EMBEDDING_SIZE;
    let mut m = vec![0.0f32; classes * d];
    for (row, &l) in targets.chunks(d).zip(labels) {
        if l >= classes {
            return Err(Error::InvalidArgument(format!(
                "label {l} out of range for {classes} identities"
            )));
        }
        for (a, v) in m[l * d..(l + 1) * d].iter_mut().zip(row) {
            *a += v;
        }
    }
    for row in m.chunks_mut(d) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
    Tensor::new(&[classes, d], m)
}

/// The starting state of a step-2 run: a random student (seeded), and class centres that sit
/// where the target space puts each identity (`centres`), or random ones for `Scratch`.
pub fn initial_state(
    cfg: &TrainConfig,
    classes: usize,
    centres: Option<Tensor>,
    provenance: String,
) -> Result<TrainState> {
    let mut state = TrainState::new(cfg, classes)?;
    if let Some(c) = centres {
        if c.shape() != [classes, EMBEDDING_SIZE] {
            return Err(Error::Shape(format!(
                "class centres {:?} for {classes} identities",
                c.shape()
            )));
        }
        state.classifier = c;
    }
    state.params.info.provenance = provenance;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn multitask_gathers_the_right_targets_and_weights_each_term() {
        let d = EMBEDDING_SIZE;
        let mut rng = Rng::new(1);
        let targets: Vec<f32> = (0..5 * d).map(|_| rng.normal()).collect();
        let emb: Vec<f32> = (0..2 * d).map(|_| rng.normal()).collect();
        let idx = [3usize, 1];
        let gathered: Vec<f32> = idx
            .iter()
            .flat_map(|&i| targets[i * d..(i + 1) * d].to_vec())
            .collect();
        let labels = [0usize, 1, 2, 3, 4];
        let rows = Rows(&targets);
        let obj = Multitask {
            targets: &rows,
            lr_targets: None,
            labels: &labels,
            lambdas: Lambdas {
                mimic: 2.0,
                class: 0.5,
                relation: 3.0,
                contrast: 0.25,
                contrast_scale: 8.0,
                lr: 0.0,
            },
            fit: None,
        };
        let mut g = vec![0.0; 2 * d];
        let loss = obj.embedding_loss(&emb, &idx, &mut g).unwrap();
        let (mut g1, mut g3, mut g4) = (vec![0.0; 2 * d], vec![0.0; 2 * d], vec![0.0; 2 * d]);
        let l1 = cosine_regression(&emb, &gathered, 2, d, &mut g1).unwrap();
        let l3 = relation_distillation(&emb, &gathered, 2, d, &mut g3).unwrap();
        let l4 = contrastive_distillation(&emb, &gathered, &[3, 1], 2, d, 8.0, &mut g4).unwrap();
        assert!(l4 > 0.0);
        assert!((loss - (2.0 * l1 + 3.0 * l3 + 0.25 * l4)).abs() < 1e-5);
        for i in 0..2 * d {
            assert!((g[i] - (2.0 * g1[i] + 3.0 * g3[i] + 0.25 * g4[i])).abs() < 1e-6);
        }
        assert_eq!(obj.class_weight(), 0.5);
        assert!(obj.embedding_loss(&emb, &[5, 0], &mut g).is_err());
        let few = Multitask {
            labels: &labels[..2],
            ..obj
        };
        assert!(
            few.embedding_loss(&emb, &idx, &mut g).is_err(),
            "sample 3 has no label"
        );
        let off = Multitask {
            targets: &rows,
            lr_targets: None,
            labels: &labels,
            lambdas: Lambdas {
                mimic: 0.0,
                class: 1.0,
                relation: 0.0,
                contrast: 0.0,
                contrast_scale: 16.0,
                lr: 0.0,
            },
            fit: None,
        };
        let mut z = vec![0.0; 2 * d];
        assert_eq!(off.embedding_loss(&emb, &idx, &mut z).unwrap(), 0.0);
        assert!(z.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn the_low_resolution_term_mimics_its_own_targets_and_leads_contrast_and_fit() {
        let d = EMBEDDING_SIZE;
        let mut rng = Rng::new(2);
        let unit = |v: Vec<f32>| -> Vec<f32> {
            v.chunks(d)
                .flat_map(|r| {
                    let n = r.iter().map(|x| x * x).sum::<f32>().sqrt();
                    r.iter().map(move |x| x / n).collect::<Vec<_>>()
                })
                .collect()
        };
        let hr = unit((0..4 * d).map(|_| rng.normal()).collect());
        let lr = unit((0..4 * d).map(|_| rng.normal()).collect());
        let emb = unit((0..2 * d).map(|_| rng.normal()).collect());
        let idx = [2usize, 0];
        let pick = |t: &[f32]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| t[i * d..(i + 1) * d].to_vec())
                .collect()
        };
        let (hr_rows, lr_rows) = (Rows(&hr), Rows(&lr));
        let labels = [0usize, 1, 2, 3];
        let fit = FitMeter::default();
        let obj = Multitask {
            targets: &hr_rows,
            lr_targets: Some(&lr_rows),
            labels: &labels,
            lambdas: Lambdas {
                mimic: 1.5,
                class: 0.0,
                relation: 0.0,
                contrast: 0.5,
                contrast_scale: 8.0,
                lr: 4.0,
            },
            fit: Some(&fit),
        };
        let mut g = vec![0.0; 2 * d];
        let loss = obj.embedding_loss(&emb, &idx, &mut g).unwrap();
        let (mut g1, mut g2, mut g4) = (vec![0.0; 2 * d], vec![0.0; 2 * d], vec![0.0; 2 * d]);
        let l1 = cosine_regression(&emb, &pick(&hr), 2, d, &mut g1).unwrap();
        let l2 = cosine_regression(&emb, &pick(&lr), 2, d, &mut g2).unwrap();
        let l4 = contrastive_distillation(&emb, &pick(&lr), &[2, 0], 2, d, 8.0, &mut g4).unwrap();
        assert!((loss - (1.5 * l1 + 4.0 * l2 + 0.5 * l4)).abs() < 1e-5);
        for i in 0..2 * d {
            assert!((g[i] - (1.5 * g1[i] + 4.0 * g2[i] + 0.5 * g4[i])).abs() < 1e-6);
        }
        // The fit is the mean cosine to the low-resolution targets: 1 − the mean mimic loss.
        assert!((fit.take() - (1.0 - f64::from(l2))).abs() < 1e-5);
        assert!(fit.take().is_nan(), "taking the fit starts a new mean");
        let missing = Multitask {
            lr_targets: None,
            ..obj
        };
        assert!(
            missing.embedding_loss(&emb, &idx, &mut g).is_err(),
            "λ_lr without low-resolution targets"
        );
    }

    #[test]
    fn class_means_are_unit_and_point_at_their_members() {
        let d = EMBEDDING_SIZE;
        let mut t = vec![0.0f32; 3 * d];
        t[0] = 1.0;
        t[d] = 1.0;
        t[2 * d + 1] = 2.0;
        let m = class_means(&t, &[0, 0, 1], 2).unwrap();
        assert_eq!(m.data()[0], 1.0);
        assert_eq!(m.data()[d + 1], 1.0);
        assert!(class_means(&t, &[0, 0, 2], 2).is_err());
    }
}
