//! Step 2, resolution-adapted distillation: the multi-task objective on the student's unit
//! embeddings of degraded views (λ₁ feature mimic of the cached targets, λ₂ identity
//! classification, λ₃ relation, λ₄ contrastive), and the starting state for each target kind.
//! The epoch loop itself is `train::run_objective`; this module holds no loop and reads no files.

use crate::autograd::loss::{contrastive_distillation, cosine_regression, relation_distillation};
use crate::error::{Error, Result};
use crate::model::student::EMBEDDING_SIZE;
use crate::tensor::Tensor;
use crate::train::{Objective, TrainConfig, TrainState};

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
}

impl Default for Lambdas {
    fn default() -> Self {
        Lambdas {
            mimic: 10.0,
            class: 1.0,
            relation: 0.0,
            contrast: 1.0,
            contrast_scale: 16.0,
        }
    }
}

/// The multi-task objective over targets `[samples, 128]` (unit rows, one per view) and the
/// samples' identity labels (the contrastive term keeps views of one person from competing).
pub struct Multitask<'a> {
    pub targets: &'a [f32],
    pub labels: &'a [usize],
    pub lambdas: Lambdas,
}

impl Objective for Multitask<'_> {
    fn class_weight(&self) -> f32 {
        self.lambdas.class
    }

    fn embedding_loss(&self, emb: &[f32], indices: &[usize], demb: &mut [f32]) -> Result<f32> {
        let d = EMBEDDING_SIZE;
        let n = indices.len();
        let l = self.lambdas;
        if l.mimic == 0.0 && l.relation == 0.0 && l.contrast == 0.0 {
            return Ok(0.0);
        }
        let rows = self.targets.len() / d;
        let mut t = Vec::with_capacity(n * d);
        for &i in indices {
            if i >= rows {
                return Err(Error::Shape(format!(
                    "sample {i} has no target (the cache holds {rows})"
                )));
            }
            t.extend_from_slice(&self.targets[i * d..(i + 1) * d]);
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
            loss += l.mimic * cosine_regression(emb, &t, n, d, &mut g)?;
            for (o, v) in demb.iter_mut().zip(&g) {
                *o += l.mimic * v;
            }
        }
        if l.relation != 0.0 {
            loss += l.relation * relation_distillation(emb, &t, n, d, &mut g)?;
            for (o, v) in demb.iter_mut().zip(&g) {
                *o += l.relation * v;
            }
        }
        if l.contrast != 0.0 {
            let scale = f64::from(l.contrast_scale);
            loss += l.contrast * contrastive_distillation(emb, &t, &labels, n, d, scale, &mut g)?;
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
        let obj = Multitask {
            targets: &targets,
            labels: &labels,
            lambdas: Lambdas {
                mimic: 2.0,
                class: 0.5,
                relation: 3.0,
                contrast: 0.25,
                contrast_scale: 8.0,
            },
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
            targets: &targets,
            labels: &labels[..2],
            ..obj
        };
        assert!(
            few.embedding_loss(&emb, &idx, &mut g).is_err(),
            "sample 3 has no label"
        );
        let off = Multitask {
            targets: &targets,
            labels: &labels,
            lambdas: Lambdas {
                mimic: 0.0,
                class: 1.0,
                relation: 0.0,
                contrast: 0.0,
                contrast_scale: 16.0,
            },
        };
        let mut z = vec![0.0; 2 * d];
        assert_eq!(off.embedding_loss(&emb, &idx, &mut z).unwrap(), 0.0);
        assert!(z.iter().all(|v| *v == 0.0));
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
