//! What several subcommands share: where the default student weights are, which model embeds,
//! the degradation options of training and evaluation, the `--device` choice for training, and
//! running a prepared training state to a file with its checkpoint and log. `commands.rs` only
//! dispatches; every subcommand imports these from here, never from another subcommand.

use super::device::Device;
use crate::cpu;
use crate::data::degrade::{DegradeConfig, Resample};
use crate::data::loader::Source;
use crate::error::{Error, Result};
use crate::train::{self, checkpoint, Backend, RunOptions, RunOutcome, TrainConfig, TrainState};
use crate::weights::StoreDtype;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The student weights to use: `--weights`, else `BRIDGE_WEIGHTS`, else
/// `weights/student.safetensors` in the current folder or the source tree.
pub fn default_weights(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Ok(p) = std::env::var("BRIDGE_WEIGHTS") {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    let local = PathBuf::from("weights/student.safetensors");
    if local.exists() {
        return Ok(local);
    }
    let in_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/student.safetensors");
    if in_tree.exists() {
        return Ok(in_tree);
    }
    Err(Error::MissingAsset(
        "no student weights: weights/student.safetensors does not exist yet; make a random one with \
         `bridge init --out weights/student.safetensors` or pass --weights FILE"
            .into(),
    ))
}

/// Which network embeds the faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelChoice {
    Student,
    Teacher,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ResampleArg {
    Area,
    Bilinear,
    Bicubic,
}

/// How training faces are degraded to low resolution (shared by `train` and `distill step2`).
/// The defaults are `DegradeConfig::new`: all three downsamplers, blur and noise half the
/// time, JPEG 30% of the time.
#[derive(Args, Debug, Clone)]
pub struct DegradeArgs {
    /// Downsamplers to choose among.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ResampleArg::Area, ResampleArg::Bilinear, ResampleArg::Bicubic])]
    pub resample: Vec<ResampleArg>,
    /// Probability of a Gaussian blur before downsampling (σ in input pixels, drawn between
    /// the two bounds below).
    #[arg(long, default_value_t = 0.5)]
    pub blur_prob: f32,
    #[arg(long, default_value_t = 0.5)]
    pub blur_sigma_min: f32,
    #[arg(long, default_value_t = 1.5)]
    pub blur_sigma_max: f32,
    /// Probability of Gaussian noise after downsampling (σ on the 0..255 scale).
    #[arg(long, default_value_t = 0.5)]
    pub noise_prob: f32,
    #[arg(long, default_value_t = 1.0)]
    pub noise_sigma_min: f32,
    #[arg(long, default_value_t = 6.0)]
    pub noise_sigma_max: f32,
    /// Probability of JPEG re-encoding at the end (quality drawn between the two bounds).
    #[arg(long, default_value_t = 0.3)]
    pub jpeg_prob: f32,
    #[arg(long, default_value_t = 40)]
    pub jpeg_quality_min: u8,
    #[arg(long, default_value_t = 95)]
    pub jpeg_quality_max: u8,
}

impl DegradeArgs {
    /// Whether every option is at its default (`DegradeConfig::new`).
    pub fn is_default(&self) -> bool {
        self.config(0) == DegradeConfig::new(0)
    }

    /// `config`, checked: a bad value is an error naming its option.
    pub fn validated(&self, resolution: usize) -> Result<DegradeConfig> {
        for (flag, p) in [
            ("--blur-prob", self.blur_prob),
            ("--noise-prob", self.noise_prob),
            ("--jpeg-prob", self.jpeg_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::InvalidArgument(format!(
                    "{flag} {p} is a probability, 0 to 1"
                )));
            }
        }
        let c = self.config(resolution);
        c.validate().map_err(|e| {
            Error::InvalidArgument(format!(
                "degradation options (--resample, --blur-sigma-*, --noise-sigma-*, --jpeg-quality-*): {}",
                e.to_string().trim_start_matches("invalid argument: ")
            ))
        })?;
        Ok(c)
    }

    /// The degradation to `resolution` × `resolution` these options describe.
    pub fn config(&self, resolution: usize) -> DegradeConfig {
        DegradeConfig {
            resolution,
            methods: self
                .resample
                .iter()
                .map(|r| match r {
                    ResampleArg::Area => Resample::Area,
                    ResampleArg::Bilinear => Resample::Bilinear,
                    ResampleArg::Bicubic => Resample::Bicubic,
                })
                .collect(),
            blur_prob: self.blur_prob,
            blur_sigma: (self.blur_sigma_min, self.blur_sigma_max),
            noise_prob: self.noise_prob,
            noise_sigma: (self.noise_sigma_min, self.noise_sigma_max),
            jpeg_prob: self.jpeg_prob,
            jpeg_quality: (self.jpeg_quality_min, self.jpeg_quality_max),
        }
    }
}

pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Parses `--device` and checks, before any data is read, that it can train: the GPU opens, or
/// the one-line reason it cannot.
pub fn backend(device: &str) -> Result<Backend> {
    let b = match Device::parse(device)? {
        Device::Cpu => Backend::Cpu,
        Device::Cuda(n) => Backend::Cuda(n),
    };
    train::check_backend(b)?;
    Ok(b)
}

/// The state to train from: OUT.ckpt when resuming (an error if it is missing), else `fresh()`.
pub fn start_or_resume(
    out: &Path,
    cfg: &TrainConfig,
    resume: bool,
    fresh: impl FnOnce() -> Result<TrainState>,
) -> Result<TrainState> {
    if !resume {
        return fresh();
    }
    let ckpt = with_suffix(out, ".ckpt");
    if !ckpt.exists() {
        return Err(Error::MissingAsset(format!(
            "no checkpoint {} to resume; run without --resume to start",
            ckpt.display()
        )));
    }
    checkpoint::load(&ckpt, cfg)
}

/// Runs a prepared state to the end (or to Ctrl-C, which saves OUT.ckpt) and writes the student
/// to `out` with the per-epoch log in OUT.csv. Returns false when interrupted.
#[allow(clippy::too_many_arguments)]
pub fn run_to_file(
    k: &cpu::Kernels,
    cfg: &TrainConfig,
    state: &mut TrainState,
    source: Arc<Source>,
    out: &Path,
    threads: usize,
    quiet: bool,
    objective: &dyn train::Objective,
    backend: Backend,
    epoch_hook: Option<train::EpochHook>,
) -> Result<bool> {
    let ckpt = with_suffix(out, ".ckpt");
    let csv = with_suffix(out, ".csv");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C only raises the flag; the loop checks it between steps and saves a checkpoint.
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .map_err(|e| Error::InvalidArgument(format!("cannot install the Ctrl-C handler: {e}")))?;
    eprintln!(
        "training {}px student on {} images of {} identities ({})",
        cfg.resolution,
        source.len(),
        source.classes(),
        match backend {
            Backend::Cpu => format!("{} kernels", k.isa.name()),
            Backend::Cuda(n) => format!("network on cuda:{n}"),
        }
    );
    let opts = RunOptions {
        checkpoint: ckpt.clone(),
        log_csv: Some(csv.clone()),
        stop,
        progress: !quiet,
        max_steps: None,
        workers: threads,
        backend,
        epoch_hook,
    };
    let (outcome, epochs) = train::run_objective(k, cfg, state, source, &opts, objective)?;
    for e in &epochs {
        let extra: String = e
            .extra
            .iter()
            .map(|(name, v)| format!(", {name} {v:.4}"))
            .collect();
        eprintln!(
            "epoch {}: loss {:.4}, accuracy {:.3}, {:.0} faces/s{extra}",
            e.epoch + 1,
            e.loss,
            e.accuracy,
            e.faces_per_sec
        );
    }
    match outcome {
        RunOutcome::Interrupted => {
            eprintln!(
                "stopped; checkpoint {} saved, continue with --resume",
                ckpt.display()
            );
            Ok(false)
        }
        RunOutcome::Finished => {
            state.params.save(out, StoreDtype::F32)?;
            println!(
                "wrote {} (log {}, checkpoint {})",
                out.display(),
                csv.display(),
                ckpt.display()
            );
            Ok(true)
        }
    }
}
