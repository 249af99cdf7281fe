// actor.c: the rlx actor's poll loop (see actor.h for what it does and expects of the hub).
//
// One thread, one DEALER socket, one loop: receive and handle whatever the hub sent (never
// waiting more than a few tens of ms), run the timers (the session's Hello retries,
// heartbeats and hub liveness in common/net/worker_link, shared with the reward worker; the
// weight-fetch window and timeouts, re-asking for work, the stats line), then
// advance the current work item by one step of its kind (actor_kind.h: a text slice of at most
// cfg.batch sequences, or a whole GFlowNet/diffusion item). Weights may change between
// slices; every trajectory carries the version that sampled it. The kind of a blob and of an
// item is decided once (WeightAnnounce.kind or actor_ckpt_kind; actor_item_kind) and the
// work goes through that kind's table: this file knows no model.
#include "actor.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#include <zlib.h>

#include "actor_kind.h"
#include "ckpt.h"
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
    kind_t kind;                     // announced kind (KIND_NONE: read from the blob)
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
    Rlx__Envelope *env;      // owns the item (from wire_recv); NULL when none
    const actor_kind_t *ops; // its kind's table
    kind_t kind;             // its kind (index of the model it samples with)
    void *job;               // the kind's job
} job_t;

struct actor {
    actor_config_t cfg;                    // configuration (strings copied below)
    char *name;                            // name for logs
    wlink_t *link;                         // the session with the hub (socket, wire, liveness)
    actor_stats_t st;                      // counters
    unsigned logged[ACTOR_LOG_ONCE_SLOTS]; // log-once flags
    double last_ask;                       // time of the last WorkRequest
    // weights
    void *model[KIND_COUNT]; // each kind's model (actor_kind.h), NULL until its weights came
    uint64_t unavailable;    // version the hub said it no longer holds (do not fetch again)
    fetch_t f;               // weight fetch in progress
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

static void vlog_once(actor_t *a, int slot, const char *fmt, va_list ap) {
    assert(slot >= 0 && slot < ACTOR_LOG_ONCE_SLOTS);
    if (a->logged[slot]++)
        return;
    fprintf(stderr, "actor %s: ", a->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (logged once)\n");
}

// Logs a message the first time slot `slot` is used (errors are logged once, counted always).
static void log_once(actor_t *a, int slot, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog_once(a, slot, fmt, ap);
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
    LOG_UNEXPECTED,
    LOG_HUB_ERROR,
    LOG_SAMPLER,
    LOG_KIND_NOTE,
};

static int send_env(actor_t *a, Rlx__Envelope *env) {
    return wlink_send(a->link, env);
}

static uint32_t free_credits(const actor_t *a) {
    int held = a->qlen + (a->job.env ? 1 : 0);
    return held < a->cfg.credits ? (uint32_t)(a->cfg.credits - held) : 0;
}

// 1 when the actor holds a model of some kind.
static int holds_any(const actor_t *a) {
    for (int k = 0; k < KIND_COUNT; k++)
        if (actor_kind((kind_t)k) && actor_kind((kind_t)k)->holds(a->model[k]))
            return 1;
    return 0;
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
    int have_model = holds_any(a);
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
    f->kind = kind_valid(w->kind) ? (kind_t)w->kind : KIND_NONE;
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

// Installs checkpoint ck as the model of its kind. 0, or -1 with err (nothing changed).
// announced: the WeightAnnounce's kind (KIND_NONE: the checkpoint says) and model_config.
static int install_ckpt(actor_t *a, const ckpt_t *ck, kind_t announced, const int32_t *config,
                        int nconfig, char *err, size_t errlen) {
    kind_t k = actor_ckpt_kind(ck);
    if (k == KIND_NONE) {
        snprintf(err, errlen,
                 "checkpoint holds model kind %u, the actor samples gpt (%d), gflownet (%d) "
                 "and diffusion (%d with a RLXDIFF1 config)",
                 ckpt_kind(ck), CKPT_KIND_GPT, CKPT_KIND_GFN, CKPT_KIND_MLP);
        return -1;
    }
    if (announced != KIND_NONE && announced != k) {
        snprintf(err, errlen, "announced as %s weights but the checkpoint holds %s: hub bug?",
                 kind_name(announced), kind_name(k));
        return -1;
    }
    const int32_t *cfg = ckpt_config(ck);
    for (int i = 0; i < nconfig; i++) {
        if (config[i] != cfg[i]) {
            snprintf(err, errlen,
                     "announced model_config[%d] = %d but the checkpoint says %d: hub bug?", i,
                     config[i], cfg[i]);
            return -1;
        }
    }
    if (actor_params_finite(ck, err, errlen) != 0) {
        a->st.weights_nonfinite++;
        return -1;
    }
    return actor_kind(k)->install(&a->model[k], ck, a->cfg.batch, err, errlen);
}

// Installs the fetched blob as the policy of its version. 0, or -1 (counted, logged, and
// told to the hub: the last good version stays).
static int install_weights(actor_t *a, const fetch_t *f) {
    char err[256] = "";
    ckpt_t *ck = ckpt_parse(f->buf, f->total, err, sizeof err);
    int rc = ck ? install_ckpt(a, ck, f->kind, f->config, f->nconfig, err, sizeof err) : -1;
    ckpt_destroy(&ck);
    if (rc == 0) {
        a->st.policy_version = f->version;
        a->st.weight_loads++;
        return 0;
    }
    a->st.blobs_bad++;
    log_once(a, LOG_BAD_BLOB, "refused weights v%llu: %s", (unsigned long long)f->version, err);
    char msg[320];
    snprintf(msg, sizeof msg, "weights v%llu refused (keeping v%llu): %s",
             (unsigned long long)f->version, (unsigned long long)a->st.policy_version, err);
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
    if (install_weights(a, f) == 0)
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

// Ends the current job and frees its item.
static void job_end(actor_t *a) {
    job_t *j = &a->job;
    if (j->ops)
        j->ops->job_destroy(&j->job);
    wire_free(&j->env);
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

// Whether the next queued item can start now: its kind's weights are held, and the item does
// not want a version that is being fetched right now.
static int can_start(const actor_t *a) {
    if (a->qlen == 0)
        return 0;
    const Rlx__WorkItem *it = a->queue[0]->work_item;
    kind_t k = actor_item_kind(it);
    if (!actor_kind(k)->holds(a->model[k]))
        return 0;
    uint64_t want = it->policy_version;
    return !(want > a->st.policy_version && a->f.active && a->f.version >= want);
}

// Between chunks of a GFlowNet or diffusion item, sampled in one call: a heartbeat when due,
// so that an item longer than heartbeat x liveness does not get the actor presumed dead.
static void keepalive(void *arg) {
    actor_t *a = arg;
    wlink_heartbeat_if_due(a->link, rlx_now());
}

// A kind's condition worth one log line (e.g. more stop tokens than the sampler keeps).
static void note_once(void *arg, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog_once(arg, LOG_KIND_NOTE, fmt, ap);
    va_end(ap);
}

// Starts a job for the item in env (taking ownership). 0, or -1 after refusing it.
static int job_begin(actor_t *a, Rlx__Envelope *env) {
    const Rlx__WorkItem *it = env->work_item;
    job_t *j = &a->job;
    j->env = env;
    j->kind = actor_item_kind(it);
    j->ops = actor_kind(j->kind);
    actor_job_ctx_t ctx = {.actor_id = a->st.session.worker_id,
                           .first_seq = a->st.trajectories + 1,
                           .seed = actor_item_seed(it, a->cfg.seed),
                           .batch = a->cfg.batch,
                           .tick = keepalive,
                           .tick_arg = a,
                           .note = note_once,
                           .note_arg = a};
    char buf[160];
    const char *why = "out of memory";
    j->job = j->ops->job_new(a->model[j->kind], it, &ctx, buf, sizeof buf, &why);
    if (j->job)
        return 0;
    refuse_item(a, it->work_id, why);
    job_end(a);
    return -1;
}

// Sends the finished job as one TrajectoryBatch.
static void job_send(actor_t *a) {
    job_t *j = &a->job;
    int n = 0;
    const char *why = "out of memory";
    Rlx__Envelope *env = j->ops->batch(j->job, &n, &why);
    if (!env)
        refuse_item(a, j->env->work_item->work_id, why);
    else if (send_env(a, env) == WIRE_OK) {
        a->st.items++;
        a->st.trajectories += (uint64_t)n;
    }
}

// Advances the sampling work by one step of the item's kind. Returns 1 if it did something.
static int work_step(actor_t *a) {
    job_t *j = &a->job;
    if (!j->env) {
        if (!can_start(a)) {
            if (a->qlen > 0 && !holds_any(a) && !a->f.active)
                log_once(a, LOG_NO_WEIGHTS,
                         "holding a work item but no weights: waiting for a WeightAnnounce");
            return 0;
        }
        Rlx__Envelope *env = a->queue[0];
        memmove(a->queue, a->queue + 1, (size_t)(a->qlen - 1) * sizeof *a->queue);
        a->qlen--;
        if (job_begin(a, env) != 0) {
            send_work_request(a);
            return 1;
        }
    }
    uint64_t units = 0;
    const char *why = "sampling failed";
    int rc = j->ops->step(a->model[j->kind], j->job, a->st.policy_version, &units, &why);
    a->st.tokens += units;
    if (rc < 0) {
        if (rc == ACTOR_STEP_NONFINITE)
            a->st.items_nonfinite++;
        log_once(a, LOG_SAMPLER, "%s work item %llu: %s", j->ops->name,
                 (unsigned long long)j->env->work_item->work_id, why);
        refuse_item(a, j->env->work_item->work_id, why);
    } else if (rc == 1) {
        job_send(a);
    }
    if (rc != 0) {
        job_end(a);
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
        int rc = ck ? install_ckpt(a, ck, KIND_NONE, NULL, 0, err, sizeof err) : -1;
        ckpt_destroy(&ck);
        if (rc != 0) {
            fprintf(stderr, "rlx-actor: cannot load --model %s: %s\n", c->model_path, err);
            actor_destroy(&a);
            return NULL;
        }
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
    job_end(a);
    for (int i = 0; i < a->qlen; i++)
        wire_free(&a->queue[i]);
    free(a->queue);
    fetch_free(&a->f);
    for (int k = 0; k < KIND_COUNT; k++)
        if (a->model[k])
            actor_kind((kind_t)k)->destroy(&a->model[k]);
    wlink_destroy(&a->link);
    free(a->name);
    free(a);
    *self_p = NULL;
}
