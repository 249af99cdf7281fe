// scorers.h: rlx's built-in reward functions on decoded text. Reward workers serve them by
// name; the learner uses them for evaluation. External scorers plug in through rlx-reward
// --exec or the protobuf protocol instead.
#ifndef RLX_SCORERS_H
#define RLX_SCORERS_H

#include <stddef.h>
#include <stdint.h>

// Names: "exact" (1 if the response equals the target, else 0) and "digits" (partial credit:
// the share of the target's characters matched position by position, the denominator being
// the longer of response and target, so extra or missing characters cost); "seqmodes" (a
// reward with several modes of unequal height for GFlowNets on text, docs/gflownet.md): the
// target lists the modes, "MODE[:WEIGHT],MODE[:WEIGHT],..." (weight 1 when omitted; a mode
// holds no ',' or ':'), and the score is max_m w_m (1 - d(response, m) / n), n the longer of
// the two lengths and d their Hamming distance plus the length difference, so 0..max w_m
// (0 for an empty list); "hypergrid"
// scores a payload (ScoreItem.payload of a GFLOW item): the HyperGrid reward R(x) of the
// terminal state x given one-hot per coordinate, shape [D, H] (gflownet.h, docs/gflownet.md).
// Returns the scorer's id, or -1 for an unknown name.
int scorer_find(const char *name);
const char *scorer_name(int id);
// Comma-separated list of the built-in scorers' names.
const char *scorer_list(void);
// Reward of response for target (both NUL-terminated; prompt is available to scorers that
// need it). id must come from scorer_find.
// Payload scorers give 0 here.
float scorer_score(int id, const char *prompt, const char *response, const char *target);
// Whether scorer id scores payloads (non-text items) rather than text.
int scorer_is_payload(int id);
// Reward of a payload of n floats with shape (nshape). 0, or -1 with err (malformed payload,
// or a text scorer).
int scorer_score_payload(int id, const float *payload, size_t n, const uint32_t *shape,
                         size_t nshape, float *reward, char *err, size_t errlen);

#endif
