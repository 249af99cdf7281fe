// scorers.h: rlx's built-in reward functions on decoded text. Reward workers serve them by
// name; the learner uses them for evaluation. External scorers plug in through rlx-reward
// --exec or the protobuf protocol instead.
#ifndef RLX_SCORERS_H
#define RLX_SCORERS_H

// Names: "exact" (1 if the response equals the target, else 0) and "digits" (partial credit:
// the share of the target's characters matched position by position, the denominator being
// the longer of response and target, so extra or missing characters cost).
// Returns the scorer's id, or -1 for an unknown name.
int scorer_find(const char *name);
const char *scorer_name(int id);
// Comma-separated list of the built-in scorers' names.
const char *scorer_list(void);
// Reward of response for target (both NUL-terminated; prompt is available to scorers that
// need it). id must come from scorer_find.
float scorer_score(int id, const char *prompt, const char *response, const char *target);

#endif
