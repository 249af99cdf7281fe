// gfn_traj.c: see gfn_traj.h.
#include "gfn_traj.h"

#include <math.h>
#include <string.h>

#include "wire.h"

#define GFN_TRAJ_MAX_DIM 64 // gfn_grid's limit

const char *gfn_traj_check(const gfn_grid_t *g, const Rlx__GflowTrajectory *x) {
    int D = g->ndim, H = g->height, L = gfn_grid_max_len(g);
    if (!x)
        return "not a gflow trajectory";
    if ((int)x->state_dim != D)
        return "state_dim differs from the environment's ndim";
    if (x->length < 1 || x->length > (uint32_t)L)
        return "length outside 1..ndim*(height-1)+1";
    size_t T = x->length;
    if (x->n_states != (T + 1) * (size_t)D)
        return "states count is not (length+1)*state_dim";
    if (x->n_actions != T || x->n_logpf != T || (x->n_logpb != T && x->n_logpb != 0))
        return "actions/logpf/logpb counts differ from length";
    for (size_t i = 0; i < x->n_states; i++) {
        float v = x->states[i];
        if (!(v >= 0 && v <= H - 1) || v != floorf(v))
            return "state coordinate not an integer in 0..height-1";
    }
    for (int d = 0; d < D; d++)
        if (x->states[d] != 0)
            return "does not start at the origin";
    for (size_t t = 0; t < T; t++) {
        uint32_t a = x->actions[t];
        if (a > (uint32_t)D)
            return "action outside 0..ndim";
        if ((a == (uint32_t)D) != (t == T - 1))
            return "the stop action must be last and only last";
        const float *s = x->states + t * D, *n = s + D;
        for (int d = 0; d < D; d++)
            if (n[d] != s[d] + (a == (uint32_t)d ? 1.0f : 0.0f))
                return "a state is not the previous one plus the action's unit step";
        if (!(x->logpf[t] >= WIRE_LOGPROB_MIN && x->logpf[t] <= 1e-4f)) // NaN fails too
            return "logpf outside [WIRE_LOGPROB_MIN, 0]";
        if (x->n_logpb && !(x->logpb[t] >= WIRE_LOGPROB_MIN && x->logpb[t] <= 1e-4f))
            return "logpb outside [WIRE_LOGPROB_MIN, 0]";
    }
    return NULL;
}

void gfn_traj_from_batch(const gfn_grid_t *g, const gfn_batch_t *b, int i, Rlx__GflowTrajectory *x,
                         float *states, uint32_t *actions) {
    int D = g->ndim, T = b->len[i];
    int s[GFN_TRAJ_MAX_DIM];
    size_t at = (size_t)i * b->max_len;
    rlx__gflow_trajectory__init(x);
    for (int t = 0; t < T; t++) {
        gfn_grid_coords(g, b->states[at + t], s);
        for (int d = 0; d < D; d++)
            states[(size_t)t * D + d] = (float)s[d];
        actions[t] = (uint32_t)b->actions[at + t];
    }
    memcpy(states + (size_t)T * D, states + (size_t)(T - 1) * D, (size_t)D * sizeof *states);
    x->state_dim = (uint32_t)D;
    x->length = (uint32_t)T;
    x->n_states = (size_t)(T + 1) * D;
    x->states = states;
    x->n_actions = (size_t)T;
    x->actions = actions;
    x->n_logpf = (size_t)T;
    x->logpf = b->logpf + at;
    x->n_logpb = (size_t)T;
    x->logpb = b->logpb + at;
}

void gfn_traj_append(const gfn_grid_t *g, const Rlx__GflowTrajectory *x, float logr,
                     gfn_batch_t *b) {
    int D = g->ndim, T = (int)x->length, i = b->n++;
    int s[GFN_TRAJ_MAX_DIM];
    size_t at = (size_t)i * b->max_len;
    b->len[i] = T;
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++)
            s[d] = (int)x->states[(size_t)t * D + d];
        b->states[at + t] = gfn_grid_index(g, s);
        b->actions[at + t] = (int32_t)x->actions[t];
        b->logpf[at + t] = x->logpf[t];
        b->logpb[at + t] = x->n_logpb ? x->logpb[t] : 0.0f;
    }
    b->logr[i] = logr;
}

void gfn_traj_payload(const gfn_grid_t *g, const Rlx__GflowTrajectory *x, float *payload) {
    int D = g->ndim, H = g->height;
    const float *term = x->states + (size_t)x->length * D;
    memset(payload, 0, (size_t)D * H * sizeof *payload);
    for (int d = 0; d < D; d++)
        payload[d * H + (int)term[d]] = 1.0f;
}
