// diff_traj.c: see diff_traj.h.
#include "diff_traj.h"

#include <math.h>

#include "wire.h"

size_t diff_traj_dim(const diff_traj_spec_t *sp) {
    size_t n = 1;
    for (int i = 0; i < sp->nshape; i++)
        n *= sp->shape[i];
    return n;
}

const char *diff_traj_check(const diff_traj_spec_t *sp, const Rlx__DiffusionTrajectory *x,
                            int label) {
    if (!x)
        return "not a diffusion trajectory";
    if ((int)x->n_shape != sp->nshape)
        return "shape differs from the run's sample shape";
    for (int i = 0; i < sp->nshape; i++)
        if (x->shape[i] != sp->shape[i])
            return "shape differs from the run's sample shape";
    if ((int)x->steps != sp->steps)
        return "steps differs from the work item's DiffusionSpec.steps";
    size_t S = x->steps, dim = diff_traj_dim(sp);
    if (x->n_states != (S + 1) * dim)
        return "states count is not (steps+1) * dim";
    if (x->n_logpf != S || x->n_logpb != S)
        return "logpf/logpb counts differ from steps";
    if (x->n_timesteps != S + 1)
        return "timesteps count is not steps+1";
    for (size_t k = 0; k < S; k++)
        if (x->timesteps[k] <= x->timesteps[k + 1])
            return "timesteps not strictly decreasing";
    if (x->timesteps[S] != 0)
        return "the last timestep is not 0";
    for (size_t k = 0; sp->ts && k <= S; k++)
        if (x->timesteps[k] != (uint32_t)sp->ts[k])
            return "timesteps differ from the policy's sampling schedule";
    for (size_t i = 0; i < x->n_states; i++)
        if (!isfinite(x->states[i]))
            return "state not finite";
    float lim = WIRE_DIFF_LOGP_MAX_PER_DIM * (float)dim; // NaN fails the comparisons too
    for (size_t k = 0; k < S; k++)
        if (!(fabsf(x->logpf[k]) <= lim) || !(fabsf(x->logpb[k]) <= lim))
            return "logpf/logpb not finite or |logp| > WIRE_DIFF_LOGP_MAX_PER_DIM * dim";
    if (x->class_label != label)
        return "class_label differs from the work item's";
    return NULL;
}

void diff_traj_fill(Rlx__DiffusionTrajectory *x, const uint32_t *shape, int nshape, int S,
                    float *states, float *logpf, float *logpb, uint32_t *timesteps, int label) {
    size_t dim = 1;
    for (int i = 0; i < nshape; i++)
        dim *= shape[i];
    rlx__diffusion_trajectory__init(x);
    x->n_shape = (size_t)nshape;
    x->shape = (uint32_t *)shape;
    x->steps = (uint32_t)S;
    x->n_states = (size_t)(S + 1) * dim;
    x->states = states;
    x->n_logpf = (size_t)S;
    x->logpf = logpf;
    x->n_logpb = (size_t)S;
    x->logpb = logpb;
    x->n_timesteps = (size_t)S + 1;
    x->timesteps = timesteps;
    x->class_label = label;
}
