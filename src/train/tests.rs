//! Trainer tests: a hand-computed SGD step, learning a small synthetic set, and bit-exact resume.

use super::*;
use crate::autograd::loss::softmax_cross_entropy;
use crate::data::image::Rgb8;
use crate::data::synthetic::pattern_class_image;

#[test]
fn one_sgd_step_on_a_tiny_network_equals_the_hand_computed_step() {
    // Network: logits = x · Wᵀ (2 samples, 3 inputs, 2 classes), mean softmax cross-entropy.
    let k = Kernels::scalar();
    let x = [1.0f32, 2.0, -1.0, 0.5, -1.5, 2.0];
    let w0 = [0.1f32, -0.2, 0.3, -0.4, 0.5, 0.6];
    let labels = [0usize, 1];
    let mut tape = Tape::new(&k);
    let xv = tape.leaf(Tensor::new(&[2, 3], x.to_vec()).unwrap(), false);
    let wv = tape.leaf(Tensor::new(&[2, 3], w0.to_vec()).unwrap(), true);
    let logits = tape.linear(xv, wv).unwrap();
    let mut d = vec![0.0f32; 4];
    softmax_cross_entropy(tape.value(logits).data(), 2, 2, &labels, &mut d).unwrap();
    tape.backward(logits, Tensor::new(&[2, 2], d).unwrap())
        .unwrap();
    let grad = tape.grad(wv).unwrap().data().to_vec();
    let mut w = w0.to_vec();
    let mut opt = Optimizer::new(Rule::Sgd { momentum: 0.9 }, 0.01).unwrap();
    opt.step(&mut [("w", &mut w, &grad, true)], 0.5).unwrap();

    // By hand, in f64: z = x Wᵀ, p = softmax(z), dW = (p − y)ᵀ x / 2, W ← W − lr (dW + λ W).
    let mut expect = [0.0f64; 6];
    let mut dw = [0.0f64; 6];
    for b in 0..2 {
        let z: Vec<f64> = (0..2)
            .map(|o| {
                (0..3)
                    .map(|i| x[b * 3 + i] as f64 * w0[o * 3 + i] as f64)
                    .sum()
            })
            .collect();
        let e: Vec<f64> = z.iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        for o in 0..2 {
            let p = e[o] / s - if o == labels[b] { 1.0 } else { 0.0 };
            for i in 0..3 {
                dw[o * 3 + i] += p * x[b * 3 + i] as f64 / 2.0;
            }
        }
    }
    for i in 0..6 {
        expect[i] = w0[i] as f64 - 0.5 * (dw[i] + 0.01 * w0[i] as f64);
        assert!(
            (w[i] as f64 - expect[i]).abs() < 1e-6,
            "w[{i}] = {} but the hand step gives {}",
            w[i],
            expect[i]
        );
    }
}

/// 8 classes of generated patterns, `per_class` varied samples each.
fn pattern_set(per_class: usize, seed: u64) -> Vec<(Rgb8, usize)> {
    let mut v = Vec::new();
    for class in 0..8 {
        for i in 0..per_class {
            let sample = seed * 1_000_003 + (class * per_class + i) as u64;
            v.push((pattern_class_image(class as u64, sample), class));
        }
    }
    v
}

fn small_config(epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::new(8);
    cfg.epochs = epochs;
    cfg.batch = 32;
    cfg.lr = 0.05;
    cfg.seed = 3;
    cfg.degrade = DegradeConfig::new(8);
    cfg.degrade.jpeg_prob = 0.0;
    cfg.augment = AugmentConfig {
        max_shift: 2,
        min_crop: 1.0,
        flip: false,
        brightness: 0.1,
        contrast: 0.1,
        saturation: 0.0,
        grayscale: 0.0,
    };
    cfg
}

fn options(dir: &std::path::Path, max_steps: Option<u64>) -> RunOptions {
    RunOptions {
        checkpoint: dir.join("run.ckpt"),
        log_csv: Some(dir.join("run.csv")),
        stop: Arc::new(AtomicBool::new(false)),
        progress: false,
        max_steps,
        workers: 2,
        backend: super::Backend::Cpu,
        epoch_hook: None,
    }
}

#[test]
fn student_learns_eight_synthetic_classes() {
    let k = crate::cpu::kernels().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(6);
    cfg.batch = 16;
    cfg.lr = 0.1;
    let source = Arc::new(Source::Memory(pattern_set(16, 1)));
    let mut state = TrainState::new(&cfg, 8).unwrap();
    let (outcome, epochs) = run(k, &cfg, &mut state, source, &options(dir.path(), None)).unwrap();
    assert_eq!(outcome, RunOutcome::Finished);
    assert_eq!(epochs.len(), 6);
    let (first, last) = (&epochs[0], &epochs[epochs.len() - 1]);
    assert!(
        last.loss <= 0.5 * first.loss,
        "loss fell only from {} to {}",
        first.loss,
        last.loss
    );
    assert!(
        last.accuracy >= 0.9,
        "final training accuracy {}",
        last.accuracy
    );
    // The log has a header and one line per epoch; the trained student saves and folds.
    let csv = std::fs::read_to_string(dir.path().join("run.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7);
    let out = dir.path().join("student.safetensors");
    state
        .params
        .save(&out, crate::weights::StoreDtype::F32)
        .unwrap();
    crate::model::student::StudentNet::load(&out).unwrap();
}

#[test]
fn resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    let k = Kernels::scalar();
    let cfg = {
        let mut c = small_config(2);
        c.batch = 8;
        c
    };
    let data = pattern_set(3, 2);
    let whole_dir = tempfile::tempdir().unwrap();
    let mut whole = TrainState::new(&cfg, 8).unwrap();
    let src = Arc::new(Source::Memory(data.clone()));
    run(
        &k,
        &cfg,
        &mut whole,
        src.clone(),
        &options(whole_dir.path(), None),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = TrainState::new(&cfg, 8).unwrap();
    // Four steps: the whole three-step first epoch and one step of the second.
    let (o, _) = run(
        &k,
        &cfg,
        &mut first,
        src.clone(),
        &options(dir.path(), Some(4)),
    )
    .unwrap();
    assert_eq!(o, RunOutcome::Interrupted);
    drop(first);
    let mut resumed = checkpoint::load(&dir.path().join("run.ckpt"), &cfg).unwrap();
    assert_eq!(
        (resumed.epoch, resumed.batch_index, resumed.step),
        (1, 1, 4)
    );
    let (o, _) = run(&k, &cfg, &mut resumed, src, &options(dir.path(), None)).unwrap();
    assert_eq!(o, RunOutcome::Finished);

    assert_eq!(resumed.step, whole.step);
    for (name, t) in &whole.params.tensors {
        let r = resumed.params.get(name).unwrap();
        let same = t
            .data()
            .iter()
            .zip(r.data())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name} differs after resuming");
    }
    assert_eq!(whole.classifier, resumed.classifier);
    let (a, b) = (
        whole.optim.state_tensors().unwrap(),
        resumed.optim.state_tensors().unwrap(),
    );
    assert_eq!(a, b);

    // A checkpoint refuses to continue under other settings.
    let mut other = cfg.clone();
    other.lr = 0.01;
    assert!(checkpoint::load(&dir.path().join("run.ckpt"), &other).is_err());
}

#[test]
fn frozen_centres_stay_put_while_the_network_learns() {
    let k = Kernels::scalar();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small_config(1);
    cfg.batch = 8;
    let source = Arc::new(Source::Memory(pattern_set(2, 4)));
    let start = TrainState::new(&cfg, 8).unwrap();
    let train = |freeze: bool| {
        let mut c = cfg.clone();
        c.freeze_centres = freeze;
        let mut s = start.clone();
        let sub = dir.path().join(if freeze { "frozen" } else { "trained" });
        std::fs::create_dir_all(&sub).unwrap();
        run(&k, &c, &mut s, source.clone(), &options(&sub, Some(2))).unwrap();
        s
    };
    let frozen = train(true);
    let trained = train(false);
    assert_eq!(frozen.classifier.data(), start.classifier.data());
    assert_ne!(trained.classifier.data(), start.classifier.data());
    assert_eq!(frozen.step, 2);
    let moved = |s: &TrainState| {
        s.params
            .tensors
            .iter()
            .zip(start.params.tensors.iter())
            .any(|((_, a), (_, b))| a.data() != b.data())
    };
    assert!(moved(&frozen), "the network must still train");
}
