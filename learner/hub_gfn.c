// hub_gfn.c: see hub_gfn.h.
#include "hub_gfn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gfn_traj.h"
#include "hub_kind.h"

char *hub_gfn_prompt_text(const hub_config_t *c) {
    char buf[64];
    snprintf(buf, sizeof buf, "hypergrid ndim=%d height=%d", c->gfn_ndim, c->gfn_height);
    char *t = malloc(sizeof buf);
    if (t)
        snprintf(t, sizeof buf, "%s", buf);
    return t;
}

void hub_gfn_work(const hub_config_t *c, Rlx__WorkItem *it, Rlx__GflowEnv *env) {
    rlx__gflow_env__init(env);
    env->env = "hypergrid";
    env->ndim = (uint32_t)c->gfn_ndim;
    env->height = (uint32_t)c->gfn_height;
    env->epsilon = c->gfn_epsilon;
    it->gflow = env;
    it->max_new_tokens = 0;
    it->n_stop_tokens = 0;
}

const char *hub_gfn_check(const hub_config_t *c, const Rlx__Trajectory *t) {
    if (t->kind_case != RLX__TRAJECTORY__KIND_GFLOW || !t->gflow)
        return "not a gflow trajectory";
    gfn_grid_t g = gfn_grid(c->gfn_ndim, c->gfn_height);
    return gfn_traj_check(&g, t->gflow);
}

int hub_gfn_item(const hub_config_t *c, const Rlx__Trajectory *t, const char *scorer,
                 Rlx__ScoreItem *item, float **payload, uint32_t *shape) {
    gfn_grid_t g = gfn_grid(c->gfn_ndim, c->gfn_height);
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

// ---- the kind's ops table ----------------------------------------------------------------

// GFlowNet mode: one synthetic prompt that only names the groups (no tokens).
static int gfn_prompts(hub_loop_t *s, const char *path) {
    (void)path;
    s->prompts = calloc(1, sizeof *s->prompts);
    s->order = calloc(1, sizeof *s->order);
    if (!s->prompts || !s->order)
        return -1;
    s->n_prompts = 1;
    s->prompts[0].text = hub_gfn_prompt_text(&s->c);
    s->prompts[0].target = strdup("");
    s->next_prompt = 1;
    return s->prompts[0].text && s->prompts[0].target ? 0 : -1;
}

static const char *gfn_config_check(const hub_config_t *c) {
    if (c->gfn_ndim < 1 || c->gfn_ndim > 64 || c->gfn_height < 2)
        return "gfn_ndim must be in 1..64 and gfn_height >= 2";
    return NULL;
}

static void gfn_work_fill(const hub_loop_t *s, Rlx__WorkItem *it, hub_work_scratch_t *scratch) {
    hub_gfn_work(&s->c, it, &scratch->genv);
}

static const char *gfn_check(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt) {
    (void)prompt;
    return hub_gfn_check(&s->c, t);
}

static traj_t *gfn_held_new(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt) {
    (void)prompt;
    traj_t *h = calloc(1, sizeof *h);
    if (h && hub_gfn_item(&s->c, t, s->scorer, &h->item, &h->payload, h->shape) != 0) {
        free(h);
        return NULL;
    }
    return h;
}

const hub_kind_ops_t hub_gfn_ops = {
    .kind = KIND_GFLOW,
    .config_check = gfn_config_check,
    .prompts = gfn_prompts,
    .work_fill = gfn_work_fill,
    .traj_check = gfn_check,
    .held_new = gfn_held_new,
};
