//! Evaluation of a face embedder on a labelled folder at a given input resolution: verification
//! (k-fold accuracy, AUC, TAR@FAR), identification (rank-1/5) and the cross-resolution variant.
//! Owns protocols and metrics and the JSON report; never trains and never prints.

pub mod embedder;
pub mod metrics;
pub mod plot;
pub mod protocol;

use crate::data::degrade::{degrade_to_lr, DegradeConfig, Resample};
use crate::data::folder::{read_lfw_pairs, ImageFolder};
use crate::data::image::{load_rgb8, Rgb8};
use crate::data::resample::{degrade_to_resolution, downsample_area};
use crate::error::{Error, Result};
use crate::rng::Rng;
use embedder::FaceEmbedder;
use metrics::{KFoldAccuracy, RocPoint};
use protocol::{IndexPair, FOLDS};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Version tag of the JSON report; bumped only when a key changes meaning or disappears.
pub const SCHEMA: &str = "bridgeface.eval/1";

/// How to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Faces are area-downsampled to `resolution × resolution` before the model sees them.
    pub resolution: usize,
    /// Seeds the impostor pairs and the fold assignment.
    pub seed: u64,
    /// An LFW-format pairs.txt to use instead of generated pairs.
    pub pairs_txt: Option<PathBuf>,
    /// Faces per forward pass.
    pub batch: usize,
    /// Instead of clean area downsampling, degrade every face the model sees to `resolution`
    /// with this recipe (its own `resolution` is ignored), drawn per image from `seed`, so a
    /// run is repeatable. The cross-resolution gallery side stays clean.
    pub degrade: Option<DegradeConfig>,
}

/// Verification results of one model (or one gallery/probe model combination).
#[derive(Clone, Debug)]
pub struct Verification {
    pub kfold: KFoldAccuracy,
    pub auc: f64,
    pub tar_at_far_1e2: f64,
    pub tar_at_far_1e3: f64,
    pub roc: Vec<RocPoint>,
    /// The scores of the genuine and of the impostor pairs (for the score histograms).
    pub genuine_scores: Vec<f32>,
    pub impostor_scores: Vec<f32>,
}

impl Verification {
    /// The threshold the report gives: the mean over folds of each fold's chosen threshold.
    pub fn threshold(&self) -> f64 {
        self.kfold.thresholds.iter().map(|&t| t as f64).sum::<f64>()
            / self.kfold.thresholds.len().max(1) as f64
    }
}

/// Ranks drawn on the CMC curve: 1 to `CMC_RANKS` (fewer when the gallery is smaller).
pub const CMC_RANKS: usize = 20;

/// Identification results.
#[derive(Clone, Debug, PartialEq)]
pub struct Identification {
    pub rank1: f64,
    pub rank5: f64,
    /// The CMC curve: `cmc[k - 1]` is the rank-k rate, for k = 1 to min(`CMC_RANKS`, gallery).
    pub cmc: Vec<f64>,
}

/// Results of the cross-resolution mode: HR gallery side embedded by another model.
#[derive(Clone, Debug)]
pub struct CrossResolution {
    pub gallery_model: String,
    pub gallery_input: usize,
    pub verification: Verification,
    pub identification: Identification,
}

/// Everything `bridge eval` reports.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub data: PathBuf,
    pub model: String,
    pub model_input: usize,
    pub resolution: usize,
    pub seed: u64,
    /// "generated" or the pairs.txt path.
    pub pairs_source: String,
    pub identities: usize,
    pub images: usize,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
    pub gallery: usize,
    pub probes: usize,
    /// The degradation of the low-resolution side, if not clean area downsampling.
    pub degrade: Option<DegradeConfig>,
    pub verification: Verification,
    pub identification: Identification,
    pub cross: Option<CrossResolution>,
}

/// Evaluates `model` on the ImageFolder at `data` (see the README's `bridge eval` section for
/// the protocols). `gallery_model`, if given, embeds the full-resolution side (gallery images,
/// and the first image of each pair) for the cross-resolution results. `progress(done, total)`
/// is called after each batch of faces embedded.
pub fn evaluate(
    data: &Path,
    model: &dyn FaceEmbedder,
    gallery_model: Option<&dyn FaceEmbedder>,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Evaluation> {
    if opts.resolution == 0 {
        return Err(Error::parameter(
            "resolution",
            "`resolution` must be positive",
        ));
    }
    let folder = ImageFolder::open(data)?;
    if folder.identities.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{} holds a single identity ({}); verification and identification need at least 2",
            data.display(),
            folder.identities.join(", ")
        )));
    }
    let labels: Vec<usize> = folder.samples.iter().map(|s| s.label).collect();
    let mut paths: Vec<PathBuf> = folder.samples.iter().map(|s| s.path.clone()).collect();
    let mut rng = Rng::new(opts.seed);

    let (pairs, pairs_source) = match &opts.pairs_txt {
        None => (
            protocol::generated_pairs(&labels, FOLDS, &mut rng)?,
            "generated".to_string(),
        ),
        Some(txt) => (
            pairs_from_file(txt, data, &mut paths, &mut rng)?,
            txt.display().to_string(),
        ),
    };
    let (gallery, probes) = protocol::gallery_and_probes(&labels)?;

    let sides = 1 + usize::from(gallery_model.is_some());
    let total = paths.len() * sides;
    let mut done = 0;
    let mut tick = |n: usize| {
        done += n;
        progress(done, total);
    };
    let r = opts.resolution;
    let side = model.input_side();
    let degrade = opts.degrade.as_ref().map(|c| DegradeConfig {
        resolution: r,
        ..c.clone()
    });
    if let Some(c) = &degrade {
        c.validate()?;
    }
    let lr = embed_all(
        &paths,
        model,
        opts.batch,
        &mut tick,
        |i, img| match &degrade {
            None => degrade_to_resolution(img, r, side),
            Some(c) => {
                let mut rng = image_rng(opts.seed, i);
                let small = degrade_to_lr(img, c, &mut rng)?;
                degrade_to_resolution(&small, r, side)
            }
        },
    )?;
    let hr = match gallery_model {
        Some(g) => {
            let gs = g.input_side();
            let hr = embed_all(&paths, g, opts.batch, &mut tick, |_, img| {
                downsample_area(img, gs, gs)
            })?;
            if hr.dim != lr.dim {
                return Err(Error::Shape(format!(
                    "the gallery model gives {}-D embeddings, the model {}-D; they cannot be compared",
                    hr.dim, lr.dim
                )));
            }
            Some(hr)
        }
        None => None,
    };

    let verification = verify(&pairs, &lr, &lr)?;
    let truth: Vec<usize> = probes.iter().map(|&p| labels[p]).collect();
    let identification = identify(&lr, &gallery, &lr, &probes, &truth)?;
    let cross = match (gallery_model, &hr) {
        (Some(g), Some(hr)) => Some(CrossResolution {
            gallery_model: g.name(),
            gallery_input: g.input_side(),
            verification: verify(&pairs, hr, &lr)?,
            identification: identify(hr, &gallery, &lr, &probes, &truth)?,
        }),
        _ => None,
    };
    Ok(Evaluation {
        data: data.to_path_buf(),
        model: model.name(),
        model_input: side,
        resolution: r,
        seed: opts.seed,
        pairs_source,
        identities: folder.identities.len(),
        images: paths.len(),
        genuine_pairs: pairs.iter().filter(|p| p.same).count(),
        impostor_pairs: pairs.iter().filter(|p| !p.same).count(),
        gallery: gallery.len(),
        probes: probes.len(),
        degrade,
        verification,
        identification,
        cross,
    })
}

/// Reads an LFW-format pairs.txt, adding the images it names that the folder listing lacks to
/// `paths`. The file's own folds are used when it has at least two; otherwise pairs are dealt
/// into `FOLDS` stratified folds.
fn pairs_from_file(
    txt: &Path,
    root: &Path,
    paths: &mut Vec<PathBuf>,
    rng: &mut Rng,
) -> Result<Vec<IndexPair>> {
    let file_pairs = read_lfw_pairs(txt, root)?;
    if file_pairs.is_empty() {
        return Err(Error::EmptyInput(format!(
            "{} lists no pairs",
            txt.display()
        )));
    }
    let mut index: HashMap<PathBuf, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i))
        .collect();
    let mut lookup = |p: &PathBuf| -> usize {
        *index.entry(p.clone()).or_insert_with(|| {
            paths.push(p.clone());
            paths.len() - 1
        })
    };
    let mut pairs: Vec<IndexPair> = file_pairs
        .iter()
        .map(|p| IndexPair {
            a: lookup(&p.a),
            b: lookup(&p.b),
            same: p.same,
            fold: p.fold,
        })
        .collect();
    let file_folds = pairs.iter().map(|p| p.fold).max().map_or(0, |m| m + 1);
    if file_folds < 2 {
        let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
        let folds = protocol::assign_folds(&same, FOLDS, rng)?;
        for (p, f) in pairs.iter_mut().zip(folds) {
            p.fold = f;
        }
    }
    Ok(pairs)
}

/// L2-normalised embeddings, one row per image.
struct Embeddings {
    dim: usize,
    rows: Vec<f32>,
}

impl Embeddings {
    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    fn dot(&self, i: usize, other: &Embeddings, j: usize) -> f32 {
        self.row(i)
            .iter()
            .zip(other.row(j))
            .map(|(a, b)| a * b)
            .sum()
    }
}

/// Loads, prepares and embeds every image, in batches, streaming (only a batch is decoded at a
/// time). Rows are re-normalised so that a dot product is the cosine similarity.
/// The degradation draws of image `i`: its own stream, so they do not depend on the batch size.
fn image_rng(seed: u64, i: usize) -> Rng {
    Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Embeds every image of `paths`, each first turned into model input by `prepare(index, image)`.
fn embed_all(
    paths: &[PathBuf],
    model: &dyn FaceEmbedder,
    batch: usize,
    tick: &mut dyn FnMut(usize),
    prepare: impl Fn(usize, &Rgb8) -> Result<Rgb8>,
) -> Result<Embeddings> {
    let mut rows = Vec::new();
    let mut dim = 0;
    let batch = batch.max(1);
    for (c, chunk) in paths.chunks(batch).enumerate() {
        let faces = chunk
            .iter()
            .enumerate()
            .map(|(j, p)| prepare(c * batch + j, &load_rgb8(p)?))
            .collect::<Result<Vec<_>>>()?;
        let emb = model.embed(&faces)?;
        let [n, d] = emb.dims2("embeddings")?;
        if n != faces.len() || d == 0 || (dim != 0 && d != dim) {
            return Err(Error::Shape(format!(
                "{} returned embeddings of shape {:?} for {} faces",
                model.name(),
                emb.shape(),
                faces.len()
            )));
        }
        dim = d;
        for row in emb.data().chunks(d) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if !norm.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "{} produced a non-finite embedding; the weights are broken",
                    model.name()
                )));
            }
            let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            rows.extend(row.iter().map(|v| v * inv));
        }
        tick(faces.len());
    }
    Ok(Embeddings { dim, rows })
}

/// Verification with pair side `a` from `left` and side `b` from `right`.
fn verify(pairs: &[IndexPair], left: &Embeddings, right: &Embeddings) -> Result<Verification> {
    let scores: Vec<f32> = pairs.iter().map(|p| left.dot(p.a, right, p.b)).collect();
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let fold: Vec<usize> = pairs.iter().map(|p| p.fold).collect();
    Ok(Verification {
        kfold: metrics::kfold_accuracy(&scores, &same, &fold)?,
        auc: metrics::auc(&scores, &same)?,
        tar_at_far_1e2: metrics::tar_at_far(&scores, &same, 1e-2)?.tar,
        tar_at_far_1e3: metrics::tar_at_far(&scores, &same, 1e-3)?.tar,
        roc: metrics::roc_curve(&scores, &same)?,
        genuine_scores: scores
            .iter()
            .zip(&same)
            .filter(|p| *p.1)
            .map(|p| *p.0)
            .collect(),
        impostor_scores: scores
            .iter()
            .zip(&same)
            .filter(|p| !*p.1)
            .map(|p| *p.0)
            .collect(),
    })
}

/// Rank-1, rank-5 and the CMC curve of `probes` (embedded in `probe_emb`) against `gallery` (in `gallery_emb`).
fn identify(
    gallery_emb: &Embeddings,
    gallery: &[usize],
    probe_emb: &Embeddings,
    probes: &[usize],
    truth: &[usize],
) -> Result<Identification> {
    let mut sims = Vec::with_capacity(probes.len() * gallery.len());
    for &p in probes {
        sims.extend(gallery.iter().map(|&g| probe_emb.dot(p, gallery_emb, g)));
    }
    let ranks = metrics::true_match_ranks(&sims, gallery.len(), truth)?;
    Ok(Identification {
        rank1: metrics::rank_k_rate(&ranks, 1),
        rank5: metrics::rank_k_rate(&ranks, 5),
        cmc: (1..=CMC_RANKS.min(gallery.len()))
            .map(|k| metrics::rank_k_rate(&ranks, k))
            .collect(),
    })
}

fn resample_name(m: Resample) -> &'static str {
    match m {
        Resample::Area => "area",
        Resample::Bilinear => "bilinear",
        Resample::Bicubic => "bicubic",
    }
}

fn degradation_json(c: &DegradeConfig) -> serde_json::Value {
    json!({
        "resample": c.methods.iter().map(|&m| resample_name(m)).collect::<Vec<_>>(),
        "blur_prob": c.blur_prob,
        "blur_sigma": [c.blur_sigma.0, c.blur_sigma.1],
        "noise_prob": c.noise_prob,
        "noise_sigma": [c.noise_sigma.0, c.noise_sigma.1],
        "jpeg_prob": c.jpeg_prob,
        "jpeg_quality": [c.jpeg_quality.0, c.jpeg_quality.1],
    })
}

fn describe_degradation(c: &DegradeConfig) -> String {
    let methods: Vec<&str> = c.methods.iter().map(|&m| resample_name(m)).collect();
    format!(
        "{}; blur {} at σ {}–{}; noise {} at σ {}–{}; JPEG {} at quality {}–{}",
        methods.join(","),
        c.blur_prob,
        c.blur_sigma.0,
        c.blur_sigma.1,
        c.noise_prob,
        c.noise_sigma.0,
        c.noise_sigma.1,
        c.jpeg_prob,
        c.jpeg_quality.0,
        c.jpeg_quality.1
    )
}

fn verification_json(v: &Verification) -> serde_json::Value {
    json!({
        "folds": v.kfold.per_fold.len(),
        "accuracy": v.kfold.mean,
        "accuracy_std": v.kfold.std,
        "threshold": v.threshold(),
        "auc": v.auc,
        "tar_at_far_1e-2": v.tar_at_far_1e2,
        "tar_at_far_1e-3": v.tar_at_far_1e3,
    })
}

fn identification_json(i: &Identification) -> serde_json::Value {
    json!({"rank1": i.rank1, "rank5": i.rank5})
}

impl Evaluation {
    /// The stable JSON report (schema `SCHEMA`, documented in the README).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "schema": SCHEMA,
            "data": self.data.display().to_string(),
            "model": self.model,
            "model_input": self.model_input,
            "resolution": self.resolution,
            "seed": self.seed,
            "pairs_source": self.pairs_source,
            "identities": self.identities,
            "images": self.images,
            "pairs": self.genuine_pairs + self.impostor_pairs,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "gallery": self.gallery,
            "probes": self.probes,
            "degradation": self.degrade.as_ref().map(degradation_json),
            "verification": verification_json(&self.verification),
            "identification": identification_json(&self.identification),
            "cross_resolution": self.cross.as_ref().map(|c| json!({
                "gallery_model": c.gallery_model,
                "gallery_input": c.gallery_input,
                "verification": verification_json(&c.verification),
                "identification": identification_json(&c.identification),
            })),
        })
    }

    /// A short human-readable summary, one fact per line.
    pub fn to_text(&self) -> String {
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        let mut s = String::new();
        s += &format!("model: {}, input {}px\n", self.model, self.model_input);
        s += &format!(
            "data: {} — {} identities, {} images; faces {} to {}×{}\n",
            self.data.display(),
            self.identities,
            self.images,
            match &self.degrade {
                None => "downsampled".to_string(),
                Some(c) => format!("degraded ({})", describe_degradation(c)),
            },
            self.resolution,
            self.resolution
        );
        let v = &self.verification;
        s += &format!(
            "verification ({} genuine + {} impostor pairs, {}, {}-fold): accuracy {} ± {}, AUC {:.4}, TAR@FAR=1% {}, TAR@FAR=0.1% {}\n",
            self.genuine_pairs,
            self.impostor_pairs,
            self.pairs_source,
            v.kfold.per_fold.len(),
            pct(v.kfold.mean),
            pct(v.kfold.std),
            v.auc,
            pct(v.tar_at_far_1e2),
            pct(v.tar_at_far_1e3)
        );
        s += &format!(
            "identification ({} gallery, {} probes): rank-1 {}, rank-5 {}\n",
            self.gallery,
            self.probes,
            pct(self.identification.rank1),
            pct(self.identification.rank5)
        );
        if let Some(c) = &self.cross {
            s += &format!(
                "cross-resolution (gallery by {} at {}px, probes at {}px): rank-1 {}, rank-5 {}; verification accuracy {}, AUC {:.4}\n",
                c.gallery_model,
                c.gallery_input,
                self.resolution,
                pct(c.identification.rank1),
                pct(c.identification.rank5),
                pct(c.verification.kfold.mean),
                c.verification.auc
            );
        }
        s
    }
}

/// Verification and identification of faces already in memory (a validation split during
/// training), with the same protocols as `evaluate`: faces area-downsampled to `resolution`
/// (then to the model's side), generated pairs seeded by `seed`, the first image of each
/// identity as the gallery. Also returns the threshold that accepts at most 1% of the
/// impostor pairs (the calibrated threshold of a shipped model).
pub fn evaluate_faces(
    faces: &[Rgb8],
    labels: &[usize],
    model: &dyn FaceEmbedder,
    resolution: usize,
    seed: u64,
) -> Result<(Verification, Identification, f32)> {
    if faces.len() != labels.len() || faces.is_empty() {
        return Err(Error::Shape(format!(
            "{} faces with {} labels",
            faces.len(),
            labels.len()
        )));
    }
    let side = model.input_side();
    let mut rows = Vec::new();
    let mut dim = 0;
    for chunk in faces.chunks(256) {
        let small = chunk
            .iter()
            .map(|f| degrade_to_resolution(f, resolution, side))
            .collect::<Result<Vec<_>>>()?;
        let e = model.embed(&small)?;
        let [_, d] = e.dims2("embeddings")?;
        dim = d;
        for row in e.data().chunks(d) {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let inv = if n > 0.0 && n.is_finite() {
                1.0 / n
            } else {
                0.0
            };
            rows.extend(row.iter().map(|v| v * inv));
        }
    }
    let emb = Embeddings { dim, rows };
    // The protocols number identities 0..k; a split's labels are a subset of a larger set's.
    let mut index = HashMap::new();
    let labels: Vec<usize> = labels
        .iter()
        .map(|l| {
            let next = index.len();
            *index.entry(*l).or_insert(next)
        })
        .collect();
    let labels = labels.as_slice();
    let mut rng = Rng::new(seed);
    let pairs = protocol::generated_pairs(labels, FOLDS, &mut rng)?;
    let verification = verify(&pairs, &emb, &emb)?;
    let scores: Vec<f32> = pairs.iter().map(|p| emb.dot(p.a, &emb, p.b)).collect();
    let same: Vec<bool> = pairs.iter().map(|p| p.same).collect();
    let threshold = metrics::tar_at_far(&scores, &same, 1e-2)?.threshold;
    let (gallery, probes) = protocol::gallery_and_probes(labels)?;
    let truth: Vec<usize> = probes.iter().map(|&p| labels[p]).collect();
    let identification = identify(&emb, &gallery, &emb, &probes, &truth)?;
    Ok((verification, identification, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;
    use std::cell::Cell;

    /// Identity k's colour: distinct directions around mid-grey.
    const COLOURS: [[u8; 3]; 5] = [
        [220, 40, 40],
        [40, 220, 40],
        [40, 40, 220],
        [220, 220, 40],
        [40, 220, 220],
    ];

    /// Embeds a face as its mean colour minus mid-grey: a perfect model for `colour_folder`.
    /// Checks that it is only ever given faces at its input side.
    struct ColourEmbedder {
        side: usize,
        calls: Cell<usize>,
    }

    impl FaceEmbedder for ColourEmbedder {
        fn name(&self) -> String {
            format!("colour{}", self.side)
        }
        fn input_side(&self) -> usize {
            self.side
        }
        fn embed(&self, faces: &[Rgb8]) -> Result<Tensor> {
            self.calls.set(self.calls.get() + 1);
            let mut rows = Vec::new();
            for f in faces {
                assert_eq!((f.width, f.height), (self.side, self.side));
                let n = (f.width * f.height) as f32;
                for ch in 0..3 {
                    let sum: f32 = f.pixels.iter().skip(ch).step_by(3).map(|&v| v as f32).sum();
                    rows.push(sum / n - 128.0);
                }
            }
            Tensor::new(&[faces.len(), 3], rows)
        }
    }

    /// Writes `root/<name>/<name>_000v.png`: identity k's colour with mild per-view noise.
    fn colour_folder(root: &Path, per_id: &[usize]) -> Vec<String> {
        let mut rng = Rng::new(11);
        let mut names = Vec::new();
        for (k, &n) in per_id.iter().enumerate() {
            let name = format!("id{k}");
            std::fs::create_dir_all(root.join(&name)).unwrap();
            for v in 1..=n {
                let px: Vec<u8> = (0..24 * 20)
                    .flat_map(|_| COLOURS[k])
                    .map(|c| (c as i32 + rng.below(21) as i32 - 10) as u8)
                    .collect();
                image::RgbImage::from_raw(24, 20, px)
                    .unwrap()
                    .save(root.join(&name).join(format!("{name}_{v:04}.png")))
                    .unwrap();
            }
            names.push(name);
        }
        names
    }

    fn opts(pairs_txt: Option<PathBuf>) -> EvalOptions {
        EvalOptions {
            resolution: 6,
            seed: 7,
            pairs_txt,
            batch: 4,
            degrade: None,
        }
    }

    /// In-memory faces with any identity numbers (a held-out split's) get the same protocols:
    /// a perfect model scores perfectly, and the FAR-1% threshold separates the colours.
    #[test]
    fn evaluate_faces_takes_a_split_s_labels_and_calibrates_a_threshold() {
        let mut rng = Rng::new(3);
        let (mut faces, mut labels) = (Vec::new(), Vec::new());
        for (k, id) in [9usize, 19, 29, 39].iter().enumerate() {
            for _ in 0..3 {
                let pixels: Vec<u8> = (0..16 * 16)
                    .flat_map(|_| COLOURS[k])
                    .map(|c| (c as i32 + rng.below(21) as i32 - 10) as u8)
                    .collect();
                faces.push(Rgb8 {
                    width: 16,
                    height: 16,
                    pixels,
                });
                labels.push(*id);
            }
        }
        let model = ColourEmbedder {
            side: 4,
            calls: Cell::new(0),
        };
        let (v, i, threshold) = evaluate_faces(&faces, &labels, &model, 8, 1).unwrap();
        assert_eq!(v.kfold.mean, 1.0);
        assert_eq!((i.rank1, i.rank5), (1.0, 1.0));
        assert!(threshold > 0.2 && threshold <= 1.0, "threshold {threshold}");
        assert!(evaluate_faces(&faces, &labels[1..], &model, 8, 1).is_err());
    }

    #[test]
    fn a_perfect_embedder_scores_perfectly_with_the_right_counts() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path(), &[3, 4, 2, 3, 1]);
        let model = ColourEmbedder {
            side: 6,
            calls: Cell::new(0),
        };
        let mut last = (0, 0);
        let e = evaluate(dir.path(), &model, None, &opts(None), &mut |d, t| {
            last = (d, t)
        })
        .unwrap();
        assert_eq!(last, (13, 13));
        assert_eq!(model.calls.get(), 4); // 13 faces in batches of 4
        assert_eq!((e.identities, e.images), (5, 13));
        // C(3,2) + C(4,2) + C(2,2) + C(3,2) = 13 genuine pairs.
        assert_eq!((e.genuine_pairs, e.impostor_pairs), (13, 13));
        assert_eq!((e.gallery, e.probes), (5, 8));
        let v = &e.verification;
        assert_eq!(v.kfold.per_fold.len(), FOLDS);
        assert_eq!(v.kfold.mean, 1.0);
        assert_eq!((v.auc, v.tar_at_far_1e2, v.tar_at_far_1e3), (1.0, 1.0, 1.0));
        assert_eq!(
            e.identification,
            Identification {
                rank1: 1.0,
                rank5: 1.0,
                cmc: vec![1.0; 5], // 5 gallery identities
            }
        );
        assert_eq!(v.genuine_scores.len(), 13);
        assert_eq!(v.impostor_scores.len(), 13);
        // Perfect: every genuine score above every impostor score.
        let lowest_genuine = v.genuine_scores.iter().cloned().fold(f32::MAX, f32::min);
        assert!(v.impostor_scores.iter().all(|&s| s < lowest_genuine));
        let j = e.to_json();
        assert_eq!(j["verification"]["accuracy"], 1.0);
        assert_eq!(j["pairs"], 26);
        assert!(j["cross_resolution"].is_null());
    }

    /// Swaps identities 0 and 1's colours for every probe but not for the gallery: identification
    /// must then fail for exactly those probes, which a gallery/probe mix-up would not show.
    struct SwappingEmbedder(ColourEmbedder);

    impl FaceEmbedder for SwappingEmbedder {
        fn name(&self) -> String {
            "swapping".into()
        }
        fn input_side(&self) -> usize {
            self.0.side
        }
        fn embed(&self, faces: &[Rgb8]) -> Result<Tensor> {
            let mut t = self.0.embed(faces)?;
            for row in t.data_mut().chunks_mut(3) {
                // Red-dominant (identity 0) ↔ green-dominant (identity 1).
                if row[0] > 50.0 && row[1] < -50.0 && row[2] < -50.0 {
                    row.copy_from_slice(&[-88.0, 92.0, -88.0]);
                } else if row[1] > 50.0 && row[0] < -50.0 && row[2] < -50.0 {
                    row.copy_from_slice(&[92.0, -88.0, -88.0]);
                }
            }
            Ok(t)
        }
    }

    #[test]
    fn cross_resolution_uses_the_gallery_model_for_the_gallery() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path(), &[3, 3, 3, 3]);
        let hr = ColourEmbedder {
            side: 10,
            calls: Cell::new(0),
        };
        let lr = SwappingEmbedder(ColourEmbedder {
            side: 6,
            calls: Cell::new(0),
        });
        let e = evaluate(dir.path(), &lr, Some(&hr), &opts(None), &mut |_, _| {}).unwrap();
        // Same-model: swapped consistently on both sides, still perfect.
        assert_eq!(e.identification.rank1, 1.0);
        let c = e.cross.as_ref().unwrap();
        assert_eq!(
            (c.gallery_input, c.gallery_model.as_str()),
            (10, "colour10")
        );
        // Probes of identities 0 and 1 (4 of 8) now match the other identity first.
        assert_eq!(c.identification.rank1, 0.5);
        assert_eq!(c.identification.rank5, 1.0);
        // The CMC curve: one point per gallery entry, from rank-1 up to everything.
        let cmc = &c.identification.cmc;
        assert_eq!((cmc.len(), cmc[0], cmc[3]), (4, 0.5, 1.0));
        assert!(cmc.windows(2).all(|w| w[0] <= w[1]));
        assert!(c.verification.auc < 1.0);
        assert!(e.to_json()["cross_resolution"]["identification"]["rank1"] == 0.5);
    }

    #[test]
    fn pairs_txt_pairs_and_folds_are_used() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path(), &[3, 3, 2]);
        let txt = dir.path().join("pairs.txt");
        std::fs::write(
            &txt,
            "2 2\nid0 1 2\nid1 1 3\nid0 1 id1 2\nid2 1 id0 3\n\
             id2 1 2\nid0 2 3\nid1 1 id2 2\nid1 3 id0 2\n",
        )
        .unwrap();
        let model = ColourEmbedder {
            side: 6,
            calls: Cell::new(0),
        };
        let e = evaluate(
            dir.path(),
            &model,
            None,
            &opts(Some(txt.clone())),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!((e.genuine_pairs, e.impostor_pairs), (4, 4));
        assert_eq!(e.verification.kfold.per_fold, vec![1.0, 1.0]);
        assert_eq!(e.pairs_source, txt.display().to_string());
        // A pair naming an image that does not exist fails cleanly, naming it.
        std::fs::write(&txt, "2 1\nid0 1 9\nid0 1 id1 1\nid1 1 2\nid1 1 id2 1\n").unwrap();
        let err = evaluate(dir.path(), &model, None, &opts(Some(txt)), &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("id0_0009"), "{err}");
    }

    #[test]
    fn mismatched_embedding_sizes_are_refused() {
        struct Wide;
        impl FaceEmbedder for Wide {
            fn name(&self) -> String {
                "wide".into()
            }
            fn input_side(&self) -> usize {
                4
            }
            fn embed(&self, faces: &[Rgb8]) -> Result<Tensor> {
                Ok(Tensor::zeros(&[faces.len(), 5]))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path(), &[3, 3, 3]);
        let model = ColourEmbedder {
            side: 6,
            calls: Cell::new(0),
        };
        let err = evaluate(dir.path(), &model, Some(&Wide), &opts(None), &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("5-D") && err.contains("3-D"), "{err}");
    }

    /// Remembers every face it is given (its embedding is the colour one).
    struct RecordingEmbedder {
        inner: ColourEmbedder,
        seen: std::cell::RefCell<Vec<Rgb8>>,
    }

    impl RecordingEmbedder {
        fn new(side: usize) -> Self {
            RecordingEmbedder {
                inner: ColourEmbedder {
                    side,
                    calls: Cell::new(0),
                },
                seen: Default::default(),
            }
        }
    }

    impl FaceEmbedder for RecordingEmbedder {
        fn name(&self) -> String {
            "recording".into()
        }
        fn input_side(&self) -> usize {
            self.inner.side
        }
        fn embed(&self, faces: &[Rgb8]) -> Result<Tensor> {
            self.seen.borrow_mut().extend_from_slice(faces);
            self.inner.embed(faces)
        }
    }

    /// `--degrade`: the model's faces are degraded (not the clean area downsampling), the same
    /// for a seed whatever the batch size, different for another seed; the cross-resolution
    /// gallery stays clean; the report names the degradation.
    #[test]
    fn degraded_evaluation_is_seeded_per_image_and_leaves_the_gallery_clean() {
        let dir = tempfile::tempdir().unwrap();
        colour_folder(dir.path(), &[3, 4, 2]);
        let noisy = DegradeConfig {
            resolution: 0, // replaced by the evaluation's
            noise_prob: 1.0,
            noise_sigma: (8.0, 8.0),
            ..DegradeConfig::clean(0)
        };
        let run = |seed: u64, batch: usize, degrade: Option<DegradeConfig>| {
            let model = RecordingEmbedder::new(6);
            let gallery = RecordingEmbedder::new(12);
            let o = EvalOptions {
                seed,
                batch,
                degrade,
                ..opts(None)
            };
            let e = evaluate(dir.path(), &model, Some(&gallery), &o, &mut |_, _| {}).unwrap();
            (e, model.seen.take(), gallery.seen.take())
        };
        let (clean, clean_faces, clean_gallery) = run(7, 4, None);
        let (e, faces, gallery) = run(7, 4, Some(noisy.clone()));
        let (_, faces_b3, _) = run(7, 3, Some(noisy.clone()));
        let (_, faces_s8, _) = run(8, 4, Some(noisy.clone()));
        assert_eq!(faces.len(), 9);
        assert!(faces.iter().all(|f| (f.width, f.height) == (6, 6)));
        for (d, c) in faces.iter().zip(&clean_faces) {
            assert_ne!(d.pixels, c.pixels, "a face was not degraded");
        }
        assert!(faces
            .iter()
            .zip(&faces_b3)
            .all(|(a, b)| a.pixels == b.pixels));
        assert!(faces
            .iter()
            .zip(&faces_s8)
            .any(|(a, b)| a.pixels != b.pixels));
        assert!(gallery
            .iter()
            .zip(&clean_gallery)
            .all(|(a, b)| a.pixels == b.pixels));
        let j = e.to_json();
        assert_eq!(j["degradation"]["noise_prob"], 1.0);
        assert_eq!(j["degradation"]["resample"], json!(["area"]));
        assert!(clean.to_json()["degradation"].is_null());
        assert!(e.to_text().contains("degraded (area; blur 0"));
        // A bad recipe is refused.
        let bad = DegradeConfig {
            noise_prob: 2.0,
            ..noisy
        };
        let model = RecordingEmbedder::new(6);
        let o = EvalOptions {
            degrade: Some(bad),
            ..opts(None)
        };
        assert!(evaluate(dir.path(), &model, None, &o, &mut |_, _| {}).is_err());
    }
}
