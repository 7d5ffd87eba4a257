//! The bridge head of step 1: a residual two-layer MLP on the frozen teacher's unit features,
//! `a = normalise(t + W₂·PReLU(W₁·t))`, its tape recording for training, inference, and its
//! file (weights, class centres and the run's provenance). It does not run the teacher.

use crate::autograd::{Tape, Var};
use crate::cpu::Kernels;
use crate::error::{Error, Result};
use crate::model::teacher::TEACHER_EMBEDDING;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::weights::{self, StoreDtype, WeightFile};
use std::collections::BTreeMap;
use std::path::Path;

/// The `format` metadata value of a bridge file.
pub const BRIDGE_FORMAT: &str = "bridgeface.bridge/1";
pub const FC1: &str = "bridge.fc1.weight";
pub const PRELU: &str = "bridge.prelu.weight";
pub const FC2: &str = "bridge.fc2.weight";
/// Class centres `[identities, 128]` of the step-1 margin softmax.
pub const CENTRES: &str = "bridge.centres";

/// The head's parameters plus the metadata of the run that trained it.
#[derive(Clone, Debug)]
pub struct BridgeHead {
    pub hidden: usize,
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl BridgeHead {
    /// A fresh head: He-initialised first layer, a small second layer (so the head starts
    /// close to the identity map on the teacher's features), PReLU slopes 0.25, and Gaussian
    /// class centres.
    pub fn new(hidden: usize, classes: usize, seed: u64) -> Result<BridgeHead> {
        if hidden == 0 || classes < 2 {
            return Err(Error::InvalidArgument(format!(
                "a bridge head needs a hidden width and at least 2 identities (got {hidden}, {classes})"
            )));
        }
        let d = TEACHER_EMBEDDING;
        let mut rng = Rng::new(seed ^ 0x00B4_1D6E);
        let mut gauss =
            |n: usize, std: f32| -> Vec<f32> { (0..n).map(|_| rng.normal() * std).collect() };
        let mut tensors = BTreeMap::new();
        tensors.insert(
            FC1.to_string(),
            Tensor::new(&[hidden, d], gauss(hidden * d, (2.0 / d as f32).sqrt()))?,
        );
        tensors.insert(
            PRELU.to_string(),
            Tensor::new(&[hidden], vec![0.25; hidden])?,
        );
        tensors.insert(
            FC2.to_string(),
            Tensor::new(
                &[d, hidden],
                gauss(d * hidden, 0.1 / (hidden as f32).sqrt()),
            )?,
        );
        tensors.insert(
            CENTRES.to_string(),
            Tensor::new(&[classes, d], gauss(classes * d, 1.0))?,
        );
        Ok(BridgeHead {
            hidden,
            tensors,
            metadata: BTreeMap::new(),
        })
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("the bridge head has no tensor `{name}`"))
        })
    }

    pub fn classes(&self) -> usize {
        self.tensors.get(CENTRES).map_or(0, |t| t.shape()[0])
    }

    /// Records the head on `tape` for unit teacher features `t` (a leaf or earlier value).
    /// Returns (adapted unit features, parameter leaves by name).
    pub fn record(&self, tape: &mut Tape, t: Var) -> Result<(Var, BTreeMap<String, Var>)> {
        let mut leaves = BTreeMap::new();
        for name in [FC1, PRELU, FC2] {
            leaves.insert(name.to_string(), tape.leaf(self.get(name)?.clone(), true));
        }
        let y = Self::record_with(tape, t, &leaves)?;
        Ok((y, leaves))
    }

    /// Records the head once more on `t`, sharing the parameter leaves of an earlier `record`
    /// (so both inputs' gradients reach the same parameters).
    pub fn record_with(tape: &mut Tape, t: Var, leaves: &BTreeMap<String, Var>) -> Result<Var> {
        let leaf = |name: &str| {
            leaves.get(name).copied().ok_or_else(|| {
                Error::InvalidArgument(format!("no parameter leaf `{name}` for the bridge head"))
            })
        };
        let h = tape.linear(t, leaf(FC1)?)?;
        let h = tape.prelu(h, leaf(PRELU)?)?;
        let h = tape.linear(h, leaf(FC2)?)?;
        let y = tape.add(h, t)?;
        tape.l2_normalize(y)
    }

    /// Adapted unit features `[n, 128]` of unit teacher features `t [n, 128]`.
    pub fn forward(&self, k: &Kernels, t: &Tensor) -> Result<Tensor> {
        if t.shape().len() != 2 || t.shape()[1] != TEACHER_EMBEDDING {
            return Err(Error::Shape(format!(
                "the bridge head takes [n, {TEACHER_EMBEDDING}] teacher features, got {:?}",
                t.shape()
            )));
        }
        let mut tape = Tape::new(k);
        let x = tape.leaf(t.clone(), false);
        let (y, _) = self.record(&mut tape, x)?;
        Ok(tape.value(y).clone())
    }

    /// Writes the head atomically, with `format` and the run metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = self.metadata.clone();
        meta.insert("format".into(), BRIDGE_FORMAT.into());
        meta.insert("hidden".into(), self.hidden.to_string());
        let named: Vec<(String, &Tensor)> =
            self.tensors.iter().map(|(k, v)| (k.clone(), v)).collect();
        weights::save(path, &named, &meta, StoreDtype::F32)
    }

    /// Whether `path` is a bridge file (rather than a student or graph).
    pub fn is_bridge_file(path: &Path) -> bool {
        WeightFile::open(path)
            .map(|w| w.metadata().get("format").map(String::as_str) == Some(BRIDGE_FORMAT))
            .unwrap_or(false)
    }

    /// Reads a bridge file, checking its format and every tensor's shape.
    pub fn load(path: &Path) -> Result<BridgeHead> {
        let w = WeightFile::open(path)?;
        let format = w.meta("format")?;
        if format != BRIDGE_FORMAT {
            return Err(Error::Metadata {
                key: "format".into(),
                reason: format!(
                    "{} is `{format}`, not a bridge head ({BRIDGE_FORMAT}); make one with `bridge distill step1`",
                    path.display()
                ),
            });
        }
        let hidden: usize = w.meta("hidden")?.parse().map_err(|_| Error::Metadata {
            key: "hidden".into(),
            reason: "not a positive integer".into(),
        })?;
        let d = TEACHER_EMBEDDING;
        let centres = w.entry(CENTRES)?.shape.clone();
        if centres.len() != 2 || centres[1] != d || centres[0] < 2 || hidden == 0 {
            return Err(Error::TensorShape {
                name: CENTRES.into(),
                expected: vec![0, d],
                found: centres,
            });
        }
        let mut tensors = BTreeMap::new();
        for (name, shape) in [
            (FC1, vec![hidden, d]),
            (PRELU, vec![hidden]),
            (FC2, vec![d, hidden]),
            (CENTRES, centres),
        ] {
            tensors.insert(name.to_string(), w.tensor(name, &shape)?);
        }
        let metadata = w.metadata().clone();
        Ok(BridgeHead {
            hidden,
            tensors,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let mut v: Vec<f32> = (0..n * TEACHER_EMBEDDING).map(|_| rng.normal()).collect();
        for r in v.chunks_mut(TEACHER_EMBEDDING) {
            let s = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter_mut().for_each(|x| *x /= s);
        }
        Tensor::new(&[n, TEACHER_EMBEDDING], v).unwrap()
    }

    #[test]
    fn fresh_head_is_close_to_identity_and_outputs_unit_rows() {
        let k = Kernels::scalar();
        let head = BridgeHead::new(64, 5, 1).unwrap();
        let t = unit_rows(6, 2);
        let a = head.forward(&k, &t).unwrap();
        for (ra, rt) in a.data().chunks(128).zip(t.data().chunks(128)) {
            let norm: f32 = ra.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
            let cos: f32 = ra.iter().zip(rt).map(|(x, y)| x * y).sum();
            assert!(cos > 0.8 && cos < 0.99999, "cosine to the input {cos}");
        }
        assert!(head.forward(&k, &Tensor::zeros(&[2, 64])).is_err());
    }

    #[test]
    fn save_load_round_trip_and_wrong_files_fail() {
        let dir = std::env::temp_dir().join(format!("bf-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut head = BridgeHead::new(32, 7, 3).unwrap();
        head.metadata.insert("views".into(), "4".into());
        let p = dir.join("bridge.safetensors");
        head.save(&p).unwrap();
        assert!(BridgeHead::is_bridge_file(&p));
        let back = BridgeHead::load(&p).unwrap();
        assert_eq!(back.tensors, head.tensors);
        assert_eq!(back.metadata["views"], "4");
        assert_eq!(back.classes(), 7);
        let other = dir.join("other.safetensors");
        weights::save(
            &other,
            &[("x".to_string(), &Tensor::zeros(&[2]))],
            &BTreeMap::new(),
            StoreDtype::F32,
        )
        .unwrap();
        assert!(!BridgeHead::is_bridge_file(&other));
        assert!(BridgeHead::load(&other).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn head_gradients_match_finite_differences() {
        // The head is recorded from the tape's ops, whose f64 gradient checks live in
        // autograd::gradcheck; here the composition is checked in f32 with central differences.
        let k = Kernels::scalar();
        let head = BridgeHead::new(8, 3, 4).unwrap();
        let t = unit_rows(3, 5);
        let dout = unit_rows(3, 6);
        let objective = |h: &BridgeHead| -> f64 {
            let a = h.forward(&k, &t).unwrap();
            a.data()
                .iter()
                .zip(dout.data())
                .map(|(x, y)| (*x * *y) as f64)
                .sum()
        };
        let mut tape = Tape::new(&k);
        let x = tape.leaf(t.clone(), false);
        let (y, leaves) = head.record(&mut tape, x).unwrap();
        tape.backward(y, dout.clone()).unwrap();
        for name in [FC1, PRELU, FC2] {
            let g = tape.grad(leaves[name]).unwrap().data().to_vec();
            for idx in [0usize, 5, g.len() - 1] {
                let mut plus = head.clone();
                plus.tensors.get_mut(name).unwrap().data_mut()[idx] += 1e-3;
                let mut minus = head.clone();
                minus.tensors.get_mut(name).unwrap().data_mut()[idx] -= 1e-3;
                let fd = (objective(&plus) - objective(&minus)) / 2e-3;
                assert!(
                    (fd - g[idx] as f64).abs() < 2e-3 + 0.02 * fd.abs(),
                    "{name}[{idx}]: tape {} vs finite difference {fd}",
                    g[idx]
                );
            }
        }
    }
}
