//! Labelling for consistent distillation: record `k` of a store is a training image, augmented
//! (shift, crop, rotation, flip, colour, grey), sometimes mixed with another person's face
//! (mixup or a cutmix band), sometimes black-framed, then degraded to the student's resolution;
//! the teacher labels exactly that low-resolution input, bicubic-upsampled to 112 as `bridge
//! eval` shows low-resolution faces to it. Every draw is seeded by (seed, k), so a record can
//! be made again, and the store is written shard by shard so a killed run resumes. Also the
//! teacher's features of the untouched images, the high-resolution targets. It never trains.

use super::progress_bar;
use super::step1::teacher_input;
use crate::cpu::Kernels;
use crate::data::augment::{augment, black_frame, rotate, AugmentConfig};
use crate::data::degrade::{degrade_to_lr, DegradeConfig};
use crate::data::image::Rgb8;
use crate::data::resample::resize_bicubic;
use crate::data::store::{shard_done, write_shard, ShardData, FEATURE_DIM};
use crate::error::{Error, Result};
use crate::model::teacher::{Teacher, TEACHER_RESOLUTION};
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Mixes the record number into the seed; a constant of its own so a store's draws never
/// coincide with the views' or the loader's streams for the same seed.
const RECORD_STREAM: u64 = 0x5EED_1ABE_u64;

/// How records are made.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelConfig {
    /// Side of the student's input.
    pub resolution: usize,
    pub seed: u64,
    /// Shift, crop, flip, colour and grey of the image before anything else.
    pub augment: AugmentConfig,
    /// Largest in-plane rotation, in degrees either way.
    pub max_rotation: f32,
    /// Probability that a record mixes in another person's face (mixup or a cutmix band); the
    /// record keeps the main image's identity, the teacher labels the mixed pixels.
    pub mix_prob: f32,
    /// Probability of `augment::black_frame` (what alignment does near a photo's edge).
    pub black_frame: f32,
    /// How the face is degraded to `resolution`.
    pub degrade: DegradeConfig,
    /// Records per shard file.
    pub shard_size: usize,
}

impl LabelConfig {
    /// The recipe at `resolution` used by `scripts/train-weights.sh`: heavy augmentation,
    /// rotation up to 8°, no mixing, black frames one time in four, the default degradation.
    pub fn new(resolution: usize) -> Self {
        LabelConfig {
            resolution,
            seed: 0,
            augment: AugmentConfig::heavy(),
            max_rotation: 8.0,
            mix_prob: 0.0,
            black_frame: 0.25,
            degrade: DegradeConfig::new(resolution),
            shard_size: 2048,
        }
    }

    /// Checks every setting before any work; a bad value is an error naming the parameter.
    pub fn validate(&self) -> Result<()> {
        if self.degrade.resolution != self.resolution {
            return Err(Error::InvalidArgument(format!(
                "the degradation makes {}px faces but the store is for {}px",
                self.degrade.resolution, self.resolution
            )));
        }
        self.degrade.validate()?;
        for (name, p) in [
            ("mix probability", self.mix_prob),
            ("black-frame probability", self.black_frame),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::InvalidArgument(format!(
                    "{name} {p} must lie in 0..=1"
                )));
            }
        }
        if !(0.0..=45.0).contains(&self.max_rotation) {
            return Err(Error::InvalidArgument(format!(
                "maximum rotation {}° must lie in 0..=45",
                self.max_rotation
            )));
        }
        if self.shard_size == 0 {
            return Err(Error::InvalidArgument(
                "shard size must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// What a store's records depend on besides the data and the teacher (its shards carry it,
    /// and a resumed run must match it).
    pub fn identity(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("label_seed".into(), self.seed.to_string()),
            ("augment".into(), format!("{:?}", self.augment)),
            ("max_rotation".into(), self.max_rotation.to_string()),
            ("mix_prob".into(), self.mix_prob.to_string()),
            ("black_frame".into(), self.black_frame.to_string()),
            ("degrade".into(), format!("{:?}", self.degrade)),
            ("shard_size".into(), self.shard_size.to_string()),
        ])
    }
}

fn record_rng(seed: u64, k: usize) -> Rng {
    let mut mix = Rng::new(
        seed ^ RECORD_STREAM.rotate_left(29) ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    Rng::new(mix.next_u64())
}

/// Blends `b` into `a`: half the time mixup (a keeps 55–80% of the weight), otherwise a cutmix
/// band (20–45% of the side, across or down the face) of `b` pasted at the same place.
fn mix_faces(a: &Rgb8, b: &Rgb8, rng: &mut Rng) -> Rgb8 {
    let (w, h) = (a.width, a.height);
    let mut out = a.clone();
    if rng.uniform() < 0.5 {
        let keep = rng.range(0.55, 0.8);
        for (o, (&x, &y)) in out.pixels.iter_mut().zip(a.pixels.iter().zip(&b.pixels)) {
            *o = (keep * f32::from(x) + (1.0 - keep) * f32::from(y)).round() as u8;
        }
        return out;
    }
    let vertical = rng.uniform() < 0.5;
    let side = if vertical { w } else { h };
    let band = ((rng.range(0.2, 0.45) * side as f32).round() as usize).clamp(1, side);
    let start = rng.below(side - band + 1);
    for y in 0..h {
        for x in 0..w {
            let along = if vertical { x } else { y };
            if (start..start + band).contains(&along) {
                let i = (y * w + x) * 3;
                out.pixels[i..i + 3].copy_from_slice(&b.pixels[i..i + 3]);
            }
        }
    }
    out
}

/// Record `k`: the student's low-resolution input, its label and its (main) image, drawn from
/// the images `pool` of `images` (labelled by `labels`). Deterministic in (cfg, k).
pub fn record_input(
    images: &[Rgb8],
    labels: &[usize],
    pool: &[usize],
    cfg: &LabelConfig,
    k: usize,
) -> Result<(Rgb8, usize, usize)> {
    if pool.is_empty() {
        return Err(Error::EmptyInput("no images to label".into()));
    }
    let mut rng = record_rng(cfg.seed, k);
    let image = pool[rng.below(pool.len())];
    let mut face = augment(&images[image], &cfg.augment, &mut rng);
    if cfg.max_rotation > 0.0 {
        face = rotate(&face, rng.range(-cfg.max_rotation, cfg.max_rotation));
    }
    if cfg.mix_prob > 0.0 && rng.uniform() < cfg.mix_prob {
        // Another person's face, augmented on its own; a few tries find one in any real set.
        let mut other = pool[rng.below(pool.len())];
        for _ in 0..16 {
            if labels[other] != labels[image] {
                break;
            }
            other = pool[rng.below(pool.len())];
        }
        if labels[other] != labels[image] {
            let second = augment(&images[other], &cfg.augment, &mut rng);
            face = mix_faces(&face, &second, &mut rng);
        }
    }
    if cfg.black_frame > 0.0 && rng.uniform() < cfg.black_frame {
        face = black_frame(&face, &mut rng);
    }
    let lr = degrade_to_lr(&face, &cfg.degrade, &mut rng)?;
    Ok((lr, labels[image], image))
}

/// What the teacher sees of a low-resolution input: bicubic back to its side, as `bridge eval`
/// shows low-resolution faces to it.
pub fn teacher_view(lr: &Rgb8) -> Result<Rgb8> {
    resize_bicubic(lr, TEACHER_RESOLUTION, TEACHER_RESOLUTION)
}

/// One made record before the teacher labels it: its degraded input, identity label and source
/// image index.
type Made = (Rgb8, usize, usize);

/// What a labelling run did.
#[derive(Clone, Debug)]
pub struct LabelReport {
    pub records: usize,
    /// Records labelled in this call (the rest were already stored).
    pub labelled: usize,
    pub seconds: f64,
    /// Labelling rate of this call (view, degradation, upsampling, teacher, store).
    pub faces_per_sec: f64,
}

/// Labels records `0..count` into the store at `dir` (identity `identity`, which must already
/// include `cfg.identity()`), skipping the shards a previous run finished. The inputs of a chunk
/// are split over `threads` threads, each making its share's inputs and labelling them.
#[allow(clippy::too_many_arguments)]
pub fn label_store(
    k: &Kernels,
    teacher: &Teacher,
    images: &[Rgb8],
    labels: &[usize],
    pool: &[usize],
    cfg: &LabelConfig,
    count: usize,
    dir: &Path,
    identity: &BTreeMap<String, String>,
    threads: usize,
    progress: bool,
) -> Result<LabelReport> {
    cfg.validate()?;
    if count == 0 {
        return Err(Error::InvalidArgument(
            "the store needs at least 1 record".into(),
        ));
    }
    if pool.is_empty() {
        return Err(Error::EmptyInput(
            "the split holds no images to label".into(),
        ));
    }
    let threads = threads.max(1);
    let shards = count.div_ceil(cfg.shard_size);
    let bar = progress_bar(count as u64, "labelling", "inputs", progress);
    let start = Instant::now();
    let mut labelled = 0usize;
    for s in 0..shards {
        let first = s * cfg.shard_size;
        let n = cfg.shard_size.min(count - first);
        if shard_done(dir, s, identity, n)? {
            bar.inc(n as u64);
            continue;
        }
        let mut data = ShardData::default();
        // Chunks of 64 faces per thread keep the teacher's batches efficient and the progress
        // bar moving. Each thread makes its part's inputs and runs the teacher on them itself,
        // so no thread waits for the others between preparing and labelling (the preparation
        // of one thread overlaps the teacher of the other).
        let step = 64 * threads;
        for chunk_start in (first..first + n).step_by(step) {
            let chunk_end = (chunk_start + step).min(first + n);
            let ks: Vec<usize> = (chunk_start..chunk_end).collect();
            let per = ks.len().div_ceil(threads);
            let label_part = |part: &[usize]| -> Result<(Vec<Made>, Tensor)> {
                let mut records = Vec::with_capacity(part.len());
                let mut xs = Vec::new();
                for &r in part {
                    let (lr, label, image) = record_input(images, labels, pool, cfg, r)?;
                    let x = teacher_input(&teacher_view(&lr)?)?;
                    xs.extend_from_slice(x.data());
                    records.push((lr, label, image));
                }
                let x = Tensor::new(&[part.len(), 3, TEACHER_RESOLUTION, TEACHER_RESOLUTION], xs)?;
                Ok((records, teacher.forward_threads(k, &x, 1)?))
            };
            let made: Vec<Result<(Vec<Made>, Tensor)>> = if threads == 1 {
                vec![label_part(&ks)]
            } else {
                std::thread::scope(|sc| {
                    let handles: Vec<_> = ks
                        .chunks(per.max(1))
                        .map(|part| sc.spawn(move || label_part(part)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(Error::InvalidArgument("a labelling thread panicked".into()))
                            })
                        })
                        .collect()
                })
            };
            for part in made {
                let (records, feats) = part?;
                for (i, (lr, label, image)) in records.iter().enumerate() {
                    data.push(
                        lr,
                        &feats.data()[i * FEATURE_DIM..(i + 1) * FEATURE_DIM],
                        *label,
                        *image,
                    );
                }
            }
            labelled += ks.len();
            bar.inc(ks.len() as u64);
        }
        write_shard(dir, s, first, cfg.resolution, identity, &data)?;
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    Ok(LabelReport {
        records: count,
        labelled,
        seconds,
        faces_per_sec: labelled as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_face;

    fn faces() -> (Vec<Rgb8>, Vec<usize>) {
        let images: Vec<Rgb8> = (0..6)
            .map(|i| synthetic_face(i / 2, (i % 2) as i32, 0.0))
            .collect();
        (images, vec![0, 0, 1, 1, 2, 2])
    }

    #[test]
    fn records_are_deterministic_low_resolution_and_drawn_from_the_pool() {
        let (images, labels) = faces();
        let mut cfg = LabelConfig::new(12);
        cfg.mix_prob = 0.5;
        let pool = [0usize, 1, 4, 5];
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..40 {
            let (lr, label, image) = record_input(&images, &labels, &pool, &cfg, k).unwrap();
            assert_eq!((lr.width, lr.height), (12, 12));
            assert!(pool.contains(&image), "record {k} used image {image}");
            assert_eq!(label, labels[image]);
            assert_eq!(
                record_input(&images, &labels, &pool, &cfg, k).unwrap().0,
                lr,
                "record {k} must be made the same way again"
            );
            seen.insert(image);
        }
        assert_eq!(seen.len(), 4, "40 draws should reach all 4 pool images");
        let other = LabelConfig {
            seed: 1,
            ..cfg.clone()
        };
        assert!((0..8).any(|k| {
            record_input(&images, &labels, &pool, &other, k).unwrap().0
                != record_input(&images, &labels, &pool, &cfg, k).unwrap().0
        }));
        assert!(record_input(&images, &labels, &[], &cfg, 0).is_err());
        let bad = LabelConfig {
            mix_prob: 1.5,
            ..cfg.clone()
        };
        assert!(bad.validate().is_err());
        let wrong = LabelConfig {
            resolution: 16,
            ..cfg
        };
        assert!(wrong.validate().is_err(), "degradation is for 12 px");
    }

    /// A small random stand-in for SFace with its input and output shapes: an 8×8/8 conv
    /// (3→4 channels, 14×14 map), flattened, then a linear layer to 128.
    fn tiny_teacher() -> Teacher {
        use crate::model::graph::{Graph, GraphInput, GraphSpec, Node, Op};
        let mut rng = Rng::new(7);
        let mut t = |shape: &[usize], scale: f32| {
            let n = shape.iter().product();
            Tensor::new(shape, (0..n).map(|_| scale * rng.normal()).collect()).unwrap()
        };
        let params = BTreeMap::from([
            ("w".to_string(), t(&[4, 3, 8, 8], 0.01)),
            ("l".to_string(), t(&[128, 4 * 14 * 14], 0.05)),
        ]);
        let node = |name: &str, op, input: &str, output: &str| Node {
            name: name.into(),
            op,
            inputs: vec![input.into()],
            output: output.into(),
        };
        let spec = GraphSpec {
            inputs: vec![GraphInput {
                name: "x".into(),
                shape: vec![None, Some(3), Some(112), Some(112)],
            }],
            outputs: vec!["e".into()],
            nodes: vec![
                node(
                    "c",
                    Op::Conv {
                        weight: "w".into(),
                        bias: None,
                        stride: [8, 8],
                        pads: [0; 4],
                        groups: 1,
                    },
                    "x",
                    "y",
                ),
                node("f", Op::Flatten { axis: 1 }, "y", "z"),
                node(
                    "l",
                    Op::Linear {
                        weight: "l".into(),
                        bias: None,
                    },
                    "z",
                    "e",
                ),
            ],
        };
        Teacher::from_graph(Graph {
            spec,
            params,
            metadata: BTreeMap::new(),
        })
        .unwrap()
    }

    /// The consistency the method rests on: every stored feature is the teacher's feature of
    /// exactly the stored input (bicubic to 112), and a run killed between shards resumes
    /// without relabelling what is stored and ends with the same store.
    #[test]
    fn stored_targets_are_the_teachers_features_of_the_stored_inputs_and_resume_is_exact() {
        use crate::data::store::{shard_path, LabelStore};
        let k = crate::cpu::kernels().unwrap();
        let teacher = tiny_teacher();
        let images: Vec<Rgb8> = (0..6)
            .map(|i| {
                let f = synthetic_face(i / 2, (i % 2) as i32, 0.0);
                Rgb8 {
                    width: 112,
                    height: 112,
                    pixels: crate::data::image::resize_area(&f, 112, 112)
                        .into_iter()
                        .map(|v| v.round() as u8)
                        .collect(),
                }
            })
            .collect();
        let labels = vec![0, 0, 1, 1, 2, 2];
        let pool: Vec<usize> = (0..6).collect();
        let mut cfg = LabelConfig::new(16);
        cfg.shard_size = 4;
        cfg.mix_prob = 0.3;
        let ident = cfg.identity();
        let dir = tempfile::tempdir().unwrap();
        let run = |count| {
            label_store(
                k,
                &teacher,
                &images,
                &labels,
                &pool,
                &cfg,
                count,
                dir.path(),
                &ident,
                2,
                false,
            )
            .unwrap()
        };
        let first = run(10);
        assert_eq!((first.records, first.labelled), (10, 10));
        let store = LabelStore::open(dir.path()).unwrap();
        assert_eq!((store.len(), store.resolution()), (10, 16));
        for r in 0..10 {
            let input = store.input(r).unwrap();
            let (want_input, label, image) =
                record_input(&images, &labels, &pool, &cfg, r).unwrap();
            assert_eq!(input, want_input, "record {r} is not its own input");
            assert_eq!(store.label(r).unwrap(), label);
            assert_eq!(store.image(r).unwrap(), image);
            let x = teacher_input(&teacher_view(&input).unwrap()).unwrap();
            let want = teacher
                .forward_threads(k, &Tensor::stack(&[x]).unwrap(), 1)
                .unwrap();
            let mut got = Vec::new();
            store.feature_into(r, &mut got).unwrap();
            for (a, b) in got.iter().zip(want.data()) {
                assert!(
                    (a - b).abs() < 2e-3,
                    "record {r}: stored {a} vs teacher {b}"
                );
            }
        }
        // Every record's contents (the shard files' header order is a hash map's).
        let snapshot = |st: &LabelStore| -> Vec<(Rgb8, Vec<f32>, usize, usize)> {
            (0..st.len())
                .map(|r| {
                    let mut f = Vec::new();
                    st.feature_into(r, &mut f).unwrap();
                    (
                        st.input(r).unwrap(),
                        f,
                        st.label(r).unwrap(),
                        st.image(r).unwrap(),
                    )
                })
                .collect()
        };
        let before = snapshot(&store);
        drop(store);
        // A run killed after its second shard: the third is missing; resuming labels only it.
        std::fs::remove_file(shard_path(dir.path(), 2)).unwrap();
        let again = run(10);
        assert_eq!(
            again.labelled, 2,
            "only the missing shard's records are labelled"
        );
        assert!(
            snapshot(&LabelStore::open(dir.path()).unwrap()) == before,
            "the resumed store differs from the uninterrupted one"
        );
        // Extending the store relabels its short last shard and adds the new records.
        let more = run(14);
        assert_eq!(more.labelled, 6);
        assert_eq!(LabelStore::open(dir.path()).unwrap().len(), 14);
        // Another recipe in the same folder is refused.
        let other = LabelConfig {
            seed: 5,
            ..cfg.clone()
        };
        assert!(label_store(
            k,
            &teacher,
            &images,
            &labels,
            &pool,
            &other,
            4,
            dir.path(),
            &other.identity(),
            1,
            false
        )
        .is_err());
    }

    #[test]
    fn mixing_takes_pixels_from_both_faces() {
        let a = Rgb8 {
            width: 10,
            height: 10,
            pixels: vec![200; 300],
        };
        let b = Rgb8 {
            width: 10,
            height: 10,
            pixels: vec![0; 300],
        };
        let mut rng = Rng::new(3);
        for _ in 0..20 {
            let m = mix_faces(&a, &b, &mut rng);
            let from_a = m.pixels.iter().filter(|&&v| v == 200).count();
            let dark = m.pixels.iter().filter(|&&v| v < 200).count();
            assert!(dark > 0, "some of b must show");
            // Mixup keeps at least 55% of a everywhere; a band leaves at least 55% of a's pixels.
            assert!(
                from_a >= 165 || m.pixels.iter().all(|&v| v >= 110),
                "a must dominate: {from_a} pixels of a"
            );
        }
    }
}
