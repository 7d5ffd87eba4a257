//! Training throughput of the student: one forward + backward + SGD step per batch, on the
//! run-time kernel table, one thread. `cargo run --release --example train_throughput -- [R] [BATCH] [STEPS]`.
use bridgeface::autograd::student::{record_student, Mode};
use bridgeface::autograd::Tape;
use bridgeface::cpu;
use bridgeface::rng::Rng;
use bridgeface::train::{train_step, TrainConfig, TrainState};
use bridgeface::Tensor;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> bridgeface::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (r, batch, steps) = (
        *args.first().unwrap_or(&16),
        *args.get(1).unwrap_or(&256),
        *args.get(2).unwrap_or(&3),
    );
    let k = cpu::kernels()?;
    let mut cfg = TrainConfig::new(r);
    cfg.batch = batch;
    let mut state = TrainState::new(&cfg, 100)?;
    let mut rng = Rng::new(1);
    let x = Tensor::new(
        &[batch, 3, r, r],
        (0..batch * 3 * r * r).map(|_| rng.normal()).collect(),
    )?;
    let labels: Vec<usize> = (0..batch).map(|_| rng.below(100)).collect();
    // Split one step into forward and backward to show where the time goes.
    let t = Instant::now();
    let mut tape = Tape::new(k);
    let g = record_student(&mut tape, &state.params, x.clone(), Mode::Train)?;
    let fwd = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let dout = Tensor::new(&[batch, 128], vec![0.01; batch * 128])?;
    tape.backward(g.embedding, dout)?;
    let bwd = t.elapsed().as_secs_f64();
    drop(tape);
    println!(
        "r={r} batch={batch} isa={}: forward {fwd:.3}s, backward {bwd:.3}s",
        k.isa.name()
    );
    let mut best = f64::INFINITY;
    for _ in 0..steps {
        let t = Instant::now();
        train_step(k, &cfg, &mut state, x.clone(), &labels, 0.01)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "train step (forward + backward + SGD), best of {steps}: {best:.3}s = {:.1} faces/s",
        batch as f64 / best
    );
    Ok(())
}
