// hub_score.c: scoring (hub_internal.h): the queue of trajectories waiting for a reward
// worker, ScoreRequests to the least-loaded workers with credits, their replies, deadlines
// and requeues (a trajectory is dropped after score_retries).
#include "hub_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

void hub_sq_push_back(hub_loop_t *s, traj_t *t) {
    t->next = NULL;
    if (s->sq_tail)
        s->sq_tail->next = t;
    else
        s->sq_head = t;
    s->sq_tail = t;
}

static void sq_push_front(hub_loop_t *s, traj_t *t) {
    t->next = s->sq_head;
    s->sq_head = t;
    if (!s->sq_tail)
        s->sq_tail = t;
}

traj_t *hub_sq_pop(hub_loop_t *s) {
    traj_t *t = s->sq_head;
    if (t) {
        s->sq_head = t->next;
        if (!s->sq_head)
            s->sq_tail = NULL;
        t->next = NULL;
    }
    return t;
}

// A trajectory came back without a score (deadline, worker gone, missing from the reply):
// again, or dropped when it has had its tries.
static void score_retry(hub_loop_t *s, traj_t *t, const char *why) {
    if (t->attempts > s->c.score_retries) {
        s->n.dropped_score++;
        hub_note(s, EV_SCORE_DROPPED, "trajectory (%u,%llu) dropped unscored after %d tries (%s)",
                 t->t->id->actor_id, (unsigned long long)t->t->id->seq, t->attempts, why);
        hub_settle(s, t, 0);
    } else {
        s->score_requeues++;
        sq_push_front(s, t);
    }
}

// Removes request i (its trajectories already taken care of) and gives the credit back.
void hub_request_remove(hub_loop_t *s, int i) {
    worker_t *w = hub_worker_by_id(s, s->requests[i].worker_id);
    if (w && w->outstanding > 0)
        w->outstanding--;
    free(s->requests[i].items);
    s->requests[i] = s->requests[--s->n_requests];
}

// Requeues request i's trajectories (back to the front, retried first, in order).
void hub_request_requeue(hub_loop_t *s, int i, const char *why) {
    request_t *r = &s->requests[i];
    for (int j = r->n - 1; j >= 0; j--)
        score_retry(s, r->items[j], why);
    hub_request_remove(s, i);
}

// Sends ScoreRequests to the least-loaded reward workers with free credits.
void hub_dispatch_scoring(hub_loop_t *s) {
    while (s->sq_head) {
        worker_t *best = NULL;
        for (int i = 0; i < s->n_workers; i++) {
            worker_t *w = s->workers[i];
            if (w->role != RLX__ROLE__ROLE_REWARD_WORKER || !w->can_score ||
                w->outstanding >= w->capacity)
                continue;
            if (!best || w->outstanding * best->capacity < best->outstanding * w->capacity)
                best = w;
        }
        if (!best)
            return;
        int n = s->c.score_batch > 0 ? s->c.score_batch : 1;
        if (best->max_batch > 0 && best->max_batch < n)
            n = best->max_batch;
        if (s->n_requests == s->cap_requests) {
            int cap = s->cap_requests ? 2 * s->cap_requests : 32;
            request_t *v = realloc(s->requests, (size_t)cap * sizeof *v);
            if (!v)
                return;
            s->requests = v;
            s->cap_requests = cap;
        }
        traj_t **items = malloc((size_t)n * sizeof *items);
        Rlx__ScoreItem **pi = malloc((size_t)n * sizeof *pi);
        if (!items || !pi) {
            free(items);
            free(pi);
            return;
        }
        int m = 0;
        while (m < n && s->sq_head) {
            items[m] = hub_sq_pop(s);
            pi[m] = &items[m]->item;
            m++;
        }
        Rlx__ScoreRequest rq = RLX__SCORE_REQUEST__INIT;
        rq.request_id = s->next_request_id++;
        rq.n_items = (size_t)m;
        rq.items = pi;
        rq.deadline_ms = (uint32_t)s->c.score_deadline_ms;
        Rlx__Envelope env = RLX__ENVELOPE__INIT;
        env.body_case = RLX__ENVELOPE__BODY_SCORE_REQUEST;
        env.score_request = &rq;
        int rc = hub_send(s, &best->peer, &env);
        free(pi);
        if (rc != WIRE_OK) { // back to the front, in order; try again next turn
            for (int j = m - 1; j >= 0; j--)
                sq_push_front(s, items[j]);
            free(items);
            if (rc == WIRE_ERR_UNREACHABLE)
                hub_worker_remove(s, best, "is unreachable (disconnected)");
            return;
        }
        for (int j = 0; j < m; j++)
            items[j]->attempts++;
        request_t *r = &s->requests[s->n_requests++];
        r->request_id = rq.request_id;
        r->worker_id = best->id;
        r->deadline = hub_now_ms() + s->c.score_deadline_ms;
        r->n = m;
        r->items = items;
        best->outstanding++;
    }
}

void hub_on_score_reply(hub_loop_t *s, worker_t *w, const Rlx__ScoreReply *rp) {
    int ri = -1;
    for (int i = 0; i < s->n_requests; i++)
        if (s->requests[i].request_id == rp->request_id && s->requests[i].worker_id == w->id)
            ri = i;
    if (ri < 0) {
        s->late_replies++;
        hub_note(s, EV_LATE_REPLY,
                 "reply to score request %llu from %u, which the hub no longer "
                 "waits for: dropped",
                 (unsigned long long)rp->request_id, w->id);
        return;
    }
    request_t *r = &s->requests[ri];
    for (size_t k = 0; k < rp->n_results; k++) {
        const Rlx__ScoreResult *res = rp->results[k];
        if (!res->id)
            continue;
        // Replies normally keep the request's order: look at slot k first, then everywhere.
        for (int jj = -1; jj < r->n; jj++) {
            int j = jj < 0 ? (int)k : jj;
            if (j >= r->n || (jj >= 0 && j == (int)k))
                continue;
            traj_t *t = r->items[j];
            if (!t || t->t->id->actor_id != res->id->actor_id || t->t->id->seq != res->id->seq)
                continue;
            r->items[j] = NULL;
            if ((res->error && res->error[0]) || !isfinite(res->reward)) {
                s->n.dropped_score++;
                hub_note(s, EV_SCORER_ERROR, "scorer error for trajectory (%u,%llu): %s",
                         res->id->actor_id, (unsigned long long)res->id->seq,
                         res->error && res->error[0] ? res->error : "non-finite reward");
                hub_settle(s, t, 0);
            } else {
                t->t->scored = 1;
                t->t->reward = res->reward;
                hub_settle(s, t, 1);
            }
            break;
        }
    }
    // Items the reply left out are tried again.
    int m = 0;
    for (int j = 0; j < r->n; j++)
        if (r->items[j])
            r->items[m++] = r->items[j];
    r->n = m;
    hub_request_requeue(s, ri, "missing from the reply");
}
