// gfn_ckpt.c: see gfn_ckpt.h.
#include "gfn_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "paramset.h"

void gfn_ckpt_config(const gfn_policy_t *p, int32_t config[CKPT_CONFIG_LEN]) {
    memset(config, 0, CKPT_CONFIG_LEN * sizeof *config);
    config[0] = GFN_CKPT_ENV_HYPERGRID;
    config[1] = p->env.ndim;
    config[2] = p->env.height;
    config[3] = p->cfg.hidden;
    config[4] = p->cfg.n_blocks;
    config[5] = p->cfg.uniform_pb;
    config[6] = p->cfg.state_flow;
}

int gfn_ckpt_save(const gfn_policy_t *p, const char *path, int with_opt, const void *extra,
                  size_t extra_len, char *err, size_t errlen) {
    int32_t cfg[CKPT_CONFIG_LEN];
    gfn_ckpt_config(p, cfg);
    const paramset_t *ps = &p->net->ps;
    uint64_t nb = ps->n * sizeof(float);
    int64_t step = ps->step;
    gfn_ckpt_logz_t lz = {.w = p->logz.w[0], .step = p->logz.step};
    if (with_opt) {
        lz.m = p->logz.m[0];
        lz.v = p->logz.v[0];
    }
    ckpt_section_t sec[6];
    int ns = 0;
    sec[ns++] = (ckpt_section_t){"params", ps->w, nb};
    if (with_opt) {
        sec[ns++] = (ckpt_section_t){"adam_m", ps->m, nb};
        sec[ns++] = (ckpt_section_t){"adam_v", ps->v, nb};
    }
    sec[ns++] = (ckpt_section_t){"adam_step", &step, sizeof step};
    sec[ns++] = (ckpt_section_t){"logz", &lz, sizeof lz};
    if (extra && extra_len)
        sec[ns++] = (ckpt_section_t){"extra", extra, extra_len};
    return ckpt_write(path, CKPT_KIND_GFN, cfg, sec, ns, err, errlen);
}

void *gfn_ckpt_blob(const gfn_policy_t *p, const char *dir, size_t *len, char *err, size_t errlen) {
    (void)dir;
    ckpt_capture_begin(); // the file's bytes, in memory
    if (gfn_ckpt_save(p, "gflownet weights", 0, NULL, 0, err, errlen) != 0) {
        free(ckpt_capture_end(len, NULL, 0));
        return NULL;
    }
    return ckpt_capture_end(len, err, errlen);
}

int gfn_ckpt_describe(const ckpt_t *c, gfn_grid_t *g, gfn_policy_config_t *pc, char *err,
                      size_t errlen) {
    if (ckpt_kind(c) != CKPT_KIND_GFN) {
        snprintf(err, errlen, "checkpoint holds model kind %u, not a gflownet policy (%d)",
                 ckpt_kind(c), CKPT_KIND_GFN);
        return -1;
    }
    const int32_t *k = ckpt_config(c);
    if (k[0] != GFN_CKPT_ENV_HYPERGRID || k[1] < 1 || k[1] > 64 || k[2] < 2 || k[2] > 1024 ||
        k[3] < 1 || k[3] > 65536 || k[4] < 0 || k[4] > 64 || (k[5] != 0 && k[5] != 1) ||
        (k[6] != 0 && k[6] != 1)) {
        snprintf(err, errlen,
                 "gflownet checkpoint with a bad config (env %d D %d H %d hidden %d "
                 "blocks %d)",
                 k[0], k[1], k[2], k[3], k[4]);
        return -1;
    }
    double states = 1;
    for (int d = 0; d < k[1]; d++)
        states *= k[2];
    if (states >= 2147483648.0) {
        snprintf(err, errlen, "gflownet checkpoint: H^D = %d^%d states is too many", k[2], k[1]);
        return -1;
    }
    *g = gfn_grid(k[1], k[2]);
    *pc = gfn_policy_defaults();
    pc->hidden = k[3];
    pc->n_blocks = k[4];
    pc->uniform_pb = k[5];
    pc->state_flow = k[6];
    return 0;
}

int gfn_ckpt_load(gfn_policy_t *p, const ckpt_t *c, char *err, size_t errlen) {
    int32_t have[CKPT_CONFIG_LEN];
    gfn_ckpt_config(p, have);
    if (ckpt_kind(c) != CKPT_KIND_GFN || memcmp(have, ckpt_config(c), sizeof have) != 0) {
        snprintf(err, errlen, "gflownet checkpoint of another config (or kind) than the policy");
        return -1;
    }
    uint64_t n = 0;
    const gfn_ckpt_logz_t *lz = ckpt_section(c, "logz", &n);
    if (!lz || n != sizeof *lz) {
        snprintf(err, errlen, "gflownet checkpoint without a 'logz' section");
        return -1;
    }
    if (paramset_load(&p->net->ps, c, err, errlen) != 0)
        return -1;
    p->logz.w[0] = lz->w;
    p->logz.m[0] = lz->m;
    p->logz.v[0] = lz->v;
    p->logz.step = lz->step;
    return 0;
}

gfn_policy_t *gfn_ckpt_policy(const ckpt_t *c, int max_traj, char *err, size_t errlen) {
    gfn_grid_t g;
    gfn_policy_config_t pc;
    if (gfn_ckpt_describe(c, &g, &pc, err, errlen) != 0)
        return NULL;
    gfn_policy_t *p = gfn_policy_new(&g, &pc, max_traj, 1);
    if (gfn_ckpt_load(p, c, err, errlen) != 0)
        gfn_policy_destroy(&p);
    return p;
}
