// text_traj.c: see text_traj.h.
#include "text_traj.h"

#include <string.h>

#include "wire.h"

const char *text_traj_check(const text_traj_spec_t *sp, const Rlx__TextTrajectory *x) {
    if (!x)
        return "not a text trajectory";
    if (sp->prompt &&
        (x->n_prompt_tokens != sp->n_prompt ||
         memcmp(x->prompt_tokens, sp->prompt, sp->n_prompt * sizeof *sp->prompt) != 0))
        return "prompt tokens differ from the work item's prompt";
    if (!sp->prompt) { // any prompt: at least one token, each in the vocabulary
        uint32_t top = 0;
        for (size_t i = 0; i < x->n_prompt_tokens; i++)
            top = x->prompt_tokens[i] > top ? x->prompt_tokens[i] : top;
        if (x->n_prompt_tokens < 1 || top >= sp->vocab)
            return "empty prompt or prompt token outside the vocabulary";
    }
    if (x->n_response_tokens < 1 || x->n_response_tokens > (size_t)sp->max_new_tokens)
        return "response length outside 1..max_new_tokens";
    if (x->n_logprobs != x->n_response_tokens)
        return "logprobs count differs from the response length";
    uint32_t top = 0;
    for (size_t i = 0; i < x->n_response_tokens; i++)
        top = x->response_tokens[i] > top ? x->response_tokens[i] : top;
    if (top >= sp->vocab)
        return "response token outside the vocabulary";
    if (sp->allowed) {
        int outside = 0; // every token is < vocab here
        for (size_t i = 0; i < x->n_response_tokens; i++)
            outside |= !sp->allowed[x->response_tokens[i]];
        if (outside)
            return "response token outside the work item's allowed_tokens";
    }
    int bad = 0; // NaN fails both comparisons, so it counts as bad too
    for (size_t i = 0; i < x->n_logprobs; i++)
        bad |= !(x->logprobs[i] >= WIRE_LOGPROB_MIN && x->logprobs[i] <= TEXT_TRAJ_LOGPROB_SLACK);
    if (bad)
        return "logprob outside [WIRE_LOGPROB_MIN, 0] (not what an fp32 sampler can draw)";
    return NULL;
}
