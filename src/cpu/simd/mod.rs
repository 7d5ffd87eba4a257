//! The packed kernels' and the hot backward kernels' loop nests, written once over a 16-lane
//! vector type (`F32x16`) that each ISA file (avx2, avx512, neon) implements. Each ISA file
//! instantiates them through `forward_entries!` and `backward_entries!`, which write its
//! `#[target_feature]` shims, so an ISA file is its vector type plus its tile constants.
//! Must not be called except through those shims: it has no feature checks of its own.
//!
//! Every function here is `#[inline(always)]`, so each instantiation is compiled into the ISA
//! shim's body, where the shim's target features let the intrinsics inline too. Register
//! blocking (`R`, rows per micro-tile) is chosen per ISA by the caller; tails use smaller tiles.
//! `forward.rs` holds the inference kernels on the blocked layout of `packed`, `backward.rs`
//! the trainer's kernels on plain NCHW tensors.

/// Sixteen f32 lanes: one AVX-512 register, two AVX2 registers or four NEON registers.
///
/// # Safety
/// Every method requires the implementing ISA to be present, and pointer arguments must be
/// valid for 16 consecutive f32 reads or writes.
pub(super) trait F32x16: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `self + a·b`, fused.
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    /// `self < 0 ? self·alpha : self`, lane by lane (the scalar PReLU exactly).
    unsafe fn prelu(self, alpha: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    /// `self < 0 ? if_neg : otherwise`, lane by lane (the backward kernels' PReLU mask).
    unsafe fn select_neg(self, if_neg: Self, otherwise: Self) -> Self;
    /// Whether `transpose16` is a register transpose (worth using to move 16 channels between
    /// NCHW planes and the channel-interleaved layout) rather than the default through memory.
    const FAST_TRANSPOSE: bool = false;
    /// Transposes a 16×16 tile held as 16 rows: lane `j` of row `i` becomes lane `i` of row `j`.
    #[inline(always)]
    unsafe fn transpose16(m: &mut [Self; 16]) {
        let mut t = [0.0f32; 256];
        for (i, v) in m.iter().enumerate() {
            v.store(t.as_mut_ptr().add(i * 16));
        }
        let mut row = [0.0f32; 16];
        for (i, v) in m.iter_mut().enumerate() {
            for (j, r) in row.iter_mut().enumerate() {
                *r = t[j * 16 + i];
            }
            *v = Self::load(row.as_ptr());
        }
    }
    /// The sum of the 16 lanes (in lane order; only used for short reductions).
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        let mut out = [0.0f32; 16];
        self.store(out.as_mut_ptr());
        out.iter().sum()
    }
}

/// Runs a tail tile of a power-of-two height at most `$rows` (8, 4, 2 or 1, so only four
/// tail sizes are compiled per kernel) and evaluates to that height.
macro_rules! tail_tile {
    ($rows:expr, $f:ident :: <$V:ty> ($($arg:expr),* $(,)?)) => {{
        let rows = $rows;
        if rows >= 8 {
            $f::<$V, 8>($($arg),*);
            8
        } else if rows >= 4 {
            $f::<$V, 4>($($arg),*);
            4
        } else if rows >= 2 {
            $f::<$V, 2>($($arg),*);
            2
        } else {
            $f::<$V, 1>($($arg),*);
            1
        }
    }};
}

pub(super) mod backward;
pub(super) mod forward;

pub(super) use backward::backward_entries;
pub(super) use forward::forward_entries;
