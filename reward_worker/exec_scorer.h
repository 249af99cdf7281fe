// exec_scorer.h: an external scorer process, in any language, behind rlx-reward --exec CMD.
//
// The process is started with /bin/sh -c CMD, its stdin and stdout connected to the reward
// worker by pipes (stderr is inherited: the scorer's logs go to the worker's log). It lives
// as long as the worker and scores one item per request line.
//
// Protocol: ONE JSON object per line (UTF-8, '\n'-terminated, no newline inside), each way.
//   request  (worker -> scorer, stdin):
//     {"id": "<actor>:<seq>", "prompt": "...", "response": "...", "target": "...",
//      "scorer": "<name the hub asked for>", "kind": "text"|"diffusion"|"gflow",
//      "payload": [<float>, ...], "shape": [<dim>, ...]}   payload/shape: non-text items only
//   payload is ScoreItem.payload (a diffusion x_0, a GFlowNet terminal state), flattened
//   row-major, each float written with 9 significant digits (%.9g: it reads back to the same
//   float); shape is ScoreItem.payload_shape. A non-finite value (the hub refuses them
//   before scoring) would be written as null.
//   reply    (scorer -> worker, stdout):
//     {"id": "<same id>", "reward": <number>,
//      "components": {"<name>": <number>, ...},   optional, logged by the learner
//      "error": "<text>"}                          optional; set = the item could not be scored
// Strings are valid UTF-8: bytes of a response that are not (a byte-level model samples any
// byte) are replaced by U+FFFD before they are sent. Replies must come in request order (one per
// request; the id is checked). The worker writes a batch of requests and reads the replies as they
// come, with a deadline of timeout_ms per reply (counted from the previous reply or the first
// write). Flush stdout after every reply (Python: print(..., flush=True)).
//
// Failures never stop the worker: if the process exits or closes its stdout, misses the
// deadline, or writes a line that is not such a JSON object (or names another id, or has no
// numeric reward), the item in hand and the rest of its batch get an error, the process is
// killed (SIGKILL) and started again on the next item, after a backoff that doubles from
// 100 ms to 5 s while it keeps failing (items arriving during the backoff get an error at
// once). An item whose request line would be longer than EXEC_SCORER_MAX_REQUEST gets an
// error and is not sent (no reply is expected for it). Every kind of failure is counted
// (exec_scorer_stats) and logged once.
//
// docs/scorers.md has the same protocol with a complete Python example.
#ifndef RLX_EXEC_SCORER_H
#define RLX_EXEC_SCORER_H

#include <stddef.h>
#include <stdint.h>

// Most named components kept per reply.
#define EXEC_SCORER_MAX_COMPONENTS 8
// Longest reply line accepted.
#define EXEC_SCORER_MAX_LINE (1 << 20)
// Longest request line written (an item whose line would be longer gets an error and is not
// sent): 16 MiB, a payload of about a million floats (a 28x28x3 image is about 40 KB).
#define EXEC_SCORER_MAX_REQUEST (16 << 20)

// One item to score (strings are NUL-terminated, borrowed for the call).
typedef struct {
    const char *id;        // "<actor>:<seq>", echoed by the reply
    const char *prompt;    // prompt text
    const char *response;  // response text
    const char *target;    // reference answer ("" if none)
    const char *scorer;    // scorer name the hub asked for
    const char *kind;      // "text", "diffusion", "gflow"; NULL = "text"
    const float *payload;  // (npayload) the thing to score for non-text kinds, or NULL
    size_t npayload;       // floats in payload; 0 = none (no "payload"/"shape" sent)
    const uint32_t *shape; // (nshape) shape of payload
    size_t nshape;         // dims in shape
} exec_item_t;

// The outcome of one item.
typedef struct {
    float reward;                                        // valid when error[0] == 0
    int ncomponents;                                     // entries used below
    char component_name[EXEC_SCORER_MAX_COMPONENTS][32]; // names (cut to 31 bytes)
    float component_value[EXEC_SCORER_MAX_COMPONENTS];   // values
    char error[160];                                     // "" = scored
} exec_result_t;

// Counters since start.
typedef struct {
    uint64_t items;     // items given to score
    uint64_t scored;    // items with a valid reply without error
    uint64_t errors;    // items that got an error (any cause, including the scorer's own)
    uint64_t timeouts;  // replies that missed the deadline
    uint64_t crashes;   // process exits / closed pipes seen
    uint64_t garbage;   // lines that were not a valid reply (over-long ones included)
    uint64_t oversized; // reply lines over EXEC_SCORER_MAX_LINE + items whose request line
                        // would be over EXEC_SCORER_MAX_REQUEST (not sent)
    uint64_t starts;    // processes started (1 + restarts)
    uint64_t backoff;   // items refused because the process was in restart backoff
} exec_scorer_stats_t;

typedef struct exec_scorer exec_scorer_t;

// Called at least every 100 ms while waiting for the process, so the caller can keep
// heartbeating during a slow scorer. May be NULL.
typedef void (*exec_scorer_tick_fn)(void *arg);

// A scorer for command cmd (run by /bin/sh -c); started lazily on the first item. Sets
// SIGPIPE to ignored if it was at its default (writes to a dead child must fail, not kill).
// NULL only when out of memory.
exec_scorer_t *exec_scorer_new(const char *cmd, int timeout_ms);
void exec_scorer_set_tick(exec_scorer_t *self, exec_scorer_tick_fn fn, void *arg);
// Scores n items; fills out[0..n). Never fails as a whole: failures are per item.
void exec_scorer_score(exec_scorer_t *self, const exec_item_t *items, int n, exec_result_t *out);
const exec_scorer_stats_t *exec_scorer_stats(const exec_scorer_t *self);
// Kills the process (after closing its stdin and a short grace period) and frees.
void exec_scorer_destroy(exec_scorer_t **self_p);

#endif
