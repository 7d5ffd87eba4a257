//! The gallery: a persistent, searchable set of labelled face embeddings — a usearch HNSW index
//! (cosine, f16 storage) plus the labels and source paths beside it, saved, loaded or
//! memory-mapped. It must not embed images or parse command lines: callers hand it vectors.
//!
//! On disk a gallery is a folder `G/` of two files (docs/PYTHON.md, "Gallery format"):
//! - `index.usearch`: usearch's own file (pip's `usearch.Index.restore` opens it); key `i` is
//!   entry `i`;
//! - `gallery.json`: `format`, `dimensions`, `count`, the index settings, the model the vectors
//!   came from, and `entries` (`label`, `path`) in key order.
//!
//! Both are written to temp files and renamed, the index first; `gallery.json` names the index's
//! byte length, so a crash between the renames is detected on load, never read as a gallery.
//!
//! usearch's loader trusts its file, so `load` and `view` first check `index.usearch` in full
//! against `gallery.json` (`index_file`), and only a file that passes reaches usearch.

mod index_file;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use usearch::ffi::{IndexOptions, MetricKind, ScalarKind};

/// The `format` value of `gallery.json`.
pub const FORMAT: &str = "bridgeface.gallery/1";
/// The index file inside a gallery folder.
pub const INDEX_FILE: &str = "index.usearch";
/// The labels file inside a gallery folder.
pub const META_FILE: &str = "gallery.json";

/// The largest vector a gallery holds: far above any face embedding (128-D here, 512-D for the
/// common ArcFace models), low enough that a hostile `gallery.json` cannot make usearch allocate
/// gigabytes of per-thread buffers before the index file is even read.
pub const MAX_DIMENSIONS: usize = 1 << 16;
/// The largest graph degree: HNSW papers use 4 to 64; the bound keeps a node's size small.
pub const MAX_CONNECTIVITY: usize = 1 << 10;
/// The largest candidate lists (ef): every search allocates one of this many entries.
pub const MAX_EXPANSION: usize = 1 << 16;

/// Entries a gallery adds one at a time before it adds on several threads (see `add`).
pub const SEQUENTIAL_ADDS: usize = 10_000;

/// HNSW settings; the defaults are checked by the scale benchmark (BENCHMARKS.md, "Gallery":
/// recall@1 against exact brute force on 128-D face-like vectors). Connectivity 32 and search
/// 256, not usearch's 16 and 64: at connectivity 16 recall@1 was 0.996 at 100,000 vectors but
/// 0.966 at 300,000 and 0.75 at 1,000,000 (search 128); 32 and 256 give 0.999 and 0.992.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSettings {
    /// Graph degree (usearch's `connectivity`, HNSW's M).
    pub connectivity: usize,
    /// Candidate list size while inserting (ef_construction).
    pub expansion_add: usize,
    /// Candidate list size while searching (ef).
    pub expansion_search: usize,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            connectivity: 32,
            expansion_add: 128,
            expansion_search: 256,
        }
    }
}

/// Which network made the vectors, so that probes are embedded by the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTag {
    /// `student`, `teacher`, or `external` for vectors the caller made.
    pub kind: String,
    /// sha256 of the weight file (empty for `external`).
    pub weights_sha256: String,
    /// Input side in pixels (0 for `external`).
    pub resolution: usize,
}

impl ModelTag {
    /// The tag of vectors that came from outside bridgeface's models.
    pub fn external() -> Self {
        ModelTag {
            kind: "external".into(),
            weights_sha256: String::new(),
            resolution: 0,
        }
    }

    /// The tag of a weight file: its sha256, with the kind and input side given.
    pub fn of_file(kind: &str, weights: &Path, resolution: usize) -> Result<Self> {
        Ok(ModelTag {
            kind: kind.into(),
            weights_sha256: crate::assets::sha256_file(weights)?,
            resolution,
        })
    }
}

/// One gallery entry: the identity and where its face came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub label: String,
    pub path: String,
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// The entry's key (its index in `entries`).
    pub key: u64,
    pub label: String,
    pub path: String,
    /// Cosine similarity (1 − usearch's cosine distance), computed on the f16-stored vector.
    pub similarity: f32,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    dimensions: usize,
    count: usize,
    metric: String,
    quantization: String,
    index_bytes: u64,
    settings: IndexSettings,
    model: ModelTag,
    entries: Vec<Entry>,
}

/// A gallery in memory (loaded: searchable and extendable) or memory-mapped (viewed: searchable
/// only, pages read from disk on demand).
pub struct Gallery {
    index: usearch::Index,
    dimensions: usize,
    settings: IndexSettings,
    model: ModelTag,
    entries: Vec<Entry>,
    viewed: bool,
}

fn index_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("gallery index: {what} failed: {e}"))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "gallery path {} is not valid UTF-8; use a plain path",
            p.display()
        ))
    })
}

/// Checks `index.usearch` (of `len` bytes) in full before usearch reads it. A view maps the
/// same bytes afterwards, so a file changed on disk between the check and the mapping is not
/// covered: a gallery folder must not be written while it is open.
fn check_index_file(path: &Path, len: u64, want: &index_file::Expected) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // 1 MiB reads: the check streams the file once, holding only the levels table (2 bytes a
    // node) and a flag per key, so viewing a large gallery does not load it into memory.
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    index_file::check(reader, len, want).map_err(|reason| {
        Error::InvalidArgument(format!(
            "{} is not a valid gallery index ({reason}); rebuild the gallery with `bridge gallery build`",
            path.display()
        ))
    })
}

impl Gallery {
    /// An empty gallery of `dimensions`-D vectors made by `model`.
    pub fn new(dimensions: usize, model: ModelTag, settings: IndexSettings) -> Result<Self> {
        if !(1..=MAX_DIMENSIONS).contains(&dimensions) {
            return Err(Error::InvalidArgument(format!(
                "gallery dimensions {dimensions}: must be 1 to {MAX_DIMENSIONS}"
            )));
        }
        if !(2..=MAX_CONNECTIVITY).contains(&settings.connectivity)
            || !(1..=MAX_EXPANSION).contains(&settings.expansion_add)
            || !(1..=MAX_EXPANSION).contains(&settings.expansion_search)
        {
            return Err(Error::InvalidArgument(format!(
                "gallery settings {settings:?}: connectivity must be 2 to {MAX_CONNECTIVITY} and expansions 1 to {MAX_EXPANSION}"
            )));
        }
        let opts = IndexOptions {
            dimensions,
            metric: MetricKind::Cos,
            quantization: ScalarKind::F16,
            connectivity: settings.connectivity,
            expansion_add: settings.expansion_add,
            expansion_search: settings.expansion_search,
            multi: false,
        };
        let index = usearch::Index::new(&opts).map_err(|e| index_error("creating", e))?;
        Ok(Gallery {
            index,
            dimensions,
            settings,
            model,
            entries: Vec::new(),
            viewed: false,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn settings(&self) -> IndexSettings {
        self.settings
    }

    pub fn model(&self) -> &ModelTag {
        &self.model
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Changes the search breadth (ef) of this open gallery; `save` records it.
    pub fn set_expansion_search(&mut self, ef: usize) -> Result<()> {
        if !(1..=MAX_EXPANSION).contains(&ef) {
            return Err(Error::InvalidArgument(format!(
                "expansion_search {ef}: must be 1 to {MAX_EXPANSION}"
            )));
        }
        self.index.change_expansion_search(ef);
        self.settings.expansion_search = ef;
        Ok(())
    }

    /// Whether this gallery is a read-only memory-mapped view.
    pub fn is_view(&self) -> bool {
        self.viewed
    }

    /// Bytes the index holds in memory (for a view: its bookkeeping, not the mapped file).
    pub fn memory_usage(&self) -> usize {
        self.index.memory_usage()
    }

    /// Adds `vectors` (row-major, `labels.len()` rows of `dimensions`) with their labels and
    /// paths, over `threads` threads. Keys continue from the current size.
    pub fn add(
        &mut self,
        vectors: &[f32],
        labels: &[String],
        paths: &[String],
        threads: usize,
    ) -> Result<()> {
        if self.viewed {
            return Err(Error::InvalidArgument(
                "this gallery is a read-only memory-mapped view; load it (not view) to add faces"
                    .into(),
            ));
        }
        let n = labels.len();
        if paths.len() != n || vectors.len() != n * self.dimensions {
            return Err(Error::Shape(format!(
                "gallery add: {} values, {n} labels and {} paths do not fit {}-D vectors",
                vectors.len(),
                paths.len(),
                self.dimensions
            )));
        }
        if n == 0 {
            return Err(Error::EmptyInput("no faces to add to the gallery".into()));
        }
        if let Some(i) = vectors.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "gallery add: vector {} holds a non-finite value",
                i / self.dimensions
            )));
        }
        let threads = threads.clamp(1, n);
        let base = self.entries.len();
        self.index
            .reserve_capacity_and_threads(base + n, threads)
            .map_err(|e| index_error("reserving space", e))?;
        let index = &self.index;
        let d = self.dimensions;
        // Concurrent insertion into a young graph can leave a node that no search reaches (seen
        // on 300 faces added by 2 threads: one face did not find its own copy), so a gallery's
        // first SEQUENTIAL_ADDS entries go in one at a time; later ones join a graph with a
        // well-connected core.
        let sequential = SEQUENTIAL_ADDS.saturating_sub(base).min(n);
        for i in 0..sequential {
            index
                .add((base + i) as u64, &vectors[i * d..(i + 1) * d])
                .map_err(|e| index_error("adding a vector", e))?;
        }
        let rest = n - sequential;
        let threads = threads.min(rest.max(1));
        let per = rest.div_ceil(threads);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let (lo, hi) =
                            (sequential + t * per, sequential + ((t + 1) * per).min(rest));
                        for i in lo..hi {
                            index
                                .add((base + i) as u64, &vectors[i * d..(i + 1) * d])
                                .map_err(|e| index_error("adding a vector", e))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidArgument(
                            "gallery add: a worker thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.entries
            .extend(labels.iter().zip(paths).map(|(l, p)| Entry {
                label: l.clone(),
                path: p.clone(),
            }));
        Ok(())
    }

    /// The `k` nearest entries to `query` (a `dimensions`-D vector), most similar first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Match>> {
        if query.len() != self.dimensions {
            return Err(Error::Shape(format!(
                "gallery search: the query has {} values, the gallery holds {}-D vectors",
                query.len(),
                self.dimensions
            )));
        }
        if k == 0 {
            return Err(Error::InvalidArgument("--k must be at least 1".into()));
        }
        if query.iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(
                "gallery search: the query holds a non-finite value".into(),
            ));
        }
        if self.entries.is_empty() {
            return Err(Error::EmptyInput(
                "the gallery is empty; add faces first".into(),
            ));
        }
        let m = self
            .index
            .search(query, k)
            .map_err(|e| index_error("searching", e))?;
        m.keys
            .iter()
            .zip(&m.distances)
            .map(|(&key, &dist)| {
                let e = self.entries.get(key as usize).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "gallery index returned key {key} beyond its {} entries; rebuild the gallery",
                        self.entries.len()
                    ))
                })?;
                Ok(Match {
                    key,
                    label: e.label.clone(),
                    path: e.path.clone(),
                    similarity: 1.0 - dist,
                })
            })
            .collect()
    }

    /// The exact (brute-force) `k` nearest entries, for checking the approximate search.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        if query.len() != self.dimensions || k == 0 {
            return Err(Error::Shape(format!(
                "gallery exact search: query of {} values for {}-D vectors, k = {k}",
                query.len(),
                self.dimensions
            )));
        }
        let m = self
            .index
            .exact_search(query, k)
            .map_err(|e| index_error("exact search", e))?;
        Ok(m.keys
            .iter()
            .zip(&m.distances)
            .map(|(&k, &d)| (k, 1.0 - d))
            .collect())
    }

    /// Writes the gallery to the folder `dir` (created if needed): the index and then
    /// `gallery.json`, each through a temp file and a rename.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let index_path = dir.join(INDEX_FILE);
        let index_tmp = dir.join(format!("{INDEX_FILE}.tmp"));
        self.index
            .save(path_str(&index_tmp)?)
            .map_err(|e| index_error(&format!("saving {}", index_tmp.display()), e))?;
        let index_bytes = std::fs::metadata(&index_tmp)
            .map_err(|e| Error::io(&index_tmp, e))?
            .len();
        let meta = Meta {
            format: FORMAT.into(),
            dimensions: self.dimensions,
            count: self.entries.len(),
            metric: "cos".into(),
            quantization: "f16".into(),
            index_bytes,
            settings: self.settings,
            model: self.model.clone(),
            entries: self.entries.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::InvalidArgument(format!("gallery.json: {e}")))?;
        let meta_path = dir.join(META_FILE);
        let meta_tmp = dir.join(format!("{META_FILE}.tmp"));
        std::fs::write(&meta_tmp, json).map_err(|e| Error::io(&meta_tmp, e))?;
        std::fs::rename(&index_tmp, &index_path).map_err(|e| Error::io(&index_path, e))?;
        std::fs::rename(&meta_tmp, &meta_path).map_err(|e| Error::io(&meta_path, e))?;
        Ok(())
    }

    /// Reads a gallery folder into memory (searchable and extendable).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(dir.as_ref(), false)
    }

    /// Memory-maps a gallery folder's index (searchable only; pages are read on demand).
    pub fn view(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(dir.as_ref(), true)
    }

    fn open(dir: &Path, view: bool) -> Result<Self> {
        let meta_path = dir.join(META_FILE);
        let index_path = dir.join(INDEX_FILE);
        let bad = |reason: String| {
            Error::InvalidArgument(format!(
                "{} is not a bridgeface gallery ({reason}); build one with `bridge gallery build`",
                dir.display()
            ))
        };
        if !dir.is_dir() {
            return Err(bad("no such folder".into()));
        }
        let text = std::fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: Meta = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("{META_FILE} does not parse: {e}")))?;
        if meta.format != FORMAT {
            return Err(bad(format!(
                "{META_FILE} has format `{}`, expected `{FORMAT}`",
                meta.format
            )));
        }
        if meta.count != meta.entries.len() {
            return Err(bad(format!(
                "{META_FILE} says count {} but lists {} entries",
                meta.count,
                meta.entries.len()
            )));
        }
        let len = std::fs::metadata(&index_path)
            .map_err(|e| Error::io(&index_path, e))?
            .len();
        if len != meta.index_bytes {
            return Err(bad(format!(
                "{INDEX_FILE} is {len} bytes, {META_FILE} expects {}: the two were not written together",
                meta.index_bytes
            )));
        }
        let mut g = Gallery::new(meta.dimensions, meta.model, meta.settings)?;
        check_index_file(
            &index_path,
            len,
            &index_file::Expected {
                dimensions: meta.dimensions,
                count: meta.count,
                connectivity: meta.settings.connectivity,
            },
        )?;
        let p = path_str(&index_path)?;
        if view {
            g.index.view(p).map_err(|e| index_error("viewing", e))?;
        } else {
            g.index.load(p).map_err(|e| index_error("loading", e))?;
        }
        // Loading restores the graph but not the search breadth, which is ours to set.
        g.index
            .change_expansion_search(meta.settings.expansion_search);
        if g.index.dimensions() != meta.dimensions || g.index.size() != meta.count {
            return Err(bad(format!(
                "{INDEX_FILE} holds {} vectors of {} dimensions, {META_FILE} lists {} of {}",
                g.index.size(),
                g.index.dimensions(),
                meta.count,
                meta.dimensions
            )));
        }
        g.entries = meta.entries;
        g.viewed = view;
        Ok(g)
    }

    /// The files of a gallery folder, for size reports.
    pub fn files(dir: impl AsRef<Path>) -> [PathBuf; 2] {
        let d = dir.as_ref();
        [d.join(INDEX_FILE), d.join(META_FILE)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn unit_vectors(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        let mut v: Vec<f32> = (0..n * d).map(|_| r.normal()).collect();
        for row in v.chunks_mut(d) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// Every face of a small gallery added on several threads finds its own copy: the young
    /// graph is built one entry at a time (`SEQUENTIAL_ADDS`). Built three times, as a racy
    /// build differs from run to run.
    #[test]
    fn every_vector_of_a_small_gallery_added_on_threads_finds_itself() {
        let (n, d) = (600, 128);
        let v = unit_vectors(n, d, 11);
        let labels: Vec<String> = (0..n).map(|i| format!("id{}", i % 12)).collect();
        let paths: Vec<String> = (0..n).map(|i| format!("img{i}.png")).collect();
        for _ in 0..3 {
            let mut g = Gallery::new(d, ModelTag::external(), IndexSettings::default()).unwrap();
            g.add(&v[..300 * d], &labels[..300], &paths[..300], 4)
                .unwrap();
            g.add(&v[300 * d..], &labels[300..], &paths[300..], 4)
                .unwrap();
            for i in 0..n {
                let m = g.search(&v[i * d..(i + 1) * d], 1).unwrap();
                assert_eq!(m[0].key, i as u64, "vector {i} did not find itself");
            }
        }
    }

    #[test]
    fn search_finds_each_vector_itself_and_survives_save_load_and_view() {
        let (n, d) = (500, 32);
        let v = unit_vectors(n, d, 7);
        let labels: Vec<String> = (0..n).map(|i| format!("id{}", i % 50)).collect();
        let paths: Vec<String> = (0..n).map(|i| format!("img{i}.png")).collect();
        let mut g = Gallery::new(d, ModelTag::external(), IndexSettings::default()).unwrap();
        g.add(&v, &labels, &paths, 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path()).unwrap();
        for opened in [
            Gallery::load(dir.path()).unwrap(),
            Gallery::view(dir.path()).unwrap(),
        ] {
            assert_eq!(opened.len(), n);
            for i in (0..n).step_by(37) {
                let m = opened.search(&v[i * d..(i + 1) * d], 3).unwrap();
                assert_eq!(m[0].key, i as u64);
                assert_eq!(m[0].label, labels[i]);
                assert_eq!(m[0].path, paths[i]);
                // f16 storage: the self-similarity is 1 within f16 rounding.
                assert!((m[0].similarity - 1.0).abs() < 2e-3, "{}", m[0].similarity);
                assert!(m[0].similarity >= m[1].similarity);
            }
        }
        let mut viewed = Gallery::view(dir.path()).unwrap();
        assert!(viewed.add(&v[..d], &labels[..1], &paths[..1], 1).is_err());
    }

    #[test]
    fn bad_inputs_and_torn_folders_are_errors() {
        let d = 8;
        let mut g = Gallery::new(d, ModelTag::external(), IndexSettings::default()).unwrap();
        let one = vec!["a".to_string()];
        assert!(g.add(&[0.0; 7], &one, &one, 1).is_err());
        assert!(g.add(&[f32::NAN; 8], &one, &one, 1).is_err());
        assert!(g.search(&[1.0; 8], 1).is_err(), "empty gallery");
        g.add(&[1.0; 8], &one, &one, 1).unwrap();
        assert!(g.search(&[1.0; 7], 1).is_err());
        assert!(g.search(&[1.0; 8], 0).is_err());
        let dir = tempfile::tempdir().unwrap();
        g.save(dir.path()).unwrap();
        // A gallery.json from another save: the index length no longer matches.
        let meta = dir.path().join(META_FILE);
        let text = std::fs::read_to_string(&meta).unwrap();
        let n = text.find("\"index_bytes\": ").unwrap() + 15;
        let torn = format!("{}1{}", &text[..n], &text[n..]);
        std::fs::write(&meta, torn).unwrap();
        let e = Gallery::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("not written together"), "{e}");
        std::fs::write(&meta, "{").unwrap();
        assert!(Gallery::load(dir.path()).is_err());
        assert!(Gallery::load(dir.path().join("absent")).is_err());
    }
}
