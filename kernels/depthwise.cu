// Depthwise 3x3 convolution, pad 1, stride 1 or 2 (one filter per channel), fused bias + PReLU,
// as two kernels: rows (here) and tiles in shared memory (further down; the student's default).
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

// ---------------------------------------------------------------------------------------------
// Tiled version for small planes (the student's 4x4 to 32x32): a block of 256 threads stages
// `planes` consecutive whole input planes (one contiguous run of memory, planes * h * wd <=
// DW_TILE_ELEMS values) in shared memory as f32, loaded coalesced (16 bytes per lane where the
// run is aligned), with each plane's 9 weights, bias and slope. Each thread then computes
// outputs of the block's contiguous output run, so stores are coalesced too: where the output
// plane size divides the block (4x4, 8x8, 16x16, ...) a thread keeps one pixel position for
// every (256 / plane)-th plane, so no index is divided per output. Same arithmetic, in the same
// order, as the row kernel above. The host picks `planes` (<= DW_TILE_PLANES) and uses the row
// kernel for larger planes.

#define DW_TILE_ELEMS 4096
#define DW_TILE_PLANES 256

struct __align__(16) dw_vec16 {
    unsigned int w[4];
};

// Values [i0, i0 + 4) (f32) or [i0, i0 + 8) (f16) of `src` into xs[i0..], from one 16-byte load.
__device__ __forceinline__ int dw_vec_len(const float*) { return 4; }
__device__ __forceinline__ int dw_vec_len(const half_bits*) { return 8; }
__device__ __forceinline__ void dw_stage_vec(float* xs, const float* src, int i0) {
    const float4 v = *reinterpret_cast<const float4*>(src + i0);
    xs[i0] = v.x;
    xs[i0 + 1] = v.y;
    xs[i0 + 2] = v.z;
    xs[i0 + 3] = v.w;
}
__device__ __forceinline__ void dw_stage_vec(float* xs, const half_bits* src, int i0) {
    const dw_vec16 v = *reinterpret_cast<const dw_vec16*>(src + i0);
    const half_bits* h = reinterpret_cast<const half_bits*>(&v);
#pragma unroll
    for (int e = 0; e < 8; ++e) xs[i0 + e] = load_f32(h, e);
}

// One output value of staged plane `pl` at (oy, ox), bias and PReLU applied.
__device__ __forceinline__ float dw_tile_point(const float* xs, const float* ks, const float* bs,
                                               const float* as, const float* alpha, int pl,
                                               int oy, int ox, int h, int wd, int stride) {
    const float* xp = xs + pl * h * wd;
    const float* k = ks + pl * 9;
    const int iy0 = oy * stride - 1, ix0 = ox * stride - 1;
    float acc = 0.0f;
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= h) continue;
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) {
            const int ix = ix0 + kx;
            if (ix < 0 || ix >= wd) continue;
            acc += xp[iy * wd + ix] * k[ky * 3 + kx];
        }
    }
    float v = acc + bs[pl];
    if (alpha != nullptr && v < 0.0f) v *= as[pl];
    return v;
}

template <typename T>
__device__ void depthwise3x3_tile(const T* __restrict__ x, const T* __restrict__ w,
                                  const float* __restrict__ bias, const float* alpha,
                                  T* __restrict__ y, int n, int c, int h, int wd, int stride,
                                  int planes) {
    __shared__ __align__(16) float xs[DW_TILE_ELEMS];
    __shared__ float ks[DW_TILE_PLANES * 9];
    __shared__ float bs[DW_TILE_PLANES];
    __shared__ float as[DW_TILE_PLANES];
    const int t = threadIdx.x;
    const int hw = h * wd;
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const int ohw = oh * ow;
    const long long total = (long long)n * c;
    const long long p0 = (long long)blockIdx.x * planes;
    const int np = (int)min((long long)planes, total - p0);
    if (np <= 0) return;
    const int ch0 = (int)(p0 % c);  // channel of the first plane; plane pl has (ch0 + pl) % c

    // Input planes: one contiguous run of np * hw values.
    const T* src = x + p0 * hw;
    const int cnt = np * hw;
    const int vl = dw_vec_len(src);
    if ((cnt % vl) == 0 && (reinterpret_cast<unsigned long long>(src) & 15) == 0) {
        for (int i = t * vl; i < cnt; i += blockDim.x * vl) dw_stage_vec(xs, src, i);
    } else {
        for (int i = t; i < cnt; i += blockDim.x) xs[i] = load_f32(src, i);
    }
    // Each plane's channel parameters.
    for (int i = t; i < np * 9; i += blockDim.x) {
        const int pl = i / 9;
        ks[i] = load_f32(w, ((ch0 + pl) % c) * 9 + (i - pl * 9));
    }
    for (int i = t; i < np; i += blockDim.x) {
        const int ch = (ch0 + i) % c;
        bs[i] = bias[ch];
        as[i] = alpha != nullptr ? alpha[ch] : 1.0f;
    }
    __syncthreads();

    T* dst = y + p0 * ohw;
    if ((blockDim.x % ohw) == 0) {
        const int r = t % ohw;
        const int oy = r / ow, ox = r - (r / ow) * ow;
        const int step = blockDim.x / ohw;
        for (int pl = t / ohw; pl < np; pl += step)
            store_f32(dst, pl * ohw + r,
                      dw_tile_point(xs, ks, bs, as, alpha, pl, oy, ox, h, wd, stride));
    } else {
        for (int o = t; o < np * ohw; o += blockDim.x) {
            const int pl = o / ohw;
            const int r = o - pl * ohw;
            const int oy = r / ow;
            store_f32(dst, o,
                      dw_tile_point(xs, ks, bs, as, alpha, pl, oy, r - oy * ow, h, wd, stride));
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    depthwise3x3_tile_f32(const float* x, const float* w, const float* bias, const float* alpha,
                          float* y, int n, int c, int h, int wd, int stride, int planes) {
    depthwise3x3_tile(x, w, bias, alpha, y, n, c, h, wd, stride, planes);
}

extern "C" __global__ void __launch_bounds__(256)
    depthwise3x3_tile_f16(const half_bits* x, const half_bits* w, const float* bias,
                          const float* alpha, half_bits* y, int n, int c, int h, int wd,
                          int stride, int planes) {
    depthwise3x3_tile(x, w, bias, alpha, y, n, c, h, wd, stride, planes);
}
