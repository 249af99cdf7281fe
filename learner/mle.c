// mle.c: next-byte maximum-likelihood training of a gpt on a text corpus. See mle.h.
#include "mle.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layers.h"
#include "rng.h"
#include "util.h"

// Trainer state stored in the checkpoint's "extra" section.
typedef struct {
    char magic[8];    // "RLXMLE1\0"
    rng_t data_rng;   // data sampler state after the last step taken
    int64_t step;     // steps taken (equals the optimizer's step)
} mle_state_t;

typedef struct {
    unsigned char *bytes; // whole corpus
    size_t len;           // its size
    size_t *line_start;   // lines mode: start of each non-empty line
    int *line_len;        // lines mode: its length in bytes
    size_t n_lines;       // lines mode: number of lines
    size_t n_train;       // lines: first n_train lines train; windows: first n_train bytes
} corpus_t;

static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

mle_config_t mle_defaults(void) {
    mle_config_t c = {0};
    c.model = (gpt_config_t){.n_layer = 4, .n_embd = 128, .n_head = 4, .ctx_len = 64,
                             .vocab = GPT_VOCAB};
    c.opt = adamw_defaults();
    c.opt.lr = 1e-3f;
    c.opt.beta2 = 0.95f;
    c.opt.weight_decay = 0.0f;
    c.opt.grad_clip = 1.0f;
    c.opt.warmup_steps = 50;
    c.opt.min_lr_frac = 0.1f;
    c.mode = MLE_LINES;
    c.batch = 32;
    c.steps = 1000;
    c.log_every = 50;
    c.eval_every = 250;
    c.ckpt_every = 500;
    c.val_frac = 0.05f;
    c.seed = 1;
    c.threads = 1;
    return c;
}

static int load_corpus(corpus_t *cp, const char *path, mle_mode_t mode, int ctx_len,
                       float val_frac) {
    memset(cp, 0, sizeof *cp);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "rlx-pretrain: cannot open corpus %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size <= 0) {
        fprintf(stderr, "rlx-pretrain: corpus %s is empty or unreadable\n", path);
        fclose(f);
        return -1;
    }
    cp->len = (size_t)st.st_size;
    cp->bytes = rlx_xcalloc(cp->len + 1, 1, "corpus");
    size_t got = fread(cp->bytes, 1, cp->len, f);
    fclose(f);
    if (got != cp->len) {
        fprintf(stderr, "rlx-pretrain: short read of %s\n", path);
        return -1;
    }
    if (mode == MLE_WINDOWS) {
        cp->n_train = (size_t)((1.0 - val_frac) * (double)cp->len);
        if (cp->n_train < (size_t)ctx_len + 1 || cp->len - cp->n_train < (size_t)ctx_len + 1) {
            fprintf(stderr, "rlx-pretrain: corpus too small for windows of %d bytes with a "
                            "%.0f%% validation split\n", ctx_len + 1, 100.0 * val_frac);
            return -1;
        }
        return 0;
    }
    size_t cap = 1024;
    cp->line_start = rlx_xcalloc(cap, sizeof(size_t), "lines");
    cp->line_len = rlx_xcalloc(cap, sizeof(int), "lines");
    size_t i = 0;
    while (i < cp->len) {
        size_t j = i;
        while (j < cp->len && cp->bytes[j] != '\n')
            j++;
        if (j > i) {
            if (cp->n_lines == cap) {
                cap *= 2;
                cp->line_start = realloc(cp->line_start, cap * sizeof(size_t));
                cp->line_len = realloc(cp->line_len, cap * sizeof(int));
                if (!cp->line_start || !cp->line_len)
                    RLX_DIE("out of memory indexing corpus lines");
            }
            cp->line_start[cp->n_lines] = i;
            cp->line_len[cp->n_lines] = (int)((j - i) > (size_t)ctx_len ? (size_t)ctx_len : j - i);
            cp->n_lines++;
        }
        i = j + 1;
    }
    cp->n_train = (size_t)((1.0 - val_frac) * (double)cp->n_lines);
    if (cp->n_train < 1 || (val_frac > 0 && cp->n_train >= cp->n_lines)) {
        fprintf(stderr, "rlx-pretrain: corpus has %zu lines: too few for a %.0f%% validation "
                        "split\n", cp->n_lines, 100.0 * val_frac);
        return -1;
    }
    return 0;
}

static void free_corpus(corpus_t *cp) {
    free(cp->bytes);
    free(cp->line_start);
    free(cp->line_len);
}

// Example `idx` (a line index or a byte offset) as T inputs and T targets.
static void make_example(const corpus_t *cp, mle_mode_t mode, size_t idx, int T, int *in,
                         int *tg) {
    if (mode == MLE_WINDOWS) {
        for (int t = 0; t < T; t++) {
            in[t] = cp->bytes[idx + t];
            tg[t] = cp->bytes[idx + t + 1];
        }
        return;
    }
    // BOS line EOS, then padding; a line longer than T-1 bytes is cut (no EOS target then).
    int n = cp->line_len[idx];
    const unsigned char *b = cp->bytes + cp->line_start[idx];
    for (int t = 0; t < T; t++) {
        int cur = t == 0 ? GPT_TOK_BOS : t - 1 < n ? b[t - 1] : t - 1 == n ? GPT_TOK_EOS : -1;
        int nxt = t < n ? b[t] : t == n ? GPT_TOK_EOS : -1;
        in[t] = cur < 0 ? GPT_TOK_PAD : cur;
        tg[t] = cur < 0 || cur == GPT_TOK_EOS ? -1 : nxt;
    }
}

// Entropy in nats of the training targets' byte distribution (EOS counted per line).
static double unigram_entropy(const corpus_t *cp, mle_mode_t mode) {
    double count[GPT_VOCAB] = {0}, total = 0;
    if (mode == MLE_WINDOWS) {
        for (size_t i = 0; i < cp->n_train; i++)
            count[cp->bytes[i]]++;
    } else {
        for (size_t l = 0; l < cp->n_train; l++) {
            for (int k = 0; k < cp->line_len[l]; k++)
                count[cp->bytes[cp->line_start[l] + k]]++;
            count[GPT_TOK_EOS]++;
        }
    }
    for (int v = 0; v < GPT_VOCAB; v++)
        total += count[v];
    double h = 0;
    for (int v = 0; v < GPT_VOCAB; v++)
        if (count[v] > 0)
            h -= count[v] / total * log(count[v] / total);
    return h;
}

// Mean per-token loss over a fixed, deterministic slice of the validation data.
static double validate(gpt_t *m, const corpus_t *cp, mle_mode_t mode, int B, int T, int *in,
                       int *tg) {
    size_t n_val = mode == MLE_WINDOWS ? (cp->len - cp->n_train - T - 1) / T + 1
                                       : cp->n_lines - cp->n_train;
    size_t n_use = n_val < (size_t)B * 8 ? n_val : (size_t)B * 8;
    double loss_sum = 0, tok_sum = 0;
    for (size_t done = 0; done < n_use;) {
        int b = (int)(n_use - done < (size_t)B ? n_use - done : (size_t)B);
        for (int i = 0; i < b; i++) {
            size_t k = done + i;
            size_t idx = mode == MLE_WINDOWS ? cp->n_train + k * T : cp->n_train + k;
            make_example(cp, mode, idx, T, in + (size_t)i * T, tg + (size_t)i * T);
        }
        gpt_forward(m, in, tg, b, T);
        for (int i = 0; i < b * T; i++) {
            if (tg[i] >= 0) {
                loss_sum -= m->logp[i];
                tok_sum += 1;
            }
        }
        done += b;
    }
    return tok_sum > 0 ? loss_sum / tok_sum : NAN;
}

static int save(const gpt_t *m, const char *path, const rng_t *data_rng) {
    mle_state_t st = {.magic = "RLXMLE1", .data_rng = *data_rng, .step = m->ps.step};
    char err[512];
    if (gpt_save(m, path, &st, sizeof st, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-pretrain: checkpoint not written: %s\n", err);
        return -1;
    }
    return 0;
}

int mle_train(const mle_config_t *c) {
    int T = c->model.ctx_len, B = c->batch, rc = 1;
    corpus_t cp;
    gpt_t *m = NULL;
    int *in = NULL, *tg = NULL;
    char err[512];
    rng_t data_rng;
    rng_seed2(&data_rng, c->seed, 0xda7a);
    layers_set_threads(c->threads);

    if (load_corpus(&cp, c->data_path, c->mode, T, c->val_frac) != 0)
        goto cleanup;
    struct stat st;
    if (c->resume && stat(c->out_path, &st) == 0) {
        ckpt_t *ck = ckpt_read(c->out_path, err, sizeof err);
        if (!ck) {
            fprintf(stderr, "rlx-pretrain: cannot resume from %s: %s\n", c->out_path, err);
            goto cleanup;
        }
        uint64_t n = 0;
        const mle_state_t *ms = ckpt_section(ck, "extra", &n);
        if (!ms || n != sizeof *ms || memcmp(ms->magic, "RLXMLE1", 8) != 0) {
            fprintf(stderr, "rlx-pretrain: %s has no MLE trainer state; use --init to start "
                            "from its weights\n", c->out_path);
            ckpt_destroy(&ck);
            goto cleanup;
        }
        data_rng = ms->data_rng;
        m = gpt_from_ckpt(ck, B, err, sizeof err);
        ckpt_destroy(&ck);
        if (!m) {
            fprintf(stderr, "rlx-pretrain: cannot resume from %s: %s\n", c->out_path, err);
            goto cleanup;
        }
        if (m->cfg.ctx_len != T) {
            fprintf(stderr, "rlx-pretrain: checkpoint has ctx_len %d, run asks for %d\n",
                    m->cfg.ctx_len, T);
            goto cleanup;
        }
        printf("resumed from %s at step %lld\n", c->out_path, (long long)m->ps.step);
    } else if (c->init_path) {
        m = gpt_load(c->init_path, B, err, sizeof err);
        if (!m) {
            fprintf(stderr, "rlx-pretrain: cannot load --init %s: %s\n", c->init_path, err);
            goto cleanup;
        }
        // Fresh optimizer: only the weights are taken.
        memset(m->ps.m, 0, m->ps.n * sizeof(float));
        memset(m->ps.v, 0, m->ps.n * sizeof(float));
        m->ps.step = 0;
    } else {
        m = gpt_new(&c->model, B, c->seed);
    }
    T = m->cfg.ctx_len;
    in = rlx_xcalloc((size_t)B * T, sizeof(int), "batch");
    tg = rlx_xcalloc((size_t)B * T, sizeof(int), "batch");

    double h_uni = unigram_entropy(&cp, c->mode);
    printf("corpus %s: %zu bytes, %s mode, %zu train / %zu val %s, unigram entropy %.4f "
           "nats\n", c->data_path, cp.len, c->mode == MLE_LINES ? "lines" : "windows",
           c->mode == MLE_LINES ? cp.n_train : cp.n_train,
           c->mode == MLE_LINES ? cp.n_lines - cp.n_train : cp.len - cp.n_train,
           c->mode == MLE_LINES ? "lines" : "bytes", h_uni);
    printf("model L=%d C=%d NH=%d T=%d: %zu parameters, batch %d, %d threads (%s)\n",
           m->cfg.n_layer, m->cfg.n_embd, m->cfg.n_head, T, m->ps.n, B, layers_threads(),
           layers_backend());
    fflush(stdout);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    double t0 = rlx_now(), t_log = t0, loss_avg = 0;
    int64_t log_steps = 0;
    double last_loss = NAN, val = NAN;
    while (m->ps.step < c->steps && !stop_signal) {
        if (c->max_seconds > 0 && rlx_now() - t0 > c->max_seconds)
            break;
        if (c->stop_at > 0 && m->ps.step >= c->stop_at)
            break;
        for (int i = 0; i < B; i++) {
            size_t idx = c->mode == MLE_WINDOWS
                             ? (size_t)(rng_next(&data_rng) % (cp.n_train - (size_t)T))
                             : (size_t)(rng_next(&data_rng) % cp.n_train);
            make_example(&cp, c->mode, idx, T, in + (size_t)i * T, tg + (size_t)i * T);
        }
        gpt_forward(m, in, tg, B, T);
        float loss = gpt_mle_loss(m, NULL, NULL);
        paramset_zero_grad(&m->ps);
        gpt_backward(m);
        float lr = adamw_lr(&c->opt, m->ps.step);
        float gnorm = adamw_step(&m->ps, &c->opt);
        last_loss = loss;
        loss_avg += loss;
        log_steps++;
        int64_t s = m->ps.step;
        if (c->log_every > 0 && (s % c->log_every == 0 || s == c->steps)) {
            double now = rlx_now();
            printf("step %lld/%lld loss %.4f lr %.2e gnorm %.3f tok/s %.0f elapsed %.1fs\n",
                   (long long)s, (long long)c->steps, loss_avg / log_steps, lr, gnorm,
                   (double)log_steps * B * T / (now - t_log), now - t0);
            fflush(stdout);
            t_log = now;
            loss_avg = 0;
            log_steps = 0;
        }
        if (c->eval_every > 0 && s % c->eval_every == 0) {
            val = validate(m, &cp, c->mode, B, T, in, tg);
            printf("eval step %lld val_loss %.4f\n", (long long)s, val);
            fflush(stdout);
        }
        if (c->ckpt_every > 0 && s % c->ckpt_every == 0 && save(m, c->out_path, &data_rng) != 0)
            goto cleanup;
    }
    if (stop_signal)
        printf("stopped by signal %d at step %lld; writing checkpoint\n", (int)stop_signal,
               (long long)m->ps.step);
    if (save(m, c->out_path, &data_rng) != 0)
        goto cleanup;
    val = validate(m, &cp, c->mode, B, T, in, tg);
    printf("done steps %lld train_loss %.4f val_loss %.4f unigram_entropy %.4f seconds %.1f "
           "checkpoint %s\n", (long long)m->ps.step, last_loss, val, h_uni, rlx_now() - t0,
           c->out_path);
    rc = 0;
cleanup:
    free(in);
    free(tg);
    gpt_destroy(&m);
    free_corpus(&cp);
    return rc;
}
