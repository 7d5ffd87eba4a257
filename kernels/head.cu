// The student's head, fused: global depthwise conv (+ folded BN) -> linear (+ folded BN) ->
// L2 normalisation. One block per face; the pooled vector and the embedding live in shared
// memory, so only the final f32 embedding goes back to global memory.

template <typename T>
__device__ void head_gdc_linear_l2(const T* __restrict__ x, const T* __restrict__ gw,
                                   const float* __restrict__ gb, const T* __restrict__ lw,
                                   const float* __restrict__ lb, float* __restrict__ y, int c,
                                   int hw, int m) {
    extern __shared__ float smem[];
    float* pooled = smem;           // c values
    float* emb = smem + c;          // m values
    float* partial = smem + c + m;  // one per warp
    const long long b = blockIdx.x;
    const int tid = threadIdx.x, nt = blockDim.x;

    for (int ch = tid; ch < c; ch += nt) {
        const long long base = (b * c + ch) * hw;
        float acc = 0.0f;
        for (int p = 0; p < hw; ++p) acc += load_f32(x, base + p) * load_f32(gw, (long long)ch * hw + p);
        pooled[ch] = acc + gb[ch];
    }
    __syncthreads();

    float sq = 0.0f;
    for (int o = tid; o < m; o += nt) {
        float acc = 0.0f;
        for (int k = 0; k < c; ++k) acc += pooled[k] * load_f32(lw, (long long)o * c + k);
        acc += lb[o];
        emb[o] = acc;
        sq += acc * acc;
    }
    for (int off = 16; off > 0; off >>= 1) sq += __shfl_down_sync(0xffffffffu, sq, off);
    if ((tid & 31) == 0) partial[tid >> 5] = sq;
    __syncthreads();
    if (tid == 0) {
        float total = 0.0f;
        for (int i = 0; i < (nt + 31) / 32; ++i) total += partial[i];
        partial[0] = fmaxf(sqrtf(total), 1e-12f);
    }
    __syncthreads();
    const float norm = partial[0];
    for (int o = tid; o < m; o += nt) y[b * m + o] = emb[o] / norm;
}

extern "C" __global__ void head_gdc_linear_l2_f32(const float* x, const float* gw,
                                                  const float* gb, const float* lw,
                                                  const float* lb, float* y, int c, int hw,
                                                  int m) {
    head_gdc_linear_l2(x, gw, gb, lw, lb, y, c, hw, m);
}

extern "C" __global__ void head_gdc_linear_l2_f16(const half_bits* x, const half_bits* gw,
                                                  const float* gb, const half_bits* lw,
                                                  const float* lb, float* y, int c, int hw,
                                                  int m) {
    head_gdc_linear_l2(x, gw, gb, lw, lb, y, c, hw, m);
}

// The head split in three for large batches (one block per face leaves most threads idle and
// re-reads the linear weights per face): `gdc_bias_*` below, the linear layer as a pointwise
// GEMM over the batch (hw = 1, kernels/pointwise.cu), then `l2_rows_*`.

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
