//! The student's inference forward pass on one GPU: per-layer kernel launchers (each checked
//! against `cpu::scalar`), the plain layer description it runs, and device-resident weights.
//! It knows nothing of weight files or `model`: callers convert a folded student into layers.
//!
//! The launchers live in `launch/` (one file per kernel file), buffers in `buffer.rs`, the GEMM
//! policy in `gemm.rs`, the layer description in `layers.rs`; they are re-exported here under
//! their old paths (`cuda::student::pointwise`, …) for callers and tests.

use super::device::CudaDevice;
use super::driver_err;
use crate::error::{Error, Result};
use cudarc::driver::{sys, CudaEvent, CudaGraph, CudaSlice, CudaStream, PinnedHostSlice};
use half::f16;
use std::collections::HashMap;
use std::sync::Arc;

pub use super::buffer::{DevBuf, Precision};
pub use super::gemm::Gemm;
pub use super::launch::conv3x3::conv3x3;
pub use super::launch::depthwise::{depthwise3x3, depthwise3x3_on, Depthwise};
pub use super::launch::head::head_gemm;
pub use super::launch::pointwise::{
    depthwise_pointwise, depthwise_pointwise_on, pointwise, pointwise_on,
};
pub use super::layers::{BlockLayers, ConvLayer, StudentLayers};

struct DevConv {
    w: DevBuf,
    b: CudaSlice<f32>,
    alpha: Option<CudaSlice<f32>>,
    c_in: usize,
    c_out: usize,
    stride: usize,
}

impl DevConv {
    fn upload(dev: &CudaDevice, l: &ConvLayer, p: Precision) -> Result<DevConv> {
        let s = &dev.stream;
        Ok(DevConv {
            w: DevBuf::upload(dev, &l.weight, p)?,
            b: s.clone_htod(&l.bias).map_err(driver_err("upload"))?,
            alpha: match &l.prelu {
                Some(a) => Some(s.clone_htod(a).map_err(driver_err("upload"))?),
                None => None,
            },
            c_in: l.c_in,
            c_out: l.c_out,
            stride: l.stride,
        })
    }
}

/// Faces per chunk of the pipelined `forward`: large enough that launches are negligible,
/// small enough that copies of one chunk overlap the kernels of the previous one.
pub const PIPELINE_CHUNK: usize = 8192;
/// Distinct batch sizes whose launch sequence is kept as a CUDA graph.
const MAX_GRAPHS: usize = 8;

/// The student resident on a GPU, with activation buffers sized for the largest batch seen.
pub struct CudaStudent {
    dev: Arc<CudaDevice>,
    precision: Precision,
    resolution: usize,
    stem: DevConv,
    blocks: Vec<(DevConv, DevConv, bool)>,
    gdc_w: DevBuf,
    gdc_b: CudaSlice<f32>,
    lin_w: DevBuf,
    lin_b: CudaSlice<f32>,
    m: usize,
    /// Which depthwise kernel the unfused blocks use.
    depthwise: Depthwise,
    /// Whether blocks run as one fused depthwise+pointwise kernel or as two (the default).
    fused: bool,
    /// The engine of the pointwise GEMMs: tensor cores by default for f16 on sm_80+.
    gemm: Gemm,
    /// Whether `forward` replays a captured CUDA graph per batch size (the default).
    use_graphs: bool,
    graphs: HashMap<usize, CudaGraph>,
    /// Largest activation of one face, in values.
    per_face: usize,
    capacity: usize,
    /// Two input/embedding slots: slot 0 for `upload_input`/`enqueue`, both for the pipeline.
    inputs: [DevBuf; 2],
    embs: [CudaSlice<f32>; 2],
    /// Activation ping-pong buffers and the unfused blocks' depthwise output.
    cur: DevBuf,
    out: DevBuf,
    mid: DevBuf,
    pipeline: Option<Pipeline>,
    /// When set, `enqueue_slot` records an event after every kernel (see `profile`).
    marks: Option<Vec<(String, CudaEvent)>>,
}

/// What the chunked `forward` keeps between calls: page-locked host staging (so copies are
/// truly asynchronous), a copy stream beside the compute stream, and the events that order them.
struct Pipeline {
    copy: Arc<CudaStream>,
    pin_in: [PinnedHostSlice<u16>; 2],
    pin_in32: [PinnedHostSlice<f32>; 2],
    pin_out: [PinnedHostSlice<f32>; 2],
    in_ready: [CudaEvent; 2],
    in_free: [CudaEvent; 2],
    out_ready: [CudaEvent; 2],
    out_done: [CudaEvent; 2],
}

impl CudaStudent {
    /// Uploads the layers to `dev` in `precision`.
    pub fn new(dev: Arc<CudaDevice>, layers: &StudentLayers, precision: Precision) -> Result<Self> {
        layers.validate()?;
        let r = layers.resolution;
        let mut side = (r - 1) / layers.stem.stride + 1;
        let mut per_face = layers.stem.c_out * side * side;
        let mut blocks = Vec::new();
        for b in &layers.blocks {
            side = (side - 1) / b.dw.stride + 1;
            per_face = per_face
                .max(b.dw.c_out * side * side)
                .max(b.pw.c_out * side * side);
            blocks.push((
                DevConv::upload(&dev, &b.dw, precision)?,
                DevConv::upload(&dev, &b.pw, precision)?,
                b.residual,
            ));
        }
        let s = dev.stream.clone();
        let d: &CudaDevice = &dev;
        // Measured fastest on an H200 (BENCHMARKS.md): f16 on the tensor cores with the k-major
        // (`ldmatrix`) input tile, and the tiled depthwise kernel.
        let gemm = if precision == Precision::F16 && d.tensor_cores() {
            Gemm::TensorCoresLdmatrix
        } else {
            Gemm::Fma
        };
        let emb = || -> Result<CudaSlice<f32>> { s.alloc_zeros(1).map_err(driver_err("alloc")) };
        Ok(CudaStudent {
            precision,
            resolution: r,
            stem: DevConv::upload(d, &layers.stem, precision)?,
            blocks,
            gdc_w: DevBuf::upload(d, &layers.gdc_weight, precision)?,
            gdc_b: s
                .clone_htod(&layers.gdc_bias)
                .map_err(driver_err("upload"))?,
            lin_w: DevBuf::upload(d, &layers.linear_weight, precision)?,
            lin_b: s
                .clone_htod(&layers.linear_bias)
                .map_err(driver_err("upload"))?,
            m: layers.embedding_size(),
            // Separate depthwise and pointwise kernels measured faster than the fused block on
            // an H200 for every engine and batch (BENCHMARKS.md), so they are the default.
            fused: false,
            depthwise: Depthwise::Tiles,
            gemm,
            use_graphs: true,
            graphs: HashMap::new(),
            per_face,
            capacity: 0,
            inputs: [
                DevBuf::zeros(d, 1, precision)?,
                DevBuf::zeros(d, 1, precision)?,
            ],
            embs: [emb()?, emb()?],
            cur: DevBuf::zeros(d, 1, precision)?,
            out: DevBuf::zeros(d, 1, precision)?,
            mid: DevBuf::zeros(d, 1, precision)?,
            pipeline: None,
            marks: None,
            dev,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Chooses the depthwise kernel of the unfused blocks.
    pub fn set_depthwise(&mut self, kind: Depthwise) {
        if kind != self.depthwise {
            self.depthwise = kind;
            self.graphs.clear();
        }
    }

    pub fn depthwise(&self) -> Depthwise {
        self.depthwise
    }

    /// Chooses fused depthwise+pointwise blocks or the two separate kernels (default).
    pub fn set_fused(&mut self, fused: bool) {
        if fused != self.fused {
            self.graphs.clear();
        }
        self.fused = fused;
    }

    pub fn fused(&self) -> bool {
        self.fused
    }

    /// Chooses the pointwise GEMM engine; tensor cores need f16 storage and sm_80+.
    pub fn set_gemm(&mut self, gemm: Gemm) -> Result<()> {
        gemm.check(&self.dev, self.precision)?;
        if gemm != self.gemm {
            self.graphs.clear();
        }
        self.gemm = gemm;
        Ok(())
    }

    pub fn gemm(&self) -> Gemm {
        self.gemm
    }

    /// Whether `forward` replays one captured CUDA graph per batch size (default on).
    pub fn set_graphs(&mut self, on: bool) {
        self.use_graphs = on;
        if !on {
            self.graphs.clear();
        }
    }

    pub fn graphs(&self) -> bool {
        self.use_graphs
    }

    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// Grows the activation buffers to hold `n` faces (and drops graphs that point at the old).
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if n <= self.capacity {
            return Ok(());
        }
        self.graphs.clear();
        let d: &CudaDevice = &self.dev;
        let p = self.precision;
        let r = self.resolution;
        for i in 0..2 {
            self.inputs[i] = DevBuf::zeros(d, n * 3 * r * r, p)?;
            self.embs[i] = d
                .stream
                .alloc_zeros(n * self.m)
                .map_err(driver_err("alloc"))?;
        }
        self.cur = DevBuf::zeros(d, n * self.per_face, p)?;
        self.mid = DevBuf::zeros(d, n * self.per_face, p)?;
        self.out = DevBuf::zeros(d, n * self.per_face, p)?;
        self.capacity = n;
        Ok(())
    }

    fn check_input(&self, x: &[f32], n: usize) -> Result<()> {
        let r = self.resolution;
        if x.len() != n * 3 * r * r || n == 0 {
            return Err(Error::Shape(format!(
                "student input must be [n, 3, {r}, {r}] with n ≥ 1, got {} values for n = {n}",
                x.len()
            )));
        }
        Ok(())
    }

    /// Copies `n` normalised faces `[n, 3, r, r]` to the device input buffer (slot 0).
    pub fn upload_input(&mut self, x: &[f32], n: usize) -> Result<()> {
        self.check_input(x, n)?;
        self.reserve(n)?;
        let dev = self.dev.clone();
        self.inputs[0].write(&dev, x)
    }

    /// Queues the forward pass of the `n` faces already in the input buffer (no copies, no
    /// graph): every kernel launched one by one.
    pub fn enqueue(&mut self, n: usize) -> Result<()> {
        self.enqueue_slot(0, n)
    }

    /// As `enqueue`, through the CUDA graph captured for batch `n` (captured on first use).
    pub fn enqueue_graph(&mut self, n: usize) -> Result<()> {
        if n > self.capacity || n == 0 {
            return Err(Error::Shape(format!(
                "batch {n} exceeds the uploaded {}",
                self.capacity
            )));
        }
        if !self.graphs.contains_key(&n) {
            if self.graphs.len() >= MAX_GRAPHS {
                self.graphs.clear();
            }
            let stream = self.dev.stream.clone();
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(driver_err("begin graph capture"))?;
            let queued = self.enqueue_slot(0, n);
            // Always end the capture, so that a failed launch leaves the stream usable.
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            queued?;
            let graph = graph
                .map_err(driver_err("end graph capture"))?
                .ok_or_else(|| Error::Cuda("graph capture recorded nothing".into()))?;
            graph.upload().map_err(driver_err("graph upload"))?;
            self.graphs.insert(n, graph);
        }
        let graph = &self.graphs[&n];
        graph.launch().map_err(driver_err("graph launch"))
    }

    /// The layer sequence for `n` faces from input slot `slot` into embedding slot `slot`.
    /// It always uses the same buffers for the same `n`, so it can be captured as a graph.
    fn enqueue_slot(&mut self, slot: usize, n: usize) -> Result<()> {
        if n > self.capacity || n == 0 {
            return Err(Error::Shape(format!(
                "batch {n} exceeds the uploaded {}",
                self.capacity
            )));
        }
        let CudaStudent {
            dev,
            resolution,
            stem: st,
            blocks,
            gdc_w,
            gdc_b,
            lin_w,
            lin_b,
            m,
            fused,
            depthwise,
            gemm,
            inputs,
            embs,
            cur,
            out,
            mid,
            marks,
            ..
        } = self;
        let dev: &CudaDevice = dev;
        let mut mark = |name: String| -> Result<()> {
            if let Some(m) = marks.as_mut() {
                let e = dev
                    .stream
                    .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(driver_err("event"))?;
                m.push((name, e));
            }
            Ok(())
        };
        mark("start".into())?;
        let r = *resolution;
        let (mut a, mut b) = (cur, out);
        conv3x3(
            dev,
            &inputs[slot],
            &st.w,
            &st.b,
            st.alpha.as_ref(),
            a,
            [n, 3, r, r],
            st.c_out,
            st.stride,
        )?;
        mark("stem conv3x3".into())?;
        let mut side = (r - 1) / st.stride + 1;
        for (i, (dw, pw, residual)) in blocks.iter().enumerate() {
            let in_side = side;
            side = (side - 1) / dw.stride + 1;
            if *fused {
                depthwise_pointwise_on(
                    *gemm,
                    dev,
                    a,
                    (&dw.w, &dw.b, dw.alpha.as_ref()),
                    (&pw.w, &pw.b, pw.alpha.as_ref()),
                    *residual,
                    b,
                    [n, dw.c_in, in_side, in_side],
                    dw.stride,
                    pw.c_out,
                )?;
                mark(format!(
                    "block {} dw+pw {}->{} {in_side}x{in_side}",
                    i + 1,
                    dw.c_in,
                    pw.c_out
                ))?;
            } else {
                depthwise3x3_on(
                    *depthwise,
                    dev,
                    a,
                    &dw.w,
                    &dw.b,
                    dw.alpha.as_ref(),
                    mid,
                    [n, dw.c_in, in_side, in_side],
                    dw.stride,
                )?;
                mark(format!(
                    "block {} depthwise {} {in_side}x{in_side}",
                    i + 1,
                    dw.c_in
                ))?;
                let res = if *residual { Some(&*a) } else { None };
                pointwise_on(
                    *gemm,
                    dev,
                    mid,
                    &pw.w,
                    &pw.b,
                    pw.alpha.as_ref(),
                    res,
                    b,
                    [n, pw.c_in, side * side],
                    pw.c_out,
                )?;
                mark(format!(
                    "block {} pointwise {}->{} {side}x{side}",
                    i + 1,
                    pw.c_in,
                    pw.c_out
                ))?;
            }
            std::mem::swap(&mut a, &mut b);
        }
        let c = blocks.last().map_or(st.c_out, |b| b.1.c_out);
        head_gemm(
            *gemm,
            dev,
            a,
            (gdc_w, gdc_b),
            (lin_w, lin_b),
            mid,
            b,
            &mut embs[slot],
            [n, c, side * side],
            *m,
        )?;
        mark("head gdc+linear+l2".into())
    }

    /// Milliseconds of each kernel of one forward pass over the `n` faces in the input buffer
    /// (CUDA events between launches; one warm-up pass first).
    pub fn profile(&mut self, n: usize) -> Result<Vec<(String, f64)>> {
        self.enqueue_slot(0, n)?;
        self.marks = Some(Vec::new());
        let run = self.enqueue_slot(0, n);
        let marks = self.marks.take().unwrap_or_default();
        run?;
        self.dev.synchronize()?;
        let mut out = Vec::new();
        for w in marks.windows(2) {
            let ms = w[0]
                .1
                .elapsed_ms(&w[1].1)
                .map_err(driver_err("event timing"))?;
            out.push((w[1].0.clone(), ms as f64));
        }
        Ok(out)
    }

    /// The first `n` embeddings `[n, m]` of the last `enqueue`/`enqueue_graph` (waits for it).
    pub fn read_embeddings(&self, n: usize) -> Result<Vec<f32>> {
        if n > self.capacity {
            return Err(Error::Shape(format!(
                "{n} embeddings asked of a buffer for {}",
                self.capacity
            )));
        }
        self.dev
            .stream
            .clone_dtoh(&self.embs[0].slice(0..n * self.m))
            .map_err(driver_err("copy embeddings to host"))
    }

    /// Embeds `n` normalised faces `[n, 3, r, r]` into L2-normalised `[n, m]` rows.
    ///
    /// Up to [`PIPELINE_CHUNK`] faces: one upload, the graph (or launches), one download.
    /// Larger batches go through [`forward_pipelined`](Self::forward_pipelined).
    pub fn forward(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        if n > PIPELINE_CHUNK {
            return self.forward_pipelined(x, n);
        }
        self.upload_input(x, n)?;
        if self.use_graphs {
            self.enqueue_graph(n)?;
        } else {
            self.enqueue(n)?;
        }
        self.read_embeddings(n)
    }

    /// `forward` in chunks of [`PIPELINE_CHUNK`] faces through page-locked buffers: while the
    /// GPU runs chunk c, the copy stream uploads chunk c+1 and downloads chunk c−1, and the host
    /// fills and drains the pinned buffers (in parallel threads). Same results as `forward`.
    pub fn forward_pipelined(&mut self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_input(x, n)?;
        let chunk = PIPELINE_CHUNK.min(n);
        self.reserve(chunk)?;
        self.ensure_pipeline(chunk)?;
        let face = 3 * self.resolution * self.resolution;
        let m = self.m;
        let chunks = n.div_ceil(chunk);
        let mut result = vec![0f32; n * m];
        let compute = self.dev.stream.clone();
        for c in 0..chunks + 1 {
            if c < chunks {
                let s = c % 2;
                let (lo, hi) = (c * chunk, ((c + 1) * chunk).min(n));
                let len = hi - lo;
                let pl = self.pipeline.as_mut().ok_or_else(no_pipeline)?;
                // The upload of chunk c−2 from this pinned buffer must be done before refilling.
                pl.in_ready[s]
                    .synchronize()
                    .map_err(driver_err("pipeline wait"))?;
                let src = &x[lo * face..hi * face];
                let copy = pl.copy.clone();
                match &mut self.inputs[s] {
                    DevBuf::F16(dst) => {
                        let pin = pl.pin_in[s]
                            .as_mut_slice()
                            .map_err(driver_err("pinned buffer"))?;
                        par_fill(&mut pin[..src.len()], src, |v| f16::from_f32(v).to_bits());
                        copy.wait(&pl.in_free[s]).map_err(driver_err("wait"))?;
                        copy.memcpy_htod(&pl.pin_in[s], &mut dst.slice_mut(0..chunk * face))
                            .map_err(driver_err("copy to device"))?;
                    }
                    DevBuf::F32(dst) => {
                        let pin = pl.pin_in32[s]
                            .as_mut_slice()
                            .map_err(driver_err("pinned buffer"))?;
                        par_fill(&mut pin[..src.len()], src, |v| v);
                        copy.wait(&pl.in_free[s]).map_err(driver_err("wait"))?;
                        copy.memcpy_htod(&pl.pin_in32[s], &mut dst.slice_mut(0..chunk * face))
                            .map_err(driver_err("copy to device"))?;
                    }
                }
                pl.in_ready[s].record(&copy).map_err(driver_err("record"))?;
                compute.wait(&pl.in_ready[s]).map_err(driver_err("wait"))?;
                // The download of chunk c−2 from this embedding slot must be done too.
                compute.wait(&pl.out_done[s]).map_err(driver_err("wait"))?;
                self.enqueue_slot(s, len)?;
                let pl = self.pipeline.as_mut().ok_or_else(no_pipeline)?;
                pl.in_free[s]
                    .record(&compute)
                    .map_err(driver_err("record"))?;
                pl.out_ready[s]
                    .record(&compute)
                    .map_err(driver_err("record"))?;
                copy.wait(&pl.out_ready[s]).map_err(driver_err("wait"))?;
                copy.memcpy_dtoh(&self.embs[s].slice(0..chunk * m), &mut pl.pin_out[s])
                    .map_err(driver_err("copy to host"))?;
                pl.out_done[s].record(&copy).map_err(driver_err("record"))?;
            }
            if c >= 1 {
                // Drain chunk c−1 while chunk c runs.
                let p = c - 1;
                let s = p % 2;
                let (lo, hi) = (p * chunk, ((p + 1) * chunk).min(n));
                let pl = self.pipeline.as_mut().ok_or_else(no_pipeline)?;
                pl.out_done[s]
                    .synchronize()
                    .map_err(driver_err("pipeline wait"))?;
                let pin = pl.pin_out[s]
                    .as_slice()
                    .map_err(driver_err("pinned buffer"))?;
                par_fill(&mut result[lo * m..hi * m], &pin[..(hi - lo) * m], |v| v);
            }
        }
        Ok(result)
    }

    fn ensure_pipeline(&mut self, chunk: usize) -> Result<()> {
        let face = 3 * self.resolution * self.resolution;
        if self
            .pipeline
            .as_ref()
            .is_some_and(|p| p.pin_out[0].len() >= chunk * self.m)
        {
            return Ok(());
        }
        let ctx = self.dev.ctx.clone();
        let (in16, in32) = match self.precision {
            Precision::F16 => (chunk * face, 1),
            Precision::F32 => (1, chunk * face),
        };
        let ev = || ctx.new_event(None).map_err(driver_err("event"));
        let pinned16 = || -> Result<PinnedHostSlice<u16>> {
            // SAFETY: page-locked host memory of `in16` u16s; every value the device reads is
            // written by `par_fill` first (and u16 has no invalid bit patterns).
            unsafe { ctx.alloc_pinned_with_flags::<u16>(in16, 0) }.map_err(driver_err("pinned"))
        };
        let pinned32 = |len: usize| -> Result<PinnedHostSlice<f32>> {
            // SAFETY: as above: written before it is read; any bit pattern is a valid f32.
            unsafe { ctx.alloc_pinned_with_flags::<f32>(len, 0) }.map_err(driver_err("pinned"))
        };
        let in_ready = [ev()?, ev()?];
        let out_done = [ev()?, ev()?];
        // Recorded once so that the first waits on them are satisfied.
        let copy = ctx.new_stream().map_err(driver_err("copy stream"))?;
        for e in in_ready.iter().chain(out_done.iter()) {
            e.record(&copy).map_err(driver_err("record"))?;
        }
        let in_free = [ev()?, ev()?];
        for e in &in_free {
            e.record(&self.dev.stream).map_err(driver_err("record"))?;
        }
        self.pipeline = Some(Pipeline {
            pin_in: [pinned16()?, pinned16()?],
            pin_in32: [pinned32(in32)?, pinned32(in32)?],
            pin_out: [pinned32(chunk * self.m)?, pinned32(chunk * self.m)?],
            in_ready,
            in_free,
            out_ready: [ev()?, ev()?],
            out_done,
            copy,
        });
        Ok(())
    }
}

fn no_pipeline() -> Error {
    Error::Cuda("the copy pipeline is not set up".into())
}

/// `dst[i] = f(src[i])` on up to 8 threads (filling page-locked staging is host-bound).
fn par_fill<S: Copy + Sync, D: Send>(dst: &mut [D], src: &[S], f: impl Fn(S) -> D + Sync) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 8);
    let part = dst.len().div_ceil(threads).max(1 << 16);
    std::thread::scope(|scope| {
        for (d, s) in dst.chunks_mut(part).zip(src.chunks(part)) {
            let f = &f;
            scope.spawn(move || {
                for (o, i) in d.iter_mut().zip(s) {
                    *o = f(*i);
                }
            });
        }
    });
}
