// test_learner.c: the learner's numeric guards and shared pieces, without a run: PPO ratios of
// an impossible behaviour log-prob (-1e30) stay finite (loss and gradients), a step with a
// non-finite loss is skipped on every rank (the poisoned all-reduced gradient norm), a NaN in
// a metrics line is written as null and every line parses as strict JSON, and weight blobs
// serialised in memory are byte-identical to the file the same save writes.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ckpt.h"
#include "adamw.h"
#include "gpt.h"
#include "layers.h"
#include "learner_common.h"
#include "paramset.h"
#include "rl.h"
#include "testutil.h"

#define N 4
#define PL 3
#define RL 4

// A sample whose behaviour log-probs no sampler can produce: finite loss and gradient.
static void test_impossible_logprob(void) {
    gpt_config_t cfg = {.n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_len = 8, .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, N, 3);
    int toks[N][PL + RL], tok[N * 8], tgt[N * 8];
    float blogp[N][RL];
    rl_sample_t s[N];
    for (int i = 0; i < N; i++) {
        toks[i][0] = GPT_TOK_BOS;
        for (int j = 1; j < PL + RL; j++)
            toks[i][j] = 'a' + (i + j) % 5;
        for (int j = 0; j < RL; j++)
            blogp[i][j] = i == 0 ? -1e30f : -3.0f;
        s[i] = (rl_sample_t){.prompt_len = PL, .resp_len = RL, .tokens = toks[i],
                             .blogp = blogp[i], .reward = (float)(i % 2), .group = 0};
    }
    rl_advantages(s, N, 0);
    for (int k = 0; k < 2; k++) { // with and without PPO's clip
        rl_config_t c = {.clip_eps = k ? 0.0f : 0.2f};
        rl_stats_t st;
        paramset_zero_grad(&m->ps);
        rl_loss(m, NULL, s, N, N, &c, tok, tgt, &st);
        gpt_backward(m);
        float gn = adamw_grad_norm(&m->ps);
        TU_CHECK(isfinite(st.loss) && isfinite(st.ratio_mean) && isfinite(gn),
                 "blogp -1e30 (clip %g): loss %g ratio_mean %g grad_norm %g", c.clip_eps,
                 st.loss, st.ratio_mean, gn);
    }
    int clamped = 0;
    double r = rl_ratio(0.0, -1e30, &clamped);
    TU_CHECK(clamped && fabs(r - exp(RL_LOG_RATIO_MAX)) < 1e-3 * r, "rl_ratio(0, -1e30) = %g", r);
    r = rl_ratio(-1.0, -1.5, &clamped);
    TU_CHECK(!clamped && r == exp(0.5), "rl_ratio(-1, -1.5) = %g (clamped %d)", r, clamped);
    gpt_destroy(&m);
}

// The learner's skip decision: a rank whose loss is not finite poisons the gradient; after
// the all-reduce every rank sees a non-finite norm, and the parameters stay as they were.
static void test_skip_step(void) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    paramset_t ps = {0};
    size_t n = 8;
    float *buf = calloc(4 * n, sizeof(float));
    ps.n = n;
    ps.w = buf;
    ps.g = buf + n;
    ps.m = buf + 2 * n;
    ps.v = buf + 3 * n;
    for (size_t i = 0; i < n; i++) {
        ps.w[i] = 1.0f;
        ps.g[i] = 0.5f;
    }
    learner_poison_grad(&ps, 1.25); // finite: nothing happens
    learner_allreduce(&ps);
    float gn = adamw_grad_norm(&ps);
    TU_CHECK(learner_norms_finite(&gn, 1), "a finite step is not skipped (norm %g)", gn);
    learner_poison_grad(&ps, NAN);
    learner_allreduce(&ps);
    gn = adamw_grad_norm(&ps);
    int skip = !learner_norms_finite(&gn, 1);
    TU_CHECK(skip, "a step with a NaN loss is skipped (norm %g)", gn);
    adamw_config_t oc = adamw_defaults();
    if (!skip)
        adamw_step(&ps, &oc);
    TU_CHECK(ps.step == 0 && ps.w[1] == 1.0f, "skipped: parameters unchanged");
    TU_CHECK(learner_params_finite(&ps), "finite parameters are finite");
    ps.w[3] = INFINITY;
    TU_CHECK(!learner_params_finite(&ps), "an infinite parameter is found");
    free(buf);
}

// A metrics line with NaN and inf: null, and every line strict JSON.
static void test_metrics_nan(void) {
    char path[] = "/tmp/rlx_test_learner_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    json_object *o = json_object_new_object();
    learner_json_int(o, "step", 3);
    learner_json_num(o, "loss", NAN, "%.6f");
    learner_json_num(o, "grad_norm", INFINITY, "%.4f");
    learner_json_num(o, "lr", 1e-4, "%.3e");
    learner_json_write(f, o);
    learner_counts_t cnt = {.step = 3};
    hub_counters_t hc = {0};
    learner_guard_t guard = {.skipped_steps = 1};
    learner_write_summary(f, &cnt, &hc, &guard, 0, NAN);
    fclose(f);
    char *text = tu_read_file(path, NULL);
    TU_CHECK(text != NULL, "metrics file written");
    int lines = 0;
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save), lines++) {
        json_tokener *tk = json_tokener_new();
        json_tokener_set_flags(tk, JSON_TOKENER_STRICT);
        json_object *p = json_tokener_parse_ex(tk, line, (int)strlen(line));
        TU_CHECK(p && json_tokener_get_error(tk) == json_tokener_success,
                 "line %d is strict JSON: %s", lines, line);
        json_object *v = NULL;
        if (lines == 0) {
            TU_CHECK(json_object_object_get_ex(p, "loss", &v) && v == NULL, "NaN loss is null");
            TU_CHECK(json_object_object_get_ex(p, "grad_norm", &v) && v == NULL, "inf is null");
            TU_CHECK(json_object_object_get_ex(p, "lr", &v) && json_object_get_double(v) == 1e-4,
                     "lr kept");
        } else
            TU_CHECK(json_object_object_get_ex(p, "skipped_steps", &v) &&
                         json_object_get_int(v) == 1,
                     "summary counts skipped_steps");
        json_object_put(p);
        json_tokener_free(tk);
    }
    TU_CHECK(lines == 2, "two lines (got %d)", lines);
    free(text);
    unlink(path);
}

// Weights serialised in memory are the bytes of the file the same save writes.
static void test_blob_bytes(void) {
    gpt_config_t cfg = {.n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_len = 8, .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, 1, 5);
    paramset_t ps = m->ps;
    ps.m = ps.v = NULL;
    int32_t k[CKPT_CONFIG_LEN] = {1, 16, 2, 8, GPT_VOCAB};
    char path[] = "/tmp/rlx_test_blob_XXXXXX", err[256];
    close(mkstemp(path));
    size_t flen = 0, mlen = 0;
    TU_CHECK(paramset_save(&ps, path, CKPT_KIND_GPT, k, NULL, 0, err, sizeof err) == 0, "%s", err);
    void *file = ckpt_take_file(path, &flen, err, sizeof err);
    ckpt_capture_begin();
    TU_CHECK(paramset_save(&ps, "memory", CKPT_KIND_GPT, k, NULL, 0, err, sizeof err) == 0, "%s",
             err);
    void *mem = ckpt_capture_end(&mlen, err, sizeof err);
    TU_CHECK(file && mem && flen == mlen, "blob sizes: file %zu memory %zu", flen, mlen);
    if (file && mem && flen == mlen)
        tu_equal_bytes("in-memory weights blob", mem, file, flen);
    TU_CHECK(access("memory", F_OK) != 0, "capture wrote no file");
    ckpt_t *ck = mem ? ckpt_parse(mem, mlen, err, sizeof err) : NULL;
    TU_CHECK(ck != NULL, "the blob parses: %s", err);
    ckpt_destroy(&ck);
    TU_CHECK(ckpt_capture_end(&mlen, err, sizeof err) == NULL, "nothing captured: NULL");
    free(file);
    free(mem);
    gpt_destroy(&m);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    layers_set_threads(1);
    test_impossible_logprob();
    test_skip_step();
    test_metrics_nan();
    test_blob_bytes();
    int rc = tu_finish("test_learner");
    MPI_Finalize();
    return rc;
}
