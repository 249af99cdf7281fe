// arith.h: the demo task, two-digit addition in bytes. Prompt "07+45=" (zero-padded operands),
// target the 3-digit sum written least-significant digit first ("052" -> "250"): reversed
// digits let a left-to-right model carry as it writes. A fixed 10% of the (a, b) pairs is
// held out: never in the pretraining corpus or the RL training prompts, only in evaluation.
#ifndef RLX_ARITH_H
#define RLX_ARITH_H

#include <stdint.h>

// 1 if the pair (a, b), 0 <= a, b < 100, is held out for evaluation.
int arith_is_heldout(int a, int b);
// Prompt text of (a, b) into buf (at least 8 bytes).
void arith_prompt(int a, int b, char *buf);
// Target text of (a, b) into buf (at least 4 bytes).
void arith_target(int a, int b, char *buf);

// Writes `lines` training examples "prompt+target\n" over non-held-out pairs drawn uniformly;
// a `noise` share of them carry a wrong answer (one digit changed). 0 or -1 on I/O error.
int arith_write_corpus(const char *path, int lines, float noise, uint64_t seed);
// Writes prompt files as "prompt<TAB>target\n": every non-held-out pair to train_path, every
// held-out pair to eval_path. 0 or -1.
int arith_write_prompts(const char *train_path, const char *eval_path);

#endif
