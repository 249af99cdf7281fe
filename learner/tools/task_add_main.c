// task_add_main.c: rlx-task-add, writes the files of the two-digit addition demo task
// (common/tasks/arith.h): a noisy pretraining corpus and the train/eval prompt files (TSV:
// prompt<TAB>target) that the hub and the learner's evaluation read.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arith.h"

int main(int argc, char **argv) {
    const char *dir = NULL;
    int lines = 50000;
    double noise = 0.3;
    unsigned long long seed = 1;
    static const struct option opts[] = {{"dir", 1, 0, 'd'},   {"lines", 1, 0, 'n'},
                                         {"noise", 1, 0, 'p'}, {"seed", 1, 0, 's'},
                                         {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': dir = optarg; break;
        case 'n': lines = atoi(optarg); break;
        case 'p': noise = atof(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        default:
            fprintf(ch == 'h' ? stdout : stderr,
                    "usage: rlx-task-add --dir DIR [--lines 50000] [--noise 0.3] [--seed 1]\n"
                    "Writes DIR/corpus.txt (pretraining, a --noise share of answers wrong),\n"
                    "DIR/train.tsv and DIR/eval.tsv (prompt<TAB>target; eval pairs are never\n"
                    "in the corpus or train.tsv).\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (!dir || lines < 1 || noise < 0 || noise > 1) {
        fprintf(stderr, "rlx-task-add: --dir is required; --lines >= 1; --noise in [0, 1]\n");
        return 2;
    }
    mkdir(dir, 0755);
    char corpus[4096], train[4096], eval[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    snprintf(train, sizeof train, "%s/train.tsv", dir);
    snprintf(eval, sizeof eval, "%s/eval.tsv", dir);
    if (arith_write_corpus(corpus, lines, (float)noise, seed) != 0 ||
        arith_write_prompts(train, eval) != 0) {
        fprintf(stderr, "rlx-task-add: cannot write the task files in %s\n", dir);
        return 1;
    }
    printf("wrote %s (%d lines, %.0f%% noisy answers), %s, %s\n", corpus, lines, 100 * noise,
           train, eval);
    return 0;
}
