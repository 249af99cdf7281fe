// objective_text.c: see objective_text.h.
#include "objective_text.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt.h"
#include "text_traj.h"
#include "util.h"

// (Re)sizes b to hold n samples, ntok tokens and nlp response tokens. Called once at start
// with the largest batch a step can take; in the step loop only should a replayed envelope
// exceed that (never with the hub, which hands out whole groups up to the batch).
static void batch_reserve(text_batch_t *b, int n, int ntok, int nlp) {
    if (n > b->cap_n) {
        int cap = b->cap_n ? b->cap_n : 64;
        while (cap < n)
            cap *= 2;
        b->plen = realloc(b->plen, (size_t)cap * sizeof(int));
        b->rlen = realloc(b->rlen, (size_t)cap * sizeof(int));
        b->prompt = realloc(b->prompt, (size_t)cap * sizeof(int));
        b->reward = realloc(b->reward, (size_t)cap * sizeof(float));
        b->adv = realloc(b->adv, (size_t)cap * sizeof(float));
        b->group = realloc(b->group, (size_t)cap * sizeof(uint64_t));
        b->version = realloc(b->version, (size_t)cap * sizeof(int64_t));
        if (!b->plen || !b->rlen || !b->prompt || !b->reward || !b->adv || !b->group || !b->version)
            RLX_DIE("out of memory for a batch of %d samples", cap);
        b->cap_n = cap;
    }
    if (ntok > b->cap_tok) {
        int cap = b->cap_tok ? b->cap_tok : 64;
        while (cap < ntok)
            cap *= 2;
        if (!(b->tokens = realloc(b->tokens, (size_t)cap * sizeof(int))))
            RLX_DIE("out of memory for a batch of %d tokens", cap);
        b->cap_tok = cap;
    }
    if (nlp > b->cap_lp) {
        int cap = b->cap_lp ? b->cap_lp : 64;
        while (cap < nlp)
            cap *= 2;
        if (!(b->blogp = realloc(b->blogp, (size_t)cap * sizeof(float))))
            RLX_DIE("out of memory for a batch of %d log-probs", cap);
        b->cap_lp = cap;
    }
}

static void batch_free(text_batch_t *b) {
    free(b->plen);
    free(b->rlen);
    free(b->prompt);
    free(b->tokens);
    free(b->blogp);
    free(b->reward);
    free(b->adv);
    free(b->group);
    free(b->version);
    memset(b, 0, sizeof *b);
}

const int *text_batch_begin(void *self, learner_admit_t *adm) {
    text_t *t = self;
    t->b.n = t->b.ntok = t->b.nlp = 0;
    t->adm = adm;
    return &t->b.n;
}

// Adds the text trajectories of one TrajectoryBatch envelope to the batch (rank 0). Those
// that cannot be trained on here are counted. TB's task: the response must be L tokens of the
// alphabet, the prompt the train prompt of its prompt_id.
void text_add(void *self, const Rlx__Envelope *env) {
    text_t *t = self;
    text_batch_t *b = &t->b;
    learner_counts_t *cnt = t->adm->cnt;
    int ctx = t->cfg.ctx_len;
    const Rlx__TrajectoryBatch *tb = env->trajectory_batch;
    for (size_t i = 0; i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *tr = tb->trajectories[i];
        cnt->consumed++;
        const Rlx__TextTrajectory *x =
            tr->kind_case == RLX__TRAJECTORY__KIND_TEXT ? tr->text : NULL;
        // The wire's checks (text_traj.h) against this model: the response must fit the
        // context after its prompt.
        int room = x && x->n_prompt_tokens <= (size_t)ctx ? ctx + 1 - (int)x->n_prompt_tokens : 0;
        text_traj_spec_t spec = {.max_new_tokens = room, .vocab = GPT_VOCAB};
        if (!x || room < 1 || text_traj_check(&spec, x) || !isfinite(tr->reward) ||
            (t->task && text_gfn_check(t->task, tr->prompt_id, x->prompt_tokens, x->n_prompt_tokens,
                                       x->response_tokens, x->n_response_tokens))) {
            cnt->dropped_invalid++;
            continue;
        }
        if (!learner_admit_lag(t->adm, tr->policy_version))
            continue;
        int pl = (int)x->n_prompt_tokens, rl = (int)x->n_response_tokens;
        batch_reserve(b, b->n + 1, b->ntok + pl + rl, b->nlp + rl); // no-op: sized at start
        for (int j = 0; j < pl; j++)
            b->tokens[b->ntok + j] = (int)x->prompt_tokens[j];
        for (int j = 0; j < rl; j++) {
            b->tokens[b->ntok + pl + j] = (int)x->response_tokens[j];
            b->blogp[b->nlp + j] = x->logprobs[j];
        }
        b->plen[b->n] = pl;
        b->rlen[b->n] = rl;
        b->prompt[b->n] = t->task ? (int)tr->prompt_id : 0;
        b->reward[b->n] = tr->reward;
        b->group[b->n] = tr->work_id * 1000003ULL + tr->prompt_id;
        b->version[b->n] = (int64_t)tr->policy_version;
        b->n++;
        b->ntok += pl + rl;
        b->nlp += rl;
    }
}

void text_bcast_batch(text_t *t, int *stop) {
    text_batch_t *b = &t->b;
    int hdr[4] = {b->n, b->ntok, b->nlp, *stop};
    MPI_Bcast(hdr, 4, MPI_INT, 0, MPI_COMM_WORLD);
    if (t->rank != 0) {
        batch_reserve(b, hdr[0], hdr[1], hdr[2]); // no-op: sized at start
        b->n = hdr[0];
        b->ntok = hdr[1];
        b->nlp = hdr[2];
        *stop = hdr[3];
    }
    if (b->n == 0)
        return;
    MPI_Bcast(b->plen, b->n, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->rlen, b->n, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->prompt, b->n, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->tokens, b->ntok, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->blogp, b->nlp, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->reward, b->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->adv, b->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

int text_batch_n(void *self) {
    return ((text_t *)self)->b.n;
}

void text_bcast_params(gpt_t *m, int with_opt) {
    size_t n = m->ps.n;
    for (size_t off = 0; off < n; off += 1 << 28) {
        int cnt = (int)(n - off < (1u << 28) ? n - off : 1u << 28);
        MPI_Bcast(m->ps.w + off, cnt, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (with_opt) {
            MPI_Bcast(m->ps.m + off, cnt, MPI_FLOAT, 0, MPI_COMM_WORLD);
            MPI_Bcast(m->ps.v + off, cnt, MPI_FLOAT, 0, MPI_COMM_WORLD);
        }
    }
    int64_t step = m->ps.step;
    MPI_Bcast(&step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    m->ps.step = step;
}

int text_finite(void *self) {
    return learner_params_finite(&((text_t *)self)->m->ps);
}

void *text_weights(void *self, size_t *len, char *err, size_t errlen) {
    const gpt_t *m = ((text_t *)self)->m;
    paramset_t ps = m->ps;
    ps.m = ps.v = NULL; // no optimizer state on the wire
    int32_t cfg[CKPT_CONFIG_LEN] = {m->cfg.n_layer, m->cfg.n_embd, m->cfg.n_head, m->cfg.ctx_len,
                                    m->cfg.vocab};
    ckpt_capture_begin(); // the file's bytes, in memory
    if (paramset_save(&ps, "gpt weights", CKPT_KIND_GPT, cfg, NULL, 0, err, errlen) != 0) {
        free(ckpt_capture_end(len, NULL, 0));
        return NULL;
    }
    return ckpt_capture_end(len, err, errlen);
}

int text_save(text_t *t, const learner_counts_t *cnt, const void *extra, size_t extra_len) {
    char err[512];
    learner_state_t st = {.magic = LEARNER_STATE_MAGIC, .counts = *cnt};
    char *buf = rlx_xcalloc(1, sizeof st + extra_len, "checkpoint state");
    memcpy(buf, &st, sizeof st);
    if (extra_len)
        memcpy(buf + sizeof st, extra, extra_len);
    int rc = gpt_save(t->m, t->path, buf, sizeof st + extra_len, err, sizeof err);
    free(buf);
    if (rc != 0) {
        fprintf(stderr, "rlx-learner: checkpoint not written: %s\n", err);
        return -1;
    }
    return 0;
}

double text_reward_mean(const text_t *t) {
    double rsum = 0;
    for (int i = 0; i < t->b.n; i++)
        rsum += t->b.reward[i];
    return t->b.n ? rsum / t->b.n : 0.0;
}

void text_metrics_head(const text_t *t, json_object *line) {
    learner_json_num(line, "reward_mean", text_reward_mean(t), "%.5f");
}

// Rank 0: the model from a checkpoint (--init, or OUT/learner.ckpt when resuming), or fresh.
static int load_model(text_t *t, learner_counts_t *cnt, int fresh_ctx, void **extra,
                      size_t *extra_len) {
    const learner_config_t *c = t->c;
    char err[512];
    struct stat stt;
    int resuming = c->resume && stat(t->path, &stt) == 0, ok = 1;
    const char *from = resuming ? t->path : c->init;
    ckpt_t *ck = NULL;
    if (!from && fresh_ctx > 0) {
        // No pretrained model needed: a fresh one sized for the prompts and responses.
        gpt_config_t nc = c->new_gpt;
        if (nc.ctx_len <= 0)
            nc.ctx_len = fresh_ctx;
        t->m = gpt_new(&nc, t->cap, c->seed);
        printf("rlx-learner: no --init: a fresh gpt (seed %llu)\n", (unsigned long long)c->seed);
    } else if (!from) {
        fprintf(stderr, "rlx-learner: --init CKPT is required (or --resume with %s)\n", t->path);
        ok = 0;
    } else if (!(ck = ckpt_read(from, err, sizeof err))) {
        fprintf(stderr, "rlx-learner: cannot read %s: %s\n", from, err);
        ok = 0;
    } else if (!(t->m = gpt_from_ckpt(ck, t->cap, err, sizeof err))) {
        fprintf(stderr, "rlx-learner: %s: %s\n", from, err);
        ok = 0;
    } else if (resuming) {
        uint64_t n = 0;
        const learner_state_t *st = ckpt_section(ck, "extra", &n);
        if (st && n >= sizeof *st && !memcmp(st->magic, LEARNER_STATE_MAGIC, 8)) {
            *cnt = st->counts;
            *extra_len = n - sizeof *st;
            *extra = rlx_xcalloc(1, *extra_len + 1, "checkpoint extra");
            memcpy(*extra, (const char *)st + sizeof *st, *extra_len);
        } else
            fprintf(stderr,
                    "rlx-learner: %s has no learner state (counters start at 0; "
                    "the model and optimizer are resumed)\n",
                    t->path);
        printf("rlx-learner: resumed from %s at step %lld\n", t->path, (long long)cnt->step);
    } else {
        // Starting from a pretrained model: fresh optimizer.
        memset(t->m->ps.m, 0, t->m->ps.n * sizeof(float));
        memset(t->m->ps.v, 0, t->m->ps.n * sizeof(float));
        t->m->ps.step = 0;
    }
    ckpt_destroy(&ck);
    return ok ? 0 : -1;
}

int text_init(text_t *t, const learner_config_t *c, learner_counts_t *cnt, int fresh_ctx,
              void **extra, size_t *extra_len) {
    t->c = c;
    MPI_Comm_rank(MPI_COMM_WORLD, &t->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &t->nranks);
    snprintf(t->path, sizeof t->path, "%s/learner.ckpt", c->out);
    for (int i = 0; i < c->hub.n_allowed_tokens; i++)
        t->allowed[i] = (int)c->hub.allowed_tokens[i];
    t->n_allowed = c->hub.n_allowed_tokens;
    int max_group = c->hub.samples_per_prompt > 0 ? c->hub.samples_per_prompt : 1;
    int most = c->batch + max_group;                 // rank 0 may take a group more than the batch
    t->cap = (most + t->nranks - 1) / t->nranks + 1; // most samples on one rank
    *extra = NULL;
    *extra_len = 0;
    int ok = t->rank != 0 || load_model(t, cnt, fresh_ctx, extra, extra_len) == 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        return -1;
    if (t->rank == 0)
        t->cfg = t->m->cfg;
    MPI_Bcast(&t->cfg, (int)sizeof t->cfg, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (t->rank != 0)
        t->m = gpt_new(&t->cfg, t->cap, 0);
    text_bcast_params(t->m, 1);
    if (t->n_allowed > 0) // logp over the alphabet, as the actors sample
        gpt_set_vocab_mask(t->m, t->allowed, t->n_allowed);
    MPI_Bcast(&cnt->step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    // The batch, sized once: every sample is at most ctx + 1 tokens.
    int ctx1 = t->cfg.ctx_len + 1;
    batch_reserve(&t->b, most, most * ctx1, most * ctx1);
    t->tok = rlx_xcalloc((size_t)t->cap * t->cfg.ctx_len, sizeof(int), "batch");
    t->tgt = rlx_xcalloc((size_t)t->cap * t->cfg.ctx_len, sizeof(int), "batch");
    return 0;
}

void text_free(text_t *t) {
    batch_free(&t->b);
    free(t->tok);
    free(t->tgt);
    gpt_destroy(&t->m);
}
