// test_rl.c: the learner's policy-gradient objective: leave-one-out advantages by hand, the
// on-policy gradient equals REINFORCE's, PPO clipping stops the gradient exactly where it
// should, and the full loss's parameter gradient (clip and KL on) matches finite differences.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "gpt.h"
#include "layers.h"
#include "rl.h"
#include "rng.h"
#include "testutil.h"

enum { N = 6, PL = 3, RL = 4 };

static void test_advantages(void) {
    rl_sample_t s[5] = {{.reward = 1, .group = 7}, {.reward = 0, .group = 7},
                        {.reward = 0, .group = 7}, {.reward = 5, .group = 9},
                        {.reward = 2, .group = 3}};
    rl_advantages(s, 5, 0);
    float got[5], want[5] = {1.0f, -0.5f, -0.5f, 0.0f, 0.0f};
    for (int i = 0; i < 5; i++)
        got[i] = s[i].advantage;
    tu_close("leave-one-out advantages", got, want, 5, 1e-6f, 0);
    rl_advantages(s, 5, 1);
    double sd = sqrt(2.0 / 9.0); // population std of {1, 0, 0}
    float wantn[5] = {(float)(1.0 / (sd + 1e-6)), (float)(-0.5 / (sd + 1e-6)),
                      (float)(-0.5 / (sd + 1e-6)), 0, 0};
    for (int i = 0; i < 5; i++)
        got[i] = s[i].advantage;
    tu_close("normalised advantages", got, wantn, 5, 1e-5f, 1e-5f);
}

int main(void) {
    tu_blas_core("test_rl");
    layers_set_threads(1);
    test_advantages();

    gpt_config_t cfg = {.n_layer = 1, .n_embd = 16, .n_head = 2, .ctx_len = 8, .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, N, 3), *ref = gpt_new(&cfg, N, 4);
    rng_t r;
    rng_seed(&r, 9);
    // Sharper distributions make ratios non-trivial; the reference is a perturbed copy (as
    // the initial policy is after some training), so the KL term stays O(0.1): against an
    // unrelated model exp(logp_ref - logp) reaches 1e4 and fp32 finite differences drown.
    for (size_t j = 0; j < m->ps.n; j++) {
        m->ps.w[j] *= 5.0f;
        ref->ps.w[j] = m->ps.w[j] * (1.0f + 0.1f * rng_normal(&r));
    }
    int toks[N][PL + RL];
    float blogp[N][RL];
    rl_sample_t s[N];
    int tok[N * 8], tgt[N * 8];
    for (int i = 0; i < N; i++) {
        toks[i][0] = GPT_TOK_BOS;
        for (int j = 1; j < PL + RL; j++)
            toks[i][j] = 'a' + (int)rng_below(&r, 5);
        s[i] = (rl_sample_t){.prompt_len = PL, .resp_len = RL - (i % 2), .tokens = toks[i],
                             .blogp = blogp[i], .reward = (float)(i % 3), .group = i / 3};
    }
    rl_advantages(s, N, 0);

    // On-policy (behaviour == current): dlogp = -A / denom on every response token.
    rl_config_t c = {.clip_eps = 0.2f, .kl_coef = 0, .normalize = 0};
    rl_stats_t st;
    rl_loss(m, NULL, s, N, N, &c, tok, tgt, &st); // first pass only to read current logp
    int T = m->T;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < s[i].resp_len; j++)
            blogp[i][j] = m->logp[i * T + PL - 1 + j];
    rl_loss(m, NULL, s, N, N, &c, tok, tgt, &st);
    float got[N * 8], want[N * 8];
    for (int i = 0; i < N * T; i++) {
        got[i] = m->dlogp[i];
        want[i] = 0;
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < s[i].resp_len; j++)
            want[i * T + PL - 1 + j] = -s[i].advantage / N;
    tu_close("on-policy dlogp == REINFORCE", got, want, (size_t)N * T, 1e-6f, 1e-5f);
    TU_CHECK(fabs(st.ratio_mean - 1) < 1e-5 && st.clip_frac == 0, "on-policy ratio %g clip %g",
             st.ratio_mean, st.clip_frac);

    // Off-policy: shift behaviour log-probs so some ratios leave [0.8, 1.2] on each side.
    for (int i = 0; i < N; i++)
        for (int j = 0; j < s[i].resp_len; j++)
            blogp[i][j] += (float)((j % 3) - 1) * 0.5f; // ratio e^0.5, 1, e^-0.5
    rl_loss(m, NULL, s, N, N, &c, tok, tgt, &st);
    int n_zero_expected = 0, n_bad = 0;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < s[i].resp_len; j++) {
            int k = i * T + PL - 1 + j;
            double rho = exp(m->logp[k] - blogp[i][j]), A = s[i].advantage;
            int clipped = (A > 0 && rho > 1.2) || (A < 0 && rho < 0.8);
            double w = clipped ? 0 : -A * rho / N;
            n_zero_expected += clipped;
            if (fabs(m->dlogp[k] - w) > 1e-6 + 1e-5 * fabs(w))
                n_bad++;
        }
    }
    TU_CHECK(n_bad == 0, "%d clipped-gradient entries wrong", n_bad);
    TU_CHECK(n_zero_expected > 0, "test data never hits the clip");
    TU_CHECK(st.clip_frac > 0, "clip fraction not reported");

    // Full loss with clipping and KL: parameter gradient vs central differences.
    c.kl_coef = 0.3f;
    rl_loss(m, ref, s, N, N, &c, tok, tgt, &st);
    TU_CHECK(st.kl > 0, "KL estimate %g not positive for different models", st.kl);
    paramset_zero_grad(&m->ps);
    gpt_backward(m);
    float fd[24], an[24];
    int idx[24];
    for (int q = 0; q < 24; q++) {
        idx[q] = (int)rng_below(&r, (uint32_t)m->ps.n);
        if (q < 6) // make sure the embedding rows the samples use are probed
            idx[q] = ('a' + q % 5) * cfg.n_embd + q;
        an[q] = m->ps.g[idx[q]];
    }
    for (int q = 0; q < 24; q++) {
        float *w = &m->ps.w[idx[q]], w0 = *w, h = 1e-2f * (fabsf(w0) > 0.1f ? fabsf(w0) : 0.1f);
        *w = w0 + h;
        rl_loss(m, ref, s, N, N, &c, tok, tgt, &st);
        double lp = st.loss;
        *w = w0 - h;
        rl_loss(m, ref, s, N, N, &c, tok, tgt, &st);
        double lm = st.loss;
        *w = w0;
        fd[q] = (float)((lp - lm) / (2.0 * h));
    }
    // fp32 forward passes and a step of 1% of the weight: finite differences carry ~1e-3 of
    // noise, and a probe may straddle a clip boundary; a wrong gradient is off by O(1).
    tu_close("rl loss grad vs finite diff", an, fd, 24, 2e-3f, 5e-2f);

    gpt_destroy(&m);
    gpt_destroy(&ref);
    return tu_finish("test_rl");
}
