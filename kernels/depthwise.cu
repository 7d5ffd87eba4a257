// Depthwise 3x3 convolution, pad 1, stride 1 or 2 (one filter per channel), fused bias + PReLU.
// One thread per output value, consecutive threads on consecutive pixels (coalesced rows).

// Block layout: `planes` whole output planes (image, channel) per block of 256 threads, so that
// 4x4 maps still fill a block and every index is 32-bit (the host checks n * c < 2^31); only
// memory offsets are 64-bit. A 64-bit division costs ~20x a 32-bit one on the GPU.
template <typename T>
__device__ void depthwise3x3_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                        const float* __restrict__ bias, const float* alpha,
                                        T* __restrict__ y, int n, int c, int h, int wd,
                                        int stride, int planes) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int hw_out = oh * ow;
    const int total_planes = n * c;
    const int first = blockIdx.x * planes;
    for (int q = threadIdx.x; q < planes * hw_out; q += blockDim.x) {
        const int plane = first + q / hw_out;  // b * c + ch
        if (plane >= total_planes) break;
        const int pix = q - (q / hw_out) * hw_out;
        const int oy = pix / ow, ox = pix - (pix / ow) * ow;
        const int ch = plane % c;
        const long long xbase = (long long)plane * h * wd;
        float acc = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = oy * stride + ky - 1;
            if (iy < 0 || iy >= h) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int ix = ox * stride + kx - 1;
                if (ix < 0 || ix >= wd) continue;
                acc += load_f32(x, xbase + iy * wd + ix) * load_f32(w, ch * 9 + ky * 3 + kx);
            }
        }
        store_f32(y, (long long)plane * hw_out + pix, bias_prelu(acc, bias[ch], alpha, ch));
    }
}

extern "C" __global__ void depthwise3x3_bias_prelu_f32(const float* x, const float* w,
                                                       const float* bias, const float* alpha,
                                                       float* y, int n, int c, int h, int wd,
                                                       int stride, int planes) {
    depthwise3x3_bias_prelu(x, w, bias, alpha, y, n, c, h, wd, stride, planes);
}

extern "C" __global__ void depthwise3x3_bias_prelu_f16(const half_bits* x, const half_bits* w,
                                                       const float* bias, const float* alpha,
                                                       half_bits* y, int n, int c, int h, int wd,
                                                       int stride, int planes) {
    depthwise3x3_bias_prelu(x, w, bias, alpha, y, n, c, h, wd, stride, planes);
}
