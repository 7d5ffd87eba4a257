//! Training checkpoints (`--resume`): `WeightFile` from bytes, then the checkpoint loader under
//! the 8×8 default settings the seeds were written with (fingerprint, student, class centres,
//! optimiser buffers, counters).
#![no_main]
use bridgeface::train::{checkpoint, TrainConfig};
use bridgeface::weights::WeightFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = bridgeface_fuzz::safetensors_bytes(data) else {
        return;
    };
    let Ok(w) = WeightFile::from_bytes("fuzz.ckpt", bytes) else {
        return;
    };
    let _ = checkpoint::from_weights(&w, &TrainConfig::new(8));
});
