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
