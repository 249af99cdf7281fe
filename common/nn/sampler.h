// sampler.h: batched autoregressive sampling from a gpt with a key/value cache.
//
// Each sequence advances one position per step: while inside its prompt it is fed the
// prompt's next token (teacher forcing), after it a token is drawn from
// softmax(logits / temperature) restricted to the top-k (and, optionally, to a set of allowed
// tokens: the logits of all others are -inf). Prompts of different lengths
// share a batch. Every sequence has its own random stream, seeded from (seed, seq_id), so a
// sequence's sample does not depend on which others share its batch.
#ifndef RLX_SAMPLER_H
#define RLX_SAMPLER_H

#include <stdint.h>

#include "gpt.h"

#define SAMPLER_MAX_STOP 8
// sampler_generate's result when the model gives no distribution to draw from.
#define SAMPLER_NONFINITE (-2)

typedef struct {
    float temperature;          // 0 = greedy (argmax); logp then refers to the untempered model
    int top_k;                  // keep the k most likely tokens; 0 = all
    int max_new;                // most tokens generated per sequence (stop token included)
    int stop[SAMPLER_MAX_STOP]; // tokens that end a sequence (kept in the output)
    int n_stop;                 // entries of stop used
    uint64_t seed;              // run seed
    const int *allowed;         // (n_allowed) the only tokens that may be drawn; NULL = all
    int n_allowed;              // entries of allowed used; 0 = all tokens
} sample_config_t;

typedef struct sampler sampler_t;

// A sampler for up to max_batch sequences of m's context length. It reads m's parameters
// at each call (so it follows weight updates), and owns its cache.
sampler_t *sampler_new(const gpt_t *m, int max_batch);
void sampler_destroy(sampler_t **self_p);

// Samples B sequences. Prompt i is prompt[prompt_off[i] .. prompt_off[i+1]) (at least one
// token; prompt_len + max_new must fit the context). Sequence i uses random stream
// (c->seed, seq_id0 + i). Writes tokens out_tokens (B, max_new), log-probs under the
// sampling distribution out_logp (B, max_new) and lengths out_len (B). With allowed tokens,
// that distribution is the softmax over the allowed set only (top-k then ranks within it;
// greedy picks its argmax and logp is the untempered log-softmax over it). Returns 0, or -1
// if the arguments do not fit (nothing sampled; also an allowed token outside the vocabulary),
// or SAMPLER_NONFINITE when a row of logits holds a NaN or +inf (non-finite weights): the
// outputs are then partial and not to be used.
int sampler_generate(sampler_t *s, const int *prompt, const int *prompt_off, int B,
                     const sample_config_t *c, uint64_t seq_id0, int *out_tokens, float *out_logp,
                     int *out_len);

#endif
