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

// ---------------------------------------------------------------------------------------------
// Tensor-core versions for f16 storage: the same GEMM (and the same fused depthwise column) on
// `mma.sync.m16n8k16` with f16 inputs and f32 accumulation. Raw PTX, so NVRTC needs no headers.
// Tile: 64 output channels x 128 columns per block of 256 threads (8 warps, 2 x 4, each 32 x 32),
// k in steps of 32. The operands are staged in shared memory as f16 with k contiguous; the
// accumulators go through shared memory once more so that bias, PReLU, residual and the f16
// store are applied in f32 on coalesced rows, rounding once, exactly as the scalar epilogue.

#define MMA_BM 64
#define MMA_BN 128
#define MMA_BK 32
#define MMA_KP (MMA_BK + 8)   // row pitch in halves (80 bytes): word-aligned, conflict-free reads
#define MMA_CP (MMA_BN + 4)   // accumulator row pitch in floats

__device__ __forceinline__ half_bits f32_to_half_bits(float v) {
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}

// sm_80 and newer only; the host never launches these kernels on older GPUs (see
// CudaDevice::tensor_cores), where this compiles to a trap.
__device__ __forceinline__ void mma_16816(float* d, const unsigned* a, const unsigned* b) {
#if __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

// Eight f16 values: one 16-byte load or store.
struct __align__(16) half8 {
    unsigned int w[4];
};

// The B tile (k x 128 columns, stored column-major in shared memory) filled one value at a
// time from any column source (the plain input or the fused depthwise): column t % 128,
// k rows t / 128 + 2l.
template <typename Column>
struct ScalarFill {
    Column col;
    int b_col, b_k0;
    __device__ void init(int t, long long j0, long long cols) {
        b_col = t & (MMA_BN - 1);
        b_k0 = t >> 7;
        col.init(j0 + b_col, cols);
    }
    __device__ void fill(half_bits (*Bs)[MMA_KP], int k0, int c_in) {
#pragma unroll
        for (int l = 0; l < MMA_BK / 2; ++l) {
            const int kk = b_k0 + 2 * l;
            const int k = k0 + kk;
            Bs[b_col][kk] =
                (col.valid && k < c_in) ? f32_to_half_bits(col.load(k)) : (half_bits)0;
        }
    }
};

// The B tile of a plain f16 input whose planes hold a multiple of 8 pixels: 8 consecutive
// columns (same image, contiguous pixels) per 16-byte load; column group t % 16, k rows
// t / 16 and t / 16 + 16.
struct Vec8Fill {
    const half_bits* x;
    int hw;
    long long base;
    bool valid;
    int cg, kk0;
    __device__ void init(int t, long long j0, long long cols, int c_in) {
        cg = t & 15;
        kk0 = t >> 4;
        const long long j = j0 + cg * 8;
        valid = j < cols;
        const long long b = valid ? j / hw : 0;
        base = valid ? b * c_in * (long long)hw + (j - b * hw) : 0;
    }
    __device__ void fill(half_bits (*Bs)[MMA_KP], int k0, int c_in) {
#pragma unroll
        for (int l = 0; l < 2; ++l) {
            const int kk = kk0 + 16 * l;
            const int k = k0 + kk;
            half8 v = {{0u, 0u, 0u, 0u}};
            if (valid && k < c_in)
                v = *reinterpret_cast<const half8*>(x + base + (long long)k * hw);
            const half_bits* h = reinterpret_cast<const half_bits*>(&v);
#pragma unroll
            for (int i = 0; i < 8; ++i) Bs[cg * 8 + i][kk] = h[i];
        }
    }
};

// The B tile of a plain f16 input with one pixel per image (the head's linear layer: x is
// [n, c_in], k contiguous for each column) and c_in a multiple of 8: 8 consecutive k of one
// column per 16-byte load, stored as they lie (Bs keeps k contiguous per column). Columns
// t / 4 and t / 4 + 64, k group t % 4.
struct KMajorFill {
    const half_bits* x;
    long long j0, cols;
    __device__ void fill(half_bits (*Bs)[MMA_KP], int k0, int c_in) {
        const int t = threadIdx.x;
        const int kq = t & 3;
        const int k = k0 + kq * 8;
#pragma unroll
        for (int l = 0; l < 2; ++l) {
            const int col = (t >> 2) + 64 * l;
            const long long j = j0 + col;
            half8 v = {{0u, 0u, 0u, 0u}};
            if (j < cols && k < c_in) v = *reinterpret_cast<const half8*>(x + j * c_in + k);
            *reinterpret_cast<half8*>(&Bs[col][kq * 8]) = v;
        }
    }
};

#define MMA_SMEM (MMA_BM * MMA_CP * 4)

// The warp tiles' accumulators into the f32 tile `Cs` (the operand tiles are dead after the
// k loop's last barrier), then a barrier.
__device__ __forceinline__ void mma_acc_to_shared(float (*Cs)[MMA_CP], float (*acc)[4][4], int g,
                                                  int q, int wm, int wn) {
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r)
                Cs[wm * 32 + mi * 16 + g + 8 * (r >> 1)][wn * 32 + ni * 8 + 2 * q + (r & 1)] =
                    acc[mi][ni][r];
    __syncthreads();
}

// The epilogue for planes of a multiple of 8 pixels: 8 consecutive columns (one image,
// contiguous pixels) per thread, 16-byte residual loads and stores. Column group t % 16, rows
// t / 16 + 16 i.
__device__ __forceinline__ void mma_store_vec8(float (*Cs)[MMA_CP], int t, int m0, long long j0,
                                               long long cols, int hw, int c_out,
                                               const float* __restrict__ bias,
                                               const float* alpha, const half_bits* residual,
                                               half_bits* __restrict__ y) {
    const int cg = t & 15;
    const long long j = j0 + cg * 8;
    if (j >= cols) return;
    const long long b = j / hw, p = j - b * hw;
#pragma unroll
    for (int i = 0; i < MMA_BM / 16; ++i) {
        const int row = (t >> 4) + 16 * i;
        const int m = m0 + row;
        if (m >= c_out) break;
        const long long o = (b * c_out + m) * hw + p;
        half8 rv = {{0u, 0u, 0u, 0u}};
        if (residual != nullptr) rv = *reinterpret_cast<const half8*>(residual + o);
        const half_bits* rh = reinterpret_cast<const half_bits*>(&rv);
        half8 out;
        half_bits* oh = reinterpret_cast<half_bits*>(&out);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float v = bias_prelu(Cs[row][cg * 8 + e], bias[m], alpha, m);
            if (residual != nullptr) v += load_f32(rh, e);
            oh[e] = f32_to_half_bits(v);
        }
        *reinterpret_cast<half8*>(y + o) = out;
    }
}

template <typename Fill>
__device__ void pointwise_mma(unsigned char* smem, Fill fill, const half_bits* __restrict__ w,
                              const float* __restrict__ bias, const float* alpha,
                              const half_bits* residual, half_bits* __restrict__ y, int n,
                              int c_in, int c_out, int hw) {
    // `smem` (MMA_SMEM bytes, declared once by the calling kernel): the f16 operand tiles
    // during the k loop, then the f32 accumulator tile.
    half_bits(*As)[MMA_KP] = reinterpret_cast<half_bits(*)[MMA_KP]>(smem);
    half_bits(*Bs)[MMA_KP] = reinterpret_cast<half_bits(*)[MMA_KP]>(smem + MMA_BM * MMA_KP * 2);
    float(*Cs)[MMA_CP] = reinterpret_cast<float(*)[MMA_CP]>(smem);

    const int t = threadIdx.x;
    const int lane = t & 31, warp = t >> 5;
    const int g = lane >> 2, q = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;  // warp tile: rows wm*32.., columns wn*32..
    const int m0 = blockIdx.y * MMA_BM;
    const long long j0 = (long long)blockIdx.x * MMA_BN;
    const long long cols = (long long)n * hw;
    const bool vec_w = (c_in & 7) == 0;  // weight rows start 16-byte aligned

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;

    const int a_row = t >> 2, a_k0 = (t & 3) * 8;  // A: one row, 8 consecutive k

    for (int k0 = 0; k0 < c_in; k0 += MMA_BK) {
        {
            const int m = m0 + a_row;
            const int k = k0 + a_k0;
            if (vec_w && m < c_out && k + 8 <= c_in) {
                *reinterpret_cast<half8*>(&As[a_row][a_k0]) =
                    *reinterpret_cast<const half8*>(w + (long long)m * c_in + k);
            } else {
#pragma unroll
                for (int l = 0; l < 8; ++l)
                    As[a_row][a_k0 + l] = (m < c_out && k + l < c_in)
                                              ? w[(long long)m * c_in + k + l]
                                              : (half_bits)0;
            }
        }
        fill.fill(Bs, k0, c_in);
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < MMA_BK; ks += 16) {
            unsigned a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int r = wm * 32 + mi * 16 + g;
                a[mi][0] = *reinterpret_cast<const unsigned*>(&As[r][ks + 2 * q]);
                a[mi][1] = *reinterpret_cast<const unsigned*>(&As[r + 8][ks + 2 * q]);
                a[mi][2] = *reinterpret_cast<const unsigned*>(&As[r][ks + 2 * q + 8]);
                a[mi][3] = *reinterpret_cast<const unsigned*>(&As[r + 8][ks + 2 * q + 8]);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                const int c = wn * 32 + ni * 8 + g;
                b[ni][0] = *reinterpret_cast<const unsigned*>(&Bs[c][ks + 2 * q]);
                b[ni][1] = *reinterpret_cast<const unsigned*>(&Bs[c][ks + 2 * q + 8]);
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) mma_16816(acc[mi][ni], a[mi], b[ni]);
        }
        __syncthreads();
    }

    mma_acc_to_shared(Cs, acc, g, q, wm, wn);
    if ((hw & 7) == 0) {
        mma_store_vec8(Cs, t, m0, j0, cols, hw, c_out, bias, alpha, residual, y);
        return;
    }
    // Any plane size: one value per step; each thread keeps one column, so the (image, pixel)
    // split is done once.
    const int c = t & (MMA_BN - 1);
    const long long j = j0 + c;
    if (j >= cols) return;
    const long long b = j / hw, p = j - b * hw;
    for (int row = t >> 7; row < MMA_BM; row += 2) {
        const int m = m0 + row;
        if (m >= c_out) break;
        const long long o = (b * c_out + m) * hw + p;
        float v = bias_prelu(Cs[row][c], bias[m], alpha, m);
        if (residual != nullptr) v += load_f32(residual, o);
        store_f32(y, o, v);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    pointwise_mma_f16(const half_bits* x, const half_bits* w, const float* bias,
                      const float* alpha, const half_bits* residual, half_bits* y, int n,
                      int c_in, int c_out, int hw) {
    __shared__ __align__(16) unsigned char smem[MMA_SMEM];
    const int t = threadIdx.x;
    const long long j0 = (long long)blockIdx.x * MMA_BN, cols = (long long)n * hw;
    if ((hw & 7) == 0) {
        Vec8Fill f;
        f.x = x;
        f.hw = hw;
        f.init(t, j0, cols, c_in);
        pointwise_mma(smem, f, w, bias, alpha, residual, y, n, c_in, c_out, hw);
    } else if (hw == 1 && (c_in & 7) == 0) {
        KMajorFill f;
        f.x = x;
        f.j0 = j0;
        f.cols = cols;
        pointwise_mma(smem, f, w, bias, alpha, residual, y, n, c_in, c_out, hw);
    } else {
        ScalarFill<PlainColumn<half_bits>> f;
        f.col.x = x;
        f.col.c_in = c_in;
        f.col.hw = hw;
        f.init(t, j0, cols);
        pointwise_mma(smem, f, w, bias, alpha, residual, y, n, c_in, c_out, hw);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    dwpw_mma_f16(const half_bits* x, const half_bits* dw_w, const float* dw_b,
                 const float* dw_alpha, const half_bits* pw_w, const float* pw_b,
                 const float* pw_alpha, const half_bits* residual, half_bits* y, int n,
                 int c_in, int h, int wd, int stride, int c_out) {
    __shared__ __align__(16) unsigned char smem[MMA_SMEM];
    ScalarFill<DepthwiseColumn<half_bits>> f;
    f.col.x = x;
    f.col.dw_w = dw_w;
    f.col.dw_b = dw_b;
    f.col.dw_alpha = dw_alpha;
    f.col.c_in = c_in;
    f.col.h = h;
    f.col.wd = wd;
    f.col.stride = stride;
    const int oh = (h - 1) / stride + 1;
    f.col.ow = (wd - 1) / stride + 1;
    f.col.hw = oh * f.col.ow;
    const long long cols = (long long)n * f.col.hw;
    f.init(threadIdx.x, (long long)blockIdx.x * MMA_BN, cols);
    pointwise_mma(smem, f, pw_w, pw_b, pw_alpha, residual, y, n, c_in, c_out, f.col.hw);
}

// ---------------------------------------------------------------------------------------------
// The tensor-core pointwise GEMM, second form, for planes of a multiple of 8 pixels. The B tile
// stays k-major in shared memory ([k][column], as it lies in global memory): each thread's
// 16-byte load is one 16-byte store, free of bank conflicts (the first form transposes it into
// eight 2-byte stores that conflict 16 ways), and `ldmatrix.trans` (rows 272 bytes apart, so the
// eight rows of each 8x8 matrix fall in distinct banks) hands the MMAs the same fragments. The
// grid is one-dimensional with the output-channel tiles of a column tile adjacent, so the
// blocks that share an input tile run together and read it from L2, and each k step's global
// loads are issued before the previous step's MMAs (register prefetch). Same sums in the same
// order as the first form, so the results are identical.

#define MMA2_BP (MMA_BN + 8)  // B row pitch in halves: 272 bytes

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const void* p) {
#if __CUDA_ARCH__ >= 800
    unsigned a;
    asm("{ .reg .u64 s; cvta.to.shared.u64 s, %1; cvt.u32.u64 %0, s; }" : "=r"(a) : "l"(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
#else
    __trap();
#endif
}

extern "C" __global__ void __launch_bounds__(256)
    pointwise_mma2_f16(const half_bits* __restrict__ x, const half_bits* __restrict__ w,
                       const float* __restrict__ bias, const float* alpha,
                       const half_bits* residual, half_bits* __restrict__ y, int n, int c_in,
                       int c_out, int hw) {
    __shared__ __align__(16) unsigned char smem[MMA_SMEM];
    half_bits(*As)[MMA_KP] = reinterpret_cast<half_bits(*)[MMA_KP]>(smem);
    half_bits(*Bs)[MMA2_BP] =
        reinterpret_cast<half_bits(*)[MMA2_BP]>(smem + MMA_BM * MMA_KP * 2);
    float(*Cs)[MMA_CP] = reinterpret_cast<float(*)[MMA_CP]>(smem);

    const int t = threadIdx.x;
    const int lane = t & 31, warp = t >> 5;
    const int g = lane >> 2, q = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
    const int m_tiles = (c_out + MMA_BM - 1) / MMA_BM;
    const int m0 = (int)(blockIdx.x % m_tiles) * MMA_BM;
    const long long j0 = (long long)(blockIdx.x / m_tiles) * MMA_BN;
    const long long cols = (long long)n * hw;
    const bool vec_w = (c_in & 7) == 0;

    // B: 8 consecutive columns (one image, contiguous pixels) at k rows kk0 and kk0 + 16.
    const int cg = t & 15, kk0 = t >> 4;
    const long long jc = j0 + cg * 8;
    const bool b_valid = jc < cols;
    long long b_base = 0;
    if (b_valid) {
        const long long b = jc / hw;
        b_base = b * c_in * (long long)hw + (jc - b * hw);
    }

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;

    const int a_row = t >> 2, a_k0 = (t & 3) * 8;  // A: one row, 8 consecutive k
    // ldmatrix row addresses: lanes 0-7 and 16-23 k rows 0-7, lanes 8-15 and 24-31 rows 8-15;
    // lanes 16-31 the next 8 columns.
    const int l_k = (lane & 7) + ((lane >> 3) & 1) * 8;
    const int l_n = wn * 32 + (lane >> 4) * 8;

    // Each k step's operands are loaded into registers while the previous step's MMAs run.
    half8 a_reg, b_reg[2];
    auto load_step = [&](int k0) {
        const int m = m0 + a_row;
        const int k = k0 + a_k0;
        if (vec_w && m < c_out && k + 8 <= c_in) {
            a_reg = *reinterpret_cast<const half8*>(w + (long long)m * c_in + k);
        } else {
            half_bits* h = reinterpret_cast<half_bits*>(&a_reg);
#pragma unroll
            for (int l = 0; l < 8; ++l)
                h[l] = (m < c_out && k + l < c_in) ? w[(long long)m * c_in + k + l]
                                                   : (half_bits)0;
        }
#pragma unroll
        for (int l = 0; l < 2; ++l) {
            const int kb = k0 + kk0 + 16 * l;
            b_reg[l] = half8{{0u, 0u, 0u, 0u}};
            if (b_valid && kb < c_in)
                b_reg[l] = *reinterpret_cast<const half8*>(x + b_base + (long long)kb * hw);
        }
    };
    load_step(0);
    for (int k0 = 0; k0 < c_in; k0 += MMA_BK) {
        *reinterpret_cast<half8*>(&As[a_row][a_k0]) = a_reg;
#pragma unroll
        for (int l = 0; l < 2; ++l) *reinterpret_cast<half8*>(&Bs[kk0 + 16 * l][cg * 8]) = b_reg[l];
        __syncthreads();
        if (k0 + MMA_BK < c_in) load_step(k0 + MMA_BK);
#pragma unroll
        for (int ks = 0; ks < MMA_BK; ks += 16) {
            unsigned a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int r = wm * 32 + mi * 16 + g;
                a[mi][0] = *reinterpret_cast<const unsigned*>(&As[r][ks + 2 * q]);
                a[mi][1] = *reinterpret_cast<const unsigned*>(&As[r + 8][ks + 2 * q]);
                a[mi][2] = *reinterpret_cast<const unsigned*>(&As[r][ks + 2 * q + 8]);
                a[mi][3] = *reinterpret_cast<const unsigned*>(&As[r + 8][ks + 2 * q + 8]);
            }
#pragma unroll
            for (int nj = 0; nj < 4; nj += 2) {
                unsigned r[4];
                ldmatrix_x4_trans(r, &Bs[ks + l_k][l_n + nj * 8]);
                b[nj][0] = r[0];
                b[nj][1] = r[1];
                b[nj + 1][0] = r[2];
                b[nj + 1][1] = r[3];
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) mma_16816(acc[mi][ni], a[mi], b[ni]);
        }
        __syncthreads();
    }
    mma_acc_to_shared(Cs, acc, g, q, wm, wn);
    mma_store_vec8(Cs, t, m0, j0, cols, hw, c_out, bias, alpha, residual, y);
}
