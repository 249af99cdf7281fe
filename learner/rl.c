// rl.c: see rl.h.
#include "rl.h"

#include <assert.h>
#include <math.h>
#include <string.h>

double rl_ratio(double logp, double blogp, int *clamped) {
    double d = logp - blogp;
    int c = !(d >= -RL_LOG_RATIO_MAX && d <= RL_LOG_RATIO_MAX); // NaN counts as clamped
    if (clamped)
        *clamped = c;
    if (c)
        d = d > 0 ? RL_LOG_RATIO_MAX : -RL_LOG_RATIO_MAX;
    return exp(d);
}

void rl_advantages(rl_sample_t *s, int n, int normalize) {
    for (int i = 0; i < n; i++) {
        double sum = 0, sum2 = 0;
        int k = 0;
        for (int j = 0; j < n; j++) {
            if (s[j].group != s[i].group)
                continue;
            sum += s[j].reward;
            sum2 += (double)s[j].reward * s[j].reward;
            k++;
        }
        if (k < 2) {
            s[i].advantage = 0.0f;
            continue;
        }
        double a = s[i].reward - (sum - s[i].reward) / (k - 1);
        if (normalize) {
            double mean = sum / k, var = sum2 / k - mean * mean;
            a /= sqrt(var > 0 ? var : 0) + 1e-6;
        }
        s[i].advantage = (float)a;
    }
}

// Fills the (n, T) input/target batch: targets only at response positions.
static int build_batch(const gpt_t *m, const rl_sample_t *s, int n, int *tok, int *tgt) {
    int T = 1;
    for (int i = 0; i < n; i++) {
        int len = s[i].prompt_len + s[i].resp_len - 1;
        assert(s[i].prompt_len >= 1 && s[i].resp_len >= 1 && len <= m->cfg.ctx_len);
        if (len > T)
            T = len;
    }
    for (int i = 0; i < n; i++)
        gpt_response_row(tok + i * T, tgt + i * T, T, s[i].tokens, s[i].prompt_len,
                         s[i].resp_len);
    return T;
}

void rl_loss(gpt_t *m, gpt_t *ref, const rl_sample_t *s, int n, double denom,
             const rl_config_t *c, int *tok, int *tgt, rl_stats_t *st) {
    memset(st, 0, sizeof *st);
    int T = build_batch(m, s, n, tok, tgt);
    int use_kl = c->kl_coef > 0 && ref;
    float *ref_logp = NULL;
    if (use_kl) {
        gpt_forward(ref, tok, tgt, n, T);
        ref_logp = ref->logp;
    }
    gpt_forward(m, tok, tgt, n, T);
    memset(m->dlogp, 0, (size_t)n * T * sizeof(float));
    double ratio_sum = 0, clipped = 0, kl_sum = 0;
    for (int i = 0; i < n; i++) {
        double A = s[i].advantage;
        for (int j = 0; j < s[i].resp_len; j++) {
            int t = s[i].prompt_len - 1 + j, k = i * T + t;
            double lp = m->logp[k];
            int clamped = 0;
            double rho = rl_ratio(lp, s[i].blogp[j], &clamped);
            double obj = rho * A, g = clamped ? 0.0 : -A * rho; // d(-rho A)/dlogp
            if (c->clip_eps > 0) {
                double rc = rho < 1 - c->clip_eps ? 1 - c->clip_eps
                            : rho > 1 + c->clip_eps ? 1 + c->clip_eps
                                                    : rho;
                if (rc * A < obj) { // the clipped term is the minimum: no gradient
                    obj = rc * A;
                    g = 0;
                    clipped++;
                }
            }
            double loss = -obj;
            if (use_kl) {
                double q = ref_logp[k] - lp, k3 = exp(q) - q - 1;
                loss += c->kl_coef * k3;
                g += c->kl_coef * (1 - exp(q));
                kl_sum += k3;
            }
            m->dlogp[k] = (float)(g / denom);
            st->loss += loss / denom;
            ratio_sum += rho;
            st->tokens++;
        }
    }
    if (st->tokens > 0) {
        st->ratio_mean = ratio_sum / st->tokens;
        st->clip_frac = clipped / st->tokens;
        st->kl = kl_sum / st->tokens;
    }
}
