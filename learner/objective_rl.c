// objective_rl.c: the text policy gradient behind objective.h (rl.h: REINFORCE with a
// leave-one-out baseline, PPO-clipped ratios, optional KL to the initial policy). Rank 0
// computes the advantages of the whole batch; each rank the loss of its shard; one in-place
// all-reduce of the gradient; AdamW in lockstep. Evaluation: the mean reward ("exact":
// accuracy) of one sample per held-out prompt (--eval-prompts), drawn as the actors draw.
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "objective.h"
#include "objective_text.h"
#include "rl.h"
#include "sampler.h"
#include "scorers.h"
#include "util.h"

// Held-out prompts read from a TSV file.
typedef struct {
    int n;         // prompts
    char **text;   // prompt texts
    char **target; // targets
} prompts_t;

typedef struct {
    text_t t;              // model, batch (first member: the shared text entries take it)
    gpt_t *ref;            // KL reference (the initial policy), or NULL
    rl_sample_t *samples;  // (t.b.cap_n) views of the batch's samples
    prompts_t evalp;       // held-out prompts (rank 0)
    sampler_t *sampler;    // their sampler (rank 0), or NULL: no evaluation
    int smax;              // its batch
    int scorer;            // the evaluation's built-in scorer
    double last_eval;      // the latest accuracy
    double glob[5];        // the step's global loss, kl, clip, ratio (token sums), tokens
    float lr;              // the step's learning rate
} rl_obj_t;

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
    memset(p, 0, sizeof *p);
}

// Mean reward (for "exact": accuracy) of one sample per held-out prompt, drawn like the
// actors draw (same temperature, top-k, length), with a fixed seed so evaluations compare.
static double eval_accuracy(rl_obj_t *o) {
    const learner_config_t *c = o->t.c;
    const hub_config_t *h = &c->hub;
    const prompts_t *p = &o->evalp;
    int smax = o->smax, ctx = o->t.cfg.ctx_len, max_new = h->max_new_tokens;
    int *prompt = rlx_xcalloc((size_t)smax * ctx, sizeof(int), "eval");
    int *off = rlx_xcalloc((size_t)smax + 1, sizeof(int), "eval");
    int *out = rlx_xcalloc((size_t)smax * max_new, sizeof(int), "eval");
    float *lp = rlx_xcalloc((size_t)smax * max_new, sizeof(float), "eval");
    int *len = rlx_xcalloc((size_t)smax, sizeof(int), "eval");
    char resp[4096];
    sample_config_t sc = {.temperature = h->temperature,
                          .top_k = h->top_k,
                          .max_new = max_new,
                          .stop = {GPT_TOK_EOS},
                          .n_stop = 1,
                          .seed = c->seed ^ 0xe7a1,
                          .allowed = o->t.allowed,
                          .n_allowed = o->t.n_allowed};
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
        if (nb == 0 ||
            sampler_generate(o->sampler, prompt, off, nb, &sc, (uint64_t)start, out, lp, len))
            continue;
        for (int i = 0, k = 0; i < b && k < nb; i++, k++) {
            bytetok_decode_response(out + (size_t)k * max_new, len[k], o->t.m->cfg.vocab, resp,
                                    sizeof resp);
            total += scorer_score(o->scorer, p->text[start + i], resp, p->target[start + i]);
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

static void rl_destroy(void **self_p) {
    rl_obj_t *o = *self_p;
    if (!o)
        return;
    text_free(&o->t);
    gpt_destroy(&o->ref);
    free(o->samples);
    sampler_destroy(&o->sampler);
    free_prompts(&o->evalp);
    free(o);
    *self_p = NULL;
}

static void *rl_create(learner_config_t *c, learner_counts_t *cnt, int *rc) {
    rl_obj_t *o = rlx_xcalloc(1, sizeof *o, "objective");
    void *extra = NULL;
    size_t extra_len = 0;
    char err[512];
    *rc = 1;
    o->scorer = -1;
    o->last_eval = NAN;
    if (text_init(&o->t, c, cnt, 0, &extra, &extra_len) != 0)
        goto fail;
    free(extra);
    text_t *t = &o->t;
    int ok = 1;
    if (c->rl.kl_coef > 0) {
        // The reference is the initial policy; on resume, the --init checkpoint.
        if (t->rank == 0) {
            o->ref = gpt_load(c->init ? c->init : t->path, t->cap, err, sizeof err);
            ok = o->ref != NULL;
            if (!ok)
                fprintf(stderr, "rlx-learner: KL reference: %s\n", err);
        }
        MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (!ok)
            goto fail;
        if (t->rank != 0)
            o->ref = gpt_new(&t->cfg, t->cap, 0);
        text_bcast_params(o->ref, 0);
        if (t->n_allowed > 0)
            gpt_set_vocab_mask(o->ref, t->allowed, t->n_allowed);
    }
    o->samples = rlx_xcalloc((size_t)t->b.cap_n, sizeof *o->samples, "batch samples");
    if (t->rank == 0 && c->eval_prompts) {
        o->scorer = scorer_find(c->eval_scorer);
        if (o->scorer < 0) {
            fprintf(stderr, "rlx-learner: unknown eval scorer '%s' (built-in: %s)\n",
                    c->eval_scorer, scorer_list());
            ok = 0;
        } else if (read_prompts(c->eval_prompts, c->eval_n, &o->evalp) != 0) {
            ok = 0;
        } else {
            o->smax = o->evalp.n < 256 ? o->evalp.n : 256;
            o->sampler = sampler_new(t->m, o->smax);
        }
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto fail;
    if (t->rank == 0) {
        printf("rlx-learner: %d rank(s), model L=%d C=%d NH=%d T=%d (%zu parameters), batch "
               "%d, %s\n",
               t->nranks, t->cfg.n_layer, t->cfg.n_embd, t->cfg.n_head, t->cfg.ctx_len,
               t->m->ps.n, c->batch,
               c->replay ? "replaying a trajectory log" : "live actors via the hub");
        fflush(stdout);
    }
    *rc = 0;
    return o;
fail: {
    void *v = o;
    rl_destroy(&v);
    return NULL;
}
}

// Views of the batch's samples for rl.h. Group ids exist on rank 0 only.
static void fill_samples(rl_obj_t *o) {
    const text_batch_t *b = &o->t.b;
    int to = 0, lo = 0;
    for (int i = 0; i < b->n; i++) {
        o->samples[i] = (rl_sample_t){.prompt_len = b->plen[i],
                                      .resp_len = b->rlen[i],
                                      .tokens = b->tokens + to,
                                      .blogp = b->blogp + lo,
                                      .reward = b->reward[i],
                                      .advantage = b->adv[i],
                                      .group = o->t.rank == 0 ? b->group[i] : 0};
        to += b->plen[i] + b->rlen[i];
        lo += b->rlen[i];
    }
}

static void rl_bcast(void *self, int *stop) {
    rl_obj_t *o = self;
    text_batch_t *b = &o->t.b;
    if (o->t.rank == 0 && !*stop) { // leave-one-out advantages over the whole batch
        for (int i = 0; i < b->n; i++)
            b->adv[i] = 0.0f;
        fill_samples(o);
        rl_advantages(o->samples, b->n, o->t.c->rl.normalize);
        for (int i = 0; i < b->n; i++)
            b->adv[i] = o->samples[i].advantage;
    }
    text_bcast_batch(&o->t, stop);
}

static int rl_step(void *self, int64_t step, objective_step_t *out) {
    (void)step;
    rl_obj_t *o = self;
    text_t *t = &o->t;
    gpt_t *m = t->m;
    int n = t->b.n;
    int lo = (int)((int64_t)n * t->rank / t->nranks),
        hi = (int)((int64_t)n * (t->rank + 1) / t->nranks);
    fill_samples(o);
    paramset_zero_grad(&m->ps);
    rl_stats_t st = {0};
    if (hi > lo) {
        rl_loss(m, o->ref, o->samples + lo, hi - lo, (double)n, &t->c->rl, t->tok, t->tgt, &st);
        gpt_backward(m);
    }
    learner_poison_grad(&m->ps, st.loss);
    learner_allreduce(&m->ps);
    o->lr = adamw_lr(&t->c->opt, m->ps.step);
    float gnorm = adamw_grad_norm(&m->ps);
    out->updated = learner_norms_finite(&gnorm, 1);
    if (out->updated)
        gnorm = adamw_step(&m->ps, &t->c->opt);
    double loc[5] = {st.loss, st.kl * st.tokens, st.clip_frac * st.tokens,
                     st.ratio_mean * st.tokens, st.tokens};
    MPI_Reduce(loc, o->glob, 5, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    out->loss = o->glob[0];
    out->grad_norm = gnorm;
    return 0;
}

static void rl_metrics(void *self, const learner_counts_t *cnt, const objective_step_t *st,
                       json_object *line) {
    (void)cnt;
    rl_obj_t *o = self;
    double tok_n = o->glob[4] > 0 ? o->glob[4] : 1;
    text_metrics_head(&o->t, line);
    learner_json_num(line, "loss", st->loss, "%.6f");
    learner_json_num(line, "kl", o->glob[1] / tok_n, "%.6f");
    learner_json_num(line, "clip_frac", o->glob[2] / tok_n, "%.4f");
    learner_json_num(line, "ratio_mean", o->glob[3] / tok_n, "%.5f");
    learner_json_num(line, "grad_norm", st->grad_norm, "%.4f");
    learner_json_num(line, "lr", o->lr, "%.3e");
}

static int rl_evaluate(void *self, const learner_counts_t *cnt, objective_eval_t phase,
                       json_object *line) {
    rl_obj_t *o = self;
    const learner_config_t *c = o->t.c;
    if (!o->sampler)
        return 0;
    if (phase == OBJ_EVAL_STEP && !(c->eval_every > 0 && cnt->step % c->eval_every == 0))
        return 0;
    if (phase == OBJ_EVAL_FINAL && learner_stop_signal())
        return 0;
    o->last_eval = eval_accuracy(o);
    if (phase != OBJ_EVAL_STEP)
        learner_json_int(line, "samples", cnt->consumed);
    learner_json_num(line, "eval_accuracy", o->last_eval, "%.4f");
    if (phase == OBJ_EVAL_START)
        printf("eval step %lld accuracy %.4f (%d held-out prompts)\n", (long long)cnt->step,
               o->last_eval, o->evalp.n);
    else
        printf("eval step %lld accuracy %.4f%s\n", (long long)cnt->step, o->last_eval,
               phase == OBJ_EVAL_FINAL ? " (final)" : "");
    fflush(stdout);
    return 1;
}

static int rl_save(void *self, const learner_counts_t *cnt) {
    return text_save(&((rl_obj_t *)self)->t, cnt, NULL, 0);
}

const objective_ops_t objective_rl = {
    .name = "rl",
    .kind = KIND_TEXT,
    .print_steps = 1,
    .defaults = NULL,
    .create = rl_create,
    .batch_begin = text_batch_begin,
    .add = text_add,
    .bcast = rl_bcast,
    .batch_n = text_batch_n,
    .step = rl_step,
    .finite = text_finite,
    .weights = text_weights,
    .save = rl_save,
    .metrics = rl_metrics,
    .evaluate = rl_evaluate,
    .destroy = rl_destroy,
};
