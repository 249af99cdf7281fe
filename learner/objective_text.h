// objective_text.h: what the two text objectives (objective_rl.c: REINFORCE/PPO;
// objective_text_tb.c: trajectory balance) share: the gpt on every rank (loaded from --init or
// OUT/learner.ckpt, or fresh for TB), the batch of text samples in flat arrays (sized once at
// start: batch + a group of samples, each at most ctx + 1 tokens), adding TrajectoryBatch
// envelopes to it, its broadcast, the weights blob (a params-only gpt checkpoint, serialised
// in memory) and the checkpoint (learner.ckpt: the gpt with AdamW state, the learner state and
// an objective's extra bytes after it).
#ifndef RLX_OBJECTIVE_TEXT_H
#define RLX_OBJECTIVE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "gpt.h"
#include "learner.h"
#include "learner_common.h"
#include "text_gfn.h"

// A batch of text samples in flat arrays (the form in which it is broadcast).
typedef struct {
    int n;                      // samples
    int ntok;                   // tokens over all samples (prompt + response)
    int nlp;                    // response tokens over all samples
    int cap_n, cap_tok, cap_lp; // capacities
    int *plen;                  // (n) prompt lengths
    int *rlen;                  // (n) response lengths
    int *prompt;                // (n) prompt index (Trajectory.prompt_id; TB only, else 0)
    int *tokens;                // (ntok) prompt then response of each sample, back to back
    float *blogp;               // (nlp) behaviour log-probs
    float *reward;              // (n)
    float *adv;                 // (n) advantages (computed on rank 0)
    uint64_t *group;            // (n) group ids (rank 0 only)
    int64_t *version;           // (n) behaviour policy versions (rank 0 only)
} text_batch_t;

// The state both text objectives hold.
typedef struct {
    const learner_config_t *c;    // the run's config
    int rank, nranks;             // this rank, ranks
    gpt_t *m;                     // the policy (every rank)
    gpt_config_t cfg;             // its config
    int cap;                      // most samples on one rank (the model's batch)
    int allowed[HUB_MAX_ALLOWED]; // the alphabet as ints (the sampler's and model's form)
    int n_allowed;                // its size (0: the whole vocabulary)
    text_batch_t b;               // the batch
    int *tok, *tgt;               // (cap, ctx) scratch of the loss
    const text_gfn_task_t *task;  // TB's task (prompts checked against it), or NULL
    learner_admit_t *adm;         // rank 0's admission of the current batch (batch_begin)
    char path[4096];              // OUT/learner.ckpt
} text_t;

// Collective: fills t's model. Rank 0 reads --init or, with --resume and OUT/learner.ckpt
// present, the checkpoint (*cnt from its learner state; the bytes after that state go to
// *extra, malloc'ed, with their length, for the objective: NULL when none); without either a
// fresh gpt of c->new_gpt when fresh_ctx > 0 (its context when new_gpt's is 0), else an
// error. Every rank then holds rank 0's parameters and AdamW state, the vocabulary mask of the
// alphabet, the batch and scratch. 0, or -1 on every rank (message printed).
int text_init(text_t *t, const learner_config_t *c, learner_counts_t *cnt, int fresh_ctx,
              void **extra, size_t *extra_len);
void text_free(text_t *t);

// Objective entries shared by both text tables (self is a text_t * first member).
const int *text_batch_begin(void *self, learner_admit_t *adm);
void text_add(void *self, const Rlx__Envelope *env);
// Sends the batch (prepared on rank 0) and *stop from rank 0 to every rank.
void text_bcast_batch(text_t *t, int *stop);
int text_batch_n(void *self);
int text_finite(void *self);
void *text_weights(void *self, size_t *len, char *err, size_t errlen);
// learner.ckpt: the gpt with AdamW state, the learner state (cnt) and extra bytes after it.
int text_save(text_t *t, const learner_counts_t *cnt, const void *extra, size_t extra_len);
// The batch's mean reward (0 when empty).
double text_reward_mean(const text_t *t);
// Parameters (and optionally optimizer state) of rank 0's m to every rank.
void text_bcast_params(gpt_t *m, int with_opt);
// The common head of text metrics: reward_mean.
void text_metrics_head(const text_t *t, json_object *line);

#endif
