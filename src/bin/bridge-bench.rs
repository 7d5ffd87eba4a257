//! `bridge-bench`: faces per second of the student (and, once it lands, the teacher) per ISA,
//! batch and thread count, with peak activation memory, weight bytes, the pointwise layers'
//! share of the measured FMA peak, and an optional onnxruntime peer run on the same model.
use bridgeface::cpu::packed::{self, Epilogue, PointwiseShape};
use bridgeface::cpu::{Isa, Kernels};
use bridgeface::model::student::{
    default_threads, StudentInfo, StudentNet, StudentParams, BLOCKS, FACES_PER_CHUNK,
};
use bridgeface::rng::Rng;
use bridgeface::{Error, Result, Tensor};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "bridge-bench",
    about = "Faces per second per ISA, batch and thread count"
)]
struct Args {
    /// Which network: student, teacher (SFace at 112×112), or train (one training step of the
    /// 16×16 student, batch 256 unless --batch; 1 thread).
    #[arg(long, default_value = "student")]
    model: String,
    /// One batch size (default: 1, 16 and 256; the teacher: 1 and 16).
    #[arg(long)]
    batch: Option<usize>,
    /// One thread count (default: 1 and all; the teacher: 1).
    #[arg(long)]
    threads: Option<usize>,
    /// One ISA (default: every ISA this CPU runs, scalar only at batch 1 and 16).
    #[arg(long)]
    isa: Option<String>,
    /// Student weights (default: a random 16×16 student, seed 0).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Timed runs per figure; the median is reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// An ONNX file of the same model (e.g. from `bridge export-onnx`): run onnxruntime on it
    /// (benches/ort_peer.py, python3 with pip's onnxruntime) at the same batch and threads, in
    /// this run, and print the ratio. `--compare-ort FILE` is the same option.
    #[arg(long, alias = "compare-ort")]
    onnx: Option<PathBuf>,
    /// With `--model train`: run the PyTorch peer (benches/torch_train_peer.py: the same
    /// network, CosFace loss over the same classes and SGD step, pip's torch on the CPU) at the
    /// same batch and thread count in this run, and print the ratio.
    #[arg(long)]
    compare_torch: bool,
    /// Print JSON (one object per case, one per line).
    #[arg(long)]
    json: bool,
    /// Skip the FMA-peak and pointwise-layer measurement.
    #[arg(long)]
    no_peak: bool,
    /// With `--model train`: skip the in-run baseline with the scalar backward kernels (for
    /// profiling the fast table alone).
    #[arg(long)]
    no_baseline: bool,
    /// cpu (default) or cuda[:N]: the GPU benchmark (batch 1, 256, 4096, 65536; CUDA events);
    /// with `--model train`, GPU training steps at batch 256 and 1024 (or --batch).
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("{}", bridgeface::cli::error_line(&e));
        std::process::exit(1);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `runs` calls of `f` after one warm-up call.
fn time_median(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// Shortest seconds of `runs` calls of `f` after one warm-up call: on a shared machine the
/// fastest run is the one least disturbed, so peak-fraction figures use it for both sides.
fn time_best(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn run(a: Args) -> Result<()> {
    if let d @ bridgeface::cli::device::Device::Cuda(_) =
        bridgeface::cli::device::Device::parse(&a.device)?
    {
        if a.model == "teacher" {
            use bridgeface::cli::teacher_device::{bench_cuda_teacher, TEACHER_CUDA_BENCH_BATCHES};
            let batches = a
                .batch
                .map_or(TEACHER_CUDA_BENCH_BATCHES.to_vec(), |b| vec![b]);
            return bench_cuda_teacher(d, a.weights.clone(), &batches, 20);
        }
        if a.model == "train" {
            let batches = a.batch.map_or(vec![256, 1024], |b| vec![b]);
            return bridgeface::cli::device::bench_train_cuda(d, &batches, a.runs.max(5));
        }
        return bridgeface::cli::device::bench_cuda(d, 20);
    }
    if a.runs < 5 {
        return Err(Error::InvalidArgument(
            "--runs must be at least 5 (figures are medians of 5 or more runs)".into(),
        ));
    }
    if a.model == "teacher" {
        return bench_teacher(&a);
    }
    if a.model == "train" {
        return bench_train(&a);
    }
    if a.model != "student" {
        return Err(Error::InvalidArgument(format!(
            "--model must be student, teacher or train, not `{}`",
            a.model
        )));
    }
    let net = match &a.weights {
        Some(p) => StudentNet::load(p)?,
        None => StudentParams::random(StudentInfo::new(16)?, 0).fold()?,
    };
    let isas = match &a.isa {
        Some(s) => {
            let isa = Isa::parse(s)?;
            Kernels::for_isa(isa)?;
            vec![isa]
        }
        None => Kernels::available_isas(),
    };
    let batches = a.batch.map_or(vec![1, 16, 256], |b| vec![b]);
    let all = default_threads();
    let threads = match a.threads {
        Some(0) => {
            return Err(Error::InvalidArgument(
                "--threads must be at least 1".into(),
            ))
        }
        Some(t) => vec![t],
        None if all > 1 => vec![1, all],
        None => vec![1],
    };
    if let Some(b) = a.batch {
        if b == 0 {
            return Err(Error::InvalidArgument("--batch must be at least 1".into()));
        }
    }
    let r = net.resolution();
    if !a.json {
        println!(
            "student {r}×{r}: weights {} bytes (packed f32), peak activations {} bytes/face/thread, {} MACs/face",
            net.packed.weight_bytes(),
            net.packed.activation_bytes_per_face(),
            bridgeface::model::student::macs_per_face(r)
        );
        println!(
            "{:<7} {:>6} {:>8} {:>12} {:>12} {:>8}",
            "isa", "batch", "threads", "faces/s", "ort faces/s", "ratio"
        );
    }
    let single = a.batch.is_some() && a.threads.is_some() && a.isa.is_some();
    for isa in &isas {
        let k = Kernels::for_isa(*isa)?;
        for &batch in &batches {
            // The scalar oracle is ~100× slower; keep the full sweep short.
            if *isa == Isa::Scalar && batch > 16 && !single {
                continue;
            }
            for &t in &threads {
                let fps = bench_student(&net, &k, batch, t, a.runs)?;
                let peer = match &a.onnx {
                    Some(p) => Some(ort_faces_per_sec(p, batch, t, a.runs, r)?),
                    None => None,
                };
                if a.json {
                    let mut o = serde_json::json!({
                        "model": "student", "resolution": r, "isa": isa.name(), "batch": batch,
                        "threads": t, "faces_per_sec": fps, "runs": a.runs,
                        "weight_bytes": net.packed.weight_bytes(),
                        "activation_bytes_per_face": net.packed.activation_bytes_per_face(),
                    });
                    if let Some(p) = peer {
                        o["ort_faces_per_sec"] = p.into();
                        o["ratio_vs_ort"] = (fps / p).into();
                    }
                    println!("{o}");
                } else {
                    let (ps, rs) = peer.map_or(("-".into(), "-".into()), |p| {
                        (format!("{p:.0}"), format!("{:.2}", fps / p))
                    });
                    println!(
                        "{:<7} {:>6} {:>8} {:>12.0} {:>12} {:>8}",
                        isa.name(),
                        batch,
                        t,
                        fps,
                        ps,
                        rs
                    );
                }
            }
        }
    }
    if !a.no_peak && !single {
        for isa in &isas {
            pointwise_vs_peak(&net, &Kernels::for_isa(*isa)?, a.runs, a.json)?;
        }
    }
    Ok(())
}

/// The SFace teacher (112×112, imported from the fetched ONNX file, or `--weights` as .onnx or an
/// imported .safetensors) on its packed graph plan, at `--batch` (default 1 and 16) and
/// `--threads` (default 1). The onnxruntime peer runs the same ONNX file at the same batch and
/// threads.
fn bench_teacher(a: &Args) -> Result<()> {
    use bridgeface::model::teacher::Teacher;
    let path = match &a.weights {
        Some(p) => p.clone(),
        None => bridgeface::assets::sface_onnx()?,
    };
    let graph = if path.extension().is_some_and(|e| e == "onnx") {
        bridgeface::onnx::import_file(&path)?
    } else {
        bridgeface::model::graph::Graph::load(&path)?
    };
    let teacher = Teacher::from_graph(graph)?;
    let isas = match &a.isa {
        Some(s) => vec![Isa::parse(s)?],
        None => Kernels::available_isas(),
    };
    let batches = a.batch.map_or(vec![1, 16], |b| vec![b]);
    let threads = a.threads.unwrap_or(1);
    for batch in batches {
        let mut rng = Rng::new(7);
        let x = Tensor::new(
            &[batch, 3, 112, 112],
            (0..batch * 3 * 112 * 112)
                .map(|_| rng.range(0.0, 255.0))
                .collect(),
        )?;
        let peer = match &a.onnx {
            Some(p) => Some(ort_faces_per_sec(p, batch, threads, a.runs, 112)?),
            None => None,
        };
        // The scalar oracle is ~10× slower: by default only at batch 1.
        for isa in isas
            .iter()
            .filter(|i| **i != Isa::Scalar || batch == 1 || a.isa.is_some())
        {
            let k = Kernels::for_isa(*isa)?;
            let secs = time_median(a.runs, || {
                teacher.forward_threads(&k, &x, threads).map(|_| ())
            })?;
            let fps = batch as f64 / secs;
            if a.json {
                let mut o = serde_json::json!({"model": "teacher", "resolution": 112, "isa": isa.name(),
                    "batch": batch, "threads": threads, "faces_per_sec": fps, "runs": a.runs});
                if let Some(p) = peer {
                    o["ort_faces_per_sec"] = p.into();
                    o["ratio_vs_ort"] = (fps / p).into();
                }
                println!("{o}");
            } else {
                let (ps, rs) = peer.map_or(("-".into(), "-".into()), |p| {
                    (format!("{p:.1}"), format!("{:.2}", fps / p))
                });
                println!("teacher 112×112 isa={:<7} batch {batch} threads {threads}: {fps:.1} faces/s; onnxruntime {ps}; ratio {rs}", isa.name());
            }
        }
    }
    Ok(())
}

fn random_faces(batch: usize, r: usize) -> Result<Tensor> {
    let mut rng = Rng::new(42);
    Tensor::new(
        &[batch, 3, r, r],
        (0..batch * 3 * r * r)
            .map(|_| rng.range(-1.0, 1.0))
            .collect(),
    )
}

fn bench_student(
    net: &StudentNet,
    k: &Kernels,
    batch: usize,
    threads: usize,
    runs: usize,
) -> Result<f64> {
    let x = random_faces(batch, net.resolution())?;
    let secs = time_median(runs, || net.forward_threads(k, &x, threads).map(|_| ()))?;
    Ok(batch as f64 / secs)
}

/// Runs benches/ort_peer.py (onnxruntime) on `onnx` at the same batch and threads.
fn ort_faces_per_sec(
    onnx: &Path,
    batch: usize,
    threads: usize,
    runs: usize,
    r: usize,
) -> Result<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ort_peer.py");
    let out = Command::new(peer_python())
        .arg(&script)
        .arg(onnx)
        .args(["--batch", &batch.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--runs", &runs.to_string()])
        .args(["--resolution", &r.to_string()])
        .output()
        .map_err(|e| {
            Error::MissingAsset(format!("cannot run python3 for the onnxruntime peer: {e}"))
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(Error::MissingAsset(format!(
            "the onnxruntime peer failed (pip install onnxruntime): {}",
            msg.lines().last().unwrap_or("no message")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).map_err(|_| {
        Error::MissingAsset(format!("the onnxruntime peer printed no JSON: {text}"))
    })?;
    v["faces_per_sec"]
        .as_f64()
        .ok_or_else(|| Error::MissingAsset("the onnxruntime peer printed no faces_per_sec".into()))
}

/// Measures the single-core FMA peak with the table's register-only probe, then each student
/// pointwise layer alone (one thread, one chunk of faces, as `forward` runs it) against it.
/// Both sides are best-of-`3·runs` times (see `time_best`).
fn pointwise_vs_peak(net: &StudentNet, k: &Kernels, runs: usize, json: bool) -> Result<()> {
    let iters = if k.isa == Isa::Scalar {
        200_000
    } else {
        2_000_000
    };
    let mut sink = 0.0f32;
    let secs = time_best(3 * runs, || {
        sink += (k.fma_probe)(iters);
        Ok(())
    })?;
    let peak = 2.0 * (k.fma_probe_chains * 16 * iters) as f64 / secs / 1e9;
    let (mut flops, mut time) = (0.0f64, 0.0f64);
    let mut side = net.resolution();
    let mut layers = Vec::new();
    let mut rng = Rng::new(3);
    for (spec, blk) in BLOCKS.iter().zip(&net.packed.blocks) {
        side = (side + 2 - 3) / spec.stride + 1;
        let s = PointwiseShape {
            pixels: FACES_PER_CHUNK * side * side,
            c_in: spec.c_in,
            c_out: spec.c_out,
        };
        let x: Vec<f32> = (0..packed::padded(s.c_in) * s.pixels)
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        let mut y = vec![0.0f32; packed::padded(s.c_out) * s.pixels];
        let ep = Epilogue {
            bias: &blk.pw.bias,
            prelu: blk.pw.prelu.as_deref(),
            residual: None,
        };
        let reps = if k.isa == Isa::Scalar { 1 } else { 20 };
        let t = time_best(3 * runs, || {
            for _ in 0..reps {
                (k.pointwise_packed)(&s, &x, &blk.pw.weight, &ep, &mut y);
            }
            Ok(())
        })? / reps as f64;
        let f = 2.0 * (s.pixels * s.c_in * s.c_out) as f64;
        flops += f;
        time += t;
        layers.push((spec.name, f / t / 1e9));
    }
    let total = flops / time / 1e9;
    if json {
        println!(
            "{}",
            serde_json::json!({"isa": k.isa.name(), "fma_peak_gflops": peak,
                "pointwise_gflops": total, "pointwise_fraction_of_peak": total / peak,
                "layers": layers.iter().map(|(n, g)| serde_json::json!({"layer": n, "gflops": g})).collect::<Vec<_>>(),
                "probe_checksum": sink})
        );
    } else {
        let per: Vec<String> = layers.iter().map(|(n, g)| format!("{n} {g:.1}")).collect();
        println!(
            "{}: FMA peak {peak:.1} GFLOP/s (1 thread); pointwise layers {total:.1} GFLOP/s = {:.0}% of peak [{}] (checksum {sink:.1})",
            k.isa.name(),
            100.0 * total / peak,
            per.join(", ")
        );
    }
    Ok(())
}

/// `--model train`: faces per second of one training step of a fresh 16×16 student (forward,
/// CosFace loss, backward, SGD update; 1 thread) on random faces with random labels of
/// `TRAIN_BENCH_CLASSES` identities, per ISA; also the forward alone (recording the tape), so `step − forward` is
/// the backward plus the optimiser. Medians of `--runs` after one warm-up step.
fn bench_train(a: &Args) -> Result<()> {
    let peer = if a.compare_torch {
        Some(torch_train_peer(a.batch.unwrap_or(256), a.runs)?)
    } else {
        None
    };
    use bridgeface::autograd::student::{record_student, Mode};
    use bridgeface::autograd::{BufferPool, Tape};
    use bridgeface::train::{train_step, TrainConfig, TrainState};
    let batch = a.batch.unwrap_or(256);
    let isas = match &a.isa {
        Some(s) => vec![Isa::parse(s)?],
        None => Kernels::available_isas(),
    };
    let r = 16;
    let classes = TRAIN_BENCH_CLASSES;
    let cfg = TrainConfig::new(r);
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..batch * 3 * r * r)
        .map(|_| rng.range(-1.0, 1.0))
        .collect();
    let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
    // Each fast ISA also runs with the scalar backward kernels of the table it replaced (main
    // before the SIMD backward kernels), as the in-run baseline.
    let mut tables = Vec::new();
    for isa in isas {
        let k = Kernels::for_isa(isa)?;
        tables.push((isa.name().to_string(), k));
        if isa != Isa::Scalar && !a.no_baseline {
            let s = Kernels::scalar();
            let baseline = Kernels {
                pointwise_backward_data: s.pointwise_backward_data,
                pointwise_backward_weight: s.pointwise_backward_weight,
                depthwise_backward_data: s.depthwise_backward_data,
                depthwise_backward_weight: s.depthwise_backward_weight,
                prelu_backward: s.prelu_backward,
                prelu: s.prelu,
                conv2d_backward_weight: s.conv2d_backward_weight,
                batch_norm_train_forward: s.batch_norm_train_forward,
                batch_norm_prelu_train_forward: s.batch_norm_prelu_train_forward,
                batch_norm_train_backward: s.batch_norm_train_backward,
                ..k
            };
            tables.push((format!("{}+scalar-backward", isa.name()), baseline));
        }
    }
    for (name, k) in tables {
        let mut state = TrainState::new(&cfg, classes)?;
        // The forward reuses its buffers across runs, as the training step does.
        let mut pool = Some(BufferPool::default());
        let forward = time_median(a.runs, || {
            let mut tape = Tape::with_pool(&k, pool.take().unwrap_or_default());
            let input = Tensor::new(&[batch, 3, r, r], x.clone())?;
            record_student(&mut tape, &state.params, input, Mode::Train)?;
            pool = Some(tape.into_pool());
            Ok(())
        })?;
        let step = time_median(a.runs, || {
            let input = Tensor::new(&[batch, 3, r, r], x.clone())?;
            train_step(&k, &cfg, &mut state, input, &labels, 0.01)?;
            Ok(())
        })?;
        if a.json {
            println!(
                "{}",
                // `faces_per_s` is the old name of `faces_per_sec`, kept for one release
                // (BENCHMARKS.md, "JSON keys"); it will be removed in the next.
                serde_json::json!({"model": "train", "resolution": r, "isa": name,
                    "batch": batch, "threads": 1, "classes": classes, "forward_s": forward,
                    "step_s": step, "faces_per_sec": batch as f64 / step,
                    "faces_per_s": batch as f64 / step,
                    "torch_faces_per_sec": peer.as_ref().map(|p| p.faces_per_sec),
                    "ratio_to_torch": peer.as_ref().map(|p| batch as f64 / step / p.faces_per_sec)})
            );
        } else {
            let ratio = peer.as_ref().map_or(String::new(), |p| {
                format!(" = {:.2}× PyTorch", batch as f64 / step / p.faces_per_sec)
            });
            println!(
                "train {r}x{r} {name:>22} batch {batch:>4} 1 thread: step {:.3} s (forward {:.3} \
                 s, backward + update {:.3} s) = {:.0} faces/s{ratio}",
                step,
                forward,
                step - forward,
                batch as f64 / step
            );
        }
    }
    if let Some(p) = &peer {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"model": "train", "peer": "pytorch", "torch": p.version,
                    "resolution": r, "batch": batch, "threads": 1, "classes": classes,
                    "forward_s": p.forward_s, "step_s": batch as f64 / p.faces_per_sec,
                    "faces_per_sec": p.faces_per_sec})
            );
        } else {
            println!(
                "train {r}x{r} {:>22} batch {batch:>4} 1 thread: step {:.3} s (forward {:.3} s) \
                 = {:.0} faces/s",
                format!("pytorch {}", p.version),
                batch as f64 / p.faces_per_sec,
                p.forward_s,
                p.faces_per_sec
            );
        }
    }
    Ok(())
}

/// Classes of the training benchmark's CosFace head (the size of the synthetic training set's
/// identity count when the figure was first taken), on both sides of `--compare-torch`.
const TRAIN_BENCH_CLASSES: usize = 1542;

/// What the PyTorch training peer measured.
struct TorchPeer {
    faces_per_sec: f64,
    forward_s: f64,
    version: String,
}

/// The interpreter for the Python peers: `$BRIDGE_PEER_PYTHON`, else `python3`.
fn peer_python() -> String {
    std::env::var("BRIDGE_PEER_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs benches/torch_train_peer.py (PyTorch on the CPU, one thread) at the same batch.
fn torch_train_peer(batch: usize, runs: usize) -> Result<TorchPeer> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_train_peer.py");
    let python = peer_python();
    let out = Command::new(&python)
        .arg(&script)
        .args(["--batch", &batch.to_string()])
        .args(["--threads", "1"])
        .args(["--runs", &runs.to_string()])
        .args(["--resolution", "16"])
        .args(["--classes", &TRAIN_BENCH_CLASSES.to_string()])
        .output()
        .map_err(|e| {
            Error::MissingAsset(format!("cannot run {python} for the PyTorch peer: {e}"))
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(Error::MissingAsset(format!(
            "the PyTorch peer failed (pip install torch, or set BRIDGE_PEER_PYTHON): {}",
            msg.lines().last().unwrap_or("no message")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|_| Error::MissingAsset(format!("the PyTorch peer printed no JSON: {text}")))?;
    let num = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| Error::MissingAsset(format!("the PyTorch peer printed no {k}")))
    };
    Ok(TorchPeer {
        faces_per_sec: num("faces_per_sec")?,
        forward_s: num("forward_s")?,
        version: v["torch"].as_str().unwrap_or("?").to_string(),
    })
}
