// learner_common.c: see learner_common.h.
#include "learner_common.h"

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
                           int have_hub, double elapsed_s) {
    uint64_t sampled = have_hub ? hc->sampled : (uint64_t)cnt->replay_read;
    uint64_t in_flight = have_hub ? hc->in_flight : 0;
    long long dinv = (long long)(cnt->dropped_invalid + (int64_t)hc->dropped_invalid);
    long long dshut = (long long)(cnt->dropped_shutdown + (int64_t)hc->dropped_shutdown);
    fprintf(metrics,
            "{\"summary\": true, \"step\": %lld, \"sampled\": %llu, \"trained\": %lld, "
            "\"dropped_stale\": %lld, \"dropped_invalid\": %lld, \"dropped_score\": %llu, "
            "\"dropped_shutdown\": %lld, \"duplicates\": %llu, \"in_flight\": %llu, "
            "\"wire_errors\": %llu, \"send_failures\": %llu, \"score_requeues\": %llu, "
            "\"expired_work\": %llu, \"elapsed_s\": %.2f}\n",
            (long long)cnt->step, (unsigned long long)sampled, (long long)cnt->trained,
            (long long)cnt->dropped_stale, dinv, (unsigned long long)hc->dropped_score, dshut,
            (unsigned long long)hc->duplicates, (unsigned long long)in_flight,
            (unsigned long long)hc->wire_errors, (unsigned long long)hc->send_failures,
            (unsigned long long)hc->score_requeues, (unsigned long long)hc->expired_work,
            elapsed_s);
    fflush(metrics);
    printf("summary: sampled %llu trained %lld dropped_stale %lld dropped_invalid %lld "
           "dropped_score %llu dropped_shutdown %lld in_flight %llu\n",
           (unsigned long long)sampled, (long long)cnt->trained, (long long)cnt->dropped_stale,
           dinv, (unsigned long long)hc->dropped_score, dshut, (unsigned long long)in_flight);
    fflush(stdout);
}

int learner_admit_lag(learner_counts_t *cnt, int64_t step, uint64_t version, int max_lag,
                      double *lag_sum, int *lag_max) {
    int64_t lag = step + 1 - (int64_t)version;
    if (max_lag >= 0 && lag > max_lag) {
        cnt->dropped_stale++;
        return 0;
    }
    *lag_sum += (double)(lag > 0 ? lag : 0);
    if (lag > *lag_max)
        *lag_max = (int)lag;
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
