// learner_common.c: see learner_common.h.
#include "learner_common.h"

#include <math.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "util.h"

static volatile sig_atomic_t stop_signal = 0;
static volatile sig_atomic_t stop_by_parent = 0; // the signal came from the parent (mpirun)
static void on_signal(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    stop_signal = sig;
    if (si && si->si_pid > 0 && si->si_pid == getppid())
        stop_by_parent = 1;
}

void learner_signals_install(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int learner_stop_signal(void) {
    return (int)stop_signal;
}

int learner_stop_any_rank(void) {
    int any = stop_signal != 0;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

int learner_stop_by_parent(void) {
    return (int)stop_by_parent;
}

void learner_add_earlier_runs(hub_counters_t *k, const hub_counters_t *prev) {
    k->sampled += prev->sampled;
    k->delivered += prev->delivered;
    k->dropped_invalid += prev->dropped_invalid;
    k->dropped_score += prev->dropped_score;
    k->dropped_shutdown += prev->dropped_shutdown;
    k->duplicates += prev->duplicates;
    k->wire_errors += prev->wire_errors;
    k->send_failures += prev->send_failures;
    k->late_replies += prev->late_replies;
    k->expired_work += prev->expired_work;
    k->score_requeues += prev->score_requeues;
    k->hello_refused += prev->hello_refused;
    k->peer_mismatch += prev->peer_mismatch;
    k->future_version += prev->future_version;
}

hub_counters_t learner_hub_totals(hub_t *hub, const hub_counters_t *prev) {
    hub_counters_t k = {0};
    if (hub)
        hub_counters(hub, &k, 1000);
    learner_add_earlier_runs(&k, prev);
    return k;
}

void learner_collect(const learner_source_t *src, int want, const int *have, learner_counts_t *cnt,
                     learner_add_fn add, void *ctx) {
    char err[512];
    double waited_since = rlx_now();
    while (*have < want && !stop_signal) {
        Rlx__Envelope *env = NULL;
        int got;
        if (src->replay) {
            got = trajlog_read(src->replay, src->w, &env, err, sizeof err);
            if (got < 0)
                fprintf(stderr, "rlx-learner: replay log: %s\n", err);
            if (got <= 0)
                break;
            cnt->replay_read += (int64_t)env->trajectory_batch->n_trajectories;
        } else {
            got = hub_take(src->hub, want - *have, 200, &env);
            if (got < 0) {
                fprintf(stderr, "rlx-learner: the hub thread is gone\n");
                break;
            }
            if (got == 0) {
                if (rlx_now() - waited_since > src->take_timeout_s) {
                    fprintf(stderr,
                            "rlx-learner: no trajectories for %.0f s: are actors "
                            "and reward workers running?\n",
                            src->take_timeout_s);
                    break;
                }
                continue;
            }
        }
        waited_since = rlx_now();
        add(ctx, env);
        wire_free(&env);
    }
}

void learner_write_summary(FILE *metrics, const learner_counts_t *cnt, const hub_counters_t *hc,
                           const learner_guard_t *guard, int have_hub, double elapsed_s) {
    uint64_t sampled = have_hub ? hc->sampled : (uint64_t)cnt->replay_read;
    uint64_t in_flight = have_hub ? hc->in_flight : 0;
    long long dinv = (long long)(cnt->dropped_invalid + (int64_t)hc->dropped_invalid);
    long long dshut = (long long)(cnt->dropped_shutdown + (int64_t)hc->dropped_shutdown);
    json_object *o = json_object_new_object();
    learner_json_bool(o, "summary", 1);
    learner_json_int(o, "step", cnt->step);
    learner_json_int(o, "sampled", (int64_t)sampled);
    learner_json_int(o, "trained", cnt->trained);
    learner_json_int(o, "dropped_stale", cnt->dropped_stale);
    learner_json_int(o, "dropped_invalid", dinv);
    learner_json_int(o, "dropped_score", (int64_t)hc->dropped_score);
    learner_json_int(o, "dropped_shutdown", dshut);
    learner_json_int(o, "duplicates", (int64_t)hc->duplicates);
    learner_json_int(o, "in_flight", (int64_t)in_flight);
    learner_json_int(o, "wire_errors", (int64_t)hc->wire_errors);
    learner_json_int(o, "send_failures", (int64_t)hc->send_failures);
    learner_json_int(o, "score_requeues", (int64_t)hc->score_requeues);
    learner_json_int(o, "expired_work", (int64_t)hc->expired_work);
    learner_json_int(o, "hello_refused", (int64_t)hc->hello_refused);
    learner_json_int(o, "peer_mismatch", (int64_t)hc->peer_mismatch);
    learner_json_int(o, "future_version", (int64_t)hc->future_version);
    learner_json_int(o, "skipped_steps", guard->skipped_steps);
    learner_json_int(o, "unpublished", guard->unpublished);
    learner_json_num(o, "elapsed_s", elapsed_s, "%.2f");
    learner_json_write(metrics, o);
    printf("summary: sampled %llu trained %lld dropped_stale %lld dropped_invalid %lld "
           "dropped_score %llu dropped_shutdown %lld in_flight %llu skipped_steps %lld\n",
           (unsigned long long)sampled, (long long)cnt->trained, (long long)cnt->dropped_stale,
           dinv, (unsigned long long)hc->dropped_score, dshut, (unsigned long long)in_flight,
           (long long)guard->skipped_steps);
    fflush(stdout);
}

void learner_allreduce(paramset_t *ps) {
    MPI_Allreduce(MPI_IN_PLACE, ps->g, (int)ps->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}

void learner_poison_grad(paramset_t *ps, double local_loss) {
    if (!isfinite(local_loss) && ps->n > 0)
        ps->g[0] = NAN;
}

int learner_norms_finite(const float *norms, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(norms[i]))
            return 0;
    return 1;
}

int learner_params_finite(const paramset_t *ps) {
    for (size_t i = 0; i < ps->n; i++)
        if (!isfinite(ps->w[i]))
            return 0;
    return 1;
}

void learner_json_num(json_object *o, const char *key, double v, const char *fmt) {
    if (!isfinite(v)) {
        json_object_object_add(o, key, NULL); // JSON null
        return;
    }
    char buf[64];
    snprintf(buf, sizeof buf, fmt, v);
    json_object_object_add(o, key, json_object_new_double_s(v, buf));
}

void learner_json_int(json_object *o, const char *key, int64_t v) {
    json_object_object_add(o, key, json_object_new_int64(v));
}

void learner_json_bool(json_object *o, const char *key, int v) {
    json_object_object_add(o, key, json_object_new_boolean(v != 0));
}

void learner_json_write(FILE *f, json_object *o) {
    fprintf(f, "%s\n",
            json_object_to_json_string_ext(o, JSON_C_TO_STRING_SPACED |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE));
    fflush(f);
    json_object_put(o);
}

int learner_admit_lag(learner_admit_t *a, uint64_t version) {
    int64_t lag = a->step + 1 - (int64_t)version;
    if (a->max_lag >= 0 && lag > a->max_lag) {
        a->cnt->dropped_stale++;
        return 0;
    }
    a->lag_sum += (double)(lag > 0 ? lag : 0);
    if (lag > a->lag_max)
        a->lag_max = (int)lag;
    return 1;
}

hub_counters_t learner_finish_hub(hub_t *hub, const learner_counts_t *cnt) {
    if (learner_stop_signal())
        printf("rlx-learner: signal %d: checkpointing and stopping\n", learner_stop_signal());
    hub_counters_t hc = {0};
    if (hub)
        hub_drain(hub, 5000, &hc);
    learner_add_earlier_runs(&hc, &cnt->hub_prev);
    return hc;
}
