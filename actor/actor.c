// actor.c: the rlx actor's poll loop (see actor.h for what it does and expects of the hub).
//
// One thread, one DEALER socket, one loop: receive and handle whatever the hub sent (never
// waiting more than a few tens of ms), run the timers (the session's Hello retries,
// heartbeats and hub liveness in common/net/worker_link, shared with the reward worker; the
// weight-fetch window and timeouts, re-asking for work, the stats line), then
// sample one slice of at most cfg.batch sequences of the current work item. Weights may
// change between slices; every trajectory carries the version that sampled it.
#include "actor.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#include <zlib.h>

#include "bytetok.h"
#include "ckpt.h"
#include "diffusion_actor.h"
#include "gflow_actor.h"
#include "gfn_ckpt.h"
#include "gpt.h"
#include "item_batch.h"
#include "sampler.h"
#include "util.h"
#include "wire.h"
#include "worker_link.h"

#define ACTOR_LOG_ONCE_SLOTS 32
// Largest weight blob accepted (a checkpoint of a few hundred million parameters).
#define ACTOR_MAX_BLOB ((uint64_t)4 << 30)
// A blob that fails its whole-blob CRC is fetched again at most this many times.
#define ACTOR_MAX_BLOB_RETRIES 3

// One weight fetch in progress: the announce it answers and the chunks received so far.
typedef struct {
    int active;                      // a fetch is running
    uint64_t version;                // version being fetched
    uint64_t total;                  // blob size in bytes
    uint32_t nchunks;                // chunks in the blob
    uint32_t chunk_bytes;            // size of every chunk but the last
    uint32_t crc;                    // CRC-32 of the whole blob
    int32_t config[CKPT_CONFIG_LEN]; // announced model config (first nconfig entries)
    int nconfig;                     // entries of config announced
    int retries;                     // whole-blob restarts so far
    uint8_t *buf;                    // (total) the blob being assembled
    uint64_t buf_cap;                // bytes allocated at buf: kept from fetch to fetch, so a
                                     // new version of the same model costs no page faults
    uint8_t *state;                  // (nchunks) 0 = to ask, 1 = asked, 2 = received
    double *asked_at;                // (nchunks) when each chunk was last asked for
    uint32_t *chunk_crc;             // (nchunks) CRC-32 of each chunk received: the whole
                                     // blob's is combined from them, not computed again
    uint32_t have;                   // chunks received
    int outstanding;                 // chunks asked for and not yet received
} fetch_t;

// The work item being sampled.
typedef struct {
    Rlx__Envelope *env;        // owns the item (from wire_recv)
    const Rlx__WorkItem *item; // env->work_item
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
} job_t;

struct actor {
    actor_config_t cfg;                    // configuration (strings copied below)
    char *name;                            // name for logs
    wlink_t *link;                         // the session with the hub (socket, wire, liveness)
    actor_stats_t st;                      // counters
    unsigned logged[ACTOR_LOG_ONCE_SLOTS]; // log-once flags
    double last_ask;                       // time of the last WorkRequest
    // weights
    gpt_t *model;         // current policy (NULL before the first weights)
    sampler_t *sampler;   // sampler over model
    gfn_policy_t *gfn;    // GFlowNet policy (gflow_actor.h), NULL unless its weights came
    diff_t *diff;         // diffusion policy (diffusion_actor.h), NULL unless its weights came
    uint64_t unavailable; // version the hub said it no longer holds (do not fetch again)
    fetch_t f;            // weight fetch in progress
    // work
    Rlx__Envelope **queue; // (qcap) FIFO of envelopes holding WorkItems not yet started
    int qlen, qcap;        // entries used, capacity
    job_t job;             // item being sampled (job.env NULL when none)
    // stats line
    double stats_due;    // next stats line
    double stats_t0;     // start of the current stats period
    uint64_t stats_tok0; // tokens at its start
};

// ---- small helpers ------------------------------------------------------------------------

// Logs a message the first time slot `slot` is used (errors are logged once, counted always).
static void log_once(actor_t *a, int slot, const char *fmt, ...) {
    assert(slot >= 0 && slot < ACTOR_LOG_ONCE_SLOTS);
    if (a->logged[slot]++)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "actor %s: ", a->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (logged once)\n");
    va_end(ap);
}

static void logf_(actor_t *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "actor %s: ", a->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

enum {
    LOG_BAD_CHUNK,
    LOG_STALE_CHUNK,
    LOG_BAD_BLOB,
    LOG_BAD_ANNOUNCE,
    LOG_NO_WEIGHTS,
    LOG_BAD_ITEM,
    LOG_STOP_TOKENS,
    LOG_UNEXPECTED,
    LOG_HUB_ERROR,
    LOG_SAMPLER,
};

static int send_env(actor_t *a, Rlx__Envelope *env) {
    return wlink_send(a->link, env);
}

static uint32_t free_credits(const actor_t *a) {
    int held = a->qlen + (a->job.env ? 1 : 0);
    return held < a->cfg.credits ? (uint32_t)(a->cfg.credits - held) : 0;
}

// ---- session (worker_link hooks) ------------------------------------------------------------

static void fill_hello(void *arg, Rlx__Hello *h) {
    actor_t *a = arg;
    h->role = RLX__ROLE__ROLE_ACTOR;
    h->agent = "rlx-actor 0.1";
    h->credits = (uint32_t)a->cfg.credits;
}

static void fill_heartbeat(void *arg, Rlx__Heartbeat *hb) {
    actor_t *a = arg;
    hb->credits = free_credits(a);
    hb->in_flight = (uint32_t)(a->qlen + (a->job.env ? 1 : 0));
    hb->policy_version = a->st.policy_version;
}

// Chunks asked for on the old socket will not come: ask again once joined.
static void on_new_socket(void *arg) {
    actor_t *a = arg;
    if (a->f.active) {
        for (uint32_t i = 0; i < a->f.nchunks; i++)
            if (a->f.state[i] == 1)
                a->f.state[i] = 0;
        a->f.outstanding = 0;
    }
}

// Copies the session's counters into the actor's.
static void sync_stats(actor_t *a) {
    a->st.session = *wlink_stats(a->link);
}

static void send_work_request(actor_t *a) {
    uint32_t room = free_credits(a);
    if (!wlink_joined(a->link) || room == 0)
        return;
    Rlx__WorkRequest wr = RLX__WORK_REQUEST__INIT;
    wr.credits = room;
    wr.policy_version = a->st.policy_version;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_REQUEST;
    env.work_request = &wr;
    if (send_env(a, &env) == WIRE_OK)
        a->last_ask = rlx_now();
}

static void send_error(actor_t *a, Rlx__ErrorCode code, const char *msg) {
    Rlx__Error e = RLX__ERROR__INIT;
    e.code = code;
    e.message = (char *)msg;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_ERROR;
    env.error = &e;
    send_env(a, &env);
}

// ---- weights ------------------------------------------------------------------------------

// Ends a fetch; the blob buffer stays allocated for the next one (fetch_free releases it).
static void fetch_reset(fetch_t *f) {
    uint8_t *buf = f->buf;
    uint64_t cap = f->buf_cap;
    free(f->state);
    free(f->asked_at);
    free(f->chunk_crc);
    memset(f, 0, sizeof *f);
    f->buf = buf;
    f->buf_cap = cap;
}

static void fetch_free(fetch_t *f) {
    fetch_reset(f);
    free(f->buf);
    f->buf = NULL;
    f->buf_cap = 0;
}

// Starts fetching the announced version, unless it is not newer than what is held or being
// fetched, or the hub said it no longer holds it.
static void consider_announce(actor_t *a, const Rlx__WeightAnnounce *w) {
    if (!w || w->version == 0)
        return;
    int have_model = a->model != NULL;
    if ((have_model && w->version <= a->st.policy_version) ||
        (a->f.active && w->version <= a->f.version) || w->version <= a->unavailable)
        return;
    uint64_t need = w->chunk_bytes ? (w->total_bytes + w->chunk_bytes - 1) / w->chunk_bytes : 0;
    if (w->total_bytes == 0 || w->chunk_bytes == 0 || w->total_bytes > ACTOR_MAX_BLOB ||
        need != w->num_chunks || w->chunk_bytes > wire_max_size(wlink_wire(a->link)) ||
        w->n_model_config > CKPT_CONFIG_LEN) {
        a->st.blobs_bad++;
        log_once(a, LOG_BAD_ANNOUNCE,
                 "refused WeightAnnounce v%llu: %llu bytes in %u chunks of %u is inconsistent",
                 (unsigned long long)w->version, (unsigned long long)w->total_bytes, w->num_chunks,
                 w->chunk_bytes);
        return;
    }
    fetch_reset(&a->f);
    fetch_t *f = &a->f;
    if (f->buf_cap < w->total_bytes) {
        free(f->buf);
        f->buf = malloc(w->total_bytes);
        f->buf_cap = f->buf ? w->total_bytes : 0;
    }
    f->state = calloc(w->num_chunks, 1);
    f->asked_at = calloc(w->num_chunks, sizeof(double));
    f->chunk_crc = calloc(w->num_chunks, sizeof(uint32_t));
    if (!f->buf || !f->state || !f->asked_at || !f->chunk_crc) {
        fetch_free(f);
        a->st.blobs_bad++;
        log_once(a, LOG_BAD_ANNOUNCE, "out of memory for weights v%llu (%llu bytes)",
                 (unsigned long long)w->version, (unsigned long long)w->total_bytes);
        return;
    }
    f->active = 1;
    f->version = w->version;
    f->total = w->total_bytes;
    f->nchunks = w->num_chunks;
    f->chunk_bytes = w->chunk_bytes;
    f->crc = w->crc32;
    f->nconfig = (int)w->n_model_config;
    for (int i = 0; i < f->nconfig; i++)
        f->config[i] = w->model_config[i];
}

// Keeps up to weight_window chunk requests outstanding; asks again for chunks whose answer
// is overdue.
static void fetch_pump(actor_t *a, double now) {
    fetch_t *f = &a->f;
    if (!f->active || !wlink_joined(a->link))
        return;
    for (uint32_t i = 0; i < f->nchunks; i++) {
        if (f->state[i] == 1 && now - f->asked_at[i] > a->cfg.fetch_timeout_ms * 1e-3) {
            f->state[i] = 0;
            f->outstanding--;
            a->st.chunks_rerequested++;
        }
    }
    for (uint32_t i = 0; i < f->nchunks && f->outstanding < a->cfg.weight_window; i++) {
        if (f->state[i] != 0)
            continue;
        Rlx__WeightRequest wr = RLX__WEIGHT_REQUEST__INIT;
        wr.version = f->version;
        wr.first_chunk = i;
        wr.num_chunks = 1;
        Rlx__Envelope env = RLX__ENVELOPE__INIT;
        env.body_case = RLX__ENVELOPE__BODY_WEIGHT_REQUEST;
        env.weight_request = &wr;
        if (send_env(a, &env) != WIRE_OK)
            break;
        f->state[i] = 1;
        f->asked_at[i] = now;
        f->outstanding++;
    }
}

static int config_matches(const gpt_config_t *c, const int32_t *k) {
    return c->n_layer == k[0] && c->n_embd == k[1] && c->n_head == k[2] && c->ctx_len == k[3] &&
           c->vocab == k[4];
}

// 0 when every parameter of ck (its "params" section, and a GFlowNet's log Z) is finite,
// else -1 with err naming the first that is not: weights from a diverged learner.
static int params_finite(const ckpt_t *ck, char *err, size_t errlen) {
    uint64_t nb = 0;
    const float *w = ckpt_section(ck, "params", &nb);
    for (uint64_t i = 0; w && i < nb / sizeof *w; i++) {
        if (!isfinite(w[i])) {
            snprintf(err, errlen, "parameter %llu of %llu is %g: non-finite weights",
                     (unsigned long long)i, (unsigned long long)(nb / sizeof *w), (double)w[i]);
            return -1;
        }
    }
    const gfn_ckpt_logz_t *lz = ckpt_section(ck, "logz", &nb);
    if (lz && nb == sizeof *lz && !isfinite(lz->w)) {
        snprintf(err, errlen, "log Z is %g: non-finite weights", (double)lz->w);
        return -1;
    }
    return 0;
}

// Installs checkpoint bytes as the policy of version `version`. 0, or -1 (counted, logged).
static int install_weights(actor_t *a, const void *blob, size_t len, uint64_t version,
                           const int32_t *announced, int nannounced) {
    char err[256] = "";
    ckpt_t *ck = ckpt_parse(blob, len, err, sizeof err);
    if (!ck)
        goto refused;
    int is_diff = ckpt_kind(ck) == CKPT_KIND_MLP && diff_is_ckpt(ck);
    if (ckpt_kind(ck) != CKPT_KIND_GPT && ckpt_kind(ck) != CKPT_KIND_GFN && !is_diff) {
        snprintf(err, sizeof err,
                 "checkpoint holds model kind %u, the actor samples gpt (%d), gflownet (%d) "
                 "and diffusion (%d with a RLXDIFF1 config)",
                 ckpt_kind(ck), CKPT_KIND_GPT, CKPT_KIND_GFN, CKPT_KIND_MLP);
        goto refused;
    }
    const int32_t *cfg = ckpt_config(ck);
    for (int i = 0; i < nannounced; i++) {
        if (announced[i] != cfg[i]) {
            snprintf(err, sizeof err,
                     "announced model_config[%d] = %d but the checkpoint says %d: hub bug?", i,
                     announced[i], cfg[i]);
            goto refused;
        }
    }
    if (params_finite(ck, err, sizeof err) != 0) {
        a->st.weights_nonfinite++;
        goto refused;
    }
    if (ckpt_kind(ck) == CKPT_KIND_GFN) {
        if (gflow_actor_install(&a->gfn, ck, err, sizeof err) != 0)
            goto refused;
    } else if (is_diff) {
        if (diff_actor_install(&a->diff, ck, err, sizeof err) != 0)
            goto refused;
    } else if (a->model && config_matches(&a->model->cfg, cfg)) {
        if (paramset_load(&a->model->ps, ck, err, sizeof err) != 0)
            goto refused;
    } else {
        gpt_t *m = gpt_from_ckpt(ck, 1, err, sizeof err);
        if (!m)
            goto refused;
        sampler_destroy(&a->sampler);
        gpt_destroy(&a->model);
        a->model = m;
        a->sampler = sampler_new(m, a->cfg.batch);
    }
    ckpt_destroy(&ck);
    a->st.policy_version = version;
    a->st.weight_loads++;
    return 0;
refused:
    ckpt_destroy(&ck);
    a->st.blobs_bad++;
    log_once(a, LOG_BAD_BLOB, "refused weights v%llu: %s", (unsigned long long)version, err);
    char msg[320];
    snprintf(msg, sizeof msg, "weights v%llu refused (keeping v%llu): %s",
             (unsigned long long)version, (unsigned long long)a->st.policy_version, err);
    send_error(a, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, msg);
    return -1;
}

static void handle_chunk(actor_t *a, const Rlx__WeightChunk *c) {
    fetch_t *f = &a->f;
    if (!f->active || c->version != f->version) {
        a->st.chunks_bad++;
        log_once(a, LOG_STALE_CHUNK, "dropped a chunk of weights v%llu (fetching v%llu)",
                 (unsigned long long)c->version, (unsigned long long)f->version);
        return;
    }
    if (c->index >= f->nchunks) {
        a->st.chunks_bad++;
        log_once(a, LOG_BAD_CHUNK, "refused chunk %u of v%llu: only %u chunks", c->index,
                 (unsigned long long)c->version, f->nchunks);
        return;
    }
    if (f->state[c->index] == 2)
        return; // a duplicate (answer to a re-ask that crossed the first answer)
    uint64_t off = (uint64_t)c->index * f->chunk_bytes;
    uint64_t want = c->index + 1 < f->nchunks ? f->chunk_bytes : f->total - off;
    uint32_t crc = (uint32_t)crc32(0L, c->data.data, (uInt)c->data.len);
    if (c->offset != off || c->data.len != want || crc != c->crc32) {
        a->st.chunks_bad++;
        log_once(a, LOG_BAD_CHUNK,
                 "refused chunk %u of v%llu (offset %llu/%llu, %zu/%llu bytes, crc %08x/%08x): "
                 "asking again",
                 c->index, (unsigned long long)c->version, (unsigned long long)c->offset,
                 (unsigned long long)off, c->data.len, (unsigned long long)want, crc, c->crc32);
        if (f->state[c->index] == 1) {
            f->state[c->index] = 0;
            f->outstanding--;
            a->st.chunks_rerequested++;
        }
        return;
    }
    memcpy(f->buf + off, c->data.data, want);
    f->chunk_crc[c->index] = crc;
    if (f->state[c->index] == 1)
        f->outstanding--;
    f->state[c->index] = 2;
    f->have++;
    a->st.chunks_received++;
    if (f->have < f->nchunks)
        return;

    // The blob's CRC-32 from the chunks' (zlib's crc32_combine): the same value as one pass
    // over the assembled bytes, which the chunk checks already read once.
    uint32_t whole = 0;
    for (uint32_t i = 0; i < f->nchunks; i++) {
        uint64_t len =
            i + 1 < f->nchunks ? f->chunk_bytes : f->total - (uint64_t)i * f->chunk_bytes;
        whole = (uint32_t)crc32_combine(whole, f->chunk_crc[i], (z_off_t)len);
    }
    if (whole != f->crc) {
        a->st.blobs_bad++;
        log_once(a, LOG_BAD_BLOB, "weights v%llu: blob crc %08x, announced %08x: fetching again",
                 (unsigned long long)f->version, whole, f->crc);
        if (++f->retries > ACTOR_MAX_BLOB_RETRIES) {
            a->unavailable = f->version;
            fetch_reset(f);
            return;
        }
        memset(f->state, 0, f->nchunks);
        f->have = 0;
        f->outstanding = 0;
        return;
    }
    uint64_t v = f->version;
    if (install_weights(a, f->buf, f->total, v, f->config, f->nconfig) == 0)
        logf_(a, "weights v%llu installed (%llu bytes)", (unsigned long long)v,
              (unsigned long long)f->total);
    else
        a->unavailable = v; // do not fetch a blob we cannot use again
    fetch_reset(f);
}

// ---- work -----------------------------------------------------------------------------------

static void queue_push(actor_t *a, Rlx__Envelope *env) {
    if (a->qlen == a->qcap) {
        int cap = a->qcap ? 2 * a->qcap : 4;
        Rlx__Envelope **q = realloc(a->queue, (size_t)cap * sizeof *q);
        if (!q) {
            log_once(a, LOG_BAD_ITEM, "out of memory queueing a work item: dropped");
            wire_free(&env);
            return;
        }
        a->queue = q;
        a->qcap = cap;
    }
    a->queue[a->qlen++] = env;
}

static void job_free(job_t *j) {
    wire_free(&j->env);
    free(j->ptok);
    free(j->poff);
    free(j->slice_tok);
    free(j->slice_off);
    free(j->out_tok);
    free(j->out_logp);
    free(j->out_len);
    free(j->out_ver);
    free(j->allowed);
    memset(j, 0, sizeof *j);
}

// Answers an item that cannot be sampled: an Error naming it and an empty batch completing it.
static void refuse_item(actor_t *a, uint64_t work_id, const char *why) {
    char msg[256];
    snprintf(msg, sizeof msg, "work item %llu refused: %s", (unsigned long long)work_id, why);
    a->st.items_refused++;
    log_once(a, LOG_BAD_ITEM, "%s", msg);
    send_error(a, RLX__ERROR_CODE__ERROR_CODE_BAD_REQUEST, msg);
    Rlx__TrajectoryBatch tb = RLX__TRAJECTORY_BATCH__INIT;
    tb.work_id = work_id;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    env.trajectory_batch = &tb;
    send_env(a, &env);
}

// Sets up the job for the item in env (taking ownership). Returns 0, or -1 after refusing it.
static int job_start(actor_t *a, Rlx__Envelope *env) {
    job_t *j = &a->job;
    const Rlx__WorkItem *it = env->work_item;
    const gpt_config_t *mc = &a->model->cfg;
    const char *why = NULL;
    char buf[160];
    int P = (int)it->n_prompts, k = it->samples_per_prompt ? (int)it->samples_per_prompt : 1;
    size_t total_tok = 0, longest = 0;
    for (int p = 0; p < P; p++) {
        const Rlx__Prompt *pr = it->prompts[p];
        size_t len = pr->n_tokens ? pr->n_tokens : strlen(pr->text) + 1; // + BOS
        total_tok += len;
        longest = len > longest ? len : longest;
    }
    if (P == 0 || (int64_t)P * k > (1 << 20)) {
        why = P == 0 ? "no prompts" : "too many sequences";
        goto refuse;
    }
    if (longest >= (size_t)mc->ctx_len) {
        snprintf(buf, sizeof buf, "a prompt of %zu tokens leaves no room in the context of %d",
                 longest, mc->ctx_len);
        why = buf;
        goto refuse;
    }
    int maxplen = (int)longest;
    j->env = env;
    j->item = it;
    j->k = k;
    j->n = P * k;
    int room = mc->ctx_len - maxplen;
    j->max_new =
        it->max_new_tokens && (int)it->max_new_tokens < room ? (int)it->max_new_tokens : room;
    j->ptok = malloc((total_tok ? total_tok : 1) * sizeof(int));
    j->poff = malloc((size_t)(P + 1) * sizeof(int));
    j->slice_tok = malloc((size_t)a->cfg.batch * maxplen * sizeof(int));
    j->slice_off = malloc((size_t)(a->cfg.batch + 1) * sizeof(int));
    j->out_tok = malloc((size_t)j->n * j->max_new * sizeof(int));
    j->out_logp = malloc((size_t)j->n * j->max_new * sizeof(float));
    j->out_len = calloc((size_t)j->n, sizeof(int));
    j->out_ver = calloc((size_t)j->n, sizeof(uint64_t));
    if (!j->ptok || !j->poff || !j->slice_tok || !j->slice_off || !j->out_tok || !j->out_logp ||
        !j->out_len || !j->out_ver) {
        why = "out of memory";
        goto refuse;
    }
    size_t o = 0;
    for (int p = 0; p < P; p++) {
        const Rlx__Prompt *pr = it->prompts[p];
        j->poff[p] = (int)o;
        if (pr->n_tokens) {
            for (size_t t = 0; t < pr->n_tokens; t++) {
                if (pr->tokens[t] >= (uint32_t)mc->vocab) {
                    snprintf(buf, sizeof buf, "prompt %llu has token %u, vocabulary is %d",
                             (unsigned long long)pr->prompt_id, pr->tokens[t], mc->vocab);
                    why = buf;
                    goto refuse;
                }
                j->ptok[o++] = (int)pr->tokens[t];
            }
        } else {
            size_t len = strlen(pr->text);
            o += bytetok_encode_prompt(pr->text, len, j->ptok + o, (int)(len + 1));
        }
    }
    j->poff[P] = (int)o;
    if (it->n_allowed_tokens > 0) {
        if (!(j->allowed = malloc(it->n_allowed_tokens * sizeof(int)))) {
            why = "out of memory";
            goto refuse;
        }
        for (size_t t = 0; t < it->n_allowed_tokens; t++) {
            if (it->allowed_tokens[t] >= (uint32_t)mc->vocab) {
                snprintf(buf, sizeof buf, "allowed token %u outside the vocabulary of %d",
                         it->allowed_tokens[t], mc->vocab);
                why = buf;
                goto refuse;
            }
            j->allowed[t] = (int)it->allowed_tokens[t];
        }
    }
    memset(&j->sc, 0, sizeof j->sc);
    j->sc.temperature = it->temperature;
    j->sc.top_k = (int)it->top_k;
    j->sc.max_new = j->max_new;
    j->sc.seed = it->seed ? it->seed : a->cfg.seed ^ (it->work_id * 0x9E3779B97F4A7C15ull);
    j->sc.allowed = j->allowed;
    j->sc.n_allowed = (int)it->n_allowed_tokens;
    if (it->n_stop_tokens == 0) {
        j->sc.stop[0] = GPT_TOK_EOS;
        j->sc.n_stop = 1;
    } else {
        if (it->n_stop_tokens > SAMPLER_MAX_STOP)
            log_once(a, LOG_STOP_TOKENS, "work item has %zu stop tokens; using the first %d",
                     it->n_stop_tokens, SAMPLER_MAX_STOP);
        for (size_t s = 0; s < it->n_stop_tokens && s < SAMPLER_MAX_STOP; s++)
            j->sc.stop[j->sc.n_stop++] = (int)it->stop_tokens[s];
    }
    return 0;
refuse:
    refuse_item(a, it->work_id, why);
    j->env = env; // freed with the job
    job_free(j);
    return -1;
}

// Samples sequences [next, next + batch) of the job with the weights held now.
static int job_slice(actor_t *a) {
    job_t *j = &a->job;
    int b = j->n - j->next < a->cfg.batch ? j->n - j->next : a->cfg.batch;
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
    int rc = sampler_generate(a->sampler, j->slice_tok, j->slice_off, b, &j->sc, (uint64_t)j->next,
                              j->out_tok + at, j->out_logp + at, j->out_len + j->next);
    if (rc != 0)
        return rc;
    for (int i = 0; i < b; i++) {
        j->out_ver[j->next + i] = a->st.policy_version;
        a->st.tokens += (uint64_t)j->out_len[j->next + i];
    }
    j->next += b;
    return 0;
}

static int is_stop_token(const sample_config_t *c, int t) {
    for (int i = 0; i < c->n_stop; i++)
        if (c->stop[i] == t)
            return 1;
    return 0;
}

// Sends the finished job as one TrajectoryBatch.
static void job_send(actor_t *a) {
    job_t *j = &a->job;
    const Rlx__WorkItem *it = j->item;
    int n = j->n; // = prompts * k
    item_batch_t ib;
    int hdr = item_batch_init(&ib, it, j->k, a->st.session.worker_id, a->st.trajectories + 1, 0);
    Rlx__TextTrajectory *tx = calloc((size_t)n, sizeof *tx);
    uint32_t *rtok = malloc(((size_t)n * j->max_new + 1) * sizeof(uint32_t));
    uint32_t *ptok = malloc(((size_t)j->poff[it->n_prompts] + 1) * sizeof(uint32_t));
    if (hdr != 0 || !tx || !rtok || !ptok) {
        refuse_item(a, it->work_id, "out of memory building the batch");
        goto cleanup;
    }
    for (int i = 0; i < j->poff[it->n_prompts]; i++)
        ptok[i] = (uint32_t)j->ptok[i];
    for (int i = 0; i < n; i++) {
        int p = i / j->k, len = j->out_len[i];
        size_t at = (size_t)i * j->max_new;
        for (int t = 0; t < len; t++)
            rtok[at + t] = (uint32_t)j->out_tok[at + t];
        rlx__text_trajectory__init(&tx[i]);
        tx[i].n_prompt_tokens = (size_t)(j->poff[p + 1] - j->poff[p]);
        tx[i].prompt_tokens = ptok + j->poff[p];
        tx[i].n_response_tokens = (size_t)len;
        tx[i].response_tokens = rtok + at;
        tx[i].n_logprobs = (size_t)len;
        tx[i].logprobs = j->out_logp + at;
        tx[i].finish_reason = len > 0 && is_stop_token(&j->sc, j->out_tok[at + len - 1])
                                  ? RLX__FINISH_REASON__FINISH_REASON_STOP
                                  : RLX__FINISH_REASON__FINISH_REASON_LENGTH;
        ib.tr[i].policy_version = j->out_ver[i]; // weights may change between slices
        ib.tr[i].kind_case = RLX__TRAJECTORY__KIND_TEXT;
        ib.tr[i].text = &tx[i];
    }
    if (send_env(a, &ib.env) == WIRE_OK) {
        a->st.items++;
        a->st.trajectories += (uint64_t)n;
    }
cleanup:
    item_batch_free(&ib);
    free(tx);
    free(rtok);
    free(ptok);
}

// Whether the next queued item can start now: weights are held, and the item does not want
// a version that is being fetched right now.
static int can_start(const actor_t *a) {
    if (a->qlen == 0)
        return 0;
    const Rlx__WorkItem *it = a->queue[0]->work_item;
    if (it->gflow ? !a->gfn : it->diffusion ? !a->diff : !a->model)
        return 0;
    uint64_t want = a->queue[0]->work_item->policy_version;
    return !(want > a->st.policy_version && a->f.active && a->f.version >= want);
}

// Between chunks of a GFlowNet or diffusion item, sampled in one call: a heartbeat when due,
// so that an item longer than heartbeat x liveness does not get the actor presumed dead.
static void keepalive(void *arg) {
    actor_t *a = arg;
    wlink_heartbeat_if_due(a->link, rlx_now());
}

// Samples and sends a GFlowNet work item (gflow_actor.h); frees env.
static void gflow_item(actor_t *a, Rlx__Envelope *env) {
    const Rlx__WorkItem *it = env->work_item;
    const char *why = "out of memory";
    uint64_t seed = it->seed ? it->seed : a->cfg.seed ^ (it->work_id * 0x9E3779B97F4A7C15ull);
    gflow_batch_t *gb =
        gflow_actor_sample(a->gfn, it, a->st.session.worker_id, a->st.trajectories + 1,
                           a->st.policy_version, seed, keepalive, a, &why);
    if (!gb) {
        refuse_item(a, it->work_id, why);
    } else if (send_env(a, gflow_batch_envelope(gb)) == WIRE_OK) {
        a->st.items++;
        a->st.trajectories += (uint64_t)gflow_batch_count(gb);
        a->st.tokens += gflow_batch_transitions(gb);
    }
    gflow_batch_destroy(&gb);
    wire_free(&env);
}

// Samples and sends a diffusion work item (diffusion_actor.h); frees env.
static void diffusion_item(actor_t *a, Rlx__Envelope *env) {
    const Rlx__WorkItem *it = env->work_item;
    const char *why = "out of memory";
    uint64_t seed = it->seed ? it->seed : a->cfg.seed ^ (it->work_id * 0x9E3779B97F4A7C15ull);
    diff_batch_t *db =
        diff_actor_sample(a->diff, it, a->st.session.worker_id, a->st.trajectories + 1,
                          a->st.policy_version, seed, keepalive, a, &why);
    if (!db) {
        refuse_item(a, it->work_id, why);
    } else if (send_env(a, diff_batch_envelope(db)) == WIRE_OK) {
        a->st.items++;
        a->st.trajectories += (uint64_t)diff_batch_count(db);
        a->st.tokens += diff_batch_steps(db);
    }
    diff_batch_destroy(&db);
    wire_free(&env);
}

// Advances the sampling work by one slice. Returns 1 if it did something.
static int work_step(actor_t *a) {
    if (!a->job.env) {
        if (!can_start(a)) {
            if (a->qlen > 0 && !a->model && !a->gfn && !a->diff && !a->f.active)
                log_once(a, LOG_NO_WEIGHTS,
                         "holding a work item but no weights: waiting for a WeightAnnounce");
            return 0;
        }
        Rlx__Envelope *env = a->queue[0];
        memmove(a->queue, a->queue + 1, (size_t)(a->qlen - 1) * sizeof *a->queue);
        a->qlen--;
        if (env->work_item->gflow) { // sampled whole, at once
            gflow_item(a, env);
            send_work_request(a);
            return 1;
        }
        if (env->work_item->diffusion) { // sampled whole, at once
            diffusion_item(a, env);
            send_work_request(a);
            return 1;
        }
        if (job_start(a, env) != 0) {
            send_work_request(a);
            return 1;
        }
    }
    int rc = job_slice(a);
    if (rc != 0) {
        const char *why = rc == SAMPLER_NONFINITE
                              ? "the model gives NaN/inf logits (non-finite weights?)"
                              : "sampler refused the arguments";
        if (rc == SAMPLER_NONFINITE)
            a->st.items_nonfinite++;
        log_once(a, LOG_SAMPLER, "work item %llu: %s", (unsigned long long)a->job.item->work_id,
                 why);
        refuse_item(a, a->job.item->work_id, why);
        job_free(&a->job);
        send_work_request(a);
        return 1;
    }
    if (a->job.next == a->job.n) {
        job_send(a);
        job_free(&a->job);
        send_work_request(a);
    }
    return 1;
}

// ---- messages -------------------------------------------------------------------------------

static void handle(actor_t *a, Rlx__Envelope *env) {
    switch (env->body_case) {
    case RLX__ENVELOPE__BODY_WELCOME: // the link applied it
        sync_stats(a);
        consider_announce(a, env->welcome->weights);
        send_work_request(a);
        break;
    case RLX__ENVELOPE__BODY_WORK_ITEM:
        queue_push(a, env);
        return; // the queue owns env now
    case RLX__ENVELOPE__BODY_WEIGHT_ANNOUNCE:
        consider_announce(a, env->weight_announce);
        break;
    case RLX__ENVELOPE__BODY_WEIGHT_CHUNK:
        handle_chunk(a, env->weight_chunk);
        break;
    case RLX__ENVELOPE__BODY_ERROR: { // NOT_JOINED never gets here: the link says Hello
        const Rlx__Error *e = env->error;
        if (e->code == RLX__ERROR_CODE__ERROR_CODE_UNAVAILABLE && a->f.active) {
            logf_(a, "hub no longer holds weights v%llu (%s): waiting for a newer announce",
                  (unsigned long long)a->f.version, e->message);
            a->unavailable = a->f.version;
            fetch_reset(&a->f);
        } else {
            log_once(a, LOG_HUB_ERROR, "hub error %d: %s", (int)e->code, e->message);
        }
        break;
    }
    default:
        log_once(a, LOG_UNEXPECTED, "ignored a %s from the hub", wire_body_name(env->body_case));
        break;
    }
    wire_free(&env);
}

// Receives everything pending (waiting up to timeout_ms for the first message).
static void receive(actor_t *a, int timeout_ms) {
    Rlx__Envelope *env;
    for (int n = 0; n < 1000 && wlink_recv(a->link, n == 0 ? timeout_ms : 0, &env); n++)
        handle(a, env);
}

// Timers beyond the session's: the weight fetch, re-asking for work, the stats line.
// -1 if no socket could be opened.
static int timers(actor_t *a, double now) {
    if (wlink_tick(a->link, now) != 0)
        return -1;
    sync_stats(a);
    if (wlink_joined(a->link)) {
        fetch_pump(a, now);
        double patience = wlink_heartbeat_ms(a->link) * 1e-3 * wlink_liveness(a->link);
        if (free_credits(a) > 0 && now - a->last_ask > patience)
            send_work_request(a);
    }
    if (a->cfg.stats_interval_ms > 0 && now >= a->stats_due) {
        double dt = now - a->stats_t0;
        fprintf(stderr, "actor %s: items %llu trajectories %llu tok/s %.0f version %llu\n", a->name,
                (unsigned long long)a->st.items, (unsigned long long)a->st.trajectories,
                dt > 0 ? (double)(a->st.tokens - a->stats_tok0) / dt : 0.0,
                (unsigned long long)a->st.policy_version);
        a->stats_t0 = now;
        a->stats_tok0 = a->st.tokens;
        a->stats_due = now + a->cfg.stats_interval_ms * 1e-3;
    }
    return 0;
}

// ---- public ---------------------------------------------------------------------------------

actor_config_t actor_defaults(void) {
    actor_config_t c = {0};
    c.name = "actor";
    c.threads = 0;
    c.batch = 16;
    c.heartbeat_ms = 1000;
    c.liveness = 5;
    c.credits = 1;
    c.seed = 1;
    c.weight_window = 4;
    c.fetch_timeout_ms = 5000;
    c.stats_interval_ms = 5000;
    return c;
}

actor_t *actor_new(const actor_config_t *c, void *zmq_ctx) {
    if (!c->hub || !c->hub[0] || c->batch < 1 || c->credits < 1 || c->heartbeat_ms < 1 ||
        c->liveness < 1 || c->weight_window < 1 || c->fetch_timeout_ms < 1) {
        fprintf(stderr, "rlx-actor: bad configuration: need --hub, and --batch, --credits, "
                        "--heartbeat-ms >= 1\n");
        return NULL;
    }
    actor_t *a = rlx_xcalloc(1, sizeof *a, "actor");
    a->cfg = *c;
    a->name = strdup(c->name ? c->name : "actor");
    if (!a->name)
        RLX_DIE("out of memory");
    wlink_config_t lc = {.hub = c->hub,
                         .name = a->name,
                         .log_tag = "actor",
                         .run_id = c->run_id,
                         .heartbeat_ms = c->heartbeat_ms,
                         .liveness = c->liveness,
                         .max_backoff_ms = ACTOR_MAX_BACKOFF_MS};
    wlink_hooks_t hooks = {
        .fill_hello = fill_hello, .fill_heartbeat = fill_heartbeat, .on_new_socket = on_new_socket};
    a->link = wlink_new(&lc, &hooks, a, zmq_ctx);
    if (c->threads > 0)
        omp_set_num_threads(c->threads);
    if (c->model_path) {
        char err[256];
        ckpt_t *ck = ckpt_read(c->model_path, err, sizeof err);
        if (ck && params_finite(ck, err, sizeof err) == 0)
            a->model = gpt_from_ckpt(ck, 1, err, sizeof err);
        ckpt_destroy(&ck);
        if (!a->model) {
            fprintf(stderr, "rlx-actor: cannot load --model %s: %s\n", c->model_path, err);
            actor_destroy(&a);
            return NULL;
        }
        a->sampler = sampler_new(a->model, c->batch);
    }
    return a;
}

int actor_run(actor_t *a, volatile sig_atomic_t *stop) {
    double now = rlx_now();
    a->stats_t0 = now;
    a->stats_due = now + a->cfg.stats_interval_ms * 1e-3;
    int rc = 0;
    while (!*stop && !wlink_hub_left(a->link)) {
        if (a->cfg.max_items > 0 && (long)(a->st.items + a->st.items_refused) >= a->cfg.max_items)
            break;
        int busy = a->job.env || can_start(a);
        receive(a, busy ? 0 : 20);
        if (*stop)
            break;
        if (timers(a, rlx_now()) != 0) {
            rc = 1; // could not even open a socket
            break;
        }
        if (wlink_joined(a->link))
            work_step(a);
    }
    sync_stats(a);
    if (rc == 0)
        wlink_bye(a->link, *stop                     ? "signal"
                           : wlink_hub_left(a->link) ? "hub left"
                                                     : "max items done");
    logf_(a, "leaving: items %llu trajectories %llu version %llu", (unsigned long long)a->st.items,
          (unsigned long long)a->st.trajectories, (unsigned long long)a->st.policy_version);
    return rc;
}

const actor_stats_t *actor_stats(const actor_t *a) {
    return &a->st;
}

void actor_destroy(actor_t **self_p) {
    if (!self_p || !*self_p)
        return;
    actor_t *a = *self_p;
    job_free(&a->job);
    for (int i = 0; i < a->qlen; i++)
        wire_free(&a->queue[i]);
    free(a->queue);
    fetch_free(&a->f);
    sampler_destroy(&a->sampler);
    gpt_destroy(&a->model);
    gfn_policy_destroy(&a->gfn);
    diff_destroy(&a->diff);
    wlink_destroy(&a->link);
    free(a->name);
    free(a);
    *self_p = NULL;
}
