// Depthwise 3x3 convolution, pad 1, stride 1 or 2 (one filter per channel), fused bias + PReLU.
// One thread per output value: the op is memory-bound, so coalesced rows are what matter.

template <typename T>
__device__ void depthwise3x3_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                        const float* __restrict__ bias, const float* alpha,
                                        T* __restrict__ y, int n, int c, int h, int wd,
                                        int stride) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const long long total = (long long)n * c * oh * ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % ow);
        const int oy = (int)((i / ow) % oh);
        const long long plane = i / ((long long)ow * oh);  // b * c + ch
        const int ch = (int)(plane % c);
        const long long xbase = plane * h * wd;
        float acc = 0.0f;
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = oy * stride + ky - 1;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < 3; ++kx) {
                const int ix = ox * stride + kx - 1;
                if (ix < 0 || ix >= wd) continue;
                acc += load_f32(x, xbase + iy * wd + ix) * load_f32(w, ch * 9 + ky * 3 + kx);
            }
        }
        store_f32(y, i, bias_prelu(acc, bias[ch], alpha, ch));
    }
}

extern "C" __global__ void depthwise3x3_bias_prelu_f32(const float* x, const float* w,
                                                       const float* bias, const float* alpha,
                                                       float* y, int n, int c, int h, int wd,
                                                       int stride) {
    depthwise3x3_bias_prelu(x, w, bias, alpha, y, n, c, h, wd, stride);
}

extern "C" __global__ void depthwise3x3_bias_prelu_f16(const half_bits* x, const half_bits* w,
                                                       const float* bias, const float* alpha,
                                                       half_bits* y, int n, int c, int h, int wd,
                                                       int stride) {
    depthwise3x3_bias_prelu(x, w, bias, alpha, y, n, c, h, wd, stride);
}
