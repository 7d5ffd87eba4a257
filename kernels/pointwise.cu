// Pointwise (1x1) convolution as a tiled GEMM: y[co, j] = sum_ci w[co, ci] * x[ci, j], where the
// column j runs over (image, pixel) of the whole batch, so small 4x4 maps still fill the tiles.
// Epilogue fused: bias, optional PReLU, then optional residual add (the block's skip path).
// `dwpw_*` also fuses the block's depthwise 3x3 (+ bias + PReLU) into the loading of the input
// tile, so the depthwise output never goes to global memory.

#define PW_BM 64
#define PW_BN 64
#define PW_BK 16

// The input column of a plain pointwise conv: x[b, k, p].
template <typename T>
struct PlainColumn {
    const T* x;
    int c_in, hw;
    long long base;
    bool valid;
    __device__ void init(long long j, long long cols) {
        valid = j < cols;
        base = valid ? (j / hw) * c_in * (long long)hw + j % hw : 0;
    }
    __device__ float load(int k) const { return load_f32(x, base + (long long)k * hw); }
};

// The input column of a fused block: the depthwise 3x3 (pad 1, `stride`) output at channel k,
// output pixel p, computed from the block input x[b, k, h, wd], then bias and PReLU.
template <typename T>
struct DepthwiseColumn {
    const T* x;
    const T* dw_w;
    const float* dw_b;
    const float* dw_alpha;
    int c_in, h, wd, stride, ow, hw;
    long long base;
    int oy, ox;
    bool valid;
    __device__ void init(long long j, long long cols) {
        valid = j < cols;
        const long long b = valid ? j / hw : 0;
        const int p = valid ? (int)(j - b * hw) : 0;
        oy = p / ow;
        ox = p - oy * ow;
        base = b * c_in * (long long)h * wd;
    }
    __device__ float load(int k) const {
        const long long plane = base + (long long)k * h * wd;
        float acc = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
            const int iy = oy * stride + ky - 1;
            if (iy < 0 || iy >= h) continue;
#pragma unroll
            for (int kx = 0; kx < 3; ++kx) {
                const int ix = ox * stride + kx - 1;
                if (ix < 0 || ix >= wd) continue;
                acc += load_f32(x, plane + iy * wd + ix) * load_f32(dw_w, k * 9 + ky * 3 + kx);
            }
        }
        return bias_prelu(acc, dw_b[k], dw_alpha, k);
    }
};

// Block: 16x16 threads; each thread owns 4 output channels x 4 columns, strided by 16 so that
// neighbouring threads touch neighbouring columns (coalesced loads/stores, no bank conflicts).
template <typename T, typename Column>
__device__ void pointwise_gemm(Column col, const T* __restrict__ w,
                               const float* __restrict__ bias, const float* alpha,
                               const T* residual, T* __restrict__ y, int n, int c_in, int c_out,
                               int hw) {
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
    col.init(j0 + b_col, cols);

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
            Bs[kk][b_col] = (col.valid && k < c_in) ? col.load(k) : 0.0f;
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

template <typename T>
__device__ void pointwise_bias_prelu(const T* x, const T* w, const float* bias,
                                     const float* alpha, const T* residual, T* y, int n,
                                     int c_in, int c_out, int hw) {
    PlainColumn<T> col;
    col.x = x;
    col.c_in = c_in;
    col.hw = hw;
    pointwise_gemm<T>(col, w, bias, alpha, residual, y, n, c_in, c_out, hw);
}

// Whole block: depthwise 3x3 (pad 1, stride) + bias + PReLU, then pointwise + bias + PReLU
// (+ residual, which must then be x itself: stride 1 and c_out == c_in).
template <typename T>
__device__ void dwpw_bias_prelu(const T* x, const T* dw_w, const float* dw_b,
                                const float* dw_alpha, const T* pw_w, const float* pw_b,
                                const float* pw_alpha, const T* residual, T* y, int n, int c_in,
                                int h, int wd, int stride, int c_out) {
    DepthwiseColumn<T> col;
    col.x = x;
    col.dw_w = dw_w;
    col.dw_b = dw_b;
    col.dw_alpha = dw_alpha;
    col.c_in = c_in;
    col.h = h;
    col.wd = wd;
    col.stride = stride;
    const int oh = (h - 1) / stride + 1;
    col.ow = (wd - 1) / stride + 1;
    col.hw = oh * col.ow;
    pointwise_gemm<T>(col, pw_w, pw_b, pw_alpha, residual, y, n, c_in, c_out, col.hw);
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

extern "C" __global__ void __launch_bounds__(256)
    dwpw_bias_prelu_f32(const float* x, const float* dw_w, const float* dw_b,
                        const float* dw_alpha, const float* pw_w, const float* pw_b,
                        const float* pw_alpha, const float* residual, float* y, int n, int c_in,
                        int h, int wd, int stride, int c_out) {
    dwpw_bias_prelu(x, dw_w, dw_b, dw_alpha, pw_w, pw_b, pw_alpha, residual, y, n, c_in, h, wd,
                    stride, c_out);
}

extern "C" __global__ void __launch_bounds__(256)
    dwpw_bias_prelu_f16(const half_bits* x, const half_bits* dw_w, const float* dw_b,
                        const float* dw_alpha, const half_bits* pw_w, const float* pw_b,
                        const float* pw_alpha, const half_bits* residual, half_bits* y, int n,
                        int c_in, int h, int wd, int stride, int c_out) {
    dwpw_bias_prelu(x, dw_w, dw_b, dw_alpha, pw_w, pw_b, pw_alpha, residual, y, n, c_in, h, wd,
                    stride, c_out);
}
