// test_text_gfn.c: GFlowNet trajectory balance on text (learner/text_gfn.h) and the
// "seqmodes" scorer. The scorer's values by hand; the task file read as the hub reads it; the
// enumeration's numbering; the exact evaluation on policies whose distribution is known in
// closed form (a zero output layer is uniform over the alphabet: p = 1/|A|^L) or computed
// independently (full forwards of the unmasked model with a float64 log-softmax over the
// alphabet), a reward equal to the model's own distribution (L1 = 0, true log Z known), the
// modes and their count; the sampler with the alphabet draws from exactly that distribution
// (its log-probs, and the empirical L1 of 40k samples); the TB gradient against central finite
// differences (log Z and model parameters) and split into shards; the log Z table's
// checkpoint record; and a short on-policy TB run that drives the exact L1 down.
//
// Measurement mode (outside ctest): TEXT_GFN_TRAIN="alphabet,L,trajectories[,batch[,seed[,lr]]]"
// trains once in-process on the seqmodes task of the docs (beta TEXT_GFN_BETA, default 6) and
// prints the exact L1 curve, e.g.  TEXT_GFN_TRAIN=ab,8,32000,16 build/test_text_gfn
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adamw.h"
#include "bytetok.h"
#include "gpt.h"
#include "layers.h"
#include "sampler.h"
#include "scorers.h"
#include "testutil.h"
#include "text_gfn.h"
#include "util.h"

static char tmpdir[64];

// Writes text to tmpdir/name and returns the path (static buffer, one at a time).
static const char *write_file(const char *name, const char *text) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

static void alpha_of(const char *s, int *out, int *n) {
    *n = (int)strlen(s);
    for (int i = 0; i < *n; i++)
        out[i] = (unsigned char)s[i];
}

// ---- the scorer ---------------------------------------------------------------------------

static void test_seqmodes(void) {
    int id = scorer_find("seqmodes");
    TU_CHECK(id >= 0 && !scorer_is_payload(id), "seqmodes is a built-in text scorer");
    TU_CHECK(strstr(scorer_list(), "seqmodes") != NULL, "scorer_list names seqmodes");
    struct {
        const char *resp, *target;
        double want;
    } cases[] = {
        {"aaaa", "aaaa:1,bbbb:0.5", 1.0},
        {"aaab", "aaaa:1,bbbb:0.5", 0.75},
        {"bbbb", "aaaa:1,bbbb:0.5", 0.5},
        {"bbba", "aaaa:1,bbbb:0.5", 0.375},
        {"abab", "aaaa,bbbb", 0.5},
        {"aa", "aaaa", 0.5},
        {"aaaaaa", "aaaa", 4.0 / 6.0},
        {"abcd", "", 0.0},
        {"abab", "abab:2", 2.0},
        {"", "ab", 0.0},
        {"ba", "ab:1,ba:0.25,bb:0.1", 0.25},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double got = scorer_score(id, "p", cases[k].resp, cases[k].target);
        TU_CHECK(fabs(got - cases[k].want) < 1e-6, "seqmodes(%s | %s) = %g, want %g", cases[k].resp,
                 cases[k].target, got, cases[k].want);
    }
}

// ---- the task -----------------------------------------------------------------------------

static void test_task(void) {
    const char *path = write_file("task.tsv", ">\taaaa:1,bbbb:0.5\n\nxy\tabab\r\nno target\n");
    int al[8], na;
    alpha_of("ab", al, &na);
    text_gfn_task_t t;
    char err[256];
    TU_CHECK(text_gfn_task_load(&t, path, al, na, 4, err, sizeof err) == 0, "task: %s", err);
    TU_CHECK(t.n_prompts == 3, "%d prompts, want 3 (the empty line skipped)", t.n_prompts);
    if (t.n_prompts == 3) {
        TU_CHECK(!strcmp(t.text[0], ">") && !strcmp(t.target[0], "aaaa:1,bbbb:0.5"), "line 1");
        TU_CHECK(!strcmp(t.text[1], "xy") && !strcmp(t.target[1], "abab"), "line 2 (CRLF)");
        TU_CHECK(!strcmp(t.text[2], "no target") && !strcmp(t.target[2], ""), "line 3");
        TU_CHECK(t.n_tokens[1] == 3 && t.tokens[1][0] == GPT_TOK_BOS && t.tokens[1][1] == 'x',
                 "prompt tokens are BOS + bytes");
        TU_CHECK(t.max_prompt == 10 && t.n_seqs == 16 && t.length == 4, "sizes");
    }
    // Numbering: index <-> tokens, first token most significant.
    int ok = 1, x[4];
    for (int64_t i = 0; i < t.n_seqs; i++) {
        text_gfn_seq_tokens(&t, i, x);
        ok &= text_gfn_seq_index(&t, x, 4) == i;
    }
    TU_CHECK(ok, "text_gfn_seq_tokens/text_gfn_seq_index round trip");
    text_gfn_seq_tokens(&t, 6, x);
    TU_CHECK(x[0] == 'a' && x[1] == 'b' && x[2] == 'b' && x[3] == 'a', "sequence 6 is abba");
    int y[4] = {'a', 'c', 'a', 'a'};
    TU_CHECK(text_gfn_seq_index(&t, y, 4) == -1 && text_gfn_seq_index(&t, x, 3) == -1,
             "outside the alphabet or another length: no index");
    // What the learner refuses.
    uint32_t p1[3] = {GPT_TOK_BOS, 'x', 'y'}, r[4] = {'a', 'b', 'b', 'a'};
    uint32_t rbad[4] = {'a', 'b', GPT_TOK_EOS, 'a'};
    TU_CHECK(text_gfn_check(&t, 1, p1, 3, r, 4) == NULL, "a good trajectory");
    TU_CHECK(text_gfn_check(&t, 0, p1, 3, r, 4) != NULL, "prompt of another id");
    TU_CHECK(text_gfn_check(&t, 3, p1, 3, r, 4) != NULL, "prompt id out of range");
    TU_CHECK(text_gfn_check(&t, 1, p1, 3, r, 3) != NULL, "short response");
    TU_CHECK(text_gfn_check(&t, 1, p1, 3, rbad, 4) != NULL, "token outside the alphabet");
    text_gfn_task_free(&t);
    // Bad alphabets and sizes.
    alpha_of("aa", al, &na);
    TU_CHECK(text_gfn_task_load(&t, path, al, na, 4, err, sizeof err) == -1, "repeated byte");
    alpha_of("a", al, &na);
    TU_CHECK(text_gfn_task_load(&t, path, al, na, 4, err, sizeof err) == -1, "one byte");
    alpha_of("a\xc3", al, &na);
    TU_CHECK(text_gfn_task_load(&t, path, al, na, 4, err, sizeof err) == -1, "a non-ASCII byte");
    alpha_of("ab", al, &na);
    TU_CHECK(text_gfn_task_load(&t, path, al, na, 21, err, sizeof err) == -1, "2^21 sequences");
    TU_CHECK(text_gfn_task_load(&t, "/nonexistent/x.tsv", al, na, 4, err, sizeof err) == -1,
             "missing file");
}

// ---- exact evaluation ---------------------------------------------------------------------

typedef struct {
    text_gfn_task_t t;
    gpt_t *m;
    int *tok, *tgt;
} fixture_t;

// Task (alphabet, L, one prompt line) and a small gpt of max_batch mb with the alphabet mask.
static void fixture(fixture_t *f, const char *alphabet, int L, const char *line, int mb,
                    float sharpen, uint64_t seed) {
    int al[16], na;
    alpha_of(alphabet, al, &na);
    char err[256];
    TU_CHECK(text_gfn_task_load(&f->t, write_file("fx.tsv", line), al, na, L, err, sizeof err) == 0,
             "fixture: %s", err);
    gpt_config_t cfg = {.n_layer = 2,
                        .n_embd = 16,
                        .n_head = 2,
                        .ctx_len = f->t.max_prompt + L,
                        .vocab = GPT_VOCAB};
    f->m = gpt_new(&cfg, mb, seed);
    for (size_t j = 0; j < f->m->ps.n; j++)
        f->m->ps.w[j] *= sharpen;
    gpt_set_vocab_mask(f->m, f->t.alphabet, f->t.n_alpha);
    f->tok = calloc((size_t)mb * cfg.ctx_len, sizeof(int));
    f->tgt = calloc((size_t)mb * cfg.ctx_len, sizeof(int));
}

static void fixture_free(fixture_t *f) {
    text_gfn_task_free(&f->t);
    gpt_destroy(&f->m);
    free(f->tok);
    free(f->tgt);
}

// log p(y) of sequence i, independently: one full forward of the UNMASKED model over
// prompt + y, and a float64 log-softmax over the alphabet at each response position.
static double logp_independent(fixture_t *f, gpt_t *plain, int64_t i) {
    int pl = f->t.n_tokens[0], L = f->t.length, T = pl + L, seq[64];
    memcpy(seq, f->t.tokens[0], (size_t)pl * sizeof(int));
    text_gfn_seq_tokens(&f->t, i, seq + pl);
    gpt_forward(plain, seq, NULL, 1, T - 1);
    double s = 0;
    for (int j = 0; j < L; j++) {
        const float *lg = plain->a.logits + (size_t)(pl - 1 + j) * GPT_VOCAB;
        double mx = -INFINITY, z = 0;
        for (int a = 0; a < f->t.n_alpha; a++)
            mx = fmax(mx, lg[f->t.alphabet[a]]);
        for (int a = 0; a < f->t.n_alpha; a++)
            z += exp(lg[f->t.alphabet[a]] - mx);
        s += lg[seq[pl + j]] - mx - log(z);
    }
    return s;
}

static void test_uniform(void) {
    // A zero output layer (wte) gives zero logits: uniform over the alphabet, p = 1/|A|^L.
    fixture_t f;
    fixture(&f, "abc", 4, "q\tabca:1,cccc:0.6\n", 7, 1.0f, 3);
    memset(f.m->w.wte, 0, (size_t)GPT_VOCAB * f.m->cfg.n_embd * sizeof(float));
    char err[256];
    const float beta = 5.0f;
    text_gfn_eval_t *e =
        text_gfn_eval_from_scorer(&f.t, scorer_find("seqmodes"), beta, err, sizeof err);
    TU_CHECK(e != NULL, "evaluator: %s", err);
    if (!e) {
        fixture_free(&f);
        return;
    }
    int64_t N = f.t.n_seqs; // 81
    double *lp = malloc((size_t)N * sizeof(double)), *r = malloc((size_t)N * sizeof(double));
    text_gfn_seq_logp(e, f.m, 0, f.tok, f.tgt, lp);
    double worst = 0, z = 0;
    char text[8];
    int x[4], sid = scorer_find("seqmodes");
    for (int64_t i = 0; i < N; i++) {
        worst = fmax(worst, fabs(lp[i] + 4 * log(3.0)));
        text_gfn_seq_tokens(&f.t, i, x);
        bytetok_decode_response(x, 4, GPT_VOCAB, text, sizeof text);
        r[i] = exp(beta * scorer_score(sid, "q", text, "abca:1,cccc:0.6"));
        z += r[i];
    }
    TU_CHECK(worst < 1e-5, "uniform model: |log p + 4 log 3| up to %.3g", worst);
    double l1 = 0;
    for (int64_t i = 0; i < N; i++)
        l1 += fabs(1.0 / N - r[i] / z);
    float lz = 1.5f;
    text_gfn_result_t res;
    text_gfn_evaluate(e, f.m, &lz, f.tok, f.tgt, &res);
    printf("uniform over 3^4: L1 %.6f (closed form %.6f), log Z %.5f (closed form %.5f)\n", res.l1,
           l1, res.logz_true, log(z));
    TU_CHECK(fabs(res.l1 - l1) < 1e-5, "uniform: L1 %.7f, closed form %.7f", res.l1, l1);
    TU_CHECK(fabs(res.logz_true - log(z)) < 1e-6, "true log Z %.9f, want %.9f", res.logz_true,
             log(z));
    TU_CHECK(fabs(res.logz_err - fabs(1.5 - log(z))) < 1e-6, "log Z error");
    TU_CHECK(fabs(res.mass - 1) < 1e-5, "mass %.7f", res.mass);
    // Modes: abca (score 1) and cccc (0.6; its neighbours 0.45 or 0.5 from abca) beat all
    // their neighbours; nothing else does.
    int64_t modes[4];
    int nm = text_gfn_eval_modes(e, 0, modes, 4);
    int ia[4] = {'a', 'b', 'c', 'a'}, ic[4] = {'c', 'c', 'c', 'c'};
    TU_CHECK(nm == 2 && modes[0] == text_gfn_seq_index(&f.t, ia, 4) &&
                 modes[1] == text_gfn_seq_index(&f.t, ic, 4),
             "modes: %d (want abca, cccc)", nm);
    TU_CHECK(fabs(res.mode_mass - 2.0 / N) < 1e-6 && res.n_modes == 2 && res.modes_found == 0,
             "mode mass %.6f, modes %d found %d", res.mode_mass, res.n_modes, res.modes_found);
    int other[4] = {'b', 'b', 'b', 'b'};
    text_gfn_eval_observe(e, 0, ic, 4);
    text_gfn_eval_observe(e, 0, ic, 4);
    text_gfn_eval_observe(e, 0, other, 4);
    text_gfn_eval_observe(e, 0, other, 3); // not an object: ignored
    TU_CHECK(text_gfn_eval_modes_found(e) == 1, "modes found %d after seeing cccc twice",
             text_gfn_eval_modes_found(e));
    text_gfn_eval_destroy(&e);
    TU_CHECK(e == NULL, "destroy nulls");
    free(lp);
    free(r);
    fixture_free(&f);
}

static void test_exact_vs_independent(void) {
    // A sharp random model, batches of 5 (81 = 16 * 5 + 1: a partial last batch).
    fixture_t f;
    fixture(&f, "xyz", 4, "prompt\tzzzz\n", 5, 5.0f, 8);
    gpt_t *plain = gpt_new(&f.m->cfg, 1, 0);
    memcpy(plain->ps.w, f.m->ps.w, f.m->ps.n * sizeof(float));
    int64_t N = f.t.n_seqs;
    double *logr = calloc((size_t)N, sizeof(double)), *lp = malloc((size_t)N * sizeof(double));
    char err[256];
    text_gfn_eval_t *e = text_gfn_eval_new(&f.t, logr, err, sizeof err); // flat reward
    TU_CHECK(e && text_gfn_eval_modes(e, 0, NULL, 0) == 0, "a flat reward has no modes");
    text_gfn_seq_logp(e, f.m, 0, f.tok, f.tgt, lp);
    double worst = 0, mass = 0, spread = 0;
    for (int64_t i = 0; i < N; i++) {
        worst = fmax(worst, fabs(lp[i] - logp_independent(&f, plain, i)));
        mass += exp(lp[i]);
        spread = fmax(spread, fabs(lp[i] + 4 * log(3.0)));
    }
    printf("sharp model over 3^4: |log p - independent| up to %.2g, mass %.7f, max |log p - "
           "uniform| %.2f\n",
           worst, mass, spread);
    TU_CHECK(worst < 2e-5, "log p differs from the independent computation by %.3g", worst);
    TU_CHECK(fabs(mass - 1) < 2e-5, "sum of p = %.7f", mass);
    TU_CHECK(spread > 1.0, "the model is not far from uniform (%.3f): a weak check", spread);
    text_gfn_eval_destroy(&e);

    // Reward = the model's own distribution times e^3.7: L1 = 0, true log Z = 3.7.
    for (int64_t i = 0; i < N; i++)
        logr[i] = logp_independent(&f, plain, i) + 3.7;
    e = text_gfn_eval_new(&f.t, logr, err, sizeof err);
    float lz = 3.7f;
    text_gfn_result_t res;
    text_gfn_evaluate(e, f.m, &lz, f.tok, f.tgt, &res);
    printf("reward = the model's distribution: L1 %.2g, true log Z %.6f\n", res.l1, res.logz_true);
    TU_CHECK(res.l1 < 1e-4, "L1 %.3g, want 0", res.l1);
    TU_CHECK(fabs(res.logz_true - 3.7) < 1e-5 && res.logz_err < 1e-5, "log Z %.6f err %.3g",
             res.logz_true, res.logz_err);
    text_gfn_eval_destroy(&e);
    logr[5] = NAN;
    TU_CHECK(text_gfn_eval_new(&f.t, logr, err, sizeof err) == NULL, "a NaN log-reward is refused");

    // The sampler with the alphabet draws from exactly this distribution: its log-probs are
    // log p of each token, and 40k samples give a small empirical L1.
    enum { NS = 40000, SB = 500 };
    sampler_t *s = sampler_new(f.m, SB);
    int *prompt = malloc(SB * f.t.n_tokens[0] * sizeof(int)), off[SB + 1];
    for (int i = 0; i < SB; i++) {
        off[i] = i * f.t.n_tokens[0];
        memcpy(prompt + off[i], f.t.tokens[0], f.t.n_tokens[0] * sizeof(int));
    }
    off[SB] = SB * f.t.n_tokens[0];
    sample_config_t sc = {.temperature = 1,
                          .max_new = 4,
                          .stop = {GPT_TOK_EOS},
                          .n_stop = 1,
                          .seed = 77,
                          .allowed = f.t.alphabet,
                          .n_allowed = f.t.n_alpha};
    int out[SB * 4], len[SB];
    float olp[SB * 4];
    double *count = calloc((size_t)N, sizeof(double)), lp_err = 0;
    int bad = 0;
    for (int k = 0; k < NS / SB; k++) {
        TU_CHECK(sampler_generate(s, prompt, off, SB, &sc, (uint64_t)k * SB, out, olp, len) == 0,
                 "sampling failed");
        for (int i = 0; i < SB; i++) {
            int64_t idx = len[i] == 4 ? text_gfn_seq_index(&f.t, out + 4 * i, 4) : -1;
            if (idx < 0) {
                bad++;
                continue;
            }
            count[idx] += 1.0 / NS;
            double sum = olp[4 * i] + olp[4 * i + 1] + olp[4 * i + 2] + olp[4 * i + 3];
            lp_err = fmax(lp_err, fabs(sum - lp[idx]) / fmax(1, fabs(lp[idx])));
        }
    }
    double el1 = 0;
    for (int64_t i = 0; i < N; i++)
        el1 += fabs(count[i] - exp(lp[i]));
    printf("sampler with the alphabet: %d samples, sum of behaviour log-probs - log p up to "
           "%.2g (relative), empirical L1 %.4f\n",
           NS, lp_err, el1);
    TU_CHECK(bad == 0, "%d samples not 4 tokens of the alphabet", bad);
    TU_CHECK(lp_err < 1e-4, "behaviour log-probs differ from log p by %.3g", lp_err);
    // sum_i E|count_i - p_i| ~ sum_i sqrt(2 p_i (1 - p_i) / (pi NS)) <= 0.033 for 81 cells.
    TU_CHECK(el1 < 0.06, "empirical L1 %.4f of the sampler vs the exact p", el1);
    sampler_destroy(&s);
    free(prompt);
    free(count);
    free(logr);
    free(lp);
    gpt_destroy(&plain);
    fixture_free(&f);
}

// ---- the loss -----------------------------------------------------------------------------

// The TB loss of samples under m (a fresh forward), in double.
static double tb_loss_value(fixture_t *f, const text_gfn_sample_t *s, int n, const float *logz,
                            int np) {
    float dz[4] = {0};
    text_gfn_stats_t st;
    (void)np;
    text_gfn_loss(f->m, s, n, logz, dz, n, f->tok, f->tgt, &st);
    return st.loss;
}

static void test_loss_gradient(void) {
    enum { N = 6, NP = 2 };
    fixture_t f;
    fixture(&f, "ab", 5, "p0\taaaaa\nprompt-1\tbbbbb\n", N, 3.0f, 21);
    int seqs[N][16];
    text_gfn_sample_t s[N];
    float blogp[N][5];
    for (int i = 0; i < N; i++) {
        int p = i % NP, pl = f.t.n_tokens[p];
        memcpy(seqs[i], f.t.tokens[p], pl * sizeof(int));
        text_gfn_seq_tokens(&f.t, (i * 11 + 3) % f.t.n_seqs, seqs[i] + pl);
        for (int j = 0; j < 5; j++)
            blogp[i][j] = -0.7f;
        s[i] = (text_gfn_sample_t){.prompt_len = pl,
                                   .resp_len = 5,
                                   .tokens = seqs[i],
                                   .blogp = blogp[i],
                                   .logr = 2.0f * (float)(i % 3),
                                   .prompt = p};
    }
    float logz[NP] = {0.4f, -1.1f}, dz[NP] = {0, 0};
    text_gfn_stats_t st;
    text_gfn_loss(f.m, s, N, logz, dz, N, f.tok, f.tgt, &st);
    // The loss from its definition, and dlogp = 2 r_i / N on each response position.
    int T = f.m->T;
    double want = 0, dlogp_err = 0;
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int j = 0; j < 5; j++)
            sum += f.m->logp[i * T + s[i].prompt_len - 1 + j];
        double r = logz[s[i].prompt] + sum - s[i].logr;
        want += r * r / N;
        for (int j = 0; j < 5; j++)
            dlogp_err =
                fmax(dlogp_err, fabs(f.m->dlogp[i * T + s[i].prompt_len - 1 + j] - 2 * r / N));
    }
    TU_CHECK(fabs(st.loss - want) < 1e-9 * fmax(1, want), "loss %.9g, want %.9g", st.loss, want);
    TU_CHECK(dlogp_err < 1e-6, "dlogp off by %.3g", dlogp_err);
    TU_CHECK(st.tokens == N * 5, "tokens %d", st.tokens);
    // d/dlog Z by central differences (the loss is quadratic in log Z: exact up to rounding).
    for (int p = 0; p < NP; p++) {
        float z0 = logz[p], h = 1e-2f;
        logz[p] = z0 + h;
        double up = tb_loss_value(&f, s, N, logz, NP);
        logz[p] = z0 - h;
        double dn = tb_loss_value(&f, s, N, logz, NP);
        logz[p] = z0;
        double fd = (up - dn) / (2 * h);
        TU_CHECK(fabs(fd - dz[p]) < 1e-4 * fmax(1, fabs(fd)), "dlogZ[%d] %.6f, fd %.6f", p, dz[p],
                 fd);
    }
    // Parameters: TB loss -> dlogp -> gpt_backward against central differences.
    text_gfn_loss(f.m, s, N, logz, dz, N, f.tok, f.tgt, &st);
    paramset_zero_grad(&f.m->ps);
    gpt_backward(f.m);
    float *g = malloc(f.m->ps.n * sizeof(float)), *pick = malloc(f.m->ps.n * sizeof(float));
    memcpy(g, f.m->ps.g, f.m->ps.n * sizeof(float));
    memcpy(pick, g, f.m->ps.n * sizeof(float));
    enum { NCHK = 40 };
    float got[NCHK], fd[NCHK];
    double gmax = 0;
    for (int k = 0; k < NCHK; k++) {
        size_t j;
        if (k < NCHK / 2) { // the largest remaining |g|
            j = 0;
            for (size_t q = 0; q < f.m->ps.n; q++)
                if (fabsf(pick[q]) > fabsf(pick[j]))
                    j = q;
        } else {
            j = ((size_t)k * 40503u * 7919u) % f.m->ps.n;
        }
        float w0 = f.m->ps.w[j], h = 1e-3f;
        f.m->ps.w[j] = w0 + h;
        double up = tb_loss_value(&f, s, N, logz, NP);
        f.m->ps.w[j] = w0 - h;
        double dn = tb_loss_value(&f, s, N, logz, NP);
        f.m->ps.w[j] = w0;
        got[k] = g[j];
        fd[k] = (float)((up - dn) / (2 * h));
        gmax = fmax(gmax, fabs(g[j]));
        pick[j] = 0; // so the next pick is another one
    }
    TU_CHECK(gmax > 0.1, "largest gradient %.3g: a weak check", gmax);
    tu_close("TB gradient vs finite differences", got, fd, NCHK, (float)(1e-3 * gmax), 1e-2f);

    // Shards: two halves with the global denominator add up to the whole batch's gradient.
    text_gfn_loss(f.m, s, N, logz, dz, N, f.tok, f.tgt, &st);
    paramset_zero_grad(&f.m->ps);
    gpt_backward(f.m);
    memcpy(g, f.m->ps.g, f.m->ps.n * sizeof(float));
    float dz_all[NP] = {0}, dz_parts[NP] = {0};
    text_gfn_loss(f.m, s, N, logz, dz_all, N, f.tok, f.tgt, &st);
    double whole = st.loss, parts = 0;
    paramset_zero_grad(&f.m->ps);
    for (int h = 0; h < 2; h++) {
        text_gfn_loss(f.m, s + h * (N / 2), N / 2, logz, dz_parts, N, f.tok, f.tgt, &st);
        gpt_backward(f.m);
        parts += st.loss;
    }
    TU_CHECK(fabs(parts - whole) < 1e-6 * whole, "shard losses %.8g, whole %.8g", parts, whole);
    float gabs = 0; // float32 sums in another order: a tolerance relative to the largest
    for (size_t j = 0; j < f.m->ps.n; j++)
        gabs = fmaxf(gabs, fabsf(g[j]));
    tu_close("shard gradients add up", f.m->ps.g, g, f.m->ps.n, 1e-5f * gabs, 1e-4f);
    tu_close("shard log Z gradients add up", dz_parts, dz_all, NP, 1e-5f, 1e-5f);
    free(g);
    free(pick);
    fixture_free(&f);
}

static void test_logz_record(void) {
    text_gfn_logz_t a, b, c;
    text_gfn_logz_init(&a, 3, 0.5f);
    for (int i = 0; i < 3; i++) {
        a.ps.w[i] = 1.0f + i;
        a.ps.m[i] = 0.1f * i;
        a.ps.v[i] = 0.01f * i;
    }
    a.ps.step = 17;
    size_t n = text_gfn_logz_bytes(&a);
    char *buf = malloc(n);
    text_gfn_logz_pack(&a, buf);
    text_gfn_logz_init(&b, 3, 0.0f);
    char err[256];
    TU_CHECK(text_gfn_logz_unpack(&b, buf, n, err, sizeof err) == 0, "unpack: %s", err);
    TU_CHECK(b.ps.step == 17 && b.ps.w[2] == 3.0f && b.ps.m[1] == a.ps.m[1] &&
                 b.ps.v[2] == a.ps.v[2],
             "the table comes back");
    text_gfn_logz_init(&c, 2, 0.25f);
    TU_CHECK(text_gfn_logz_unpack(&c, buf, n, err, sizeof err) == -1 && c.ps.w[0] == 0.25f,
             "another table size is refused, nothing changed");
    buf[0] = 'X';
    TU_CHECK(text_gfn_logz_unpack(&b, buf, n, err, sizeof err) == -1, "bad magic refused");
    TU_CHECK(text_gfn_logz_unpack(&b, buf, 4, err, sizeof err) == -1, "short record refused");
    free(buf);
    text_gfn_logz_free(&a);
    text_gfn_logz_free(&b);
    text_gfn_logz_free(&c);
}

// ---- training in-process ------------------------------------------------------------------

typedef struct {
    double first_l1, final_l1, best_l1; // exact L1 at the start, end, and lowest seen
    double final_logz, logz_true;       // learned and true log Z at the end
    int modes_found, n_modes;           // at the end
    double seconds;                     // wall time
} train_result_t;

// On-policy TB: batches of `batch` responses sampled with the alphabet, rewards from the
// seqmodes scorer, AdamW (lr, log Z lr 0.1), for `trajectories`; prints the curve if verbose.
static train_result_t train(const char *alphabet, int L, const char *line, float beta, int batch,
                            long trajectories, float lr, uint64_t seed, long eval_every,
                            int verbose) {
    train_result_t res = {0};
    fixture_t f;
    fixture(&f, alphabet, L, line, batch, 1.0f, seed);
    gpt_destroy(&f.m); // the learner's fresh model: 2 layers, 64 wide
    gpt_config_t cfg = {
        .n_layer = 2, .n_embd = 64, .n_head = 4, .ctx_len = f.t.max_prompt + L, .vocab = GPT_VOCAB};
    f.m = gpt_new(&cfg, batch, seed);
    gpt_set_vocab_mask(f.m, f.t.alphabet, f.t.n_alpha);
    free(f.tok);
    free(f.tgt);
    f.tok = calloc((size_t)batch * cfg.ctx_len, sizeof(int));
    f.tgt = calloc((size_t)batch * cfg.ctx_len, sizeof(int));
    int sid = scorer_find("seqmodes");
    char err[256];
    text_gfn_eval_t *e = text_gfn_eval_from_scorer(&f.t, sid, beta, err, sizeof err);
    text_gfn_logz_t z;
    text_gfn_logz_init(&z, 1, 0.0f);
    adamw_config_t on = adamw_defaults(), oz = adamw_defaults();
    on.lr = lr;
    on.grad_clip = 1.0f;
    oz.lr = 0.1f;
    sampler_t *s = sampler_new(f.m, batch);
    int pl = f.t.n_tokens[0];
    int *prompt = malloc((size_t)batch * pl * sizeof(int)),
        *off = malloc((batch + 1) * sizeof(int));
    int *out = malloc((size_t)batch * L * sizeof(int)), *len = malloc(batch * sizeof(int));
    int *seqs = malloc((size_t)batch * (pl + L) * sizeof(int));
    float *olp = malloc((size_t)batch * L * sizeof(float));
    text_gfn_sample_t *smp = malloc(batch * sizeof *smp);
    for (int i = 0; i <= batch; i++)
        off[i] = i * pl;
    for (int i = 0; i < batch; i++)
        memcpy(prompt + i * pl, f.t.tokens[0], pl * sizeof(int));
    sample_config_t sc = {.temperature = 1,
                          .max_new = L,
                          .seed = seed * 7919 + 1,
                          .allowed = f.t.alphabet,
                          .n_allowed = f.t.n_alpha};
    double t0 = rlx_now();
    text_gfn_result_t r;
    text_gfn_evaluate(e, f.m, z.ps.w, f.tok, f.tgt, &r);
    res.first_l1 = res.best_l1 = r.l1;
    char text[512];
    long done = 0;
    for (long step = 0; done < trajectories; step++) {
        sampler_generate(s, prompt, off, batch, &sc, (uint64_t)step * batch, out, olp, len);
        for (int i = 0; i < batch; i++) {
            int *q = seqs + i * (pl + L);
            memcpy(q, f.t.tokens[0], pl * sizeof(int));
            memcpy(q + pl, out + i * L, L * sizeof(int));
            bytetok_decode_response(out + i * L, L, GPT_VOCAB, text, sizeof text);
            smp[i] = (text_gfn_sample_t){
                .prompt_len = pl,
                .resp_len = L,
                .tokens = q,
                .blogp = olp + i * L,
                .logr = beta * scorer_score(sid, f.t.text[0], text, f.t.target[0]),
                .prompt = 0};
            text_gfn_eval_observe(e, 0, out + i * L, L);
        }
        text_gfn_stats_t st;
        paramset_zero_grad(&f.m->ps);
        paramset_zero_grad(&z.ps);
        text_gfn_loss(f.m, smp, batch, z.ps.w, z.ps.g, batch, f.tok, f.tgt, &st);
        gpt_backward(f.m);
        adamw_step(&f.m->ps, &on);
        adamw_step(&z.ps, &oz);
        long before = done;
        done += batch;
        if (done / eval_every != before / eval_every || done >= trajectories) {
            text_gfn_evaluate(e, f.m, z.ps.w, f.tok, f.tgt, &r);
            res.best_l1 = fmin(res.best_l1, r.l1);
            if (verbose)
                printf("trajectories %6ld  L1 %.4f  log Z %.3f (true %.3f)  modes %d/%d  loss "
                       "%.3f\n",
                       done, r.l1, z.ps.w[0], r.logz_true, r.modes_found, r.n_modes, st.loss);
        }
    }
    res.final_l1 = r.l1;
    res.final_logz = z.ps.w[0];
    res.logz_true = r.logz_true;
    res.modes_found = r.modes_found;
    res.n_modes = r.n_modes;
    res.seconds = rlx_now() - t0;
    free(prompt);
    free(off);
    free(out);
    free(len);
    free(seqs);
    free(olp);
    free(smp);
    sampler_destroy(&s);
    text_gfn_logz_free(&z);
    text_gfn_eval_destroy(&e);
    fixture_free(&f);
    return res;
}

// The task of docs/gflownet.md for an alphabet and length: three modes of unequal reward,
// a^L (1), (ba)^(L/2) (0.8) and z^L (0.6) with a, b the first two letters and z the last; each
// beats its neighbours for |A| = 2 and L = 6 or 8, and for |A| = 4 and L = 5.
static void task_line(const char *alphabet, int L, char *line, size_t cap) {
    char m[3][64];
    int n = (int)strlen(alphabet);
    for (int j = 0; j < L && j < 63; j++) {
        m[0][j] = alphabet[0];
        m[1][j] = alphabet[(j + 1) % 2];
        m[2][j] = alphabet[n - 1];
    }
    for (int k = 0; k < 3; k++)
        m[k][L < 63 ? L : 63] = 0;
    snprintf(line, cap, ">\t%s:1,%s:0.8,%s:0.6\n", m[0], m[1], m[2]);
}

static void test_training(void) {
    char line[256];
    task_line("ab", 6, line, sizeof line);
    train_result_t r = train("ab", 6, line, 6.0f, 16, 6400, 1e-3f, 1, 1600, 0);
    printf("in-process TB, |A|=2 L=6 (%s), 6400 trajectories: L1 %.4f -> %.4f (best %.4f), "
           "log Z %.3f (true %.3f), modes %d/%d, %.1f s\n",
           strtok(line + 2, "\n"), r.first_l1, r.final_l1, r.best_l1, r.final_logz, r.logz_true,
           r.modes_found, r.n_modes, r.seconds);
    TU_CHECK(r.first_l1 > 0.5, "the fresh model is far from the target (L1 %.3f)", r.first_l1);
    TU_CHECK(r.final_l1 < 0.25, "TB did not learn: L1 %.4f after 6400 trajectories", r.final_l1);
    TU_CHECK(r.modes_found == r.n_modes, "modes found %d of %d", r.modes_found, r.n_modes);
}

static int measure(const char *spec) {
    char alphabet[64] = "";
    int L = 0, batch = 16;
    long n = 0;
    unsigned long long seed = 1;
    float lr = 1e-3f;
    if (sscanf(spec, "%63[^,],%d,%ld,%d,%llu,%f", alphabet, &L, &n, &batch, &seed, &lr) < 3) {
        fprintf(stderr, "TEXT_GFN_TRAIN=alphabet,L,trajectories[,batch[,seed[,lr]]]\n");
        return 2;
    }
    const char *b = getenv("TEXT_GFN_BETA"), *ev = getenv("TEXT_GFN_EVAL_EVERY");
    char line[512];
    task_line(alphabet, L, line, sizeof line);
    printf("task: %s", line);
    train_result_t r = train(alphabet, L, line, b ? (float)atof(b) : 6.0f, batch, n, lr, seed,
                             ev ? atol(ev) : 1600, 1);
    printf("result: |A|=%zu L=%d batch %d lr %g seed %llu: L1 %.4f -> %.4f (best %.4f) after %ld "
           "trajectories; log Z %.3f (true %.3f); modes %d/%d; %.1f s\n",
           strlen(alphabet), L, batch, lr, seed, r.first_l1, r.final_l1, r.best_l1, n, r.final_logz,
           r.logz_true, r.modes_found, r.n_modes, r.seconds);
    return 0;
}

int main(void) {
    tu_blas_core("test_text_gfn");
    layers_set_threads(1);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rlx-test-tgfn-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const char *spec = getenv("TEXT_GFN_TRAIN");
    int rc = 0;
    if (spec && *spec) {
        rc = measure(spec);
    } else {
        test_seqmodes();
        test_task();
        test_uniform();
        test_exact_vs_independent();
        test_loss_gradient();
        test_logz_record();
        test_training();
        rc = tu_finish("test_text_gfn");
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
