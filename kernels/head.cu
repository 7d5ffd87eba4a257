// The student's head in three kernels (one block per face would leave most threads idle and
// re-read the linear weights per face): `gdc_bias_*` below, the linear layer (+ folded BN) as a
// pointwise GEMM over the batch (hw = 1, kernels/pointwise.cu), then `l2_rows_*`.

// Global depthwise conv + bias: pooled[b, ch] = sum_p x[b, ch, p] * gw[ch, p] + gb[ch].
// One thread per (image, channel); consecutive threads read consecutive planes.
template <typename T>
__device__ void gdc_bias(const T* __restrict__ x, const T* __restrict__ gw,
                         const float* __restrict__ gb, T* __restrict__ pooled, int n, int c,
                         int hw) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;  // b * c + ch
    if (i >= n * c) return;
    const int ch = i % c;
    const long long base = (long long)i * hw;
    float acc = 0.0f;
    for (int p = 0; p < hw; ++p) acc += load_f32(x, base + p) * load_f32(gw, (long long)ch * hw + p);
    store_f32(pooled, i, acc + gb[ch]);
}

extern "C" __global__ void __launch_bounds__(256)
    gdc_bias_f32(const float* x, const float* gw, const float* gb, float* pooled, int n, int c,
                 int hw) {
    gdc_bias(x, gw, gb, pooled, n, c, hw);
}

extern "C" __global__ void __launch_bounds__(256)
    gdc_bias_f16(const half_bits* x, const half_bits* gw, const float* gb, half_bits* pooled,
                 int n, int c, int hw) {
    gdc_bias(x, gw, gb, pooled, n, c, hw);
}

// L2 normalisation of rows of m values into f32: one warp per row (norm floored at 1e-12, as
// `cpu::scalar::l2_normalize`).
template <typename T>
__device__ void l2_rows(const T* __restrict__ v, float* __restrict__ y, int n, int m) {
    const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= n) return;
    const long long base = (long long)row * m;
    float sq = 0.0f;
    for (int o = lane; o < m; o += 32) {
        const float a = load_f32(v, base + o);
        sq += a * a;
    }
    for (int off = 16; off > 0; off >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, off);
    const float norm = fmaxf(sqrtf(sq), 1e-12f);
    for (int o = lane; o < m; o += 32) y[base + o] = load_f32(v, base + o) / norm;
}

extern "C" __global__ void __launch_bounds__(256)
    l2_rows_f32(const float* v, float* y, int n, int m) {
    l2_rows(v, y, n, m);
}

extern "C" __global__ void __launch_bounds__(256)
    l2_rows_f16(const half_bits* v, float* y, int n, int m) {
    l2_rows(v, y, n, m);
}
