// learner.c: the MPI RL learner loop (see learner.h): batches from the hub or a trajectory
// log, broadcast to all ranks, sharded policy-gradient loss, one in-place all-reduce of the
// gradients, AdamW in lockstep; rank 0 publishes weights, evaluates, logs and checkpoints.
// With --objective tb the same loop trains by trajectory balance (text_gfn.h): the loss, a
// second all-reduce and AdamW for the log Z table, and the exact evaluation change.
#include "learner.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "bytetok.h"
#include "diffusion_learner.h"
#include "gflow_learner.h"
#include "gflownet.h"
#include "gpt.h"
#include "layers.h"
#include "learner_common.h"
#include "sampler.h"
#include "scorers.h"
#include "text_gfn.h"
#include "trajlog.h"
#include "util.h"
#include "wire.h"

learner_config_t learner_defaults(void) {
    learner_config_t c = {0};
    c.hub = hub_defaults();
    c.eval_scorer = "exact";
    c.eval_n = 200;
    c.eval_every = 20;
    c.batch = 64;
    c.max_lag = 4;
    c.rl = (rl_config_t){.clip_eps = 0.2f, .kl_coef = 0.0f, .normalize = 0};
    c.opt = adamw_defaults();
    c.opt.lr = 1e-4f;
    c.opt.beta2 = 0.99f;
    c.opt.grad_clip = 1.0f;
    c.steps = 1000;
    c.publish_every = 1;
    c.ckpt_every = 50;
    c.threads = 1;
    c.seed = 1;
    c.take_timeout_s = 120;
    c.gflow_objective = GFN_LOSS_TB;
    c.gflow_lambda = 0.9f;
    c.logz_lr = 0.1f;
    c.gflow_hidden = 256;
    c.gflow_blocks = 1;
    c.diff_objective = DIFF_OBJ_DAGKL;
    c.drl = drl_defaults();
    c.flow_hidden = 128;
    c.flow_blocks = 2;
    c.flow_time_dim = 16;
    c.reward_beta = 1.0f;
    c.new_gpt = (gpt_config_t){.n_layer = 2, .n_embd = 64, .n_head = 4, .vocab = GPT_VOCAB};
    return c;
}

// A batch of text samples in flat arrays (the form in which it is broadcast).
typedef struct {
    int n;            // samples
    int ntok;         // tokens over all samples (prompt + response)
    int nlp;          // response tokens over all samples
    int cap_n, cap_tok, cap_lp; // capacities
    int *plen;        // (n) prompt lengths
    int *rlen;        // (n) response lengths
    int *prompt;      // (n) prompt index (Trajectory.prompt_id; TB only, else 0): its log Z
    int *tokens;      // (ntok) prompt then response of each sample, back to back
    float *blogp;     // (nlp) behaviour log-probs
    float *reward;    // (n)
    float *adv;       // (n) advantages (computed on rank 0)
    uint64_t *group;  // (n) group ids (rank 0 only)
    int64_t *version; // (n) behaviour policy versions (rank 0 only)
} batch_t;

static void grow(void **p, int *cap, int need, size_t elem, int nfields, void **more[]) {
    if (need <= *cap)
        return;
    int nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    *p = realloc(*p, (size_t)nc * elem);
    for (int i = 0; i < nfields; i++)
        *more[i] = realloc(*more[i], (size_t)nc * elem);
    if (!*p)
        RLX_DIE("out of memory growing a batch to %d", nc);
    for (int i = 0; i < nfields; i++)
        if (!*more[i])
            RLX_DIE("out of memory growing a batch to %d", nc);
    *cap = nc;
}

static void batch_reserve(batch_t *b, int n, int ntok, int nlp) {
    if (n > b->cap_n) {
        int cap = b->cap_n;
        void **f[] = {(void **)&b->rlen, (void **)&b->prompt};
        grow((void **)&b->plen, &cap, n, sizeof(int), 2, f);
        cap = b->cap_n;
        void **g[] = {(void **)&b->adv};
        grow((void **)&b->reward, &cap, n, sizeof(float), 1, g);
        cap = b->cap_n;
        grow((void **)&b->group, &cap, n, sizeof(uint64_t), 0, NULL);
        cap = b->cap_n;
        grow((void **)&b->version, &cap, n, sizeof(int64_t), 0, NULL);
        b->cap_n = cap;
    }
    grow((void **)&b->tokens, &b->cap_tok, ntok, sizeof(int), 0, NULL);
    grow((void **)&b->blogp, &b->cap_lp, nlp, sizeof(float), 0, NULL);
}

static void batch_free(batch_t *b) {
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

// Adds the text trajectories of one TrajectoryBatch envelope to b (rank 0). Those that cannot
// be trained on here are counted. task: TB's (the response must be L tokens of the alphabet,
// the prompt the train prompt of its prompt_id), or NULL.
static void add_envelope(batch_t *b, const Rlx__Envelope *env, int ctx, int64_t step, int max_lag,
                         const tgfn_task_t *task, learner_counts_t *cnt, double *lag_sum,
                         int *lag_max) {
    const Rlx__TrajectoryBatch *tb = env->trajectory_batch;
    for (size_t i = 0; i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *t = tb->trajectories[i];
        cnt->consumed++;
        const Rlx__TextTrajectory *x = t->kind_case == RLX__TRAJECTORY__KIND_TEXT ? t->text : NULL;
        if (!x || x->n_prompt_tokens < 1 || x->n_response_tokens < 1 ||
            x->n_logprobs != x->n_response_tokens ||
            (int)(x->n_prompt_tokens + x->n_response_tokens) > ctx + 1) {
            cnt->dropped_invalid++;
            continue;
        }
        int ok = 1;
        for (size_t j = 0; j < x->n_prompt_tokens; j++)
            ok &= x->prompt_tokens[j] < GPT_VOCAB;
        for (size_t j = 0; j < x->n_response_tokens; j++)
            ok &= x->response_tokens[j] < GPT_VOCAB && isfinite(x->logprobs[j]);
        if (!ok || !isfinite(t->reward) ||
            (task && tgfn_check(task, t->prompt_id, x->prompt_tokens, x->n_prompt_tokens,
                                x->response_tokens, x->n_response_tokens))) {
            cnt->dropped_invalid++;
            continue;
        }
        if (!learner_admit_lag(cnt, step, t->policy_version, max_lag, lag_sum, lag_max))
            continue;
        int pl = (int)x->n_prompt_tokens, rl = (int)x->n_response_tokens;
        batch_reserve(b, b->n + 1, b->ntok + pl + rl, b->nlp + rl);
        for (int j = 0; j < pl; j++)
            b->tokens[b->ntok + j] = (int)x->prompt_tokens[j];
        for (int j = 0; j < rl; j++) {
            b->tokens[b->ntok + pl + j] = (int)x->response_tokens[j];
            b->blogp[b->nlp + j] = x->logprobs[j];
        }
        b->plen[b->n] = pl;
        b->rlen[b->n] = rl;
        b->prompt[b->n] = task ? (int)t->prompt_id : 0;
        b->reward[b->n] = t->reward;
        b->group[b->n] = t->work_id * 1000003ULL + t->prompt_id;
        b->version[b->n] = (int64_t)t->policy_version;
        b->n++;
        b->ntok += pl + rl;
        b->nlp += rl;
    }
}

// add_envelope as a learner_add_fn.
typedef struct {
    batch_t *b;            // the batch being filled
    int ctx;               // model context
    int64_t step;          // steps taken
    int max_lag;           // -1 = no staleness limit (replay)
    const tgfn_task_t *task; // TB's task, or NULL
    learner_counts_t *cnt; // counters
    double *lag_sum;       // policy lag sum of the batch
    int *lag_max;          // and its maximum
} text_add_t;

static void text_add(void *ctx, const Rlx__Envelope *env) {
    text_add_t *t = ctx;
    add_envelope(t->b, env, t->ctx, t->step, t->max_lag, t->task, t->cnt, t->lag_sum, t->lag_max);
}

// Views of the batch's samples for the objective (reallocates `s`). Group ids exist on rank 0
// only (where advantages are computed); advantages as broadcast.
static rl_sample_t *batch_samples(const batch_t *b, rl_sample_t *s) {
    s = realloc(s, (size_t)(b->n > 0 ? b->n : 1) * sizeof *s);
    if (!s)
        RLX_DIE("out of memory for a batch of %d samples", b->n);
    int to = 0, lo = 0;
    for (int i = 0; i < b->n; i++) {
        s[i] = (rl_sample_t){.prompt_len = b->plen[i], .resp_len = b->rlen[i],
                             .tokens = b->tokens + to, .blogp = b->blogp + lo,
                             .reward = b->reward[i], .advantage = b->adv[i],
                             .group = b->group ? b->group[i] : 0};
        to += b->plen[i] + b->rlen[i];
        lo += b->rlen[i];
    }
    return s;
}

// TB views of the batch's samples (reallocates `s`): log R = beta * reward.
static tgfn_sample_t *tb_samples(const batch_t *b, tgfn_sample_t *s, float beta) {
    s = realloc(s, (size_t)(b->n > 0 ? b->n : 1) * sizeof *s);
    if (!s)
        RLX_DIE("out of memory for a batch of %d samples", b->n);
    int to = 0, lo = 0;
    for (int i = 0; i < b->n; i++) {
        s[i] = (tgfn_sample_t){.prompt_len = b->plen[i],
                               .resp_len = b->rlen[i],
                               .tokens = b->tokens + to,
                               .blogp = b->blogp + lo,
                               .logr = beta * b->reward[i],
                               .prompt = b->prompt[i]};
        to += b->plen[i] + b->rlen[i];
        lo += b->rlen[i];
    }
    return s;
}

// The hub's allowed tokens as ints (the sampler's and the model's form); returns how many.
static int allowed_ints(const hub_config_t *h, int *out) {
    for (int i = 0; i < h->n_allowed_tokens; i++)
        out[i] = (int)h->allowed_tokens[i];
    return h->n_allowed_tokens;
}

// Rank 0 sends the batch (and the stop decision) to every rank; other ranks receive it.
static void bcast_batch(batch_t *b, int *stop, int rank) {
    int hdr[4] = {b->n, b->ntok, b->nlp, *stop};
    MPI_Bcast(hdr, 4, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank != 0) {
        batch_reserve(b, hdr[0], hdr[1], hdr[2]);
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

// Parameters (and optionally optimizer state) of rank 0 to every rank.
static void bcast_params(gpt_t *m, int with_opt) {
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

// Held-out prompts read from a TSV file.
typedef struct {
    int n;        // prompts
    char **text;  // prompt texts
    char **target; // targets
} prompts_t;

static int read_prompts(const char *path, int max, prompts_t *p) {
    memset(p, 0, sizeof *p);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "rlx-learner: cannot open eval prompts %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096];
    p->text = rlx_xcalloc((size_t)max, sizeof(char *), "prompts");
    p->target = rlx_xcalloc((size_t)max, sizeof(char *), "prompts");
    while (p->n < max && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *tab = strchr(line, '\t');
        if (!tab)
            continue;
        *tab = 0;
        p->text[p->n] = strdup(line);
        p->target[p->n] = strdup(tab + 1);
        p->n++;
    }
    fclose(f);
    if (p->n == 0) {
        fprintf(stderr, "rlx-learner: no prompt<TAB>target lines in %s\n", path);
        return -1;
    }
    return 0;
}

static void free_prompts(prompts_t *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->text[i]);
        free(p->target[i]);
    }
    free(p->text);
    free(p->target);
}

// Mean reward (for "exact": accuracy) of one sample per held-out prompt, drawn like the
// actors draw (same temperature, top-k, length), with a fixed seed so evaluations compare.
static double evaluate(gpt_t *m, sampler_t *s, int smax, const prompts_t *p, int scorer,
                       const learner_config_t *c) {
    const hub_config_t *h = &c->hub;
    int ctx = m->cfg.ctx_len, max_new = h->max_new_tokens;
    int *prompt = rlx_xcalloc((size_t)smax * ctx, sizeof(int), "eval");
    int *off = rlx_xcalloc((size_t)smax + 1, sizeof(int), "eval");
    int *out = rlx_xcalloc((size_t)smax * max_new, sizeof(int), "eval");
    float *lp = rlx_xcalloc((size_t)smax * max_new, sizeof(float), "eval");
    int *len = rlx_xcalloc((size_t)smax, sizeof(int), "eval");
    char resp[4096];
    int allowed[HUB_MAX_ALLOWED];
    sample_config_t sc = {.temperature = h->temperature,
                          .top_k = h->top_k,
                          .max_new = max_new,
                          .stop = {GPT_TOK_EOS},
                          .n_stop = 1,
                          .seed = c->seed ^ 0xe7a1,
                          .allowed = allowed,
                          .n_allowed = allowed_ints(h, allowed)};
    double total = 0;
    int scored = 0;
    for (int start = 0; start < p->n; start += smax) {
        int b = p->n - start < smax ? p->n - start : smax, nb = 0;
        off[0] = 0;
        for (int i = 0; i < b; i++) {
            const char *t = p->text[start + i];
            int need = bytetok_encode_prompt(t, strlen(t), prompt + off[nb], ctx - max_new);
            if (need > ctx - max_new)
                continue; // does not fit the context: not evaluated
            off[nb + 1] = off[nb] + need;
            nb++;
        }
        if (nb == 0 || sampler_generate(s, prompt, off, nb, &sc, (uint64_t)start, out, lp, len))
            continue;
        for (int i = 0, k = 0; i < b && k < nb; i++, k++) {
            bytetok_decode_response(out + (size_t)k * max_new, len[k], m->cfg.vocab, resp,
                                    sizeof resp);
            total += scorer_score(scorer, p->text[start + i], resp, p->target[start + i]);
            scored++;
        }
    }
    free(prompt);
    free(off);
    free(out);
    free(lp);
    free(len);
    return scored ? total / scored : NAN;
}

// Serialised weights for the actors: a params-only checkpoint's bytes.
static void *weights_blob(const gpt_t *m, const char *dir, size_t *len) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/.weights.%d", dir, (int)getpid());
    paramset_t ps = m->ps;
    ps.m = ps.v = NULL; // no optimizer state on the wire
    int32_t cfg[CKPT_CONFIG_LEN] = {m->cfg.n_layer, m->cfg.n_embd, m->cfg.n_head,
                                    m->cfg.ctx_len, m->cfg.vocab};
    if (paramset_save(&ps, path, CKPT_KIND_GPT, cfg, NULL, 0, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: cannot serialise weights: %s\n", err);
        return NULL;
    }
    void *buf = ckpt_take_file(path, len, err, sizeof err);
    if (!buf)
        fprintf(stderr, "rlx-learner: cannot serialise weights: %s\n", err);
    return buf;
}

// hc: the hub's totals now (hub_totals), stored as the earlier runs' counters of a resume.
// logz: TB's log Z table, stored after the learner state (text_gfn.h), or NULL.
static int save_checkpoint(const gpt_t *m, const char *dir, const learner_counts_t *cnt,
                           const hub_counters_t *hc, const tgfn_logz_t *logz) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/learner.ckpt", dir);
    learner_state_t st = {.magic = "RLXLRN3", .counts = *cnt};
    st.counts.hub_prev = *hc;
    size_t zn = logz ? tgfn_logz_bytes(logz) : 0;
    char *extra = rlx_xcalloc(1, sizeof st + zn, "checkpoint state");
    memcpy(extra, &st, sizeof st);
    if (logz)
        tgfn_logz_pack(logz, extra + sizeof st);
    int rc = gpt_save(m, path, extra, sizeof st + zn, err, sizeof err);
    free(extra);
    if (rc != 0) {
        fprintf(stderr, "rlx-learner: checkpoint not written: %s\n", err);
        return -1;
    }
    return 0;
}

// TB's exact evaluation (text_gfn.h): the metrics fields into buf (each followed by ", ") and
// a line on stdout.
static void tb_eval_fields(tgfn_eval_t *ev, gpt_t *m, const tgfn_logz_t *z, int *tok, int *tgt,
                           const learner_counts_t *cnt, char *buf, size_t len) {
    tgfn_result_t r;
    tgfn_evaluate(ev, m, z->ps.w, tok, tgt, &r);
    snprintf(buf, len,
             "\"l1\": %.6f, \"l1_max\": %.6f, \"logz_true\": %.5f, \"logz_err\": %.5f, "
             "\"mode_mass\": %.5f, \"mass\": %.6f, \"n_modes\": %d, ",
             r.l1, r.l1_max, r.logz_true, r.logz_err, r.mode_mass, r.mass, r.n_modes);
    printf("eval step %lld trajectories %lld L1 %.5f modes found %d/%d log Z %.4f (true %.4f)\n",
           (long long)cnt->step, (long long)cnt->consumed, r.l1, r.modes_found, r.n_modes,
           z->ps.w[0], r.logz_true);
    fflush(stdout);
}

// A TB evaluation-only line (start and end of the run).
static void tb_write_eval(FILE *metrics, tgfn_eval_t *ev, gpt_t *m, const tgfn_logz_t *z, int *tok,
                          int *tgt, const learner_counts_t *cnt, int final, double elapsed) {
    char f[400];
    tb_eval_fields(ev, m, z, tok, tgt, cnt, f, sizeof f);
    fprintf(metrics,
            "{\"step\": %lld, \"samples\": %lld, \"trajectories\": %lld, %s\"modes_found\": %d, "
            "\"logz\": %.5f, %s\"elapsed_s\": %.2f}\n",
            (long long)cnt->step, (long long)cnt->consumed, (long long)cnt->consumed, f,
            tgfn_eval_modes_found(ev), z->ps.w[0], final ? "\"final\": true, " : "", elapsed);
    fflush(metrics);
}

int learner_run(const learner_config_t *c) {
    if (c->gflow_env)
        return gflow_learner_run(c);
    if (c->diff_env)
        return diffusion_learner_run(c);
    int rank = 0, nranks = 1, rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    layers_set_threads(c->threads);
    learner_signals_install();

    gpt_t *m = NULL, *ref = NULL;
    sampler_t *eval_sampler = NULL;
    hub_t *hub = NULL;
    trajlog_t *replay = NULL;
    void *zctx = NULL;
    FILE *metrics = NULL;
    wire_t *w = NULL;
    prompts_t evalp = {0};
    batch_t b = {0};
    rl_sample_t *samples = NULL;
    int *tok = NULL, *tgt = NULL;
    learner_counts_t cnt = {0};
    char err[512], path[4096];
    int eval_scorer = -1, smax = 64;
    // Trajectory balance (text_gfn.h): the task (rank 0), log Z table, exact evaluator (rank 0).
    int tb = c->text_tb, allowed[HUB_MAX_ALLOWED], n_allowed = allowed_ints(&c->hub, allowed);
    tgfn_task_t task = {0};
    tgfn_logz_t logz = {0};
    tgfn_eval_t *tev = NULL;
    tgfn_sample_t *tsamples = NULL;
    adamw_config_t oz = c->opt; // log Z's optimizer: its own lr, no decay, no clipping
    oz.lr = c->logz_lr;
    oz.weight_decay = 0;
    oz.grad_clip = 0;
    int max_group = c->hub.samples_per_prompt > 0 ? c->hub.samples_per_prompt : 1;
    int cap = (c->batch + max_group + nranks - 1) / nranks + 1; // most samples on one rank

    // Model: rank 0 reads the checkpoint, every rank gets the same parameters.
    int ok = 1;
    gpt_config_t cfg = {0};
    if (rank == 0) {
        ckpt_t *ck = NULL;
        snprintf(path, sizeof path, "%s/learner.ckpt", c->out);
        struct stat stt;
        int resuming = c->resume && stat(path, &stt) == 0;
        const char *from = resuming ? path : c->init;
        if (tb && tgfn_task_load(&task, c->hub.train_prompts, allowed, n_allowed,
                                 c->hub.max_new_tokens, err, sizeof err) != 0) {
            fprintf(stderr, "rlx-learner: %s\n", err);
            ok = 0;
        } else if (tb && !from) {
            // No pretrained model needed: a fresh one sized for the prompts and responses.
            gpt_config_t nc = c->new_gpt;
            if (nc.ctx_len <= 0)
                nc.ctx_len = task.max_prompt + task.length;
            m = gpt_new(&nc, cap, c->seed);
            printf("rlx-learner: no --init: a fresh gpt (seed %llu)\n",
                   (unsigned long long)c->seed);
        } else if (!from) {
            fprintf(stderr, "rlx-learner: --init CKPT is required (or --resume with %s)\n", path);
            ok = 0;
        } else if (!(ck = ckpt_read(from, err, sizeof err))) {
            fprintf(stderr, "rlx-learner: cannot read %s: %s\n", from, err);
            ok = 0;
        } else if (!(m = gpt_from_ckpt(ck, cap, err, sizeof err))) {
            fprintf(stderr, "rlx-learner: %s: %s\n", from, err);
            ok = 0;
        } else if (resuming) {
            uint64_t n = 0;
            const learner_state_t *st = ckpt_section(ck, "extra", &n);
            if (st && n >= sizeof *st && !memcmp(st->magic, "RLXLRN3", 8)) {
                cnt = st->counts;
                if (tb) { // the log Z table follows the learner state
                    tgfn_logz_init(&logz, task.n_prompts, 0.0f);
                    if (tgfn_logz_unpack(&logz, (const char *)st + sizeof *st, n - sizeof *st, err,
                                         sizeof err) != 0) {
                        fprintf(stderr, "rlx-learner: cannot resume %s: %s\n", path, err);
                        ok = 0;
                    }
                }
            } else
                fprintf(stderr, "rlx-learner: %s has no learner state (counters start at 0; "
                                "the model and optimizer are resumed)\n", path);
            printf("rlx-learner: resumed from %s at step %lld\n", path, (long long)cnt.step);
        } else {
            // Starting from a pretrained model: fresh optimizer.
            memset(m->ps.m, 0, m->ps.n * sizeof(float));
            memset(m->ps.v, 0, m->ps.n * sizeof(float));
            m->ps.step = 0;
        }
        ckpt_destroy(&ck);
        if (m)
            cfg = m->cfg;
        if (ok && m && tb && cfg.ctx_len < task.max_prompt + task.length) {
            fprintf(stderr,
                    "rlx-learner: the model's context %d is shorter than the longest "
                    "prompt (%d tokens) + --max-new %d\n",
                    cfg.ctx_len, task.max_prompt, task.length);
            ok = 0;
        }
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto cleanup;
    if (tb) { // rank 0's log Z table (zeros unless resumed) to every rank
        int np = task.n_prompts;
        MPI_Bcast(&np, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (!logz.buf)
            tgfn_logz_init(&logz, np, 0.0f);
        MPI_Bcast(logz.buf, 4 * np, MPI_FLOAT, 0, MPI_COMM_WORLD);
        MPI_Bcast(&logz.ps.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    }
    MPI_Bcast(&cfg, (int)sizeof cfg, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank != 0)
        m = gpt_new(&cfg, cap, 0);
    bcast_params(m, 1);
    if (n_allowed > 0) // logp over the alphabet, as the actors sample
        gpt_set_vocab_mask(m, allowed, n_allowed);
    MPI_Bcast(&cnt.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (c->rl.kl_coef > 0) {
        // The reference is the initial policy; on resume, the --init checkpoint.
        if (rank == 0) {
            ref = gpt_load(c->init ? c->init : path, cap, err, sizeof err);
            ok = ref != NULL;
            if (!ok)
                fprintf(stderr, "rlx-learner: KL reference: %s\n", err);
        }
        MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (!ok)
            goto cleanup;
        if (rank != 0)
            ref = gpt_new(&cfg, cap, 0);
        bcast_params(ref, 0);
        if (n_allowed > 0)
            gpt_set_vocab_mask(ref, allowed, n_allowed);
    }
    tok = rlx_xcalloc((size_t)cap * cfg.ctx_len, sizeof(int), "batch");
    tgt = rlx_xcalloc((size_t)cap * cfg.ctx_len, sizeof(int), "batch");

    if (rank == 0) {
        // Replayed logs may come from any run: no run id to check then.
        w = wire_new("learner", 0, c->replay ? NULL : c->hub.run_id);
        mkdir(c->out, 0755);
        if (c->metrics)
            snprintf(path, sizeof path, "%s", c->metrics);
        else
            snprintf(path, sizeof path, "%s/metrics.jsonl", c->out);
        metrics = fopen(path, c->resume ? "a" : "w");
        if (!metrics) {
            fprintf(stderr, "rlx-learner: cannot write metrics %s: %s\n", path, strerror(errno));
            ok = 0;
        }
        if (ok && c->eval_prompts) {
            eval_scorer = scorer_find(c->eval_scorer);
            if (eval_scorer < 0) {
                fprintf(stderr, "rlx-learner: unknown eval scorer '%s' (built-in: %s)\n",
                        c->eval_scorer, scorer_list());
                ok = 0;
            } else if (read_prompts(c->eval_prompts, c->eval_n, &evalp) != 0) {
                ok = 0;
            } else {
                smax = evalp.n < 256 ? evalp.n : 256;
                eval_sampler = sampler_new(m, smax);
            }
        }
        int sid = tb ? scorer_find(c->hub.scorer) : -1;
        if (ok && tb && sid >= 0 && !scorer_is_payload(sid)) {
            // The reward workers' scorer, in-process, on every sequence: the exact L1.
            tev = tgfn_eval_from_scorer(&task, sid, c->reward_beta, err, sizeof err);
            if (!tev) {
                fprintf(stderr, "rlx-learner: %s\n", err);
                ok = 0;
            }
        } else if (ok && tb) {
            printf("rlx-learner: scorer '%s' is not a built-in text scorer (%s): R(y) is not "
                   "known here, so no exact L1 and no mode count are reported\n",
                   c->hub.scorer, scorer_list());
        }
        if (tev) {
            int64_t modes[8];
            int nm = tgfn_eval_modes(tev, 0, modes, 8), x[256];
            char text[257];
            printf("rlx-learner: TB on text: %d prompt(s), alphabet of %d, length %d, %lld "
                   "sequences per prompt; prompt 0: true log Z %.4f, %d modes",
                   task.n_prompts, task.n_alpha, task.length, (long long)task.n_seqs,
                   tgfn_eval_logz(tev, 0), nm);
            for (int i = 0; i < nm && i < 8 && task.length <= 256; i++) {
                tgfn_seq_tokens(&task, modes[i], x);
                bytetok_decode_response(x, task.length, GPT_VOCAB, text, sizeof text);
                printf("%s%s", i ? " " : ": ", text);
            }
            printf("%s\n", nm > 8 ? " ..." : "");
        }
        if (ok && c->replay) {
            replay = trajlog_open_read(c->replay, err, sizeof err);
            if (!replay) {
                fprintf(stderr, "rlx-learner: %s\n", err);
                ok = 0;
            }
        } else if (ok) {
            zctx = zmq_ctx_new();
            hub = hub_start(&c->hub, zctx);
            if (!hub)
                ok = 0;
        }
        if (ok && hub) {
            size_t len = 0;
            void *blob = weights_blob(m, c->out, &len);
            // Policy version v = the weights after v-1 optimizer steps (0 means "none").
            ok = blob && hub_publish_weights(hub, (uint64_t)cnt.step + 1, blob, len) == 0;
            free(blob);
        }
        printf("rlx-learner: %d rank(s), model L=%d C=%d NH=%d T=%d (%zu parameters), batch %d, "
               "%s\n", nranks, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.ctx_len, m->ps.n,
               c->batch, c->replay ? "replaying a trajectory log" : "live actors via the hub");
        fflush(stdout);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto cleanup;

    double t0 = rlx_now(), last_eval = NAN;
    if (rank == 0 && eval_sampler) {
        last_eval = evaluate(m, eval_sampler, smax, &evalp, eval_scorer, c);
        fprintf(metrics, "{\"step\": %lld, \"samples\": %lld, \"eval_accuracy\": %.4f, "
                         "\"elapsed_s\": %.2f}\n", (long long)cnt.step, (long long)cnt.consumed,
                last_eval, rlx_now() - t0);
        fflush(metrics);
        printf("eval step %lld accuracy %.4f (%d held-out prompts)\n", (long long)cnt.step,
               last_eval, evalp.n);
        fflush(stdout);
    }
    if (rank == 0 && tev)
        tb_write_eval(metrics, tev, m, &logz, tok, tgt, &cnt, 0, 0.0);

    int stop = 0, finish = 0; // finish: rank 0 reached its limits; tells the others next
    int64_t samples_at_start = cnt.consumed;
    while (!stop) {
        b.n = b.ntok = b.nlp = 0;
        double lag_sum = 0;
        int lag_max = 0;
        int signalled = learner_stop_any_rank();
        if (rank == 0) {
            // Collect at least `batch` trainable trajectories (whole groups).
            learner_source_t src = {
                .hub = hub, .replay = replay, .w = w, .take_timeout_s = c->take_timeout_s};
            text_add_t ta = {.b = &b,
                             .ctx = cfg.ctx_len,
                             .step = cnt.step,
                             .max_lag = replay ? -1 : c->max_lag,
                             .task = tb ? &task : NULL,
                             .cnt = &cnt,
                             .lag_sum = &lag_sum,
                             .lag_max = &lag_max};
            if (!finish)
                learner_collect(&src, c->batch, &b.n, &cnt, text_add, &ta);
            stop = finish || signalled || learner_stop_signal() || b.n < c->batch;
            if (stop && b.n > 0) {
                cnt.dropped_shutdown += b.n; // a partial batch is not trained on
                b.n = 0;
            }
            if (!stop) {
                if (!tb) {
                    samples = batch_samples(&b, samples);
                    rl_advantages(samples, b.n, c->rl.normalize);
                }
                for (int i = 0; i < b.n; i++)
                    b.adv[i] = tb ? 0.0f : samples[i].advantage;
            }
        }
        bcast_batch(&b, &stop, rank);
        if (stop)
            break;

        // This rank's shard of the batch.
        int lo_i = (int)((int64_t)b.n * rank / nranks), hi_i = (int)((int64_t)b.n * (rank + 1) / nranks);
        paramset_zero_grad(&m->ps);
        rl_stats_t st = {0};
        tgfn_stats_t tst = {0};
        if (tb) {
            tsamples = tb_samples(&b, tsamples, c->reward_beta);
            paramset_zero_grad(&logz.ps);
            if (hi_i > lo_i) {
                tgfn_loss(m, tsamples + lo_i, hi_i - lo_i, logz.ps.w, logz.ps.g, (double)b.n, tok,
                          tgt, &tst);
                gpt_backward(m);
            }
            st.loss = tst.loss;
            st.tokens = tst.tokens;
            st.ratio_mean = tst.tokens ? tst.ratio_sum / tst.tokens : 0;
        } else {
            samples = batch_samples(&b, samples);
            if (hi_i > lo_i) {
                rl_loss(m, ref, samples + lo_i, hi_i - lo_i, (double)b.n, &c->rl, tok, tgt, &st);
                gpt_backward(m);
            }
        }
        MPI_Allreduce(MPI_IN_PLACE, m->ps.g, (int)m->ps.n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (tb)
            MPI_Allreduce(MPI_IN_PLACE, logz.ps.g, (int)logz.ps.n, MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD);
        float lr = adamw_lr(&c->opt, m->ps.step);
        float gnorm = adamw_step(&m->ps, &c->opt);
        if (tb)
            adamw_step(&logz.ps, &oz);
        double loc[7] = {st.loss,
                         st.kl * st.tokens,
                         st.clip_frac * st.tokens,
                         st.ratio_mean * st.tokens,
                         st.tokens,
                         tst.stale_sum,
                         tst.resid_abs},
               glob[7];
        MPI_Reduce(loc, glob, 7, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        cnt.step++;
        cnt.trained += b.n;
        if (rank != 0)
            continue;

        // Rank 0: publish, evaluate, log, checkpoint.
        if (hub && c->publish_every > 0 && cnt.step % c->publish_every == 0) {
            size_t len = 0;
            void *blob = weights_blob(m, c->out, &len);
            if (!blob || hub_publish_weights(hub, (uint64_t)cnt.step + 1, blob, len) != 0)
                fprintf(stderr, "rlx-learner: publishing weights of step %lld failed\n",
                        (long long)cnt.step);
            free(blob);
        }
        int evaluated = 0;
        if (eval_sampler && c->eval_every > 0 && cnt.step % c->eval_every == 0) {
            last_eval = evaluate(m, eval_sampler, smax, &evalp, eval_scorer, c);
            evaluated = 1;
        }
        double rsum = 0;
        for (int i = 0; i < b.n; i++)
            rsum += b.reward[i];
        char tb_field[600] = "";
        if (tb) {
            for (int i = 0, to = 0; tev && i < b.n; to += b.plen[i] + b.rlen[i], i++)
                tgfn_eval_observe(tev, b.prompt[i], b.tokens + to + b.plen[i], b.rlen[i]);
            char evf[400] = "", modes[32] = "";
            if (tev && c->eval_every > 0 && cnt.step % c->eval_every == 0)
                tb_eval_fields(tev, m, &logz, tok, tgt, &cnt, evf, sizeof evf);
            if (tev)
                snprintf(modes, sizeof modes, "\"modes_found\": %d, ", tgfn_eval_modes_found(tev));
            snprintf(tb_field, sizeof tb_field,
                     "%s%s\"logz\": %.5f, \"logr_mean\": %.5f, \"resid_abs_mean\": %.5f, "
                     "\"stale_mean\": %.6f, ",
                     evf, modes, logz.ps.w[0], c->reward_beta * (b.n ? rsum / b.n : 0.0),
                     b.n ? glob[6] / b.n : 0.0, glob[4] > 0 ? glob[5] / glob[4] : 0.0);
        }
        hub_counters_t hc = learner_hub_totals(hub, &cnt.hub_prev);
        double el = rlx_now() - t0, tok_n = glob[4] > 0 ? glob[4] : 1;
        char eval_field[48] = "";
        if (evaluated)
            snprintf(eval_field, sizeof eval_field, "\"eval_accuracy\": %.4f, ", last_eval);
        fprintf(metrics,
                "{\"step\": %lld, \"samples\": %lld, \"trajectories\": %lld, \"trained\": %lld, "
                "\"reward_mean\": %.5f, %s%s\"lag_mean\": %.3f, \"lag_max\": %d, "
                "\"dropped_stale\": %lld, "
                "\"dropped_invalid\": %lld, \"samples_per_s\": %.2f, \"loss\": %.6f, "
                "\"kl\": %.6f, \"clip_frac\": %.4f, \"ratio_mean\": %.5f, \"grad_norm\": %.4f, "
                "\"lr\": %.3e, \"sampled\": %llu, \"queue_work\": %u, \"queue_score\": %u, "
                "\"queue_learner\": %u, \"actors\": %u, \"reward_workers\": %u, "
                "\"policy_version\": %lld, \"elapsed_s\": %.2f}\n",
                (long long)cnt.step, (long long)cnt.consumed, (long long)cnt.consumed,
                (long long)cnt.trained, b.n ? rsum / b.n : 0.0, eval_field, tb_field,
                b.n ? lag_sum / b.n : 0.0, lag_max, (long long)cnt.dropped_stale,
                (long long)(cnt.dropped_invalid + (int64_t)hc.dropped_invalid),
                (cnt.consumed - samples_at_start) / (el > 0 ? el : 1), glob[0], glob[1] / tok_n,
                glob[2] / tok_n, glob[3] / tok_n, gnorm, lr,
                (unsigned long long)(hub ? hc.sampled : (uint64_t)cnt.replay_read), hc.work_queue,
                hc.score_queue, hc.learner_queue, hc.actors, hc.reward_workers,
                (long long)cnt.step + 1, el);
        fflush(metrics);
        printf("step %lld samples %lld reward %.3f%s lag %.2f/%d loss %.4f %.1f samples/s\n",
               (long long)cnt.step, (long long)cnt.consumed, b.n ? rsum / b.n : 0.0,
               evaluated ? " eval" : "", b.n ? lag_sum / b.n : 0.0, lag_max, glob[0],
               (cnt.consumed - samples_at_start) / (el > 0 ? el : 1));
        if (evaluated)
            printf("eval step %lld accuracy %.4f\n", (long long)cnt.step, last_eval);
        fflush(stdout);
        if (c->ckpt_every > 0 && cnt.step % c->ckpt_every == 0)
            save_checkpoint(m, c->out, &cnt, &hc, tb ? &logz : NULL);
        if (cnt.step >= c->steps || (c->max_samples > 0 && cnt.consumed >= c->max_samples))
            finish = 1; // told to the other ranks with the next batch header
    }

    rc = 0;
    if (rank == 0) {
        // Settle what is in flight first, so that the checkpoint's counters are final.
        hub_counters_t hc = learner_finish_hub(hub, &cnt);
        save_checkpoint(m, c->out, &cnt, &hc, tb ? &logz : NULL);
        if (tev)
            tb_write_eval(metrics, tev, m, &logz, tok, tgt, &cnt, 1, rlx_now() - t0);
        if (eval_sampler && !learner_stop_signal()) {
            last_eval = evaluate(m, eval_sampler, smax, &evalp, eval_scorer, c);
            fprintf(metrics, "{\"step\": %lld, \"samples\": %lld, \"eval_accuracy\": %.4f, "
                             "\"final\": true, \"elapsed_s\": %.2f}\n",
                    (long long)cnt.step, (long long)cnt.consumed, last_eval, rlx_now() - t0);
            printf("eval step %lld accuracy %.4f (final)\n", (long long)cnt.step, last_eval);
        }
        // Everything sampled is trained on or dropped for a reason.
        learner_write_summary(metrics, &cnt, &hc, hub != NULL, rlx_now() - t0);
    }
cleanup:
    hub_stop(&hub);
    if (zctx)
        zmq_ctx_term(zctx);
    trajlog_close(&replay);
    wire_destroy(&w);
    if (metrics)
        fclose(metrics);
    sampler_destroy(&eval_sampler);
    free_prompts(&evalp);
    batch_free(&b);
    free(samples);
    free(tok);
    free(tgt);
    gpt_destroy(&m);
    gpt_destroy(&ref);
    tgfn_eval_destroy(&tev);
    tgfn_task_free(&task);
    tgfn_logz_free(&logz);
    free(tsamples);
    return rc;
}
