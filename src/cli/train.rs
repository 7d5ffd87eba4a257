//! `bridge train`: the "from scratch" classification baseline on an ImageFolder set. Parses
//! options into a `TrainConfig`, wires Ctrl-C to a clean stop, and saves the student; no maths.

use super::common::{backend, run_to_file, start_or_resume, DegradeArgs};
use crate::autograd::loss::Margin;
use crate::cpu;
use crate::data::augment::AugmentConfig;
use crate::data::folder::ImageFolder;
use crate::data::loader::Source;
use crate::error::Result;
use crate::train::{self, OptimizerKind, TrainConfig, TrainState};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
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
