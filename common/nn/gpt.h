// gpt.h: a GPT-2-style byte-level causal transformer with tied embeddings.
//
// Vocabulary: the 256 byte values plus special tokens (BOS, EOS, PAD, SEP). One arena holds
// parameters, gradients, AdamW state and the activations for up to max_batch sequences of
// ctx_len tokens; nothing is allocated in the step loop.
//
// A training step:   gpt_forward(m, tokens, targets, B, T)  -> m->logp (B,T), m->logits
//                    fill m->dlogp (B,T) with dLoss/dlogp (e.g. gpt_mle_loss, or an RL loss)
//                    paramset_zero_grad(&m->ps); gpt_backward(m); adamw_step(&m->ps, ...)
#ifndef RLX_GPT_H
#define RLX_GPT_H

#include "ckpt.h"
#include "paramset.h"

enum {
    GPT_TOK_BOS = 256, // start of a sequence
    GPT_TOK_EOS = 257, // end of a response / document
    GPT_TOK_PAD = 258, // padding (never a target)
    GPT_TOK_SEP = 259, // separator, free for tasks to use
    GPT_VOCAB = 260,   // 256 bytes + 4 specials
};

typedef struct {
    int n_layer; // transformer blocks (L)
    int n_embd;  // model width (C)
    int n_head;  // attention heads (NH); C % NH == 0
    int ctx_len; // maximum sequence length (maxT)
    int vocab;   // vocabulary size (V), GPT_VOCAB by default
} gpt_config_t;

// Parameter tensors, in arena order (the order of GPT_PARAM_NAMES).
typedef struct {
    float *wte;      // (V, C)  token embedding, tied with the output layer
    float *wpe;      // (maxT, C) position embedding
    float *ln1w;     // (L, C)
    float *ln1b;     // (L, C)
    float *qkvw;     // (L, 3C, C)
    float *qkvb;     // (L, 3C)
    float *attprojw; // (L, C, C)
    float *attprojb; // (L, C)
    float *ln2w;     // (L, C)
    float *ln2b;     // (L, C)
    float *fcw;      // (L, 4C, C)
    float *fcb;      // (L, 4C)
    float *fcprojw;  // (L, C, 4C)
    float *fcprojb;  // (L, C)
    float *lnfw;     // (C)
    float *lnfb;     // (C)
} gpt_params_t;

#define GPT_NUM_PARAM_TENSORS 16
extern const char *const GPT_PARAM_NAMES[GPT_NUM_PARAM_TENSORS];

// Activations for one forward/backward, all (B, T, ...) with B <= max_batch, T <= ctx_len.
typedef struct {
    float *encoded;   // (B, T, C)
    float *ln1;       // (L, B, T, C)
    float *ln1_mean;  // (L, B, T)
    float *ln1_rstd;  // (L, B, T)
    float *qkv;       // (L, B, T, 3C)
    float *atty;      // (L, B, T, C)
    float *att;       // (L, B, NH, T, T)
    float *attproj;   // (L, B, T, C)
    float *residual2; // (L, B, T, C)
    float *ln2;       // (L, B, T, C)
    float *ln2_mean;  // (L, B, T)
    float *ln2_rstd;  // (L, B, T)
    float *fch;       // (L, B, T, 4C)
    float *fch_gelu;  // (L, B, T, 4C)
    float *fcproj;    // (L, B, T, C)
    float *residual3; // (L, B, T, C)
    float *lnf;       // (B, T, C)
    float *lnf_mean;  // (B, T)
    float *lnf_rstd;  // (B, T)
    float *logits;    // (B, T, V)
    float *lse;       // (B, T) logsumexp of each row of logits
} gpt_acts_t;

typedef struct gpt {
    gpt_config_t cfg;    // architecture
    int max_batch;       // activation capacity in sequences
    paramset_t ps;       // parameters, gradients, AdamW state (contiguous)
    gpt_params_t w;      // views into ps.w
    gpt_params_t g;      // views into ps.g (same layout)
    gpt_acts_t a;        // activations
    gpt_acts_t da;       // activation gradients, one layer deep (gpt.c act_sizes); dlogits
    float *datt_scratch; // (B, NH, T, T) attention backward scratch
    int *tokens;         // (B, T) inputs of the last forward
    int *targets;        // (B, T) targets of the last forward (-1 = none)
    float *logp;         // (B, T) log p(target) of the last forward (0 where target < 0)
    float *dlogp;        // (B, T) gradient on logp, filled by the caller before gpt_backward
    float *mask;         // (B, T) scratch for gpt_mle_loss's effective mask
    float *vocab_mask;   // (V) added to every row of logits when vocab_masked: 0 or -inf
    int vocab_masked;    // gpt_set_vocab_mask is in force
    int B, T;            // shape of the last forward
    float *arena;        // the one allocation everything above points into
    size_t arena_floats; // its size
} gpt_t;

// A model with GPT-2 initialisation (normal 0.02, residual projections 0.02/sqrt(2L),
// LayerNorm weights 1, biases 0) from seed. Dies with a hint on a bad config.
gpt_t *gpt_new(const gpt_config_t *cfg, int max_batch, uint64_t seed);
void gpt_destroy(gpt_t **self_p);

// Forward over tokens(B,T). targets(B,T) may be NULL (logits only); entries < 0 are ignored.
void gpt_forward(gpt_t *m, const int *tokens, const int *targets, int B, int T);
// Restricts the model's softmax to the n tokens allowed[] (each in [0, V), n >= 1): from now
// on every forward adds -inf to the logits of all other tokens (0 to the allowed ones), so
// logp, lse and the gradient are those of the log-softmax over the allowed set; the masked
// logits read -inf in m->a.logits. A target outside the set gets logp -inf (the caller's
// error). n = 0 lifts the restriction. Used by GFlowNet training on text (text_gfn.h).
void gpt_set_vocab_mask(gpt_t *m, const int *allowed, int n);
// Backward from m->dlogp through the last forward; accumulates into m->ps.g.
void gpt_backward(gpt_t *m);
// MLE loss of the last forward: -sum_i mask_i weight_i logp_i / max(sum_i mask_i, 1), where
// mask_i is the given mask (1 if NULL) times [target_i >= 0]: positions without a target
// never count. Writes m->dlogp for it (overwrites). mask/weight (B,T) may be NULL.
// Returns the loss.
float gpt_mle_loss(gpt_t *m, const float *mask, const float *weight);

// One row (T positions) of a batch that scores a response given its prompt, for
// gpt_forward: inputs tokens[0 .. len-2] then PAD, targets the next token at the response's
// positions only (-1 elsewhere), len = prompt_len + resp_len <= T + 1.
void gpt_response_row(int *tok_row, int *tgt_row, int T, const int *tokens, int prompt_len,
                      int resp_len);

// FLOPs of one forward+backward over B*T tokens (matmuls and attention, 6N + attention).
double gpt_flops_per_step(const gpt_config_t *cfg, int B, int T);

// Checkpoints (kind CKPT_KIND_GPT): parameters, optimizer state, and an opaque extra blob.
int gpt_save(const gpt_t *m, const char *path, const void *extra, size_t extra_len, char *err,
             size_t errlen);
// Builds a model from a verified checkpoint; NULL with err if it is not a gpt checkpoint.
gpt_t *gpt_from_ckpt(const ckpt_t *c, int max_batch, char *err, size_t errlen);
// Convenience: read + gpt_from_ckpt.
gpt_t *gpt_load(const char *path, int max_batch, char *err, size_t errlen);

#endif
