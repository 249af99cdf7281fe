// hub_text.c: the hub's text kind (hub_kind.h): prompts from the train file (prompt<TAB>target
// lines, tokenised with bytetok), WorkItems with the stop token and allowed tokens, the checks
// of text_traj.h against the work item's prompt, and the ScoreItem with the response decoded
// to (valid UTF-8) text. Also hub_kind_ops, the table of tables.
#include "hub_kind.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "text_traj.h"

static int load_prompts(hub_loop_t *s, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "hub: cannot read the train prompt file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, cap_p = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue;
        if (s->n_prompts == cap_p) {
            cap_p = cap_p ? 2 * cap_p : 256;
            prompt_t *v = realloc(s->prompts, cap_p * sizeof *v);
            if (!v) {
                rc = -1;
                break;
            }
            s->prompts = v;
        }
        char *tab = strchr(line, '\t');
        if (tab)
            *tab = 0;
        prompt_t *p = &s->prompts[s->n_prompts];
        memset(p, 0, sizeof *p);
        p->text = strdup(line);
        p->target = strdup(tab ? tab + 1 : "");
        int nt = bytetok_encode_prompt(line, strlen(line), NULL, 0);
        int *tok = malloc((size_t)nt * sizeof *tok);
        p->tokens = malloc((size_t)nt * sizeof *p->tokens);
        s->n_prompts++;
        if (!p->text || !p->target || !tok || !p->tokens) {
            free(tok);
            rc = -1;
            break;
        }
        bytetok_encode_prompt(line, strlen(line), tok, nt);
        for (int i = 0; i < nt; i++)
            p->tokens[i] = (uint32_t)tok[i];
        p->n_tokens = (size_t)nt;
        free(tok);
    }
    free(line);
    fclose(f);
    if (rc == 0 && s->n_prompts == 0) {
        fprintf(stderr, "hub: the train prompt file %s has no prompts (prompt<TAB>target lines)\n",
                path);
        rc = -1;
    }
    if (rc == 0 && !(s->order = malloc(s->n_prompts * sizeof *s->order)))
        rc = -1;
    if (rc != 0)
        return -1;
    for (size_t i = 0; i < s->n_prompts; i++)
        s->order[i] = i;
    s->next_prompt = s->n_prompts; // the first draw shuffles
    return 0;
}

static const char *text_config_check(const hub_config_t *c) {
    if (!c->train_prompts)
        return "train_prompts is required for text work";
    if (c->n_allowed_tokens < 0 || c->n_allowed_tokens > HUB_MAX_ALLOWED)
        return "n_allowed_tokens must be in 0..HUB_MAX_ALLOWED";
    return NULL;
}

static void text_work_fill(const hub_loop_t *s, Rlx__WorkItem *it, hub_work_scratch_t *scratch) {
    scratch->stop_tok = GPT_TOK_EOS;
    it->max_new_tokens = (uint32_t)s->c.max_new_tokens;
    it->n_stop_tokens = 1;
    it->stop_tokens = &scratch->stop_tok;
    it->n_allowed_tokens = (size_t)s->c.n_allowed_tokens;
    it->allowed_tokens = (uint32_t *)s->c.allowed_tokens;
}

static const char *text_check(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt) {
    if (t->kind_case != RLX__TRAJECTORY__KIND_TEXT || !t->text)
        return "not a text trajectory";
    const prompt_t *p = &s->prompts[prompt];
    text_traj_spec_t sp = {.prompt = p->tokens,
                           .n_prompt = p->n_tokens,
                           .max_new_tokens = s->c.max_new_tokens,
                           .vocab = GPT_VOCAB,
                           .allowed = s->c.n_allowed_tokens > 0 ? s->allowed : NULL};
    return text_traj_check(&sp, t->text);
}

static traj_t *text_held_new(const hub_loop_t *s, const Rlx__Trajectory *t, size_t prompt) {
    const Rlx__TextTrajectory *x = t->text;
    size_t cap = 3 * x->n_response_tokens + 1; // U+FFFD is the longest a token decodes to
    traj_t *h = malloc(sizeof *h + cap);
    if (!h)
        return NULL;
    memset(h, 0, sizeof *h);
    bytetok_decode_wire(x->response_tokens, (int)x->n_response_tokens, GPT_VOCAB, h->response_text,
                        cap);
    rlx__score_item__init(&h->item);
    h->item.id = t->id;
    h->item.prompt_text = s->prompts[prompt].text;
    h->item.response_text = h->response_text;
    h->item.target = s->prompts[prompt].target;
    h->item.scorer = s->scorer;
    h->item.kind = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT;
    return h;
}

const hub_kind_ops_t hub_text_ops = {
    .kind = KIND_TEXT,
    .config_check = text_config_check,
    .prompts = load_prompts,
    .work_fill = text_work_fill,
    .traj_check = text_check,
    .held_new = text_held_new,
};

const hub_kind_ops_t *hub_kind_ops(kind_t k) {
    switch (k) {
    case KIND_TEXT:
        return &hub_text_ops;
    case KIND_GFLOW:
        return &hub_gfn_ops;
    case KIND_DIFFUSION:
        return &hub_diffusion_ops;
    default:
        return NULL;
    }
}
