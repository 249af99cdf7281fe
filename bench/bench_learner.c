// bench_learner.c: rlx-bench-learner, times gpt training steps (forward + MLE loss + backward
// + AdamW) on random byte tokens and reports tokens/s, the model FLOP rate and its ratio to
// this machine's measured sgemm rate (model FLOPs utilisation). Not a test: it prints figures.
// The peer is bench/torch_peer.py (PyTorch, same model, batch and threads).
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "gpt.h"
#include "layers.h"
#include "rng.h"
#include "util.h"

// CPU seconds used by the whole process so far (all threads).
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Best-of-5 rate of an n x n x n sgemm, GFLOP/s, with the threads currently set.
static double sgemm_gflops(int n) {
    float *a = rlx_alloc_floats((size_t)n * n, "a"), *b = rlx_alloc_floats((size_t)n * n, "b");
    float *c = rlx_alloc_floats((size_t)n * n, "c");
    for (size_t i = 0; i < (size_t)n * n; i++)
        a[i] = b[i] = 0.001f * (float)(i % 97);
    double best = 1e30;
    for (int r = 0; r < 6; r++) {
        double t0 = rlx_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = rlx_now() - t0;
        if (r > 0 && dt < best) // the first call warms up the threads
            best = dt;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * n * (double)n * n / best / 1e9;
}

int main(int argc, char **argv) {
    gpt_config_t cfg = {
        .n_layer = 4, .n_embd = 128, .n_head = 4, .ctx_len = 64, .vocab = GPT_VOCAB};
    int B = 16, steps = 20, threads = 1, warmup = 3;
    static const struct option opts[] = {
        {"layers", 1, 0, 'L'}, {"dim", 1, 0, 'C'},   {"heads", 1, 0, 'H'},   {"ctx", 1, 0, 'T'},
        {"batch", 1, 0, 'B'},  {"steps", 1, 0, 'S'}, {"threads", 1, 0, 't'}, {"warmup", 1, 0, 'w'},
        {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'L':
            cfg.n_layer = atoi(optarg);
            break;
        case 'C':
            cfg.n_embd = atoi(optarg);
            break;
        case 'H':
            cfg.n_head = atoi(optarg);
            break;
        case 'T':
            cfg.ctx_len = atoi(optarg);
            break;
        case 'B':
            B = atoi(optarg);
            break;
        case 'S':
            steps = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'w':
            warmup = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: rlx-bench-learner [--layers 4] [--dim 128] [--heads 4] "
                            "[--ctx 64] [--batch 16] [--steps 20] [--threads 1] [--warmup 3]\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (B < 1 || steps < 1 || threads < 1 || warmup < 0)
        RLX_DIE("--batch, --steps, --threads must be >= 1");
    layers_set_threads(threads);
    int T = cfg.ctx_len;
    gpt_t *m = gpt_new(&cfg, B, 1);
    adamw_config_t opt = adamw_defaults();
    opt.lr = 1e-4f;
    opt.weight_decay = 0.01f;
    int *tok = rlx_xcalloc((size_t)B * (T + 1), sizeof(int), "tokens");
    int *in = rlx_xcalloc((size_t)B * T, sizeof(int), "in");
    int *tg = rlx_xcalloc((size_t)B * T, sizeof(int), "tg");
    rng_t r;
    rng_seed(&r, 5);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("rlx-bench-learner: backend %s, threads %d, OPENBLAS_CORETYPE=%s\n", layers_backend(),
           threads, coretype ? coretype : "(unset)");
    printf("model L=%d C=%d NH=%d T=%d V=%d: %zu parameters; batch %d\n", cfg.n_layer, cfg.n_embd,
           cfg.n_head, T, cfg.vocab, m->ps.n, B);
    double t_steps = 0, cpu_steps = 0, loss = 0;
    for (int s = 0; s < warmup + steps; s++) {
        for (int i = 0; i < B; i++) {
            for (int t = 0; t <= T; t++)
                tok[i * (T + 1) + t] = (int)rng_below(&r, 256);
            memcpy(in + i * T, tok + i * (T + 1), T * sizeof(int));
            memcpy(tg + i * T, tok + i * (T + 1) + 1, T * sizeof(int));
        }
        double t0 = rlx_now(), c0 = cpu_now();
        gpt_forward(m, in, tg, B, T);
        loss = gpt_mle_loss(m, NULL, NULL);
        paramset_zero_grad(&m->ps);
        gpt_backward(m);
        adamw_step(&m->ps, &opt);
        double dt = rlx_now() - t0, dc = cpu_now() - c0;
        if (s >= warmup) {
            t_steps += dt;
            cpu_steps += dc;
        }
    }
    double tps = (double)steps * B * T / t_steps;
    double flops = gpt_flops_per_step(&cfg, B, T) * steps / t_steps / 1e9;
    double peak = sgemm_gflops(1024);
    printf("steps %d (after %d warm-up), %.2f ms/step, final loss %.4f\n", steps, warmup,
           1e3 * t_steps / steps, loss);
    // CPU time is the figure to compare on a shared machine at 1 thread: other processes
    // stretch the wall time of a step but not the CPU time it needs. (At more threads it also
    // counts libgomp's spin-waiting, so compare wall times there.)
    printf("cpu_ms_per_step %.2f cpu_tokens_per_s %.0f\n", 1e3 * cpu_steps / steps,
           (double)steps * B * T / cpu_steps);
    printf("model_gflops %.1f sgemm_gflops %.1f mfu %.3f\n", flops, peak, flops / peak);
    printf("tokens_per_s %.0f\n", tps);
    free(tok);
    free(in);
    free(tg);
    gpt_destroy(&m);
    return 0;
}
