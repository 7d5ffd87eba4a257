//! Training checkpoints (student tensors, class centres, optimiser state and counters in one
//! safetensors file, written atomically) and the per-epoch CSV log. It must not train.

use super::{EpochSummary, TrainConfig, TrainState, CLASSIFIER};
use crate::error::{Error, Result};
use crate::model::student::{StudentParams, EMBEDDING_SIZE};
use crate::optim::Rule;
use crate::tensor::Tensor;
use crate::weights::{self, StoreDtype, WeightFile};
use std::collections::BTreeMap;
use std::path::Path;

const KEY_CONFIG: &str = "train.config";

/// Writes the whole state atomically (f32, so a resumed run continues bit for bit).
pub fn save(path: &Path, cfg: &TrainConfig, state: &TrainState) -> Result<()> {
    let optim = state.optim.state_tensors()?;
    let mut named: Vec<(String, &Tensor)> = state
        .params
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t))
        .collect();
    named.push((CLASSIFIER.into(), &state.classifier));
    named.extend(optim.iter().map(|(n, t)| (n.clone(), t)));
    let mut meta = state.params.info.to_metadata();
    meta.insert(KEY_CONFIG.into(), cfg.fingerprint());
    meta.insert("train.epoch".into(), state.epoch.to_string());
    meta.insert("train.batch_index".into(), state.batch_index.to_string());
    meta.insert("train.step".into(), state.step.to_string());
    meta.insert("train.optim_steps".into(), state.optim.steps.to_string());
    meta.insert("train.epoch_loss".into(), state.epoch_loss.to_string());
    meta.insert(
        "train.epoch_correct".into(),
        state.epoch_correct.to_string(),
    );
    meta.insert("train.epoch_seen".into(), state.epoch_seen.to_string());
    weights::save(path, &named, &meta, StoreDtype::F32)
}

/// Loads a checkpoint written by `save` under the same settings.
pub fn load(path: &Path, cfg: &TrainConfig) -> Result<TrainState> {
    from_weights(&WeightFile::open(path)?, cfg)
}

/// Checks and loads an opened checkpoint: the settings fingerprint, the student, the class
/// centres, and every optimiser buffer (each must belong to a parameter, match its size and be
/// finite, or a resumed run would update only part of a tensor, or diverge, without a word).
pub fn from_weights(w: &WeightFile, cfg: &TrainConfig) -> Result<TrainState> {
    let path = w.path();
    let saved = w.meta(KEY_CONFIG)?;
    if saved != cfg.fingerprint() {
        return Err(Error::InvalidArgument(format!(
            "{} was written with different training settings; resume with the same options \
             (data, resolution, epochs, batch, lr, seed, ...) or start a new run",
            path.display()
        )));
    }
    let params = StudentParams::from_weights(w)?;
    let entry = w.entry(CLASSIFIER)?;
    if entry.shape.len() != 2 || entry.shape[1] != EMBEDDING_SIZE {
        return Err(Error::TensorShape {
            name: CLASSIFIER.into(),
            expected: vec![entry.shape.first().copied().unwrap_or(0), EMBEDDING_SIZE],
            found: entry.shape.clone(),
        });
    }
    let classifier = w.tensor(CLASSIFIER, &entry.shape.clone())?;
    check_finite(path, CLASSIFIER, &classifier)?;
    let mut optim = cfg.optimizer()?;
    let buffers: &[&str] = match optim.rule {
        Rule::Sgd { .. } => &["optim.m."],
        Rule::AdamW { .. } => &["optim.m.", "optim.v."],
    };
    let mut optim_tensors = BTreeMap::new();
    for e in w.entries().filter(|e| e.name.starts_with("optim.")) {
        let param = buffers
            .iter()
            .find_map(|b| e.name.strip_prefix(b))
            .ok_or_else(|| Error::WeightFormat {
                path: path.to_path_buf(),
                reason: format!(
                    "optimiser buffer `{}` is not one this run's optimiser keeps; \
                     the checkpoint is corrupt or from another run: start a new run",
                    e.name
                ),
            })?;
        let numel = if param == CLASSIFIER {
            classifier.numel()
        } else {
            params
                .tensors
                .get(param)
                .map(Tensor::numel)
                .ok_or_else(|| Error::WeightFormat {
                    path: path.to_path_buf(),
                    reason: format!(
                        "optimiser buffer `{}` names no parameter of the student; \
                         the checkpoint is corrupt: start a new run",
                        e.name
                    ),
                })?
        };
        let t = w.tensor(&e.name, &[numel])?;
        check_finite(path, &e.name, &t)?;
        optim_tensors.insert(e.name.clone(), t);
    }
    let num = |key: &str| -> Result<u64> {
        w.meta(key)?.parse().map_err(|_| Error::Metadata {
            key: key.into(),
            reason: "not a whole number".into(),
        })
    };
    optim.load_state(num("train.optim_steps")?, &optim_tensors);
    Ok(TrainState {
        params,
        classifier,
        optim,
        epoch: num("train.epoch")? as usize,
        batch_index: num("train.batch_index")? as usize,
        step: num("train.step")?,
        epoch_loss: w
            .meta("train.epoch_loss")?
            .parse()
            .map_err(|_| Error::Metadata {
                key: "train.epoch_loss".into(),
                reason: "not a number".into(),
            })?,
        epoch_correct: num("train.epoch_correct")? as usize,
        epoch_seen: num("train.epoch_seen")? as usize,
        pool: Default::default(),
    })
}

/// A loaded tensor must hold finite numbers only.
fn check_finite(path: &Path, name: &str, t: &Tensor) -> Result<()> {
    if t.data().iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    Err(Error::WeightFormat {
        path: path.to_path_buf(),
        reason: format!("tensor `{name}` holds NaN or infinite values; start a new run"),
    })
}

/// Adds one epoch's line to the CSV log (header first if new: the fixed columns, then the
/// names of the summary's extra values), rewriting it atomically.
pub fn append_csv(path: &Path, s: &EpochSummary) -> Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut header = "epoch,loss,accuracy,lr,faces_per_sec".to_string();
            for (name, _) in &s.extra {
                header.push(',');
                header.push_str(name);
            }
            header + "\n"
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    text.push_str(&format!(
        "{},{:.6},{:.6},{:.6e},{:.1}",
        s.epoch + 1,
        s.loss,
        s.accuracy,
        s.lr,
        s.faces_per_sec
    ));
    for (_, v) in &s.extra {
        text.push_str(&format!(",{v:.6}"));
    }
    text.push('\n');
    weights::write_atomic(path, text.as_bytes())
}
