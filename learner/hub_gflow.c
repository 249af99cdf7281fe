// hub_gflow.c: see hub_gflow.h.
#include "hub_gflow.h"

#include <stdio.h>
#include <stdlib.h>

#include "gfn_traj.h"

char *hub_gflow_prompt_text(const hub_config_t *c) {
    char buf[64];
    snprintf(buf, sizeof buf, "hypergrid ndim=%d height=%d", c->gflow_ndim, c->gflow_height);
    char *t = malloc(sizeof buf);
    if (t)
        snprintf(t, sizeof buf, "%s", buf);
    return t;
}

void hub_gflow_work(const hub_config_t *c, Rlx__WorkItem *it, Rlx__GflowEnv *env) {
    rlx__gflow_env__init(env);
    env->env = "hypergrid";
    env->ndim = (uint32_t)c->gflow_ndim;
    env->height = (uint32_t)c->gflow_height;
    env->epsilon = c->gflow_epsilon;
    it->gflow = env;
    it->max_new_tokens = 0;
    it->n_stop_tokens = 0;
}

const char *hub_gflow_check(const hub_config_t *c, const Rlx__Trajectory *t) {
    if (t->kind_case != RLX__TRAJECTORY__KIND_GFLOW || !t->gflow)
        return "not a gflow trajectory";
    gfn_grid_t g = gfn_grid(c->gflow_ndim, c->gflow_height);
    return gfn_traj_check(&g, t->gflow);
}

int hub_gflow_item(const hub_config_t *c, const Rlx__Trajectory *t, const char *scorer,
                   Rlx__ScoreItem *item, float **payload, uint32_t *shape) {
    gfn_grid_t g = gfn_grid(c->gflow_ndim, c->gflow_height);
    float *p = malloc((size_t)g.ndim * g.height * sizeof *p);
    if (!p)
        return -1;
    gfn_traj_payload(&g, t->gflow, p);
    shape[0] = (uint32_t)g.ndim;
    shape[1] = (uint32_t)g.height;
    rlx__score_item__init(item);
    item->id = t->id;
    item->scorer = (char *)scorer;
    item->kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW;
    item->n_payload = (size_t)g.ndim * g.height;
    item->payload = p;
    item->n_payload_shape = 2;
    item->payload_shape = shape;
    *payload = p;
    return 0;
}
