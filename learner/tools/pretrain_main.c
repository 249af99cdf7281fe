// pretrain_main.c: rlx-pretrain, MLE training of a gpt on a text corpus. Parses options and
// calls mle_train (learner/mle.c).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mle.h"

static void usage(FILE *f) {
    mle_config_t d = mle_defaults();
    fprintf(f,
            "usage: rlx-pretrain --data CORPUS --out CKPT [options]\n"
            "Trains a byte-level GPT by maximum likelihood on a UTF-8 text file.\n\n"
            "  --data PATH        corpus (required)\n"
            "  --out PATH         checkpoint to write (required)\n"
            "  --resume           continue from --out if it exists (model, optimizer, data order)\n"
            "  --init PATH        start from this checkpoint's weights, fresh optimizer\n"
            "  --mode lines|windows  one example per line (default) or random windows\n"
            "  --layers N --dim N --heads N --ctx N   model (default %d %d %d %d)\n"
            "  --batch N          sequences per step (%d)\n"
            "  --steps N          total steps (%lld)\n"
            "  --max-seconds S    stop after S seconds of training (0 = no limit)\n"
            "  --stop-at N        stop after step N; the schedule still spans --steps\n"
            "  --lr X --warmup N --min-lr-frac X --beta2 X --wd X --clip X  optimizer\n"
            "                     (%g, %d, %g, %g, %g, %g; cosine decay over --steps)\n"
            "  --seed N           initialisation and data order (%llu)\n"
            "  --threads N        compute threads (%d)\n"
            "  --log-every N --eval-every N --ckpt-every N   (%d, %d, %d)\n"
            "  --val-frac X       share of the corpus held out (%g)\n",
            d.model.n_layer, d.model.n_embd, d.model.n_head, d.model.ctx_len, d.batch,
            (long long)d.steps, d.opt.lr, d.opt.warmup_steps, d.opt.min_lr_frac, d.opt.beta2,
            d.opt.weight_decay, d.opt.grad_clip, (unsigned long long)d.seed, d.threads,
            d.log_every, d.eval_every, d.ckpt_every, d.val_frac);
}

// Parses a number or exits with a hint naming the option.
static double num(const char *opt, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end) {
        fprintf(stderr, "rlx-pretrain: --%s expects a number, got '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    mle_config_t c = mle_defaults();
    static const struct option opts[] = {
        {"data", 1, 0, 'd'},      {"out", 1, 0, 'o'},         {"resume", 0, 0, 'r'},
        {"init", 1, 0, 'i'},      {"mode", 1, 0, 'M'},        {"layers", 1, 0, 'L'},
        {"dim", 1, 0, 'C'},       {"heads", 1, 0, 'H'},       {"ctx", 1, 0, 'T'},
        {"batch", 1, 0, 'B'},     {"steps", 1, 0, 'S'},       {"max-seconds", 1, 0, 'x'},
        {"stop-at", 1, 0, 'A'},
        {"lr", 1, 0, 'l'},        {"warmup", 1, 0, 'w'},      {"min-lr-frac", 1, 0, 'f'},
        {"beta2", 1, 0, 'b'},     {"wd", 1, 0, 'W'},          {"clip", 1, 0, 'c'},
        {"seed", 1, 0, 's'},      {"threads", 1, 0, 't'},     {"log-every", 1, 0, 'g'},
        {"eval-every", 1, 0, 'e'}, {"ckpt-every", 1, 0, 'k'}, {"val-frac", 1, 0, 'v'},
        {"help", 0, 0, 'h'},      {0, 0, 0, 0}};
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        const char *name = opts[idx].name;
        switch (ch) {
        case 'd': c.data_path = optarg; break;
        case 'o': c.out_path = optarg; break;
        case 'r': c.resume = 1; break;
        case 'i': c.init_path = optarg; break;
        case 'M':
            if (!strcmp(optarg, "lines"))
                c.mode = MLE_LINES;
            else if (!strcmp(optarg, "windows"))
                c.mode = MLE_WINDOWS;
            else {
                fprintf(stderr, "rlx-pretrain: --mode is lines or windows, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'L': c.model.n_layer = (int)num(name, optarg); break;
        case 'C': c.model.n_embd = (int)num(name, optarg); break;
        case 'H': c.model.n_head = (int)num(name, optarg); break;
        case 'T': c.model.ctx_len = (int)num(name, optarg); break;
        case 'B': c.batch = (int)num(name, optarg); break;
        case 'S': c.steps = (long long)num(name, optarg); break;
        case 'x': c.max_seconds = num(name, optarg); break;
        case 'A': c.stop_at = (long long)num(name, optarg); break;
        case 'l': c.opt.lr = (float)num(name, optarg); break;
        case 'w': c.opt.warmup_steps = (int)num(name, optarg); break;
        case 'f': c.opt.min_lr_frac = (float)num(name, optarg); break;
        case 'b': c.opt.beta2 = (float)num(name, optarg); break;
        case 'W': c.opt.weight_decay = (float)num(name, optarg); break;
        case 'c': c.opt.grad_clip = (float)num(name, optarg); break;
        case 's': c.seed = (unsigned long long)num(name, optarg); break;
        case 't': c.threads = (int)num(name, optarg); break;
        case 'g': c.log_every = (int)num(name, optarg); break;
        case 'e': c.eval_every = (int)num(name, optarg); break;
        case 'k': c.ckpt_every = (int)num(name, optarg); break;
        case 'v': c.val_frac = (float)num(name, optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!c.data_path || !c.out_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (c.batch < 1 || c.steps < 1 || c.threads < 1 || c.val_frac < 0 || c.val_frac >= 1) {
        fprintf(stderr, "rlx-pretrain: --batch, --steps, --threads must be >= 1 and "
                        "--val-frac in [0, 1)\n");
        return 2;
    }
    c.opt.decay_steps = c.steps;
    return mle_train(&c);
}
