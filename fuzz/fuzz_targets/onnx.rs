//! The ONNX importer: protobuf decode, graph construction (BN folding, pruning, validation),
//! then the run plan that packs every weight, as loading the teacher or detector does.
#![no_main]
use bridgeface::model::plan::GraphPlan;
use bridgeface::onnx::import::import_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = import_bytes(data) {
        let _ = GraphPlan::new(g);
    }
});
