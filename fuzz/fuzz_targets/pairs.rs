//! `pairs.txt` for `bridge eval --pairs`: the LFW format, any bytes (read as UTF-8 lossily, as
//! a text file would fail to read otherwise), resolved against a root that does not exist.
#![no_main]
use bridgeface::data::folder::parse_lfw_pairs;
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

const ROOT: &str = "/nonexistent-bridgeface-fuzz-root";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(pairs) = parse_lfw_pairs(&text, "pairs.txt", ROOT) {
        // Every image stays under the root: plain names only, no `..`, no absolute path.
        let inside = |p: &Path| {
            p.strip_prefix(ROOT)
                .is_ok_and(|rel| rel.components().all(|c| matches!(c, Component::Normal(_))))
        };
        for p in &pairs {
            assert!(inside(&p.a) && inside(&p.b), "{p:?} leaves the root");
        }
    }
});
