// hub_work.c: work items and their groups (hub_internal.h): what goes to actors (WorkItems,
// round robin, under backpressure), what comes back (TrajectoryBatches: duplicate ids, the
// checks, acceptance into the score queue), and how groups settle and flush to the learner
// queue. What differs by kind goes through s->ops (hub_kind.h).
#include "hub_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_kind.h"

void hub_traj_free(traj_t *t) {
    if (!t)
        return;
    wire_arena_release(&t->arena);
    free(t->payload);
    free(t);
}

void hub_work_remove(hub_loop_t *s, work_t *w) {
    for (int i = 0; i < s->n_works; i++)
        if (s->works[i] == w) {
            s->works[i] = s->works[--s->n_works];
            break;
        }
    for (int g = 0; g < w->n_groups; g++) {
        for (int i = 0; i < w->groups[g].n_scored; i++)
            hub_traj_free(w->groups[g].scored[i]);
        free(w->groups[g].arrived);
        free(w->groups[g].scored);
    }
    free(w->groups);
    free(w);
}

static work_t *work_find(hub_loop_t *s, uint64_t work_id) {
    for (int i = 0; i < s->n_works; i++)
        if (s->works[i]->work_id == work_id)
            return s->works[i];
    return NULL;
}

// Hands a settled group to the learner queue once nothing more can join it.
void hub_group_check(hub_loop_t *s, group_t *g) {
    work_t *w = g->work;
    if (g->flushed || g->n_settled < g->n_arrived ||
        (g->n_arrived < g->k && w->state != WORK_CLOSED))
        return;
    g->flushed = 1;
    w->open_groups--;
    if (g->n_scored > 0) {
        ready_t *r = calloc(1, sizeof *r);
        if (!r) { // out of memory: the group is lost, but counted
            s->n.dropped_score += (uint64_t)g->n_scored;
            for (int i = 0; i < g->n_scored; i++)
                hub_traj_free(g->scored[i]);
        } else {
            r->v = g->scored;
            r->n = g->n_scored;
            g->scored = NULL;
            if (s->rq_tail)
                s->rq_tail->next = r;
            else
                s->rq_head = r;
            s->rq_tail = r;
            s->learner_queue += (uint32_t)r->n;
        }
        g->n_scored = 0;
    }
    if (w->state == WORK_CLOSED && w->open_groups == 0 && !w->busy)
        hub_work_remove(s, w);
}

// A trajectory is settled: scored (it joins its group's survivors) or dropped (the caller
// counted why). May free the trajectory, the group and its work item.
void hub_settle(hub_loop_t *s, traj_t *t, int scored) {
    group_t *g = t->group;
    assert(s->unscored > 0);
    s->unscored--;
    g->n_settled++;
    if (scored)
        g->scored[g->n_scored++] = t;
    else
        hub_traj_free(t);
    hub_group_check(s, g);
}

void hub_work_close(hub_loop_t *s, work_t *w) {
    if (w->state == WORK_CLOSED)
        return;
    w->state = WORK_CLOSED;
    w->busy = 1;
    for (int g = 0; g < w->n_groups; g++)
        hub_group_check(s, &w->groups[g]);
    w->busy = 0;
    if (w->open_groups == 0)
        hub_work_remove(s, w);
}

void hub_work_expire(hub_loop_t *s, work_t *w, int64_t now) {
    if (w->state != WORK_OUT)
        return;
    s->expired_work++;
    hub_note(s, EV_WORK_EXPIRED, "work item %llu of actor %u expired (no trajectories in time)",
             (unsigned long long)w->work_id, w->actor_id);
    w->state = WORK_LATE;
    w->purge_at = now + s->c.work_deadline_ms;
}

// Trajectories still expected from work items out at actors.
static uint64_t expected_from_actors(const hub_loop_t *s) {
    uint64_t n = 0;
    for (int i = 0; i < s->n_works; i++) {
        const work_t *w = s->works[i];
        if (w->state != WORK_OUT)
            continue;
        for (int g = 0; g < w->n_groups; g++)
            n += (uint64_t)(w->groups[g].k - w->groups[g].n_arrived);
    }
    return n;
}

static int seen_bit(const seen_t *e, uint64_t seq) {
    uint64_t b = seq % SEEN_WINDOW;
    return (int)(e->bits[b / 64] >> (b % 64)) & 1;
}

static void seen_flip(seen_t *e, uint64_t seq) {
    uint64_t b = seq % SEEN_WINDOW;
    e->bits[b / 64] ^= 1ull << (b % 64);
}

// The seen table of actor (created empty on first use), or NULL out of memory.
static seen_t *seen_of(hub_loop_t *s, uint32_t actor) {
    if (s->seen_last < s->n_seen && s->seen[s->seen_last].actor == actor)
        return &s->seen[s->seen_last];
    for (size_t i = 0; i < s->n_seen; i++)
        if (s->seen[i].actor == actor) {
            s->seen_last = i;
            return &s->seen[i];
        }
    if (s->n_seen == s->cap_seen) {
        size_t cap = s->cap_seen ? 2 * s->cap_seen : 16;
        seen_t *v = realloc(s->seen, cap * sizeof *v);
        if (!v)
            return NULL;
        s->seen = v;
        s->cap_seen = cap;
    }
    uint64_t *bits = calloc(SEEN_WINDOW / 64, sizeof *bits);
    if (!bits)
        return NULL;
    s->seen_last = s->n_seen++;
    seen_t *e = &s->seen[s->seen_last];
    *e = (seen_t){.actor = actor, .floor = 0, .bits = bits};
    return e;
}

// 1 if seq of e was seen (or is too far behind to tell), else 0.
static int seen_has(const seen_t *e, uint64_t seq) {
    if (seq <= e->floor)
        return 1;
    uint64_t newest = e->floor + SEEN_WINDOW; // the window covers (floor, floor + SEEN_WINDOW]
    return seq <= newest && seen_bit(e, seq);
}

// 1 if the actor of e can have reached seq: at most e->asked beyond its first one.
static int seen_plausible(const seen_t *e, uint64_t seq) {
    return !e->has_base ? e->asked > 0 : seq > e->base && seq - e->base <= e->asked;
}

// Enters seq (not seen, plausible) into e, sliding the window when it is ahead of it.
static void seen_add(seen_t *e, uint64_t seq) {
    if (!e->has_base) {
        e->has_base = 1;
        e->base = seq - 1;
    }
    if (seq - e->floor > SEEN_WINDOW) { // slide: what falls behind counts as seen
        uint64_t floor = seq - SEEN_WINDOW;
        if (floor - e->floor >= SEEN_WINDOW)
            memset(e->bits, 0, SEEN_WINDOW / 8);
        else
            for (uint64_t q = e->floor + 1; q <= floor; q++)
                if (seen_bit(e, q))
                    seen_flip(e, q);
        e->floor = floor;
    }
    seen_flip(e, seq);
    while (seen_bit(e, e->floor + 1)) { // the watermark follows the run of seqs all seen
        seen_flip(e, e->floor + 1);
        e->floor++;
    }
}

static size_t draw_prompt(hub_loop_t *s) {
    if (s->next_prompt == s->n_prompts) { // new epoch, new order
        for (size_t i = s->n_prompts - 1; i > 0; i--) {
            size_t j = rng_below(&s->rng, (uint32_t)(i + 1));
            size_t tmp = s->order[i];
            s->order[i] = s->order[j];
            s->order[j] = tmp;
        }
        s->next_prompt = 0;
    }
    return s->order[s->next_prompt++];
}

int hub_work_allowed(hub_loop_t *s) {
    return !s->draining && s->learner_queue < (uint32_t)s->c.max_learner_queue &&
           hub_in_flight(s) + expected_from_actors(s) < (uint64_t)s->c.max_in_flight;
}

// Builds, records and sends one WorkItem to actor a. 0 or -1 (nothing recorded).
static int send_work(hub_loop_t *s, worker_t *a) {
    int np = s->c.prompts_per_item;
    if (a->max_batch > 0 && a->max_batch < np)
        np = a->max_batch;
    if ((size_t)np > s->n_prompts)
        np = (int)s->n_prompts;
    int k = s->c.samples_per_prompt;
    if (s->n_works == s->cap_works) {
        int cap = s->cap_works ? 2 * s->cap_works : 64;
        work_t **v = realloc(s->works, (size_t)cap * sizeof *v);
        if (!v)
            return -1;
        s->works = v;
        s->cap_works = cap;
    }
    work_t *w = calloc(1, sizeof *w);
    Rlx__Prompt *pm = calloc((size_t)np, sizeof *pm);
    Rlx__Prompt **pp = calloc((size_t)np, sizeof *pp);
    if (!w || !pm || !pp || !(w->groups = calloc((size_t)np, sizeof *w->groups)))
        goto fail;
    w->work_id = s->next_work_id;
    w->actor_id = a->id;
    w->n_groups = np;
    for (int g = 0; g < np; g++) {
        size_t p;
        int again;
        do { // a prompt at most once per item, so (work_id, prompt_id) names one group
            p = draw_prompt(s);
            again = 0;
            for (int j = 0; j < g; j++)
                again |= w->groups[j].prompt == p;
        } while (again);
        group_t *gr = &w->groups[g];
        gr->work = w;
        gr->prompt = p;
        gr->k = k;
        gr->arrived = calloc((size_t)k, 1);
        gr->scored = calloc((size_t)k, sizeof *gr->scored);
        if (!gr->arrived || !gr->scored)
            goto fail;
        rlx__prompt__init(&pm[g]);
        pm[g].prompt_id = p;
        pm[g].n_tokens = s->prompts[p].n_tokens;
        pm[g].tokens = s->prompts[p].tokens;
        pm[g].text = s->prompts[p].text;
        pp[g] = &pm[g];
    }
    w->open_groups = np;
    rng_t r;
    rng_seed2(&r, s->c.seed, w->work_id);
    Rlx__WorkItem it = RLX__WORK_ITEM__INIT;
    it.work_id = w->work_id;
    it.n_prompts = (size_t)np;
    it.prompts = pp;
    it.samples_per_prompt = (uint32_t)k;
    it.policy_version = s->weights[0].set ? s->weights[0].version : 0;
    it.temperature = s->c.temperature;
    it.top_k = (uint32_t)s->c.top_k;
    it.seed = rng_next(&r);
    it.deadline_ms = (uint32_t)s->c.work_deadline_ms;
    hub_work_scratch_t scratch; // what the kind's fields of it point to
    s->ops->work_fill(s, &it, &scratch);
    Rlx__Envelope env = RLX__ENVELOPE__INIT;
    env.body_case = RLX__ENVELOPE__BODY_WORK_ITEM;
    env.work_item = &it;
    if (hub_send(s, &a->peer, &env) != WIRE_OK)
        goto fail;
    free(pm);
    free(pp);
    s->next_work_id++;
    seen_t *e = seen_of(s, a->id);
    if (e)
        e->asked += (uint64_t)np * (uint64_t)k;
    w->state = WORK_OUT;
    w->deadline = hub_now_ms() + s->c.work_deadline_ms;
    s->works[s->n_works++] = w;
    return 0;
fail:
    if (w && w->groups)
        for (int g = 0; g < np; g++) {
            free(w->groups[g].arrived);
            free(w->groups[g].scored);
        }
    if (w)
        free(w->groups);
    free(w);
    free(pm);
    free(pp);
    return -1;
}

// Hands out work to actors with credits, round robin, while backpressure allows.
void hub_dispatch_work(hub_loop_t *s) {
    for (;;) {
        worker_t *pick = NULL;
        uint32_t best = 0;
        for (int i = 0; i < s->n_workers; i++) { // the next actor id after rr_actor, wrapping
            worker_t *w = s->workers[i];
            if (w->role != RLX__ROLE__ROLE_ACTOR || w->want == 0)
                continue;
            uint32_t key = w->id - s->rr_actor - 1; // wraps: the last one served comes last
            if (!pick || key < best) {
                pick = w;
                best = key;
            }
        }
        if (!pick || !hub_work_allowed(s))
            return;
        s->rr_actor = pick->id;
        if (send_work(s, pick) != 0) {
            pick->want = 0; // unreachable or full: it asks again
            continue;
        }
        pick->want--;
    }
}

// Why trajectory t (from actor a) cannot be accepted, or NULL if it can; *slot_g gets its
// group when it names a valid free slot of one (so a refused sample still settles it).
static const char *check_traj(hub_loop_t *s, const Rlx__Trajectory *t, group_t **slot_g) {
    *slot_g = NULL;
    work_t *w = work_find(s, t->work_id);
    if (!w)
        return "unknown work_id";
    if (w->actor_id != t->id->actor_id)
        return "work item of another actor";
    if (w->state == WORK_CLOSED)
        return "work item already completed";
    group_t *g = NULL;
    for (int i = 0; i < w->n_groups; i++)
        if (w->groups[i].prompt == t->prompt_id)
            g = &w->groups[i];
    if (!g)
        return "prompt_id not in the work item";
    if ((int)t->group_size != g->k || (int)t->group_index >= g->k)
        return "group_index/group_size do not match samples_per_prompt";
    if (g->arrived[t->group_index])
        return "a second sample for the same group slot";
    *slot_g = g;
    if (t->policy_version > (s->weights[0].set ? s->weights[0].version : 0)) {
        s->future_version++;
        return "policy_version newer than any the hub published";
    }
    return s->ops->traj_check(s, t, g->prompt);
}

// Builds the held trajectory (taking ownership of t) and queues it for scoring.
static int accept_traj(hub_loop_t *s, Rlx__Trajectory *t, group_t *g) {
    traj_t *h = s->ops->held_new(s, t, g->prompt);
    if (!h)
        return -1;
    h->t = t;
    h->group = g;
    t->scored = 0;
    t->reward = 0;
    g->arrived[t->group_index] = 1;
    g->n_arrived++;
    s->unscored++;
    hub_sq_push_back(s, h);
    return 0;
}

void hub_on_trajectories(hub_loop_t *s, worker_t *a, Rlx__Envelope *env) {
    Rlx__TrajectoryBatch *b = env->trajectory_batch;
    for (size_t i = 0; i < b->n_trajectories; i++) {
        Rlx__Trajectory *t = b->trajectories[i];
        if (!t->id || t->id->actor_id != a->id || t->id->seq == 0) {
            s->n.sampled++;
            s->n.dropped_invalid++;
            hub_note(s, EV_INVALID,
                     "invalid trajectory from actor %u: missing id, seq 0 or "
                     "another actor's id",
                     a->id);
            continue;
        }
        seen_t *e = seen_of(s, a->id);
        if (e && seen_has(e, t->id->seq)) {
            s->n.duplicates++;
            hub_note(s, EV_DUPLICATE, "duplicate trajectory (%u,%llu)", t->id->actor_id,
                     (unsigned long long)t->id->seq);
            continue;
        }
        s->n.sampled++;
        if (s->drained) {
            s->n.dropped_shutdown++;
            continue;
        }
        group_t *g;
        const char *why = check_traj(s, t, &g);
        if (!e) {
            why = why ? why : "out of memory";
        } else if (g) { // it names a slot of this actor's work: it enters the seen table
            if (seen_plausible(e, t->id->seq))
                seen_add(e, t->id->seq);
            else if (!why)
                why = "seq beyond the trajectories the hub asked of this actor";
        }
        if (!why && accept_traj(s, t, g) == 0) {
            traj_t *held = s->sq_tail; // accept_traj queued it last
            assert(held && held->t == t);
            held->arena = wire_arena_retain(env);
            b->trajectories[i] = NULL; // detached: now held by the hub
            continue;
        }
        if (!why)
            why = "out of memory";
        s->n.dropped_invalid++;
        hub_note(s, EV_INVALID, "invalid trajectory (%u,%llu) for work %llu: %s", t->id->actor_id,
                 (unsigned long long)t->id->seq, (unsigned long long)t->work_id, why);
        if (g) { // the slot is spent: the group does not wait for it
            g->arrived[t->group_index] = 1;
            g->n_arrived++;
            g->n_settled++;
            hub_group_check(s, g);
        }
    }
    // Compact away the detached ones (their memory stays with the arena references).
    size_t m = 0;
    for (size_t i = 0; i < b->n_trajectories; i++)
        if (b->trajectories[i])
            b->trajectories[m++] = b->trajectories[i];
    b->n_trajectories = m;
    if (b->work_id) { // the batch completes its work item
        work_t *w = work_find(s, b->work_id);
        if (w && w->actor_id == a->id)
            hub_work_close(s, w);
    }
}
