// Shared by every kernel file: storage types and their conversion to the f32 used for all
// arithmetic. Prepended by src/cuda/compile.rs (NVRTC has no include path here), so it must
// stay header-free: f16 is kept as raw `unsigned short` bits and converted with PTX `cvt`.

typedef unsigned short half_bits;

__device__ __forceinline__ float load_f32(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f32(const half_bits* p, long long i) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i]));
    return f;
}
__device__ __forceinline__ void store_f32(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f32(half_bits* p, long long i, float v) {
    half_bits h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p[i] = h;
}

// Bias then optional PReLU, the epilogue every folded conv shares (BN is folded into w and b).
__device__ __forceinline__ float bias_prelu(float acc, float bias, const float* alpha, int c) {
    float v = acc + bias;
    if (alpha != nullptr && v < 0.0f) v *= alpha[c];
    return v;
}
