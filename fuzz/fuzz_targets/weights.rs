//! The safetensors weight loader: `WeightFile` from bytes, every tensor read as f32, then the
//! student built from it (names, shapes, dtypes, NaN checks, BN folding) and run on one face.
#![no_main]
use bridgeface::cpu::Kernels;
use bridgeface::model::student::StudentParams;
use bridgeface::tensor::Tensor;
use bridgeface::weights::WeightFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = bridgeface_fuzz::safetensors_bytes(data) else {
        return;
    };
    let Ok(w) = WeightFile::from_bytes("fuzz.safetensors", bytes) else {
        return;
    };
    let _ = w.parameter_count();
    for e in w.entries() {
        let _ = w.view_f32(&e.name);
    }
    let Ok(params) = StudentParams::from_weights(&w) else {
        return;
    };
    let Ok(net) = params.fold() else {
        return;
    };
    let r = net.resolution();
    let x = Tensor::new(&[1, 3, r, r], vec![0.25; 3 * r * r]).expect("a 1×3×r×r input");
    let emb = net
        .forward(&Kernels::scalar(), &x)
        .expect("a loaded student embeds a face");
    assert_eq!(emb.shape(), &[1, 128]);
});
