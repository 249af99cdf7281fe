// gflow_learner.c: the GFlowNet learner loop (see gflow_learner.h).
#include "gflow_learner.h"

#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "gflownet.h"
#include "gfn_ckpt.h"
#include "gfn_traj.h"
#include "layers.h"
#include "learner_common.h"
#include "util.h"

// The learner's grid: the evaluator holds H^D states (several arrays of them).
#define GFLOW_MAX_STATES (1 << 24)

// Adds one TrajectoryBatch's trajectories to the training batch (rank 0).
typedef struct {
    const gfn_grid_t *g;   // environment
    gfn_batch_t *b;        // the batch being filled
    float *reward;         // (b->max_traj) R(x) of each
    int64_t step;          // steps taken
    int max_lag;           // drop older than this many versions (-1: never)
    learner_counts_t *cnt; // counters
    double lag_sum;        // policy lag sum of the batch
    int lag_max;           // and its maximum
} gflow_add_t;

static void gflow_add(void *ctx, const Rlx__Envelope *env) {
    gflow_add_t *a = ctx;
    const Rlx__TrajectoryBatch *tb = env->trajectory_batch;
    for (size_t i = 0; i < tb->n_trajectories; i++) {
        const Rlx__Trajectory *t = tb->trajectories[i];
        a->cnt->consumed++;
        const Rlx__GflowTrajectory *x =
            t->kind_case == RLX__TRAJECTORY__KIND_GFLOW ? t->gflow : NULL;
        if (!x || gfn_traj_check(a->g, x) || !(t->reward > 0) || !isfinite(t->reward) ||
            a->b->n == a->b->max_traj) {
            a->cnt->dropped_invalid++;
            continue;
        }
        if (!learner_admit_lag(a->cnt, a->step, t->policy_version, a->max_lag, &a->lag_sum,
                               &a->lag_max))
            continue;
        a->reward[a->b->n] = t->reward;
        gfn_traj_append(a->g, x, logf(t->reward), a->b);
    }
}

// Rank 0's batch (and the stop decision) to every rank.
static void bcast_batch(gfn_batch_t *b, int *stop, int rank) {
    int hdr[2] = {b->n, *stop};
    MPI_Bcast(hdr, 2, MPI_INT, 0, MPI_COMM_WORLD);
    if (rank != 0) {
        b->n = hdr[0];
        *stop = hdr[1];
    }
    if (b->n == 0)
        return;
    int rows = b->n * b->max_len;
    MPI_Bcast(b->len, b->n, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->states, rows, MPI_INT32_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->actions, rows, MPI_INT32_T, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logpf, rows, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logpb, rows, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(b->logr, b->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

// Rank 0's parameters and optimizer state (net and log Z) to every rank.
static void bcast_policy(gfn_policy_t *p) {
    paramset_t *ps = &p->net->ps;
    MPI_Bcast(ps->w, (int)ps->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(ps->m, (int)ps->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(ps->v, (int)ps->n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Bcast(p->logz_buf, 4, MPI_FLOAT, 0, MPI_COMM_WORLD);
    int64_t steps[2] = {ps->step, p->logz.step};
    MPI_Bcast(steps, 2, MPI_INT64_T, 0, MPI_COMM_WORLD);
    ps->step = steps[0];
    p->logz.step = steps[1];
}

static int publish(hub_t *hub, const gfn_policy_t *p, const char *dir, uint64_t version) {
    char err[256];
    size_t len = 0;
    void *blob = gfn_ckpt_blob(p, dir, &len, err, sizeof err);
    int rc = blob ? hub_publish_weights(hub, version, blob, len) : -1;
    if (rc != 0)
        fprintf(stderr, "rlx-learner: publishing weights v%llu failed%s%s\n",
                (unsigned long long)version, blob ? "" : ": ", blob ? "" : err);
    free(blob);
    return rc;
}

static int save_checkpoint(const gfn_policy_t *p, const char *dir, const learner_counts_t *cnt,
                           const hub_counters_t *hc) {
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/learner.ckpt", dir);
    learner_state_t st = {.magic = "RLXLRN3", .counts = *cnt};
    st.counts.hub_prev = *hc;
    if (gfn_ckpt_save(p, path, 1, &st, sizeof st, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-learner: checkpoint not written: %s\n", err);
        return -1;
    }
    return 0;
}

static const char *objective_name(int k) {
    return k == GFN_LOSS_DB ? "db" : k == GFN_LOSS_SUBTB ? "subtb" : "tb";
}

// Evaluates p exactly: the metrics fields into buf (each followed by ", ") and a line on
// stdout.
static void eval_fields(gfn_evaluator_t *ev, gfn_policy_t *p, const learner_counts_t *cnt,
                        char *buf, size_t len) {
    gfn_eval_t e;
    gfn_evaluate(ev, p, &e);
    snprintf(buf, len,
             "\"l1\": %.6f, \"l1_mean\": %.8f, \"logz_err\": %.5f, \"mode_mass\": %.5f, "
             "\"modes_high\": %d, \"n_modes\": %d, ",
             e.l1, e.l1_mean, e.logz_err, e.mode_mass, e.modes_high, ev->n_modes);
    printf("eval step %lld trajectories %lld L1 %.5f modes found %d/%d logZ err %.4f\n",
           (long long)cnt->step, (long long)cnt->consumed, e.l1, e.modes_visited, ev->n_modes,
           e.logz_err);
    fflush(stdout);
}

// An evaluation-only line (start and end of the run).
static void write_eval(FILE *metrics, gfn_evaluator_t *ev, gfn_policy_t *p,
                       const learner_counts_t *cnt, int final, double elapsed) {
    char f[320];
    eval_fields(ev, p, cnt, f, sizeof f);
    fprintf(metrics,
            "{\"step\": %lld, \"trajectories\": %lld, %s\"modes\": %d, \"logz\": %.5f, "
            "%s\"elapsed_s\": %.2f}\n",
            (long long)cnt->step, (long long)cnt->consumed, f, ev->modes_visited, p->logz.w[0],
            final ? "\"final\": true, " : "", elapsed);
    fflush(metrics);
}

int gflow_learner_run(const learner_config_t *c) {
    int rank = 0, nranks = 1, rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    layers_set_threads(c->threads);
    learner_signals_install();
    int D = c->hub.gflow_ndim, H = c->hub.gflow_height;
    double n_states = pow((double)H, (double)D);
    if (strcmp(c->gflow_env, "hypergrid") != 0 || D < 1 || D > 64 || H < 2 ||
        n_states > GFLOW_MAX_STATES) {
        if (rank == 0)
            fprintf(stderr,
                    "rlx-learner: --env hypergrid with --ndim D >= 1 and --height H >= 2 "
                    "and H^D <= %d (got env %s, D %d H %d)\n",
                    GFLOW_MAX_STATES, c->gflow_env, D, H);
        return 2;
    }
    gfn_grid_t g = gfn_grid(D, H);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.hidden = c->gflow_hidden > 0 ? c->gflow_hidden : pc.hidden;
    pc.n_blocks = c->gflow_blocks >= 0 ? c->gflow_blocks : pc.n_blocks;
    pc.state_flow = c->gflow_objective != GFN_LOSS_TB;
    int k = c->hub.samples_per_prompt > 0 ? c->hub.samples_per_prompt : 1;
    int cap_all = c->batch + k * c->hub.prompts_per_item; // rank 0 may take a group more
    int cap_rank = (cap_all + nranks - 1) / nranks + 1;
    gfn_policy_t *p = gfn_policy_new(&g, &pc, cap_rank, c->seed);
    gfn_batch_t *b = gfn_batch_new(&g, cap_all);
    float *reward = rlx_xcalloc((size_t)cap_all, sizeof *reward, "batch rewards");
    gfn_evaluator_t *ev = NULL;
    hub_t *hub = NULL;
    void *zctx = NULL;
    FILE *metrics = NULL;
    learner_counts_t cnt = {0};
    char err[512], path[4096];
    adamw_config_t on = c->opt, oz = c->opt;
    oz.lr = c->logz_lr;
    oz.weight_decay = 0;
    gfn_loss_config_t lc = {.kind = (gfn_loss_kind_t)c->gflow_objective, .lambda = c->gflow_lambda};

    int ok = 1;
    if (rank == 0) {
        mkdir(c->out, 0755);
        snprintf(path, sizeof path, "%s/learner.ckpt", c->out);
        struct stat stt;
        if (c->resume && stat(path, &stt) == 0) {
            ckpt_t *ck = ckpt_read(path, err, sizeof err);
            uint64_t n = 0;
            const learner_state_t *st = ck ? ckpt_section(ck, "extra", &n) : NULL;
            if (!ck || gfn_ckpt_load(p, ck, err, sizeof err) != 0) {
                fprintf(stderr, "rlx-learner: cannot resume from %s: %s\n", path, err);
                ok = 0;
            } else if (st && n == sizeof *st && !memcmp(st->magic, "RLXLRN3", 8)) {
                cnt = st->counts;
                printf("rlx-learner: resumed from %s at step %lld\n", path, (long long)cnt.step);
            }
            ckpt_destroy(&ck);
        }
        if (c->metrics)
            snprintf(path, sizeof path, "%s", c->metrics);
        else
            snprintf(path, sizeof path, "%s/metrics.jsonl", c->out);
        if (ok && !(metrics = fopen(path, c->resume ? "a" : "w"))) {
            fprintf(stderr, "rlx-learner: cannot write metrics %s: %s\n", path, strerror(errno));
            ok = 0;
        }
        if (ok) {
            zctx = zmq_ctx_new();
            hub = hub_start(&c->hub, zctx);
            ok = hub && publish(hub, p, c->out, (uint64_t)cnt.step + 1) == 0;
        }
        if (ok) {
            ev = gfn_evaluator_new(&g);
            printf("rlx-learner: %d rank(s), gflownet hypergrid D=%d H=%d (%lld states, %d "
                   "modes), %s, mlp hidden %d blocks %d (%zu parameters), batch %d, lr %g, "
                   "log Z lr %g\n",
                   nranks, D, H, (long long)ev->n_states, ev->n_modes,
                   objective_name(c->gflow_objective), pc.hidden, pc.n_blocks, p->net->ps.n,
                   c->batch, on.lr, oz.lr);
            fflush(stdout);
        }
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto cleanup;
    bcast_policy(p);
    MPI_Bcast(&cnt.step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);

    double t0 = rlx_now();
    int64_t consumed_at_start = cnt.consumed;
    if (rank == 0)
        write_eval(metrics, ev, p, &cnt, 0, 0.0);
    int stop = 0, finish = 0;
    learner_source_t src = {.hub = hub, .take_timeout_s = c->take_timeout_s};
    while (!stop) {
        b->n = 0;
        gflow_add_t ga = {.g = &g,
                          .b = b,
                          .reward = reward,
                          .step = cnt.step,
                          .max_lag = c->max_lag,
                          .cnt = &cnt};
        int signalled = learner_stop_any_rank();
        if (rank == 0) {
            if (!finish)
                learner_collect(&src, c->batch, &b->n, &cnt, gflow_add, &ga);
            stop = finish || signalled || learner_stop_signal() || b->n < c->batch;
            if (stop && b->n > 0) {
                cnt.dropped_shutdown += b->n; // a partial batch is not trained on
                b->n = 0;
            }
        }
        bcast_batch(b, &stop, rank);
        if (stop)
            break;

        // This rank's shard; its mean loss weighted by its share of the global mean's terms.
        int lo = (int)((int64_t)b->n * rank / nranks),
            hi = (int)((int64_t)b->n * (rank + 1) / nranks);
        int64_t terms = 0, mine = 0;
        for (int i = 0; i < b->n; i++) {
            int t = c->gflow_objective == GFN_LOSS_DB ? b->len[i] : 1;
            terms += t;
            mine += i >= lo && i < hi ? t : 0;
        }
        gfn_batch_t shard = *b;
        size_t at = (size_t)lo * b->max_len;
        shard.n = hi - lo;
        shard.len += lo;
        shard.states += at;
        shard.actions += at;
        shard.logpf += at;
        shard.logpb += at;
        shard.logr += lo;
        paramset_zero_grad(&p->net->ps);
        paramset_zero_grad(&p->logz);
        gfn_stats_t st = {0};
        double wgt = terms ? (double)mine / (double)terms : 0;
        if (hi > lo) {
            gfn_loss(p, &shard, &lc, &st);
            if (nranks > 1) {
                for (size_t j = 0; j < p->net->ps.n; j++)
                    p->net->ps.g[j] *= (float)wgt;
                p->logz.g[0] *= (float)wgt;
            }
        }
        if (nranks > 1) {
            MPI_Allreduce(MPI_IN_PLACE, p->net->ps.g, (int)p->net->ps.n, MPI_FLOAT, MPI_SUM,
                          MPI_COMM_WORLD);
            MPI_Allreduce(MPI_IN_PLACE, p->logz.g, 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
        float gnorm = adamw_step(&p->net->ps, &on);
        adamw_step(&p->logz, &oz);
        double loc[2] = {st.loss * wgt, st.max_stale}, glob[2] = {0, 0};
        MPI_Reduce(&loc[0], &glob[0], 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
        MPI_Reduce(&loc[1], &glob[1], 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        cnt.step++;
        cnt.trained += b->n;
        if (rank != 0)
            continue;

        // Rank 0: modes seen, publish, evaluate, log, checkpoint.
        gfn_evaluator_observe(ev, b);
        if (c->publish_every > 0 && cnt.step % c->publish_every == 0)
            publish(hub, p, c->out, (uint64_t)cnt.step + 1);
        double rsum = 0, lsum = 0;
        for (int i = 0; i < b->n; i++) {
            rsum += reward[i];
            lsum += b->len[i];
        }
        char evf[320] = "";
        if (c->eval_every > 0 && cnt.step % c->eval_every == 0)
            eval_fields(ev, p, &cnt, evf, sizeof evf);
        hub_counters_t hc = learner_hub_totals(hub, &cnt.hub_prev);
        double el = rlx_now() - t0;
        fprintf(metrics,
                "{\"step\": %lld, \"trajectories\": %lld, \"samples\": %lld, \"trained\": %lld, %s"
                "\"reward_mean\": %.5f, \"len_mean\": %.3f, \"loss\": %.6f, \"logz\": %.5f, "
                "\"max_stale\": %.4f, \"modes\": %d, \"lag_mean\": %.3f, \"lag_max\": %d, "
                "\"dropped_stale\": %lld, \"dropped_invalid\": %lld, \"samples_per_s\": %.2f, "
                "\"grad_norm\": %.4f, \"sampled\": %llu, \"queue_work\": %u, "
                "\"queue_score\": %u, \"queue_learner\": %u, \"actors\": %u, "
                "\"reward_workers\": %u, \"policy_version\": %lld, \"elapsed_s\": %.2f}\n",
                (long long)cnt.step, (long long)cnt.consumed, (long long)cnt.consumed,
                (long long)cnt.trained, evf, rsum / b->n, lsum / b->n, glob[0], p->logz.w[0],
                glob[1], ev->modes_visited, ga.lag_sum / b->n, ga.lag_max,
                (long long)cnt.dropped_stale,
                (long long)(cnt.dropped_invalid + (int64_t)hc.dropped_invalid),
                (cnt.consumed - consumed_at_start) / (el > 0 ? el : 1), gnorm,
                (unsigned long long)hc.sampled, hc.work_queue, hc.score_queue, hc.learner_queue,
                hc.actors, hc.reward_workers, (long long)cnt.step + 1, el);
        fflush(metrics);
        if (c->ckpt_every > 0 && cnt.step % c->ckpt_every == 0)
            save_checkpoint(p, c->out, &cnt, &hc);
        if (cnt.step >= c->steps || (c->max_samples > 0 && cnt.consumed >= c->max_samples))
            finish = 1; // told to the other ranks with the next batch header
    }

    rc = 0;
    if (rank == 0) {
        hub_counters_t hc = learner_finish_hub(hub, &cnt);
        save_checkpoint(p, c->out, &cnt, &hc);
        write_eval(metrics, ev, p, &cnt, 1, rlx_now() - t0);
        learner_write_summary(metrics, &cnt, &hc, 1, rlx_now() - t0);
    }
cleanup:
    hub_stop(&hub);
    if (zctx)
        zmq_ctx_term(zctx);
    if (metrics)
        fclose(metrics);
    gfn_evaluator_destroy(&ev);
    gfn_batch_destroy(&b);
    gfn_policy_destroy(&p);
    free(reward);
    return rc;
}
