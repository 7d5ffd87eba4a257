// Pointwise (1x1) convolution as a tiled GEMM: y[co, j] = sum_ci w[co, ci] * x[ci, j], where the
// column j runs over (image, pixel) of the whole batch, so small 4x4 maps still fill the tiles.
// Epilogue fused: bias, optional PReLU, then optional residual add (the block's skip path).

#define PW_BM 64
#define PW_BN 64
#define PW_BK 16

// Block: 16x16 threads; each thread owns 4 output channels x 4 columns, strided by 16 so that
// neighbouring threads touch neighbouring columns (coalesced loads/stores, no bank conflicts).
template <typename T>
__device__ void pointwise_bias_prelu(const T* __restrict__ x, const T* __restrict__ w,
                                     const float* __restrict__ bias, const float* alpha,
                                     const T* residual, T* __restrict__ y, int n, int c_in,
                                     int c_out, int hw) {
    __shared__ float As[PW_BK][PW_BM];
    __shared__ float Bs[PW_BK][PW_BN];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int t = ty * 16 + tx;
    const int m0 = blockIdx.y * PW_BM;
    const long long j0 = (long long)blockIdx.x * PW_BN;
    const long long cols = (long long)n * hw;

    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[r][q] = 0.0f;

    // Each thread always loads the same weight column (kk) and the same input column (col):
    // 256 is a multiple of both tile widths. So the (image, pixel) split of its column, a 64-bit
    // division, is done once here instead of in the k loop.
    const int a_kk = t % PW_BK, a_row0 = t / PW_BK;  // rows a_row0 + 16 * l
    const int b_col = t % PW_BN, b_kk0 = t / PW_BN;  // k rows b_kk0 + 4 * l
    const long long bj = j0 + b_col;
    const bool b_in = bj < cols;
    const long long b_base = b_in ? (bj / hw) * c_in * (long long)hw + bj % hw : 0;

    for (int k0 = 0; k0 < c_in; k0 += PW_BK) {
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int row = a_row0 + 16 * l;
            const int m = m0 + row, k = k0 + a_kk;
            As[a_kk][row] = (m < c_out && k < c_in) ? load_f32(w, (long long)m * c_in + k) : 0.0f;
        }
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int kk = b_kk0 + 4 * l;
            const int k = k0 + kk;
            Bs[kk][b_col] = (b_in && k < c_in) ? load_f32(x, b_base + (long long)k * hw) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < PW_BK; ++kk) {
            float a[4], bv[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) a[r] = As[kk][ty + 16 * r];
#pragma unroll
            for (int q = 0; q < 4; ++q) bv[q] = Bs[kk][tx + 16 * q];
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int q = 0; q < 4; ++q) acc[r][q] += a[r] * bv[q];
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int m = m0 + ty + 16 * r;
        if (m >= c_out) continue;
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const long long j = j0 + tx + 16 * q;
            if (j >= cols) continue;
            const long long b = j / hw, p = j % hw;
            const long long o = (b * c_out + m) * hw + p;
            float v = bias_prelu(acc[r][q], bias[m], alpha, m);
            if (residual != nullptr) v += load_f32(residual, o);
            store_f32(y, o, v);
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    pointwise_bias_prelu_f32(const float* x, const float* w, const float* bias,
                             const float* alpha, const float* residual, float* y, int n,
                             int c_in, int c_out, int hw) {
    pointwise_bias_prelu(x, w, bias, alpha, residual, y, n, c_in, c_out, hw);
}

extern "C" __global__ void __launch_bounds__(256)
    pointwise_bias_prelu_f16(const half_bits* x, const half_bits* w, const float* bias,
                             const float* alpha, const half_bits* residual, half_bits* y, int n,
                             int c_in, int c_out, int hw) {
    pointwise_bias_prelu(x, w, bias, alpha, residual, y, n, c_in, c_out, hw);
}
