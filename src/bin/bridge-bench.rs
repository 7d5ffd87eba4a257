//! `bridge-bench`: faces per second of the student. The full per-ISA, per-batch, peer-compared
//! benchmark arrives with the fast-CPU issue; this measures the current kernel table.
use bridgeface::cpu;
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::Tensor;
use std::time::Instant;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> bridgeface::Result<()> {
    // `--device cuda[:N]`: the GPU benchmark (bridgeface::cli::device::bench_cuda) instead.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(d @ bridgeface::cli::device::Device::Cuda(_)) =
        bridgeface::cli::device::device_from_args(&args)?
    {
        return bridgeface::cli::device::bench_cuda(d, 20);
    }
    let k = cpu::kernels()?;
    let net = StudentParams::random(StudentInfo::new(16)?, 0).fold()?;
    for batch in [1usize, 16, 256] {
        let x = Tensor::new(&[batch, 3, 16, 16], vec![0.1; batch * 3 * 256])?;
        net.forward(k, &x)?;
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            net.forward(k, &x)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "student 16x16 isa={} batch={batch}: {:.0} faces/s",
            k.isa.name(),
            batch as f64 / times[2]
        );
    }
    Ok(())
}
