// Depthwise 3x3 convolution, pad 1, stride 1 or 2 (one filter per channel), fused bias + PReLU.
// One thread per output row (image, channel, row): its 9 weights, bias and slope are loaded
// once into registers and reused along the row; consecutive threads take consecutive rows of
// a plane, so a warp reads and writes contiguous memory. Every index is 32-bit (the host checks
// n * c * out_h < 2^31); only memory offsets are 64-bit.

template <typename T>
__device__ void depthwise3x3_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                        const float* __restrict__ bias, const float* alpha,
                                        T* __restrict__ y, int n, int c, int h, int wd,
                                        int stride) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n * c * oh) return;
    const int plane = row / oh;  // b * c + ch
    const int oy = row - plane * oh;
    const int ch = plane % c;
    float k[9];
#pragma unroll
    for (int i = 0; i < 9; ++i) k[i] = load_f32(w, ch * 9 + i);
    const float b = bias[ch];
    const long long xbase = (long long)plane * h * wd;
    const long long ybase = ((long long)plane * oh + oy) * ow;
    const int iy0 = oy * stride - 1;
    for (int ox = 0; ox < ow; ++ox) {
        const int ix0 = ox * stride - 1;
        float acc = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = iy0 + ky;
            if (iy < 0 || iy >= h) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int ix = ix0 + kx;
                if (ix < 0 || ix >= wd) continue;
                acc += load_f32(x, xbase + iy * wd + ix) * k[ky * 3 + kx];
            }
        }
        store_f32(y, ybase + ox, bias_prelu(acc, b, alpha, ch));
    }
}

extern "C" __global__ void __launch_bounds__(256)
    depthwise3x3_bias_prelu_f32(const float* x, const float* w, const float* bias,
                                const float* alpha, float* y, int n, int c, int h, int wd,
                                int stride) {
    depthwise3x3_bias_prelu(x, w, bias, alpha, y, n, c, h, wd, stride);
}

extern "C" __global__ void __launch_bounds__(256)
    depthwise3x3_bias_prelu_f16(const half_bits* x, const half_bits* w, const float* bias,
                                const float* alpha, half_bits* y, int n, int c, int h, int wd,
                                int stride) {
    depthwise3x3_bias_prelu(x, w, bias, alpha, y, n, c, h, wd, stride);
}
