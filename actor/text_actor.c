// text_actor.c: the actor's text kind (actor_kind.h): installs a gpt checkpoint (with a
// KV-cache sampler over it) and samples a WorkItem's prompts x samples_per_prompt responses in
// slices of at most `batch` sequences, one slice per step, so that the actor's poll loop
// services the socket between slices. Weights may change between slices: every response
// carries the version that sampled it.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actor_kind.h"
#include "bytetok.h"
#include "gpt.h"
#include "item_batch.h"
#include "paramset.h"
#include "sampler.h"

// The text kind's model slot.
typedef struct {
    gpt_t *gpt;         // the policy
    sampler_t *sampler; // its sampler (batch sequences per call)
} text_model_t;

// One text work item being sampled.
typedef struct {
    const Rlx__WorkItem *item; // the item (borrowed)
    actor_job_ctx_t ctx;       // ids, seed, batch
    int n;                     // sequences: prompts * samples_per_prompt
    int k;                     // samples per prompt
    int next;                  // next sequence to sample
    int max_new;               // tokens per response slot (clamped to the context)
    sample_config_t sc;        // sampling parameters of the item
    int *ptok;                 // prompt tokens of all prompts, concatenated
    int *poff;                 // (prompts + 1) offsets into ptok
    int *slice_tok;            // (batch * longest prompt) prompts of the slice being sampled
    int *slice_off;            // (batch + 1)
    int *out_tok;              // (n, max_new) sampled tokens
    float *out_logp;           // (n, max_new) their log-probs
    int *out_len;              // (n) response lengths
    uint64_t *out_ver;         // (n) policy version that sampled each sequence
    int *allowed;              // (item's n_allowed_tokens) the tokens it may sample, or NULL
    // the batch, once built
    item_batch_t ib;         // headers, batch and envelope
    Rlx__TextTrajectory *tx; // (n) the trajectories' bodies
    uint32_t *rtok;          // (n, max_new) response tokens as the wire holds them
    uint32_t *wptok;         // prompt tokens as the wire holds them
} text_job_t;

static int config_matches(const gpt_config_t *c, const int32_t *k) {
    return c->n_layer == k[0] && c->n_embd == k[1] && c->n_head == k[2] && c->ctx_len == k[3] &&
           c->vocab == k[4];
}

static void text_destroy(void **model_p) {
    text_model_t *m = *model_p;
    if (!m)
        return;
    sampler_destroy(&m->sampler);
    gpt_destroy(&m->gpt);
    free(m);
    *model_p = NULL;
}

static int text_install(void **model_p, const ckpt_t *ck, int batch, char *err, size_t errlen) {
    text_model_t *m = *model_p;
    if (m && config_matches(&m->gpt->cfg, ckpt_config(ck)))
        return paramset_load(&m->gpt->ps, ck, err, errlen);
    gpt_t *g = gpt_from_ckpt(ck, 1, err, errlen);
    text_model_t *nm = g ? calloc(1, sizeof *nm) : NULL;
    if (!nm) {
        if (g)
            snprintf(err, errlen, "out of memory");
        gpt_destroy(&g);
        return -1;
    }
    nm->gpt = g;
    nm->sampler = sampler_new(g, batch);
    text_destroy(model_p);
    *model_p = nm;
    return 0;
}

static void text_job_destroy(void **job_p) {
    text_job_t *j = *job_p;
    if (!j)
        return;
    free(j->ptok);
    free(j->poff);
    free(j->slice_tok);
    free(j->slice_off);
    free(j->out_tok);
    free(j->out_logp);
    free(j->out_len);
    free(j->out_ver);
    free(j->allowed);
    item_batch_free(&j->ib);
    free(j->tx);
    free(j->rtok);
    free(j->wptok);
    free(j);
    *job_p = NULL;
}

// Fills j's prompt tokens (from the item's tokens, else its text) and allowed tokens. NULL,
// or why the item cannot be sampled.
static const char *job_tokens(text_job_t *j, const gpt_config_t *mc, char *buf, size_t len) {
    const Rlx__WorkItem *it = j->item;
    size_t o = 0;
    for (size_t p = 0; p < it->n_prompts; p++) {
        const Rlx__Prompt *pr = it->prompts[p];
        j->poff[p] = (int)o;
        if (!pr->n_tokens) {
            size_t n = strlen(pr->text);
            o += bytetok_encode_prompt(pr->text, n, j->ptok + o, (int)(n + 1));
            continue;
        }
        for (size_t t = 0; t < pr->n_tokens; t++) {
            if (pr->tokens[t] >= (uint32_t)mc->vocab) {
                snprintf(buf, len, "prompt %llu has token %u, vocabulary is %d",
                         (unsigned long long)pr->prompt_id, pr->tokens[t], mc->vocab);
                return buf;
            }
            j->ptok[o++] = (int)pr->tokens[t];
        }
    }
    j->poff[it->n_prompts] = (int)o;
    if (it->n_allowed_tokens == 0)
        return NULL;
    if (!(j->allowed = malloc(it->n_allowed_tokens * sizeof(int))))
        return "out of memory";
    for (size_t t = 0; t < it->n_allowed_tokens; t++) {
        if (it->allowed_tokens[t] >= (uint32_t)mc->vocab) {
            snprintf(buf, len, "allowed token %u outside the vocabulary of %d",
                     it->allowed_tokens[t], mc->vocab);
            return buf;
        }
        j->allowed[t] = (int)it->allowed_tokens[t];
    }
    return NULL;
}

// The item's sampling parameters.
static void job_sampling(text_job_t *j) {
    const Rlx__WorkItem *it = j->item;
    memset(&j->sc, 0, sizeof j->sc);
    j->sc.temperature = it->temperature;
    j->sc.top_k = (int)it->top_k;
    j->sc.max_new = j->max_new;
    j->sc.seed = j->ctx.seed;
    j->sc.allowed = j->allowed;
    j->sc.n_allowed = (int)it->n_allowed_tokens;
    if (it->n_stop_tokens == 0) {
        j->sc.stop[0] = GPT_TOK_EOS;
        j->sc.n_stop = 1;
        return;
    }
    if (it->n_stop_tokens > SAMPLER_MAX_STOP && j->ctx.note)
        j->ctx.note(j->ctx.note_arg, "work item has %zu stop tokens; using the first %d",
                    it->n_stop_tokens, SAMPLER_MAX_STOP);
    for (size_t s = 0; s < it->n_stop_tokens && s < SAMPLER_MAX_STOP; s++)
        j->sc.stop[j->sc.n_stop++] = (int)it->stop_tokens[s];
}

static void *text_job_new(void *model, const Rlx__WorkItem *it, const actor_job_ctx_t *ctx,
                          char *buf, size_t buflen, const char **why) {
    const gpt_config_t *mc = &((text_model_t *)model)->gpt->cfg;
    int P = (int)it->n_prompts, k = it->samples_per_prompt ? (int)it->samples_per_prompt : 1;
    size_t total_tok = 0, longest = 0;
    for (int p = 0; p < P; p++) {
        const Rlx__Prompt *pr = it->prompts[p];
        size_t len = pr->n_tokens ? pr->n_tokens : strlen(pr->text) + 1; // + BOS
        total_tok += len;
        longest = len > longest ? len : longest;
    }
    if (P == 0 || (int64_t)P * k > (1 << 20)) {
        *why = P == 0 ? "no prompts" : "too many sequences";
        return NULL;
    }
    if (longest >= (size_t)mc->ctx_len) {
        snprintf(buf, buflen, "a prompt of %zu tokens leaves no room in the context of %d", longest,
                 mc->ctx_len);
        *why = buf;
        return NULL;
    }
    text_job_t *j = calloc(1, sizeof *j);
    if (!j) {
        *why = "out of memory";
        return NULL;
    }
    int maxplen = (int)longest, B = ctx->batch;
    j->item = it;
    j->ctx = *ctx;
    j->k = k;
    j->n = P * k;
    int room = mc->ctx_len - maxplen;
    j->max_new =
        it->max_new_tokens && (int)it->max_new_tokens < room ? (int)it->max_new_tokens : room;
    j->ptok = malloc((total_tok ? total_tok : 1) * sizeof(int));
    j->poff = malloc((size_t)(P + 1) * sizeof(int));
    j->slice_tok = malloc((size_t)B * maxplen * sizeof(int));
    j->slice_off = malloc((size_t)(B + 1) * sizeof(int));
    j->out_tok = malloc((size_t)j->n * j->max_new * sizeof(int));
    j->out_logp = malloc((size_t)j->n * j->max_new * sizeof(float));
    j->out_len = calloc((size_t)j->n, sizeof(int));
    j->out_ver = calloc((size_t)j->n, sizeof(uint64_t));
    *why = NULL;
    if (!j->ptok || !j->poff || !j->slice_tok || !j->slice_off || !j->out_tok || !j->out_logp ||
        !j->out_len || !j->out_ver)
        *why = "out of memory";
    else
        *why = job_tokens(j, mc, buf, buflen);
    if (*why) {
        void *p = j;
        text_job_destroy(&p);
        return NULL;
    }
    job_sampling(j);
    return j;
}

// Samples sequences [next, next + batch) of the job with the weights held now.
static int text_step(void *model, void *job, uint64_t version, uint64_t *units, const char **why) {
    text_model_t *m = model;
    text_job_t *j = job;
    int b = j->n - j->next < j->ctx.batch ? j->n - j->next : j->ctx.batch;
    int o = 0;
    for (int i = 0; i < b; i++) {
        int p = (j->next + i) / j->k;
        int len = j->poff[p + 1] - j->poff[p];
        j->slice_off[i] = o;
        memcpy(j->slice_tok + o, j->ptok + j->poff[p], (size_t)len * sizeof(int));
        o += len;
    }
    j->slice_off[b] = o;
    size_t at = (size_t)j->next * j->max_new;
    int rc = sampler_generate(m->sampler, j->slice_tok, j->slice_off, b, &j->sc, (uint64_t)j->next,
                              j->out_tok + at, j->out_logp + at, j->out_len + j->next);
    if (rc == SAMPLER_NONFINITE) {
        *why = "the model gives NaN/inf logits (non-finite weights?)";
        return ACTOR_STEP_NONFINITE;
    }
    if (rc != 0) {
        *why = "sampler refused the arguments";
        return ACTOR_STEP_REFUSED;
    }
    *units = 0;
    for (int i = 0; i < b; i++) {
        j->out_ver[j->next + i] = version;
        *units += (uint64_t)j->out_len[j->next + i];
    }
    j->next += b;
    return j->next == j->n;
}

static int is_stop_token(const sample_config_t *c, int t) {
    for (int i = 0; i < c->n_stop; i++)
        if (c->stop[i] == t)
            return 1;
    return 0;
}

// The finished job as one TrajectoryBatch.
static Rlx__Envelope *text_batch(void *job, int *count, const char **why) {
    text_job_t *j = job;
    const Rlx__WorkItem *it = j->item;
    int n = j->n, np = j->poff[it->n_prompts]; // n = prompts * k
    int hdr = item_batch_init(&j->ib, it, j->k, j->ctx.actor_id, j->ctx.first_seq, 0);
    j->tx = calloc((size_t)n, sizeof *j->tx);
    j->rtok = malloc(((size_t)n * j->max_new + 1) * sizeof(uint32_t));
    j->wptok = malloc(((size_t)np + 1) * sizeof(uint32_t));
    if (hdr != 0 || !j->tx || !j->rtok || !j->wptok) {
        *why = "out of memory building the batch";
        return NULL;
    }
    for (int i = 0; i < np; i++)
        j->wptok[i] = (uint32_t)j->ptok[i];
    for (int i = 0; i < n; i++) {
        int p = i / j->k, len = j->out_len[i];
        size_t at = (size_t)i * j->max_new;
        Rlx__TextTrajectory *tx = &j->tx[i];
        for (int t = 0; t < len; t++)
            j->rtok[at + t] = (uint32_t)j->out_tok[at + t];
        rlx__text_trajectory__init(tx);
        tx->n_prompt_tokens = (size_t)(j->poff[p + 1] - j->poff[p]);
        tx->prompt_tokens = j->wptok + j->poff[p];
        tx->n_response_tokens = (size_t)len;
        tx->response_tokens = j->rtok + at;
        tx->n_logprobs = (size_t)len;
        tx->logprobs = j->out_logp + at;
        tx->finish_reason = len > 0 && is_stop_token(&j->sc, j->out_tok[at + len - 1])
                                ? RLX__FINISH_REASON__FINISH_REASON_STOP
                                : RLX__FINISH_REASON__FINISH_REASON_LENGTH;
        j->ib.tr[i].policy_version = j->out_ver[i]; // weights may change between slices
        j->ib.tr[i].kind_case = RLX__TRAJECTORY__KIND_TEXT;
        j->ib.tr[i].text = tx;
    }
    *count = n;
    return &j->ib.env;
}

const actor_kind_t text_actor_kind = {
    .kind = KIND_TEXT,
    .name = "text",
    .holds = actor_holds_model,
    .install = text_install,
    .job_new = text_job_new,
    .step = text_step,
    .batch = text_batch,
    .job_destroy = text_job_destroy,
    .destroy = text_destroy,
};
