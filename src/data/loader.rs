//! The training loader: deterministic epoch order and per-sample randomness from the seed, the
//! decode → augment → degrade → normalise pipeline, and a thread that prepares batches ahead of
//! the trainer through a bounded channel. It must not run a model.

use super::augment::{augment, black_frame, AugmentConfig};
use super::degrade::{degrade_to_lr, DegradeConfig};
use super::folder::ImageFolder;
use super::image::{load_rgb8, to_input, Rgb8};
use super::store::LabelStore;
use super::views::ViewSet;
use crate::error::{Error, Result};
use crate::model::student::Normalization;
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where labelled high-resolution images come from.
pub enum Source {
    /// An ImageFolder set on disk, decoded on demand.
    Folder(ImageFolder),
    /// Images already in memory with their labels (tests, generated sets).
    Memory(Vec<(Rgb8, usize)>),
    /// The fixed views of a distillation run; sample `j` is view `j`.
    Views(ViewSet),
    /// Labelled low-resolution inputs (consistent distillation); sample `j` is record `j`,
    /// already augmented and degraded when it was labelled, so the loader only normalises it:
    /// the student sees exactly the pixels the teacher's feature was computed from.
    Store(LabelStore),
}

impl Source {
    pub fn len(&self) -> usize {
        match self {
            Source::Folder(f) => f.samples.len(),
            Source::Memory(v) => v.len(),
            Source::Views(v) => v.len(),
            Source::Store(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes (one more than the largest label).
    pub fn classes(&self) -> usize {
        match self {
            Source::Folder(f) => f.identities.len(),
            Source::Memory(v) => v.iter().map(|(_, l)| l + 1).max().unwrap_or(0),
            Source::Views(v) => v.classes(),
            Source::Store(s) => s.classes().unwrap_or(0),
        }
    }

    fn get(&self, i: usize) -> Result<(Rgb8, usize)> {
        match self {
            Source::Folder(f) => {
                let s = &f.samples[i];
                Ok((load_rgb8(&s.path)?, s.label))
            }
            Source::Memory(v) => Ok(v[i].clone()),
            Source::Views(v) => Ok((v.view(i), v.label(i))),
            Source::Store(s) => Ok((s.input(i)?, s.label(i)?)),
        }
    }
}

/// How batches are made.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch: usize,
    pub seed: u64,
    pub augment: AugmentConfig,
    /// Probability of `augment::black_frame` after `augment`.
    pub black_frame: f32,
    pub degrade: DegradeConfig,
    pub normalization: Normalization,
    /// Batches prepared ahead of the trainer.
    pub prefetch: usize,
    /// Threads decoding the samples of one batch.
    pub workers: usize,
}

/// One prepared batch.
#[derive(Debug)]
pub struct Batch {
    /// `[batch, 3, r, r]`, normalised.
    pub x: Tensor,
    pub labels: Vec<usize>,
    /// Which samples of the source these are (index into the source).
    pub indices: Vec<usize>,
    pub epoch: usize,
    /// Batch index within the epoch.
    pub index: usize,
}

/// Full batches per epoch (the remainder is dropped, since training batch-norm wants equal
/// batches); a set smaller than one batch gives one batch of all of it.
pub fn batches_per_epoch(len: usize, batch: usize) -> usize {
    if len >= batch {
        len / batch
    } else {
        usize::from(len > 0)
    }
}

/// The sample order of `epoch`: a Fisher–Yates shuffle seeded by (seed, epoch).
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut v: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// The random generator for the sample at `position` of `epoch`: independent of which thread
/// prepares it and of where a run was resumed.
fn sample_rng(seed: u64, epoch: usize, position: usize) -> Rng {
    let mut mix = Rng::new(seed.rotate_left(17) ^ ((epoch as u64) << 32) ^ position as u64);
    Rng::new(mix.next_u64())
}

fn prepare(
    source: &Source,
    cfg: &LoaderConfig,
    epoch: usize,
    pos: usize,
    idx: usize,
) -> Result<(Tensor, usize)> {
    let (img, label) = source.get(idx)?;
    if let Source::Store(store) = source {
        if store.resolution() != cfg.degrade.resolution {
            return Err(Error::InvalidArgument(format!(
                "the store at {} holds {}px inputs but the student takes {}px",
                store.dir().display(),
                store.resolution(),
                cfg.degrade.resolution
            )));
        }
        return Ok((
            to_input(&img, store.resolution(), &cfg.normalization)?,
            label,
        ));
    }
    let mut rng = sample_rng(cfg.seed, epoch, pos);
    let mut aug = augment(&img, &cfg.augment, &mut rng);
    if cfg.black_frame > 0.0 && rng.uniform() < cfg.black_frame {
        aug = black_frame(&aug, &mut rng);
    }
    let lr = degrade_to_lr(&aug, &cfg.degrade, &mut rng)?;
    Ok((
        to_input(&lr, cfg.degrade.resolution, &cfg.normalization)?,
        label,
    ))
}

/// Builds batch `index` of `epoch`, decoding its samples on `cfg.workers` threads.
pub fn make_batch(
    source: &Source,
    cfg: &LoaderConfig,
    epoch: usize,
    index: usize,
) -> Result<Batch> {
    let order = epoch_order(source.len(), cfg.seed, epoch);
    let size = cfg.batch.min(source.len());
    let start = index * size;
    let picks: Vec<(usize, usize)> = (start..start + size).map(|p| (p, order[p])).collect();
    let workers = cfg.workers.clamp(1, picks.len().max(1));
    let chunk = picks.len().div_ceil(workers);
    let results: Vec<Result<Vec<(Tensor, usize)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = picks
            .chunks(chunk.max(1))
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&(p, i)| prepare(source, cfg, epoch, p, i))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidArgument(
                        "a data-loading thread panicked".into(),
                    ))
                })
            })
            .collect()
    });
    let mut xs = Vec::with_capacity(size);
    let mut labels = Vec::with_capacity(size);
    for r in results {
        for (x, l) in r? {
            xs.push(x);
            labels.push(l);
        }
    }
    Ok(Batch {
        x: Tensor::stack(&xs)?,
        labels,
        indices: picks.iter().map(|&(_, i)| i).collect(),
        epoch,
        index,
    })
}

/// Prepares batches on its own thread, in order from (start_epoch, start_index) to the end of
/// `end_epoch − 1`, at most `prefetch` ahead of the consumer.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    pub fn spawn(
        source: Arc<Source>,
        cfg: LoaderConfig,
        start_epoch: usize,
        start_index: usize,
        end_epoch: usize,
    ) -> Result<Loader> {
        if source.is_empty() {
            return Err(Error::EmptyInput("the training set has no images".into()));
        }
        if cfg.batch == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        cfg.degrade.validate()?;
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let per_epoch = batches_per_epoch(source.len(), cfg.batch);
            for epoch in start_epoch..end_epoch {
                let first = if epoch == start_epoch { start_index } else { 0 };
                for index in first..per_epoch {
                    if stop_flag.load(Ordering::Relaxed) {
                        return;
                    }
                    let b = make_batch(&source, &cfg, epoch, index);
                    let failed = b.is_err();
                    if tx.send(b).is_err() || failed {
                        return;
                    }
                }
            }
        });
        Ok(Loader {
            rx,
            stop,
            handle: Some(handle),
        })
    }

    /// The next batch, or None when the range is exhausted.
    pub fn next_batch(&self) -> Option<Result<Batch>> {
        self.rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a producer waiting on a full channel, then wait for it.
        while self.rx.try_recv().is_ok() {}
        if let Some(h) = self.handle.take() {
            while !h.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_face;

    fn cfg(batch: usize, workers: usize) -> LoaderConfig {
        LoaderConfig {
            batch,
            seed: 11,
            augment: AugmentConfig::default(),
            black_frame: 0.0,
            degrade: DegradeConfig::new(8),
            normalization: Normalization::default(),
            prefetch: 2,
            workers,
        }
    }

    fn source() -> Arc<Source> {
        Arc::new(Source::Memory(
            (0..10)
                .map(|i| (synthetic_face(i, 0, 0.0), (i % 3) as usize))
                .collect(),
        ))
    }

    #[test]
    fn loader_thread_yields_the_same_batches_as_direct_construction() {
        let src = source();
        let loader = Loader::spawn(src.clone(), cfg(4, 1), 0, 1, 2).unwrap();
        let mut got = Vec::new();
        while let Some(b) = loader.next_batch() {
            got.push(b.unwrap());
        }
        // Epoch 0 from batch 1, then all of epoch 1: 10/4 = 2 batches each.
        assert_eq!(
            got.iter().map(|b| (b.epoch, b.index)).collect::<Vec<_>>(),
            [(0, 1), (1, 0), (1, 1)]
        );
        for b in &got {
            let direct = make_batch(&src, &cfg(4, 3), b.epoch, b.index).unwrap();
            assert_eq!(direct.x, b.x, "worker count changed the data");
            assert_eq!(direct.labels, b.labels);
            assert_eq!(direct.indices, b.indices);
            let want: Vec<usize> = b.indices.iter().map(|&i| (i % 10) % 3).collect();
            assert_eq!(b.labels, want, "indices must name the samples");
        }
        assert_ne!(got[1].x, got[2].x);
    }

    #[test]
    fn epoch_orders_are_permutations_that_differ() {
        let a = epoch_order(50, 1, 0);
        let b = epoch_order(50, 1, 1);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(50, 1, 0));
    }
}
