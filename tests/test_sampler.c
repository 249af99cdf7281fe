// test_sampler.c: the KV-cache sampler against full forward passes of the same gpt: greedy
// decoding equals step-by-step argmax, returned log-probs equal the forward pass's (at
// temperature 1 and under temperature/top-k), streams are reproducible and independent of
// batch composition, stop tokens end sequences, bad arguments are refused. With allowed tokens
// only those are drawn, and the log-probs are those of the softmax over the allowed set (at
// temperature 1, under temperature/top-k, and greedy).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpt.h"
#include "layers.h"
#include "sampler.h"
#include "testutil.h"

enum { B = 4, MAXNEW = 12 };
static const int plen[B] = {1, 3, 6, 2};

// Log-softmax of logits/temp restricted to the top k (k = 0: all), at token tok.
static double ref_logp(const float *logits, int V, double temp, int k, int tok) {
    double thr = -INFINITY;
    if (k > 0) {
        // k-th largest by repeated max (small V)
        float *c = malloc(V * sizeof(float));
        memcpy(c, logits, V * sizeof(float));
        for (int j = 0; j < k; j++) {
            int b = 0;
            for (int v = 1; v < V; v++)
                if (c[v] > c[b])
                    b = v;
            thr = c[b];
            c[b] = -INFINITY;
        }
        free(c);
    }
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++)
        if (logits[v] >= thr && logits[v] / temp > mx)
            mx = logits[v] / temp;
    for (int v = 0; v < V; v++)
        if (logits[v] >= thr)
            sum += exp(logits[v] / temp - mx);
    return logits[tok] / temp - mx - log(sum);
}

// The log-softmax over the allowed set (logits/temp, the top k of the set; k = 0: all of it) at
// token tok, and in *best the set's argmax.
static double ref_logp_allowed(const float *logits, const int *allowed, int n, double temp, int k,
                               int tok, int *best) {
    float sub[16];
    int bi = 0;
    for (int a = 0; a < n; a++) {
        sub[a] = logits[allowed[a]];
        bi = sub[a] > sub[bi] ? a : bi;
    }
    *best = allowed[bi];
    int pos = -1;
    for (int a = 0; a < n; a++)
        pos = allowed[a] == tok ? a : pos;
    return pos < 0 ? -INFINITY : ref_logp(sub, n, temp, k, pos);
}

static void check_allowed(gpt_t *m, sampler_t *s, const int *prompt, const int *off, double temp,
                          int k, const char *what) {
    static const int allowed[3] = {'x', GPT_TOK_SEP, 'b'};
    sample_config_t c = {.temperature = (float)temp,
                         .top_k = k,
                         .max_new = MAXNEW,
                         .seed = 9,
                         .allowed = allowed,
                         .n_allowed = 3};
    int tok[B * MAXNEW], len[B], V = m->cfg.vocab;
    float lp[B * MAXNEW];
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 500, tok, lp, len) == 0, "%s failed", what);
    int outside = 0, seen[3] = {0};
    for (int i = 0; i < B; i++) {
        TU_CHECK(len[i] == MAXNEW, "%s seq %d length %d", what, i, len[i]);
        int T = plen[i] + len[i], seq[64], tg[64];
        memcpy(seq, prompt + off[i], plen[i] * sizeof(int));
        memcpy(seq + plen[i], tok + i * MAXNEW, len[i] * sizeof(int));
        for (int t = 0; t < T; t++)
            tg[t] = t + 1 < T ? seq[t + 1] : -1;
        gpt_forward(m, seq, tg, 1, T);
        float ref[MAXNEW];
        for (int j = 0; j < len[i]; j++) {
            int t = tok[i * MAXNEW + j], best;
            outside += t != allowed[0] && t != allowed[1] && t != allowed[2];
            for (int a = 0; a < 3; a++)
                seen[a] |= t == allowed[a];
            const float *lg = m->a.logits + (size_t)(plen[i] - 1 + j) * V;
            ref[j] = (float)ref_logp_allowed(lg, allowed, 3, temp > 0 ? temp : 1.0,
                                             temp > 0 ? k : 0, t, &best);
            if (temp <= 0)
                TU_CHECK(t == best, "%s seq %d token %d: %d, the set's argmax %d", what, i, j, t,
                         best);
        }
        char name[96];
        snprintf(name, sizeof name, "%s seq %d logp", what, i);
        tu_close(name, lp + i * MAXNEW, ref, len[i], 2e-5f, 1e-4f);
    }
    TU_CHECK(outside == 0, "%s: %d tokens outside the allowed set", what, outside);
    if (temp >= 1 && k == 0)
        TU_CHECK(seen[0] + seen[1] + seen[2] >= 2, "%s: hardly any variety", what);
}

static void make_prompts(int *prompt, int *off) {
    off[0] = 0;
    for (int i = 0; i < B; i++) {
        off[i + 1] = off[i] + plen[i];
        for (int j = 0; j < plen[i]; j++)
            prompt[off[i] + j] = j == 0 ? GPT_TOK_BOS : 'a' + (i * 7 + j * 3) % 26;
    }
}

// Runs the full model on prompt i + its response and checks the response's log-probs and,
// for greedy decoding, that each token is the argmax.
static void check_against_forward(gpt_t *m, const int *prompt, const int *off, int i,
                                  const int *tok, const float *lp, int len, double temp, int k,
                                  int greedy, const char *what) {
    int T = plen[i] + len, V = m->cfg.vocab;
    int seq[64], tg[64];
    memcpy(seq, prompt + off[i], plen[i] * sizeof(int));
    memcpy(seq + plen[i], tok, len * sizeof(int));
    for (int t = 0; t < T; t++)
        tg[t] = t + 1 < T ? seq[t + 1] : -1;
    gpt_forward(m, seq, tg, 1, T);
    float ref[64];
    for (int j = 0; j < len; j++) {
        int t = plen[i] - 1 + j; // position whose logits produced response token j
        const float *lg = m->a.logits + (size_t)t * V;
        ref[j] = (float)ref_logp(lg, V, greedy ? 1.0 : temp, greedy ? 0 : k, tok[j]);
        if (greedy) {
            int best = 0;
            for (int v = 1; v < V; v++)
                if (lg[v] > lg[best])
                    best = v;
            TU_CHECK(best == tok[j], "%s seq %d token %d: sampler %d, argmax %d", what, i, j,
                     tok[j], best);
        }
    }
    char name[96];
    snprintf(name, sizeof name, "%s seq %d logp", what, i);
    // KV-cache decoding sums in another order than the batched forward: fp32 rounding only.
    tu_close(name, lp, ref, len, 2e-5f, 1e-4f);
}

int main(void) {
    tu_blas_core("test_sampler");
    layers_set_threads(1);
    gpt_config_t cfg = {.n_layer = 2, .n_embd = 32, .n_head = 4, .ctx_len = 24,
                        .vocab = GPT_VOCAB};
    gpt_t *m = gpt_new(&cfg, 1, 7);
    // Sharpen the random model so its distributions are far from uniform.
    for (size_t j = 0; j < m->ps.n; j++)
        m->ps.w[j] *= 6.0f;
    sampler_t *s = sampler_new(m, B);
    int prompt[32], off[B + 1];
    make_prompts(prompt, off);
    int tok[B * MAXNEW], len[B], tok2[B * MAXNEW], len2[B];
    float lp[B * MAXNEW], lp2[B * MAXNEW];

    // Greedy decoding equals argmax of full forward passes, step by step.
    sample_config_t c = {.temperature = 0, .top_k = 0, .max_new = MAXNEW, .n_stop = 0, .seed = 1};
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 0, tok, lp, len) == 0, "greedy failed");
    for (int i = 0; i < B; i++) {
        TU_CHECK(len[i] == MAXNEW, "greedy seq %d length %d", i, len[i]);
        check_against_forward(m, prompt, off, i, tok + i * MAXNEW, lp + i * MAXNEW, len[i], 1, 0,
                              1, "greedy");
    }

    // Temperature 1, no top-k: the sampler's log-probs are the model's.
    c.temperature = 1.0f;
    c.seed = 42;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 100, tok, lp, len) == 0, "t=1 failed");
    int distinct = 0;
    for (int i = 0; i < B; i++) {
        check_against_forward(m, prompt, off, i, tok + i * MAXNEW, lp + i * MAXNEW, len[i], 1, 0,
                              0, "t=1");
        for (int j = 0; j < len[i]; j++)
            distinct += tok[i * MAXNEW + j] != tok[i * MAXNEW];
    }
    TU_CHECK(distinct > 0, "t=1 samples are all one token");

    // Reproducible, and a sequence's sample does not depend on its batch-mates.
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 100, tok2, lp2, len2) == 0, "repeat failed");
    tu_equal_bytes("t=1 repeat tokens", tok, tok2, sizeof tok);
    int off1[2] = {0, plen[2]};
    TU_CHECK(sampler_generate(s, prompt + off[2], off1, 1, &c, 102, tok2, lp2, len2) == 0,
             "single failed");
    tu_equal_bytes("seq 2 alone == in batch", tok + 2 * MAXNEW, tok2, len[2] * sizeof(int));
    c.seed = 43;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 100, tok2, lp2, len2) == 0, "seed failed");
    TU_CHECK(memcmp(tok, tok2, sizeof tok) != 0, "another seed gave identical samples");

    // Temperature and top-k: log-probs under the distribution actually sampled from.
    c.temperature = 0.7f;
    c.top_k = 5;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 200, tok, lp, len) == 0, "top-k failed");
    for (int i = 0; i < B; i++)
        check_against_forward(m, prompt, off, i, tok + i * MAXNEW, lp + i * MAXNEW, len[i], 0.7,
                              5, 0, "t=0.7 k=5");
    // top-k 1 at any temperature is greedy with probability 1.
    c.top_k = 1;
    c.temperature = 1.5f;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 300, tok2, lp2, len2) == 0, "top1 failed");
    sample_config_t g = {.temperature = 0, .max_new = MAXNEW, .seed = 1};
    TU_CHECK(sampler_generate(s, prompt, off, B, &g, 0, tok, lp, len) == 0, "greedy failed");
    tu_equal_bytes("top-1 == greedy", tok, tok2, sizeof tok);
    float zeros[B * MAXNEW] = {0};
    tu_close("top-1 logp == 0", lp2, zeros, B * MAXNEW, 1e-6f, 0);

    // Stop tokens end a sequence and are kept as its last token.
    c.temperature = 1.0f;
    c.top_k = 0;
    c.seed = 5;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 0, tok, lp, len) == 0, "pre-stop failed");
    c.stop[0] = tok[0 * MAXNEW + 3]; // sequence 0's 4th token becomes a stop token
    c.n_stop = 1;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 0, tok2, lp2, len2) == 0, "stop failed");
    for (int i = 0; i < B; i++) {
        int first = -1;
        for (int j = 0; j < len[i]; j++)
            if (tok[i * MAXNEW + j] == c.stop[0]) {
                first = j;
                break;
            }
        int want = first >= 0 ? first + 1 : MAXNEW;
        TU_CHECK(len2[i] == want, "stop: seq %d length %d, want %d", i, len2[i], want);
        TU_CHECK(memcmp(tok + i * MAXNEW, tok2 + i * MAXNEW, len2[i] * sizeof(int)) == 0,
                 "stop: seq %d tokens differ before the stop", i);
    }

    // Allowed tokens: only those, log-probs of the softmax over them.
    check_allowed(m, s, prompt, off, 1.0, 0, "allowed t=1");
    check_allowed(m, s, prompt, off, 0.7, 2, "allowed t=0.7 k=2");
    check_allowed(m, s, prompt, off, 0.0, 0, "allowed greedy");
    c.stop[0] = 'x'; // an allowed stop token still stops
    c.n_stop = 1;
    static const int xy[2] = {'x', 'y'}, bad_allowed[2] = {'x', 999};
    c.allowed = xy;
    c.n_allowed = 2;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 0, tok, lp, len) == 0, "allowed+stop failed");
    for (int i = 0; i < B; i++)
        TU_CHECK(len[i] == MAXNEW || tok[i * MAXNEW + len[i] - 1] == 'x',
                 "allowed+stop: seq %d ended without its stop token", i);
    c.allowed = bad_allowed;
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 0, tok, lp, len) == -1,
             "out-of-vocab allowed token accepted");
    c.allowed = NULL;
    c.n_allowed = 0;

    // Arguments that do not fit are refused, nothing sampled.
    c.max_new = cfg.ctx_len; // prompt + max_new exceeds the context
    TU_CHECK(sampler_generate(s, prompt, off, B, &c, 0, tok, lp, len) == -1, "overlong accepted");
    c.max_new = MAXNEW;
    TU_CHECK(sampler_generate(s, prompt, off, B + 1, &c, 0, tok, lp, len) == -1,
             "batch over max accepted");
    int badp[2] = {GPT_TOK_BOS, 999}, badoff[2] = {0, 2};
    TU_CHECK(sampler_generate(s, badp, badoff, 1, &c, 0, tok, lp, len) == -1,
             "out-of-vocab prompt accepted");

    sampler_destroy(&s);
    TU_CHECK(s == NULL, "destroy did not null the pointer");
    gpt_destroy(&m);
    return tu_finish("test_sampler");
}
