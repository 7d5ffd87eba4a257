// CPU emulation of kernels/*.cu (driven by scripts/emulate-kernels.sh): blocks run one after
// another, the threads of a block run as real std::threads meeting at a std::barrier for
// __syncthreads. The host prelude below replaces the PTX f16 conversions with _Float16.
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>
#include <algorithm>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<>* bar;
float dyn_smem[1 << 16];
float shfl_buf[1024];
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static
inline void __syncthreads() { bar->arrive_and_wait(); }
inline float __shfl_down_sync(unsigned, float v, int off) {
    int t = threadIdx.x + threadIdx.y * blockDim.x;
    shfl_buf[t] = v;
    bar->arrive_and_wait();
    int lane = t & 31;
    float r = (lane + off < 32) ? shfl_buf[t + off] : v;
    bar->arrive_and_wait();
    return r;
}
typedef unsigned short half_bits;
inline float load_f32(const float* p, long long i) { return p[i]; }
inline float load_f32(const half_bits* p, long long i) { _Float16 h; memcpy(&h, p + i, 2); return (float)h; }
inline void store_f32(float* p, long long i, float v) { p[i] = v; }
inline void store_f32(half_bits* p, long long i, float v) { _Float16 h = (_Float16)v; memcpy(p + i, &h, 2); }
inline float bias_prelu(float acc, float bias, const float* alpha, int c) {
    float v = acc + bias;
    if (alpha != nullptr && v < 0.0f) v *= alpha[c];
    return v;
}
#include "kernels_body.inc"

void launch(dim3 grid, dim3 block, std::function<void()> k) {
    gridDim = grid; blockDim = block;
    int nt = block.x * block.y;
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            std::barrier<> b(nt);
            bar = &b;
            std::vector<std::thread> ts;
            for (int t = 0; t < nt; ++t)
                ts.emplace_back([&, t] {
                    threadIdx.x = t % block.x; threadIdx.y = t / block.x;
                    blockIdx.x = bx; blockIdx.y = by;
                    k();
                });
            for (auto& t : ts) t.join();
        }
}

std::mt19937 rng(1);
std::vector<float> rnd(size_t n, float s) { std::normal_distribution<float> d(0, s); std::vector<float> v(n); for (auto& x : v) x = d(rng); return v; }
float err(const std::vector<float>& a, const std::vector<float>& b) {
    float peak = 1e-30f, d = 0; for (size_t i = 0; i < a.size(); ++i) { peak = std::max(peak, std::fabs(b[i])); d = std::max(d, std::fabs(a[i] - b[i])); if (std::isnan(a[i])) d = INFINITY; } return d / peak; }
// Reference: general conv pad 1 (3x3) or 0 (1x1), groups, bias, prelu, residual.
std::vector<float> ref_conv(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b, const float* alpha,
                            const float* res, int n, int cin, int h, int wd, int cout, int k, int stride, int groups) {
    int pad = k / 2, oh = (h + 2 * pad - k) / stride + 1, ow = (wd + 2 * pad - k) / stride + 1, cig = cin / groups, cog = cout / groups;
    std::vector<float> y((size_t)n * cout * oh * ow);
    for (int bb = 0; bb < n; ++bb) for (int oc = 0; oc < cout; ++oc) for (int oy = 0; oy < oh; ++oy) for (int ox = 0; ox < ow; ++ox) {
        float acc = 0; int g = oc / cog;
        for (int icg = 0; icg < cig; ++icg) for (int ky = 0; ky < k; ++ky) for (int kx = 0; kx < k; ++kx) {
            int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad; if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
            acc += x[((size_t)(bb * cin + g * cig + icg) * h + iy) * wd + ix] * w[((oc * cig + icg) * k + ky) * k + kx]; }
        float v = acc + b[oc]; if (alpha && v < 0) v *= alpha[oc];
        size_t o = ((size_t)(bb * cout + oc) * oh + oy) * ow + ox; if (res) v += res[o]; y[o] = v; }
    return y;
}
int fails = 0;
void report(const char* what, float e, float tol) { printf("%-40s err %.3e %s\n", what, e, e <= tol ? "ok" : "FAIL"); if (!(e <= tol)) fails++; }

int main() {
    char name[128];
    for (auto [n, cin, h, w, cout, stride] : std::vector<std::array<int, 6>>{{1, 3, 16, 16, 32, 1}, {3, 3, 7, 5, 33, 2}, {2, 5, 1, 1, 4, 1}, {2, 3, 32, 31, 8, 2}}) {
        auto x = rnd((size_t)n * cin * h * w, 1), wt = rnd(cout * cin * 9, .3f), b = rnd(cout, .1f), a = rnd(cout, .25f);
        auto want = ref_conv(x, wt, b, a.data(), nullptr, n, cin, h, w, cout, 3, stride, 1);
        std::vector<float> y(want.size());
        int hw_out = ((h - 1) / stride + 1) * ((w - 1) / stride + 1), planes = std::max(1, 256 / hw_out);
        launch({(unsigned)((n * cout + planes - 1) / planes)}, {256}, [&] { conv3x3_bias_prelu_f32(x.data(), wt.data(), b.data(), a.data(), y.data(), n, cin, h, w, cout, stride, planes); });
        snprintf(name, 128, "conv3x3 n%d %dx%d c%d->%d s%d", n, h, w, cin, cout, stride); report(name, err(y, want), 1e-5f);
    }
    for (auto [n, c, h, w, stride, pr] : std::vector<std::array<int, 6>>{{2, 32, 16, 16, 1, 1}, {3, 64, 16, 16, 2, 1}, {1, 7, 5, 3, 2, 0}, {4, 129, 1, 1, 1, 1}, {2, 12, 9, 9, 2, 1}, {1, 2, 32, 32, 1, 1}}) {
        auto x = rnd((size_t)n * c * h * w, 1), wt = rnd(c * 9, .3f), b = rnd(c, .1f), a = rnd(c, .25f);
        const float* al = pr ? a.data() : nullptr;
        auto want = ref_conv(x, wt, b, al, nullptr, n, c, h, w, c, 3, stride, c);
        std::vector<float> y(want.size());
        int hw_out = ((h - 1) / stride + 1) * ((w - 1) / stride + 1), planes = std::max(1, 256 / hw_out);
        launch({(unsigned)((n * c + planes - 1) / planes)}, {256}, [&] { depthwise3x3_bias_prelu_f32(x.data(), wt.data(), b.data(), al, y.data(), n, c, h, w, stride, planes); });
        snprintf(name, 128, "depthwise n%d %dx%d c%d s%d", n, h, w, c, stride); report(name, err(y, want), 1e-5f);
        // f16 path
        std::vector<half_bits> xh(x.size()), wh(wt.size()), yh(want.size());
        for (size_t i = 0; i < x.size(); ++i) { store_f32(xh.data(), i, x[i]); x[i] = load_f32(xh.data(), i); }
        for (size_t i = 0; i < wt.size(); ++i) { store_f32(wh.data(), i, wt[i]); wt[i] = load_f32(wh.data(), i); }
        want = ref_conv(x, wt, b, al, nullptr, n, c, h, w, c, 3, stride, c);
        launch({(unsigned)((n * c + planes - 1) / planes)}, {256}, [&] { depthwise3x3_bias_prelu_f16(xh.data(), wh.data(), b.data(), al, yh.data(), n, c, h, w, stride, planes); });
        for (size_t i = 0; i < y.size(); ++i) y[i] = load_f32(yh.data(), i);
        snprintf(name, 128, "depthwise f16 n%d %dx%d c%d s%d", n, h, w, c, stride); report(name, err(y, want), 2e-3f);
    }
    for (auto [n, cin, cout, hw, pr, res] : std::vector<std::array<int, 6>>{{2, 32, 64, 256, 1, 0}, {3, 128, 128, 16, 1, 1}, {1, 37, 65, 9, 0, 0}, {7, 40, 70, 1, 1, 1}, {5, 17, 3, 49, 1, 0}}) {
        auto x = rnd((size_t)n * cin * hw, 1), wt = rnd(cout * cin, std::sqrt(2.f / cin)), b = rnd(cout, .1f), a = rnd(cout, .25f), r = rnd((size_t)n * cout * hw, 1);
        const float* al = pr ? a.data() : nullptr; const float* rp = res ? r.data() : nullptr;
        auto want = ref_conv(x, wt, b, al, rp, n, cin, hw, 1, cout, 1, 1, 1);
        std::vector<float> y(want.size());
        launch({(unsigned)((n * hw + 63) / 64), (unsigned)((cout + 63) / 64)}, {16, 16}, [&] { pointwise_bias_prelu_f32(x.data(), wt.data(), b.data(), al, rp, y.data(), n, cin, cout, hw); });
        snprintf(name, 128, "pointwise n%d c%d->%d hw%d res%d", n, cin, cout, hw, res); report(name, err(y, want), 1e-5f);
    }
    for (auto [n, c, h, stride, cout, res] : std::vector<std::array<int, 6>>{{2, 32, 16, 1, 64, 0}, {3, 64, 16, 2, 64, 0}, {2, 128, 4, 1, 128, 1}, {1, 37, 7, 2, 70, 0}, {4, 20, 5, 1, 20, 1}}) {
        int w = h + (stride == 2 ? 1 : 0);  // non-square maps too
        if (res) w = h;
        auto x = rnd((size_t)n * c * h * w, 1), dw = rnd(c * 9, .3f), db = rnd(c, .1f), da = rnd(c, .25f);
        auto pw = rnd(cout * c, std::sqrt(2.f / c)), pb = rnd(cout, .1f), pa = rnd(cout, .25f);
        for (int f16 = 0; f16 < 2; ++f16) {
            std::vector<half_bits> xh(x.size()), dwh(dw.size()), pwh(pw.size());
            if (f16) {
                for (size_t i = 0; i < x.size(); ++i) { store_f32(xh.data(), i, x[i]); x[i] = load_f32(xh.data(), i); }
                for (size_t i = 0; i < dw.size(); ++i) { store_f32(dwh.data(), i, dw[i]); dw[i] = load_f32(dwh.data(), i); }
                for (size_t i = 0; i < pw.size(); ++i) { store_f32(pwh.data(), i, pw[i]); pw[i] = load_f32(pwh.data(), i); }
            }
            auto mid = ref_conv(x, dw, db, da.data(), nullptr, n, c, h, w, c, 3, stride, c);
            int oh = (h - 1) / stride + 1, ow = (w - 1) / stride + 1;
            auto want = ref_conv(mid, pw, pb, pa.data(), res ? x.data() : nullptr, n, c, oh, ow, cout, 1, 1, 1);
            std::vector<float> y(want.size());
            std::vector<half_bits> yh(want.size());
            dim3 grid{(unsigned)((n * oh * ow + 63) / 64), (unsigned)((cout + 63) / 64)};
            if (f16) {
                launch(grid, {16, 16}, [&] { dwpw_bias_prelu_f16(xh.data(), dwh.data(), db.data(), da.data(), pwh.data(), pb.data(), pa.data(), res ? xh.data() : nullptr, yh.data(), n, c, h, w, stride, cout); });
                for (size_t i = 0; i < y.size(); ++i) y[i] = load_f32(yh.data(), i);
            } else {
                launch(grid, {16, 16}, [&] { dwpw_bias_prelu_f32(x.data(), dw.data(), db.data(), da.data(), pw.data(), pb.data(), pa.data(), res ? x.data() : nullptr, y.data(), n, c, h, w, stride, cout); });
            }
            snprintf(name, 128, "dwpw %s n%d %dx%d c%d->%d s%d res%d", f16 ? "f16" : "f32", n, h, w, c, cout, stride, res);
            report(name, err(y, want), f16 ? 2e-3f : 1e-5f);
        }
    }
    for (auto [n, c, hw, m] : std::vector<std::array<int, 4>>{{3, 256, 16, 128}, {1, 256, 1, 128}, {5, 70, 9, 33}, {2, 300, 4, 257}}) {
        auto x = rnd((size_t)n * c * hw, 1), gw = rnd(c * hw, .3f), gb = rnd(c, .1f), lw = rnd(m * c, .1f), lb = rnd(m, .1f);
        std::vector<float> want(n * m), y(n * m);
        for (int b = 0; b < n; ++b) { std::vector<float> pooled(c); for (int ch = 0; ch < c; ++ch) { float acc = 0; for (int p = 0; p < hw; ++p) acc += x[((size_t)b * c + ch) * hw + p] * gw[ch * hw + p]; pooled[ch] = acc + gb[ch]; }
            float ss = 0; for (int o = 0; o < m; ++o) { float acc = 0; for (int k = 0; k < c; ++k) acc += pooled[k] * lw[o * c + k]; want[b * m + o] = acc + lb[o]; ss += want[b * m + o] * want[b * m + o]; }
            float nr = std::max(std::sqrt(ss), 1e-12f); for (int o = 0; o < m; ++o) want[b * m + o] /= nr; }
        for (int b = 0; b < n; ++b) launch({1}, {256}, [&] { blockIdx.x = b; head_gdc_linear_l2_f32(x.data(), gw.data(), gb.data(), lw.data(), lb.data(), y.data(), c, hw, m); });
        snprintf(name, 128, "head n%d c%d hw%d m%d", n, c, hw, m); report(name, err(y, want), 1e-5f);
    }
    printf("%d failures\n", fails);
    return fails != 0;
}
