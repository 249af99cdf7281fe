// test_gfn_traj.c: the GFlowNet pieces of the distributed system without processes:
// sampled trajectories survive the wire form (gfn_traj.h) and pass the hub's checks
// (hub_gfn.h), malformed ones are refused, the "hypergrid" scorer gives R(x) of the
// payload, the actor's sampler (gfn_actor.h) answers a WorkItem, and the policy blob
// (gfn_ckpt.h) round-trips.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gfn_actor.h"
#include "gflownet.h"
#include "gfn_ckpt.h"
#include "gfn_traj.h"
#include "hub_gfn.h"
#include "rng.h"
#include "scorers.h"
#include "testutil.h"

// Wire form of sampled trajectories: checked, converted back identically.
// The actor's keep-alive hook: counts calls.
static void count_tick(void *arg) {
    ++*(int *)arg;
}

static void test_roundtrip(int D, int H) {
    gfn_grid_t g = gfn_grid(D, H);
    gfn_policy_config_t pc = gfn_policy_defaults();
    gfn_policy_t *p = gfn_policy_new(&g, &pc, 32, 7);
    gfn_batch_t *b = gfn_batch_new(&g, 32), *back = gfn_batch_new(&g, 32);
    rng_t r;
    rng_seed2(&r, 3, 1);
    gfn_sample(p, b, 32, 0.2f, &r);
    int L = b->max_len, bad = 0, diff = 0;
    float *states = malloc((size_t)(L + 1) * D * sizeof *states);
    uint32_t *actions = malloc((size_t)L * sizeof *actions);
    int sc = scorer_find("hypergrid");
    TU_CHECK(sc >= 0 && scorer_is_payload(sc), "no payload scorer \"hypergrid\"");
    float *payload = malloc((size_t)D * H * sizeof *payload);
    uint32_t shape[2] = {(uint32_t)D, (uint32_t)H};
    for (int i = 0; i < b->n; i++) {
        Rlx__GflowTrajectory x;
        gfn_traj_from_batch(&g, b, i, &x, states, actions);
        const char *why = gfn_traj_check(&g, &x);
        if (why && bad++ == 0)
            fprintf(stderr, "sampled trajectory %d refused: %s\n", i, why);
        if (why)
            continue;
        gfn_traj_payload(&g, &x, payload);
        float rew = 0;
        char err[160];
        TU_CHECK(
            scorer_score_payload(sc, payload, (size_t)D * H, shape, 2, &rew, err, sizeof err) == 0,
            "scorer: %s", err);
        diff += fabsf(logf(rew) - b->logr[i]) > 1e-5f;
        gfn_traj_append(&g, &x, logf(rew), back);
    }
    TU_CHECK(bad == 0, "%d of %d sampled trajectories refused", bad, b->n);
    TU_CHECK(diff == 0, "%d scorer rewards differ from the sampler's log R", diff);
    char err[256];
    TU_CHECK(gfn_batch_check(&g, back, err, sizeof err) == 0, "converted batch: %s", err);
    size_t cells = (size_t)b->n * L;
    for (int i = 0; i < b->n; i++)
        for (int t = b->len[i]; t < L; t++) { // padding is not carried
            size_t at = (size_t)i * L + t;
            back->states[at] = b->states[at];
            back->actions[at] = b->actions[at];
            back->logpf[at] = b->logpf[at];
            back->logpb[at] = b->logpb[at];
        }
    TU_CHECK(back->n == b->n && !memcmp(back->len, b->len, (size_t)b->n * sizeof *b->len) &&
                 !memcmp(back->states, b->states, cells * sizeof *b->states) &&
                 !memcmp(back->actions, b->actions, cells * sizeof *b->actions) &&
                 !memcmp(back->logpf, b->logpf, cells * sizeof *b->logpf) &&
                 !memcmp(back->logpb, b->logpb, cells * sizeof *b->logpb),
             "D=%d H=%d: trajectories differ after the wire form", D, H);
    free(states);
    free(actions);
    free(payload);
    gfn_batch_destroy(&b);
    gfn_batch_destroy(&back);
    gfn_policy_destroy(&p);
}

// One valid trajectory (D=2, H=4: right, up, stop) and faults of it, each refused.
static void test_faults(void) {
    gfn_grid_t g = gfn_grid(2, 4);
    float st[8] = {0, 0, 1, 0, 1, 1, 1, 1};
    uint32_t ac[3] = {0, 1, 2};
    float lpf[3] = {-1, -1, -0.5f}, lpb[3] = {-0.7f, -0.7f, 0};
    Rlx__GflowTrajectory ok = RLX__GFLOW_TRAJECTORY__INIT;
    ok.state_dim = 2;
    ok.length = 3;
    ok.n_states = 8;
    ok.states = st;
    ok.n_actions = 3;
    ok.actions = ac;
    ok.n_logpf = 3;
    ok.logpf = lpf;
    ok.n_logpb = 3;
    ok.logpb = lpb;
    TU_CHECK(gfn_traj_check(&g, &ok) == NULL, "valid trajectory refused: %s",
             gfn_traj_check(&g, &ok));
    int refused = 0, n = 0;
#define FAULT(stmt)                                                                                \
    do {                                                                                           \
        Rlx__GflowTrajectory x = ok;                                                               \
        float s2[8], f2[3];                                                                        \
        uint32_t a2[3];                                                                            \
        memcpy(s2, st, sizeof s2);                                                                 \
        memcpy(f2, lpf, sizeof f2);                                                                \
        memcpy(a2, ac, sizeof a2);                                                                 \
        x.states = s2;                                                                             \
        x.logpf = f2;                                                                              \
        x.actions = a2;                                                                            \
        stmt;                                                                                      \
        n++;                                                                                       \
        if (gfn_traj_check(&g, &x))                                                                \
            refused++;                                                                             \
        else                                                                                       \
            fprintf(stderr, "accepted: %s\n", #stmt);                                              \
    } while (0)
    FAULT(x.state_dim = 3);
    FAULT(x.length = 0);
    FAULT(x.length = 8);
    FAULT(x.n_states = 6);
    FAULT(x.n_actions = 2);
    FAULT(x.n_logpf = 2);
    FAULT(x.n_logpb = 1);
    FAULT(a2[1] = 3);
    FAULT(a2[1] = 2);            // stop in the middle
    FAULT(a2[2] = 1);            // no stop at the end
    FAULT(s2[4] = 2);            // not the action's unit step
    FAULT(s2[0] = 1);            // not from the origin
    FAULT(s2[3] = 0.5f);         // not an integer
    FAULT(s2[5] = 4; s2[7] = 4); // outside the grid
    FAULT(f2[1] = NAN);
    FAULT(f2[1] = 0.5f);
    FAULT(f2[1] = -1e30f); // finite, but below what an fp32 sampler can draw (WIRE_LOGPROB_MIN)
#undef FAULT
    TU_CHECK(refused == n, "%d of %d malformed trajectories accepted", n - refused, n);

    // The hub's view: kind and payload.
    hub_config_t hc = hub_defaults();
    hc.kind = KIND_GFLOW;
    hc.gfn_ndim = 2;
    hc.gfn_height = 4;
    Rlx__Trajectory t = RLX__TRAJECTORY__INIT;
    TU_CHECK(hub_gfn_check(&hc, &t) != NULL, "a trajectory without payload accepted");
    t.kind_case = RLX__TRAJECTORY__KIND_GFLOW;
    t.gflow = &ok;
    TU_CHECK(hub_gfn_check(&hc, &t) == NULL, "hub refused a valid trajectory");
    Rlx__ScoreItem it;
    float *payload = NULL;
    uint32_t shape[2];
    TU_CHECK(hub_gfn_item(&hc, &t, "hypergrid", &it, &payload, shape) == 0, "score item");
    float want[8] = {0, 1, 0, 0, 0, 1, 0, 0}; // x = (1, 1), one-hot rows of 4
    TU_CHECK(it.n_payload == 8 && it.n_payload_shape == 2 && shape[0] == 2 && shape[1] == 4 &&
                 !memcmp(payload, want, sizeof want) &&
                 it.kind == RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW,
             "score item payload");
    free(payload);

    // The scorer refuses malformed payloads.
    int sc = scorer_find("hypergrid");
    float rew;
    char err[160];
    uint32_t bad_shape[1] = {8};
    float two[8] = {1, 1, 0, 0, 0, 1, 0, 0};
    TU_CHECK(scorer_score_payload(sc, want, 8, bad_shape, 1, &rew, err, sizeof err) != 0,
             "payload of shape [8] scored");
    TU_CHECK(scorer_score_payload(sc, two, 8, shape, 2, &rew, err, sizeof err) != 0,
             "payload with two hot entries scored");
    TU_CHECK(scorer_score_payload(scorer_find("exact"), want, 8, shape, 2, &rew, err, sizeof err) !=
                 0,
             "a text scorer scored a payload");
}

// The actor's half: a weight blob installed, a WorkItem answered with valid trajectories.
static void test_actor_blob(void) {
    gfn_grid_t g = gfn_grid(3, 5);
    gfn_policy_config_t pc = gfn_policy_defaults();
    pc.hidden = 32;
    gfn_policy_t *p = gfn_policy_new(&g, &pc, 8, 11);
    p->logz.w[0] = 1.25f;
    char err[256], dir[] = "/tmp/rlx-test-gfn-XXXXXX";
    TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    size_t len = 0;
    void *blob = gfn_ckpt_blob(p, dir, &len, err, sizeof err);
    TU_CHECK(blob != NULL, "blob: %s", err);
    rmdir(dir);
    ckpt_t *ck = blob ? ckpt_parse(blob, len, err, sizeof err) : NULL;
    TU_CHECK(ck != NULL, "parse: %s", err);
    gfn_policy_t *q = NULL;
    TU_CHECK(ck && gfn_actor_install(&q, ck, err, sizeof err) == 0, "install: %s", err);
    if (q) {
        TU_CHECK(q->net->ps.n == p->net->ps.n &&
                     !memcmp(q->net->ps.w, p->net->ps.w, p->net->ps.n * sizeof(float)) &&
                     q->logz.w[0] == 1.25f,
                 "installed weights differ");
        TU_CHECK(gfn_actor_install(&q, ck, err, sizeof err) == 0, "reinstall: %s", err);
    }
    gfn_grid_t g2 = gfn_grid(2, 5);
    gfn_policy_t *other = gfn_policy_new(&g2, &pc, 8, 1);
    TU_CHECK(ck && gfn_ckpt_load(other, ck, err, sizeof err) != 0, "loaded into another grid");
    gfn_policy_destroy(&other);

    hub_config_t hc = hub_defaults();
    hc.kind = KIND_GFLOW;
    hc.gfn_ndim = 3;
    hc.gfn_height = 5;
    Rlx__Prompt pr = RLX__PROMPT__INIT, *prp = &pr;
    Rlx__WorkItem it = RLX__WORK_ITEM__INIT;
    Rlx__GflowEnv env;
    it.work_id = 9;
    it.n_prompts = 1;
    it.prompts = &prp;
    it.samples_per_prompt = 70; // more than the actor's chunk (GFN_ACTOR_CHUNK, 64)
    hub_gfn_work(&hc, &it, &env);
    const char *why = NULL;
    int ticks = 0;
    gfn_sampled_t *gb = q ? gfn_actor_sample(q, &it, 4, 100, 7, 5, count_tick, &ticks, &why) : NULL;
    TU_CHECK(gb != NULL, "actor refused the item: %s", why ? why : "?");
    int chunks = q ? (70 + q->max_traj - 1) / q->max_traj : 0;
    TU_CHECK(!gb || (chunks == 2 && ticks == 2),
             "%d keep-alive ticks for 70 trajectories in chunks of %d", ticks, q ? q->max_traj : 0);
    if (gb) {
        const Rlx__TrajectoryBatch *tb = gfn_sampled_envelope(gb)->trajectory_batch;
        int bad = 0;
        for (size_t i = 0; i < tb->n_trajectories; i++) {
            const Rlx__Trajectory *t = tb->trajectories[i];
            bad += hub_gfn_check(&hc, t) != NULL || t->id->seq != 100 + i || t->group_index != i ||
                   t->group_size != 70 || t->policy_version != 7 || t->work_id != 9;
        }
        TU_CHECK(tb->n_trajectories == 70 && bad == 0, "%zu trajectories, %d bad",
                 tb->n_trajectories, bad);
        gfn_sampled_destroy(&gb);
    }
    env.ndim = 2; // another environment than the policy's
    TU_CHECK(!q || !gfn_actor_sample(q, &it, 4, 1, 7, 5, NULL, NULL, &why), "sampled another grid");
    ckpt_destroy(&ck);
    free(blob);
    gfn_policy_destroy(&q);
    gfn_policy_destroy(&p);
}

int main(void) {
    test_roundtrip(2, 8);
    test_roundtrip(4, 8);
    test_faults();
    test_actor_blob();
    return tu_finish("test_gfn_traj");
}
