//! CPU kernels: the scalar reference and the per-ISA fast versions, behind one dispatch table
//! chosen once at run time. Kernels trust their shapes; `ops` validates them first.

pub mod scalar;

// Fast CPU kernels: one blocked layout, scalar oracles, the loop nests written once over a
// vector trait (`simd`), and one file per ISA holding its vector type and tile constants.
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod packed;
pub mod scalar_packed;
mod simd;

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// Geometry of a 2-D convolution over an NCHW batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_t: usize,
    pub pad_l: usize,
    pub pad_b: usize,
    pub pad_r: usize,
    pub groups: usize,
}

impl ConvGeom {
    /// A square-kernel conv with symmetric padding.
    #[allow(clippy::too_many_arguments)]
    pub fn square(
        n: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Self {
        ConvGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            kh: k,
            kw: k,
            stride_h: stride,
            stride_w: stride,
            pad_t: pad,
            pad_l: pad,
            pad_b: pad,
            pad_r: pad,
            groups,
        }
    }

    pub fn out_h(&self) -> usize {
        (self.h + self.pad_t + self.pad_b - self.kh) / self.stride_h + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + self.pad_l + self.pad_r - self.kw) / self.stride_w + 1
    }

    /// Checks that the geometry describes a computable convolution.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Shape(m));
        if self.groups == 0
            || self.stride_h == 0
            || self.stride_w == 0
            || self.kh == 0
            || self.kw == 0
        {
            return bad(format!(
                "conv needs non-zero groups, stride and kernel: {self:?}"
            ));
        }
        if self.c_in % self.groups != 0 || self.c_out % self.groups != 0 {
            return bad(format!(
                "conv channels {}→{} are not divisible by groups {}",
                self.c_in, self.c_out, self.groups
            ));
        }
        if self.h + self.pad_t + self.pad_b < self.kh || self.w + self.pad_l + self.pad_r < self.kw
        {
            return bad(format!(
                "conv kernel {}×{} is larger than the padded input {}×{}",
                self.kh,
                self.kw,
                self.h + self.pad_t + self.pad_b,
                self.w + self.pad_l + self.pad_r
            ));
        }
        Ok(())
    }

    /// Number of weights: `c_out * c_in/groups * kh * kw`.
    pub fn weight_len(&self) -> usize {
        self.c_out * (self.c_in / self.groups) * self.kh * self.kw
    }

    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }

    pub fn output_len(&self) -> usize {
        self.n * self.c_out * self.out_h() * self.out_w()
    }
}

/// The instruction sets a kernel table can be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Parses a `BRIDGE_ISA` value.
    pub fn parse(s: &str) -> Result<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(Isa::Scalar),
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            "neon" => Ok(Isa::Neon),
            other => Err(Error::UnsupportedIsa(format!(
                "`{other}` is not one of scalar, avx2, avx512, neon"
            ))),
        }
    }

    /// Whether this CPU can run kernels for this ISA.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// `conv2d(geometry, x, weight, bias, y)`.
pub type ConvFn = fn(&ConvGeom, &[f32], &[f32], Option<&[f32]>, &mut [f32]);
/// `global_depthwise_conv(n, c, hw, x, weight, bias, y)`.
pub type GlobalDepthwiseFn = fn(usize, usize, usize, &[f32], &[f32], Option<&[f32]>, &mut [f32]);
/// `linear(n, k, m, x, weight, bias, y)`.
pub type LinearFn = fn(usize, usize, usize, &[f32], &[f32], Option<&[f32]>, &mut [f32]);

/// The arguments of a conv's input (data) gradient: reads the output gradient `dy` and the
/// weights `w` (OIHW), overwrites `dx` (the input's shape). Generic over the float type so the
/// scalar reference also runs in f64 for the gradient checks.
pub struct ConvDataGrad<'a, T = f32> {
    pub dy: &'a [T],
    pub w: &'a [T],
    pub dx: &'a mut [T],
}

/// The arguments of a conv's weight gradient, summed over the batch: reads the input `x` and
/// the output gradient `dy`, overwrites `dw` (OIHW).
pub struct ConvWeightGrad<'a, T = f32> {
    pub x: &'a [T],
    pub dy: &'a [T],
    pub dw: &'a mut [T],
}

/// `conv_backward_data(geometry, ConvDataGrad { dy, w, dx })`.
pub type ConvBackwardDataFn = fn(&ConvGeom, ConvDataGrad<'_>);
/// `conv_backward_weight(geometry, ConvWeightGrad { x, dy, dw })`.
pub type ConvBackwardWeightFn = fn(&ConvGeom, ConvWeightGrad<'_>);
/// `batch_norm_train_forward(n, c, hw, x, gamma, beta, eps, y, batch_mean, batch_var)`.
pub type BatchNormTrainFn =
    fn(usize, usize, usize, &[f32], &[f32], &[f32], f32, &mut [f32], &mut [f32], &mut [f32]);
/// The arguments of a batch-norm backward pass over an NC(HW) batch: reads the forward input
/// `x`, the output gradient `dy`, the scale `gamma` and the statistics the forward normalised
/// with (`mean`, `var`: the batch's, biased, in training; the running ones in eval) and `eps`;
/// overwrites `dx`, `dgamma` and `dbeta`.
pub struct BatchNormBackward<'a, T = f32> {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub x: &'a [T],
    pub dy: &'a [T],
    pub gamma: &'a [T],
    pub mean: &'a [T],
    pub var: &'a [T],
    pub eps: T,
    pub dx: &'a mut [T],
    pub dgamma: &'a mut [T],
    pub dbeta: &'a mut [T],
}

/// The arguments of the trainer's fused training-mode batch-norm + PReLU forward over an
/// NC(HW) batch: reads `x`, `gamma`, `beta`, `eps` and the PReLU slopes `alpha`; overwrites
/// the batch-norm output `y` (the PReLU's input, which its backward needs), the PReLU output
/// `z`, and the batch `mean` and biased `var`. One pass writes both outputs.
pub struct BatchNormPreluForward<'a> {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub x: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub alpha: &'a [f32],
    pub eps: f32,
    pub y: &'a mut [f32],
    pub z: &'a mut [f32],
    pub mean: &'a mut [f32],
    pub var: &'a mut [f32],
}

/// `batch_norm_prelu_train_forward(BatchNormPreluForward { … })`.
pub type BatchNormPreluFn = fn(BatchNormPreluForward<'_>);
/// `batch_norm_{train,eval}_backward(BatchNormBackward { n, c, hw, x, dy, … })`.
pub type BatchNormBackwardFn = fn(BatchNormBackward<'_>);
/// `prelu_backward(n, c, hw, x, alpha, dy, dx, dalpha)`.
pub type PreluBackwardFn = fn(usize, usize, usize, &[f32], &[f32], &[f32], &mut [f32], &mut [f32]);
/// `global_depthwise_backward(n, c, hw, x, w, dy, dx, dw)`.
pub type GlobalDepthwiseBackwardFn =
    fn(usize, usize, usize, &[f32], &[f32], &[f32], &mut [f32], &mut [f32]);
/// `linear_backward_{data,weight}(n, k, m, a, b, out)`: data `a = dy, b = w, out = dx`;
/// weight `a = x, b = dy, out = dw`.
pub type LinearBackwardFn = fn(usize, usize, usize, &[f32], &[f32], &mut [f32]);
/// `l2_normalize_backward(n, d, x, dy, dx)`.
pub type L2NormalizeBackwardFn = fn(usize, usize, &[f32], &[f32], &mut [f32]);

/// One table of kernels for one ISA. Every caller goes through a table; no caller
/// chooses an ISA itself.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub isa: Isa,
    pub conv2d: ConvFn,
    pub prelu: fn(usize, usize, usize, &mut [f32], &[f32]),
    pub relu: fn(&mut [f32]),
    pub add: fn(&mut [f32], &[f32]),
    pub global_depthwise_conv: GlobalDepthwiseFn,
    pub linear: LinearFn,
    pub l2_normalize: fn(usize, usize, &mut [f32]),
    // ---- backward kernels (training) ----
    pub conv2d_backward_data: ConvBackwardDataFn,
    pub conv2d_backward_weight: ConvBackwardWeightFn,
    pub depthwise_backward_data: ConvBackwardDataFn,
    pub depthwise_backward_weight: ConvBackwardWeightFn,
    pub pointwise_backward_data: ConvBackwardDataFn,
    pub pointwise_backward_weight: ConvBackwardWeightFn,
    pub batch_norm_train_forward: BatchNormTrainFn,
    pub batch_norm_prelu_train_forward: BatchNormPreluFn,
    pub batch_norm_train_backward: BatchNormBackwardFn,
    pub prelu_backward: PreluBackwardFn,
    pub global_depthwise_backward: GlobalDepthwiseBackwardFn,
    pub linear_backward_data: LinearBackwardFn,
    pub linear_backward_weight: LinearBackwardFn,
    pub l2_normalize_backward: L2NormalizeBackwardFn,
    pub batch_norm_eval_backward: BatchNormBackwardFn,
    // Packed, fused kernels on the blocked layout of `packed`. The scalar table
    // holds their references from `scalar_packed`.
    pub pointwise_packed: packed::PointwisePackedFn,
    pub depthwise_packed: packed::DepthwisePackedFn,
    pub direct_conv_packed: packed::DirectConvPackedFn,
    pub global_depthwise_packed: packed::GlobalDepthwisePackedFn,
    pub linear_packed: packed::LinearPackedFn,
    /// `chains × 16 × iterations` register-only FMAs (the single-core FMA peak probe);
    /// returns a checksum. `fma_probe_chains` is that ISA's chain count.
    pub fma_probe: fn(usize) -> f32,
    pub fma_probe_chains: usize,
}

impl Kernels {
    /// The scalar reference table.
    pub fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            conv2d: scalar::conv2d,
            prelu: scalar::prelu,
            relu: scalar::relu,
            add: scalar::add,
            global_depthwise_conv: scalar::global_depthwise_conv,
            linear: scalar::linear,
            l2_normalize: scalar::l2_normalize,
            conv2d_backward_data: scalar::conv2d_backward_data::<f32>,
            conv2d_backward_weight: scalar::conv2d_backward_weight::<f32>,
            depthwise_backward_data: scalar::depthwise_backward_data::<f32>,
            depthwise_backward_weight: scalar::depthwise_backward_weight::<f32>,
            pointwise_backward_data: scalar::pointwise_backward_data::<f32>,
            pointwise_backward_weight: scalar::pointwise_backward_weight::<f32>,
            batch_norm_train_forward: scalar::batch_norm_train_forward::<f32>,
            batch_norm_prelu_train_forward: scalar::batch_norm_prelu_train_forward,
            batch_norm_train_backward: scalar::batch_norm_train_backward::<f32>,
            prelu_backward: scalar::prelu_backward::<f32>,
            global_depthwise_backward: scalar::global_depthwise_backward::<f32>,
            linear_backward_data: scalar::linear_backward_data::<f32>,
            linear_backward_weight: scalar::linear_backward_weight::<f32>,
            l2_normalize_backward: scalar::l2_normalize_backward::<f32>,
            batch_norm_eval_backward: scalar::batch_norm_eval_backward::<f32>,
            pointwise_packed: scalar_packed::pointwise_packed,
            depthwise_packed: scalar_packed::depthwise_packed,
            direct_conv_packed: scalar_packed::direct_conv_packed,
            global_depthwise_packed: scalar_packed::global_depthwise_packed,
            linear_packed: scalar_packed::linear_packed,
            fma_probe: scalar_packed::fma_probe,
            fma_probe_chains: 12,
        }
    }

    /// The AVX2+FMA table. Callers must have checked `Isa::Avx2.available()`.
    #[cfg(target_arch = "x86_64")]
    fn avx2_unchecked() -> Kernels {
        Kernels {
            isa: Isa::Avx2,
            conv2d: avx2::forward::conv2d,
            linear: avx2::forward::linear,
            pointwise_packed: avx2::forward::pointwise_packed,
            depthwise_packed: avx2::forward::depthwise_packed,
            direct_conv_packed: avx2::forward::direct_conv_packed,
            global_depthwise_packed: avx2::forward::global_depthwise_packed,
            linear_packed: avx2::forward::linear_packed,
            fma_probe: avx2::forward::fma_probe,
            pointwise_backward_data: avx2::backward::pointwise_backward_data,
            pointwise_backward_weight: avx2::backward::pointwise_backward_weight,
            depthwise_backward_data: avx2::backward::depthwise_backward_data,
            depthwise_backward_weight: avx2::backward::depthwise_backward_weight,
            prelu_backward: avx2::backward::prelu_backward,
            prelu: avx2::backward::prelu,
            conv2d_backward_weight: avx2::backward::conv2d_backward_weight,
            batch_norm_train_forward: avx2::backward::batch_norm_train_forward,
            batch_norm_prelu_train_forward: avx2::backward::batch_norm_prelu_train_forward,
            batch_norm_train_backward: avx2::backward::batch_norm_train_backward,
            fma_probe_chains: avx2::PROBE_CHAINS,
            ..Kernels::scalar()
        }
    }

    /// The AVX-512F table. Callers must have checked `Isa::Avx512.available()`.
    #[cfg(target_arch = "x86_64")]
    fn avx512_unchecked() -> Kernels {
        Kernels {
            isa: Isa::Avx512,
            conv2d: avx512::forward::conv2d,
            linear: avx512::forward::linear,
            pointwise_packed: avx512::forward::pointwise_packed,
            depthwise_packed: avx512::forward::depthwise_packed,
            direct_conv_packed: avx512::forward::direct_conv_packed,
            global_depthwise_packed: avx512::forward::global_depthwise_packed,
            linear_packed: avx512::forward::linear_packed,
            fma_probe: avx512::forward::fma_probe,
            pointwise_backward_data: avx512::backward::pointwise_backward_data,
            pointwise_backward_weight: avx512::backward::pointwise_backward_weight,
            depthwise_backward_data: avx512::backward::depthwise_backward_data,
            depthwise_backward_weight: avx512::backward::depthwise_backward_weight,
            prelu_backward: avx512::backward::prelu_backward,
            prelu: avx512::backward::prelu,
            conv2d_backward_weight: avx512::backward::conv2d_backward_weight,
            batch_norm_train_forward: avx512::backward::batch_norm_train_forward,
            batch_norm_prelu_train_forward: avx512::backward::batch_norm_prelu_train_forward,
            batch_norm_train_backward: avx512::backward::batch_norm_train_backward,
            fma_probe_chains: avx512::PROBE_CHAINS,
            ..Kernels::scalar()
        }
    }

    /// The NEON table. Callers must have checked `Isa::Neon.available()`.
    #[cfg(target_arch = "aarch64")]
    fn neon_unchecked() -> Kernels {
        Kernels {
            isa: Isa::Neon,
            conv2d: neon::forward::conv2d,
            linear: neon::forward::linear,
            pointwise_packed: neon::forward::pointwise_packed,
            depthwise_packed: neon::forward::depthwise_packed,
            direct_conv_packed: neon::forward::direct_conv_packed,
            global_depthwise_packed: neon::forward::global_depthwise_packed,
            linear_packed: neon::forward::linear_packed,
            fma_probe: neon::forward::fma_probe,
            pointwise_backward_data: neon::backward::pointwise_backward_data,
            pointwise_backward_weight: neon::backward::pointwise_backward_weight,
            depthwise_backward_data: neon::backward::depthwise_backward_data,
            depthwise_backward_weight: neon::backward::depthwise_backward_weight,
            prelu_backward: neon::backward::prelu_backward,
            prelu: neon::backward::prelu,
            conv2d_backward_weight: neon::backward::conv2d_backward_weight,
            batch_norm_train_forward: neon::backward::batch_norm_train_forward,
            batch_norm_prelu_train_forward: neon::backward::batch_norm_prelu_train_forward,
            batch_norm_train_backward: neon::backward::batch_norm_train_backward,
            fma_probe_chains: neon::PROBE_CHAINS,
            ..Kernels::scalar()
        }
    }

    /// The table for `isa`, or an error if this CPU lacks it or no kernels exist for it yet.
    pub fn for_isa(isa: Isa) -> Result<Kernels> {
        if !isa.available() {
            return Err(Error::UnsupportedIsa(format!(
                "this CPU does not support {}; run without BRIDGE_ISA or choose another",
                isa.name()
            )));
        }
        match isa {
            Isa::Scalar => Ok(Kernels::scalar()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Ok(Kernels::avx2_unchecked()),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Ok(Kernels::avx512_unchecked()),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => Ok(Kernels::neon_unchecked()),
            #[allow(unreachable_patterns)]
            other => Err(Error::UnsupportedIsa(format!(
                "no {} kernels are built into this binary",
                other.name()
            ))),
        }
    }

    /// Every ISA this CPU can run, scalar first.
    pub fn available_isas() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .filter(|i| Kernels::for_isa(*i).is_ok())
            .collect()
    }

    /// Every table this CPU can run except the scalar one: what the SIMD tests check against
    /// scalar and what the kernel benches time, ISA by ISA.
    pub fn fast_tables() -> Vec<Kernels> {
        [Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .filter_map(|i| Kernels::for_isa(i).ok())
            .collect()
    }

    /// The best table this CPU supports.
    pub fn best() -> Kernels {
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Neon] {
            if let Ok(k) = Kernels::for_isa(isa) {
                return k;
            }
        }
        Kernels::scalar()
    }
}

/// Chooses the table from `BRIDGE_ISA` (if set) or the CPU's features.
pub fn select_kernels() -> Result<Kernels> {
    match std::env::var("BRIDGE_ISA") {
        Ok(v) if !v.trim().is_empty() => Kernels::for_isa(Isa::parse(&v)?),
        _ => Ok(Kernels::best()),
    }
}

/// The line `kernels()` logs once (at `BRIDGE_LOG=info`) when it chooses the table.
fn chosen_isa_line(k: &Kernels) -> String {
    let why = match std::env::var("BRIDGE_ISA") {
        Ok(v) if !v.trim().is_empty() => format!("BRIDGE_ISA={}", v.trim()),
        _ => "the best this CPU supports; BRIDGE_ISA overrides".to_string(),
    };
    format!("CPU kernels: {} ({why})", k.isa.name())
}

static KERNELS: OnceLock<std::result::Result<Kernels, String>> = OnceLock::new();

/// The process-wide kernel table, chosen on first use.
pub fn kernels() -> Result<&'static Kernels> {
    let chosen = KERNELS.get_or_init(|| {
        let k = select_kernels().map_err(|e| e.to_string());
        if let Ok(k) = &k {
            crate::log::info(&chosen_isa_line(k));
        }
        k
    });
    match chosen {
        Ok(k) => Ok(k),
        Err(msg) => Err(Error::UnsupportedIsa(
            msg.trim_start_matches("unsupported instruction set: ")
                .to_string(),
        )),
    }
}
