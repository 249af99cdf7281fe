// exec_scorer.c: runs an external scorer process and talks JSON lines to it over pipes (the
// protocol is in exec_scorer.h). Requests of a batch are written while replies are read,
// both ends non-blocking under one poll, so a scorer that answers as it reads never
// deadlocks on full pipes. The process is started lazily, killed on any failure and started
// again after a backoff.
#include "exec_scorer.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>

#include "util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define TICK_MS 100

enum { FAIL_TIMEOUT, FAIL_CRASH, FAIL_GARBAGE, FAIL_START, FAIL_OVERSIZED, FAIL_KINDS };

struct exec_scorer {
    char *cmd;                // the command, run by /bin/sh -c
    int timeout_ms;           // deadline per reply
    pid_t pid;                // running process (its own process group), 0 = none
    int wfd;                  // its stdin (ours to write), -1 = none
    int rfd;                  // its stdout (ours to read), -1 = none
    char *rbuf;               // bytes read and not yet consumed as lines
    size_t rlen, rcap;        // used, capacity
    double restart_at;        // no new process before this time (backoff)
    int backoff_ms;           // next backoff
    exec_scorer_tick_fn tick; // called while waiting (heartbeats)
    void *tick_arg;           // its argument
    unsigned logged;          // bit per failure kind already logged
    exec_scorer_stats_t st;   // counters
};

static void log_fail(exec_scorer_t *s, int kind, const char *fmt, ...) {
    if (s->logged & (1u << kind))
        return;
    s->logged |= 1u << kind;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "exec scorer \"%s\": ", s->cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (logged once; counted in the worker's stats)\n");
    va_end(ap);
}

exec_scorer_t *exec_scorer_new(const char *cmd, int timeout_ms) {
    exec_scorer_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cmd = strdup(cmd);
    if (!s->cmd) {
        free(s);
        return NULL;
    }
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    s->wfd = s->rfd = -1;
    s->backoff_ms = BACKOFF_MIN_MS;
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    return s;
}

void exec_scorer_set_tick(exec_scorer_t *self, exec_scorer_tick_fn fn, void *arg) {
    self->tick = fn;
    self->tick_arg = arg;
}

const exec_scorer_stats_t *exec_scorer_stats(const exec_scorer_t *self) {
    return &self->st;
}

// Kills the process group (if any) and reaps it; closes the pipes.
static void stop_child(exec_scorer_t *s, int grace_ms) {
    if (s->wfd >= 0)
        close(s->wfd);
    s->wfd = -1;
    if (s->pid > 0) {
        int st;
        pid_t r = 0;
        for (int waited = 0; waited < grace_ms; waited += 10) {
            r = waitpid(s->pid, &st, WNOHANG);
            if (r != 0)
                break;
            usleep(10000);
        }
        if (r == 0) {
            kill(-s->pid, SIGKILL);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
        } else {
            kill(-s->pid, SIGKILL); // anything the shell left behind
        }
    }
    s->pid = 0;
    if (s->rfd >= 0)
        close(s->rfd);
    s->rfd = -1;
    s->rlen = 0;
}

static int start_child(exec_scorer_t *s) {
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
        log_fail(s, FAIL_START, "pipe: %s", strerror(errno));
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_fail(s, FAIL_START, "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        setpgid(0, 0); // its own group, so a kill reaches whatever the shell started
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_IGN); // Ctrl-C is the worker's to handle; it stops us after
        dup2(in[0], 0);
        dup2(out[1], 1);
        execl("/bin/sh", "sh", "-c", s->cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    close(in[0]);
    close(out[1]);
    s->pid = pid;
    s->wfd = in[1];
    s->rfd = out[0];
    fcntl(s->wfd, F_SETFL, fcntl(s->wfd, F_GETFL) | O_NONBLOCK);
    fcntl(s->rfd, F_SETFL, fcntl(s->rfd, F_GETFL) | O_NONBLOCK);
    s->rlen = 0;
    s->st.starts++;
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    return -1;
}

static void set_error(exec_result_t *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof r->error, fmt, ap);
    va_end(ap);
}

// Parses one reply line for the item with id `id` into r. 0 if it is a valid reply (which
// may carry the scorer's own error), -1 if it is garbage (why in r->error).
static int parse_reply(const char *line, size_t len, const char *id, exec_result_t *r) {
    struct json_tokener *tok = json_tokener_new();
    if (!tok) {
        set_error(r, "exec scorer: out of memory parsing a reply");
        return -1;
    }
    json_object *o = json_tokener_parse_ex(tok, line, (int)len);
    int ok_parse =
        o && json_tokener_get_error(tok) == json_tokener_success && tok->char_offset == (int)len;
    json_tokener_free(tok);
    int rc = -1;
    json_object *v;
    if (!ok_parse || !json_object_is_type(o, json_type_object)) {
        set_error(r, "exec scorer wrote a line that is not a JSON object: %.60s", line);
        goto done;
    }
    if (!json_object_object_get_ex(o, "id", &v) || !json_object_is_type(v, json_type_string) ||
        strcmp(json_object_get_string(v), id) != 0) {
        set_error(r, "exec scorer replied for id %.40s, expected %.40s (replies must keep order)",
                  v && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                : "(none)",
                  id);
        goto done;
    }
    json_object *err = NULL;
    int has_err = json_object_object_get_ex(o, "error", &err) &&
                  json_object_is_type(err, json_type_string) && json_object_get_string_len(err);
    if (json_object_object_get_ex(o, "reward", &v) &&
        (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int))) {
        r->reward = (float)json_object_get_double(v);
    } else if (!has_err) {
        set_error(r, "exec scorer reply for %.40s has no numeric \"reward\"", id);
        goto done;
    }
    if (json_object_object_get_ex(o, "components", &v) &&
        json_object_is_type(v, json_type_object)) {
        json_object_object_foreach(v, key, val) {
            if (r->ncomponents >= EXEC_SCORER_MAX_COMPONENTS)
                break;
            if (!json_object_is_type(val, json_type_double) &&
                !json_object_is_type(val, json_type_int))
                continue;
            snprintf(r->component_name[r->ncomponents], sizeof r->component_name[0], "%s", key);
            r->component_value[r->ncomponents++] = (float)json_object_get_double(val);
        }
    }
    if (has_err)
        set_error(r, "scorer: %s", json_object_get_string(err));
    rc = 0;
done:
    json_object_put(o);
    return rc;
}

// Length of the valid UTF-8 sequence at p (n bytes left), or 0 if it is not one.
static size_t utf8_seq(const unsigned char *p, size_t n) {
    if (p[0] < 0x80)
        return 1;
    size_t len = p[0] >= 0xC2 && p[0] <= 0xDF   ? 2
                 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
                 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4
                                                : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F) || // overlong, surrogate
        (p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] > 0x8F))   // overlong, > U+10FFFF
        return 0;
    return len;
}

// A JSON string of s: sampled responses are bytes, not always UTF-8, and a scorer reading
// its stdin as UTF-8 (Python's default) would die on them, so each invalid byte becomes
// U+FFFD. NULL if out of memory.
static json_object *json_text(const char *s) {
    size_t n = strlen(s), k = 0;
    char *out = malloc(3 * n + 1);
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0) {
            memcpy(out + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        } else {
            memcpy(out + k, p + i, l);
            k += l;
            i += l;
        }
    }
    json_object *o = json_object_new_string_len(out, (int)k);
    free(out);
    return o;
}

// A growing output buffer for request lines.
typedef struct {
    char *p;         // bytes (NULL after a failed allocation)
    size_t len, cap; // used, capacity
} obuf_t;

// Room for `more` bytes (plus a NUL); 0, or -1 when out of memory (b->p freed and NULL).
static int ob_reserve(obuf_t *b, size_t more) {
    if (!b->p)
        return -1;
    if (b->len + more + 1 <= b->cap)
        return 0;
    size_t cap = b->cap;
    while (b->len + more + 1 > cap)
        cap *= 2;
    char *nb = realloc(b->p, cap);
    if (!nb) {
        free(b->p);
        b->p = NULL;
        return -1;
    }
    b->p = nb;
    b->cap = cap;
    return 0;
}

static void ob_put(obuf_t *b, const char *s, size_t l) {
    if (ob_reserve(b, l) == 0) {
        memcpy(b->p + b->len, s, l);
        b->len += l;
    }
}

// Appends ,"payload":[...],"shape":[...] for a non-text item (floats as %.9g: 9 significant
// digits read back to the same float; a non-finite value, which JSON cannot hold, as null).
static void put_payload(obuf_t *b, const exec_item_t *it) {
    char num[32];
    ob_put(b, ",\"payload\":[", 12);
    for (size_t k = 0; k < it->npayload && b->p; k++) {
        float v = it->payload[k];
        int l = isfinite(v) ? snprintf(num, sizeof num, "%s%.9g", k ? "," : "", (double)v)
                            : snprintf(num, sizeof num, "%snull", k ? "," : "");
        ob_put(b, num, (size_t)l);
    }
    ob_put(b, "],\"shape\":[", 11);
    for (size_t k = 0; k < it->nshape && b->p; k++) {
        int l = snprintf(num, sizeof num, "%s%u", k ? "," : "", (unsigned)it->shape[k]);
        ob_put(b, num, (size_t)l);
    }
    ob_put(b, "]", 1);
}

// Builds the request lines of items[0..n) into one buffer (caller frees) and the indices of
// the items written, in order, into sent[0..*nsent). An item whose line would be longer than
// EXEC_SCORER_MAX_REQUEST gets an error in out[] and is left out. NULL if out of memory.
static char *build_requests(exec_scorer_t *s, const exec_item_t *items, int n, exec_result_t *out,
                            int *sent, int *nsent, size_t *len) {
    obuf_t b = {malloc(4096), 0, 4096};
    *nsent = 0;
    for (int i = 0; b.p && i < n; i++) {
        const exec_item_t *it = &items[i];
        int has_payload = it->npayload > 0 && it->payload;
        size_t start = b.len;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "id", json_text(it->id));
        json_object_object_add(o, "prompt", json_text(it->prompt ? it->prompt : ""));
        json_object_object_add(o, "response", json_text(it->response ? it->response : ""));
        json_object_object_add(o, "target", json_text(it->target ? it->target : ""));
        json_object_object_add(o, "scorer", json_text(it->scorer ? it->scorer : ""));
        json_object_object_add(o, "kind", json_text(it->kind ? it->kind : "text"));
        size_t l = 0;
        const char *js = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &l);
        // The object without its closing brace, then the payload, then "}\n".
        assert(l > 0 && js[l - 1] == '}');
        ob_put(&b, js, l - 1);
        json_object_put(o);
        if (has_payload)
            put_payload(&b, it);
        ob_put(&b, "}\n", 2);
        if (!b.p)
            break;
        size_t line = b.len - start - 1;
        if (line > EXEC_SCORER_MAX_REQUEST) {
            b.len = start; // not sent: a reader with a line limit would choke on it
            s->st.oversized++;
            set_error(&out[i],
                      "exec scorer: request line of %zu bytes (%zu payload floats) is over "
                      "the %d-byte limit: not sent",
                      line, it->npayload, EXEC_SCORER_MAX_REQUEST);
            log_fail(s, FAIL_OVERSIZED, "%s", out[i].error);
            continue;
        }
        sent[(*nsent)++] = i;
    }
    *len = b.len;
    return b.p;
}

// Gives items [from, n) the error msg and kills the process (it will be restarted later).
static void fail_rest(exec_scorer_t *s, exec_result_t *out, int from, int n, const char *msg) {
    for (int i = from; i < n; i++)
        if (!out[i].error[0])
            set_error(&out[i], "%s", msg);
    stop_child(s, 0);
    s->restart_at = rlx_now() + s->backoff_ms * 1e-3;
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
}

void exec_scorer_score(exec_scorer_t *s, const exec_item_t *items, int n, exec_result_t *out) {
    memset(out, 0, (size_t)n * sizeof *out);
    s->st.items += (uint64_t)n;
    if (n <= 0)
        return;
    char msg[160];
    if (s->pid == 0) {
        if (rlx_now() < s->restart_at) {
            s->st.backoff += (uint64_t)n;
            s->st.errors += (uint64_t)n;
            for (int i = 0; i < n; i++)
                set_error(&out[i], "exec scorer is restarting after a failure (backoff)");
            return;
        }
        if (start_child(s) != 0) {
            fail_rest(s, out, 0, n, "exec scorer could not be started");
            s->st.errors += (uint64_t)n;
            return;
        }
    }
    size_t wlen = 0, wpos = 0;
    int *sent = malloc((size_t)n * sizeof *sent), m = 0; // items written, in order
    char *wbuf = sent ? build_requests(s, items, n, out, sent, &m, &wlen) : NULL;
    if (!wbuf) {
        for (int i = 0; i < n; i++)
            set_error(&out[i], "exec scorer: out of memory building requests");
        s->st.errors += (uint64_t)n;
        free(sent);
        return;
    }
    // Replies come for the written items only: the k-th reply is for items[sent[k]]. Items
    // left out already carry their error, which fail_rest keeps.
    int next = 0, eof = 0;
    double deadline = rlx_now() + s->timeout_ms * 1e-3;
    while (next < m) {
        // Consume every complete line already read. Afterwards nl is the end of the first line
        // left (an over-long one), or NULL when that line has no end yet.
        char *nl = NULL;
        while (next < m && s->rlen > 0 && (nl = memchr(s->rbuf, '\n', s->rlen)) != NULL) {
            size_t l = (size_t)(nl - s->rbuf);
            if (l >= EXEC_SCORER_MAX_LINE)
                break; // a whole over-long line arrived at once: refused below
            *nl = 0;
            int rc = parse_reply(s->rbuf, l, items[sent[next]].id, &out[sent[next]]);
            memmove(s->rbuf, nl + 1, s->rlen - l - 1);
            s->rlen -= l + 1;
            if (rc != 0) {
                s->st.garbage++;
                log_fail(s, FAIL_GARBAGE, "%s: restarting it", out[sent[next]].error);
                snprintf(msg, sizeof msg, "exec scorer failed earlier in this batch (garbage)");
                fail_rest(s, out, sent[next] + 1, n, msg);
                goto done;
            }
            next++;
            nl = NULL; // consumed
            deadline = rlx_now() + s->timeout_ms * 1e-3;
        }
        if (next == m)
            break;
        // The first line, complete or still growing, must stay under the limit.
        if ((nl ? (size_t)(nl - s->rbuf) : s->rlen) >= EXEC_SCORER_MAX_LINE) {
            s->st.garbage++;
            s->st.oversized++;
            snprintf(msg, sizeof msg, "exec scorer wrote a reply line over %d bytes",
                     EXEC_SCORER_MAX_LINE);
            log_fail(s, FAIL_OVERSIZED, "%s: restarting it", msg);
            fail_rest(s, out, sent[next], n, msg);
            goto done;
        }
        if (eof) {
            s->st.crashes++;
            int st = 0;
            pid_t r = waitpid(s->pid, &st, WNOHANG);
            if (r == s->pid) {
                s->pid = 0; // reaped here
                if (WIFEXITED(st))
                    snprintf(msg, sizeof msg, "exec scorer exited with status %d", WEXITSTATUS(st));
                else
                    snprintf(msg, sizeof msg, "exec scorer died by signal %d", WTERMSIG(st));
            } else {
                snprintf(msg, sizeof msg, "exec scorer closed its stdout");
            }
            log_fail(s, FAIL_CRASH, "%s: restarting it", msg);
            fail_rest(s, out, sent[next], n, msg);
            goto done;
        }
        double now = rlx_now();
        if (now >= deadline) {
            s->st.timeouts++;
            snprintf(msg, sizeof msg, "exec scorer gave no reply within %d ms", s->timeout_ms);
            log_fail(s, FAIL_TIMEOUT, "%s: killing and restarting it", msg);
            fail_rest(s, out, sent[next], n, msg);
            goto done;
        }
        struct pollfd pfd[2] = {{.fd = s->rfd, .events = POLLIN},
                                {.fd = s->wfd, .events = POLLOUT}};
        int wait = (int)((deadline - now) * 1e3) + 1;
        if (wait > TICK_MS)
            wait = TICK_MS;
        int nfd = wpos < wlen ? 2 : 1;
        int pr = poll(pfd, (nfds_t)nfd, wait);
        if (s->tick)
            s->tick(s->tick_arg);
        if (pr < 0 && errno != EINTR) {
            s->st.crashes++;
            fail_rest(s, out, sent[next], n, "exec scorer: poll failed");
            goto done;
        }
        if (pr <= 0)
            continue;
        if (nfd == 2 && (pfd[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
            ssize_t w = write(s->wfd, wbuf + wpos, wlen - wpos);
            if (w > 0)
                wpos += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                eof = 1; // EPIPE: it is gone; report once its output is consumed
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (s->rcap - s->rlen < 65536) {
                size_t cap = s->rcap ? s->rcap * 2 : 65536 * 2;
                char *nb = realloc(s->rbuf, cap);
                if (!nb) {
                    fail_rest(s, out, sent[next], n, "exec scorer: out of memory reading replies");
                    goto done;
                }
                s->rbuf = nb;
                s->rcap = cap;
            }
            ssize_t r = read(s->rfd, s->rbuf + s->rlen, s->rcap - s->rlen - 1);
            if (r > 0)
                s->rlen += (size_t)r;
            else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                eof = 1;
        }
    }
    s->backoff_ms = BACKOFF_MIN_MS; // a whole batch went through
done:
    free(wbuf);
    free(sent);
    for (int i = 0; i < n; i++) {
        if (out[i].error[0])
            s->st.errors++;
        else
            s->st.scored++;
    }
}

void exec_scorer_destroy(exec_scorer_t **self_p) {
    if (!self_p || !*self_p)
        return;
    exec_scorer_t *s = *self_p;
    stop_child(s, 500);
    free(s->rbuf);
    free(s->cmd);
    free(s);
    *self_p = NULL;
}
