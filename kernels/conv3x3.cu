// Direct 3x3 convolution, pad 1, any stride, dense channels: the student's stem (3 -> 32).
// One thread per output value; weights are tiny and stay in L1. Fused bias + PReLU.

template <typename T>
__device__ void conv3x3_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                   const float* __restrict__ bias, const float* alpha,
                                   T* __restrict__ y, int n, int c_in, int h, int wd, int c_out,
                                   int stride) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const long long total = (long long)n * c_out * oh * ow;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % ow);
        const int oy = (int)((i / ow) % oh);
        const int oc = (int)((i / ((long long)ow * oh)) % c_out);
        const long long b = i / ((long long)ow * oh * c_out);
        float acc = 0.0f;
        for (int ic = 0; ic < c_in; ++ic) {
            const long long xbase = (b * c_in + ic) * h * wd;
            const int wbase = (oc * c_in + ic) * 9;
            for (int ky = 0; ky < 3; ++ky) {
                const int iy = oy * stride + ky - 1;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < 3; ++kx) {
                    const int ix = ox * stride + kx - 1;
                    if (ix < 0 || ix >= wd) continue;
                    acc += load_f32(x, xbase + iy * wd + ix) * load_f32(w, wbase + ky * 3 + kx);
                }
            }
        }
        store_f32(y, i, bias_prelu(acc, bias[oc], alpha, oc));
    }
}

extern "C" __global__ void conv3x3_bias_prelu_f32(const float* x, const float* w,
                                                  const float* bias, const float* alpha, float* y,
                                                  int n, int c_in, int h, int wd, int c_out,
                                                  int stride) {
    conv3x3_bias_prelu(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}

extern "C" __global__ void conv3x3_bias_prelu_f16(const half_bits* x, const half_bits* w,
                                                  const float* bias, const float* alpha,
                                                  half_bits* y, int n, int c_in, int h, int wd,
                                                  int c_out, int stride) {
    conv3x3_bias_prelu(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride);
}
