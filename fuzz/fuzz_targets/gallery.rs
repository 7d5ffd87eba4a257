//! Gallery folders (`gallery.json` + `index.usearch`): both files from the input, then
//! `Gallery::load` and `Gallery::view`, a search with a fixed query on each, and an add on the
//! loaded one. usearch's C++ loader only ever sees an index file the gallery's check passed.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[cfg(target_arch = "x86_64")]
fuzz_target!(|data: &[u8]| {
    use bridgeface::gallery::{Gallery, INDEX_FILE, META_FILE};
    use std::sync::OnceLock;

    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let Some((meta, index)) = bridgeface_fuzz::gallery_files(data) else {
        return;
    };
    let dir = DIR.get_or_init(|| {
        let d =
            std::env::temp_dir().join(format!("bridgeface-fuzz-gallery-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("create the fuzz gallery folder");
        d
    });
    std::fs::write(dir.join(META_FILE), &meta).expect("write gallery.json");
    std::fs::write(dir.join(INDEX_FILE), index).expect("write index.usearch");

    let query = |d: usize| -> Vec<f32> { (0..d).map(|i| (i % 7) as f32 - 3.0).collect() };
    if let Ok(mut g) = Gallery::load(dir) {
        let q = query(g.dimensions());
        let _ = g.search(&q, 5);
        let _ = g.exact_search(&q, 3);
        let label = vec!["fuzz".to_string()];
        if g.add(&q, &label, &label, 1).is_ok() {
            let _ = g.search(&q, 5);
        }
    }
    if let Ok(g) = Gallery::view(dir) {
        let _ = g.search(&query(g.dimensions()), 5);
    }
});

#[cfg(not(target_arch = "x86_64"))]
fuzz_target!(|_data: &[u8]| {});
