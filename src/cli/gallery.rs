//! `bridge gallery build|add|search|info`: embeds faces with the chosen model and hands the
//! vectors to `crate::gallery`. It owns no index logic, and checks that the gallery and the
//! probes come from the same weights.

use super::align::embed_images;
use super::common::{default_weights, ModelChoice};
use crate::cpu;
use crate::data::folder::ImageFolder;
use crate::data::image::{self, Rgb8};
use crate::data::parquet_embeddings::read_embeddings;
use crate::error::{Error, Result};
use crate::gallery::{Gallery, IndexSettings, ModelTag};
use crate::model::student::StudentInfo;
use crate::weights::WeightFile;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum GalleryCommand {
    /// Build a gallery from an ImageFolder (DIR/IDENTITY/IMAGE; identity = folder) of aligned
    /// chips, or of raw photos with --align; or, with --from-parquet, from embeddings already
    /// made (bridgeface.ray's Parquet output).
    Build {
        #[arg(
            required_unless_present = "from_parquet",
            conflicts_with = "from_parquet"
        )]
        dir: Option<PathBuf>,
        /// Read the vectors from Parquet instead of embedding images: a .parquet file or a folder
        /// of them (columns `embedding`, `label`, optional `path` and `model`; docs/PYTHON.md).
        #[arg(long, value_name = "DIR")]
        from_parquet: Option<PathBuf>,
        /// The gallery folder to write (index.usearch + gallery.json); must not exist yet.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        embed: EmbedArgs,
        /// HNSW graph degree (M).
        #[arg(long, default_value_t = IndexSettings::default().connectivity)]
        connectivity: usize,
        /// HNSW candidate list while inserting (ef_construction).
        #[arg(long, default_value_t = IndexSettings::default().expansion_add)]
        expansion_add: usize,
        /// HNSW candidate list while searching (ef); stored with the gallery.
        #[arg(long, default_value_t = IndexSettings::default().expansion_search)]
        expansion_search: usize,
    },
    /// Add images of one identity to a gallery.
    Add {
        gallery: PathBuf,
        images: Vec<PathBuf>,
        /// The identity of every image given.
        #[arg(long)]
        label: String,
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// The K most similar gallery faces to each probe image (cosine, most similar first).
    Search {
        gallery: PathBuf,
        probes: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        k: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// Print a gallery's size, identities, index settings, model and bytes on disk.
    Info { gallery: PathBuf },
}

/// How faces become vectors: the same flags for build, add and search.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Which network embeds the faces.
    #[arg(long, value_enum, default_value_t = ModelChoice::Student)]
    pub model: ModelChoice,
    /// Its weights (student default: weights/student.safetensors or $BRIDGE_WEIGHTS; teacher
    /// default: the fetched SFace).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The images are raw photos: find the best face (YuNet) and align it to 112×112 first.
    #[arg(long)]
    pub align: bool,
    /// Minimum detection score with --align.
    #[arg(long, default_value_t = 0.5)]
    pub score: f32,
    /// YuNet model for --align (default: the fetched one).
    #[arg(long)]
    pub detector: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(cmd: GalleryCommand) -> Result<()> {
    match cmd {
        GalleryCommand::Build {
            dir,
            from_parquet,
            out,
            embed,
            connectivity,
            expansion_add,
            expansion_search,
        } => {
            let settings = IndexSettings {
                connectivity,
                expansion_add,
                expansion_search,
            };
            match (dir, from_parquet) {
                (_, Some(table)) => build_from_parquet(&table, &out, &embed, settings),
                (Some(dir), None) => build(&dir, &out, &embed, settings),
                (None, None) => Err(Error::InvalidArgument(
                    "give an image folder DIR or --from-parquet DIR".into(),
                )),
            }
        }
        GalleryCommand::Add {
            gallery,
            images,
            label,
            embed,
        } => add(&gallery, &images, &label, &embed),
        GalleryCommand::Search {
            gallery,
            probes,
            k,
            json,
            embed,
        } => search(&gallery, &probes, k, json, &embed),
        GalleryCommand::Info { gallery } => info(&gallery),
    }
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} {per_sec} {elapsed_precise} eta {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn threads(args: &EmbedArgs) -> usize {
    args.threads
        .filter(|&t| t > 0)
        .unwrap_or_else(crate::model::student::default_threads)
}

/// The tag of the model `args` names: kind, sha256 of its weight file, input side.
fn model_tag(args: &EmbedArgs) -> Result<ModelTag> {
    match args.model {
        ModelChoice::Student => {
            let path = default_weights(args.weights.clone())?;
            let info = StudentInfo::from_weights(&WeightFile::open(&path)?)?;
            ModelTag::of_file("student", &path, info.resolution)
        }
        ModelChoice::Teacher => {
            let path = match &args.weights {
                Some(p) => p.clone(),
                None => crate::assets::sface_onnx()?,
            };
            ModelTag::of_file("teacher", &path, crate::model::teacher::TEACHER_RESOLUTION)
        }
    }
}

/// Decodes `paths` (aligning each with --align); returns the images and the indices of the
/// paths they came from. Photos without a face are listed on stderr and skipped.
fn load_faces(paths: &[PathBuf], args: &EmbedArgs) -> Result<(Vec<Rgb8>, Vec<usize>)> {
    if paths.is_empty() {
        return Err(Error::EmptyInput(
            "no image paths given; pass one or more image files".into(),
        ));
    }
    if !args.align {
        let images = paths
            .iter()
            .map(image::load_rgb8)
            .collect::<Result<Vec<_>>>()?;
        return Ok((images, (0..paths.len()).collect()));
    }
    let det = super::onnx::load_detector(args.detector.clone())?;
    let k = cpu::kernels()?;
    let pb = progress(paths.len(), "align");
    let (mut images, mut kept) = (Vec::new(), Vec::new());
    for (i, p) in paths.iter().enumerate() {
        let img = image::load_rgb8(p)?;
        match crate::embed::detect_and_align(&det, k, &img, 112, args.score)? {
            Some((chip, _)) => {
                images.push(chip);
                kept.push(i);
            }
            None => pb.println(format!("no face found in {} (skipped)", p.display())),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if images.is_empty() {
        return Err(Error::EmptyInput(format!(
            "no face found in any of the {} images (detection score below {})",
            paths.len(),
            args.score
        )));
    }
    Ok((images, kept))
}

/// Embeds `paths`; returns the row-major vectors, their dimension and the kept path indices.
fn embed_paths(paths: &[PathBuf], args: &EmbedArgs) -> Result<(Vec<f32>, usize, Vec<usize>)> {
    let (images, kept) = load_faces(paths, args)?;
    let pb = progress(images.len().div_ceil(16), "embed");
    let emb = embed_images(
        args.model,
        args.weights.clone(),
        &images,
        Some(threads(args)),
        &pb,
    )?;
    pb.finish_and_clear();
    let d = emb.shape()[1];
    Ok((emb.data().to_vec(), d, kept))
}

fn check_model(g: &Gallery, dir: &Path, args: &EmbedArgs) -> Result<()> {
    let tag = model_tag(args)?;
    if g.model() != &tag {
        return Err(Error::InvalidArgument(format!(
            "{} was built with the {} ({}×{}, weights sha256 {}), not the {} ({}×{}, sha256 {}); \
             pass the same --model and --weights",
            dir.display(),
            g.model().kind,
            g.model().resolution,
            g.model().resolution,
            short(&g.model().weights_sha256),
            tag.kind,
            tag.resolution,
            tag.resolution,
            short(&tag.weights_sha256)
        )));
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn path_strings(paths: &[PathBuf], kept: &[usize]) -> Vec<String> {
    kept.iter()
        .map(|&i| paths[i].display().to_string())
        .collect()
}

fn check_new(out: &Path) -> Result<()> {
    if out.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; add to it with `bridge gallery add`, or remove it first",
            out.display()
        )));
    }
    Ok(())
}

fn identity_count(labels: &[String]) -> usize {
    labels
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn build(dir: &Path, out: &Path, args: &EmbedArgs, settings: IndexSettings) -> Result<()> {
    check_new(out)?;
    let start = Instant::now();
    let tag = model_tag(args)?;
    let set = ImageFolder::open(dir)?;
    let paths: Vec<PathBuf> = set.samples.iter().map(|s| s.path.clone()).collect();
    let (vectors, d, kept) = embed_paths(&paths, args)?;
    let labels: Vec<String> = kept
        .iter()
        .map(|&i| set.identities[set.samples[i].label].clone())
        .collect();
    let mut g = Gallery::new(d, tag, settings)?;
    g.add(
        &vectors,
        &labels,
        &path_strings(&paths, &kept),
        threads(args),
    )?;
    g.save(out)?;
    let identities = identity_count(&labels);
    println!(
        "gallery {}: {} faces of {identities} identities ({} skipped), {d}-D, {:.1} s",
        out.display(),
        g.len(),
        paths.len() - kept.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A gallery of the vectors in Parquet files, as given. The model tag is the table's `model`
/// column (bridgeface.ray.Embedder writes it), else `external`: the vectors' maker is unknown,
/// so `gallery search` will not embed probes for it (search it from Python with vectors).
fn build_from_parquet(
    table: &Path,
    out: &Path,
    args: &EmbedArgs,
    settings: IndexSettings,
) -> Result<()> {
    if args.weights.is_some() || args.align || args.detector.is_some() {
        return Err(Error::InvalidArgument(
            "--from-parquet reads vectors already made: --weights, --align and --detector do not apply"
                .into(),
        ));
    }
    check_new(out)?;
    let start = Instant::now();
    let t = read_embeddings(table)?;
    let tag = match &t.model {
        None => ModelTag::external(),
        Some(json) => serde_json::from_str::<ModelTag>(json).map_err(|e| {
            Error::InvalidArgument(format!(
                "the `model` column of {} holds {json:?}, not a model tag ({e}); drop the column to build an `external` gallery",
                table.display()
            ))
        })?,
    };
    let mut g = Gallery::new(t.dimensions, tag, settings)?;
    g.add(&t.vectors, &t.labels, &t.paths, threads(args))?;
    g.save(out)?;
    println!(
        "gallery {}: {} faces of {} identities from {} Parquet files, {}-D, model {}, {:.1} s",
        out.display(),
        g.len(),
        identity_count(&t.labels),
        t.files.len(),
        t.dimensions,
        g.model().kind,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn add(dir: &Path, images: &[PathBuf], label: &str, args: &EmbedArgs) -> Result<()> {
    if label.is_empty() {
        return Err(Error::InvalidArgument("--label must not be empty".into()));
    }
    let mut g = Gallery::load(dir)?;
    check_model(&g, dir, args)?;
    let (vectors, d, kept) = embed_paths(images, args)?;
    if d != g.dimensions() {
        return Err(Error::Shape(format!(
            "the model gives {d}-D embeddings, the gallery holds {}-D",
            g.dimensions()
        )));
    }
    let labels = vec![label.to_string(); kept.len()];
    g.add(
        &vectors,
        &labels,
        &path_strings(images, &kept),
        threads(args),
    )?;
    g.save(dir)?;
    println!(
        "added {} faces of {label} to {} (now {} faces)",
        kept.len(),
        dir.display(),
        g.len()
    );
    Ok(())
}

fn search(dir: &Path, probes: &[PathBuf], k: usize, json: bool, args: &EmbedArgs) -> Result<()> {
    if k == 0 {
        return Err(Error::InvalidArgument("--k must be at least 1".into()));
    }
    let g = Gallery::view(dir)?;
    check_model(&g, dir, args)?;
    let (vectors, d, kept) = embed_paths(probes, args)?;
    if d != g.dimensions() {
        return Err(Error::Shape(format!(
            "the model gives {d}-D embeddings, the gallery holds {}-D",
            g.dimensions()
        )));
    }
    let mut items = Vec::new();
    for (row, &i) in kept.iter().enumerate() {
        let matches = g.search(&vectors[row * d..(row + 1) * d], k)?;
        if json {
            let m: Vec<_> = matches
                .iter()
                .map(|m| {
                    serde_json::json!({"label": m.label, "path": m.path, "similarity": m.similarity})
                })
                .collect();
            items.push(serde_json::json!({"probe": probes[i].display().to_string(), "matches": m}));
        } else {
            println!("{}:", probes[i].display());
            for (rank, m) in matches.iter().enumerate() {
                println!("  {}. {} {:.4} {}", rank + 1, m.label, m.similarity, m.path);
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(items));
    }
    Ok(())
}

fn info(dir: &Path) -> Result<()> {
    let g = Gallery::view(dir)?;
    let identities = g
        .entries()
        .iter()
        .map(|e| e.label.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let bytes: u64 = Gallery::files(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let s = g.settings();
    let m = g.model();
    println!("{}", dir.display());
    println!("faces: {} of {identities} identities", g.len());
    println!(
        "index: usearch HNSW, {}-D, cosine, f16 storage, connectivity {}, expansion add {} search {}",
        g.dimensions(),
        s.connectivity,
        s.expansion_add,
        s.expansion_search
    );
    println!(
        "model: {} {}×{}, weights sha256 {}",
        m.kind, m.resolution, m.resolution, m.weights_sha256
    );
    println!("bytes on disk: {bytes}");
    Ok(())
}
