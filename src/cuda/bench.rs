//! The GPU throughput benchmark of the student: faces per second per batch size, timed with CUDA
//! events around the kernels only (input already resident), median over runs. Prints nothing.

use super::driver_err;
use super::student::CudaStudent;
use crate::error::Result;
use crate::rng::Rng;

/// One measured batch size.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub batch: usize,
    /// Median milliseconds of one forward pass (kernels only).
    pub median_ms: f64,
    pub faces_per_s: f64,
    /// Median milliseconds including the input copy to and embedding copy from the device.
    pub median_ms_with_copies: f64,
}

/// Times `runs` forward passes at each batch size (after one warm-up each).
pub fn bench_student(
    student: &mut CudaStudent,
    resolution: usize,
    batches: &[usize],
    runs: usize,
) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let mut rng = Rng::new(7);
    for &batch in batches {
        let x: Vec<f32> = (0..batch * 3 * resolution * resolution)
            .map(|_| rng.normal())
            .collect();
        student.upload_input(&x, batch)?;
        student.enqueue(batch)?; // warm-up: first launch, caches, clocks
        let dev = student.device().clone();
        dev.synchronize()?;
        let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut kernel_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            student.enqueue(batch)?;
            let end = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            kernel_ms.push(start.elapsed_ms(&end).map_err(driver_err("event timing"))? as f64);
        }
        let mut copy_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            let emb = student.forward(&x, batch)?;
            let end = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            std::hint::black_box(emb);
            copy_ms.push(start.elapsed_ms(&end).map_err(driver_err("event timing"))? as f64);
        }
        let median_ms = median(&mut kernel_ms);
        rows.push(BenchRow {
            batch,
            median_ms,
            faces_per_s: batch as f64 / (median_ms / 1e3),
            median_ms_with_copies: median(&mut copy_ms),
        });
    }
    Ok(rows)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `runs` forward passes of an imported graph (the teacher) at each batch size, after one
/// warm-up each, on the inputs `input(batch)` gives; as [`bench_student`] does for the student.
pub fn bench_graph(
    graph: &mut super::graph::CudaGraph,
    batches: &[usize],
    runs: usize,
    input: impl Fn(usize) -> Vec<f32>,
) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let dev = graph.device().clone();
    let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    for &batch in batches {
        let x = input(batch);
        graph.upload_input(&x, batch)?;
        graph.enqueue(batch)?; // warm-up: first launch, caches, clocks
        dev.synchronize()?;
        let mut kernel_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            graph.enqueue(batch)?;
            let end = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            kernel_ms.push(start.elapsed_ms(&end).map_err(driver_err("event timing"))? as f64);
        }
        let mut copy_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let start = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            let out = graph.forward(&x, batch)?;
            let end = dev
                .stream()
                .record_event(timing)
                .map_err(driver_err("event"))?;
            std::hint::black_box(out);
            copy_ms.push(start.elapsed_ms(&end).map_err(driver_err("event timing"))? as f64);
        }
        let median_ms = median(&mut kernel_ms);
        rows.push(BenchRow {
            batch,
            median_ms,
            faces_per_s: batch as f64 / (median_ms / 1e3),
            median_ms_with_copies: median(&mut copy_ms),
        });
    }
    Ok(rows)
}
