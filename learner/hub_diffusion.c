// hub_diffusion.c: see hub_diffusion.h.
#include "hub_diffusion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diff_traj.h"
#include "hub_kind.h"

int hub_diff_prompts(const hub_config_t *c) {
    return c->diff_classes > 0 ? c->diff_classes : 1;
}

char *hub_diff_prompt_text(const hub_config_t *c, int i) {
    char buf[64];
    if (c->diff_classes > 0)
        snprintf(buf, sizeof buf, "diffusion class %d", i);
    else
        snprintf(buf, sizeof buf, "diffusion unconditional");
    return strdup(buf);
}

char *hub_diff_prompt_target(const hub_config_t *c, int i) {
    char buf[64];
    if (c->diff_classes > 0)
        snprintf(buf, sizeof buf, "%d", i);
    else
        snprintf(buf, sizeof buf, "%s", c->diff_target ? c->diff_target : "");
    return strdup(buf);
}

void hub_diff_work(const hub_config_t *c, Rlx__WorkItem *it, Rlx__DiffusionSpec *spec,
                   int32_t *labels, uint32_t *shape) {
    rlx__diffusion_spec__init(spec);
    spec->steps = (uint32_t)c->diff_steps;
    spec->eta = c->diff_eta;
    spec->logp_sum = c->diff_logp_sum != 0;
    spec->guidance = c->diff_guidance;
    spec->clip_x0 = c->diff_clip_x0 != 0;
    spec->n_shape = (size_t)c->diff_shape_n;
    spec->shape = (uint32_t *)shape;
    for (int i = 0; i < c->diff_shape_n && i < 4; i++)
        shape[i] = (uint32_t)c->diff_shape[i];
    for (size_t i = 0; i < it->n_prompts; i++)
        labels[i] = c->diff_classes > 0 ? (int32_t)it->prompts[i]->prompt_id : -1;
    spec->n_class_labels = it->n_prompts;
    spec->class_labels = labels;
    it->diffusion = spec;
    it->max_new_tokens = 0;
    it->n_stop_tokens = 0;
}

static diff_traj_spec_t spec_of(const hub_config_t *c) {
    diff_traj_spec_t sp = {.nshape = c->diff_shape_n, .steps = c->diff_steps};
    for (int i = 0; i < c->diff_shape_n && i < DIFF_TRAJ_MAX_SHAPE; i++)
        sp.shape[i] = (uint32_t)c->diff_shape[i];
    return sp;
}

const char *hub_diff_check(const hub_config_t *c, const Rlx__Trajectory *t, uint64_t prompt) {
    if (t->kind_case != RLX__TRAJECTORY__KIND_DIFFUSION || !t->diffusion)
        return "not a diffusion trajectory";
    diff_traj_spec_t sp = spec_of(c);
    return diff_traj_check(&sp, t->diffusion, c->diff_classes > 0 ? (int)prompt : -1);
}

void hub_diff_item(const Rlx__Trajectory *t, const char *scorer, const char *target,
                   Rlx__ScoreItem *item) {
    const Rlx__DiffusionTrajectory *x = t->diffusion;
    size_t dim = x->n_states / (x->steps + 1);
    rlx__score_item__init(item);
    item->id = t->id;
    item->scorer = (char *)scorer;
    item->target = (char *)target;
    item->kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION;
    item->n_payload = dim;
    item->payload = x->states + (size_t)x->steps * dim;
    item->n_payload_shape = x->n_shape;
    item->payload_shape = x->shape;
}

// ---- the kind's ops table ----------------------------------------------------------------

// Diffusion mode: one synthetic prompt per class (or one), no tokens (hub_diffusion.h).
static int diffusion_prompts(hub_loop_t *s, const char *path) {
    (void)path;
    int n = hub_diff_prompts(&s->c);
    s->prompts = calloc((size_t)n, sizeof *s->prompts);
    s->order = calloc((size_t)n, sizeof *s->order);
    if (!s->prompts || !s->order)
        return -1;
    s->n_prompts = (size_t)n;
    for (int i = 0; i < n; i++) {
        s->order[i] = (size_t)i;
        s->prompts[i].text = hub_diff_prompt_text(&s->c, i);
        s->prompts[i].target = hub_diff_prompt_target(&s->c, i);
        if (!s->prompts[i].text || !s->prompts[i].target)
            return -1;
    }
    s->next_prompt = s->n_prompts; // the first draw shuffles
    return 0;
}

static const char *diffusion_config_check(const hub_config_t *c) {
    if (c->diff_steps < 1 || c->diff_shape_n < 1 || c->diff_shape_n > 4 || !(c->diff_eta > 0) ||
        c->prompts_per_item > HUB_DIFF_MAX_PROMPTS || c->diff_classes < 0)
        return "diffusion mode needs steps >= 1, a shape of 1..4 dims, eta > 0, "
               "prompts_per_item <= 64";
    return NULL;
}

static void diffusion_work_fill(const hub_loop_t *s, Rlx__WorkItem *it,
                                hub_work_scratch_t *scratch) {
    hub_diff_work(&s->c, it, &scratch->dspec, scratch->dlabels, scratch->dshape);
}

static const char *diffusion_check(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt) {
    return hub_diff_check(&s->c, t, prompt);
}

static traj_t *diffusion_held_new(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt) {
    traj_t *h = calloc(1, sizeof *h);
    if (h)
        hub_diff_item(t, s->scorer, s->prompts[prompt].target, &h->item);
    return h;
}

const hub_kind_ops_t hub_diffusion_ops = {
    .kind = KIND_DIFFUSION,
    .config_check = diffusion_config_check,
    .prompts = diffusion_prompts,
    .work_fill = diffusion_work_fill,
    .traj_check = diffusion_check,
    .held_new = diffusion_held_new,
};
