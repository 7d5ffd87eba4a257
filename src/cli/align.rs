//! `bridge align` (detect, align and save chips, keeping the identity folders) and
//! `bridge identify` (closed-set rank-1 on an identity folder). Threads split the images.

use super::common::{default_weights, ModelChoice};
use crate::cpu::{self, Kernels};
use crate::data::folder::ImageFolder;
use crate::data::image::{self, Rgb8};
use crate::embed::{
    detect_and_align, detect_faces, embed_rgb, embed_rgb_teacher, identification_rank1,
};
use crate::error::{Error, Result};
use crate::model::student::StudentNet;
use crate::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Threads to use: `--threads`, else all the CPU offers.
fn thread_count(threads: Option<usize>) -> usize {
    threads
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Runs `f` on every index, spread over `threads` scoped threads; results keep index order.
fn parallel_map<T: Send>(
    n: usize,
    threads: usize,
    pb: &ProgressBar,
    f: &(dyn Fn(usize) -> T + Sync),
) -> Vec<T> {
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.min(n).max(1) {
            s.spawn(|| loop {
                let i = {
                    let mut g = next.lock().unwrap_or_else(|e| e.into_inner());
                    let i = *g;
                    *g += 1;
                    i
                };
                if i >= n {
                    break;
                }
                let r = f(i);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                pb.inc(1);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn save_png(img: &Rgb8, path: &Path) -> Result<()> {
    let buf = ::image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels.clone())
        .ok_or_else(|| Error::InvalidArgument("chip buffer has the wrong size".into()))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut bytes, ::image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    crate::weights::write_atomic(path, bytes.get_ref())
}

/// Aligns every image of `in_dir` (IDENTITY/IMAGE) into `out_dir/IDENTITY/STEM.png`.
/// Returns (aligned, total).
pub fn align(
    in_dir: &Path,
    out_dir: &Path,
    size: usize,
    score: f32,
    detector: Option<PathBuf>,
    threads: Option<usize>,
    singletons: bool,
) -> Result<(usize, usize)> {
    let set = if singletons {
        ImageFolder::open_singletons(in_dir)?
    } else {
        ImageFolder::open(in_dir)?
    };
    let det = super::onnx::load_detector(detector)?;
    let k: &Kernels = cpu::kernels()?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let start = Instant::now();
    let pb = progress(set.samples.len(), "align");
    let outcome = parallel_map(set.samples.len(), thread_count(threads), &pb, &|i| {
        let s = &set.samples[i];
        let ident = &set.identities[s.label];
        let stem = s
            .path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = out_dir.join(ident).join(format!("{stem}.png"));
        let r = (|| -> Result<bool> {
            let img = image::load_rgb8(&s.path)?;
            match detect_and_align(&det, k, &img, size, score)? {
                Some((chip, _)) => {
                    let dir = out_dir.join(ident);
                    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                    save_png(&chip, &out)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })();
        (s.path.clone(), r)
    });
    pb.finish_and_clear();
    let mut report = String::new();
    let mut aligned = 0;
    for (path, r) in &outcome {
        match r {
            Ok(true) => aligned += 1,
            Ok(false) => {
                eprintln!("no face found: {}", path.display());
                report.push_str(&format!("{}\tno face scored >= {score}\n", path.display()));
            }
            Err(e) => {
                eprintln!("failed: {}: {e}", path.display());
                report.push_str(&format!("{}\t{e}\n", path.display()));
            }
        }
    }
    let report_path = out_dir.join("not_aligned.txt");
    crate::weights::write_atomic(&report_path, report.as_bytes())?;
    println!(
        "aligned {aligned} of {} faces into {} in {:.1} s ({} not aligned, listed in {})",
        outcome.len(),
        out_dir.display(),
        start.elapsed().as_secs_f64(),
        outcome.len() - aligned,
        report_path.display()
    );
    Ok((aligned, outcome.len()))
}

/// Embeds images with the chosen model, batches of 16 spread over threads.
pub fn embed_images(
    model: ModelChoice,
    weights: Option<PathBuf>,
    images: &[Rgb8],
    threads: Option<usize>,
    pb: &ProgressBar,
) -> Result<Tensor> {
    let k: &Kernels = cpu::kernels()?;
    const BATCH: usize = 16;
    let chunks: Vec<&[Rgb8]> = images.chunks(BATCH).collect();
    let threads = thread_count(threads);
    let parts: Vec<Result<Tensor>> = match model {
        ModelChoice::Teacher => {
            let t = super::onnx::load_teacher(weights)?;
            parallel_map(chunks.len(), threads, pb, &|i| {
                embed_rgb_teacher(&t, k, chunks[i])
            })
        }
        ModelChoice::Student => {
            let net = StudentNet::load(default_weights(weights)?)?;
            parallel_map(chunks.len(), threads, pb, &|i| {
                embed_rgb(&net, k, chunks[i])
            })
        }
    };
    let mut rows = Vec::new();
    let mut d = 0;
    for p in parts {
        let p = p?;
        d = p.shape()[1];
        rows.extend_from_slice(p.data());
    }
    Tensor::new(&[images.len(), d], rows)
}

/// Rank-1 identification on an identity folder: gallery = first image of each identity,
/// probes = the rest. Returns (correct, probes).
pub fn identify(
    dir: &Path,
    model: ModelChoice,
    weights: Option<PathBuf>,
    threads: Option<usize>,
) -> Result<(usize, usize)> {
    let set = ImageFolder::open(dir)?;
    let start = Instant::now();
    let images = set
        .samples
        .iter()
        .map(|s| image::load_rgb8(&s.path))
        .collect::<Result<Vec<_>>>()?;
    let pb = progress(images.len().div_ceil(16), "embed");
    let emb = embed_images(model, weights, &images, threads, &pb)?;
    pb.finish_and_clear();
    let (mut g_rows, mut g_labels, mut p_rows, mut p_labels) = (vec![], vec![], vec![], vec![]);
    let mut seen = vec![false; set.identities.len()];
    for (i, s) in set.samples.iter().enumerate() {
        if !seen[s.label] {
            seen[s.label] = true;
            g_rows.extend_from_slice(emb.row(i));
            g_labels.push(s.label);
        } else {
            p_rows.extend_from_slice(emb.row(i));
            p_labels.push(s.label);
        }
    }
    if p_labels.is_empty() {
        return Err(Error::EmptyInput(format!(
            "{} has one image per identity; identification needs probes beyond the gallery",
            dir.display()
        )));
    }
    let d = emb.shape()[1];
    let gallery = Tensor::new(&[g_labels.len(), d], g_rows)?;
    let probes = Tensor::new(&[p_labels.len(), d], p_rows)?;
    let (correct, total) = identification_rank1(&gallery, &g_labels, &probes, &p_labels)?;
    println!(
        "rank-1 identification ({:?}, {} identities, gallery = first image of each, {} probes, cosine): {correct}/{total} = {:.2}% ({:.1} s)",
        model,
        g_labels.len(),
        total,
        100.0 * correct as f64 / total as f64,
        start.elapsed().as_secs_f64()
    );
    Ok((correct, total))
}

/// `bridge detect`: every face in each image, with its score, box and 5 landmarks in the
/// image's own pixel coordinates.
pub fn detect(
    images: &[PathBuf],
    score: f32,
    detector: Option<PathBuf>,
    json: bool,
    threads: Option<usize>,
) -> Result<()> {
    if images.is_empty() {
        return Err(Error::EmptyInput(
            "no image paths given; pass one or more image files".into(),
        ));
    }
    let det = super::onnx::load_detector(detector)?;
    let k: &Kernels = cpu::kernels()?;
    let pb = progress(images.len(), "detect");
    let found = parallel_map(images.len(), thread_count(threads), &pb, &|i| {
        image::load_rgb8(&images[i]).and_then(|img| detect_faces(&det, k, &img, score))
    });
    pb.finish_and_clear();
    let mut items = Vec::with_capacity(images.len());
    for (path, faces) in images.iter().zip(found) {
        let faces = faces?;
        if json {
            let faces: Vec<_> = faces
                .iter()
                .map(|d| {
                    serde_json::json!({"score": d.score, "box": d.bbox, "landmarks": d.landmarks})
                })
                .collect();
            items.push(serde_json::json!({"path": path.display().to_string(), "faces": faces}));
        } else {
            println!("{}: {} face(s)", path.display(), faces.len());
            for d in &faces {
                let lm: Vec<String> = d
                    .landmarks
                    .iter()
                    .map(|p| format!("({:.1},{:.1})", p[0], p[1]))
                    .collect();
                println!(
                    "  score {:.3} box {:.1} {:.1} {:.1} {:.1} landmarks {}",
                    d.score,
                    d.bbox[0],
                    d.bbox[1],
                    d.bbox[2],
                    d.bbox[3],
                    lm.join(" ")
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(items));
    }
    Ok(())
}
