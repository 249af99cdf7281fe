// actor_kind.h: the actor's seam between its poll loop (actor.c) and what it samples. Each
// trajectory kind (kind.h: text, GFlowNet, diffusion) is one ops table, one const instance
// per kind in its own file (text_actor.c, gfn_actor.c, diffusion_actor.c); actor.c holds one
// model slot per kind and calls the table of the kind it decided, never the kind's code.
// (The shape of redis's ConnectionType: callers use the table, unaware of which kind.)
//
// A model is what a kind installs from a weights blob (a gpt with its sampler, a gflownet
// policy, a diffusion denoiser); a job is one WorkItem being sampled with it. The actor
// decides each kind once: a blob's from WeightAnnounce.kind (else actor_ckpt_kind, the one
// place that reads a checkpoint's kind and magic), an item's from actor_item_kind.
#ifndef RLX_ACTOR_KIND_H
#define RLX_ACTOR_KIND_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "kind.h"
#include "rlx.pb-c.h"

// What a job needs from the actor besides the item and the model.
typedef struct {
    uint32_t actor_id;       // trajectory ids (actor_id, first_seq ..)
    uint64_t first_seq;      // seq of the item's first trajectory
    uint64_t seed;           // the item's sampling seed (its own, or the actor's mixed in)
    int batch;               // most sequences per sampler call (text slices)
    void (*tick)(void *arg); // called between chunks of a long one-step item (keepalive)
    void *tick_arg;          // its argument
    void (*note)(void *arg, const char *fmt, ...); // logs a condition once per actor; may be
                                                   // NULL (text: too many stop tokens)
    void *note_arg;                                // its argument
} actor_job_ctx_t;

// actor_kind_t.step results besides 0 (more slices to do) and 1 (done: take the batch).
enum { ACTOR_STEP_REFUSED = -1, ACTOR_STEP_NONFINITE = -2 };

typedef struct {
    kind_t kind;      // the kind it samples
    const char *name; // its name in logs ("text", "gflow", "diffusion")
    // 1 when model (this kind's slot, may be NULL) can sample.
    int (*holds)(const void *model);
    // Installs checkpoint ck (already checked: this kind, finite parameters) into *model: in
    // place when the config matches, else a new model replaces the old (batch: the actor's
    // most sequences per sampler call). 0, or -1 with err and *model unchanged.
    int (*install)(void **model, const ckpt_t *ck, int batch, char *err, size_t errlen);
    // A job for item it (borrowed: valid until job_destroy) with model. NULL with *why
    // (pointing into a static string or into why_buf of why_len bytes) when the item cannot
    // be sampled.
    void *(*job_new)(void *model, const Rlx__WorkItem *it, const actor_job_ctx_t *ctx,
                     char *why_buf, size_t why_len, const char **why);
    // Samples the next slice of job with model, tagging it with policy version. *units gets
    // the tokens / transitions / denoising steps sampled. 0 = more to do, 1 = done,
    // ACTOR_STEP_REFUSED / ACTOR_STEP_NONFINITE with *why.
    int (*step)(void *model, void *job, uint64_t version, uint64_t *units, const char **why);
    // The TrajectoryBatch envelope of a done job (valid until job_destroy) and its number of
    // trajectories; NULL with *why (out of memory).
    Rlx__Envelope *(*batch)(void *job, int *trajectories, const char **why);
    void (*job_destroy)(void **job_p);
    void (*destroy)(void **model_p);
} actor_kind_t;

// A job sampled whole in its one step (GFlowNet, diffusion: milliseconds per chunk, tick
// between chunks): the item, the context and, once sampled, the kind's batch.
typedef struct {
    const Rlx__WorkItem *item; // the item (borrowed)
    actor_job_ctx_t ctx;       // ids, seed, keepalive
    void *batch;               // the kind's sampled batch (gfn_sampled_t, diff_batch_t), or NULL
} actor_whole_job_t;

// job_new for whole-job kinds: the item and context kept, to be checked and sampled in the
// step; NULL with *why when out of memory. The kind's job_destroy frees its batch, then the
// job with free().
void *actor_whole_job_new(void *model, const Rlx__WorkItem *it, const actor_job_ctx_t *ctx,
                          char *why_buf, size_t why_len, const char **why);
// holds for kinds whose slot is the model itself: model != NULL.
int actor_holds_model(const void *model);

extern const actor_kind_t text_actor_kind;      // text_actor.c
extern const actor_kind_t gfn_actor_kind;       // gfn_actor.c
extern const actor_kind_t diffusion_actor_kind; // diffusion_actor.c

// The table of kind k, or NULL for KIND_NONE and anything else.
const actor_kind_t *actor_kind(kind_t k);
// The kind of a work item: its body says it (WorkItem.gflow, .diffusion, else text).
kind_t actor_item_kind(const Rlx__WorkItem *it);
// The kind a checkpoint holds, from its header kind and (diffusion) its config's magic;
// KIND_NONE when the actor samples no such model.
kind_t actor_ckpt_kind(const ckpt_t *ck);
// 0 when every parameter of ck (its "params" section, and a GFlowNet's log Z) is finite,
// else -1 with err naming the first that is not: weights from a diverged learner.
int actor_params_finite(const ckpt_t *ck, char *err, size_t errlen);
// The sampling seed of item it: its own, else the actor's seed mixed with the work id.
uint64_t actor_item_seed(const Rlx__WorkItem *it, uint64_t actor_seed);

#endif
