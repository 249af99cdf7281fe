// learner.c: the one learner loop (see learner.h), whatever the objective (objective.h):
// rank 0 collects a batch from the hub or a trajectory log, the objective broadcasts it, every
// rank steps (forward, backward, all-reduce, update; a non-finite step is skipped on every
// rank), and rank 0 publishes finite weights, evaluates, logs a metrics line and checkpoints.
#include "learner.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "gflownet.h"
#include "layers.h"
#include "learner_common.h"
#include "objective.h"
#include "trajlog.h"
#include "util.h"
#include "wire.h"

learner_config_t learner_defaults(void) {
    learner_config_t c = {0};
    c.hub = hub_defaults();
    c.kind = KIND_TEXT;
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
    c.gfn_objective = GFN_LOSS_TB;
    c.gfn_lambda = 0.9f;
    c.logz_lr = 0.1f;
    c.gfn_hidden = 256;
    c.gfn_blocks = 1;
    c.diff_objective = DIFF_OBJ_DAGKL;
    c.drl = drl_defaults();
    c.flow_hidden = 128;
    c.flow_blocks = 2;
    c.flow_time_dim = 16;
    c.reward_beta = 1.0f;
    c.new_gpt = (gpt_config_t){.n_layer = 2, .n_embd = 64, .n_head = 4, .vocab = GPT_VOCAB};
    return c;
}

void learner_gflownet_defaults(learner_config_t *c, const unsigned char *given,
                               const char *scorer) {
    if (!given['B'])
        c->batch = 16;
    if (!given['S'])
        c->steps = (long long)1 << 40; // --max-samples is the natural limit here
    if (!given['k'])
        c->hub.samples_per_prompt = 16;
    if (!given['a'])
        c->opt.lr = 1e-3f;
    if (!given['2'])
        c->opt.beta2 = 0.999f;
    if (!given['c'])
        c->hub.scorer = scorer;
    if (!given['F'])
        c->hub.max_in_flight = 2 * c->batch;
    if (!given['Q'])
        c->hub.max_learner_queue = 2 * c->batch;
}

const objective_ops_t *objective_pick(kind_t kind, const char *name) {
    switch (kind) {
    case KIND_TEXT:
        if (!name || !strcmp(name, "rl"))
            return &objective_rl;
        return !strcmp(name, "tb") ? &objective_text_tb : NULL;
    case KIND_GFLOW: // tb, db, subtb: learner_config_t.gfn_objective
        return !name || !strcmp(name, "tb") || !strcmp(name, "db") || !strcmp(name, "subtb")
                   ? &objective_gfn
                   : NULL;
    case KIND_DIFFUSION: // ddpo, dag, dagkl: learner_config_t.diff_objective
        return !name || !strcmp(name, "ddpo") || !strcmp(name, "dag") || !strcmp(name, "dagkl")
                   ? &objective_diffusion
                   : NULL;
    default:
        return NULL;
    }
}

// Rank 0: the objective's weights as policy `version`, if every parameter is finite (else
// counted in guard->unpublished). 0, or -1.
static int publish(const objective_ops_t *ops, void *obj, hub_t *hub, uint64_t version,
                   learner_guard_t *guard) {
    char err[512] = "";
    if (!ops->finite(obj)) {
        guard->unpublished++;
        fprintf(stderr, "rlx-learner: weights v%llu not published: a parameter is not finite\n",
                (unsigned long long)version);
        return -1;
    }
    size_t len = 0;
    void *blob = ops->weights(obj, &len, err, sizeof err);
    int rc = blob ? hub_publish_weights(hub, version, blob, len) : -1;
    if (rc != 0)
        fprintf(stderr, "rlx-learner: publishing weights v%llu failed%s%s\n",
                (unsigned long long)version, blob ? "" : ": ", err);
    free(blob);
    return rc;
}

// Rank 0: the checkpoint with the hub's totals hc as the earlier runs' counters of a resume,
// if every parameter is finite (else counted in guard->unpublished; the last one stands).
static void checkpoint(const objective_ops_t *ops, void *obj, const learner_counts_t *cnt,
                       const hub_counters_t *hc, learner_guard_t *guard) {
    if (!ops->finite(obj)) {
        guard->unpublished++;
        fprintf(stderr,
                "rlx-learner: checkpoint of step %lld not written: a parameter is not "
                "finite\n",
                (long long)cnt->step);
        return;
    }
    learner_counts_t k = *cnt;
    k.hub_prev = *hc;
    ops->save(obj, &k);
}

// Rank 0: a metrics line of the objective's evaluation only (start and end of the run).
static void write_eval(const objective_ops_t *ops, void *obj, FILE *metrics,
                       const learner_counts_t *cnt, objective_eval_t phase, double elapsed) {
    if (!ops->evaluate)
        return;
    json_object *line = json_object_new_object();
    learner_json_int(line, "step", cnt->step);
    if (!ops->evaluate(obj, cnt, phase, line)) {
        json_object_put(line);
        return;
    }
    if (phase == OBJ_EVAL_FINAL)
        learner_json_bool(line, "final", 1);
    learner_json_num(line, "elapsed_s", elapsed, "%.2f");
    learner_json_write(metrics, line);
}

// Rank 0: the metrics line of a step (and, for print_steps objectives, a line on stdout).
static void write_step(const objective_ops_t *ops, void *obj, FILE *metrics,
                       const learner_counts_t *cnt, const learner_admit_t *adm,
                       learner_guard_t *guard, const objective_step_t *st, hub_t *hub, int n,
                       double samples_per_s, double el) {
    hub_counters_t hc = learner_hub_totals(hub, &cnt->hub_prev);
    json_object *line = json_object_new_object(), *v;
    learner_json_int(line, "step", cnt->step);
    learner_json_int(line, "samples", cnt->consumed);
    learner_json_int(line, "trajectories", cnt->consumed);
    learner_json_int(line, "trained", cnt->trained);
    ops->metrics(obj, cnt, st, line);
    int evaluated = ops->evaluate && ops->evaluate(obj, cnt, OBJ_EVAL_STEP, line);
    learner_json_num(line, "lag_mean", n ? adm->lag_sum / n : 0.0, "%.3f");
    learner_json_int(line, "lag_max", adm->lag_max);
    learner_json_int(line, "dropped_stale", cnt->dropped_stale);
    learner_json_int(line, "dropped_invalid", cnt->dropped_invalid + (int64_t)hc.dropped_invalid);
    learner_json_num(line, "samples_per_s", samples_per_s, "%.2f");
    learner_json_int(line, "skipped_steps", guard->skipped_steps);
    learner_json_int(line, "sampled", (int64_t)(hub ? hc.sampled : (uint64_t)cnt->replay_read));
    learner_json_int(line, "queue_work", hc.work_queue);
    learner_json_int(line, "queue_score", hc.score_queue);
    learner_json_int(line, "queue_learner", hc.learner_queue);
    learner_json_int(line, "actors", hc.actors);
    learner_json_int(line, "reward_workers", hc.reward_workers);
    learner_json_int(line, "policy_version", cnt->step + 1);
    learner_json_num(line, "elapsed_s", el, "%.2f");
    double reward =
        json_object_object_get_ex(line, "reward_mean", &v) && v ? json_object_get_double(v) : 0.0;
    if (hub) { // what observers see in RunStatus (the hub adds its own counters)
        Rlx__RunStatus rs = RLX__RUN_STATUS__INIT;
        rs.step = (uint64_t)cnt->step;
        rs.samples = (uint64_t)cnt->trained;
        rs.reward_mean = (float)reward;
        if (json_object_object_get_ex(line, "eval_accuracy", &v) && v) {
            guard->last_eval = (float)json_object_get_double(v);
            guard->has_eval = 1;
        }
        rs.eval_accuracy = guard->last_eval;
        rs.has_eval = guard->has_eval;
        rs.lag_mean = (float)(n ? adm->lag_sum / n : 0.0);
        rs.lag_max = (uint32_t)adm->lag_max;
        rs.dropped_stale = (uint64_t)cnt->dropped_stale;
        rs.samples_per_s = (float)samples_per_s;
        if (hub_report(hub, &rs) != 0)
            fprintf(stderr, "rlx-learner: step %lld: the hub did not take the run status\n",
                    (long long)cnt->step);
    }
    learner_json_write(metrics, line);
    if (ops->print_steps) {
        printf("step %lld samples %lld reward %.3f%s lag %.2f/%d loss %.4f %.1f samples/s%s\n",
               (long long)cnt->step, (long long)cnt->consumed, reward, evaluated ? " eval" : "",
               n ? adm->lag_sum / n : 0.0, adm->lag_max, st->loss, samples_per_s,
               st->updated ? "" : " (skipped: not finite)");
        fflush(stdout);
    }
}

// Rank 0: the metrics file, the trajectory source (replay log or hub) and the first weights.
static int open_run(const learner_config_t *c, const objective_ops_t *ops, void *obj,
                    const learner_counts_t *cnt, learner_guard_t *guard, FILE **metrics,
                    learner_source_t *src, void **zctx) {
    char err[512], path[4096];
    mkdir(c->out, 0755);
    if (c->metrics)
        snprintf(path, sizeof path, "%s", c->metrics);
    else
        snprintf(path, sizeof path, "%s/metrics.jsonl", c->out);
    if (!(*metrics = fopen(path, c->resume ? "a" : "w"))) {
        fprintf(stderr, "rlx-learner: cannot write metrics %s: %s\n", path, strerror(errno));
        return -1;
    }
    // Replayed logs may come from any run: no run id to check then.
    src->w = wire_new("learner", 0, c->replay ? NULL : c->hub.run_id);
    src->take_timeout_s = c->take_timeout_s;
    if (c->replay) {
        if (!(src->replay = trajlog_open_read(c->replay, err, sizeof err))) {
            fprintf(stderr, "rlx-learner: %s\n", err);
            return -1;
        }
        return 0;
    }
    *zctx = zmq_ctx_new();
    if (!(src->hub = hub_start(&c->hub, *zctx)))
        return -1;
    // Policy version v = the weights after v-1 optimizer steps (0 means "none").
    return publish(ops, obj, src->hub, (uint64_t)cnt->step + 1, guard);
}

int learner_run(const learner_config_t *cin) {
    learner_config_t cc = *cin, *c = &cc; // the objective may complete the hub's fields
    const objective_ops_t *ops = objective_pick(c->kind, c->objective);
    int rank = 0, nranks = 1, rc = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (!ops) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: no objective '%s' for %s trajectories\n",
                    c->objective ? c->objective : "(default)", kind_name(c->kind));
        return 2;
    }
    layers_set_threads(c->threads);
    learner_signals_install();
    learner_counts_t cnt = {0};
    learner_guard_t guard = {0};
    learner_source_t src = {0};
    FILE *metrics = NULL;
    void *zctx = NULL;
    void *obj = ops->create(c, &cnt, &rc);
    if (!obj)
        return rc;
    rc = 1;
    int ok = rank != 0 || open_run(c, ops, obj, &cnt, &guard, &metrics, &src, &zctx) == 0;
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!ok)
        goto cleanup;

    double t0 = rlx_now();
    int64_t samples_at_start = cnt.consumed;
    if (rank == 0)
        write_eval(ops, obj, metrics, &cnt, OBJ_EVAL_START, 0.0);
    int stop = 0, finish = 0; // finish: rank 0 reached its limits; tells the others next
    while (!stop) {
        // Next batch: rank 0 collects at least `batch` trainable trajectories (whole groups).
        learner_admit_t adm = {
            .step = cnt.step, .max_lag = c->replay ? -1 : c->max_lag, .cnt = &cnt};
        int signalled = learner_stop_any_rank();
        if (rank == 0) {
            const int *have = ops->batch_begin(obj, &adm);
            if (!finish)
                learner_collect(&src, c->batch, have, &cnt, ops->add, obj);
            stop = finish || signalled || learner_stop_signal() || *have < c->batch;
            if (stop)
                cnt.dropped_shutdown += *have; // a partial batch is not trained on
        }
        ops->bcast(obj, &stop);
        if (stop)
            break;
        int n = ops->batch_n(obj);

        // Step: forward, backward, all-reduce, update (or skip a non-finite one).
        objective_step_t st = {0};
        if (ops->step(obj, cnt.step, &st) != 0) {
            if (rank == 0)
                cnt.dropped_invalid += n;
            break;
        }
        if (!st.updated) {
            guard.skipped_steps++;
            if (rank == 0)
                fprintf(stderr, "rlx-learner: step %lld skipped: loss %g, gradient norm %g\n",
                        (long long)cnt.step + 1, st.loss, (double)st.grad_norm);
        }
        cnt.step++;
        cnt.trained += n;
        if (rank != 0)
            continue;

        // Rank 0: publish, evaluate and log, checkpoint.
        if (src.hub && c->publish_every > 0 && cnt.step % c->publish_every == 0)
            publish(ops, obj, src.hub, (uint64_t)cnt.step + 1, &guard);
        double el = rlx_now() - t0;
        write_step(ops, obj, metrics, &cnt, &adm, &guard, &st, src.hub, n,
                   (cnt.consumed - samples_at_start) / (el > 0 ? el : 1), el);
        if (c->ckpt_every > 0 && cnt.step % c->ckpt_every == 0) {
            hub_counters_t hc = learner_hub_totals(src.hub, &cnt.hub_prev);
            checkpoint(ops, obj, &cnt, &hc, &guard);
        }
        if (cnt.step >= c->steps || (c->max_samples > 0 && cnt.consumed >= c->max_samples))
            finish = 1; // told to the other ranks with the next batch header
    }

    rc = 0;
    if (rank == 0) {
        // Settle what is in flight first, so that the checkpoint's counters are final.
        hub_counters_t hc = learner_finish_hub(src.hub, &cnt);
        checkpoint(ops, obj, &cnt, &hc, &guard);
        write_eval(ops, obj, metrics, &cnt, OBJ_EVAL_FINAL, rlx_now() - t0);
        // Everything sampled is trained on or dropped for a reason.
        learner_write_summary(metrics, &cnt, &hc, &guard, src.hub != NULL, rlx_now() - t0);
    }
cleanup:
    hub_stop(&src.hub);
    if (zctx)
        zmq_ctx_term(zctx);
    trajlog_close(&src.replay);
    wire_destroy(&src.w);
    if (metrics)
        fclose(metrics);
    ops->destroy(&obj);
    return rc;
}
