//! Training checkpoints (student tensors, class centres, optimiser state and counters in one
//! safetensors file, written atomically) and the per-epoch CSV log. It must not train.

use super::{EpochSummary, TrainConfig, TrainState, CLASSIFIER};
use crate::error::{Error, Result};
use crate::model::student::{StudentParams, EMBEDDING_SIZE};
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
    let w = WeightFile::open(path)?;
    let saved = w.meta(KEY_CONFIG)?;
    if saved != cfg.fingerprint() {
        return Err(Error::InvalidArgument(format!(
            "{} was written with different training settings; resume with the same options \
             (data, resolution, epochs, batch, lr, seed, ...) or start a new run",
            path.display()
        )));
    }
    let params = StudentParams::from_weights(&w)?;
    let entry = w.entry(CLASSIFIER)?;
    if entry.shape.len() != 2 || entry.shape[1] != EMBEDDING_SIZE {
        return Err(Error::TensorShape {
            name: CLASSIFIER.into(),
            expected: vec![entry.shape.first().copied().unwrap_or(0), EMBEDDING_SIZE],
            found: entry.shape.clone(),
        });
    }
    let classifier = w.tensor(CLASSIFIER, &entry.shape.clone())?;
    let mut optim_tensors = BTreeMap::new();
    for e in w.entries().filter(|e| e.name.starts_with("optim.")) {
        optim_tensors.insert(e.name.clone(), w.tensor(&e.name, &e.shape)?);
    }
    let num = |key: &str| -> Result<u64> {
        w.meta(key)?.parse().map_err(|_| Error::Metadata {
            key: key.into(),
            reason: "not a whole number".into(),
        })
    };
    let mut optim = cfg.optimizer()?;
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
