//! Bridge distillation (Ge et al., IEEE TIP 2020): step 1 adapts the frozen teacher's features
//! on public faces (the bridge), step 2 teaches the low-resolution student to mimic them while
//! classifying identities. It composes data, model, autograd and train; no kernels, no CLI.

pub mod head;
pub mod label;
pub mod step1;
pub mod step2;

use crate::assets::sha256_file;
use crate::cpu::Kernels;
use crate::data::augment::AugmentConfig;
use crate::data::store::LabelStore;
use crate::data::views::{FaceSet, LrViews, ViewSet, ViewSource};
use crate::error::{Error, Result};
use crate::model::teacher::{Teacher, TEACHER_RESOLUTION};
use crate::tensor::Tensor;
use crate::weights::WeightFile;
use head::BridgeHead;
use label::{LabelConfig, LabelReport};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use step1::HeadConfig;
use step2::TargetRows;

/// A progress bar with throughput and ETA (hidden when `show` is false).
pub fn progress_bar(len: u64, what: &str, unit: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    let template =
        format!("{what} {{bar:30}} {{pos}}/{{len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        b.set_style(style);
    }
    b
}

/// The file beside a bridge file `X.safetensors` named `X.{suffix}`.
fn beside(bridge: &Path, suffix: &str) -> PathBuf {
    let stem = bridge
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bridge".into());
    bridge.with_file_name(format!("{stem}.{suffix}"))
}

/// The feature cache that belongs to a bridge file: `X.safetensors` → `X.features.safetensors`.
pub fn cache_path(bridge: &Path) -> PathBuf {
    beside(bridge, "features.safetensors")
}

/// The cache of the teacher's features of low-resolution copies (resolution-aware step 1):
/// `X.safetensors` → `X.lr-features.safetensors`.
pub fn lr_cache_path(bridge: &Path) -> PathBuf {
    beside(bridge, "lr-features.safetensors")
}

/// What identifies a set of fixed views: the data listing, the number of views, the seed, the
/// augmentation and the teacher. A cache is reused only when all of them match.
pub fn view_identity(
    set: &FaceSet,
    views: usize,
    seed: u64,
    augment: &AugmentConfig,
    teacher_sha256: &str,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("data_fingerprint".into(), set.fingerprint());
    m.insert("views".into(), views.to_string());
    m.insert("view_seed".into(), seed.to_string());
    m.insert("augment".into(), format!("{augment:?}"));
    m.insert("teacher_sha256".into(), teacher_sha256.to_string());
    m.insert("images".into(), set.len().to_string());
    m.insert("identities".into(), set.identities.len().to_string());
    m
}

/// Everything step 1 needs.
pub struct Step1Options {
    pub data: Vec<PathBuf>,
    pub max_identities: Option<usize>,
    pub views: usize,
    pub seed: u64,
    pub augment: AugmentConfig,
    /// Low-resolution copies per image for a resolution-aware head (0: none), and the
    /// resolutions they are drawn at.
    pub lr_views: usize,
    pub lr_resolutions: Vec<usize>,
    pub head: HeadConfig,
    pub threads: usize,
    pub progress: bool,
    /// The teacher file (for its sha256 in the provenance).
    pub teacher_path: PathBuf,
}

/// What step 1 did.
pub struct Step1Report {
    pub images: usize,
    pub identities: usize,
    pub views: usize,
    /// Low-resolution copies the head also trained on.
    pub lr_views: usize,
    pub history: Vec<step1::HeadEpoch>,
    pub cache: PathBuf,
}

fn load_views(
    set: &FaceSet,
    views: usize,
    seed: u64,
    augment: AugmentConfig,
    progress: bool,
) -> Result<ViewSet> {
    let bar = progress_bar(set.len() as u64, "decoding", "images", progress);
    let images = set.load_images(TEACHER_RESOLUTION, &mut |i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    ViewSet::new(images, set.labels.clone(), views, augment, seed)
}

/// Step 1: teacher features of every view (cached), the bridge head trained on them, the
/// adapted features cached beside `out`, and the head written to `out`.
pub fn run_step1(
    k: &Kernels,
    teacher: &Teacher,
    opts: &Step1Options,
    out: &Path,
) -> Result<Step1Report> {
    let set = FaceSet::open(&opts.data, opts.max_identities)?;
    if set.identities.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "step 1 needs at least 2 identities, the data holds {}",
            set.identities.len()
        )));
    }
    let sha = sha256_file(&opts.teacher_path)?;
    let identity = view_identity(&set, opts.views, opts.seed, &opts.augment, &sha);
    let views = load_views(
        &set,
        opts.views,
        opts.seed,
        opts.augment.clone(),
        opts.progress,
    )?;
    let cache = cache_path(out);
    let raw = step1::teacher_features(
        k,
        teacher,
        &views,
        &cache,
        &identity,
        opts.threads,
        opts.progress,
    )?;
    let (lr_raw, lr_rows, lr_meta) = if opts.lr_views > 0 {
        let lr = LrViews::new(
            &views,
            opts.lr_views,
            opts.lr_resolutions.clone(),
            opts.seed,
        )?;
        let lr_meta = lr.identity();
        let mut lr_identity = identity.clone();
        lr_identity.extend(lr_meta.iter().cloned());
        let f = step1::teacher_features(
            k,
            teacher,
            &lr,
            &lr_cache_path(out),
            &lr_identity,
            opts.threads,
            opts.progress,
        )?;
        (f, (0..lr.count()).map(|l| lr.hr_row(l)).collect(), lr_meta)
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let lr = (opts.lr_views > 0).then(|| step1::LrFeatures {
        raw: &lr_raw,
        hr_row: lr_rows,
    });
    let labels: Vec<usize> = (0..views.len()).map(|j| views.label(j)).collect();
    let mut head = BridgeHead::new(opts.head.hidden, set.identities.len(), opts.head.seed)?;
    let history = step1::train_head(
        k,
        &mut head,
        &raw,
        &labels,
        &opts.head,
        lr.as_ref(),
        opts.progress,
    )?;
    let lr_views = lr.as_ref().map_or(0, |l| l.hr_row.len());
    let adapted = step1::adapt_all(k, &head, &raw)?;
    step1::write_cache(&cache, &identity, &raw, &adapted)?;
    head.metadata = identity;
    let roots: Vec<String> = opts.data.iter().map(|p| p.display().to_string()).collect();
    head.metadata.insert(
        "data".into(),
        serde_json::to_string(&roots).unwrap_or_default(),
    );
    if let Some(m) = opts.max_identities {
        head.metadata.insert("max_identities".into(), m.to_string());
    }
    head.metadata.insert(
        "features".into(),
        cache
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    head.metadata
        .insert("head_config".into(), format!("{:?}", opts.head));
    head.metadata.extend(lr_meta);
    head.save(out)?;
    Ok(Step1Report {
        images: set.len(),
        identities: set.identities.len(),
        views: views.len(),
        lr_views,
        history,
        cache,
    })
}

/// What step 2 reads from a step-1 run: the head, the views (decoded again from the data the
/// head names, or `data` if given) and the memory-mapped feature cache.
pub struct Bridge {
    pub head: BridgeHead,
    pub views: ViewSet,
    pub identities: usize,
    pub cache: WeightFile,
}

impl Bridge {
    /// Opens the bridge at `path`, checking that the data and cache are the ones it was made on.
    pub fn open(path: &Path, data: Option<Vec<PathBuf>>, progress: bool) -> Result<Bridge> {
        let head = BridgeHead::load(path)?;
        let meta = |key: &str| -> Result<&str> {
            head.metadata
                .get(key)
                .map(String::as_str)
                .ok_or_else(|| Error::Metadata {
                    key: key.into(),
                    reason: format!("missing in {}", path.display()),
                })
        };
        let roots = match data {
            Some(d) => d,
            None => serde_json::from_str::<Vec<String>>(meta("data")?)
                .map_err(|e| Error::Metadata {
                    key: "data".into(),
                    reason: e.to_string(),
                })?
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        };
        let max_ids = match head.metadata.get("max_identities") {
            Some(v) => Some(v.parse().map_err(|_| Error::Metadata {
                key: "max_identities".into(),
                reason: format!("`{v}` is not a count"),
            })?),
            None => None,
        };
        let set = FaceSet::open(&roots, max_ids)?;
        if set.fingerprint() != meta("data_fingerprint")? {
            return Err(Error::parameter(
                "data",
                format!(
                    "the data ({}) is not the set {} was made on (listing fingerprint {} vs {}); \
                 run step 1 again or give the original `data`",
                    roots
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    path.display(),
                    set.fingerprint(),
                    meta("data_fingerprint")?
                ),
            ));
        }
        let num = |key: &str| -> Result<u64> {
            meta(key)?.parse().map_err(|_| Error::Metadata {
                key: key.into(),
                reason: "not a number".into(),
            })
        };
        let views = num("views")? as usize;
        let seed = num("view_seed")?;
        let augment = AugmentConfig::heavy();
        if format!("{augment:?}") != meta("augment")? {
            return Err(Error::Metadata {
                key: "augment".into(),
                reason: "the bridge was made with another view augmentation than this build's"
                    .into(),
            });
        }
        let cache_file = path.with_file_name(meta("features")?);
        let cache = WeightFile::open(&cache_file)?;
        for key in ["data_fingerprint", "views", "view_seed", "teacher_sha256"] {
            if cache.metadata().get(key).map(String::as_str) != Some(meta(key)?) {
                return Err(Error::Metadata {
                    key: key.into(),
                    reason: format!(
                        "{} does not belong to {}",
                        cache_file.display(),
                        path.display()
                    ),
                });
            }
        }
        let rows = set.len() * views;
        for name in [step1::RAW, step1::ADAPTED] {
            let e = cache.entry(name)?;
            if e.shape != [rows, crate::model::teacher::TEACHER_EMBEDDING] {
                return Err(Error::TensorShape {
                    name: name.into(),
                    expected: vec![rows, crate::model::teacher::TEACHER_EMBEDDING],
                    found: e.shape.clone(),
                });
            }
        }
        let vs = load_views(&set, views, seed, augment, progress)?;
        Ok(Bridge {
            head,
            identities: set.identities.len(),
            views: vs,
            cache,
        })
    }

    /// The targets of `target` (`[views, 128]`), borrowed from the mmap where possible, and the
    /// class centres step 2 starts from.
    pub fn targets(
        &self,
        target: step2::Target,
    ) -> Result<(std::borrow::Cow<'_, [f32]>, Option<Tensor>)> {
        let labels: Vec<usize> = (0..self.views.len()).map(|j| self.views.label(j)).collect();
        match target {
            step2::Target::Scratch => Ok((std::borrow::Cow::Owned(Vec::new()), None)),
            step2::Target::Direct => {
                let raw = self.cache.view_f32(step1::RAW)?;
                let c = step2::class_means(&raw, &labels, self.identities)?;
                Ok((raw, Some(c)))
            }
            step2::Target::Bridge => {
                let a = self.cache.view_f32(step1::ADAPTED)?;
                Ok((a, Some(unit_centres(&self.head)?)))
            }
        }
    }
}

/// The bridge head's class centres as unit rows: where step 2's classifier starts for `bridge`.
pub fn unit_centres(head: &BridgeHead) -> Result<Tensor> {
    let mut c = head.get(head::CENTRES)?.clone();
    for row in c
        .data_mut()
        .chunks_mut(crate::model::student::EMBEDDING_SIZE)
    {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    Ok(c)
}

/// Which identities a store's records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Every identity the validation rule does not hold out.
    Train,
    /// Only the held-out identities (the validation set).
    HeldOut,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::HeldOut => "heldout",
        }
    }
}

/// Everything a labelling run needs.
pub struct LabelOptions {
    pub data: Vec<PathBuf>,
    /// At most this many identities of each data set (small runs), as step 1 was given.
    pub max_identities: Option<usize>,
    /// The validation rule: `FaceSet::held_out(holdout_every)`.
    pub holdout_every: usize,
    pub split: Split,
    pub count: usize,
    pub config: LabelConfig,
    pub threads: usize,
    pub progress: bool,
    /// The teacher file (its sha256 goes into the store's identity).
    pub teacher_path: PathBuf,
}

/// The file of the teacher's features of every untouched image beside a store's shards.
pub fn hr_features_path(store: &Path) -> PathBuf {
    store.join("hr-features.safetensors")
}

/// The images of `set` that `split` takes under the rule `holdout_every`.
pub fn split_images(set: &FaceSet, holdout_every: usize, split: Split) -> Vec<usize> {
    let held = set.held_out(holdout_every);
    (0..set.len())
        .filter(|&i| held[set.labels[i]] == (split == Split::HeldOut))
        .collect()
}

/// Labels a store at `dir`: the teacher's features of every untouched image (the
/// high-resolution targets, `hr-features.safetensors`), then `count` records of the split.
/// Both resume where a killed run stopped.
pub fn run_label(
    k: &Kernels,
    teacher: &Teacher,
    opts: &LabelOptions,
    dir: &Path,
) -> Result<LabelReport> {
    opts.config.validate()?;
    let set = FaceSet::open(&opts.data, opts.max_identities)?;
    let pool = split_images(&set, opts.holdout_every, opts.split);
    if pool.is_empty() {
        return Err(Error::EmptyInput(format!(
            "the {} split of {} images holds none (holdout rule: every {}th identity with 2+ images)",
            opts.split.name(),
            set.len(),
            opts.holdout_every
        )));
    }
    let sha = sha256_file(&opts.teacher_path)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let images = ViewSet::new(
        {
            let bar = progress_bar(set.len() as u64, "decoding", "images", opts.progress);
            let imgs = set.load_images(TEACHER_RESOLUTION, &mut |i| bar.set_position(i as u64))?;
            bar.finish_and_clear();
            imgs
        },
        set.labels.clone(),
        1,
        AugmentConfig::none(),
        0,
    )?;
    let hr_identity = view_identity(&set, 1, 0, &AugmentConfig::none(), &sha);
    let hr = step1::teacher_features(
        k,
        teacher,
        &images,
        &hr_features_path(dir),
        &hr_identity,
        opts.threads,
        opts.progress,
    )?;
    drop(hr);
    let mut identity = opts.config.identity();
    identity.insert("data_fingerprint".into(), set.fingerprint());
    identity.insert("teacher_sha256".into(), sha);
    identity.insert("holdout_every".into(), opts.holdout_every.to_string());
    identity.insert("split".into(), opts.split.name().into());
    if let Some(m) = opts.max_identities {
        identity.insert("max_identities".into(), m.to_string());
    }
    identity.insert("images".into(), set.len().to_string());
    identity.insert("identities".into(), set.identities.len().to_string());
    let roots: Vec<String> = opts.data.iter().map(|p| p.display().to_string()).collect();
    identity.insert(
        "data".into(),
        serde_json::to_string(&roots).unwrap_or_default(),
    );
    label::label_store(
        k,
        teacher,
        &images.images,
        &set.labels,
        &pool,
        &opts.config,
        opts.count,
        dir,
        &identity,
        opts.threads,
        opts.progress,
    )
}

/// What step 2 reads from a labelled store: its records (memory-mapped), the teacher's
/// features of the untouched images, and which target space to mimic in.
pub struct StoreSource {
    pub store: LabelStore,
    /// Raw unit teacher features of every image of the set, `[images, 128]`.
    pub hr_raw: Vec<f32>,
    pub identities: usize,
}

impl StoreSource {
    /// Opens the store at `dir` and its high-resolution features, checking that they belong
    /// together.
    pub fn open(dir: &Path) -> Result<StoreSource> {
        let store = LabelStore::open(dir)?;
        let id = store.identity();
        let num = |key: &str| -> Result<usize> {
            id.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Metadata {
                    key: key.into(),
                    reason: format!("missing or not a count in the store at {}", dir.display()),
                })
        };
        let (images, identities) = (num("images")?, num("identities")?);
        let hr_path = hr_features_path(dir);
        let hr = WeightFile::open(&hr_path)?;
        for key in ["data_fingerprint", "teacher_sha256"] {
            if hr.metadata().get(key) != id.get(key) {
                return Err(Error::Metadata {
                    key: key.into(),
                    reason: format!(
                        "{} does not belong to the store's shards",
                        hr_path.display()
                    ),
                });
            }
        }
        let d = crate::model::teacher::TEACHER_EMBEDDING;
        let done: usize = hr.meta("done")?.parse().unwrap_or(0);
        let e = hr.entry(step1::RAW)?;
        if e.shape != [images, d] || done != images {
            return Err(Error::TensorShape {
                name: format!("{} (complete: {done} of {images})", step1::RAW),
                expected: vec![images, d],
                found: e.shape.clone(),
            });
        }
        let hr_raw = hr.view_f32(step1::RAW)?.into_owned();
        for k in 0..store.len() {
            let (l, i) = (store.label(k)?, store.image(k)?);
            if l >= identities || i >= images {
                return Err(Error::Shape(format!(
                    "record {k} names identity {l} and image {i}; the store's set has {identities} and {images}"
                )));
            }
        }
        Ok(StoreSource {
            store,
            hr_raw,
            identities,
        })
    }

    /// The data fingerprint the records' labels refer to.
    pub fn data_fingerprint(&self) -> Option<&str> {
        self.store
            .identity()
            .get("data_fingerprint")
            .map(String::as_str)
    }

    /// Each record's identity label.
    pub fn labels(&self) -> Result<Vec<usize>> {
        (0..self.store.len()).map(|k| self.store.label(k)).collect()
    }
}

/// Unit rows through the bridge head when there is one, unchanged otherwise.
fn into_space(k: &Kernels, head: Option<&BridgeHead>, raw: Vec<f32>) -> Result<Vec<f32>> {
    match head {
        None => Ok(raw),
        Some(h) => {
            let n = raw.len() / crate::model::teacher::TEACHER_EMBEDDING;
            let t = Tensor::new(&[n, crate::model::teacher::TEACHER_EMBEDDING], raw)?;
            Ok(h.forward(k, &t)?.data().to_vec())
        }
    }
}

/// The low-resolution targets of a store's records: the teacher's feature of each record's
/// exact input, through the bridge head (objective `bridge`) or raw (`direct`), computed per
/// batch from the memory-mapped store.
pub struct StoreTargets<'a> {
    pub store: &'a LabelStore,
    pub head: Option<&'a BridgeHead>,
    pub kernels: &'a Kernels,
}

impl TargetRows for StoreTargets<'_> {
    fn gather(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let mut raw = Vec::with_capacity(indices.len() * crate::model::teacher::TEACHER_EMBEDDING);
        for &i in indices {
            self.store.feature_into(i, &mut raw)?;
        }
        into_space(self.kernels, self.head, raw)
    }
}

/// The high-resolution targets of a store's records: the (adapted or raw) teacher feature of
/// the untouched image each record was made from.
pub struct ImageTargets<'a> {
    pub store: &'a LabelStore,
    /// `[images, 128]` unit rows in the target space.
    pub rows: Vec<f32>,
}

impl<'a> ImageTargets<'a> {
    pub fn new(k: &Kernels, src: &'a StoreSource, head: Option<&BridgeHead>) -> Result<Self> {
        Ok(ImageTargets {
            store: &src.store,
            rows: into_space(k, head, src.hr_raw.clone())?,
        })
    }
}

impl TargetRows for ImageTargets<'_> {
    fn gather(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let images = indices
            .iter()
            .map(|&i| self.store.image(i))
            .collect::<Result<Vec<_>>>()?;
        step2::Rows(&self.rows).gather(&images)
    }
}
