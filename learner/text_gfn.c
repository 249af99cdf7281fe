// text_gfn.c: trajectory balance on the gpt's fixed-length text sequences and their exact
// evaluation by enumeration (see text_gfn.h).
#include "text_gfn.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytetok.h"
#include "rl.h"
#include "scorers.h"
#include "util.h"

struct text_gfn_eval {
    const text_gfn_task_t *t; // the task (not owned)
    double *logr;             // (n_prompts, n_seqs) log R(y)
    double *logz;             // (n_prompts) true log Z
    unsigned char *is_mode;   // (n_prompts, n_seqs) 1 for a mode
    unsigned char *seen;      // (n_prompts, n_seqs) 1 once sampled (modes only are counted)
    int n_modes;              // modes, all prompts
    int modes_found;          // modes sampled, all prompts
    double *logp;             // (n_seqs) scratch: log p(y) of one prompt
    int *row;                 // (max_prompt + L) scratch: one prompt + response
};

// ---- task -------------------------------------------------------------------------------

void text_gfn_task_free(text_gfn_task_t *t) {
    for (int i = 0; i < t->n_prompts; i++) {
        free(t->text[i]);
        free(t->target[i]);
        free(t->tokens[i]);
    }
    free(t->text);
    free(t->target);
    free(t->tokens);
    free(t->n_tokens);
    memset(t, 0, sizeof *t);
}

// Appends one prompt line (modified in place: the tab is cut). 0 or -1 (out of memory).
static int task_add(text_gfn_task_t *t, char *line, int *cap) {
    if (t->n_prompts == *cap) {
        int nc = *cap ? 2 * *cap : 16;
        char **a = realloc(t->text, nc * sizeof *a);
        if (a)
            t->text = a;
        char **b = realloc(t->target, nc * sizeof *b);
        if (b)
            t->target = b;
        int **c = realloc(t->tokens, nc * sizeof *c);
        if (c)
            t->tokens = c;
        int *d = realloc(t->n_tokens, nc * sizeof *d);
        if (d)
            t->n_tokens = d;
        if (!a || !b || !c || !d)
            return -1;
        *cap = nc;
    }
    char *tab = strchr(line, '\t');
    if (tab)
        *tab = 0;
    int i = t->n_prompts;
    int nt = bytetok_encode_prompt(line, strlen(line), NULL, 0);
    t->text[i] = strdup(line);
    t->target[i] = strdup(tab ? tab + 1 : "");
    t->tokens[i] = malloc((size_t)nt * sizeof(int));
    t->n_tokens[i] = nt;
    t->n_prompts++;
    if (!t->text[i] || !t->target[i] || !t->tokens[i])
        return -1;
    bytetok_encode_prompt(line, strlen(line), t->tokens[i], nt);
    if (nt > t->max_prompt)
        t->max_prompt = nt;
    return 0;
}

int text_gfn_task_load(text_gfn_task_t *t, const char *path, const int *alphabet, int n_alpha,
                       int length, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    if (n_alpha < 2 || n_alpha > 127 || length < 1) {
        snprintf(err, errlen,
                 "GFlowNet text needs an alphabet of 2..127 bytes (--alphabet) and "
                 "a length >= 1 (--max-new), got %d bytes, length %d",
                 n_alpha, length);
        return -1;
    }
    for (int v = 0; v < GPT_VOCAB; v++)
        t->index[v] = -1;
    for (int i = 0; i < n_alpha; i++) {
        int a = alphabet[i];
        // ASCII: the text every scorer sees (hub, reward worker, --exec JSON, the evaluation
        // here) is then the same valid UTF-8.
        if (a < 1 || a > 127 || t->index[a] >= 0) {
            snprintf(err, errlen, "alphabet entry %d (%d) is not an ASCII byte 1..127 or repeats",
                     i, a);
            return -1;
        }
        t->index[a] = i;
        t->alphabet[i] = a;
    }
    t->n_alpha = n_alpha;
    t->length = length;
    double n = pow((double)n_alpha, (double)length);
    if (n > TEXT_GFN_MAX_SEQS) {
        snprintf(err, errlen,
                 "|A|^L = %d^%d = %.0f sequences: more than %d to enumerate; use "
                 "a smaller alphabet or length",
                 n_alpha, length, n, TEXT_GFN_MAX_SEQS);
        return -1;
    }
    t->n_seqs = (int64_t)n;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the train prompt file %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int pcap = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (len == 0)
            continue; // the hub skips empty lines too: prompt ids stay the same
        rc = task_add(t, line, &pcap);
    }
    free(line);
    fclose(f);
    if (rc != 0) {
        snprintf(err, errlen, "out of memory reading %s", path);
    } else if (t->n_prompts == 0) {
        snprintf(err, errlen, "the train prompt file %s has no prompts", path);
        rc = -1;
    } else if ((double)t->n_prompts * (double)t->n_seqs > TEXT_GFN_MAX_CELLS) {
        snprintf(err, errlen, "%d prompts x %lld sequences: more than %d to evaluate", t->n_prompts,
                 (long long)t->n_seqs, TEXT_GFN_MAX_CELLS);
        rc = -1;
    }
    if (rc != 0)
        text_gfn_task_free(t);
    return rc;
}

const char *text_gfn_check(const text_gfn_task_t *t, uint64_t prompt_id, const uint32_t *prompt,
                           size_t n_prompt, const uint32_t *response, size_t n_response) {
    if (prompt_id >= (uint64_t)t->n_prompts)
        return "prompt_id is not a line of the train prompt file";
    const int *p = t->tokens[prompt_id];
    if (n_prompt != (size_t)t->n_tokens[prompt_id])
        return "prompt tokens differ from the train prompt's";
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] != (uint32_t)p[i])
            return "prompt tokens differ from the train prompt's";
    if (n_response != (size_t)t->length)
        return "response is not L tokens long";
    for (size_t i = 0; i < n_response; i++)
        if (response[i] >= GPT_VOCAB || t->index[response[i]] < 0)
            return "response token outside the alphabet";
    return NULL;
}

int64_t text_gfn_seq_index(const text_gfn_task_t *t, const int *x, int len) {
    if (len != t->length)
        return -1;
    int64_t i = 0;
    for (int j = 0; j < len; j++) {
        int a = x[j] >= 0 && x[j] < GPT_VOCAB ? t->index[x[j]] : -1;
        if (a < 0)
            return -1;
        i = i * t->n_alpha + a;
    }
    return i;
}

void text_gfn_seq_tokens(const text_gfn_task_t *t, int64_t i, int *x) {
    assert(i >= 0 && i < t->n_seqs);
    for (int j = t->length - 1; j >= 0; j--) {
        x[j] = t->alphabet[i % t->n_alpha];
        i /= t->n_alpha;
    }
}

// ---- loss -------------------------------------------------------------------------------

// The (n, T) input/target batch of prompt + response: targets only at response positions.
static int build_batch(const gpt_t *m, const text_gfn_sample_t *s, int n, int *tok, int *tgt) {
    int T = 1;
    for (int i = 0; i < n; i++) {
        int len = s[i].prompt_len + s[i].resp_len - 1;
        assert(s[i].prompt_len >= 1 && s[i].resp_len >= 1 && len <= m->cfg.ctx_len);
        T = len > T ? len : T;
    }
    for (int i = 0; i < n; i++)
        gpt_response_row(tok + i * T, tgt + i * T, T, s[i].tokens, s[i].prompt_len, s[i].resp_len);
    return T;
}

void text_gfn_loss(gpt_t *m, const text_gfn_sample_t *s, int n, const float *logz, float *dlogz,
                   double denom, int *tok, int *tgt, text_gfn_stats_t *st) {
    memset(st, 0, sizeof *st);
    assert(n >= 1 && n <= m->max_batch && denom > 0);
    int T = build_batch(m, s, n, tok, tgt);
    gpt_forward(m, tok, tgt, n, T);
    memset(m->dlogp, 0, (size_t)n * T * sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *lp = m->logp + (size_t)i * T + s[i].prompt_len - 1;
        double sum = 0;
        for (int j = 0; j < s[i].resp_len; j++) {
            sum += lp[j];
            double d = (double)lp[j] - s[i].blogp[j];
            st->stale_sum += fabs(d);
            st->ratio_sum += rl_ratio(lp[j], s[i].blogp[j], NULL); // clamped: a metric
        }
        double r = (double)logz[s[i].prompt] + sum - s[i].logr;
        float g = (float)(2.0 * r / denom);
        float *dl = m->dlogp + (size_t)i * T + s[i].prompt_len - 1;
        for (int j = 0; j < s[i].resp_len; j++)
            dl[j] = g;
        dlogz[s[i].prompt] += g;
        st->loss += r * r / denom;
        st->resid_abs += fabs(r);
        st->tokens += s[i].resp_len;
    }
}

// ---- log Z table ------------------------------------------------------------------------

void text_gfn_logz_init(text_gfn_logz_t *z, int n, float init) {
    assert(n >= 1);
    z->buf = rlx_xcalloc((size_t)4 * n, sizeof(float), "log Z table");
    z->ps = (paramset_t){.n = (size_t)n,
                         .w = z->buf,
                         .g = z->buf + n,
                         .m = z->buf + 2 * n,
                         .v = z->buf + 3 * n,
                         .step = 0};
    for (int i = 0; i < n; i++)
        z->ps.w[i] = init;
}

void text_gfn_logz_free(text_gfn_logz_t *z) {
    free(z->buf);
    memset(z, 0, sizeof *z);
}

#define LOGZ_MAGIC "RLXTGFN1"

size_t text_gfn_logz_bytes(const text_gfn_logz_t *z) {
    return 8 + 2 * sizeof(int64_t) + 3 * z->ps.n * sizeof(float);
}

void text_gfn_logz_pack(const text_gfn_logz_t *z, void *out) {
    char *p = out;
    int64_t hdr[2] = {(int64_t)z->ps.n, z->ps.step};
    memcpy(p, LOGZ_MAGIC, 8);
    memcpy(p + 8, hdr, sizeof hdr);
    p += 8 + sizeof hdr;
    size_t n = z->ps.n * sizeof(float);
    memcpy(p, z->ps.w, n);
    memcpy(p + n, z->ps.m, n);
    memcpy(p + 2 * n, z->ps.v, n);
}

int text_gfn_logz_unpack(text_gfn_logz_t *z, const void *in, size_t len, char *err, size_t errlen) {
    const char *p = in;
    int64_t hdr[2];
    if (len < 8 + sizeof hdr || memcmp(p, LOGZ_MAGIC, 8) != 0) {
        snprintf(err, errlen, "no log Z table (%s) in the checkpoint: not a TB text run's",
                 LOGZ_MAGIC);
        return -1;
    }
    memcpy(hdr, p + 8, sizeof hdr);
    if (hdr[0] != (int64_t)z->ps.n || len != text_gfn_logz_bytes(z)) {
        snprintf(err, errlen,
                 "the checkpoint's log Z table has %lld entries, the prompt file "
                 "%zu prompts",
                 (long long)hdr[0], z->ps.n);
        return -1;
    }
    p += 8 + sizeof hdr;
    size_t n = z->ps.n * sizeof(float);
    memcpy(z->ps.w, p, n);
    memcpy(z->ps.m, p + n, n);
    memcpy(z->ps.v, p + 2 * n, n);
    z->ps.step = hdr[1];
    return 0;
}

// ---- exact evaluation -------------------------------------------------------------------

static double logsumexp(const double *x, int64_t n) {
    double mx = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++)
        s += exp(x[i] - mx);
    return mx + log(s);
}

// Sequence i of n_seqs is a mode of logr when above each of its L (|A|-1) Hamming neighbours.
static int is_strict_max(const text_gfn_task_t *t, const double *logr, int64_t i) {
    int64_t place = 1;
    for (int j = t->length - 1; j >= 0; j--, place *= t->n_alpha) {
        int64_t digit = (i / place) % t->n_alpha, base = i - digit * place;
        for (int a = 0; a < t->n_alpha; a++)
            if (a != digit && logr[base + a * place] >= logr[i])
                return 0;
    }
    return 1;
}

text_gfn_eval_t *text_gfn_eval_new(const text_gfn_task_t *t, const double *logr, char *err,
                                   size_t errlen) {
    size_t cells = (size_t)t->n_prompts * (size_t)t->n_seqs;
    text_gfn_eval_t *e = calloc(1, sizeof *e);
    if (!e || !(e->logr = malloc(cells * sizeof(double))) ||
        !(e->logz = malloc((size_t)t->n_prompts * sizeof(double))) ||
        !(e->is_mode = calloc(cells, 1)) || !(e->seen = calloc(cells, 1)) ||
        !(e->logp = malloc((size_t)t->n_seqs * sizeof(double))) ||
        !(e->row = malloc((size_t)(t->max_prompt + t->length) * sizeof(int)))) {
        snprintf(err, errlen, "out of memory for the evaluation of %zu sequences", cells);
        text_gfn_eval_destroy(&e);
        return NULL;
    }
    e->t = t;
    for (size_t i = 0; i < cells; i++) {
        if (!isfinite(logr[i])) {
            snprintf(err, errlen,
                     "log R of prompt %zu sequence %zu is %g: R must be positive "
                     "and finite",
                     i / (size_t)t->n_seqs, i % (size_t)t->n_seqs, logr[i]);
            text_gfn_eval_destroy(&e);
            return NULL;
        }
        e->logr[i] = logr[i];
    }
    for (int p = 0; p < t->n_prompts; p++) {
        const double *lr = e->logr + (size_t)p * t->n_seqs;
        e->logz[p] = logsumexp(lr, t->n_seqs);
        for (int64_t i = 0; i < t->n_seqs; i++)
            if (is_strict_max(t, lr, i)) {
                e->is_mode[(size_t)p * t->n_seqs + i] = 1;
                e->n_modes++;
            }
    }
    return e;
}

text_gfn_eval_t *text_gfn_eval_from_scorer(const text_gfn_task_t *t, int scorer, float beta,
                                           char *err, size_t errlen) {
    if (scorer < 0 || scorer_is_payload(scorer)) {
        snprintf(err, errlen, "the exact evaluation needs a built-in text scorer (%s)",
                 scorer_list());
        return NULL;
    }
    size_t cells = (size_t)t->n_prompts * (size_t)t->n_seqs;
    double *logr = malloc(cells * sizeof(double));
    int *x = malloc((size_t)t->length * sizeof(int));
    char *text = malloc((size_t)t->length + 1);
    if (!logr || !x || !text) {
        snprintf(err, errlen, "out of memory for the rewards of %zu sequences", cells);
        free(logr);
        free(x);
        free(text);
        return NULL;
    }
    for (int64_t i = 0; i < t->n_seqs; i++) {
        text_gfn_seq_tokens(t, i, x);
        bytetok_decode_response(x, t->length, GPT_VOCAB, text, (size_t)t->length + 1);
        for (int p = 0; p < t->n_prompts; p++)
            logr[(size_t)p * t->n_seqs + i] =
                (double)beta * scorer_score(scorer, t->text[p], text, t->target[p]);
    }
    text_gfn_eval_t *e = text_gfn_eval_new(t, logr, err, errlen);
    free(logr);
    free(x);
    free(text);
    return e;
}

void text_gfn_eval_destroy(text_gfn_eval_t **self_p) {
    if (!self_p || !*self_p)
        return;
    text_gfn_eval_t *e = *self_p;
    free(e->logr);
    free(e->logz);
    free(e->is_mode);
    free(e->seen);
    free(e->logp);
    free(e->row);
    free(e);
    *self_p = NULL;
}

double text_gfn_eval_logz(const text_gfn_eval_t *e, int p) {
    assert(p >= 0 && p < e->t->n_prompts);
    return e->logz[p];
}

int text_gfn_eval_modes(const text_gfn_eval_t *e, int p, int64_t *idx, int cap) {
    assert(p >= 0 && p < e->t->n_prompts);
    int n = 0;
    const unsigned char *m = e->is_mode + (size_t)p * e->t->n_seqs;
    for (int64_t i = 0; i < e->t->n_seqs; i++)
        if (m[i]) {
            if (n < cap)
                idx[n] = i;
            n++;
        }
    return n;
}

int text_gfn_eval_modes_found(const text_gfn_eval_t *e) {
    return e->modes_found;
}

void text_gfn_eval_observe(text_gfn_eval_t *e, int p, const int *response, int len) {
    int64_t i = text_gfn_seq_index(e->t, response, len);
    if (p < 0 || p >= e->t->n_prompts || i < 0)
        return;
    size_t at = (size_t)p * e->t->n_seqs + (size_t)i;
    if (e->is_mode[at] && !e->seen[at])
        e->modes_found++;
    e->seen[at] = 1;
}

void text_gfn_seq_logp(text_gfn_eval_t *e, gpt_t *m, int p, int *tok, int *tgt, double *out) {
    const text_gfn_task_t *t = e->t;
    int pl = t->n_tokens[p], L = t->length, T = pl + L - 1, B = m->max_batch, *row = e->row;
    assert(T <= m->cfg.ctx_len);
    memcpy(row, t->tokens[p], (size_t)pl * sizeof(int));
    for (int64_t i0 = 0; i0 < t->n_seqs; i0 += B) {
        int b = t->n_seqs - i0 < B ? (int)(t->n_seqs - i0) : B;
        for (int r = 0; r < b; r++) {
            text_gfn_seq_tokens(t, i0 + r, row + pl);
            for (int j = 0; j < T; j++) {
                tok[r * T + j] = row[j];
                tgt[r * T + j] = j >= pl - 1 ? row[j + 1] : -1;
            }
        }
        gpt_forward(m, tok, tgt, b, T);
        for (int r = 0; r < b; r++) {
            double s = 0;
            for (int j = pl - 1; j < T; j++)
                s += m->logp[(size_t)r * T + j];
            out[i0 + r] = s;
        }
    }
}

void text_gfn_evaluate(text_gfn_eval_t *e, gpt_t *m, const float *logz, int *tok, int *tgt,
                       text_gfn_result_t *out) {
    const text_gfn_task_t *t = e->t;
    memset(out, 0, sizeof *out);
    for (int p = 0; p < t->n_prompts; p++) {
        text_gfn_seq_logp(e, m, p, tok, tgt, e->logp);
        const double *lr = e->logr + (size_t)p * t->n_seqs;
        const unsigned char *mode = e->is_mode + (size_t)p * t->n_seqs;
        double l1 = 0, mass = 0, mode_mass = 0;
        for (int64_t i = 0; i < t->n_seqs; i++) {
            double q = exp(e->logp[i]);
            l1 += fabs(q - exp(lr[i] - e->logz[p]));
            mass += q;
            mode_mass += mode[i] ? q : 0;
        }
        out->l1 += l1 / t->n_prompts;
        out->l1_max = l1 > out->l1_max ? l1 : out->l1_max;
        out->mass += mass / t->n_prompts;
        out->mode_mass += mode_mass / t->n_prompts;
        out->logz_err += fabs((double)logz[p] - e->logz[p]) / t->n_prompts;
    }
    out->logz_true = e->logz[0];
    out->modes_found = e->modes_found;
    out->n_modes = e->n_modes;
}
