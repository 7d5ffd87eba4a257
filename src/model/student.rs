//! BridgeNet, the fixed low-resolution student: its architecture table, parameter names and
//! shapes, He initialisation, loading and saving, BN folding, and the inference forward pass.

use crate::cpu::packed::{self, Epilogue, PointwiseShape};
use crate::cpu::{ConvGeom, Kernels};
use crate::error::{Error, Result};
use crate::ops::{self, Conv2d};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::weights::{self, StoreDtype, WeightFile};
use std::collections::BTreeMap;
use std::path::Path;

/// Architecture name stored in the weight metadata.
pub const ARCHITECTURE: &str = "BridgeNet";
/// Embedding width.
pub const EMBEDDING_SIZE: usize = 128;
/// Batch-norm epsilon (PyTorch's default, so exported models match peers exactly).
pub const BN_EPS: f32 = 1e-5;
/// Initial PReLU slope (PyTorch's default).
pub const PRELU_INIT: f32 = 0.25;
/// Input resolutions the student supports.
pub const MIN_RESOLUTION: usize = 8;
pub const MAX_RESOLUTION: usize = 32;
/// Stem output channels.
pub const STEM_CHANNELS: usize = 32;

/// One depthwise-3×3 + pointwise-1×1 block of the table in the README.
#[derive(Clone, Copy, Debug)]
pub struct BlockSpec {
    pub name: &'static str,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    pub residual: bool,
}

/// The seven blocks b1..b7.
pub const BLOCKS: [BlockSpec; 7] = [
    BlockSpec {
        name: "b1",
        c_in: 32,
        c_out: 64,
        stride: 1,
        residual: false,
    },
    BlockSpec {
        name: "b2",
        c_in: 64,
        c_out: 64,
        stride: 2,
        residual: false,
    },
    BlockSpec {
        name: "b3",
        c_in: 64,
        c_out: 128,
        stride: 1,
        residual: false,
    },
    BlockSpec {
        name: "b4",
        c_in: 128,
        c_out: 128,
        stride: 2,
        residual: false,
    },
    BlockSpec {
        name: "b5",
        c_in: 128,
        c_out: 128,
        stride: 1,
        residual: true,
    },
    BlockSpec {
        name: "b6",
        c_in: 128,
        c_out: 256,
        stride: 1,
        residual: false,
    },
    BlockSpec {
        name: "b7",
        c_in: 256,
        c_out: 256,
        stride: 1,
        residual: true,
    },
];

/// Channels entering the head.
pub const HEAD_CHANNELS: usize = 256;

/// How raw RGB 0..255 values become network input: `(x - mean) / std` per channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization {
            mean: [127.5; 3],
            std: [127.5; 3],
        }
    }
}

impl Normalization {
    fn to_json(self) -> String {
        serde_json::json!({"color": "RGB", "mean": self.mean, "std": self.std}).to_string()
    }

    fn from_json(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::Metadata {
            key: "input_normalization".into(),
            reason: reason.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(s).map_err(|_| bad("not valid JSON"))?;
        if v.get("color").and_then(|c| c.as_str()) != Some("RGB") {
            return Err(bad("only RGB input is supported"));
        }
        let triple = |key: &str| -> Result<[f32; 3]> {
            let arr = v
                .get(key)
                .and_then(|a| a.as_array())
                .filter(|a| a.len() == 3)
                .ok_or_else(|| bad(&format!("`{key}` must be a list of 3 numbers")))?;
            let mut out = [0.0f32; 3];
            for (o, x) in out.iter_mut().zip(arr) {
                *o = x
                    .as_f64()
                    .ok_or_else(|| bad(&format!("`{key}` must hold numbers")))?
                    as f32;
            }
            Ok(out)
        };
        let n = Normalization {
            mean: triple("mean")?,
            std: triple("std")?,
        };
        if n.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
            return Err(bad("std must be finite and non-zero"));
        }
        Ok(n)
    }
}

/// What the metadata of a student weight file says.
#[derive(Clone, Debug, PartialEq)]
pub struct StudentInfo {
    pub resolution: usize,
    pub embedding_size: usize,
    pub normalization: Normalization,
    /// Cosine threshold for "same person".
    pub threshold: f32,
    /// Free-form provenance: the data, recipe and commit that produced the weights.
    pub provenance: String,
}

impl StudentInfo {
    pub fn new(resolution: usize) -> Result<Self> {
        check_resolution(resolution)?;
        Ok(StudentInfo {
            resolution,
            embedding_size: EMBEDDING_SIZE,
            normalization: Normalization::default(),
            threshold: 0.5,
            provenance: String::new(),
        })
    }

    /// The metadata map written into weight files.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("architecture".into(), ARCHITECTURE.into());
        m.insert("input_resolution".into(), self.resolution.to_string());
        m.insert("embedding_size".into(), self.embedding_size.to_string());
        m.insert("input_normalization".into(), self.normalization.to_json());
        m.insert("threshold".into(), self.threshold.to_string());
        m.insert("provenance".into(), self.provenance.clone());
        m
    }

    /// Reads and checks the metadata of a student weight file.
    pub fn from_weights(w: &WeightFile) -> Result<Self> {
        let arch = w.meta("architecture")?;
        if arch != ARCHITECTURE {
            return Err(Error::Metadata {
                key: "architecture".into(),
                reason: format!("`{arch}` is not a {ARCHITECTURE} student"),
            });
        }
        let num = |key: &str| -> Result<f64> {
            w.meta(key)?
                .trim()
                .parse::<f64>()
                .map_err(|_| Error::Metadata {
                    key: key.into(),
                    reason: "not a number".into(),
                })
        };
        let resolution = num("input_resolution")? as usize;
        check_resolution(resolution)?;
        let embedding_size = num("embedding_size")? as usize;
        if embedding_size != EMBEDDING_SIZE {
            return Err(Error::Metadata {
                key: "embedding_size".into(),
                reason: format!("{embedding_size} is not {EMBEDDING_SIZE}"),
            });
        }
        let threshold = w
            .metadata()
            .get("threshold")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.5);
        Ok(StudentInfo {
            resolution,
            embedding_size,
            normalization: Normalization::from_json(w.meta("input_normalization")?)?,
            threshold,
            provenance: w.metadata().get("provenance").cloned().unwrap_or_default(),
        })
    }
}

fn check_resolution(r: usize) -> Result<()> {
    if !(MIN_RESOLUTION..=MAX_RESOLUTION).contains(&r) {
        return Err(Error::InvalidArgument(format!(
            "student resolution {r} is outside {MIN_RESOLUTION}..={MAX_RESOLUTION}"
        )));
    }
    Ok(())
}

/// Spatial size after a 3×3, pad-1 conv at `stride`.
fn conv3_out(x: usize, stride: usize) -> usize {
    (x + 2 - 3) / stride + 1
}

/// Spatial side of the final feature map for an input of side `r`.
pub fn final_map_side(r: usize) -> usize {
    BLOCKS.iter().fold(r, |s, b| conv3_out(s, b.stride))
}

/// The names of one BN's four tensors under `prefix`.
fn bn_names(prefix: &str) -> [String; 4] {
    [
        format!("{prefix}.weight"),
        format!("{prefix}.bias"),
        format!("{prefix}.running_mean"),
        format!("{prefix}.running_var"),
    ]
}

/// Every parameter of the student at resolution `r`, in a fixed order: (name, shape).
/// Convolutions carry no bias because a BN follows each one.
pub fn parameter_shapes(r: usize) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut conv_bn_prelu = |prefix: &str, w_shape: Vec<usize>, prelu: bool| {
        let c = w_shape[0];
        v.push((format!("{prefix}.conv.weight"), w_shape));
        for n in bn_names(&format!("{prefix}.bn")) {
            v.push((n, vec![c]));
        }
        if prelu {
            v.push((format!("{prefix}.prelu.weight"), vec![c]));
        }
    };
    conv_bn_prelu("stem", vec![STEM_CHANNELS, 3, 3, 3], true);
    for b in BLOCKS {
        conv_bn_prelu(&format!("{}.dw", b.name), vec![b.c_in, 1, 3, 3], true);
        conv_bn_prelu(&format!("{}.pw", b.name), vec![b.c_out, b.c_in, 1, 1], true);
    }
    let s = final_map_side(r);
    conv_bn_prelu("head.gdc", vec![HEAD_CHANNELS, 1, s, s], false);
    v.push((
        "head.linear.weight".into(),
        vec![EMBEDDING_SIZE, HEAD_CHANNELS],
    ));
    for n in bn_names("head.bn") {
        v.push((n, vec![EMBEDDING_SIZE]));
    }
    v
}

/// Multiply–accumulates of one forward pass at resolution `r` (FLOPs ≈ 2× this).
pub fn macs_per_face(r: usize) -> usize {
    let mut side = r;
    let mut macs = STEM_CHANNELS * 3 * 9 * side * side;
    for b in BLOCKS {
        side = conv3_out(side, b.stride);
        macs += b.c_in * 9 * side * side + b.c_in * b.c_out * side * side;
    }
    macs + HEAD_CHANNELS * side * side + HEAD_CHANNELS * EMBEDDING_SIZE
}

/// The student's trainable state: every named tensor, unfolded (BN kept separate).
#[derive(Clone, Debug)]
pub struct StudentParams {
    pub info: StudentInfo,
    pub tensors: BTreeMap<String, Tensor>,
}

impl StudentParams {
    /// He-initialised weights (normal, std √(2/fan_in)), BN at identity, PReLU at 0.25.
    pub fn random(info: StudentInfo, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut tensors = BTreeMap::new();
        for (name, shape) in parameter_shapes(info.resolution) {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("conv.weight") || name == "head.linear.weight" {
                let fan_in: usize = shape[1..].iter().product();
                let std = (2.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.normal() * std).collect()
            } else if name.ends_with("running_var") || name.ends_with("bn.weight") {
                vec![1.0; n]
            } else if name.ends_with("prelu.weight") {
                vec![PRELU_INIT; n]
            } else {
                vec![0.0; n]
            };
            tensors.insert(
                name,
                Tensor::new(&shape, data).expect("shape from parameter_shapes"),
            );
        }
        StudentParams { info, tensors }
    }

    /// Loads every parameter, checking names, shapes and dtypes against the architecture.
    pub fn from_weights(w: &WeightFile) -> Result<Self> {
        let info = StudentInfo::from_weights(w)?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in parameter_shapes(info.resolution) {
            let t = w.tensor(&name, &shape)?;
            if t.data().iter().any(|v| !v.is_finite()) {
                return Err(Error::WeightFormat {
                    path: w.path().to_path_buf(),
                    reason: format!("tensor `{name}` holds NaN or infinite values"),
                });
            }
            tensors.insert(name, t);
        }
        Ok(StudentParams { info, tensors })
    }

    /// Opens and loads a student weight file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_weights(&WeightFile::open(path)?)
    }

    /// Writes the parameters and metadata atomically.
    pub fn save(&self, path: impl AsRef<Path>, dtype: StoreDtype) -> Result<()> {
        let named: Vec<(String, &Tensor)> =
            self.tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        weights::save(path, &named, &self.info.to_metadata(), dtype)
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::InvalidArgument(format!("student has no parameter `{name}`")))
    }

    /// Total number of stored values (BN running statistics included).
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(Tensor::numel).sum()
    }

    /// Folds each BN into the conv or linear before it, for inference.
    pub fn fold(&self) -> Result<StudentNet> {
        let layer = |prefix: &str, conv: Conv2d, prelu: bool| -> Result<FoldedConv> {
            let mut w = self.get(&format!("{prefix}.conv.weight"))?.clone();
            let c_out = w.shape()[0];
            let mut b = vec![0.0; c_out];
            self.fold_bn(&format!("{prefix}.bn"), w.data_mut(), &mut b)?;
            let alpha = if prelu {
                Some(self.get(&format!("{prefix}.prelu.weight"))?.data().to_vec())
            } else {
                None
            };
            Ok(FoldedConv {
                weight: w,
                bias: b,
                conv,
                prelu: alpha,
            })
        };
        let stem = layer("stem", Conv2d::new(1, 1, 1), true)?;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for spec in BLOCKS {
            blocks.push(FoldedBlock {
                dw: layer(
                    &format!("{}.dw", spec.name),
                    Conv2d::new(spec.stride, 1, spec.c_in),
                    true,
                )?,
                pw: layer(&format!("{}.pw", spec.name), Conv2d::new(1, 0, 1), true)?,
                residual: spec.residual,
            });
        }
        let gdc = layer("head.gdc", Conv2d::new(1, 0, HEAD_CHANNELS), false)?;
        let mut lin_w = self.get("head.linear.weight")?.clone();
        let mut lin_b = vec![0.0; EMBEDDING_SIZE];
        self.fold_bn("head.bn", lin_w.data_mut(), &mut lin_b)?;
        let packed =
            PackedStudent::pack(self.info.resolution, &stem, &blocks, &gdc, &lin_w, &lin_b);
        Ok(StudentNet {
            info: self.info.clone(),
            stem,
            blocks,
            gdc_weight: gdc.weight,
            gdc_bias: gdc.bias,
            linear_weight: lin_w,
            linear_bias: lin_b,
            packed,
        })
    }

    fn fold_bn(&self, prefix: &str, w: &mut [f32], b: &mut [f32]) -> Result<()> {
        let [g, be, m, v] = bn_names(prefix);
        crate::cpu::scalar::fold_batch_norm(
            w,
            b,
            self.get(&g)?.data(),
            self.get(&be)?.data(),
            self.get(&m)?.data(),
            self.get(&v)?.data(),
            BN_EPS,
        );
        Ok(())
    }
}

/// A conv with its BN folded in and an optional PReLU after it.
#[derive(Clone, Debug)]
pub struct FoldedConv {
    pub weight: Tensor,
    pub bias: Vec<f32>,
    pub conv: Conv2d,
    pub prelu: Option<Vec<f32>>,
}

impl FoldedConv {
    fn forward(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        let mut y = ops::conv2d(k, x, &self.weight, Some(&self.bias), self.conv)?;
        if let Some(a) = &self.prelu {
            ops::prelu(k, &mut y, a)?;
        }
        Ok(y)
    }
}

/// One depthwise + pointwise block, folded.
#[derive(Clone, Debug)]
pub struct FoldedBlock {
    pub dw: FoldedConv,
    pub pw: FoldedConv,
    pub residual: bool,
}

/// The student ready for inference: BN folded, weights owned, and packed once for the fast
/// kernels. The unpacked layers stay as the reference path (`forward_reference`).
#[derive(Clone, Debug)]
pub struct StudentNet {
    pub info: StudentInfo,
    pub stem: FoldedConv,
    pub blocks: Vec<FoldedBlock>,
    pub gdc_weight: Tensor,
    pub gdc_bias: Vec<f32>,
    pub linear_weight: Tensor,
    pub linear_bias: Vec<f32>,
    pub packed: PackedStudent,
}

/// Images per pass through the whole network in one thread. Four 16×16 faces keep the
/// largest layer's input, depthwise output and output (~0.5 MiB at block b1) within Zen3's
/// L2, and at the 4×4 layers still give the pointwise GEMM 64 pixels.
pub const FACES_PER_CHUNK: usize = 4;

/// The number of threads `forward` uses: all the CPUs the process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One folded layer in the blocked layout: packed weights, padded bias and slopes.
#[derive(Clone, Debug)]
pub struct PackedLayer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub prelu: Option<Vec<f32>>,
}

impl PackedLayer {
    fn new(weight: Vec<f32>, l: &FoldedConv) -> Self {
        PackedLayer {
            weight,
            bias: packed::pad_channels(&l.bias),
            prelu: l.prelu.as_deref().map(packed::pad_channels),
        }
    }

    fn epilogue<'a>(&'a self, residual: Option<&'a [f32]>) -> Epilogue<'a> {
        Epilogue {
            bias: &self.bias,
            prelu: self.prelu.as_deref(),
            residual,
        }
    }
}

/// One block, packed: depthwise then pointwise.
#[derive(Clone, Debug)]
pub struct PackedBlock {
    pub spec: BlockSpec,
    pub dw: PackedLayer,
    pub pw: PackedLayer,
}

/// The whole student packed for the `*_packed` kernels of any table.
#[derive(Clone, Debug)]
pub struct PackedStudent {
    pub resolution: usize,
    pub stem: PackedLayer,
    pub blocks: Vec<PackedBlock>,
    pub gdc_weight: Vec<f32>,
    pub gdc_bias: Vec<f32>,
    pub linear_weight: Vec<f32>,
    pub linear_bias: Vec<f32>,
}

impl PackedStudent {
    fn pack(
        resolution: usize,
        stem: &FoldedConv,
        blocks: &[FoldedBlock],
        gdc: &FoldedConv,
        lin_w: &Tensor,
        lin_b: &[f32],
    ) -> Self {
        let side = final_map_side(resolution);
        PackedStudent {
            resolution,
            stem: PackedLayer::new(
                packed::pack_direct(stem.weight.data(), 3, STEM_CHANNELS, 9),
                stem,
            ),
            blocks: blocks
                .iter()
                .zip(BLOCKS)
                .map(|(b, spec)| PackedBlock {
                    spec,
                    dw: PackedLayer::new(
                        packed::pack_depthwise(b.dw.weight.data(), spec.c_in, 9),
                        &b.dw,
                    ),
                    pw: PackedLayer::new(
                        packed::pack_pointwise(b.pw.weight.data(), spec.c_in, spec.c_out),
                        &b.pw,
                    ),
                })
                .collect(),
            gdc_weight: packed::pack_global_depthwise(
                gdc.weight.data(),
                HEAD_CHANNELS,
                side * side,
            ),
            gdc_bias: packed::pad_channels(&gdc.bias),
            linear_weight: packed::pack_linear(lin_w.data(), HEAD_CHANNELS, EMBEDDING_SIZE),
            linear_bias: packed::pad_channels(lin_b),
        }
    }

    /// Floats of the largest blocked activation of one face (a layer's input or output).
    fn max_activation_per_face(&self) -> usize {
        let r = self.resolution;
        let mut side = r;
        let mut most = packed::padded(STEM_CHANNELS) * r * r;
        for b in &self.blocks {
            side = conv3_out(side, b.spec.stride);
            most = most.max(packed::padded(b.spec.c_in.max(b.spec.c_out)) * side * side);
        }
        most
    }

    /// Bytes of activation buffers one thread holds per face of a full chunk: three blocked
    /// buffers (block input, depthwise output, block output) plus the head's two vectors.
    pub fn activation_bytes_per_face(&self) -> usize {
        (3 * self.max_activation_per_face()
            + packed::padded(HEAD_CHANNELS)
            + packed::padded(EMBEDDING_SIZE))
            * std::mem::size_of::<f32>()
    }

    /// Bytes of packed weights, biases and slopes.
    pub fn weight_bytes(&self) -> usize {
        let layer =
            |l: &PackedLayer| l.weight.len() + l.bias.len() + l.prelu.as_ref().map_or(0, Vec::len);
        let floats = layer(&self.stem)
            + self
                .blocks
                .iter()
                .map(|b| layer(&b.dw) + layer(&b.pw))
                .sum::<usize>()
            + self.gdc_weight.len()
            + self.gdc_bias.len()
            + self.linear_weight.len()
            + self.linear_bias.len();
        floats * std::mem::size_of::<f32>()
    }

    /// Embeds `n` faces (NCHW in `x`) into L2-normalised rows of `y`, one chunk at a time,
    /// on the calling thread.
    fn run(&self, k: &Kernels, n: usize, x: &[f32], y: &mut [f32]) {
        let r = self.resolution;
        let chunk = n.min(FACES_PER_CHUNK);
        let act = self.max_activation_per_face() * chunk;
        let (mut a, mut mid, mut b) = (vec![0.0f32; act], vec![0.0f32; act], vec![0.0f32; act]);
        let hp = packed::padded(HEAD_CHANNELS);
        let ep = packed::padded(EMBEDDING_SIZE);
        let mut pooled = vec![0.0f32; chunk * hp];
        let mut emb = vec![0.0f32; chunk * ep];
        let mut i0 = 0;
        while i0 < n {
            let nc = (n - i0).min(chunk);
            let xs = &x[i0 * 3 * r * r..(i0 + nc) * 3 * r * r];
            let g = ConvGeom::square(nc, 3, r, r, STEM_CHANNELS, 3, 1, 1, 1);
            let mut len = packed::padded(STEM_CHANNELS) * nc * r * r;
            (k.direct_conv_packed)(
                &g,
                xs,
                &self.stem.weight,
                &self.stem.epilogue(None),
                &mut a[..len],
            );
            let mut side = r;
            for blk in &self.blocks {
                let s = blk.spec;
                let g = ConvGeom::square(nc, s.c_in, side, side, s.c_in, 3, s.stride, 1, s.c_in);
                side = g.out_h();
                let mid_len = packed::padded(s.c_in) * nc * side * side;
                (k.depthwise_packed)(
                    &g,
                    &a[..len],
                    &blk.dw.weight,
                    &blk.dw.epilogue(None),
                    &mut mid[..mid_len],
                );
                let shape = PointwiseShape {
                    pixels: nc * side * side,
                    c_in: s.c_in,
                    c_out: s.c_out,
                };
                let out_len = packed::padded(s.c_out) * nc * side * side;
                let residual = if s.residual { Some(&a[..len]) } else { None };
                (k.pointwise_packed)(
                    &shape,
                    &mid[..mid_len],
                    &blk.pw.weight,
                    &blk.pw.epilogue(residual),
                    &mut b[..out_len],
                );
                std::mem::swap(&mut a, &mut b);
                len = out_len;
            }
            (k.global_depthwise_packed)(
                nc,
                HEAD_CHANNELS,
                side * side,
                &a[..len],
                &self.gdc_weight,
                &self.gdc_bias,
                &mut pooled[..nc * hp],
            );
            (k.linear_packed)(
                nc,
                hp,
                EMBEDDING_SIZE,
                &pooled[..nc * hp],
                &self.linear_weight,
                &self.linear_bias,
                &mut emb[..nc * ep],
            );
            for j in 0..nc {
                y[(i0 + j) * EMBEDDING_SIZE..(i0 + j + 1) * EMBEDDING_SIZE]
                    .copy_from_slice(&emb[j * ep..j * ep + EMBEDDING_SIZE]);
            }
            i0 += nc;
        }
        (k.l2_normalize)(n, EMBEDDING_SIZE, y);
    }
}

impl StudentNet {
    /// Loads and folds a student weight file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        StudentParams::load(path)?.fold()
    }

    pub fn resolution(&self) -> usize {
        self.info.resolution
    }

    fn check_input(&self, x: &Tensor) -> Result<usize> {
        let [n, c, h, w] = x.dims4("student input")?;
        let r = self.info.resolution;
        if c != 3 || h != r || w != r {
            return Err(Error::Shape(format!(
                "student input must be [n, 3, {r}, {r}], got [{n}, {c}, {h}, {w}]"
            )));
        }
        Ok(n)
    }

    /// Embeds a batch `[n, 3, r, r]` of normalised faces into L2-normalised `[n, 128]` on the
    /// packed kernels of `k`, splitting large batches over [`default_threads`] threads.
    pub fn forward(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        self.forward_threads(k, x, default_threads())
    }

    /// `forward` on at most `threads` threads (at least one). Each thread takes a contiguous
    /// share of the batch (whole chunks of [`FACES_PER_CHUNK`]); the result does not depend
    /// on the thread count, since each face is computed by the same kernel calls in the same order.
    pub fn forward_threads(&self, k: &Kernels, x: &Tensor, threads: usize) -> Result<Tensor> {
        let n = self.check_input(x)?;
        if n == 0 {
            return Ok(Tensor::zeros(&[0, EMBEDDING_SIZE]));
        }
        if threads == 0 {
            return Err(Error::parameter("threads", "`threads` must be at least 1"));
        }
        let face = 3 * self.info.resolution * self.info.resolution;
        let mut out = vec![0.0f32; n * EMBEDDING_SIZE];
        let per = n.div_ceil(threads).div_ceil(FACES_PER_CHUNK) * FACES_PER_CHUNK;
        if per >= n {
            self.packed.run(k, n, x.data(), &mut out);
        } else {
            std::thread::scope(|s| {
                for (xs, ys) in x
                    .data()
                    .chunks(per * face)
                    .zip(out.chunks_mut(per * EMBEDDING_SIZE))
                {
                    let m = ys.len() / EMBEDDING_SIZE;
                    s.spawn(move || self.packed.run(k, m, xs, ys));
                }
            });
        }
        Tensor::new(&[n, EMBEDDING_SIZE], out)
    }

    /// The reference forward pass: unpacked layers through `ops` (NCHW, one op at a time, no
    /// fusion). On the scalar table it is the specification the packed path is tested against.
    pub fn forward_reference(&self, k: &Kernels, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let mut y = self.stem.forward(k, x)?;
        for b in &self.blocks {
            let mid = b.dw.forward(k, &y)?;
            let mut out = b.pw.forward(k, &mid)?;
            if b.residual {
                ops::add(k, &mut out, &y)?;
            }
            y = out;
        }
        let pooled = ops::global_depthwise_conv(k, &y, &self.gdc_weight, Some(&self.gdc_bias))?;
        let mut emb = ops::linear(k, &pooled, &self.linear_weight, Some(&self.linear_bias))?;
        ops::l2_normalize(k, &mut emb)?;
        Ok(emb)
    }
}
