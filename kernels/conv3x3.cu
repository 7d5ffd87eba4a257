// Direct 3x3 convolution, pad 1, any stride, dense channels: the student's stem (3 -> 32).
// One thread per output value; the 864 weights stay in L1. Fused bias + PReLU.

// Same block layout as depthwise.cu: `planes` output planes (image, out-channel) per block,
// 32-bit indices (host checks n * c_out < 2^31), 64-bit memory offsets.
template <typename T>
__device__ void conv3x3_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                   const float* __restrict__ bias, const float* alpha,
                                   T* __restrict__ y, int n, int c_in, int h, int wd, int c_out,
                                   int stride, int planes) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int hw_out = oh * ow;
    const int total_planes = n * c_out;
    const int first = blockIdx.x * planes;
    for (int q = threadIdx.x; q < planes * hw_out; q += blockDim.x) {
        const int plane = first + q / hw_out;  // b * c_out + oc
        if (plane >= total_planes) break;
        const int pix = q - (q / hw_out) * hw_out;
        const int oy = pix / ow, ox = pix - (pix / ow) * ow;
        const int oc = plane % c_out, b = plane / c_out;
        float acc = 0.0f;
        for (int ic = 0; ic < c_in; ++ic) {
            const long long xbase = ((long long)b * c_in + ic) * h * wd;
            const int wbase = (oc * c_in + ic) * 9;
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const int iy = oy * stride + ky - 1;
                if (iy < 0 || iy >= h) continue;
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int ix = ox * stride + kx - 1;
                    if (ix < 0 || ix >= wd) continue;
                    acc += load_f32(x, xbase + iy * wd + ix) * load_f32(w, wbase + ky * 3 + kx);
                }
            }
        }
        store_f32(y, (long long)plane * hw_out + pix, bias_prelu(acc, bias[oc], alpha, oc));
    }
}

extern "C" __global__ void conv3x3_bias_prelu_f32(const float* x, const float* w,
                                                  const float* bias, const float* alpha, float* y,
                                                  int n, int c_in, int h, int wd, int c_out,
                                                  int stride, int planes) {
    conv3x3_bias_prelu(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride, planes);
}

extern "C" __global__ void conv3x3_bias_prelu_f16(const half_bits* x, const half_bits* w,
                                                  const float* bias, const float* alpha,
                                                  half_bits* y, int n, int c_in, int h, int wd,
                                                  int c_out, int stride, int planes) {
    conv3x3_bias_prelu(x, w, bias, alpha, y, n, c_in, h, wd, c_out, stride, planes);
}
