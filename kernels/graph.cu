// Generic kernels for imported graphs (the SFace teacher): a direct convolution for any kernel,
// stride, padding and groups with the fused bias + PReLU epilogue; a per-channel affine (+PReLU);
// an elementwise add; and a split-K GEMM for fully connected layers (whose K = 50176 in SFace
// dominates at small batch). 1x1 convs reuse `pointwise_bias_prelu` of pointwise.cu.

// Direct convolution, NCHW, OIHW weights [c_out][c_in / groups][kh][kw], then bias and optional
// PReLU. One thread per output value; `planes` whole output planes (image, out channel) per
// block of 256 threads, as in depthwise.cu, so every index but memory offsets is 32-bit.
template <typename T>
__device__ void graph_conv(const T* __restrict__ x, const T* __restrict__ w,
                           const float* __restrict__ bias, const float* alpha,
                           T* __restrict__ y, int n, int c_in, int h, int wd, int c_out, int kh,
                           int kw, int sh, int sw, int pt, int pl, int groups, int oh, int ow,
                           int planes) {
    const int hw_out = oh * ow;
    const int total_planes = n * c_out;
    const int cin_g = c_in / groups, cout_g = c_out / groups;
    const int first = blockIdx.x * planes;
    for (int q = threadIdx.x; q < planes * hw_out; q += blockDim.x) {
        const int plane = first + q / hw_out;  // b * c_out + co
        if (plane >= total_planes) break;
        const int pix = q - (q / hw_out) * hw_out;
        const int oy = pix / ow, ox = pix - (pix / ow) * ow;
        const int b = plane / c_out, co = plane - (plane / c_out) * c_out;
        const int g = co / cout_g;
        float acc = 0.0f;
        for (int ci = 0; ci < cin_g; ++ci) {
            const long long xbase = ((long long)b * c_in + g * cin_g + ci) * h * wd;
            const long long wbase = ((long long)co * cin_g + ci) * kh * kw;
            for (int ky = 0; ky < kh; ++ky) {
                const int iy = oy * sh + ky - pt;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; ++kx) {
                    const int ix = ox * sw + kx - pl;
                    if (ix < 0 || ix >= wd) continue;
                    acc += load_f32(x, xbase + (long long)iy * wd + ix) *
                           load_f32(w, wbase + ky * kw + kx);
                }
            }
        }
        store_f32(y, (long long)plane * hw_out + pix, bias_prelu(acc, bias[co], alpha, co));
    }
}

extern "C" __global__ void graph_conv_f32(const float* x, const float* w, const float* bias,
                                          const float* alpha, float* y, int n, int c_in, int h,
                                          int wd, int c_out, int kh, int kw, int sh, int sw,
                                          int pt, int pl, int groups, int oh, int ow,
                                          int planes) {
    graph_conv(x, w, bias, alpha, y, n, c_in, h, wd, c_out, kh, kw, sh, sw, pt, pl, groups, oh,
               ow, planes);
}

extern "C" __global__ void graph_conv_f16(const half_bits* x, const half_bits* w,
                                          const float* bias, const float* alpha, half_bits* y,
                                          int n, int c_in, int h, int wd, int c_out, int kh,
                                          int kw, int sh, int sw, int pt, int pl, int groups,
                                          int oh, int ow, int planes) {
    graph_conv(x, w, bias, alpha, y, n, c_in, h, wd, c_out, kh, kw, sh, sw, pt, pl, groups, oh,
               ow, planes);
}

// y = x * scale[c] + shift[c] (when scale is given), then PReLU with slope[c] (when given), over
// NC(HW); `planes` whole (image, channel) planes per block. x and y may be the same buffer.
template <typename T>
__device__ void graph_affine_prelu(const T* x, const float* scale, const float* shift,
                                   const float* slope, T* y, int n, int c, int hw, int planes) {
    const int total_planes = n * c;
    const int first = blockIdx.x * planes;
    for (int q = threadIdx.x; q < planes * hw; q += blockDim.x) {
        const int plane = first + q / hw;
        if (plane >= total_planes) break;
        const int ch = plane % c;
        const long long i = (long long)plane * hw + (q - (q / hw) * hw);
        float v = load_f32(x, i);
        if (scale != nullptr) v = v * scale[ch] + shift[ch];
        if (slope != nullptr && v < 0.0f) v *= slope[ch];
        store_f32(y, i, v);
    }
}

extern "C" __global__ void graph_affine_prelu_f32(const float* x, const float* scale,
                                                  const float* shift, const float* slope,
                                                  float* y, int n, int c, int hw, int planes) {
    graph_affine_prelu(x, scale, shift, slope, y, n, c, hw, planes);
}

extern "C" __global__ void graph_affine_prelu_f16(const half_bits* x, const float* scale,
                                                  const float* shift, const float* slope,
                                                  half_bits* y, int n, int c, int hw,
                                                  int planes) {
    graph_affine_prelu(x, scale, shift, slope, y, n, c, hw, planes);
}

// y = a + b elementwise (grid-stride).
template <typename T>
__device__ void graph_add(const T* a, const T* b, T* y, long long len) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        store_f32(y, i, load_f32(a, i) + load_f32(b, i));
    }
}

extern "C" __global__ void graph_add_f32(const float* a, const float* b, float* y,
                                         long long len) {
    graph_add(a, b, y, len);
}

extern "C" __global__ void graph_add_f16(const half_bits* a, const half_bits* b, half_bits* y,
                                         long long len) {
    graph_add(a, b, y, len);
}

// Fully connected layer, split over K: partial[z][r][o] = sum over k in chunk z of
// x[r][k] * w[o][k], for x [n][k] and w [m][k] (both K-contiguous). Tiles of 64 rows (batch) x
// 64 outputs, K in steps of 16; 16x16 threads, each owning 4 rows (ty + 16 i) x 4 outputs
// (tx + 16 j), so neighbouring threads store neighbouring outputs. grid = (m/64, n/64, splits).
// At batch 1 the K split is what spreads the 25 MB weight read over the whole GPU.
#define LIN_BM 64
#define LIN_BN 64
#define LIN_BK 16

template <typename T>
__device__ void graph_linear_splitk(const T* __restrict__ x, const T* __restrict__ w,
                                    float* __restrict__ partial, int n, int k, int m,
                                    int chunk) {
    __shared__ float Ws[LIN_BK][LIN_BM + 1];
    __shared__ float Xs[LIN_BK][LIN_BN + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int t = ty * 16 + tx;
    const int o0 = blockIdx.x * LIN_BM, r0 = blockIdx.y * LIN_BN;
    const int kb = blockIdx.z * chunk;
    const int ke = min(k, kb + chunk);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    // Each thread loads 4 values of each tile: element e = t + 256 l is (row e / 16, kk e % 16),
    // so 16 neighbouring threads read 16 consecutive K values of one row.
    const int l_kk = t % LIN_BK, l_row0 = t / LIN_BK;
    for (int k0 = kb; k0 < ke; k0 += LIN_BK) {
        const int kk = k0 + l_kk;
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int row = l_row0 + 16 * l;
            const int o = o0 + row, r = r0 + row;
            Ws[l_kk][row] = (o < m && kk < ke) ? load_f32(w, (long long)o * k + kk) : 0.0f;
            Xs[l_kk][row] = (r < n && kk < ke) ? load_f32(x, (long long)r * k + kk) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < LIN_BK; ++q) {
            float xv[4], wv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) xv[i] = Xs[q][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) wv[j] = Ws[q][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += xv[i] * wv[j];
        }
        __syncthreads();
    }
    float* out = partial + (long long)blockIdx.z * n * m;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int r = r0 + ty + 16 * i;
        if (r >= n) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int o = o0 + tx + 16 * j;
            if (o < m) out[(long long)r * m + o] = acc[i][j];
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    graph_linear_splitk_f32(const float* x, const float* w, float* partial, int n, int k, int m,
                            int chunk) {
    graph_linear_splitk(x, w, partial, n, k, m, chunk);
}

extern "C" __global__ void __launch_bounds__(256)
    graph_linear_splitk_f16(const half_bits* x, const half_bits* w, float* partial, int n,
                            int k, int m, int chunk) {
    graph_linear_splitk(x, w, partial, n, k, m, chunk);
}

// y[r][o] = bias[o] + sum over the splits of partial[z][r][o], in split order (deterministic).
template <typename T>
__device__ void graph_linear_reduce(const float* __restrict__ partial,
                                    const float* __restrict__ bias, T* __restrict__ y, int n,
                                    int m, int splits) {
    const long long len = (long long)n * m;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int z = 0; z < splits; ++z) acc += partial[z * len + i];
        store_f32(y, i, acc + bias[i % m]);
    }
}

extern "C" __global__ void graph_linear_reduce_f32(const float* partial, const float* bias,
                                                   float* y, int n, int m, int splits) {
    graph_linear_reduce(partial, bias, y, n, m, splits);
}

extern "C" __global__ void graph_linear_reduce_f16(const float* partial, const float* bias,
                                                   half_bits* y, int n, int m, int splits) {
    graph_linear_reduce(partial, bias, y, n, m, splits);
}
