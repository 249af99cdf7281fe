// ddpm_main.c: rlx-ddpm, MLE (eps-prediction) training of a DDPM denoiser on the UCI digits
// or a 2-D Gaussian-mixture toy; writes a diffusion checkpoint, then draws samples with the
// stochastic DDIM sampler and reports how good they are (toy: distance to the modes; digits:
// accuracy of a classifier checkpoint on class-conditional samples).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion.h"
#include "digits.h"
#include "layers.h"
#include "util.h"

typedef struct {
    const char *data;       // "digits" or "toy"
    const char *digits;     // digits file
    const char *out;        // checkpoint to write
    const char *classifier; // classifier checkpoint for sample accuracy (digits)
    int cond;               // class-conditional
    int toy_n, toy_modes;   // toy size
    int samples;            // samples drawn at the end (per class when conditional)
    int sample_steps;       // S
    int print;              // samples printed as ASCII (digits)
    int threads;            // compute threads
} opts_t;

static void usage(FILE *f) {
    fprintf(f,
            "usage: rlx-ddpm --out CKPT [options]\n"
            "Trains a DDPM denoiser (residual mlp) by eps-prediction MLE, writes a checkpoint,\n"
            "then samples it with stochastic DDIM.\n\n"
            "  --data digits|toy   dataset (digits)\n"
            "  --digits PATH       digits file (examples/data/digits.csv.gz)\n"
            "  --cond              class-conditional (one-hot label + null class)\n"
            "  --cond-drop X       label dropout to the null class in training (0.1)\n"
            "  --T N --schedule linear|cosine --beta-start X --beta-end X   (1000 linear 1e-4 0.02)\n"
            "  --hidden N --blocks N --time-dim N   denoiser (256 3 32)\n"
            "  --batch N --steps N  (128 4000)\n"
            "  --lr X --warmup N --wd X --clip X --min-lr-frac X   AdamW (2e-3 100 0 1 0.05)\n"
            "  --seed N --threads N (1 2)\n"
            "  --log-every N        (200)\n"
            "  --samples N          samples drawn at the end, per class if --cond (10)\n"
            "  --sample-steps S --eta X --clip-x0   sampler (50 1.0 off)\n"
            "  --guidance W         classifier-free guidance of conditional samples (0 = off)\n"
            "  --classifier CKPT    score conditional digit samples with this classifier\n"
            "  --print N            print N samples as ASCII art (digits)\n"
            "  --toy-n N --toy-modes N   toy size (4000 8)\n");
}

static double num(const char *opt, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end) {
        fprintf(stderr, "rlx-ddpm: --%s expects a number, got '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    opts_t o = {.data = "digits", .digits = "examples/data/digits.csv.gz", .toy_n = 4000,
                .toy_modes = 8, .samples = 10, .sample_steps = 50, .threads = 2};
    diff_config_t dc = diff_defaults();
    mlp_config_t mc = {.hidden = 256, .n_blocks = 3, .time_dim = 32};
    diff_train_config_t tc = diff_train_defaults();
    tc.steps = 4000;
    tc.log_every = 200;
    diff_sampler_t sc = diff_sampler_defaults();
    static const struct option opts[] = {
        {"data", 1, 0, 'd'},        {"digits", 1, 0, 'D'},     {"out", 1, 0, 'o'},
        {"cond", 0, 0, 'c'},        {"cond-drop", 1, 0, 'p'},  {"T", 1, 0, 'T'},
        {"schedule", 1, 0, 'S'},    {"beta-start", 1, 0, 'a'}, {"beta-end", 1, 0, 'b'},
        {"hidden", 1, 0, 'H'},      {"blocks", 1, 0, 'K'},     {"time-dim", 1, 0, 'E'},
        {"batch", 1, 0, 'B'},       {"steps", 1, 0, 'n'},      {"lr", 1, 0, 'l'},
        {"warmup", 1, 0, 'w'},      {"wd", 1, 0, 'W'},         {"clip", 1, 0, 'C'},
        {"min-lr-frac", 1, 0, 'f'}, {"seed", 1, 0, 's'},       {"threads", 1, 0, 't'},
        {"log-every", 1, 0, 'g'},   {"samples", 1, 0, 'N'},    {"sample-steps", 1, 0, 'A'},
        {"eta", 1, 0, 'e'},         {"clip-x0", 0, 0, 'x'},    {"classifier", 1, 0, 'L'},
        {"print", 1, 0, 'P'},       {"toy-n", 1, 0, 'y'},      {"toy-modes", 1, 0, 'm'},
        {"guidance", 1, 0, 'G'},
        {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        const char *name = opts[idx].name;
        switch (ch) {
        case 'd': o.data = optarg; break;
        case 'D': o.digits = optarg; break;
        case 'o': o.out = optarg; break;
        case 'c': o.cond = 1; break;
        case 'p': tc.cond_drop = (float)num(name, optarg); break;
        case 'T': dc.T = (int)num(name, optarg); break;
        case 'S':
            if (!strcmp(optarg, "linear"))
                dc.schedule = DIFF_SCHED_LINEAR;
            else if (!strcmp(optarg, "cosine"))
                dc.schedule = DIFF_SCHED_COSINE;
            else {
                fprintf(stderr, "rlx-ddpm: --schedule is linear or cosine, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'a': dc.beta_start = (float)num(name, optarg); break;
        case 'b': dc.beta_end = (float)num(name, optarg); break;
        case 'H': mc.hidden = (int)num(name, optarg); break;
        case 'K': mc.n_blocks = (int)num(name, optarg); break;
        case 'E': mc.time_dim = (int)num(name, optarg); break;
        case 'B': tc.batch = (int)num(name, optarg); break;
        case 'n': tc.steps = (int)num(name, optarg); break;
        case 'l': tc.opt.lr = (float)num(name, optarg); break;
        case 'w': tc.opt.warmup_steps = (int)num(name, optarg); break;
        case 'W': tc.opt.weight_decay = (float)num(name, optarg); break;
        case 'C': tc.opt.grad_clip = (float)num(name, optarg); break;
        case 'f': tc.opt.min_lr_frac = (float)num(name, optarg); break;
        case 's': tc.seed = (uint64_t)num(name, optarg); break;
        case 't': o.threads = (int)num(name, optarg); break;
        case 'g': tc.log_every = (int)num(name, optarg); break;
        case 'N': o.samples = (int)num(name, optarg); break;
        case 'A': o.sample_steps = (int)num(name, optarg); break;
        case 'e': sc.eta = (float)num(name, optarg); break;
        case 'x': sc.clip_x0 = 1; break;
        case 'G': sc.guidance = (float)num(name, optarg); break;
        case 'L': o.classifier = optarg; break;
        case 'P': o.print = (int)num(name, optarg); break;
        case 'y': o.toy_n = (int)num(name, optarg); break;
        case 'm': o.toy_modes = (int)num(name, optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !o.out) {
        usage(stderr);
        return 2;
    }
    if (tc.batch < 1 || tc.steps < 0 || o.samples < 0 || o.sample_steps < 1 ||
        o.sample_steps > dc.T - 1 || sc.eta <= 0) {
        fprintf(stderr, "rlx-ddpm: need --batch >= 1, --steps >= 0, --samples >= 0, "
                        "1 <= --sample-steps <= T-1 and --eta > 0\n");
        return 2;
    }
    layers_set_threads(o.threads);

    char err[512];
    digits_t *data = NULL;
    int toy = !strcmp(o.data, "toy");
    const float radius = 2.0f, toy_std = 0.1f;
    if (toy) {
        data = digits_toy_mixture(o.toy_n, o.toy_modes, radius, toy_std, tc.seed + 1000);
    } else if (!strcmp(o.data, "digits")) {
        data = digits_load(o.digits, err, sizeof err);
        if (!data) {
            fprintf(stderr, "rlx-ddpm: %s\n", err);
            return 1;
        }
    } else {
        fprintf(stderr, "rlx-ddpm: --data is digits or toy, got '%s'\n", o.data);
        return 2;
    }
    dc.x_dim = data->dim;
    dc.n_classes = o.cond ? data->n_classes : 0;
    int per = o.cond ? o.samples : 0, ns = o.cond ? o.samples * data->n_classes : o.samples;
    int max_batch = tc.batch > 2 * ns ? tc.batch : 2 * ns; // guided sampling runs 2 ns rows
    if (max_batch < 1)
        max_batch = 1;
    diff_t *d = diff_new(&dc, &mc, max_batch, tc.seed);
    printf("rlx-ddpm: %s, %d examples of dim %d, %s, T=%d %s, denoiser H=%d K=%d time_dim=%d "
           "(%zu params), %d threads\n",
           o.data, data->n, data->dim, o.cond ? "class-conditional" : "unconditional", dc.T,
           dc.schedule == DIFF_SCHED_COSINE ? "cosine" : "linear", mc.hidden, mc.n_blocks,
           mc.time_dim, d->net->ps.n, o.threads);
    double t0 = rlx_now();
    float loss = diff_train(d, data->x, data->label, data->n, &tc, stdout);
    double train_s = rlx_now() - t0;
    if (diff_save(d, o.out, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-ddpm: %s\n", err);
        return 1;
    }
    printf("trained %d steps in %.1fs, final loss %.4f (mean of the last 10%%), wrote %s\n",
           tc.steps, train_s, loss, o.out);

    if (ns > 0) {
        int S = o.sample_steps, D = data->dim;
        float *xs = rlx_alloc_floats((size_t)(S + 1) * ns * D, "samples"); // (S+1, ns, D)
        float *lpf = rlx_alloc_floats((size_t)S * ns, "logpf");             // (S, ns)
        int *lab = rlx_xcalloc(ns, sizeof(int), "labels");                  // (ns)
        for (int i = 0; i < ns; i++)
            lab[i] = o.cond ? i / per : DIFF_NULL_LABEL;
        t0 = rlx_now();
        diff_sample(d, xs, lpf, NULL, NULL, o.cond ? lab : NULL, ns, S, &sc, tc.seed, 0);
        double samp_s = rlx_now() - t0;
        const float *x = xs + (size_t)S * ns * D;
        double lp = 0.0;
        for (size_t k = 0; k < (size_t)S * ns; k++)
            lp += lpf[k];
        printf("sampled %d in %.2fs (%d steps, eta %g, guidance %g), mean per-step log P_F %.3f\n",
               ns, samp_s, S, sc.eta, sc.guidance, lp / ((double)S * ns));
        if (toy) {
            int near = 0;
            double dist = 0.0;
            for (int i = 0; i < ns; i++) {
                float dd;
                digits_toy_nearest(x + 2 * i, o.toy_modes, radius, &dd);
                dist += dd;
                near += dd < 4 * toy_std;
            }
            printf("toy: mean distance to the nearest mode %.3f, within 4 std %.1f%%\n",
                   dist / ns, 100.0 * near / ns);
        }
        if (!toy && o.classifier) {
            mlp_t *clf = mlp_load(o.classifier, ns, err, sizeof err);
            if (!clf) {
                fprintf(stderr, "rlx-ddpm: %s\n", err);
                return 1;
            }
            int *pred = rlx_xcalloc(ns, sizeof(int), "predictions");
            digits_clf_predict(clf, x, ns, pred);
            int ok = 0;
            for (int i = 0; i < ns; i++)
                ok += pred[i] == lab[i];
            if (o.cond)
                printf("classifier accuracy on conditional samples: %.3f (%d/%d)\n",
                       (double)ok / ns, ok, ns);
            free(pred);
            mlp_destroy(&clf);
        }
        for (int i = 0; !toy && i < o.print && i < ns; i++) {
            int k = o.cond ? (i % data->n_classes) * per + i / data->n_classes : i;
            if (o.cond)
                printf("sample %d (label %d):\n", k, lab[k]);
            digits_print(stdout, x + (size_t)k * D);
        }
        free(xs);
        free(lpf);
        free(lab);
    }
    diff_destroy(&d);
    digits_destroy(&data);
    return 0;
}
