//! Classification training of the student from scratch: one optimiser step on a batch, the epoch
//! loop over the loader with progress bar, CSV log, checkpoints, resume and clean interruption.
//! It composes autograd, optim and data; it must not hold kernels or loss formulas of its own.

pub mod checkpoint;
#[cfg(feature = "cuda")]
pub mod gpu;

use crate::autograd::loss::{margin_softmax, Margin};
use crate::autograd::student::{
    is_trainable, record_student, update_running_stats, BnBatchStats, Mode,
};
use crate::autograd::{BufferPool, Tape, Var};
use crate::cpu::Kernels;
use crate::data::augment::AugmentConfig;
use crate::data::degrade::DegradeConfig;
use crate::data::loader::{batches_per_epoch, Batch, Loader, LoaderConfig, Source};
use crate::error::{Error, Result};
use crate::model::student::{StudentInfo, StudentParams, EMBEDDING_SIZE};
use crate::optim::{clip_grad_norm, Decay, Optimizer, Rule, Schedule};
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Name of the class-centre matrix in checkpoints.
pub const CLASSIFIER: &str = "classifier.weight";

/// Which optimiser a run uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd,
    AdamW,
}

/// Everything that determines a run's result (besides the data).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub resolution: usize,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup_epochs: usize,
    pub optimizer: OptimizerKind,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Global gradient-norm clip, if any.
    pub clip: Option<f32>,
    pub margin: Margin,
    pub scale: f32,
    pub seed: u64,
    pub augment: AugmentConfig,
    pub degrade: DegradeConfig,
    /// Keep the class centres as they started (classification in a fixed target space).
    pub freeze_centres: bool,
    /// Probability of `augment::black_frame` after augmentation (black outside a random frame).
    pub black_frame: f32,
}

impl TrainConfig {
    /// Defaults for resolution `r`: SGD 0.1 with momentum 0.9, weight decay 5e-4, one warm-up
    /// epoch then cosine decay, CosFace s = 16, m = 0.2, standard augmentation and degradation.
    pub fn new(resolution: usize) -> Self {
        TrainConfig {
            resolution,
            epochs: 20,
            batch: 128,
            lr: 0.1,
            min_lr: 0.0,
            warmup_epochs: 1,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            clip: Some(5.0),
            margin: Margin::CosFace(0.2),
            scale: 16.0,
            seed: 0,
            augment: AugmentConfig::default(),
            degrade: DegradeConfig::new(resolution),
            freeze_centres: false,
            black_frame: 0.0,
        }
    }

    /// A one-line fingerprint of the settings; a checkpoint only resumes under the same one.
    pub fn fingerprint(&self) -> String {
        format!("{self:?}")
    }

    fn validate(&self) -> Result<()> {
        StudentInfo::new(self.resolution)?;
        if self.degrade.resolution != self.resolution {
            return Err(Error::InvalidArgument(format!(
                "degradation produces {}px faces but the student takes {}px",
                self.degrade.resolution, self.resolution
            )));
        }
        if self.epochs == 0 || self.batch < 2 {
            return Err(Error::InvalidArgument(
                "training needs at least 1 epoch and a batch of at least 2".into(),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "learning rate {} and scale {} must be positive",
                self.lr, self.scale
            )));
        }
        self.degrade.validate()
    }

    fn optimizer(&self) -> Result<Optimizer> {
        let rule = match self.optimizer {
            OptimizerKind::Sgd => Rule::Sgd {
                momentum: self.momentum,
            },
            OptimizerKind::AdamW => Rule::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        };
        Optimizer::new(rule, self.weight_decay)
    }

    /// The learning-rate schedule for a set of `len` images.
    pub fn schedule(&self, len: usize) -> Schedule {
        let per = batches_per_epoch(len, self.batch) as u64;
        Schedule {
            base_lr: self.lr,
            warmup: self.warmup_epochs as u64 * per,
            total: self.epochs as u64 * per,
            decay: Decay::Cosine {
                min_lr: self.min_lr,
            },
        }
    }
}

/// Everything a run carries from step to step; a checkpoint stores exactly this.
#[derive(Clone, Debug)]
pub struct TrainState {
    pub params: StudentParams,
    /// Class centres `[classes, 128]` (normalised inside the loss).
    pub classifier: Tensor,
    pub optim: Optimizer,
    /// The epoch in progress and the next batch index within it.
    pub epoch: usize,
    pub batch_index: usize,
    /// Optimiser steps taken.
    pub step: u64,
    /// Running sums over the epoch in progress: loss·faces, correct faces, faces.
    pub epoch_loss: f64,
    pub epoch_correct: usize,
    pub epoch_seen: usize,
    /// The last step's activation and gradient buffers, reused by the next (not saved).
    pub pool: BufferPool,
}

impl TrainState {
    /// A fresh run: He-initialised student, Gaussian class centres, empty optimiser.
    pub fn new(cfg: &TrainConfig, classes: usize) -> Result<Self> {
        cfg.validate()?;
        if classes < 2 {
            return Err(Error::InvalidArgument(format!(
                "classification needs at least 2 identities, the set has {classes}"
            )));
        }
        let mut info = StudentInfo::new(cfg.resolution)?;
        info.provenance = format!("bridge train from scratch, seed {}", cfg.seed);
        let params = StudentParams::random(info, cfg.seed);
        let mut rng = Rng::new(cfg.seed ^ 0x0C1A_55E5);
        let classifier = Tensor::new(
            &[classes, EMBEDDING_SIZE],
            (0..classes * EMBEDDING_SIZE)
                .map(|_| rng.normal())
                .collect(),
        )?;
        Ok(TrainState {
            params,
            classifier,
            optim: cfg.optimizer()?,
            epoch: 0,
            batch_index: 0,
            step: 0,
            epoch_loss: 0.0,
            epoch_correct: 0,
            epoch_seen: 0,
            pool: BufferPool::default(),
        })
    }
}

/// Loss and accuracy of one step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f32,
    pub correct: usize,
    pub faces: usize,
}

/// What a step optimises besides (or instead of) identity classification: a loss on the
/// student's unit embeddings that knows which samples of the source the batch holds. The
/// distillation objectives (feature mimic, relation) implement it; plain training uses
/// `Classification`.
pub trait Objective: Sync {
    /// Weight of the margin-softmax classification term (0 turns it off).
    fn class_weight(&self) -> f32;
    /// Adds this objective's loss for the embeddings `emb [n, 128]` of source samples
    /// `indices`, writing its gradient into `demb` (zeroed by the caller); returns the loss.
    fn embedding_loss(&self, emb: &[f32], indices: &[usize], demb: &mut [f32]) -> Result<f32>;
}

/// Classification only: the `bridge train` objective.
pub struct Classification;

impl Objective for Classification {
    fn class_weight(&self) -> f32 {
        1.0
    }

    fn embedding_loss(&self, _: &[f32], _: &[usize], _: &mut [f32]) -> Result<f32> {
        Ok(0.0)
    }
}

/// Whether a parameter gets weight decay: conv and linear weights do, BN and PReLU do not.
fn decays(name: &str) -> bool {
    name.ends_with("conv.weight") || name.ends_with("linear.weight") || name == CLASSIFIER
}

/// One forward, backward and optimiser step on `x [n, 3, r, r]` with `labels`, at rate `lr`.
pub fn train_step(
    k: &Kernels,
    cfg: &TrainConfig,
    state: &mut TrainState,
    x: Tensor,
    labels: &[usize],
    lr: f32,
) -> Result<StepStats> {
    let indices: Vec<usize> = (0..labels.len()).collect();
    objective_step(k, cfg, state, x, labels, &indices, lr, &Classification)
}

/// `train_step` under any objective; `indices` name the batch's samples in the source.
#[allow(clippy::too_many_arguments)]
pub fn objective_step(
    k: &Kernels,
    cfg: &TrainConfig,
    state: &mut TrainState,
    x: Tensor,
    labels: &[usize],
    indices: &[usize],
    lr: f32,
    objective: &dyn Objective,
) -> Result<StepStats> {
    let n = labels.len();
    if indices.len() != n {
        return Err(Error::Shape(format!(
            "{} sample indices for a batch of {n}",
            indices.len()
        )));
    }
    let mut tape = Tape::with_pool(k, std::mem::take(&mut state.pool));
    let graph = record_student(&mut tape, &state.params, x, Mode::Train)?;
    let head = classify_and_backward(
        &mut tape,
        graph.embedding,
        cfg,
        state,
        labels,
        indices,
        objective,
    )?;
    let mut grads: Vec<(String, Vec<f32>)> = Vec::new();
    for (name, v) in &graph.params {
        let g = tape.grad(*v).map(|t| t.data().to_vec());
        grads.push((
            name.clone(),
            g.unwrap_or_else(|| vec![0.0; tape.value(*v).numel()]),
        ));
    }
    let cg = tape.grad(head.centres).map(|t| t.data().to_vec());
    grads.push((
        CLASSIFIER.into(),
        cg.unwrap_or_else(|| vec![0.0; state.classifier.numel()]),
    ));
    state.pool = tape.into_pool();
    apply_gradients(cfg, state, grads, &graph.bn_stats, lr)?;
    Ok(StepStats {
        loss: head.loss,
        correct: head.correct,
        faces: n,
    })
}

/// What `classify_and_backward` leaves: the loss, the correct faces, and the class-centre leaf
/// (whose gradient the tape now holds).
struct HeadResult {
    loss: f32,
    correct: usize,
    centres: Var,
}

/// Everything of a step after the student's embedding `emb [n, 128]` (unit rows) is on the
/// tape: margin-softmax over the normalised class centres, the objective's embedding loss, and
/// the backward pass through the whole tape. Shared by the CPU and the GPU step, so both
/// compute the loss and its gradient with the same code.
fn classify_and_backward(
    tape: &mut Tape,
    emb: Var,
    cfg: &TrainConfig,
    state: &TrainState,
    labels: &[usize],
    indices: &[usize],
    objective: &dyn Objective,
) -> Result<HeadResult> {
    let n = labels.len();
    let classes = state.classifier.shape()[0];
    let centres = tape.leaf(state.classifier.clone(), true);
    let unit_centres = tape.l2_normalize(centres)?;
    let cos = tape.linear(emb, unit_centres)?;
    let mut dcos = vec![0.0f32; n * classes];
    let (class_loss, correct) = margin_softmax(
        tape.value(cos).data(),
        n,
        classes,
        labels,
        cfg.scale as f64,
        cfg.margin,
        &mut dcos,
    )?;
    let wc = objective.class_weight();
    dcos.iter_mut().for_each(|g| *g *= wc);
    let mut demb = vec![0.0f32; n * EMBEDDING_SIZE];
    let extra = objective.embedding_loss(tape.value(emb).data(), indices, &mut demb)?;
    let loss = wc * class_loss + extra;
    if extra != 0.0 || demb.iter().any(|g| *g != 0.0) {
        tape.add_grad(emb, Tensor::new(&[n, EMBEDDING_SIZE], demb)?)?;
    }
    if !loss.is_finite() {
        return Err(Error::parameter(
            "lr",
            format!(
                "training diverged at step {} (loss {loss}); lower `lr`",
                state.step
            ),
        ));
    }
    tape.backward(cos, Tensor::new(&[n, classes], dcos)?)?;
    Ok(HeadResult {
        loss,
        correct,
        centres,
    })
}

/// The end of every step: clips `grads` (the trainable parameters in name order, then the
/// classifier), runs the optimiser, folds the batch statistics into the running ones and
/// counts the step.
fn apply_gradients(
    cfg: &TrainConfig,
    state: &mut TrainState,
    mut grads: Vec<(String, Vec<f32>)>,
    bn_stats: &[BnBatchStats],
    lr: f32,
) -> Result<()> {
    if cfg.freeze_centres {
        // Fixed centres: their gradient neither moves them nor counts towards the clip.
        if let Some((_, cg)) = grads.last_mut() {
            cg.fill(0.0);
        }
    }
    if let Some(max) = cfg.clip {
        let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|(_, g)| g.as_mut_slice()).collect();
        clip_grad_norm(&mut views, max);
    }
    {
        let mut updates: Vec<(&str, &mut [f32], &[f32], bool)> = Vec::new();
        let mut grad_iter = grads.iter();
        for (name, t) in state.params.tensors.iter_mut() {
            if !is_trainable(name) {
                continue;
            }
            let (gname, g) = grad_iter.next().ok_or_else(|| {
                Error::Shape("gradient list is shorter than the parameters".into())
            })?;
            if gname != name || g.len() != t.numel() {
                return Err(Error::Shape(format!(
                    "gradient `{gname}` ({} values) does not match parameter `{name}`",
                    g.len()
                )));
            }
            updates.push((name.as_str(), t.data_mut(), g.as_slice(), decays(name)));
        }
        let (_, cg) = grad_iter
            .next()
            .ok_or_else(|| Error::Shape("classifier gradient missing".into()))?;
        if !cfg.freeze_centres {
            updates.push((CLASSIFIER, state.classifier.data_mut(), cg.as_slice(), true));
        }
        state.optim.step(&mut updates, lr)?;
    }
    update_running_stats(&mut state.params, bn_stats)?;
    state.step += 1;
    Ok(())
}

/// Where a run writes, and how it may be stopped early.
pub struct RunOptions {
    /// Checkpoint file (written at each epoch end and on interruption).
    pub checkpoint: PathBuf,
    /// Per-epoch CSV log.
    pub log_csv: Option<PathBuf>,
    /// Set (e.g. by Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    pub progress: bool,
    /// Stop after this many steps in this call (tests use it to simulate an interruption).
    pub max_steps: Option<u64>,
    pub workers: usize,
    /// Where the network's forward and backward run.
    pub backend: Backend,
    /// Called at the end of every epoch with the state after its last step; the named values
    /// it returns (held-out metrics, say) are added to the epoch's summary and CSV line.
    pub epoch_hook: Option<EpochHook>,
}

/// Measures a model at the end of an epoch: named values for the log.
pub type EpochHook = Arc<dyn Fn(&TrainState) -> Result<Vec<(String, f64)>> + Send + Sync>;

/// Where a step's network arithmetic runs. The loss, optimiser and data stay on the CPU either
/// way (they are a small share of the work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    #[default]
    Cpu,
    /// GPU `N` (feature `cuda`).
    Cuda(usize),
}

/// The opened backend of a run.
enum Stepper {
    Cpu,
    #[cfg(feature = "cuda")]
    Gpu(Box<gpu::GpuTrainer>),
}

impl Stepper {
    fn open(backend: Backend) -> Result<Stepper> {
        match backend {
            Backend::Cpu => Ok(Stepper::Cpu),
            #[cfg(feature = "cuda")]
            Backend::Cuda(ordinal) => Ok(Stepper::Gpu(Box::new(gpu::GpuTrainer::open(ordinal)?))),
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda(_) => Err(Error::Cuda(
                "this binary was built without CUDA support; rebuild with `cargo build --release --features cuda` or use --device cpu"
                    .into(),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        k: &Kernels,
        cfg: &TrainConfig,
        state: &mut TrainState,
        x: Tensor,
        labels: &[usize],
        indices: &[usize],
        lr: f32,
        objective: &dyn Objective,
    ) -> Result<StepStats> {
        match self {
            Stepper::Cpu => objective_step(k, cfg, state, x, labels, indices, lr, objective),
            #[cfg(feature = "cuda")]
            Stepper::Gpu(g) => g.step(k, cfg, state, x, labels, indices, lr, objective),
        }
    }
}

/// Checks that `backend` can run (for the CLI, before it loads any data): opens the GPU, or
/// says in one line why it cannot.
pub fn check_backend(backend: Backend) -> Result<()> {
    Stepper::open(backend).map(|_| ())
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Finished,
    Interrupted,
}

/// One finished epoch.
#[derive(Clone, Debug)]
pub struct EpochSummary {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f32,
    pub faces_per_sec: f64,
    /// What the run's epoch hook measured, in its order.
    pub extra: Vec<(String, f64)>,
}

/// Runs (or continues) training until `cfg.epochs` are done or it is stopped; returns how it
/// ended and the epochs it completed in this call.
pub fn run(
    k: &Kernels,
    cfg: &TrainConfig,
    state: &mut TrainState,
    source: Arc<Source>,
    opts: &RunOptions,
) -> Result<(RunOutcome, Vec<EpochSummary>)> {
    run_objective(k, cfg, state, source, opts, &Classification)
}

/// `run` under any objective (distillation uses this with its mimic targets).
pub fn run_objective(
    k: &Kernels,
    cfg: &TrainConfig,
    state: &mut TrainState,
    source: Arc<Source>,
    opts: &RunOptions,
    objective: &dyn Objective,
) -> Result<(RunOutcome, Vec<EpochSummary>)> {
    cfg.validate()?;
    if source.classes() > state.classifier.shape()[0] {
        return Err(Error::InvalidArgument(format!(
            "the set has {} identities but the run was started with {}",
            source.classes(),
            state.classifier.shape()[0]
        )));
    }
    let mut stepper = Stepper::open(opts.backend)?;
    let per_epoch = batches_per_epoch(source.len(), cfg.batch);
    let schedule = cfg.schedule(source.len());
    let total = (cfg.epochs * per_epoch) as u64;
    let loader = Loader::spawn(
        source.clone(),
        LoaderConfig {
            batch: cfg.batch,
            seed: cfg.seed,
            augment: cfg.augment.clone(),
            black_frame: cfg.black_frame,
            degrade: cfg.degrade.clone(),
            normalization: state.params.info.normalization,
            prefetch: 2,
            workers: opts.workers.max(1),
        },
        state.epoch,
        state.batch_index,
        cfg.epochs,
    )?;
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  epoch {prefix}  {msg}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(state.step);
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut summaries = Vec::new();
    let mut steps_here = 0u64;
    let mut epoch_clock = Instant::now();
    let mut epoch_faces = 0usize;
    while state.epoch < cfg.epochs {
        if opts.stop.load(Ordering::Relaxed) || opts.max_steps.is_some_and(|m| steps_here >= m) {
            checkpoint::save(&opts.checkpoint, cfg, state)?;
            bar.abandon_with_message("interrupted; checkpoint saved");
            return Ok((RunOutcome::Interrupted, summaries));
        }
        let Batch {
            x,
            labels,
            indices,
            epoch,
            index,
        } = loader
            .next_batch()
            .ok_or_else(|| Error::InvalidArgument("the data loader stopped early".into()))??;
        if (epoch, index) != (state.epoch, state.batch_index) {
            return Err(Error::InvalidArgument(format!(
                "loader produced batch {index} of epoch {epoch}, expected {} of {}",
                state.batch_index, state.epoch
            )));
        }
        let lr = schedule.lr(state.step);
        let s = stepper.step(k, cfg, state, x, &labels, &indices, lr, objective)?;
        steps_here += 1;
        epoch_faces += s.faces;
        state.epoch_loss += s.loss as f64 * s.faces as f64;
        state.epoch_correct += s.correct;
        state.epoch_seen += s.faces;
        state.batch_index += 1;
        let fps = epoch_faces as f64 / epoch_clock.elapsed().as_secs_f64().max(1e-9);
        bar.set_prefix(format!("{}/{}", state.epoch + 1, cfg.epochs));
        bar.set_message(format!("loss {:.4}  {fps:.0} faces/s", s.loss));
        bar.inc(1);
        if state.batch_index == per_epoch {
            let summary = EpochSummary {
                epoch: state.epoch,
                loss: state.epoch_loss / state.epoch_seen.max(1) as f64,
                accuracy: state.epoch_correct as f64 / state.epoch_seen.max(1) as f64,
                lr,
                faces_per_sec: fps,
                extra: Vec::new(),
            };
            state.epoch += 1;
            state.batch_index = 0;
            state.epoch_loss = 0.0;
            state.epoch_correct = 0;
            state.epoch_seen = 0;
            let mut summary = summary;
            if let Some(hook) = &opts.epoch_hook {
                summary.extra = hook(state)?;
            }
            if let Some(csv) = &opts.log_csv {
                checkpoint::append_csv(csv, &summary)?;
            }
            checkpoint::save(&opts.checkpoint, cfg, state)?;
            summaries.push(summary);
            epoch_clock = Instant::now();
            epoch_faces = 0;
        }
    }
    bar.finish_with_message("done");
    Ok((RunOutcome::Finished, summaries))
}

#[cfg(test)]
mod tests;
