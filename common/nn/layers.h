// layers.h: the layer kernels every rlx model is built from, as forward/backward pairs.
//
// Conventions (after llm.c):
//   layer_forward(out, saved..., in, params..., dims)   writes its outputs (=).
//   layer_backward(din, dparams..., dout, in, saved..., dims) ACCUMULATES (+=) into every
//   gradient it is given, activations and parameters alike; a NULL gradient pointer is skipped.
// Row-major throughout; N is the number of rows (tokens), C a feature width.
//
// This is the back-end interface: layers_cpu.c implements it with OpenBLAS; a GPU back end
// (cuBLAS/CUDA) implements the same signatures over device pointers and is chosen at build
// time (CMake option RLX_BACKEND). Models call nothing but these functions for their numerics.
#ifndef RLX_LAYERS_H
#define RLX_LAYERS_H

#include <stddef.h>

// Name of the back end compiled in ("cpu-openblas", ...).
const char *layers_backend(void);
// Threads used by the kernels (BLAS and the element-wise loops).
void layers_set_threads(int n);
int layers_threads(void);

// Buffers of the back end (device memory on a GPU), zero-filled, 64-byte aligned; NULL when
// out of memory.
float *layers_alloc(size_t n);
void layers_free(float *p);
void layers_zero(float *p, size_t n);
// Copies between host memory and back-end memory (plain memcpy on the CPU).
void layers_to_device(float *dst, const float *src, size_t n);
void layers_to_host(float *dst, const float *src, size_t n);

// Linear: out(N,OC) = in(N,IC) @ w(OC,IC)^T + b(OC). b may be NULL. Uses sgemm.
void linear_forward(float *out, const float *in, const float *w, const float *b, int N, int IC,
                    int OC);
void linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, int N, int IC, int OC);

// Token + position embedding: out(B,T,C)[b,t] = wte(V,C)[tokens[b,t]] + wpe(maxT,C)[t].
void embed_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T,
                   int C);
void embed_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T,
                    int C);

// LayerNorm over the last dim (eps 1e-5): out(N,C); saves mean(N), rstd(N).
void layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                       const float *b, int N, int C);
void layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const float *mean, const float *rstd, int N, int C);

// Causal multi-head self-attention core (the q/k/v and output projections are linear layers):
// qkv(B,T,3C) holds q | k | v, head h in columns [h*C/NH, (h+1)*C/NH) of each; out(B,T,C);
// att(B,NH,T,T) saves the softmax probabilities (upper triangle zero). Scale 1/sqrt(C/NH).
// datt(B,NH,T,T) is scratch for the backward pass (its contents on entry do not matter).
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH);
void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, int B, int T, int C, int NH);

// Attention of one new position per sequence against a key/value cache (sampling).
// Row i of qkv(n, 3C) belongs to sequence seq[i] at position pos[i]: its k and v are first
// stored in kcache/vcache (max_seqs, ctx, C) at [seq[i], pos[i]], then its q attends to
// positions 0..pos[i] of that sequence. out(n, C). No backward: sampling only.
void attention_decode_forward(float *out, float *kcache, float *vcache, const float *qkv,
                              const int *seq, const int *pos, int n, int ctx, int C, int NH);

// GELU, tanh approximation (GPT-2's): out(N) = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))).
void gelu_forward(float *out, const float *in, size_t N);
void gelu_backward(float *din, const float *dout, const float *in, size_t N);

// SiLU: out(N) = x * sigmoid(x).
void silu_forward(float *out, const float *in, size_t N);
void silu_backward(float *din, const float *dout, const float *in, size_t N);

// Residual: out(N) = a + b.
void residual_forward(float *out, const float *a, const float *b, size_t N);
void residual_backward(float *da, float *db, const float *dout, size_t N);

// Per-token log-probabilities of given tokens under softmax(logits):
// logp(N) = logits[i, target_i] - logsumexp(logits[i, :]); lse(N) saves the logsumexp.
// A target < 0 marks a position with no token: logp = 0 there and no gradient flows.
void logprob_forward(float *logp, float *lse, const float *logits, const int *targets, int N,
                     int V);
// dlogits(N,V) += dlogp_i * (onehot(target_i) - softmax(logits_i)).
void logprob_backward(float *dlogits, const float *dlogp, const float *logits, const float *lse,
                      const int *targets, int N, int V);

// Softmax cross-entropy with per-token masks and weights, on top of logprob_*:
// loss = -sum_i mask_i * weight_i * logp_i / max(sum_i mask_i, 1). mask or weight NULL = all 1.
float xent_forward(const float *logp, const float *mask, const float *weight, int N);
// dlogp_i += -dloss * mask_i * weight_i / max(sum_i mask_i, 1).
void xent_backward(float *dlogp, float dloss, const float *mask, const float *weight, int N);

// Sinusoidal time embedding: out(N,D) with half = D/2, f_j = exp(-ln(10000) * j / half):
// out[i, j] = sin(t_i f_j), out[i, half + j] = cos(t_i f_j), j < half. D must be even.
void timeemb_forward(float *out, const float *t, int N, int D);
// dt(N) += sum_j dout[i, :] * d out[i, :] / d t_i.
void timeemb_backward(float *dt, const float *dout, const float *t, int N, int D);

#endif
