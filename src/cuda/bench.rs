//! The GPU throughput benchmark of the student: faces per second per batch size, timed with CUDA
//! events around the kernels only (input already resident), median over runs. Prints nothing.

use super::driver_err;
use super::student::CudaStudent;
use crate::error::Result;
use crate::rng::Rng;
use std::time::Instant;

/// One measured batch size.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub batch: usize,
    /// Median milliseconds of one forward pass, kernels launched one by one (CUDA events).
    pub median_ms: f64,
    pub faces_per_s: f64,
    /// Median milliseconds of one forward pass replayed as a CUDA graph (CUDA events).
    pub median_ms_graph: f64,
    /// Median wall-clock milliseconds of `CudaStudent::forward` from a host `Vec<f32>` to the
    /// host embeddings: copies included (pinned, overlapped in chunks above `PIPELINE_CHUNK`).
    pub median_ms_with_copies: f64,
}

impl BenchRow {
    pub fn faces_per_s_graph(&self) -> f64 {
        self.batch as f64 / (self.median_ms_graph / 1e3)
    }

    pub fn faces_per_s_with_copies(&self) -> f64 {
        self.batch as f64 / (self.median_ms_with_copies / 1e3)
    }
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
    let dev = student.device().clone();
    let timing = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    for &batch in batches {
        let x: Vec<f32> = (0..batch * 3 * resolution * resolution)
            .map(|_| rng.normal())
            .collect();
        student.upload_input(&x, batch)?;
        let timed = |graph: bool, student: &mut CudaStudent| -> Result<f64> {
            // Warm-up: first launch (and graph capture), caches, clocks.
            if graph {
                student.enqueue_graph(batch)?;
            } else {
                student.enqueue(batch)?;
            }
            dev.synchronize()?;
            let mut ms = Vec::with_capacity(runs);
            for _ in 0..runs.max(1) {
                let start = dev
                    .stream()
                    .record_event(timing)
                    .map_err(driver_err("event"))?;
                if graph {
                    student.enqueue_graph(batch)?;
                } else {
                    student.enqueue(batch)?;
                }
                let end = dev
                    .stream()
                    .record_event(timing)
                    .map_err(driver_err("event"))?;
                ms.push(start.elapsed_ms(&end).map_err(driver_err("event timing"))? as f64);
            }
            Ok(median(&mut ms))
        };
        let median_ms = timed(false, student)?;
        let median_ms_graph = timed(true, student)?;
        std::hint::black_box(student.forward(&x, batch)?);
        let mut copy_ms = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            let emb = student.forward(&x, batch)?;
            copy_ms.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(emb);
        }
        rows.push(BenchRow {
            batch,
            median_ms,
            faces_per_s: batch as f64 / (median_ms / 1e3),
            median_ms_graph,
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
    graph: &mut super::graph::GraphRunner,
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
            // The teacher's launch sequence is not captured as a CUDA graph.
            median_ms_graph: f64::NAN,
            median_ms_with_copies: median(&mut copy_ms),
        });
    }
    Ok(rows)
}
