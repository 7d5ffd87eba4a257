// Training kernels (f32 storage): batch-norm with batch statistics, PReLU, residual add, the head
// (global depthwise conv, linear) and the backward of every op the student's training graph has.
// The forward convolutions reuse the inference kernels with a zero bias and no PReLU.
//
// Reductions (batch statistics, weight gradients) accumulate in double inside a thread, then a
// fixed-order tree across the block, and for the pointwise weight gradient a fixed-order sum over
// column chunks: no atomics, so every result is deterministic run to run.

#define TR_THREADS 256

// Sums `v` over the block's TR_THREADS threads in a fixed order; every thread gets the total.
__device__ double block_sum(double v, double* shm) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();  // shm may still be read by a previous call
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int i = 0; i < TR_THREADS / 32; ++i) t += shm[i];
        shm[TR_THREADS / 32] = t;
    }
    __syncthreads();
    return shm[TR_THREADS / 32];
}

// ---- batch-norm (training) and PReLU ----

// One block per channel: the batch mean and biased variance over (n, hw), two passes.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
    bn_stats_f32(const float* __restrict__ x, float* __restrict__ mean, float* __restrict__ var,
                 int n, int c, int hw) {
    __shared__ double shm[TR_THREADS / 32 + 1];
    const int ch = blockIdx.x;
    const long long count = (long long)n * hw;
    double s = 0.0;
    for (long long q = threadIdx.x; q < count; q += TR_THREADS) {
        const long long b = q / hw, p = q - b * hw;
        s += x[(b * c + ch) * hw + p];
    }
    const double m = block_sum(s, shm) / (double)count;
    double v = 0.0;
    for (long long q = threadIdx.x; q < count; q += TR_THREADS) {
        const long long b = q / hw, p = q - b * hw;
        const double d = x[(b * c + ch) * hw + p] - m;
        v += d * d;
    }
    const double vr = block_sum(v, shm) / (double)count;
    if (threadIdx.x == 0) {
        mean[ch] = (float)m;
        var[ch] = (float)vr;
    }
}

// z = (x − mean)·γ/√(var + ε) + β (the CPU's f32 formula), then y = PReLU(z) with per-channel
// slopes, or y = z when `alpha` is null. z is kept for the backward pass.
extern "C" __global__ void bn_prelu_forward_f32(const float* __restrict__ x,
                                                const float* __restrict__ mean,
                                                const float* __restrict__ var,
                                                const float* __restrict__ gamma,
                                                const float* __restrict__ beta, const float* alpha,
                                                float* __restrict__ z, float* __restrict__ y, int n,
                                                int c, int hw, float eps) {
    const long long total = (long long)n * c * hw;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)((i / hw) % c);
        const float scale = gamma[ch] / sqrtf(var[ch] + eps);
        const float zv = (x[i] - mean[ch]) * scale + beta[ch];
        z[i] = zv;
        y[i] = (alpha != nullptr && zv < 0.0f) ? zv * alpha[ch] : zv;
    }
}

// The gradient reaching the batch-norm output: through the PReLU when there is one.
__device__ __forceinline__ float through_prelu(float d, const float* z, const float* alpha,
                                               long long i, int ch) {
    return (alpha != nullptr && z[i] < 0.0f) ? d * alpha[ch] : d;
}

// One block per channel: dβ = Σ dz, dγ = Σ dz·x̂ and the PReLU slope gradient dα = Σ dy·z (z < 0),
// where dz is dy taken back through the PReLU. `z`, `alpha` and `dalpha` are null without PReLU.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
    bn_prelu_backward_sums_f32(const float* __restrict__ x, const float* z,
                               const float* __restrict__ dy, const float* __restrict__ mean,
                               const float* __restrict__ var, const float* alpha,
                               float* __restrict__ dgamma, float* __restrict__ dbeta,
                               float* dalpha, int n, int c, int hw, float eps) {
    __shared__ double shm[TR_THREADS / 32 + 1];
    const int ch = blockIdx.x;
    const long long count = (long long)n * hw;
    const float invstd = 1.0f / sqrtf(var[ch] + eps);
    double sd = 0.0, sdx = 0.0, da = 0.0;
    for (long long q = threadIdx.x; q < count; q += TR_THREADS) {
        const long long b = q / hw, p = q - b * hw;
        const long long i = (b * c + ch) * hw + p;
        const float d = dy[i];
        if (alpha != nullptr && z[i] < 0.0f) da += (double)d * z[i];
        const float dz = through_prelu(d, z, alpha, i, ch);
        const float xhat = (x[i] - mean[ch]) * invstd;
        sd += dz;
        sdx += (double)dz * xhat;
    }
    sd = block_sum(sd, shm);
    sdx = block_sum(sdx, shm);
    if (alpha != nullptr) da = block_sum(da, shm);
    if (threadIdx.x == 0) {
        dbeta[ch] = (float)sd;
        dgamma[ch] = (float)sdx;
        if (alpha != nullptr) dalpha[ch] = (float)da;
    }
}

// dx = γ/√(var + ε)/count · (count·dz − Σdz − x̂·Σdz·x̂), the CPU's formula, given the sums above.
extern "C" __global__ void bn_prelu_backward_dx_f32(
    const float* __restrict__ x, const float* z, const float* __restrict__ dy,
    const float* __restrict__ gamma, const float* __restrict__ mean, const float* __restrict__ var,
    const float* alpha, const float* __restrict__ dgamma, const float* __restrict__ dbeta,
    float* __restrict__ dx, int n, int c, int hw, float eps) {
    const long long total = (long long)n * c * hw;
    const float count = (float)((long long)n * hw);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ch = (int)((i / hw) % c);
        const float invstd = 1.0f / sqrtf(var[ch] + eps);
        const float xhat = (x[i] - mean[ch]) * invstd;
        const float k = gamma[ch] * invstd / count;
        const float dz = through_prelu(dy[i], z, alpha, i, ch);
        dx[i] = k * (count * dz - dbeta[ch] - xhat * dgamma[ch]);
    }
}

// a += b, elementwise (the residual add, forward and backward).
extern "C" __global__ void add_inplace_f32(float* __restrict__ a, const float* __restrict__ b,
                                           long long len) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x)
        a[i] += b[i];
}

// ---- convolution backward ----

// Depthwise 3x3 (pad 1, `stride`) input gradient: one thread per input value gathers the output
// taps that read it.
extern "C" __global__ void depthwise_backward_data_f32(const float* __restrict__ dy,
                                                       const float* __restrict__ w,
                                                       float* __restrict__ dx, int n, int c, int h,
                                                       int wd, int stride) {
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const long long total = (long long)n * c * h * wd;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long plane = i / ((long long)h * wd);
        const int pix = (int)(i - plane * h * wd);
        const int iy = pix / wd, ix = pix - (pix / wd) * wd;
        const int ch = (int)(plane % c);
        const float* dys = dy + plane * oh * ow;
        float acc = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int ty = iy + 1 - ky;
            if (ty < 0 || ty % stride != 0 || ty / stride >= oh) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int tx = ix + 1 - kx;
                if (tx < 0 || tx % stride != 0 || tx / stride >= ow) continue;
                acc += dys[(ty / stride) * ow + tx / stride] * w[ch * 9 + ky * 3 + kx];
            }
        }
        dx[i] = acc;
    }
}

// Weight gradient of a 3x3 conv (pad 1, `stride`), dense (the stem) or depthwise: one block per
// weight row (output channel, input channel of its group), its 9 taps summed over the batch.
extern "C" __global__ void __launch_bounds__(TR_THREADS)
    conv3x3_backward_weight_f32(const float* __restrict__ x, const float* __restrict__ dy,
                                float* __restrict__ dw, int n, int c_in, int h, int wd, int c_out,
                                int stride, int depthwise) {
    __shared__ double shm[TR_THREADS / 32 + 1];
    const int cin_g = depthwise ? 1 : c_in;
    const int oc = blockIdx.x / cin_g, icg = blockIdx.x - oc * cin_g;
    const int ic = depthwise ? oc : icg;
    const int oh = (h - 1) / stride + 1, ow = (wd - 1) / stride + 1;
    const long long per = (long long)oh * ow, count = (long long)n * per;
    double acc[9];
#pragma unroll
    for (int t = 0; t < 9; ++t) acc[t] = 0.0;
    for (long long q = threadIdx.x; q < count; q += TR_THREADS) {
        const long long b = q / per;
        const int pix = (int)(q - b * per);
        const int oy = pix / ow, ox = pix - (pix / ow) * ow;
        const float d = dy[(b * c_out + oc) * per + pix];
        const float* xs = x + (b * c_in + ic) * (long long)h * wd;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = oy * stride + ky - 1;
            if (iy < 0 || iy >= h) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int ix = ox * stride + kx - 1;
                if (ix < 0 || ix >= wd) continue;
                acc[ky * 3 + kx] += (double)d * xs[iy * wd + ix];
            }
        }
    }
    for (int t = 0; t < 9; ++t) {
        const double s = block_sum(acc[t], shm);
        if (threadIdx.x == 0) dw[(long long)blockIdx.x * 9 + t] = (float)s;
    }
}

// Pointwise weight gradient dw[co, ci] = Σ_j dy[co, j]·x[ci, j] over the columns j = (image,
// pixel), as 16x16 output tiles per block; blockIdx.z takes one chunk of `chunk` columns and
// writes its partial sums, which `sum_partials_f32` adds in chunk order.
extern "C" __global__ void __launch_bounds__(256)
    pointwise_backward_weight_partial_f32(const float* __restrict__ x,
                                          const float* __restrict__ dy,
                                          double* __restrict__ partial, int n, int c_in,
                                          int c_out, int hw, long long chunk) {
    __shared__ float xs[16][17];
    __shared__ float ds[16][17];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int ci0 = blockIdx.x * 16, co0 = blockIdx.y * 16;
    const long long cols = (long long)n * hw;
    const long long j_begin = blockIdx.z * chunk;
    const long long j_end = min(cols, j_begin + chunk);
    double acc = 0.0;
    for (long long j0 = j_begin; j0 < j_end; j0 += 16) {
        const long long j = j0 + tx;
        const bool ok = j < j_end;
        const long long b = ok ? j / hw : 0, p = ok ? j - b * hw : 0;
        const int ci = ci0 + ty, co = co0 + ty;
        xs[ty][tx] = (ok && ci < c_in) ? x[(b * c_in + ci) * hw + p] : 0.0f;
        ds[ty][tx] = (ok && co < c_out) ? dy[(b * c_out + co) * hw + p] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 16; ++k) acc += (double)ds[ty][k] * xs[tx][k];
        __syncthreads();
    }
    const int ci = ci0 + tx, co = co0 + ty;
    if (ci < c_in && co < c_out)
        partial[((long long)blockIdx.z * c_out + co) * c_in + ci] = acc;
}

// out[i] = Σ_s partial[s·len + i], in chunk order.
extern "C" __global__ void sum_partials_f32(const double* __restrict__ partial,
                                            float* __restrict__ out, int len, int splits) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= len) return;
    double s = 0.0;
    for (int k = 0; k < splits; ++k) s += partial[(long long)k * len + i];
    out[i] = (float)s;
}

// ---- head: global depthwise conv and linear ----

// y[b, ch] = Σ_p x[b, ch, p]·w[ch, p], one thread per (image, channel), in the CPU's order.
extern "C" __global__ void gdc_forward_f32(const float* __restrict__ x, const float* __restrict__ w,
                                           float* __restrict__ y, int n, int c, int hw) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    const int ch = (int)(i % c);
    float acc = 0.0f;
    for (int p = 0; p < hw; ++p) acc += x[i * hw + p] * w[ch * hw + p];
    y[i] = acc;
}

// One thread per weight (ch, p): dx[b, ch, p] = dy[b, ch]·w[ch, p] and dw[ch, p] = Σ_b dy·x.
extern "C" __global__ void gdc_backward_f32(const float* __restrict__ x,
                                            const float* __restrict__ w,
                                            const float* __restrict__ dy, float* __restrict__ dx,
                                            float* __restrict__ dw, int n, int c, int hw) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= c * hw) return;
    const int ch = i / hw, p = i - ch * hw;
    double acc = 0.0;
    for (int b = 0; b < n; ++b) {
        const float d = dy[(long long)b * c + ch];
        const long long xi = ((long long)b * c + ch) * hw + p;
        dx[xi] = d * w[i];
        acc += (double)d * x[xi];
    }
    dw[i] = (float)acc;
}

// y[b, o] = Σ_i x[b, i]·w[o, i], one thread per output, in the CPU's order.
extern "C" __global__ void linear_forward_f32(const float* __restrict__ x,
                                              const float* __restrict__ w, float* __restrict__ y,
                                              int n, int k, int m) {
    const long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= (long long)n * m) return;
    const long long b = t / m;
    const int o = (int)(t - b * m);
    float acc = 0.0f;
    for (int i = 0; i < k; ++i) acc += x[b * k + i] * w[(long long)o * k + i];
    y[t] = acc;
}

// dx[b, i] = Σ_o dy[b, o]·w[o, i], one thread per input value, in the CPU's order.
extern "C" __global__ void linear_backward_data_f32(const float* __restrict__ dy,
                                                    const float* __restrict__ w,
                                                    float* __restrict__ dx, int n, int k, int m) {
    const long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (t >= (long long)n * k) return;
    const long long b = t / k;
    const int i = (int)(t - b * k);
    float acc = 0.0f;
    for (int o = 0; o < m; ++o) acc += dy[b * m + o] * w[(long long)o * k + i];
    dx[t] = acc;
}

// dw[o, i] = Σ_b dy[b, o]·x[b, i], one thread per weight.
extern "C" __global__ void linear_backward_weight_f32(const float* __restrict__ x,
                                                      const float* __restrict__ dy,
                                                      float* __restrict__ dw, int n, int k, int m) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= m * k) return;
    const int o = t / k, i = t - o * k;
    double acc = 0.0;
    for (int b = 0; b < n; ++b) acc += (double)dy[(long long)b * m + o] * x[(long long)b * k + i];
    dw[t] = (float)acc;
}
