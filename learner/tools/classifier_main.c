// classifier_main.c: rlx-train-classifier, a small mlp digit classifier (the reward model of
// digit-generation runs): seeded train/test split of the UCI digits, softmax cross-entropy
// with AdamW, test accuracy, checkpoint.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"
#include "layers.h"
#include "util.h"

static void usage(FILE *f) {
    digits_clf_config_t d = digits_clf_defaults();
    fprintf(f,
            "usage: rlx-train-classifier --out CKPT [options]\n"
            "Trains an mlp classifier on the UCI digits and reports its test accuracy.\n\n"
            "  --digits PATH     digits file (examples/data/digits.csv.gz)\n"
            "  --test-frac X     share held out for the test (0.2)\n"
            "  --hidden N --blocks N   (%d %d)\n"
            "  --batch N --steps N     (%d %d)\n"
            "  --lr X --wd X --noise X (%g %g %g)\n"
            "  --seed N --threads N    (%llu 2)\n"
            "  --min-acc X       exit 1 if the test accuracy is below X (0)\n",
            d.hidden, d.n_blocks, d.batch, d.steps, d.opt.lr, d.opt.weight_decay, d.noise,
            (unsigned long long)d.seed);
}

static double num(const char *opt, const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end) {
        fprintf(stderr, "rlx-train-classifier: --%s expects a number, got '%s'\n", opt, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    digits_clf_config_t c = digits_clf_defaults();
    const char *path = "examples/data/digits.csv.gz", *out = NULL;
    float test_frac = 0.2f, min_acc = 0.0f;
    int threads = 2;
    static const struct option opts[] = {
        {"digits", 1, 0, 'D'}, {"out", 1, 0, 'o'},   {"test-frac", 1, 0, 'q'},
        {"hidden", 1, 0, 'H'}, {"blocks", 1, 0, 'K'}, {"batch", 1, 0, 'B'},
        {"steps", 1, 0, 'n'},  {"lr", 1, 0, 'l'},     {"wd", 1, 0, 'W'},
        {"noise", 1, 0, 'z'},  {"seed", 1, 0, 's'},   {"threads", 1, 0, 't'},
        {"min-acc", 1, 0, 'm'}, {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    int ch, idx = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        const char *name = opts[idx].name;
        switch (ch) {
        case 'D': path = optarg; break;
        case 'o': out = optarg; break;
        case 'q': test_frac = (float)num(name, optarg); break;
        case 'H': c.hidden = (int)num(name, optarg); break;
        case 'K': c.n_blocks = (int)num(name, optarg); break;
        case 'B': c.batch = (int)num(name, optarg); break;
        case 'n': c.steps = (int)num(name, optarg); break;
        case 'l': c.opt.lr = (float)num(name, optarg); break;
        case 'W': c.opt.weight_decay = (float)num(name, optarg); break;
        case 'z': c.noise = (float)num(name, optarg); break;
        case 's': c.seed = (uint64_t)num(name, optarg); break;
        case 't': threads = (int)num(name, optarg); break;
        case 'm': min_acc = (float)num(name, optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc || !out || test_frac <= 0 || test_frac >= 1 || c.batch < 1) {
        usage(stderr);
        return 2;
    }
    layers_set_threads(threads);
    char err[512];
    digits_t *all = digits_load(path, err, sizeof err);
    if (!all) {
        fprintf(stderr, "rlx-train-classifier: %s\n", err);
        return 1;
    }
    digits_t *train, *test;
    digits_split(all, test_frac, c.seed, &train, &test);
    double t0 = rlx_now();
    mlp_t *m = digits_clf_train(train, &c, stdout, 250);
    double secs = rlx_now() - t0;
    float tr_acc = digits_clf_accuracy(m, train), te_acc = digits_clf_accuracy(m, test);
    printf("trained in %.1fs: train accuracy %.4f (%d), test accuracy %.4f (%d)\n", secs, tr_acc,
           train->n, te_acc, test->n);
    // extra: how the split was drawn, so the held-out set can be rebuilt.
    struct {
        char magic[8];     // "RLXCLF01"
        float test_frac;   // share held out
        uint32_t seed_lo;  // split seed, low 32 bits
        float test_acc;    // accuracy on it
        uint32_t pad;
    } extra = {{'R', 'L', 'X', 'C', 'L', 'F', '0', '1'}, test_frac, (uint32_t)c.seed, te_acc, 0};
    if (mlp_save(m, out, &extra, sizeof extra, err, sizeof err) != 0) {
        fprintf(stderr, "rlx-train-classifier: %s\n", err);
        return 1;
    }
    printf("wrote %s\n", out);
    mlp_destroy(&m);
    digits_destroy(&all);
    digits_destroy(&train);
    digits_destroy(&test);
    return te_acc >= min_acc ? 0 : 1;
}
