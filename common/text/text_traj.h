// text_traj.h: text trajectories (proto TextTrajectory, see proto/rlx.proto) as every role
// checks them, beside gfn_traj.h and diff_traj.h. The hub checks what arrives against the
// work it handed out; the learner checks again against its own model before training.
//
// A valid response: 1..max_new_tokens tokens, every one below the vocabulary and (when the
// work restricted them) in the allowed set, one behaviour log-prob per token, each in
// [WIRE_LOGPROB_MIN, TEXT_TRAJ_LOGPROB_SLACK] (fp32 samplers cannot draw lower; log-softmax may
// round a certain token's log-prob up to ~1e-7).
#ifndef RLX_TEXT_TRAJ_H
#define RLX_TEXT_TRAJ_H

#include <stddef.h>
#include <stdint.h>

#include "rlx.pb-c.h"

#define TEXT_TRAJ_LOGPROB_SLACK 1e-4f // positive rounding tolerated in a behaviour log-prob

// What the receiver expects of every trajectory.
typedef struct {
    const uint32_t *prompt; // (n_prompt) the prompt tokens the work item sent, or NULL: any
                            // non-empty prompt of tokens below vocab
    size_t n_prompt;        // entries of prompt
    int max_new_tokens;     // responses hold 1..max_new_tokens tokens
    uint32_t vocab;         // every response token is < vocab
    const uint8_t *allowed; // (vocab) 1 for each token a response may hold, or NULL: any
} text_traj_spec_t;

// Why x cannot be a response to sp (prompt, lengths, logprobs count, vocabulary, allowed
// tokens, log-prob range; NULL x is "not a text trajectory"), or NULL if it can. The scans
// are branch-free (they vectorise): the hub runs this for every token it relays.
const char *text_traj_check(const text_traj_spec_t *sp, const Rlx__TextTrajectory *x);

#endif
