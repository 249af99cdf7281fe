// objective_text_tb.c: trajectory balance on text behind objective.h (text_gfn.h, --objective
// tb without --env): the gpt is a GFlowNet over responses of hub.max_new_tokens tokens of the
// alphabet (--alphabet), one learned log Z per training prompt (its own paramset, AdamW at
// --logz-lr without decay or clipping, all-reduced like the gpt's gradient), and an exact L1
// evaluation by enumeration (the reward workers' built-in scorer run in-process) instead of
// held-out accuracy. The log Z table is stored after the learner state in learner.ckpt.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "objective.h"
#include "objective_text.h"
#include "scorers.h"
#include "text_gfn.h"
#include "util.h"

typedef struct {
    text_t t;                   // model, batch (first member: the shared text entries take it)
    text_gfn_task_t task;       // prompts, alphabet and length (every rank)
    text_gfn_logz_t logz;       // the log Z table (every rank)
    text_gfn_eval_t *tev;       // the exact evaluator (rank 0), or NULL (not a built-in scorer)
    text_gfn_sample_t *samples; // (t.b.cap_n) views of the batch's samples
    adamw_config_t oz;          // log Z's optimizer
    double glob[7];             // the step's global loss, -, -, ratio, tokens, stale, |residual|
    float lr;                   // the step's learning rate
} tb_obj_t;

// TB on text: the GFlowNet defaults, with its own scorer.
static void tb_defaults(learner_config_t *c, const unsigned char *given) {
    learner_gflownet_defaults(c, given, "seqmodes");
    if (!given['n'])
        c->hub.prompts_per_item = 1;
}

static void tb_destroy(void **self_p) {
    tb_obj_t *o = *self_p;
    if (!o)
        return;
    text_free(&o->t);
    text_gfn_eval_destroy(&o->tev);
    text_gfn_task_free(&o->task);
    text_gfn_logz_free(&o->logz);
    free(o->samples);
    free(o);
    *self_p = NULL;
}

// Rank 0: the exact evaluator from the reward workers' scorer, when it is a built-in one.
static int make_evaluator(tb_obj_t *o) {
    const learner_config_t *c = o->t.c;
    char err[512];
    int sid = scorer_find(c->hub.scorer);
    if (sid < 0 || scorer_is_payload(sid)) {
        printf("rlx-learner: scorer '%s' is not a built-in text scorer (%s): R(y) is not "
               "known here, so no exact L1 and no mode count are reported\n",
               c->hub.scorer, scorer_list());
        return 0;
    }
    o->tev = text_gfn_eval_from_scorer(&o->task, sid, c->reward_beta, err, sizeof err);
    if (!o->tev) {
        fprintf(stderr, "rlx-learner: %s\n", err);
        return -1;
    }
    int64_t modes[8];
    int nm = text_gfn_eval_modes(o->tev, 0, modes, 8), x[256];
    char text[257];
    printf("rlx-learner: TB on text: %d prompt(s), alphabet of %d, length %d, %lld sequences "
           "per prompt; prompt 0: true log Z %.4f, %d modes",
           o->task.n_prompts, o->task.n_alpha, o->task.length, (long long)o->task.n_seqs,
           text_gfn_eval_logz(o->tev, 0), nm);
    for (int i = 0; i < nm && i < 8 && o->task.length <= 256; i++) {
        text_gfn_seq_tokens(&o->task, modes[i], x);
        bytetok_decode_response(x, o->task.length, GPT_VOCAB, text, sizeof text);
        printf("%s%s", i ? " " : ": ", text);
    }
    printf("%s\n", nm > 8 ? " ..." : "");
    return 0;
}

static void *tb_create(learner_config_t *c, learner_counts_t *cnt, int *rc) {
    tb_obj_t *o = rlx_xcalloc(1, sizeof *o, "objective");
    void *extra = NULL;
    size_t extra_len = 0;
    char err[512];
    int rank = 0, ok = 1, allowed[HUB_MAX_ALLOWED];
    *rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    o->oz = c->opt; // log Z's optimizer: its own lr, no decay, no clipping
    o->oz.lr = c->logz_lr;
    o->oz.weight_decay = 0;
    o->oz.grad_clip = 0;
    for (int i = 0; i < c->hub.n_allowed_tokens; i++)
        allowed[i] = (int)c->hub.allowed_tokens[i];
    if (rank == 0 &&
        text_gfn_task_load(&o->task, c->hub.train_prompts, allowed, c->hub.n_allowed_tokens,
                           c->hub.max_new_tokens, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: %s\n", err);
        ok = 0;
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto fail;
    int fresh_ctx = o->task.max_prompt + o->task.length; // rank 0's; only rank 0 reads it
    if (text_init(&o->t, c, cnt, rank == 0 ? fresh_ctx : 1, &extra, &extra_len) != 0)
        goto fail;
    text_t *t = &o->t;
    t->task = &o->task; // rank 0 checks trajectories against it
    if (rank == 0) {
        if (t->cfg.ctx_len < fresh_ctx) {
            fprintf(stderr,
                    "rlx-learner: the model's context %d is shorter than the longest prompt "
                    "(%d tokens) + --max-new %d\n",
                    t->cfg.ctx_len, o->task.max_prompt, o->task.length);
            ok = 0;
        } else if (extra) { // resumed: the log Z table follows the learner state
            text_gfn_logz_init(&o->logz, o->task.n_prompts, 0.0f);
            if (text_gfn_logz_unpack(&o->logz, extra, extra_len, err, sizeof err) != 0) {
                fprintf(stderr, "rlx-learner: cannot resume %s: %s\n", t->path, err);
                ok = 0;
            }
        }
        if (ok && make_evaluator(o) != 0)
            ok = 0;
    }
    free(extra);
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto fail;
    // rank 0's log Z table (zeros unless resumed) to every rank
    int np = o->task.n_prompts;
    MPI_Bcast(&np, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!o->logz.buf)
        text_gfn_logz_init(&o->logz, np, 0.0f);
    MPI_Bcast(o->logz.buf, 4 * np, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(&o->logz.ps.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    o->samples = rlx_xcalloc((size_t)t->b.cap_n, sizeof *o->samples, "batch samples");
    if (rank == 0) {
        printf("rlx-learner: %d rank(s), model L=%d C=%d NH=%d T=%d (%zu parameters), batch "
               "%d, %s\n",
               t->nranks, t->cfg.n_layer, t->cfg.n_embd, t->cfg.n_head, t->cfg.ctx_len, t->m->ps.n,
               c->batch, c->replay ? "replaying a trajectory log" : "live actors via the hub");
        fflush(stdout);
    }
    *rc = 0;
    return o;
fail : {
    void *v = o;
    tb_destroy(&v);
    return NULL;
}
}

static void tb_bcast(void *self, int *stop) {
    tb_obj_t *o = self;
    for (int i = 0; o->t.rank == 0 && i < o->t.b.n; i++)
        o->t.b.adv[i] = 0.0f; // TB has no advantages
    text_bcast_batch(&o->t, stop);
}

static int tb_step(void *self, int64_t step, objective_step_t *out) {
    (void)step;
    tb_obj_t *o = self;
    text_t *t = &o->t;
    const text_batch_t *b = &t->b;
    gpt_t *m = t->m;
    int n = b->n;
    int lo = (int)((int64_t)n * t->rank / t->nranks),
        hi = (int)((int64_t)n * (t->rank + 1) / t->nranks);
    // TB views of the batch's samples: log R = beta * reward.
    for (int i = 0, to = 0, lp = 0; i < n; i++) {
        o->samples[i] = (text_gfn_sample_t){.prompt_len = b->plen[i],
                                            .resp_len = b->rlen[i],
                                            .tokens = b->tokens + to,
                                            .blogp = b->blogp + lp,
                                            .logr = t->c->reward_beta * b->reward[i],
                                            .prompt = b->prompt[i]};
        to += b->plen[i] + b->rlen[i];
        lp += b->rlen[i];
    }
    paramset_zero_grad(&m->ps);
    paramset_zero_grad(&o->logz.ps);
    text_gfn_stats_t st = {0};
    if (hi > lo) {
        text_gfn_loss(m, o->samples + lo, hi - lo, o->logz.ps.w, o->logz.ps.g, (double)n, t->tok,
                      t->tgt, &st);
        gpt_backward(m);
    }
    learner_poison_grad(&m->ps, st.loss);
    learner_allreduce(&m->ps);
    learner_allreduce(&o->logz.ps);
    o->lr = adamw_lr(&t->c->opt, m->ps.step);
    float norms[2] = {adamw_grad_norm(&m->ps), adamw_grad_norm(&o->logz.ps)};
    out->updated = learner_norms_finite(norms, 2);
    if (out->updated) {
        norms[0] = adamw_step(&m->ps, &t->c->opt);
        adamw_step(&o->logz.ps, &o->oz);
    }
    double loc[7] = {st.loss, 0, 0, st.ratio_sum, st.tokens, st.stale_sum, st.resid_abs};
    MPI_Reduce(loc, o->glob, 7, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    out->loss = o->glob[0];
    out->grad_norm = norms[0];
    return 0;
}

static int tb_finite(void *self) {
    tb_obj_t *o = self;
    return text_finite(self) && learner_params_finite(&o->logz.ps);
}

static void tb_metrics(void *self, const learner_counts_t *cnt, const objective_step_t *st,
                       json_object *line) {
    (void)cnt;
    tb_obj_t *o = self;
    const text_batch_t *b = &o->t.b;
    double tok_n = o->glob[4] > 0 ? o->glob[4] : 1;
    for (int i = 0, to = 0; o->tev && i < b->n; to += b->plen[i] + b->rlen[i], i++)
        text_gfn_eval_observe(o->tev, b->prompt[i], b->tokens + to + b->plen[i], b->rlen[i]);
    text_metrics_head(&o->t, line);
    if (o->tev)
        learner_json_int(line, "modes_found", text_gfn_eval_modes_found(o->tev));
    learner_json_num(line, "logz", o->logz.ps.w[0], "%.5f");
    learner_json_num(line, "logr_mean", o->t.c->reward_beta * text_reward_mean(&o->t), "%.5f");
    learner_json_num(line, "resid_abs_mean", b->n ? o->glob[6] / b->n : 0.0, "%.5f");
    learner_json_num(line, "stale_mean", o->glob[4] > 0 ? o->glob[5] / o->glob[4] : 0.0, "%.6f");
    learner_json_num(line, "loss", st->loss, "%.6f");
    learner_json_num(line, "kl", 0.0, "%.6f");
    learner_json_num(line, "clip_frac", 0.0, "%.4f");
    learner_json_num(line, "ratio_mean", o->glob[3] / tok_n, "%.5f");
    learner_json_num(line, "grad_norm", st->grad_norm, "%.4f");
    learner_json_num(line, "lr", o->lr, "%.3e");
}

static int tb_evaluate(void *self, const learner_counts_t *cnt, objective_eval_t phase,
                       json_object *line) {
    tb_obj_t *o = self;
    const learner_config_t *c = o->t.c;
    if (!o->tev)
        return 0;
    if (phase == OBJ_EVAL_STEP && !(c->eval_every > 0 && cnt->step % c->eval_every == 0))
        return 0;
    text_gfn_result_t r;
    text_gfn_evaluate(o->tev, o->t.m, o->logz.ps.w, o->t.tok, o->t.tgt, &r);
    if (phase != OBJ_EVAL_STEP) {
        learner_json_int(line, "samples", cnt->consumed);
        learner_json_int(line, "trajectories", cnt->consumed);
    }
    learner_json_num(line, "l1", r.l1, "%.6f");
    learner_json_num(line, "l1_max", r.l1_max, "%.6f");
    learner_json_num(line, "logz_true", r.logz_true, "%.5f");
    learner_json_num(line, "logz_err", r.logz_err, "%.5f");
    learner_json_num(line, "mode_mass", r.mode_mass, "%.5f");
    learner_json_num(line, "mass", r.mass, "%.6f");
    learner_json_int(line, "n_modes", r.n_modes);
    if (phase != OBJ_EVAL_STEP) {
        learner_json_int(line, "modes_found", text_gfn_eval_modes_found(o->tev));
        learner_json_num(line, "logz", o->logz.ps.w[0], "%.5f");
    }
    printf("eval step %lld trajectories %lld L1 %.5f modes found %d/%d log Z %.4f (true %.4f)\n",
           (long long)cnt->step, (long long)cnt->consumed, r.l1, r.modes_found, r.n_modes,
           o->logz.ps.w[0], r.logz_true);
    fflush(stdout);
    return 1;
}

static int tb_save(void *self, const learner_counts_t *cnt) {
    tb_obj_t *o = self;
    size_t zn = text_gfn_logz_bytes(&o->logz);
    char *z = rlx_xcalloc(1, zn, "log Z table");
    text_gfn_logz_pack(&o->logz, z);
    int rc = text_save(&o->t, cnt, z, zn);
    free(z);
    return rc;
}

const objective_ops_t objective_text_tb = {
    .name = "tb",
    .kind = KIND_TEXT,
    .print_steps = 1,
    .defaults = tb_defaults,
    .create = tb_create,
    .batch_begin = text_batch_begin,
    .add = text_add,
    .bcast = tb_bcast,
    .batch_n = text_batch_n,
    .step = tb_step,
    .finite = tb_finite,
    .weights = text_weights,
    .save = tb_save,
    .metrics = tb_metrics,
    .evaluate = tb_evaluate,
    .destroy = tb_destroy,
};
