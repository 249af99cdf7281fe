// text_gfn.h: GFlowNet training of the gpt on text (docs/gflownet.md, "Text"). The objects are
// responses of exactly L tokens over a small alphabet A of bytes, generated autoregressively
// after a training prompt by the ordinary text path (actors sample with the published gpt,
// WorkItem.allowed_tokens = A). Each prefix has one parent, so the DAG is a tree, P_B = 1 and
// trajectory balance needs no backward policy:
//
//     loss = mean_i (log Z_p(i) + sum_t log pi(y_t | prompt, y_<t) - log R(y_i))^2,
//
// pi the gpt's softmax restricted to A (gpt_set_vocab_mask), one learned log Z per training
// prompt p (the hub's prompt_id), log R = beta * (the scorer's scalar). Because |A|^L is small
// the learned distribution is evaluated exactly by enumeration: p(y) = prod_t pi(y_t | ...),
// and with a built-in scorer (scorers.h) R(y) for every y, so L1 = sum_y |p(y) - R(y)/Z|.
//
// Used by the text learner (learner.c, --objective tb): text_gfn_task_* read the task,
// text_gfn_loss is the objective on a shard, text_gfn_eval_* the exact evaluation and the mode
// count on rank 0.
#ifndef RLX_TEXT_GFN_H
#define RLX_TEXT_GFN_H

#include <stddef.h>
#include <stdint.h>

#include "gpt.h"
#include "paramset.h"

#define TEXT_GFN_MAX_SEQS (1 << 20)  // most sequences |A|^L a task may enumerate, per prompt
#define TEXT_GFN_MAX_CELLS (1 << 22) // most prompts * |A|^L

// The task: training prompts (the hub's train prompt file), the alphabet and the length.
typedef struct {
    int n_prompts;        // prompts; prompt_id i is the i-th non-empty line, as the hub counts
    char **text;          // (n_prompts) prompt texts (before the tab)
    char **target;        // (n_prompts) targets (after the tab; "" when none), the scorer's
    int **tokens;         // (n_prompts) prompt tokens: BOS + bytes (bytetok_encode_prompt)
    int *n_tokens;        // (n_prompts) their counts
    int max_prompt;       // the longest prompt in tokens
    int alphabet[128];    // the allowed response tokens (ASCII bytes 1..127), in the order given
    int n_alpha;          // |A|: 2..127
    int index[GPT_VOCAB]; // token -> its position in alphabet, -1 if not allowed
    int length;           // L: tokens per response
    int64_t n_seqs;       // |A|^L
} text_gfn_task_t;

// Reads the prompt file (prompt<TAB>target lines, empty lines skipped, exactly as the hub
// does) and checks the alphabet (distinct ASCII bytes 1..127, at least 2) and the length (>= 1) and
// that |A|^L and prompts * |A|^L stay within TEXT_GFN_MAX_SEQS / TEXT_GFN_MAX_CELLS. 0, or -1 with
// err.
int text_gfn_task_load(text_gfn_task_t *t, const char *path, const int *alphabet, int n_alpha,
                       int length, char *err, size_t errlen);
void text_gfn_task_free(text_gfn_task_t *t);
// Why a text trajectory of prompt_id cannot be trained on, or NULL: the prompt is not the
// task's prompt_id, the response is not L tokens of the alphabet.
const char *text_gfn_check(const text_gfn_task_t *t, uint64_t prompt_id, const uint32_t *prompt,
                           size_t n_prompt, const uint32_t *response, size_t n_response);
// Response x (L tokens of the alphabet) as its index in the enumeration, sum_t a(x_t) |A|^(L-1-t)
// (the first token most significant); -1 if it is not one.
int64_t text_gfn_seq_index(const text_gfn_task_t *t, const int *x, int len);
// The tokens of sequence number i (L of them) into x.
void text_gfn_seq_tokens(const text_gfn_task_t *t, int64_t i, int *x);

// One trajectory for the loss.
typedef struct {
    int prompt_len;     // tokens of the prompt (starts with BOS)
    int resp_len;       // tokens of the response (L)
    const int *tokens;  // (prompt_len + resp_len) prompt then response
    const float *blogp; // (resp_len) behaviour log-probs (staleness statistics only)
    float logr;         // log R(y)
    int prompt;         // index of its log Z
} text_gfn_sample_t;

typedef struct {
    double loss;      // sum of the squared residuals, divided by denom
    double resid_abs; // sum of |residual| (over this shard's trajectories)
    double stale_sum; // sum over tokens of |logp - blogp| (the samples' policy lag)
    double ratio_sum; // sum over tokens of exp(logp - blogp)
    int tokens;       // response tokens in this shard
} text_gfn_stats_t;

// Forward of samples [0, n) through m (n <= m->max_batch; m's vocabulary mask is the
// alphabet) and the TB loss: m->dlogp gets dLoss/dlogp, dlogz[p] += dLoss/dlog Z_p, with
// Loss = (1/denom) sum_i r_i^2, r_i = logz[p_i] + sum_t logp_it - logr_i. denom is the global
// batch's size, so shards on several ranks add up to the global mean. tok and tgt are caller
// scratch of m->max_batch * ctx_len ints. Then gpt_backward(m) gives the parameter gradient.
void text_gfn_loss(gpt_t *m, const text_gfn_sample_t *s, int n, const float *logz, float *dlogz,
                   double denom, int *tok, int *tgt, text_gfn_stats_t *st);

// log Z table: one entry per prompt, its own paramset (AdamW at --logz-lr), stored after the
// learner state in the checkpoint's extra section: magic "RLXTGFN1", int64 n, int64 step,
// then w, m, v (n floats each).
typedef struct {
    paramset_t ps; // (n_prompts) log Z values, gradients, moments
    float *buf;    // (4 n) the one allocation they point into
} text_gfn_logz_t;

void text_gfn_logz_init(text_gfn_logz_t *z, int n, float init);
void text_gfn_logz_free(text_gfn_logz_t *z);
// Bytes text_gfn_logz_pack writes.
size_t text_gfn_logz_bytes(const text_gfn_logz_t *z);
void text_gfn_logz_pack(const text_gfn_logz_t *z, void *out);
// 0, or -1 with err (no "RLXTGFN1" record, or another table size: nothing is changed then).
int text_gfn_logz_unpack(text_gfn_logz_t *z, const void *in, size_t len, char *err, size_t errlen);

// Exact evaluation of prompt by prompt: the log-rewards of all |A|^L sequences, computed
// once, and the modes: sequences whose reward is above every Hamming neighbour's (for
// "seqmodes", the mode strings that beat their neighbours).
typedef struct text_gfn_eval text_gfn_eval_t;

typedef struct {
    double l1;        // mean over prompts of sum_y |p(y) - R(y)/Z|
    double l1_max;    // the largest prompt's
    double logz_err;  // mean over prompts of |log Z_p (learned) - log Z_p (true)|
    double logz_true; // prompt 0's true log Z
    double mode_mass; // mean over prompts of p(modes)
    double mass;      // mean over prompts of sum_y p(y) (1 up to rounding: a check)
    int modes_found;  // modes sampled at least once (text_gfn_eval_observe), all prompts
    int n_modes;      // modes, all prompts
} text_gfn_result_t;

// An evaluator whose log R(y) of prompt p is logr[p * |A|^L + i] for sequence number i
// (copied). NULL with err when a log-reward is not finite or an allocation fails.
text_gfn_eval_t *text_gfn_eval_new(const text_gfn_task_t *t, const double *logr, char *err,
                                   size_t errlen);
// The same with log R = beta * scorer_score(scorer, prompt text, y as text, target) for the
// built-in text scorer `scorer` (scorer_find): the reward workers' function, in-process.
text_gfn_eval_t *text_gfn_eval_from_scorer(const text_gfn_task_t *t, int scorer, float beta,
                                           char *err, size_t errlen);
void text_gfn_eval_destroy(text_gfn_eval_t **self_p);
// log Z (true) of prompt p.
double text_gfn_eval_logz(const text_gfn_eval_t *e, int p);
// The modes of prompt p: *n of them, sequence numbers into idx (up to cap).
int text_gfn_eval_modes(const text_gfn_eval_t *e, int p, int64_t *idx, int cap);
// Modes sampled so far (text_gfn_eval_observe), all prompts.
int text_gfn_eval_modes_found(const text_gfn_eval_t *e);
// Notes a sampled response of prompt p (L tokens); modes sampled for the first time count.
void text_gfn_eval_observe(text_gfn_eval_t *e, int p, const int *response, int len);
// log p(y) of every sequence of prompt p under m (its mask the alphabet), batched forwards of
// m->max_batch sequences: out has |A|^L entries. tok and tgt as for text_gfn_loss.
void text_gfn_seq_logp(text_gfn_eval_t *e, gpt_t *m, int p, int *tok, int *tgt, double *out);
// Evaluates m against the rewards: L1, mode mass, log Z errors (logz: the learned table).
void text_gfn_evaluate(text_gfn_eval_t *e, gpt_t *m, const float *logz, int *tok, int *tgt,
                       text_gfn_result_t *out);

#endif
