//! `bridge train`: the "from scratch" classification baseline on an ImageFolder set. Parses
//! options into a `TrainConfig`, wires Ctrl-C to a clean stop, and saves the student; no maths.

use super::device::Device;
use crate::autograd::loss::Margin;
use crate::cpu;
use crate::data::augment::AugmentConfig;
use crate::data::degrade::{DegradeConfig, Resample};
use crate::data::folder::ImageFolder;
use crate::data::loader::Source;
use crate::error::{Error, Result};
use crate::train::{
    self, checkpoint, Backend, OptimizerKind, RunOptions, RunOutcome, TrainConfig, TrainState,
};
use crate::weights::StoreDtype;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LossArg {
    Softmax,
    Cosface,
    Arcface,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimArg {
    Sgd,
    Adamw,
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

/// Options of `bridge train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// ImageFolder set: one sub-folder per identity holding aligned face chips (e.g. 112×112).
    #[arg(long)]
    pub data: PathBuf,
    /// Student input side in pixels, 8 to 32.
    #[arg(long, default_value_t = 16)]
    pub resolution: usize,
    /// Where to write the trained student (.safetensors). The checkpoint is OUT.ckpt and the
    /// per-epoch log OUT.csv.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Peak learning rate (after warm-up).
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    #[arg(long, default_value_t = 1)]
    pub warmup_epochs: usize,
    #[arg(long, value_enum, default_value_t = OptimArg::Sgd)]
    pub optimizer: OptimArg,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 5.0)]
    pub clip: f32,
    #[arg(long, value_enum, default_value_t = LossArg::Cosface)]
    pub loss: LossArg,
    /// Margin of CosFace (cosine) or ArcFace (radians).
    #[arg(long, default_value_t = 0.2)]
    pub margin: f64,
    /// Logit scale of the normalised softmax.
    #[arg(long, default_value_t = 16.0)]
    pub scale: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run saved in OUT.ckpt (same options required).
    #[arg(long)]
    pub resume: bool,
    /// Threads preparing each batch (decode, augment, degrade); the kernels use one.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Largest random shift in HR pixels (0: none).
    #[arg(long, default_value_t = 4)]
    pub max_shift: usize,
    /// Smallest random crop as a fraction of the side (1: none).
    #[arg(long, default_value_t = 0.9)]
    pub min_crop: f32,
    #[arg(long)]
    pub no_flip: bool,
    /// Colour jitter amount for brightness, contrast and saturation (0: none).
    #[arg(long, default_value_t = 0.2)]
    pub jitter: f32,
    #[command(flatten)]
    pub degrade: DegradeArgs,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Where the network's forward and backward run: cpu, cuda or cuda:N (feature `cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        let mut c = TrainConfig::new(self.resolution);
        c.epochs = self.epochs;
        c.batch = self.batch;
        c.lr = self.lr;
        c.warmup_epochs = self.warmup_epochs;
        c.optimizer = match self.optimizer {
            OptimArg::Sgd => OptimizerKind::Sgd,
            OptimArg::Adamw => OptimizerKind::AdamW,
        };
        c.weight_decay = self.weight_decay;
        c.clip = (self.clip > 0.0).then_some(self.clip);
        c.margin = match self.loss {
            LossArg::Softmax => Margin::None,
            LossArg::Cosface => Margin::CosFace(self.margin),
            LossArg::Arcface => Margin::ArcFace(self.margin),
        };
        c.scale = self.scale;
        c.seed = self.seed;
        c.augment = AugmentConfig {
            max_shift: self.max_shift,
            min_crop: self.min_crop,
            flip: !self.no_flip,
            brightness: self.jitter,
            contrast: self.jitter,
            saturation: self.jitter,
            grayscale: 0.0,
        };
        c.degrade = self.degrade.config(self.resolution);
        c
    }
}

pub(super) fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Runs `bridge train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let k = cpu::kernels()?;
    let backend = backend(&args.device)?;
    let cfg = args.config();
    let folder = ImageFolder::open(&args.data)?;
    let source = Arc::new(Source::Folder(folder));
    let mut state = start_or_resume(&args.out, &cfg, args.resume, || {
        TrainState::new(&cfg, source.classes())
    })?;
    run_to_file(
        k,
        &cfg,
        &mut state,
        source,
        &args.out,
        args.threads,
        args.quiet,
        &train::Classification,
        backend,
        None,
    )
    .map(|_| ())
}

/// Parses `--device` and checks, before any data is read, that it can train: the GPU opens, or
/// the one-line reason it cannot.
pub(super) fn backend(device: &str) -> Result<Backend> {
    let b = match Device::parse(device)? {
        Device::Cpu => Backend::Cpu,
        Device::Cuda(n) => Backend::Cuda(n),
    };
    train::check_backend(b)?;
    Ok(b)
}

/// The state to train from: OUT.ckpt when resuming (an error if it is missing), else `fresh()`.
pub(super) fn start_or_resume(
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
pub(super) fn run_to_file(
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

#[cfg(test)]
mod tests {
    use super::super::distill::DistillCommand;
    use super::super::{Cli, Command};
    use crate::data::degrade::{DegradeConfig, Resample};
    use clap::Parser;

    fn step2_degrade(extra: &[&str]) -> DegradeConfig {
        let mut args = vec!["bridge", "distill", "step2", "--bridge", "b", "--out", "o"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Distill(DistillCommand::Step2(a)) => a.opts.degrade.config(a.opts.resolution),
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Step 2 without degradation options degrades exactly as before they existed, and as
    /// `bridge train` does; the options reach the configuration.
    #[test]
    fn step2_degradation_defaults_and_overrides() {
        assert_eq!(step2_degrade(&[]), DegradeConfig::new(16));
        let train = match Cli::try_parse_from(["bridge", "train", "--data", "d", "--out", "o"])
            .unwrap()
            .command
        {
            Command::Train(a) => a.degrade.config(a.resolution),
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(train, DegradeConfig::new(train.resolution));
        let c = step2_degrade(&[
            "--resolution",
            "12",
            "--resample",
            "area,bicubic",
            "--blur-prob",
            "0",
            "--noise-sigma-max",
            "3",
            "--jpeg-quality-min",
            "60",
        ]);
        assert_eq!(c.resolution, 12);
        assert_eq!(c.methods, vec![Resample::Area, Resample::Bicubic]);
        assert_eq!(c.blur_prob, 0.0);
        assert_eq!(c.noise_sigma, (1.0, 3.0));
        assert_eq!(c.jpeg_quality, (60, 95));
        assert!(step2_degrade(&["--blur-prob", "1.5"]).validate().is_err());
    }
}
