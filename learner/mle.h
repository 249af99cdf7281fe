// mle.h: maximum-likelihood (next-byte) training of a gpt on a UTF-8 text corpus: how users
// get the pretrained model that RL then tunes. Used by the rlx-pretrain tool.
//
// Data: the corpus's bytes. In "lines" mode each line is one example, BOS + line + EOS,
// padded with PAD (no loss on padding); in "windows" mode examples are random windows of
// ctx_len + 1 bytes. The last val_frac of the corpus is held out for validation.
// Checkpoints carry the model, AdamW state and the data sampler's state, so a resumed run
// continues bit-exactly like an uninterrupted one (same seed, same data order).
#ifndef RLX_MLE_H
#define RLX_MLE_H

#include <stdint.h>

#include "adamw.h"
#include "gpt.h"

typedef enum { MLE_LINES = 0, MLE_WINDOWS = 1 } mle_mode_t;

typedef struct {
    const char *data_path; // corpus (UTF-8 text, read as bytes)
    const char *out_path;  // checkpoint written every ckpt_every steps, at the end and on signal
    const char *init_path; // start from this checkpoint's weights (fresh optimizer); may be NULL
    int resume;            // continue from out_path (model, optimizer, data order, step)
    gpt_config_t model;    // architecture of a new model
    adamw_config_t opt;    // optimizer and schedule
    mle_mode_t mode;       // how examples are cut from the corpus
    int batch;             // sequences per step
    int64_t steps;         // total steps (a resumed run stops here too); sets the lr schedule
    int64_t stop_at;       // stop once this many steps are taken (the schedule still spans
                           // `steps`); <= 0 = run to `steps`
    double max_seconds;    // stop early after this much wall time; <= 0 = no limit
    int log_every;         // progress line every this many steps
    int eval_every;        // validation loss every this many steps (0 = only at the end)
    int ckpt_every;        // checkpoint every this many steps (0 = only at the end)
    float val_frac;        // share of the corpus held out
    uint64_t seed;         // initialisation and data order
    int threads;           // compute threads
} mle_config_t;

// Defaults for every field (data_path/out_path NULL).
mle_config_t mle_defaults(void);

// Runs training; prints progress lines to stdout. Returns 0 on success (also when stopped by
// SIGINT/SIGTERM after writing a checkpoint), non-zero with a message on stderr on failure.
int mle_train(const mle_config_t *c);

#endif
