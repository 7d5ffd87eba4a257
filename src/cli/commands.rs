//! The subcommands of `bridge`, each a thin composition of library calls.

use super::common::default_weights;
use super::Command;
use crate::cpu;
use crate::data::image::{self, Rgb8};
use crate::error::{Error, Result};
use crate::model::student::{StudentInfo, StudentNet, StudentParams};
use crate::ops;
use crate::weights::{StoreDtype, WeightFile};
use std::path::{Path, PathBuf};

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Info { file } => info(&file),
        Command::Init {
            out,
            seed,
            resolution,
            f16,
        } => init(&out, seed, resolution, f16),
        Command::Embed {
            images,
            weights,
            json,
            model,
            device,
            threads,
        } => embed(&images, weights, json, model, &device, threads),
        Command::Verify {
            a,
            b,
            threshold,
            weights,
            json,
            model,
        } => verify(&a, &b, threshold, weights, json, model),
        Command::Demo { weights } => super::demo::demo(weights),
        Command::Eval(args) => super::eval::run(args),
        Command::Plot(args) => super::plot::run(args),
        Command::Train(args) => super::train::run(&args),
        Command::Fetch { only } => super::fetch::fetch(only.as_deref()),
        Command::ImportOnnx { model, out } => super::onnx::import_onnx(&model, &out),
        Command::ExportOnnx { weights, out } => super::onnx::export_onnx(&weights, &out),
        Command::Align {
            in_dir,
            out_dir,
            size,
            score,
            detector,
            threads,
            singletons,
        } => super::align::align(
            &in_dir, &out_dir, size, score, detector, threads, singletons,
        )
        .map(|_| ()),
        Command::Distill(cmd) => super::distill::run(cmd),
        #[cfg(feature = "gallery")]
        Command::Gallery(cmd) => super::gallery::run(cmd),
        Command::Detect {
            images,
            score,
            detector,
            json,
            threads,
        } => super::align::detect(&images, score, detector, json, threads),
        Command::Identify {
            dir,
            model,
            weights,
            threads,
        } => super::align::identify(&dir, model, weights, threads).map(|_| ()),
    }
}

fn human_bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn info(file: &Path) -> Result<()> {
    let w = WeightFile::open(file)?;
    println!("{}", file.display());
    println!("tensors:");
    let mut buffers = 0usize;
    for e in w.entries() {
        let n: usize = e.shape.iter().product();
        if e.name.ends_with("running_mean") || e.name.ends_with("running_var") {
            buffers += n;
        }
        println!("  {:<28} {:>4?} {:?}", e.name, e.dtype, e.shape);
    }
    let total = w.parameter_count();
    println!(
        "parameters: {total} ({:.3}M; {} trainable, {buffers} BN running statistics)",
        total as f64 / 1e6,
        total - buffers
    );
    println!("bytes at f32: {} ({})", total * 4, human_bytes(total * 4));
    println!("bytes at f16: {} ({})", total * 2, human_bytes(total * 2));
    println!("metadata:");
    for (k, v) in w.metadata() {
        println!("  {k}: {v}");
    }
    Ok(())
}

fn init(out: &Path, seed: u64, resolution: usize, f16: bool) -> Result<()> {
    let mut info = StudentInfo::new(resolution)?;
    info.provenance = serde_json::json!({
        "data": "none (random initialisation)",
        "recipe": format!("bridge init --seed {seed} --resolution {resolution} (He normal init)"),
        "commit": env!("BRIDGE_GIT_COMMIT"),
    })
    .to_string();
    let params = StudentParams::random(info, seed);
    params.save(
        out,
        if f16 {
            StoreDtype::F16
        } else {
            StoreDtype::F32
        },
    )?;
    println!(
        "wrote a random {}×{} student ({} parameters) to {}",
        resolution,
        resolution,
        params.parameter_count(),
        out.display()
    );
    Ok(())
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<Rgb8>> {
    if paths.is_empty() {
        return Err(Error::EmptyInput(
            "no image paths given; pass one or more image files".into(),
        ));
    }
    paths.iter().map(image::load_rgb8).collect()
}

fn embed(
    paths: &[PathBuf],
    weights: Option<PathBuf>,
    json: bool,
    model: super::ModelChoice,
    device: &str,
    threads: Option<usize>,
) -> Result<()> {
    let device = super::device::Device::parse(device)?;
    let images = load_all(paths)?;
    let threads = threads.unwrap_or_else(crate::model::student::default_threads);
    let emb = embed_with(model, weights, &images, device, threads)?.0;
    if json {
        let items: Vec<_> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({"path": p.display().to_string(), "embedding": emb.row(i)}))
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for (i, p) in paths.iter().enumerate() {
            let vals: Vec<String> = emb.row(i).iter().map(|v| format!("{v:.6}")).collect();
            println!("{}: {}", p.display(), vals.join(" "));
        }
    }
    Ok(())
}

fn verify(
    a: &Path,
    b: &Path,
    threshold: Option<f32>,
    weights: Option<PathBuf>,
    json: bool,
    model: super::ModelChoice,
) -> Result<()> {
    let images = load_all(&[a.to_path_buf(), b.to_path_buf()])?;
    let threads = crate::model::student::default_threads();
    let (emb, model_threshold) =
        embed_with(model, weights, &images, super::device::Device::Cpu, threads)?;
    let cos = ops::cosine(emb.row(0), emb.row(1))?;
    let t = threshold.unwrap_or(model_threshold);
    let same = cos >= t;
    if json {
        println!(
            "{}",
            serde_json::json!({"cosine": cos, "threshold": t, "same": same})
        );
    } else {
        println!(
            "cosine {cos:.6} threshold {t} {}",
            if same { "same" } else { "different" }
        );
    }
    Ok(())
}

/// Embeds with the student or the teacher; also returns that model's cosine threshold.
fn embed_with(
    model: super::ModelChoice,
    weights: Option<PathBuf>,
    images: &[Rgb8],
    device: super::device::Device,
    threads: usize,
) -> Result<(crate::tensor::Tensor, f32)> {
    match model {
        super::ModelChoice::Student => {
            let net = StudentNet::load(default_weights(weights)?)?;
            let emb = match device {
                super::device::Device::Cpu => {
                    crate::embed::embed_rgb_threads(&net, cpu::kernels()?, images, threads)?
                }
                cuda => super::device::embed_rgb_on(cuda, &net, images)?,
            };
            Ok((emb, net.info.threshold))
        }
        super::ModelChoice::Teacher => {
            let emb = match device {
                super::device::Device::Cpu => {
                    let t = super::onnx::load_teacher(weights)?;
                    crate::embed::embed_rgb_teacher(&t, cpu::kernels()?, images)?
                }
                cuda => super::teacher_device::embed_teacher_on(cuda, weights, images)?,
            };
            Ok((emb, crate::model::teacher::TEACHER_THRESHOLD))
        }
    }
}
