// Direct 3x3 convolution, pad 1, any stride, dense channels: the student's stem (3 -> 32).
// One thread per output pixel computing every output channel, 16 at a time in registers: the
// 3x3 input window of each input channel is loaded once per 16 channels instead of once per
// channel, and the weights are warp-uniform loads (one transaction, L1-resident). Consecutive
// threads take consecutive pixels, so loads and the per-channel stores are coalesced.
// Indices are 32-bit (the host checks n * out_h * out_w < 2^31); memory offsets are 64-bit.

#define STEM_OC 16

template <typename T>
__device__ void conv3x3_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                   const float* __restrict__ bias, const float* alpha,
                                   T* __restrict__ y, int n, int c_in, int h, int wd, int c_out,
                                   int stride) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int hw_out = oh * ow;
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n * hw_out) return;
    const int b = g / hw_out;
    const int pix = g - b * hw_out;
    const int oy = pix / ow, ox = pix - (pix / ow) * ow;
    const int iy0 = oy * stride - 1, ix0 = ox * stride - 1;
    for (int oc0 = 0; oc0 < c_out; oc0 += STEM_OC) {
        float acc[STEM_OC];
#pragma unroll
        for (int i = 0; i < STEM_OC; ++i) acc[i] = 0.0f;
        for (int ic = 0; ic < c_in; ++ic) {
            const long long xbase = ((long long)b * c_in + ic) * h * wd;
            float v[9];
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int iy = iy0 + ky, ix = ix0 + kx;
                    v[ky * 3 + kx] = (iy >= 0 && iy < h && ix >= 0 && ix < wd)
                                         ? load_f32(x, xbase + iy * wd + ix)
                                         : 0.0f;
                }
            }
#pragma unroll
            for (int i = 0; i < STEM_OC; ++i) {
                const int oc = oc0 + i;
                if (oc >= c_out) break;
                const int wbase = (oc * c_in + ic) * 9;
#pragma unroll
                for (int t = 0; t < 9; ++t) acc[i] += v[t] * load_f32(w, wbase + t);
            }
        }
#pragma unroll
        for (int i = 0; i < STEM_OC; ++i) {
            const int oc = oc0 + i;
            if (oc >= c_out) break;
            store_f32(y, ((long long)b * c_out + oc) * hw_out + pix,
                      bias_prelu(acc[i], bias[oc], alpha, oc));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    conv3x3_bias_prelu_f32(const float* x, const float* w, const float* bias,
                           const float* alpha, float* y, int n, int c_in, int h, int wd,
                           int c_out, int stride) {
    conv3x3_bias_prelu(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}

extern "C" __global__ void __launch_bounds__(256)
    conv3x3_bias_prelu_f16(const half_bits* x, const half_bits* w, const float* bias,
                           const float* alpha, half_bits* y, int n, int c_in, int h, int wd,
                           int c_out, int stride) {
    conv3x3_bias_prelu(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}

// ---------------------------------------------------------------------------------------------
// The same convolution for small weight sets (the stem: 3 -> 32 is 864 weights): the block
// first stages every weight in shared memory as f32, laid out [c_in][tap][c_out padded to 4],
// so that one 16-byte broadcast read feeds 4 output channels' FMAs (the kernel above issues
// one load per FMA). Each thread keeps 32 output channels in registers and loads its 3x3 input
// window once per input channel. Per output channel the sums run in the same order (input
// channel, then tap) as above, so the results are identical. The host uses it when
// c_in * 9 * round_up(c_out, 4) <= STEM_SMEM_W.

#define STEM_SMEM_W 8192
#define STEM_ACC 32

template <typename T>
__device__ void conv3x3_smem(const T* __restrict__ x, const T* __restrict__ w,
                             const float* __restrict__ bias, const float* alpha,
                             T* __restrict__ y, int n, int c_in, int h, int wd, int c_out,
                             int stride) {
    __shared__ __align__(16) float ws[STEM_SMEM_W];
    const int ocp = (c_out + 3) & ~3;
    const int wcount = c_in * 9 * ocp;
    for (int i = threadIdx.x; i < wcount; i += blockDim.x) {
        const int oc = i % ocp, k = i / ocp;  // k = ic * 9 + tap
        ws[i] = oc < c_out ? load_f32(w, oc * c_in * 9 + k) : 0.0f;
    }
    __syncthreads();
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int hw_out = oh * ow;
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n * hw_out) return;
    const int b = g / hw_out;
    const int pix = g - b * hw_out;
    const int oy = pix / ow, ox = pix - (pix / ow) * ow;
    const int iy0 = oy * stride - 1, ix0 = ox * stride - 1;
    for (int oc0 = 0; oc0 < c_out; oc0 += STEM_ACC) {
        float acc[STEM_ACC];
#pragma unroll
        for (int i = 0; i < STEM_ACC; ++i) acc[i] = 0.0f;
        for (int ic = 0; ic < c_in; ++ic) {
            const long long xbase = ((long long)b * c_in + ic) * h * wd;
            float v[9];
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int iy = iy0 + ky, ix = ix0 + kx;
                    v[ky * 3 + kx] = (iy >= 0 && iy < h && ix >= 0 && ix < wd)
                                         ? load_f32(x, xbase + iy * wd + ix)
                                         : 0.0f;
                }
            }
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                const float4* wp = reinterpret_cast<const float4*>(ws + (ic * 9 + t) * ocp + oc0);
#pragma unroll
                for (int j = 0; j < STEM_ACC / 4; ++j) {
                    if (oc0 + 4 * j >= ocp) break;
                    const float4 q = wp[j];
                    acc[4 * j] += v[t] * q.x;
                    acc[4 * j + 1] += v[t] * q.y;
                    acc[4 * j + 2] += v[t] * q.z;
                    acc[4 * j + 3] += v[t] * q.w;
                }
            }
        }
#pragma unroll
        for (int i = 0; i < STEM_ACC; ++i) {
            const int oc = oc0 + i;
            if (oc >= c_out) break;
            store_f32(y, ((long long)b * c_out + oc) * hw_out + pix,
                      bias_prelu(acc[i], bias[oc], alpha, oc));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    conv3x3_smem_f32(const float* x, const float* w, const float* bias, const float* alpha,
                     float* y, int n, int c_in, int h, int wd, int c_out, int stride) {
    conv3x3_smem(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}

extern "C" __global__ void __launch_bounds__(256)
    conv3x3_smem_f16(const half_bits* x, const half_bits* w, const float* bias,
                     const float* alpha, half_bits* y, int n, int c_in, int h, int wd,
                     int c_out, int stride) {
    conv3x3_smem(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}

// ---------------------------------------------------------------------------------------------
// The shared-memory convolution with two horizontally adjacent output pixels per thread (output
// width even): each 16-byte weight read feeds 8 FMAs instead of 4, which halves the shared-
// memory reads that bound the kernel above. 16 output channels per pass keep the registers of
// both pixels' sums near the single-pixel kernel's. Same sums in the same order, so the
// results are identical.

#define STEM_ACC2 16

template <typename T>
__device__ void conv3x3_smem2(const T* __restrict__ x, const T* __restrict__ w,
                              const float* __restrict__ bias, const float* alpha,
                              T* __restrict__ y, int n, int c_in, int h, int wd, int c_out,
                              int stride) {
    __shared__ __align__(16) float ws[STEM_SMEM_W];
    const int ocp = (c_out + 3) & ~3;
    const int wcount = c_in * 9 * ocp;
    for (int i = threadIdx.x; i < wcount; i += blockDim.x) {
        const int oc = i % ocp, k = i / ocp;  // k = ic * 9 + tap
        ws[i] = oc < c_out ? load_f32(w, oc * c_in * 9 + k) : 0.0f;
    }
    __syncthreads();
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int hw_out = oh * ow;
    const int half_w = ow >> 1;  // the host guarantees ow is even
    const int pairs = oh * half_w;
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n * pairs) return;
    const int b = g / pairs;
    const int pp = g - b * pairs;
    const int oy = pp / half_w;
    const int ox = (pp - oy * half_w) * 2;
    const int pix = oy * ow + ox;
    const int iy0 = oy * stride - 1;
    const int ix0 = ox * stride - 1, ix1 = ix0 + stride;
    for (int oc0 = 0; oc0 < c_out; oc0 += STEM_ACC2) {
        float a0[STEM_ACC2], a1[STEM_ACC2];
#pragma unroll
        for (int i = 0; i < STEM_ACC2; ++i) a0[i] = a1[i] = 0.0f;
        for (int ic = 0; ic < c_in; ++ic) {
            const long long xbase = ((long long)b * c_in + ic) * h * wd;
            float v0[9], v1[9];
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const int iy = iy0 + ky;
                const bool row = iy >= 0 && iy < h;
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int xa = ix0 + kx, xb = ix1 + kx;
                    v0[ky * 3 + kx] =
                        (row && xa >= 0 && xa < wd) ? load_f32(x, xbase + iy * wd + xa) : 0.0f;
                    v1[ky * 3 + kx] =
                        (row && xb >= 0 && xb < wd) ? load_f32(x, xbase + iy * wd + xb) : 0.0f;
                }
            }
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                const float4* wp = reinterpret_cast<const float4*>(ws + (ic * 9 + t) * ocp + oc0);
#pragma unroll
                for (int j = 0; j < STEM_ACC2 / 4; ++j) {
                    if (oc0 + 4 * j >= ocp) break;
                    const float4 q = wp[j];
                    a0[4 * j] += v0[t] * q.x;
                    a0[4 * j + 1] += v0[t] * q.y;
                    a0[4 * j + 2] += v0[t] * q.z;
                    a0[4 * j + 3] += v0[t] * q.w;
                    a1[4 * j] += v1[t] * q.x;
                    a1[4 * j + 1] += v1[t] * q.y;
                    a1[4 * j + 2] += v1[t] * q.z;
                    a1[4 * j + 3] += v1[t] * q.w;
                }
            }
        }
#pragma unroll
        for (int i = 0; i < STEM_ACC2; ++i) {
            const int oc = oc0 + i;
            if (oc >= c_out) break;
            const long long o = ((long long)b * c_out + oc) * hw_out + pix;
            store_f32(y, o, bias_prelu(a0[i], bias[oc], alpha, oc));
            store_f32(y, o + 1, bias_prelu(a1[i], bias[oc], alpha, oc));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256, 3)
    conv3x3_smem2_f32(const float* x, const float* w, const float* bias, const float* alpha,
                      float* y, int n, int c_in, int h, int wd, int c_out, int stride) {
    conv3x3_smem2(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}

extern "C" __global__ void __launch_bounds__(256, 3)
    conv3x3_smem2_f16(const half_bits* x, const half_bits* w, const float* bias,
                      const float* alpha, half_bits* y, int n, int c_in, int h, int wd,
                      int c_out, int stride) {
    conv3x3_smem2(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}
