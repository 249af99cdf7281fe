// layers_cpu.c: CPU back end of layers.h. Matrix products go to OpenBLAS (cblas_sgemm, row-major);
// everything else is plain loops, vectorised by the compiler (omp simd, a branch-free exp that
// GCC can vectorise where glibc's expf would stay scalar) and split across threads with OpenMP
// when the work is large enough to pay for waking the pool.
//
// Threads: layers_set_threads sets OpenBLAS's and OpenMP's counts together, and every parallel
// region names its thread count: omp_set_num_threads binds only the calling thread, and the
// kernels may run on another one (a learner thread). The build links the OpenMP variant of
// OpenBLAS (see CMakeLists.txt), so BLAS and these loops share libgomp's pool. With the pthread
// variant the two pools spin against each other: on 2 cores a 2-thread GPT step (4 layers, dim
// 128, ctx 64, batch 16) took 157 ms against 43 ms (1 thread: 64 ms either way). The code stays
// correct with the pthread variant (attention then runs BLAS single-threaded in its loop).
//
// Determinism: every reduction over rows (bias, LayerNorm and embedding gradients) is owned by
// one thread per output column, in row order, so results do not depend on the thread count or
// on scheduling; only OpenBLAS's own blocking may differ between thread counts.
//
// attention_decode_forward lives in layers_cpu_decode.c for now.
//
// No trapping math in this file: vexp clamps its argument, and under GCC's default
// -ftrapping-math the vectoriser will not if-convert that clamp (a float compare or the
// arithmetic behind it might raise an FP exception on a path that would not run), so every
// loop over vexp stayed scalar: GELU alone was a fifth of a 1-thread GPT step. Nothing here
// reads FP exception flags, and the flag changes no rounding (unlike the rest of -ffast-math).
// Clang does not trap by default.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "layers.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Work (elements touched, roughly) below which a loop stays on the calling thread: waking
// libgomp's pool costs a few microseconds, about what 32K simple float ops take.
#define PAR_MIN 32768
// Column block owned by one thread in the row reductions (a multiple of the vector width).
#define COL_BLOCK 64

static int g_threads; // set by layers_set_threads; 0 = not set, use OpenMP's default

const char *layers_backend(void) {
    return "cpu-openblas";
}

void layers_set_threads(int n) {
    assert(n >= 1);
    g_threads = n;
    openblas_set_num_threads(n);
    omp_set_num_threads(n); // after OpenBLAS: its OpenMP build also sets this, same value
}

int layers_threads(void) {
    return g_threads ? g_threads : omp_get_max_threads();
}

// 1 if the OpenBLAS linked in runs on OpenMP: it then runs single-threaded when called from
// inside one of our parallel regions, which is what attention wants.
static int blas_is_openmp(void) {
    static int v = -1;
    if (v < 0)
        v = openblas_get_parallel() == 2;
    return v;
}

float *layers_alloc(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    if (bytes == 0)
        bytes = 64;
    float *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

void layers_free(float *p) {
    free(p);
}

void layers_zero(float *p, size_t n) {
    // Gradient arenas are zeroed every step and can be tens of MB: split across threads.
    const size_t chunk = 1 << 18;
    if (n < 4 * chunk) {
        memset(p, 0, n * sizeof(float));
        return;
    }
    long nchunks = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for num_threads(layers_threads()) schedule(static)
    for (long c = 0; c < nchunks; c++) {
        size_t lo = (size_t)c * chunk, len = n - lo < chunk ? n - lo : chunk;
        memset(p + lo, 0, len * sizeof(float));
    }
}

void layers_to_device(float *dst, const float *src, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}

void layers_to_host(float *dst, const float *src, size_t n) {
    memcpy(dst, src, n * sizeof(float));
}

// ---- exp that vectorises -----------------------------------------------------------------
// exp(x) = 2^n e^r, n = round(x log2 e), |r| <= ln2/2, e^r by Cephes's expf polynomial: about
// 1 ulp, branch-free, so loops over it vectorise (glibc's expf only does under -ffast-math).
// x is clamped to [-64, 64]: exp(-64) ~ 1.6e-28 stands in for smaller values and exp(64) ~
// 6.2e27 for larger ones, negligible next to the 1 that softmax/sigmoid add them to or divide
// by. The bounds are not [-87, 88] (the widest with normal results) because the vectoriser
// turns the clamp into a blend of the general result with the one for a clamped x, computed in
// every lane: for GELU that was x / (1 + exp(88)), denormal for |x| < 2, and the denormal
// assists made GELU 3x slower. With 64, x * exp(-64) and x / exp(64) stay normal for
// |x| > 1e-10.
#pragma omp declare simd notinbranch
static inline float vexp(float x) {
    x = x < -64.0f ? -64.0f : x;
    x = x > 64.0f ? 64.0f : x;
    // Round to nearest by the 1.5*2^23 trick (exact for |z| < 2^22; no -ffast-math here).
    float z = x * 1.44269504088896341f;
    float n = (z + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f; // ln2 split hi + lo so n*ln2 is exact enough
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    // Unsigned shift: a NaN x (non-finite weights) makes n NaN, whose conversion gives INT_MIN
    // on x86, and a signed left shift of that is undefined. p is NaN then, so the result is.
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

// ---- linear -----------------------------------------------------------------------------

void linear_forward(float *out, const float *in, const float *w, const float *b, int N, int IC,
                    int OC) {
    if (b) {
        // Pre-fill with the bias and let sgemm add the product (beta = 1): one pass over out.
#pragma omp parallel for num_threads(layers_threads())                                             \
    schedule(static) if ((size_t)N * OC > PAR_MIN)
        for (int i = 0; i < N; i++)
            memcpy(out + (size_t)i * OC, b, (size_t)OC * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, in, IC, w, IC,
                b ? 1.0f : 0.0f, out, OC);
}

// db(C) += column sums of x(N, C); each thread owns whole column blocks (see Determinism).
static void colsum_acc(float *db, const float *x, int N, int C) {
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for num_threads(layers_threads())                                             \
    schedule(static) if ((size_t)N * C > PAR_MIN && nblk > 1)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * COL_BLOCK, nc = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        float acc[COL_BLOCK] = {0};
        for (int i = 0; i < N; i++) {
            const float *row = x + (size_t)i * C + c0;
#pragma omp simd
            for (int c = 0; c < nc; c++)
                acc[c] += row[c];
        }
        for (int c = 0; c < nc; c++)
            db[c0 + c] += acc[c];
    }
}

void linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, int N, int IC, int OC) {
    if (din) // din(N,IC) += dout(N,OC) @ w(OC,IC)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, w, IC,
                    1.0f, din, IC);
    if (dw) // dw(OC,IC) += dout^T @ in(N,IC)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, in, IC,
                    1.0f, dw, IC);
    if (db)
        colsum_acc(db, dout, N, OC);
}

// ---- embedding --------------------------------------------------------------------------

void embed_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T,
                   int C) {
    int BT = B * T;
#pragma omp parallel for num_threads(layers_threads())                                             \
    schedule(static) if ((size_t)BT * C > PAR_MIN)
    for (int i = 0; i < BT; i++) {
        const float *e = wte + (size_t)tokens[i] * C, *p = wpe + (size_t)(i % T) * C;
        float *o = out + (size_t)i * C;
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = e[c] + p[c];
    }
}

void embed_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T,
                    int C) {
    // Tokens repeat, so rows of dwte would race: threads split the columns instead, and
    // every thread walks all tokens in order over its own column block.
    int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for num_threads(layers_threads())                                             \
    schedule(static) if ((size_t)B * T * C > PAR_MIN && nblk > 1)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * COL_BLOCK, nc = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                const float *d = dout + ((size_t)b * T + t) * C + c0;
                if (dwte) {
                    float *e = dwte + (size_t)tokens[b * T + t] * C + c0;
#pragma omp simd
                    for (int c = 0; c < nc; c++)
                        e[c] += d[c];
                }
                if (dwpe) {
                    float *p = dwpe + (size_t)t * C + c0;
#pragma omp simd
                    for (int c = 0; c < nc; c++)
                        p[c] += d[c];
                }
            }
        }
    }
}

// ---- layernorm --------------------------------------------------------------------------

void layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                       const float *b, int N, int C) {
#pragma omp parallel for num_threads(layers_threads()) schedule(static) if ((size_t)N * C > PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *x = in + (size_t)i * C;
        float *o = out + (size_t)i * C;
        // Two passes (mean, then centred squares): no cancellation when |mean| >> std.
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++)
            s += x[c];
        float m = s / (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++)
            v += (x[c] - m) * (x[c] - m);
        float r = 1.0f / sqrtf(v / (float)C + 1e-5f); // biased variance, as PyTorch
#pragma omp simd
        for (int c = 0; c < C; c++)
            o[c] = (x[c] - m) * r * w[c] + b[c];
        mean[i] = m;
        rstd[i] = r;
    }
}

void layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const float *mean, const float *rstd, int N, int C) {
    int par = (size_t)N * C > PAR_MIN;
    if (din) {
#pragma omp parallel for num_threads(layers_threads()) schedule(static) if (par)
        for (int i = 0; i < N; i++) {
            const float *x = in + (size_t)i * C, *d = dout + (size_t)i * C;
            float *dx = din + (size_t)i * C;
            float m = mean[i], r = rstd[i];
            // din = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = w * dout.
            float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
            for (int c = 0; c < C; c++) {
                float g = w[c] * d[c];
                sg += g;
                sgx += g * (x[c] - m) * r;
            }
            sg /= (float)C;
            sgx /= (float)C;
#pragma omp simd
            for (int c = 0; c < C; c++)
                dx[c] += r * (w[c] * d[c] - sg - (x[c] - m) * r * sgx);
        }
    }
    if (dw || db) {
        // Parameter gradients sum over rows: one thread per column block (see Determinism).
        int nblk = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for num_threads(layers_threads()) schedule(static) if (par && nblk > 1)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * COL_BLOCK, nc = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            float aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
            for (int i = 0; i < N; i++) {
                const float *x = in + (size_t)i * C + c0, *d = dout + (size_t)i * C + c0;
                float m = mean[i], r = rstd[i];
#pragma omp simd
                for (int c = 0; c < nc; c++) {
                    aw[c] += d[c] * (x[c] - m) * r;
                    ab[c] += d[c];
                }
            }
            for (int c = 0; c < nc; c++) {
                if (dw)
                    dw[c0 + c] += aw[c];
                if (db)
                    db[c0 + c] += ab[c];
            }
        }
    }
}

// ---- attention --------------------------------------------------------------------------
// Per (b, h) the head's q, k, v are strided views into qkv (leading dimension 3C) and its
// output a strided view into out (leading dimension C): sgemm reads and writes them in place.

// Runs BLAS single-threaded for the duration of a parallel loop that calls it. The OpenMP
// OpenBLAS does that by itself (it checks omp_in_parallel); the pthread one would send every
// small per-head product to its own pool, from several callers at once.
static int blas_serial_begin(int par) {
    if (!par || blas_is_openmp() || layers_threads() == 1)
        return 0;
    openblas_set_num_threads(1);
    return 1;
}

static void blas_serial_end(int was) {
    if (was)
        openblas_set_num_threads(layers_threads());
}

// Masked softmax of row i of S (length T) in place: entries j > i become exact zeros.
static inline void causal_softmax_row(float *s, int i, int T) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j <= i; j++)
        mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j <= i; j++) {
        s[j] = vexp(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j <= i; j++)
        s[j] *= inv;
    for (int j = i + 1; j < T; j++)
        s[j] = 0.0f;
}

// Causal blocking: rows are taken ATT_ROWS at a time, and a block of rows [r0, r1) only meets
// keys 0..r1-1, so each product covers the block's part of the lower triangle rather than all
// T x T: (nb + 1) / (2 nb) of the work for nb blocks. Smaller blocks save more products but
// make more, smaller sgemm calls. 32 measured best (1 thread, CPU time per call, min of 30):
// B16 T64 hs32 forward+backward 2.0 ms against 2.8 unblocked, B8 T128 hs64 8.3 against 10.1;
// 16 was no better. Dot products keep their order; the dV/dK sums are split by row block.
#define ATT_ROWS 32

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH) {
    assert(C % NH == 0);
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int par = B * NH > 1 && (size_t)B * NH * T * T * hs > PAR_MIN;
    int serial = blas_serial_begin(par);
#pragma omp parallel for num_threads(layers_threads()) schedule(static) if (par)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *p = att + (size_t)bh * T * T;
        float *o = out + (size_t)b * T * C + h * hs;
        for (int r0 = 0; r0 < T; r0 += ATT_ROWS) {
            int r1 = r0 + ATT_ROWS < T ? r0 + ATT_ROWS : T, n = r1 - r0;
            float *pr = p + (size_t)r0 * T;
            // S = scale * Q K^T for these rows; what lies above the diagonal is discarded.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1, hs, scale,
                        q + (size_t)r0 * C3, C3, k, C3, 0.0f, pr, T);
            for (int i = r0; i < r1; i++) // also zeroes columns r1.. that no product wrote
                causal_softmax_row(p + (size_t)i * T, i, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, r1, 1.0f, pr, T, v, C3,
                        0.0f, o + (size_t)r0 * C, C);
        }
    }
    blas_serial_end(serial);
}

void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH) {
    assert(C % NH == 0);
    if (!dqkv)
        return;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    int par = B * NH > 1 && (size_t)B * NH * T * T * hs > PAR_MIN;
    int serial = blas_serial_begin(par);
#pragma omp parallel for num_threads(layers_threads()) schedule(static) if (par)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        size_t qoff = (size_t)b * T * C3 + h * hs;
        const float *q = qkv + qoff, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + qoff, *dk = dq + C, *dv = dq + 2 * C;
        const float *p = att + (size_t)bh * T * T;
        const float *d = dout + (size_t)b * T * C + h * hs;
        float *ds = datt + (size_t)bh * T * T;
        for (int r0 = 0; r0 < T; r0 += ATT_ROWS) { // row blocks as in attention_forward
            int r1 = r0 + ATT_ROWS < T ? r0 + ATT_ROWS : T, n = r1 - r0;
            const float *pb = p + (size_t)r0 * T, *db = d + (size_t)r0 * C;
            float *sb = ds + (size_t)r0 * T;
            // dV += P^T dO, dP = dO V^T.
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, hs, n, 1.0f, pb, T, db, C,
                        1.0f, dv, C3);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r1, hs, 1.0f, db, C, v, C3,
                        0.0f, sb, T);
            // Softmax backward in place, dS = P (dP - rowsum(P dP)); only j <= i, P is 0 above
            // (up to r1: the products below read no further).
            for (int i = r0; i < r1; i++) {
                const float *pr = p + (size_t)i * T;
                float *r = ds + (size_t)i * T;
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j <= i; j++)
                    dot += pr[j] * r[j];
#pragma omp simd
                for (int j = 0; j <= i; j++)
                    r[j] = pr[j] * (r[j] - dot);
                for (int j = i + 1; j < r1; j++)
                    r[j] = 0.0f;
            }
            // S = scale Q K^T: dQ += scale dS K, dK += scale dS^T Q.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hs, r1, scale, sb, T, k, C3,
                        1.0f, dq + (size_t)r0 * C3, C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, hs, n, scale, sb, T,
                        q + (size_t)r0 * C3, C3, 1.0f, dk, C3);
        }
    }
    blas_serial_end(serial);
}

// ---- element-wise -----------------------------------------------------------------------

// GELU (tanh form) as x * sigmoid(2u), u = sqrt(2/pi)(x + 0.044715 x^3), since
// 0.5 (1 + tanh u) = sigmoid(2u): no cancellation for negative x, and it vectorises.
#define GELU_K 0.7978845608028654f // sqrt(2/pi)
#define GELU_A 0.044715f

// Decoding: one new position per row against the cache. Work per row is tiny (pos x C), so
// rows are spread over threads only when there are enough of them.
void attention_decode_forward(float *out, float *kcache, float *vcache, const float *qkv,
                              const int *seq, const int *pos, int n, int ctx, int C, int NH) {
    assert(C % NH == 0);
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    int par = n > 1 && (size_t)n * ctx * C > PAR_MIN;
#pragma omp parallel for num_threads(layers_threads()) schedule(static) if (par)
    for (int i = 0; i < n; i++) {
        const float *q = qkv + (size_t)i * 3 * C;
        size_t base = (size_t)seq[i] * ctx * C;
        memcpy(kcache + base + (size_t)pos[i] * C, q + C, (size_t)C * sizeof(float));
        memcpy(vcache + base + (size_t)pos[i] * C, q + 2 * C, (size_t)C * sizeof(float));
        int P = pos[i] + 1;
        float att[P];
        for (int h = 0; h < NH; h++) {
            const float *qh = q + h * hs;
            float mx = -INFINITY;
            for (int p = 0; p < P; p++) {
                const float *k = kcache + base + (size_t)p * C + h * hs;
                float d = 0.0f;
#pragma omp simd reduction(+ : d)
                for (int j = 0; j < hs; j++)
                    d += qh[j] * k[j];
                att[p] = d * scale;
                mx = att[p] > mx ? att[p] : mx;
            }
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int p = 0; p < P; p++) {
                att[p] = vexp(att[p] - mx);
                sum += att[p];
            }
            float inv = 1.0f / sum, *o = out + (size_t)i * C + h * hs;
            memset(o, 0, (size_t)hs * sizeof(float));
            for (int p = 0; p < P; p++) {
                const float *v = vcache + base + (size_t)p * C + h * hs;
                float a = att[p] * inv;
#pragma omp simd
                for (int j = 0; j < hs; j++)
                    o[j] += a * v[j];
            }
        }
    }
}

void gelu_forward(float *out, const float *in, size_t N) {
    long n = (long)N;
#pragma omp parallel for simd num_threads(layers_threads())                                        \
    schedule(static) if (parallel                                                                  \
                         : N > PAR_MIN / 4)
    for (long i = 0; i < n; i++) {
        float x = in[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        out[i] = x / (1.0f + vexp(-2.0f * u));
    }
}

void gelu_backward(float *din, const float *dout, const float *in, size_t N) {
    long n = (long)N;
#pragma omp parallel for simd num_threads(layers_threads())                                        \
    schedule(static) if (parallel                                                                  \
                         : N > PAR_MIN / 4)
    for (long i = 0; i < n; i++) {
        float x = in[i];
        float u = GELU_K * (x + GELU_A * x * x * x);
        float du = GELU_K * (1.0f + 3.0f * GELU_A * x * x);
        float e = vexp(-2.0f * u), s = 1.0f / (1.0f + e); // s = sigmoid(2u)
        // d/dx [x s] = s + x s (1 - s) 2 u', with 1 - s = e s: exact where s rounds to 1.
        din[i] += dout[i] * (s + 2.0f * x * s * (e * s) * du);
    }
}

void silu_forward(float *out, const float *in, size_t N) {
    long n = (long)N;
#pragma omp parallel for simd num_threads(layers_threads())                                        \
    schedule(static) if (parallel                                                                  \
                         : N > PAR_MIN / 4)
    for (long i = 0; i < n; i++)
        out[i] = in[i] / (1.0f + vexp(-in[i]));
}

void silu_backward(float *din, const float *dout, const float *in, size_t N) {
    long n = (long)N;
#pragma omp parallel for simd num_threads(layers_threads())                                        \
    schedule(static) if (parallel                                                                  \
                         : N > PAR_MIN / 4)
    for (long i = 0; i < n; i++) {
        float x = in[i];
        float e = vexp(-x), s = 1.0f / (1.0f + e);
        din[i] += dout[i] * s * (1.0f + x * (e * s)); // 1 - s = e s, exact near s = 1
    }
}

void residual_forward(float *out, const float *a, const float *b, size_t N) {
    long n = (long)N;
#pragma omp parallel for simd num_threads(layers_threads()) schedule(static) if (parallel          \
                                                                                 : N > PAR_MIN)
    for (long i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void residual_backward(float *da, float *db, const float *dout, size_t N) {
    long n = (long)N;
    if (da) {
#pragma omp parallel for simd num_threads(layers_threads()) schedule(static) if (parallel          \
                                                                                 : N > PAR_MIN)
        for (long i = 0; i < n; i++)
            da[i] += dout[i];
    }
    if (db) {
#pragma omp parallel for simd num_threads(layers_threads()) schedule(static) if (parallel          \
                                                                                 : N > PAR_MIN)
        for (long i = 0; i < n; i++)
            db[i] += dout[i];
    }
}

// ---- log-probabilities and cross-entropy ------------------------------------------------

void logprob_forward(float *logp, float *lse, const float *logits, const int *targets, int N,
                     int V) {
#pragma omp parallel for num_threads(layers_threads())                                             \
    schedule(static) if ((size_t)N * V > PAR_MIN / 4)
    for (int i = 0; i < N; i++) {
        const float *x = logits + (size_t)i * V;
        // logsumexp = max + log(sum exp(x - max)): every exp <= 1, the sum >= 1.
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < V; j++)
            mx = x[j] > mx ? x[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < V; j++)
            sum += vexp(x[j] - mx);
        float ls = logf(sum);
        lse[i] = mx + ls;
        int tg = targets[i];
        assert(tg < V);
        // (x - max) - log(sum) rather than x - lse: lse is rounded at the logits' magnitude.
        logp[i] = tg >= 0 ? (x[tg] - mx) - ls : 0.0f;
    }
}

void logprob_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse,
                      const int *targets, int N, int V) {
    if (!dlogits)
        return;
#pragma omp parallel for num_threads(layers_threads())                                             \
    schedule(static) if ((size_t)N * V > PAR_MIN / 4)
    for (int i = 0; i < N; i++) {
        int tg = targets[i];
        float g = dlogp[i];
        // Masked positions (no target, or zero weight in the loss) add nothing: skip the exps.
        if (tg < 0 || g == 0.0f)
            continue;
        const float *x = logits + (size_t)i * V;
        float *dx = dlogits + (size_t)i * V;
        float l = lse[i];
#pragma omp simd
        for (int j = 0; j < V; j++)
            dx[j] -= g * vexp(x[j] - l);
        dx[tg] += g;
    }
}

// Sum of mask_i, floored at 1: the number of tokens the loss averages over.
static double xent_denom(const float *mask, int N) {
    if (!mask)
        return N > 1 ? (double)N : 1.0;
    double s = 0.0;
    for (int i = 0; i < N; i++)
        s += mask[i];
    return s > 1.0 ? s : 1.0;
}

float xent_forward(const float *logp, const float *mask, const float *weight, int N) {
    double s = 0.0;
    for (int i = 0; i < N; i++)
        s += (double)(mask ? mask[i] : 1.0f) * (weight ? weight[i] : 1.0f) * logp[i];
    return (float)(-s / xent_denom(mask, N));
}

void xent_backward(float *dlogp, float dloss, const float *mask, const float *weight, int N) {
    if (!dlogp)
        return;
    double k = -(double)dloss / xent_denom(mask, N);
    for (int i = 0; i < N; i++)
        dlogp[i] += (float)(k * (mask ? mask[i] : 1.0f) * (weight ? weight[i] : 1.0f));
}

// ---- time embedding ---------------------------------------------------------------------
// Angles t f_j are formed and reduced in double: t runs to hundreds or thousands, where a float
// angle would already be off by ~1e-4. N x D is small (one row per sample), so this is cheap.

void timeemb_forward(float *out, const float *t, int N, int D) {
    assert(D % 2 == 0);
    int half = D / 2;
    for (int i = 0; i < N; i++) {
        float *o = out + (size_t)i * D;
        for (int j = 0; j < half; j++) {
            double a = (double)t[i] * exp(-log(10000.0) * j / half);
            o[j] = (float)sin(a);
            o[half + j] = (float)cos(a);
        }
    }
}

void timeemb_backward(float *dt, const float *dout, const float *t, int N, int D) {
    assert(D % 2 == 0);
    if (!dt)
        return;
    int half = D / 2;
    for (int i = 0; i < N; i++) {
        const float *d = dout + (size_t)i * D;
        double s = 0.0;
        for (int j = 0; j < half; j++) {
            double f = exp(-log(10000.0) * j / half), a = (double)t[i] * f;
            s += f * (d[j] * cos(a) - d[half + j] * sin(a));
        }
        dt[i] += (float)s;
    }
}
