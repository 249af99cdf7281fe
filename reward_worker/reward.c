// reward.c: the reward worker's poll loop (see reward.h). One thread, one DEALER socket:
// receive (queueing ScoreRequests), run the timers (Hello retries, heartbeats, hub
// liveness, stats line), then score and answer one queued request. The session itself
// (Hello, Welcome, heartbeats, reconnects, Bye) is common/net/worker_link, shared with the actor.
#include "reward.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "exec_scorer.h"
#include "image_scorers.h"
#include "scorers.h"
#include "util.h"
#include "wire.h"
#include "worker_link.h"

#define REWARD_LOG_ONCE_SLOTS 16

struct reward {
    reward_config_t cfg;                    // configuration (strings copied below)
    char *hub;                              // endpoint
    char *name;                             // name for logs
    char *names_buf;                        // storage of the scorer names
    char *names[REWARD_MAX_SCORERS];        // scorer names served (into names_buf)
    int nnames;                             // entries of names
    int builtin[REWARD_MAX_SCORERS];        // scorer_find id of each name (built-in mode)
    imgscore_t *img[REWARD_MAX_SCORERS];    // image scorer of each name, or NULL (owned)
    exec_scorer_t *exec;                    // external scorer (NULL = built-ins)
    wlink_t *link;                          // the session with the hub
    reward_stats_t st;                      // counters
    unsigned logged[REWARD_LOG_ONCE_SLOTS]; // log-once flags
    Rlx__Envelope **queue;                  // (qcap) ScoreRequests not yet answered, FIFO
    int qlen, qcap;                         // used, capacity
    double stats_due;                       // next stats line
};

enum { LOG_UNKNOWN_SCORER, LOG_UNEXPECTED, LOG_HUB_ERROR, LOG_QUEUE, LOG_EXEC };

static void log_once(reward_t *r, int slot, const char *fmt, ...) {
    assert(slot >= 0 && slot < REWARD_LOG_ONCE_SLOTS);
    if (r->logged[slot]++)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "reward %s: ", r->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (logged once)\n");
    va_end(ap);
}

static void logf_(reward_t *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "reward %s: ", r->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

// ---- session (worker_link hooks) --------------------------------------------------------------

static void fill_hello(void *arg, Rlx__Hello *h) {
    reward_t *r = arg;
    h->role = RLX__ROLE__ROLE_REWARD_WORKER;
    h->agent = "rlx-reward 0.1";
    h->n_scorers = (size_t)r->nnames;
    h->scorers = r->names;
    h->credits = (uint32_t)r->cfg.credits;
}

static void fill_heartbeat(void *arg, Rlx__Heartbeat *hb) {
    reward_t *r = arg;
    hb->credits = r->qlen < r->cfg.credits ? (uint32_t)(r->cfg.credits - r->qlen) : 0;
    hb->in_flight = (uint32_t)r->qlen;
}

// While an external scorer is slow: keep the hub from presuming us dead.
static void exec_tick(void *arg) {
    reward_t *r = arg;
    wlink_heartbeat_if_due(r->link, rlx_now());
}

// ---- scoring --------------------------------------------------------------------------------

// Index of a served name in r->names, or -1.
static int served(const reward_t *r, const char *name) {
    for (int i = 0; name && i < r->nnames; i++)
        if (strcmp(r->names[i], name) == 0)
            return i;
    return -1;
}

// The image scorer (image_scorers.h) a name means: its own names and the aliases
// digit_logprob, digit_prob, toy (= toy-mode), toy_density. -1 if none.
static int image_kind(const char *name) {
    static const char *const alias[][2] = {{"digit_logprob", "digit-logp"},
                                           {"digit_logp", "digit-logp"},
                                           {"digit_prob", "digit-prob"},
                                           {"toy", "toy-mode"},
                                           {"toy_mode", "toy-mode"},
                                           {"toy_density", "toy-density"}};
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
        if (!strcmp(name, alias[i][0]))
            return imgscore_find(alias[i][1]);
    return imgscore_find(name);
}

// The --exec request's "kind" of a ScoreItem kind (docs/scorers.md).
static const char *kind_name(Rlx__TrajectoryKind k) {
    switch (k) {
    case RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION:
        return "diffusion";
    case RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW:
        return "gflow";
    default:
        return "text"; // TEXT, and UNSPECIFIED from an older hub (text only then)
    }
}

// Scores one request and sends its reply.
static void answer(reward_t *r, const Rlx__ScoreRequest *req) {
    int n = (int)req->n_items;
    Rlx__ScoreResult *res = calloc((size_t)(n ? n : 1), sizeof *res);
    Rlx__ScoreResult **resp = calloc((size_t)(n ? n : 1), sizeof *resp);
    Rlx__TrajectoryId *ids = calloc((size_t)(n ? n : 1), sizeof *ids);
    exec_result_t *er = calloc((size_t)(n ? n : 1), sizeof *er);
    exec_item_t *ei = calloc((size_t)(n ? n : 1), sizeof *ei);
    char(*idtext)[48] = calloc((size_t)(n ? n : 1), sizeof *idtext);
    // Per item: components as protobuf map entries (up to EXEC_SCORER_MAX_COMPONENTS).
    Rlx__ScoreResult__ComponentsEntry *ce =
        calloc((size_t)(n ? n : 1) * EXEC_SCORER_MAX_COMPONENTS, sizeof *ce);
    Rlx__ScoreResult__ComponentsEntry **cep =
        calloc((size_t)(n ? n : 1) * EXEC_SCORER_MAX_COMPONENTS, sizeof *cep);
    if (!res || !resp || !ids || !er || !ei || !idtext || !ce || !cep) {
        log_once(r, LOG_QUEUE,
                 "out of memory answering request %llu: not answered (the hub "
                 "will resend it)",
                 (unsigned long long)req->request_id);
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        const Rlx__ScoreItem *it = req->items[i];
        snprintf(idtext[i], sizeof idtext[i], "%u:%llu", it->id ? it->id->actor_id : 0,
                 it->id ? (unsigned long long)it->id->seq : 0ull);
        ei[i].id = idtext[i];
        ei[i].prompt = it->prompt_text;
        ei[i].response = it->response_text;
        ei[i].target = it->target;
        ei[i].scorer = it->scorer;
        ei[i].kind = kind_name(it->kind);
        ei[i].payload = it->payload;
        ei[i].npayload = it->n_payload;
        ei[i].shape = it->payload_shape;
        ei[i].nshape = it->n_payload_shape;
    }
    if (r->exec) {
        exec_scorer_score(r->exec, ei, n, er);
    } else {
        for (int i = 0; i < n; i++) {
            int si = served(r, ei[i].scorer);
            int id = si >= 0 ? r->builtin[si] : -1;
            const Rlx__ScoreItem *it = req->items[i];
            if (si >= 0 && r->img[si]) {
                if (imgscore_score(r->img[si], it->payload, it->n_payload, it->payload_shape,
                                   it->n_payload_shape, it->target ? it->target : "",
                                   &er[i].reward, er[i].error, sizeof er[i].error) != 0) {
                    log_once(r, LOG_UNKNOWN_SCORER, "%s", er[i].error);
                    continue;
                }
                er[i].ncomponents = 1;
                snprintf(er[i].component_name[0], sizeof er[i].component_name[0], "%s",
                         imgscore_name(r->img[si]->kind));
                er[i].component_value[0] = er[i].reward;
                continue;
            }
            if (id < 0) {
                snprintf(er[i].error, sizeof er[i].error,
                         "unknown scorer \"%.40s\": this worker serves %s", ei[i].scorer,
                         r->cfg.scorers ? r->cfg.scorers : scorer_list());
                log_once(r, LOG_UNKNOWN_SCORER, "%s", er[i].error);
                continue;
            }
            if (scorer_is_payload(id)) {
                if (scorer_score_payload(id, it->payload, it->n_payload, it->payload_shape,
                                         it->n_payload_shape, &er[i].reward, er[i].error,
                                         sizeof er[i].error) != 0) {
                    log_once(r, LOG_UNKNOWN_SCORER, "%s", er[i].error);
                    continue;
                }
            } else {
                er[i].reward = scorer_score(id, ei[i].prompt, ei[i].response, ei[i].target);
            }
            er[i].ncomponents = 1;
            snprintf(er[i].component_name[0], sizeof er[i].component_name[0], "%s",
                     scorer_name(id));
            er[i].component_value[0] = er[i].reward;
        }
    }
    for (int i = 0; i < n; i++) {
        const Rlx__ScoreItem *it = req->items[i];
        rlx__score_result__init(&res[i]);
        rlx__trajectory_id__init(&ids[i]);
        if (it->id) {
            ids[i].actor_id = it->id->actor_id;
            ids[i].seq = it->id->seq;
        }
        res[i].id = &ids[i];
        res[i].reward = er[i].error[0] ? 0.0f : er[i].reward;
        res[i].error = er[i].error;
        Rlx__ScoreResult__ComponentsEntry *c = ce + (size_t)i * EXEC_SCORER_MAX_COMPONENTS;
        Rlx__ScoreResult__ComponentsEntry **cp = cep + (size_t)i * EXEC_SCORER_MAX_COMPONENTS;
        for (int k = 0; k < er[i].ncomponents && !er[i].error[0]; k++) {
            rlx__score_result__components_entry__init(&c[k]);
            c[k].key = er[i].component_name[k];
            c[k].value = er[i].component_value[k];
            cp[k] = &c[k];
            res[i].n_components++;
        }
        res[i].components = cp;
        resp[i] = &res[i];
        r->st.items++;
        if (er[i].error[0])
            r->st.item_errors++;
    }
    Rlx__ScoreReply rep = RLX__SCORE_REPLY__INIT;
    rep.request_id = req->request_id;
    rep.n_results = (size_t)n;
    rep.results = resp;
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_SCORE_REPLY;
    env.score_reply = &rep;
    wlink_send(r->link, &env);
    r->st.requests++;
cleanup:
    free(res);
    free(resp);
    free(ids);
    free(er);
    free(ei);
    free(idtext);
    free(ce);
    free(cep);
}

// ---- messages -------------------------------------------------------------------------------

static void handle(reward_t *r, Rlx__Envelope *env) {
    switch (env->body_case) {
    case RLX__ENVELOPE__BODY_WELCOME:
        break; // the link applied it
    case RLX__ENVELOPE__BODY_SCORE_REQUEST:
        if (r->qlen == r->qcap) {
            int cap = r->qcap ? 2 * r->qcap : 4;
            Rlx__Envelope **q = realloc(r->queue, (size_t)cap * sizeof *q);
            if (!q) {
                log_once(r, LOG_QUEUE, "out of memory queueing a ScoreRequest: dropped");
                break;
            }
            r->queue = q;
            r->qcap = cap;
        }
        r->queue[r->qlen++] = env;
        return; // the queue owns env
    case RLX__ENVELOPE__BODY_ERROR:
        log_once(r, LOG_HUB_ERROR, "hub error %d: %s", (int)env->error->code,
                 env->error->message);
        break;
    default:
        log_once(r, LOG_UNEXPECTED, "ignored a %s from the hub", wire_body_name(env->body_case));
        break;
    }
    wire_free(&env);
}

// Copies the link's counters into the worker's.
static void sync_stats(reward_t *r) {
    r->st.session = *wlink_stats(r->link);
}

static void stats_line(reward_t *r, double now) {
    if (r->cfg.stats_interval_ms <= 0 || now < r->stats_due)
        return;
    const exec_scorer_stats_t *x = r->exec ? exec_scorer_stats(r->exec) : NULL;
    fprintf(stderr, "reward %s: requests %llu items %llu errors %llu", r->name,
            (unsigned long long)r->st.requests, (unsigned long long)r->st.items,
            (unsigned long long)r->st.item_errors);
    if (x)
        fprintf(stderr, " exec: starts %llu timeouts %llu crashes %llu garbage %llu oversized %llu",
                (unsigned long long)x->starts, (unsigned long long)x->timeouts,
                (unsigned long long)x->crashes, (unsigned long long)x->garbage,
                (unsigned long long)x->oversized);
    fprintf(stderr, "\n");
    r->stats_due = now + r->cfg.stats_interval_ms * 1e-3;
}

// ---- public ---------------------------------------------------------------------------------

reward_config_t reward_defaults(void) {
    reward_config_t c = {0};
    c.name = "reward";
    c.exec_timeout_ms = 5000;
    c.credits = 2;
    c.heartbeat_ms = 1000;
    c.liveness = 5;
    c.stats_interval_ms = 5000;
    return c;
}

reward_t *reward_new(const reward_config_t *c, void *zmq_ctx) {
    if (!c->hub || !c->hub[0] || c->credits < 1 || c->heartbeat_ms < 1 || c->liveness < 1) {
        fprintf(stderr, "rlx-reward: bad configuration: need --hub, and --credits, "
                        "--heartbeat-ms >= 1\n");
        return NULL;
    }
    reward_t *r = rlx_xcalloc(1, sizeof *r, "reward worker");
    r->cfg = *c;
    r->hub = strdup(c->hub);
    r->name = strdup(c->name ? c->name : "reward");
    const char *list = c->scorers ? c->scorers : c->exec_cmd ? "exec" : scorer_list();
    r->names_buf = strdup(list);
    if (!r->hub || !r->name || !r->names_buf)
        RLX_DIE("out of memory");
    char *save = NULL;
    for (char *t = strtok_r(r->names_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!*t)
            continue;
        if (r->nnames == REWARD_MAX_SCORERS) {
            fprintf(stderr, "rlx-reward: more than %d scorer names\n", REWARD_MAX_SCORERS);
            goto fail;
        }
        r->builtin[r->nnames] = scorer_find(t);
        int ik = r->builtin[r->nnames] < 0 && !c->exec_cmd ? image_kind(t) : -1;
        if (ik >= 0) {
            char err[256];
            r->img[r->nnames] = imgscore_new(imgscore_name(ik), c->classifier, err, sizeof err);
            if (!r->img[r->nnames]) {
                fprintf(stderr, "rlx-reward: scorer \"%s\": %s%s\n", t, err,
                        c->classifier ? "" : " (the digit scorers need --classifier CKPT)");
                goto fail;
            }
        }
        if (!c->exec_cmd && r->builtin[r->nnames] < 0 && ik < 0) {
            fprintf(stderr,
                    "rlx-reward: unknown built-in scorer \"%s\" (built-ins: %s; image scorers: "
                    "%s, digit_logprob, digit_prob, toy; or use --exec)\n",
                    t, scorer_list(), imgscore_list());
            goto fail;
        }
        r->names[r->nnames++] = t;
    }
    if (r->nnames == 0) {
        fprintf(stderr, "rlx-reward: --scorer names no scorer\n");
        goto fail;
    }
    if (c->exec_cmd) {
        r->exec = exec_scorer_new(c->exec_cmd, c->exec_timeout_ms);
        if (!r->exec)
            RLX_DIE("out of memory");
        exec_scorer_set_tick(r->exec, exec_tick, r);
    }
    wlink_config_t lc = {.hub = c->hub,
                         .name = r->name,
                         .log_tag = "reward",
                         .run_id = c->run_id,
                         .heartbeat_ms = c->heartbeat_ms,
                         .liveness = c->liveness,
                         .max_backoff_ms = REWARD_MAX_BACKOFF_MS};
    wlink_hooks_t hooks = {.fill_hello = fill_hello, .fill_heartbeat = fill_heartbeat};
    r->link = wlink_new(&lc, &hooks, r, zmq_ctx);
    return r;
fail:
    reward_destroy(&r);
    return NULL;
}

int reward_run(reward_t *r, volatile sig_atomic_t *stop) {
    r->stats_due = rlx_now() + r->cfg.stats_interval_ms * 1e-3;
    int rc = 0;
    while (!*stop && !wlink_hub_left(r->link)) {
        if (r->cfg.max_requests > 0 && (long)r->st.requests >= r->cfg.max_requests)
            break;
        Rlx__Envelope *env;
        for (int n = 0; n < 1000 && wlink_recv(r->link, n == 0 && r->qlen == 0 ? 20 : 0, &env);
             n++)
            handle(r, env);
        if (*stop)
            break;
        double now = rlx_now();
        if (wlink_tick(r->link, now) != 0) {
            rc = 1; // could not even open a socket
            break;
        }
        sync_stats(r);
        stats_line(r, now);
        if (r->qlen > 0 && wlink_joined(r->link)) {
            env = r->queue[0];
            memmove(r->queue, r->queue + 1, (size_t)(r->qlen - 1) * sizeof *r->queue);
            r->qlen--;
            answer(r, env->score_request);
            wire_free(&env);
        }
    }
    sync_stats(r);
    if (rc == 0)
        wlink_bye(r->link, *stop ? "signal" : wlink_hub_left(r->link) ? "hub left" : "max requests done");
    logf_(r, "leaving: requests %llu items %llu errors %llu", (unsigned long long)r->st.requests,
          (unsigned long long)r->st.items, (unsigned long long)r->st.item_errors);
    return rc;
}

const reward_stats_t *reward_stats(const reward_t *r) {
    return &r->st;
}

void reward_destroy(reward_t **self_p) {
    if (!self_p || !*self_p)
        return;
    reward_t *r = *self_p;
    for (int i = 0; i < r->qlen; i++)
        wire_free(&r->queue[i]);
    free(r->queue);
    exec_scorer_destroy(&r->exec);
    for (int i = 0; i < REWARD_MAX_SCORERS; i++)
        imgscore_destroy(&r->img[i]);
    wlink_destroy(&r->link);
    free(r->names_buf);
    free(r->hub);
    free(r->name);
    free(r);
    *self_p = NULL;
}
