// launch.c: rlx-launch, starts a whole rlx run from one INI config file (libinih). It prepares
// the task files and the pretrained checkpoint if they are missing, runs the learners under
// mpirun and the actors and reward workers as their own processes (each in its own process
// group, so a Ctrl-C on the terminal reaches only the launcher and a dying worker never takes
// the MPI job down), restarts workers that die, shows a live progress line read from the
// learner's JSON-lines metrics file (json-c), and stops everything in order when the learner
// exits or the launcher is interrupted. Every config key can be overridden on the command line
// as section.key=value. --dry-run prints the commands; --only ROLES runs a subset of the roles
// (the workers of another host). The config keys are documented in cluster/README.md.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ini.h>
#include <json-c/json.h>

#include "util.h"

// Exit code for a bad command line or config file.
#define EXIT_CONFIG 2

// ---- config store ----------------------------------------------------------------------------

static const char *const SECTIONS[] = {"run",   "task",   "pretrain", "learner",
                                       "actor", "reward", NULL};

// Keys rlx-launch reads itself; never passed on as flags.
static const char *const RUN_KEYS[] = {
    "name", "out", "hub", "bind", "bin", "metrics", "progress_interval_s", "stop_timeout_s", NULL};
static const char *const TASK_KEYS[] = {"kind", "dir", "enabled", NULL};
static const char *const PRETRAIN_KEYS[] = {"enabled", "out", NULL};
static const char *const LEARNER_KEYS[] = {"np",       "mpirun",         "np_flag", "mpi_args",
                                           "hostfile", "stop_timeout_s", NULL};
static const char *const WORKER_KEYS[] = {"count",         "restart", "backoff_s",
                                          "backoff_max_s", "name",    NULL};

typedef struct {
    char *section;  // "run", "learner", ...
    char *key;      // the key as written (also the flag name: key -> --key)
    char *value;    // raw value; ${section.key} references are expanded when read
    int is_default; // 1 = the launcher's default, not from the file or the command line
    int line;       // line in the config file; 0 = default or command line
} entry_t;

typedef struct {
    entry_t *e;       // in insertion order: flags are emitted in the order of the file
    int n, cap;       // used, allocated
    const char *path; // the config file, for messages
} config_t;

static void die_config(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_config(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rlx-launch: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(EXIT_CONFIG);
}

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d)
        RLX_DIE("out of memory");
    return d;
}

// printf into a new string; dies when out of memory.
static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        RLX_DIE("out of memory");
    va_end(ap);
    return s;
}

static int in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (!strcmp(*list, s))
            return 1;
    return 0;
}

static entry_t *config_find(const config_t *c, const char *section, const char *key) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].section, section) && !strcmp(c->e[i].key, key))
            return &c->e[i];
    return NULL;
}

// Sets section.key (replacing a previous value in place, keeping its position).
static void config_set(config_t *c, const char *section, const char *key, const char *value,
                       int is_default, int line) {
    entry_t *e = config_find(c, section, key);
    if (e) {
        free(e->value);
        e->value = xstrdup(value);
        e->is_default = is_default;
        e->line = line;
        return;
    }
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 32;
        c->e = realloc(c->e, (size_t)c->cap * sizeof *c->e);
        if (!c->e)
            RLX_DIE("out of memory");
    }
    c->e[c->n++] = (entry_t){xstrdup(section), xstrdup(key), xstrdup(value), is_default, line};
}

static void config_free(config_t *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].section);
        free(c->e[i].key);
        free(c->e[i].value);
    }
    free(c->e);
    c->e = NULL;
    c->n = c->cap = 0;
}

// 1 if the file or the command line set any key of section (defaults do not count).
static int config_has_section(const config_t *c, const char *section) {
    for (int i = 0; i < c->n; i++)
        if (!c->e[i].is_default && !strcmp(c->e[i].section, section))
            return 1;
    return 0;
}

// Growable string.
typedef struct {
    char *s;       // NUL-terminated
    size_t n, cap; // length, allocated
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        if (!b->s)
            RLX_DIE("out of memory");
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

// Expands ${section.key} (a config value) and ${env.NAME} (an environment variable) in value,
// recursively. Returns a malloc'd string. what names the key being read, for messages.
static char *expand_depth(const config_t *c, const char *value, const char *what, int depth) {
    if (depth > 16)
        die_config("%s: ${...} references nest more than 16 deep (a reference loop?)", what);
    sbuf_t b = {0};
    sb_add(&b, "", 0);
    const char *p = value;
    for (;;) {
        const char *ref = strstr(p, "${");
        if (!ref) {
            sb_add(&b, p, strlen(p));
            break;
        }
        sb_add(&b, p, (size_t)(ref - p));
        const char *end = strchr(ref, '}');
        const char *dot = memchr(ref + 2, '.', end ? (size_t)(end - ref - 2) : 0);
        if (!end || !dot || dot == ref + 2 || dot + 1 == end)
            die_config("%s: bad reference in '%s': write ${section.key} or ${env.NAME}", what,
                       value);
        char sec[64], key[256];
        snprintf(sec, sizeof sec, "%.*s", (int)(dot - ref - 2), ref + 2);
        snprintf(key, sizeof key, "%.*s", (int)(end - dot - 1), dot + 1);
        if (!strcmp(sec, "env")) {
            const char *v = getenv(key);
            if (!v)
                die_config("%s: environment variable %s (in '%s') is not set", what, key, value);
            sb_add(&b, v, strlen(v));
        } else {
            const entry_t *e = config_find(c, sec, key);
            if (!e)
                die_config("%s: '%s' refers to ${%s.%s}, which is not set", what, value, sec, key);
            char sub_what[400];
            snprintf(sub_what, sizeof sub_what, "%s.%s", sec, key);
            char *v = expand_depth(c, e->value, sub_what, depth + 1);
            sb_add(&b, v, strlen(v));
            free(v);
        }
        p = end + 1;
    }
    return b.s;
}

// The expanded value of section.key (malloc'd), or NULL when unset.
static char *config_get(const config_t *c, const char *section, const char *key) {
    const entry_t *e = config_find(c, section, key);
    if (!e)
        return NULL;
    char what[400];
    snprintf(what, sizeof what, "%s.%s", section, key);
    return expand_depth(c, e->value, what, 0);
}

// "FILE:LINE: " where section.key was set in the config file, "" otherwise (into buf).
static const char *config_where(const config_t *c, const char *section, const char *key, char *buf,
                                size_t cap) {
    const entry_t *e = config_find(c, section, key);
    buf[0] = 0;
    if (e && e->line > 0)
        snprintf(buf, cap, "%s:%d: ", c->path, e->line);
    return buf;
}

static double config_number(const config_t *c, const char *section, const char *key, double lo,
                            double hi) {
    char *v = config_get(c, section, key);
    if (!v)
        die_config("%s.%s is not set", section, key);
    char *end, where[PATH_MAX + 32];
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= lo && x <= hi))
        die_config("%s%s.%s = '%s': expected a number in [%.10g, %.10g]",
                   config_where(c, section, key, where, sizeof where), section, key, v, lo, hi);
    free(v);
    return x;
}

static int config_int(const config_t *c, const char *section, const char *key, int lo, int hi) {
    double x = config_number(c, section, key, lo, hi);
    if (x != floor(x))
        die_config("%s.%s: expected a whole number, got %g", section, key, x);
    return (int)x;
}

static int config_bool(const config_t *c, const char *section, const char *key) {
    char *v = config_get(c, section, key);
    if (!v)
        die_config("%s.%s is not set", section, key);
    int r = -1;
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") || !strcasecmp(v, "on"))
        r = 1;
    else if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcmp(v, "0") ||
             !strcasecmp(v, "off"))
        r = 0;
    char where[PATH_MAX + 32];
    if (r < 0)
        die_config("%s%s.%s = '%s': expected true or false",
                   config_where(c, section, key, where, sizeof where), section, key, v);
    free(v);
    return r;
}

// Checks that section.key may be set; returns an error message or NULL.
static const char *check_key(const char *section, const char *key, char *msg, size_t cap) {
    if (!in_list(SECTIONS, section)) {
        snprintf(msg, cap,
                 "unknown section [%s] (sections: run, task, pretrain, learner, actor, reward)",
                 section);
        return msg;
    }
    if (!*key || key[0] == '-') {
        snprintf(msg, cap, "[%s] '%s': a key is a flag name without the leading --", section, key);
        return msg;
    }
    if (!strcmp(section, "run") && !in_list(RUN_KEYS, key)) {
        snprintf(msg, cap,
                 "unknown key run.%s (run keys: name out hub bind bin metrics "
                 "progress_interval_s stop_timeout_s)",
                 key);
        return msg;
    }
    if (!strcmp(section, "learner") && (!strcmp(key, "bind") || !strcmp(key, "metrics"))) {
        snprintf(msg, cap, "learner.%s is set by the launcher: set run.%s instead", key, key);
        return msg;
    }
    if ((!strcmp(section, "actor") || !strcmp(section, "reward")) && !strcmp(key, "hub")) {
        snprintf(msg, cap, "%s.hub is set by the launcher: set run.hub instead", section);
        return msg;
    }
    return NULL;
}

// Parser state for libinih: the reader counts lines and notes indentation (continuation lines).
typedef struct {
    FILE *f;            // the config file
    int lineno;         // line last read
    int indented;       // the line last read starts with a blank: a value's continuation
    int too_long_line;  // first line longer than libinih's buffer, 0 if none
    config_t *cfg;      // where keys go
    int err_line;       // line of the first bad section or key, 0 if none
    char err[512];      // its message
    char last_key[256]; // section.key of the previous handler call (for continuations)
} ini_ctx_t;

static char *cfg_read_line(char *str, int num, void *stream) {
    ini_ctx_t *x = stream;
    if (!fgets(str, num, x->f))
        return NULL;
    x->lineno++;
    size_t n = strlen(str);
    if ((int)n == num - 1 && str[n - 1] != '\n' && !feof(x->f)) {
        int ch;
        while ((ch = fgetc(x->f)) != EOF && ch != '\n')
            ;
        if (!x->too_long_line)
            x->too_long_line = x->lineno;
    }
    x->indented = str[0] == ' ' || str[0] == '\t';
    // Section names are checked here, not in the handler: libinih reports a section only with
    // its first key, so an empty misspelt section would pass unnoticed.
    const char *p = str + strspn(str, " \t"), *close = strchr(p, ']');
    if (*p == '[' && close && !x->err_line) {
        char name[64], msg[400];
        snprintf(name, sizeof name, "%.*s", (int)(close - p - 1), p + 1);
        if (!in_list(SECTIONS, name) && check_key(name, "", msg, sizeof msg)) {
            x->err_line = x->lineno;
            snprintf(x->err, sizeof x->err, "%s", msg);
        }
    }
    return str;
}

static int cfg_on_key(void *user, const char *section, const char *key, const char *value) {
    ini_ctx_t *x = user;
    char msg[400], full[256];
    snprintf(full, sizeof full, "%s.%s", section, key);
    entry_t *prev = config_find(x->cfg, section, key);
    if (x->indented && prev && !strcmp(full, x->last_key)) {
        // libinih passes an indented line as a continuation of the previous key: join with ' '
        size_t n = strlen(prev->value) + strlen(value) + 2;
        char *joined = malloc(n);
        if (!joined)
            RLX_DIE("out of memory");
        snprintf(joined, n, "%s%s%s", prev->value, *prev->value ? " " : "", value);
        free(prev->value);
        prev->value = joined;
        return 1;
    }
    snprintf(x->last_key, sizeof x->last_key, "%s", full);
    if (check_key(section, key, msg, sizeof msg)) {
        if (!x->err_line) {
            x->err_line = x->lineno;
            snprintf(x->err, sizeof x->err, "%s", msg);
        }
        return 0;
    }
    config_set(x->cfg, section, key, value, 0, x->lineno);
    return 1;
}

static void config_load(config_t *c, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        die_config("cannot open config %s: %s", path, strerror(errno));
    ini_ctx_t x = {.f = f, .cfg = c};
    int r = ini_parse_stream(cfg_read_line, &x, cfg_on_key, &x);
    fclose(f);
    if (x.too_long_line)
        die_config("%s:%d: line too long for libinih; continue a long value on the next "
                   "line, indented",
                   path, x.too_long_line);
    if (x.err_line && (r <= 0 || x.err_line <= r))
        die_config("%s:%d: %s", path, x.err_line, x.err);
    if (r > 0)
        die_config("%s:%d: syntax error: expected '[section]', 'key = value' or a ';' or '#' "
                   "comment",
                   path, r);
    if (r < 0)
        die_config("%s: cannot parse (out of memory?)", path);
}

// Applies a command-line override "section.key=value".
static void config_override(config_t *c, const char *arg) {
    const char *eq = strchr(arg, '=');
    const char *dot = memchr(arg, '.', eq ? (size_t)(eq - arg) : 0);
    if (!eq || !dot || dot == arg || dot + 1 == eq)
        die_config("bad override '%s': expected section.key=value", arg);
    char sec[64], key[256], msg[400];
    snprintf(sec, sizeof sec, "%.*s", (int)(dot - arg), arg);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    if (check_key(sec, key, msg, sizeof msg))
        die_config("command line '%s': %s", arg, msg);
    config_set(c, sec, key, eq + 1, 0, 0);
}

// Directory of this executable: the default run.bin.
static void self_dir(char *out, size_t cap, const char *argv0) {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0)
        buf[n] = 0;
    else
        snprintf(buf, sizeof buf, "%s", argv0);
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(buf, sizeof buf, ".");
    snprintf(out, cap, "%s", buf);
}

static void config_defaults(config_t *c, const char *bin_dir) {
    static const char *const d[][3] = {
        {"run", "name", "run"},
        {"run", "out", "runs/${run.name}"},
        {"run", "hub", "tcp://127.0.0.1:5555"},
        {"run", "bind", "tcp://*:5555"},
        {"run", "metrics", "${run.out}/metrics.jsonl"},
        {"run", "progress_interval_s", "10"},
        {"run", "stop_timeout_s", "5"},
        {"task", "dir", "${run.out}/task"},
        {"task", "enabled", "true"},
        {"pretrain", "enabled", "true"},
        {"learner", "np", "1"},
        {"learner", "mpirun", "mpirun"},
        {"learner", "np_flag", "-np"},
        {"learner", "mpi_args", ""},
        {"learner", "hostfile", ""},
        {"learner", "stop_timeout_s", "30"},
        {"actor", "count", "1"},
        {"actor", "restart", "true"},
        {"actor", "backoff_s", "1"},
        {"actor", "backoff_max_s", "30"},
        {"actor", "name", "actor"},
        {"reward", "count", "1"},
        {"reward", "restart", "true"},
        {"reward", "backoff_s", "1"},
        {"reward", "backoff_max_s", "30"},
        {"reward", "name", "reward"},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        config_set(c, d[i][0], d[i][1], d[i][2], 1, 0);
    config_set(c, "run", "bin", bin_dir, 1, 0);
}

// ---- commands --------------------------------------------------------------------------------

// A NULL-terminated argument vector of owned strings.
typedef struct {
    char **v;   // v[n] == NULL
    int n, cap; // used, allocated
} argv_t;

static void av_push(argv_t *a, const char *s) {
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = realloc(a->v, (size_t)a->cap * sizeof *a->v);
        if (!a->v)
            RLX_DIE("out of memory");
    }
    a->v[a->n++] = xstrdup(s);
    a->v[a->n] = NULL;
}

static void av_free(argv_t *a) {
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    *a = (argv_t){0};
}

// Splits a command string into words at blanks; '...' and "..." group words (no escapes).
static void av_push_words(argv_t *a, const char *s, const char *what) {
    sbuf_t w = {0};
    int in_word = 0;
    for (const char *p = s;; p++) {
        if (*p == 0 || isspace((unsigned char)*p)) {
            if (in_word)
                av_push(a, w.s ? w.s : "");
            w.n = 0;
            if (w.s)
                w.s[0] = 0;
            in_word = 0;
            if (!*p)
                break;
        } else if (*p == '\'' || *p == '"') {
            const char *close = strchr(p + 1, *p);
            if (!close)
                die_config("%s = '%s': unbalanced quote", what, s);
            sb_add(&w, p + 1, (size_t)(close - p - 1));
            in_word = 1;
            p = close;
        } else {
            sb_add(&w, p, 1);
            in_word = 1;
        }
    }
    free(w.s);
}

// Appends the pass-through keys of section as flags: key = value -> --key value; an empty value
// or "true" -> --key alone; "false" -> nothing. Keys in skip are the launcher's own.
static void av_push_flags(argv_t *a, const config_t *c, const char *section,
                          const char *const *skip) {
    for (int i = 0; i < c->n; i++) {
        const entry_t *e = &c->e[i];
        if (strcmp(e->section, section) || in_list(skip, e->key))
            continue;
        char *v = config_get(c, section, e->key);
        if (strcasecmp(v, "false")) {
            char flag[300];
            snprintf(flag, sizeof flag, "--%s", e->key);
            av_push(a, flag);
            if (*v && strcasecmp(v, "true"))
                av_push(a, v);
        }
        free(v);
    }
}

static void print_quoted(FILE *f, const char *s) {
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "@%+=:,./-_";
    if (*s && strspn(s, safe) == strlen(s)) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (; *s; s++)
        if (*s == '\'')
            fputs("'\\''", f);
        else
            fputc(*s, f);
    fputc('\'', f);
}

static void print_command(FILE *f, const argv_t *a, int root_env) {
    if (root_env)
        fputs("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ", f);
    for (int i = 0; i < a->n; i++) {
        if (i)
            fputc(' ', f);
        print_quoted(f, a->v[i]);
    }
    fputc('\n', f);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// mkdir -p; returns 0 or -1 with errno set.
static int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

// ---- processes -------------------------------------------------------------------------------

enum { ROLE_LEARNER = 1, ROLE_ACTOR = 2, ROLE_REWARD = 4, ROLE_PREP = 8 };
#define ROLE_WORKERS (ROLE_ACTOR | ROLE_REWARD)

typedef struct {
    int role;           // ROLE_*
    char *name;         // "actor-0": its --name and its log's name
    argv_t argv;        // the command (owned)
    char *log_path;     // OUT/logs/NAME.log (appended to across restarts)
    int root_env;       // set OMPI_ALLOW_RUN_AS_ROOT* in its environment (mpirun as root)
    pid_t pid;          // the running process (leader of its process group); 0 when none
    int starts;         // times started
    double started_at;  // rlx_now() at the last start
    int restart;        // restart it when it dies (workers)
    double backoff_s;   // delay before the next restart (doubles on quick deaths)
    double backoff_min; // first delay, and the delay after a long healthy run
    double backoff_max; // cap on the delay
    double restart_at;  // when a dead worker is due to start again; 0 = not scheduled
    int status;         // wait status of its last exit
    int exited;         // exited at least once and not running now
} proc_t;

// The last values seen in the learner's metrics file.
typedef struct {
    char *path;            // the learner's metrics file (JSON lines)
    off_t offset;          // bytes consumed
    dev_t dev;             // identity of the file being read
    ino_t ino;             //
    off_t skip_to;         // bytes of an older run in the same file, skipped
    int skip_valid;        // skip_to applies (the file existed before the learner started)
    sbuf_t partial;        // an incomplete last line
    long lines, bad_lines; // lines parsed, lines that were not a JSON object
    double step, samples;  // NAN until seen
    double sps;            // samples_per_s
    double reward, eval;   // reward_mean, eval_accuracy (last seen)
    double eval_first;     // the first eval_accuracy seen (the model before RL), NAN until then
    double l1, diversity;  // GFlowNets' exact l1, diffusion's diversity (last seen)
    double lag_mean, lag_max;
    double q_work, q_score, q_learner; // queue depths, if the learner reports them
    double t_first, samples_first;     // for samples/s when samples_per_s is absent
    json_object *summary;              // the final summary line (owned), NULL until seen
} metrics_t;

typedef struct {
    config_t cfg;                // the resolved config
    int roles;                   // ROLE_* run on this host
    int tty;                     // stdout is a terminal: one line rewritten in place
    int line_drawn;              // a progress line without newline is on the terminal
    proc_t *procs;               // learner (if run here) first, then actors, then reward workers
    int n_procs;                 //
    proc_t *learner;             // NULL with --only actor/reward
    proc_t *prep;                // the preparation step running now, if any
    char learner_real[PATH_MAX]; // realpath of BIN/rlx-learner, to find its local ranks
    metrics_t m;                 //
    double t0;                   // start of the run
    double progress_every_s;     // period of progress lines when not on a terminal (0 = none)
    double stop_timeout_s;       // workers' SIGTERM -> SIGKILL deadline
    double learner_stop_s;       // learners' deadline to checkpoint and exit
    int stopping;                // shutting down: no restarts
} launcher_t;

static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t stop_signal; // first SIGINT/SIGTERM/SIGHUP received
static volatile sig_atomic_t n_stops;     // how many were received

static void on_signal(int sig) {
    int saved = errno;
    if (sig != SIGCHLD) {
        if (!stop_signal)
            stop_signal = sig;
        n_stops++;
    }
    char b = (char)sig;
    ssize_t r = write(sig_pipe[1], &b, 1);
    (void)r;
    errno = saved;
}

static void setup_signals(void) {
    if (pipe(sig_pipe) != 0)
        RLX_DIE("pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        fcntl(sig_pipe[i], F_SETFL, fcntl(sig_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

// Sleeps until a signal arrives, fd (if >= 0) is readable, or timeout_s passes.
// Returns 1 if fd is readable.
static int wait_events(double timeout_s, int fd) {
    struct pollfd p[2] = {{sig_pipe[0], POLLIN, 0}, {fd, POLLIN, 0}};
    int ms = timeout_s <= 0 ? 0 : (int)(timeout_s * 1000) + 1;
    int r = poll(p, fd >= 0 ? 2 : 1, ms);
    if (r > 0 && (p[0].revents & POLLIN)) {
        char buf[64];
        while (read(sig_pipe[0], buf, sizeof buf) > 0)
            ;
    }
    return r > 0 && fd >= 0 && (p[1].revents & (POLLIN | POLLHUP));
}

static void fmt_status(char *out, size_t cap, int st) {
    if (WIFEXITED(st))
        snprintf(out, cap, "exited with code %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(out, cap, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(out, cap, "ended (status 0x%x)", st);
}

static int exit_code_of(int st) {
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 1;
}

// Prints a message line, first clearing a progress line drawn on the terminal.
static void event(launcher_t *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void event(launcher_t *L, const char *fmt, ...) {
    if (L->line_drawn) {
        fputs("\r\033[K", stdout);
        L->line_drawn = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    printf("[%6.1fs] ", rlx_now() - L->t0);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

// Starts p in its own process group with stdout and stderr going to out_fd (or to its log file
// when out_fd < 0). Returns 0, or -1 if it could not be started.
static int proc_start(launcher_t *L, proc_t *p, int out_fd) {
    int log_fd = out_fd;
    if (out_fd < 0) {
        log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) {
            event(L, "cannot open %s: %s", p->log_path, strerror(errno));
            return -1;
        }
        time_t now = time(NULL);
        char when[64];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&now));
        dprintf(log_fd, "==== rlx-launch: %s start %d at %s:", p->name, p->starts + 1, when);
        for (int i = 0; i < p->argv.n; i++)
            dprintf(log_fd, " %s", p->argv.v[i]);
        dprintf(log_fd, "\n");
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        event(L, "cannot start %s: fork: %s", p->name, strerror(errno));
        if (out_fd < 0)
            close(log_fd);
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        struct sigaction sa = {0};
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            sigaction(sigs[i], &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
            close(devnull);
        }
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        if (p->root_env) {
            setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
            setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
        }
        execvp(p->argv.v[0], p->argv.v);
        dprintf(2, "rlx-launch: cannot run %s: %s\n", p->argv.v[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); // also in the parent: signals may be sent before the child runs
    if (out_fd < 0)
        close(log_fd);
    p->pid = pid;
    p->starts++;
    p->started_at = rlx_now();
    p->restart_at = 0;
    p->exited = 0;
    return 0;
}

// Sends sig to p's process group (the process and anything it started that stayed in it).
static void proc_signal(proc_t *p, int sig) {
    if (p->pid > 0 && kill(-p->pid, sig) != 0)
        kill(p->pid, sig);
}

static void on_exit_proc(launcher_t *L, proc_t *p, int st) {
    char how[128];
    fmt_status(how, sizeof how, st);
    double ran = rlx_now() - p->started_at;
    p->pid = 0;
    p->status = st;
    p->exited = 1;
    if (p->role == ROLE_PREP)
        return;
    if (L->stopping) {
        if (p->role != ROLE_LEARNER)
            return;
    }
    if (p->role == ROLE_LEARNER) {
        event(L, "learner %s after %.1f s", how, ran);
        return;
    }
    if (!p->restart) {
        event(L, "%s %s after %.1f s; not restarted (restart = false)", p->name, how, ran);
        return;
    }
    // Exit code 0 is a worker that chose to leave (the hub said Bye at the end of the run,
    // or --max-items was reached): starting it again would only find the hub gone.
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        event(L, "%s %s after %.1f s: it left on its own, not restarted", p->name, how, ran);
        return;
    }
    if (ran >= 60)
        p->backoff_s = p->backoff_min; // it ran healthily for a while: start over
    double delay = p->backoff_s;
    p->backoff_s = fmin(2 * p->backoff_s, p->backoff_max);
    p->restart_at = rlx_now() + delay;
    event(L, "%s %s after %.1f s; restarting in %.1f s (restart %d)", p->name, how, ran, delay,
          p->starts);
}

// Reaps every child that exited. Before reaping, kills what the child left in its process
// group (e.g. a reward worker's --exec scorer): the group id stays reserved until the reap.
static void reap_all(launcher_t *L) {
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0)
            return;
        pid_t pid = si.si_pid;
        proc_t *p = NULL;
        for (int i = 0; i < L->n_procs; i++)
            if (L->procs[i].pid == pid)
                p = &L->procs[i];
        if (L->prep && L->prep->pid == pid)
            p = L->prep;
        if (p)
            kill(-pid, SIGKILL);
        int st = 0;
        if (waitpid(pid, &st, 0) != pid)
            return;
        if (p)
            on_exit_proc(L, p, st);
    }
}

static int count_live(const launcher_t *L, int roles) {
    int n = 0;
    for (int i = 0; i < L->n_procs; i++)
        if ((L->procs[i].role & roles) && L->procs[i].pid > 0)
            n++;
    return n;
}

static int count_role(const launcher_t *L, int roles) {
    int n = 0;
    for (int i = 0; i < L->n_procs; i++)
        if (L->procs[i].role & roles)
            n++;
    return n;
}

// Waits until no process of roles is running, at most timeout_s; a second interrupt cuts the
// wait short. Returns the number still running.
static int wait_roles(launcher_t *L, int roles, double timeout_s, int stops_at_start) {
    double deadline = rlx_now() + timeout_s;
    reap_all(L);
    while (count_live(L, roles) > 0 && rlx_now() < deadline && n_stops <= stops_at_start) {
        wait_events(fmin(0.1, deadline - rlx_now()), -1);
        reap_all(L);
    }
    return count_live(L, roles);
}

// SIGKILLs the process groups of roles and reaps them (at most 2 s more; a process stuck in the
// kernel is reported, not waited for forever).
static void kill_roles(launcher_t *L, int roles, const char *why) {
    for (int i = 0; i < L->n_procs; i++) {
        proc_t *p = &L->procs[i];
        if ((p->role & roles) && p->pid > 0) {
            event(L, "%s (pid %d) %s: SIGKILL", p->name, (int)p->pid, why);
            proc_signal(p, SIGKILL);
        }
    }
    if (wait_roles(L, roles, 2.0, INT_MAX) > 0)
        event(L, "warning: %d process(es) did not die after SIGKILL", count_live(L, roles));
}

// Local ranks of the learner: descendants of mpirun (or mpirun itself, under a stand-in) whose
// executable, or script, is rlx-learner. Returns how many pids were written to out.
static int learner_ranks(const launcher_t *L, pid_t root, pid_t *out, int cap) {
    enum { MAXP = 65536 };
    pid_t *pid = malloc(MAXP * sizeof *pid), *ppid = malloc(MAXP * sizeof *ppid);
    int n = 0, found = 0;
    DIR *d = opendir("/proc");
    if (!pid || !ppid || !d)
        goto cleanup;
    struct dirent *de;
    while ((de = readdir(d)) && n < MAXP) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *rp = strrchr(buf, ')'); // comm may contain spaces and ')'
        int pp;
        char state;
        if (rp && sscanf(rp + 1, " %c %d", &state, &pp) == 2) {
            pid[n] = (pid_t)atoi(de->d_name);
            ppid[n++] = (pid_t)pp;
        }
    }
    // breadth-first over the tree below root; tree[] holds the pids reached so far
    pid_t tree[1024];
    int nt = 0, head = 0;
    tree[nt++] = root;
    while (head < nt && nt < 1024) {
        pid_t parent = tree[head++];
        for (int i = 0; i < n && nt < 1024; i++)
            if (ppid[i] == parent)
                tree[nt++] = pid[i];
    }
    for (int t = 0; t < nt && found < cap; t++) {
        char path[300], exe[PATH_MAX], real[PATH_MAX], cmd[4096];
        snprintf(path, sizeof path, "/proc/%d/exe", (int)tree[t]);
        ssize_t k = readlink(path, exe, sizeof exe - 1);
        int match = k > 0 && (exe[k] = 0, !strcmp(exe, L->learner_real));
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)tree[t]);
        FILE *f = match ? NULL : fopen(path, "r");
        if (f) { // an interpreter running the learner as a script: argv[1] is its path
            size_t len = fread(cmd, 1, sizeof cmd - 1, f);
            fclose(f);
            cmd[len] = 0;
            size_t a0 = strlen(cmd);
            if (a0 + 1 < len && realpath(cmd + a0 + 1, real) && !strcmp(real, L->learner_real))
                match = 1;
        }
        if (match)
            out[found++] = tree[t];
    }
cleanup:
    if (d)
        closedir(d);
    free(pid);
    free(ppid);
    return found;
}

// Stops the learner: SIGTERM to its local ranks (they checkpoint and exit; mpirun then exits
// by itself: SIGTERM to mpirun would SIGKILL them after about a second), then, at the deadline,
// SIGTERM to mpirun (which stops ranks on every host), then SIGKILL.
static void stop_learner(launcher_t *L) {
    proc_t *p = L->learner;
    reap_all(L);
    if (!p || p->pid <= 0)
        return;
    int stops = n_stops;
    pid_t ranks[256];
    int nr = learner_ranks(L, p->pid, ranks, 256);
    if (nr > 0) {
        event(L, "stopping the learner: SIGTERM to %d local rank(s), waiting up to %.0f s", nr,
              L->learner_stop_s);
        for (int i = 0; i < nr; i++)
            if (getpgid(ranks[i]) != ranks[i] || kill(-ranks[i], SIGTERM) != 0)
                kill(ranks[i], SIGTERM);
    } else {
        event(L, "stopping the learner: SIGTERM to %s, waiting up to %.0f s", p->argv.v[0],
              L->learner_stop_s);
        proc_signal(p, SIGTERM);
    }
    if (wait_roles(L, ROLE_LEARNER, L->learner_stop_s, stops) == 0)
        return;
    if (nr > 0 && n_stops <= stops) {
        event(L, "learner still running after %.0f s: SIGTERM to %s", L->learner_stop_s,
              p->argv.v[0]);
        proc_signal(p, SIGTERM);
        if (wait_roles(L, ROLE_LEARNER, L->stop_timeout_s, stops) == 0)
            return;
    }
    nr = learner_ranks(L, p->pid, ranks, 256);
    for (int i = 0; i < nr; i++)
        if (ranks[i] != p->pid && (getpgid(ranks[i]) != ranks[i] || kill(-ranks[i], SIGKILL)))
            kill(ranks[i], SIGKILL);
    kill_roles(L, ROLE_LEARNER, n_stops > stops ? "second interrupt" : "past its deadline");
}

static void stop_workers(launcher_t *L) {
    int stops = n_stops;
    reap_all(L);
    for (int i = 0; i < L->n_procs; i++) {
        proc_t *p = &L->procs[i];
        p->restart_at = 0;
        if ((p->role & ROLE_WORKERS) && p->pid > 0)
            proc_signal(p, SIGTERM);
    }
    int live = count_live(L, ROLE_WORKERS);
    if (live == 0)
        return;
    event(L, "stopping %d actor/reward process(es): SIGTERM, waiting up to %.0f s", live,
          L->stop_timeout_s);
    if (wait_roles(L, ROLE_WORKERS, L->stop_timeout_s, stops) > 0)
        kill_roles(L, ROLE_WORKERS, n_stops > stops ? "second interrupt" : "past its deadline");
}

// ---- metrics and progress --------------------------------------------------------------------

static void metrics_init(metrics_t *m, const char *path) {
    memset(m, 0, sizeof *m);
    m->path = xstrdup(path);
    m->step = m->samples = m->sps = m->reward = m->eval = m->lag_mean = m->lag_max = NAN;
    m->q_work = m->q_score = m->q_learner = m->eval_first = NAN;
    m->l1 = m->diversity = NAN;
    struct stat st;
    if (stat(path, &st) == 0) { // an earlier run's lines (e.g. before --resume): not ours
        m->skip_valid = 1;
        m->skip_to = st.st_size;
        m->dev = st.st_dev;
        m->ino = st.st_ino;
    }
}

static void metrics_free(metrics_t *m) {
    free(m->path);
    free(m->partial.s);
    if (m->summary)
        json_object_put(m->summary);
    memset(m, 0, sizeof *m);
}

static void jnum(json_object *o, const char *key, double *out) {
    json_object *v;
    if (json_object_object_get_ex(o, key, &v) &&
        (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)))
        *out = json_object_get_double(v);
}

static void metrics_line(metrics_t *m, const char *line) {
    while (isspace((unsigned char)*line))
        line++;
    if (!*line)
        return;
    json_object *o = json_tokener_parse(line);
    if (!o || !json_object_is_type(o, json_type_object)) {
        m->bad_lines++;
        if (o)
            json_object_put(o);
        return;
    }
    m->lines++;
    json_object *s;
    if (json_object_object_get_ex(o, "summary", &s) && json_object_get_boolean(s)) {
        if (m->summary)
            json_object_put(m->summary);
        m->summary = o;
        return;
    }
    jnum(o, "step", &m->step);
    jnum(o, "samples", &m->samples);
    jnum(o, "samples_per_s", &m->sps);
    jnum(o, "reward_mean", &m->reward);
    jnum(o, "eval_accuracy", &m->eval);
    jnum(o, "l1", &m->l1);
    jnum(o, "diversity", &m->diversity);
    if (isnan(m->eval_first) && !isnan(m->eval))
        m->eval_first = m->eval;
    jnum(o, "lag_mean", &m->lag_mean);
    jnum(o, "lag_max", &m->lag_max);
    jnum(o, "queue_work", &m->q_work);
    jnum(o, "queue_score", &m->q_score);
    jnum(o, "queue_learner", &m->q_learner);
    if (m->t_first == 0 && !isnan(m->samples)) {
        m->t_first = rlx_now();
        m->samples_first = m->samples;
    }
    json_object_put(o);
}

// Reads the lines appended to the metrics file since the last call.
static void metrics_poll(metrics_t *m) {
    struct stat st;
    if (stat(m->path, &st) != 0)
        return;
    if (st.st_dev != m->dev || st.st_ino != m->ino) { // new file (or first sight of it)
        int same_as_before = m->skip_valid && st.st_dev == m->dev && st.st_ino == m->ino;
        m->dev = st.st_dev;
        m->ino = st.st_ino;
        m->offset = same_as_before ? m->skip_to : 0;
        m->skip_valid = 0;
        m->partial.n = 0;
    } else if (m->skip_valid) { // the file that was there before the learner started
        m->offset = m->skip_to;
        m->skip_valid = 0;
    }
    if (st.st_size < m->offset) { // truncated: the learner started it afresh
        m->offset = 0;
        m->partial.n = 0;
    }
    if (st.st_size == m->offset)
        return;
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[65536];
    ssize_t r;
    while ((r = pread(fd, buf, sizeof buf, m->offset)) > 0) {
        m->offset += r;
        const char *p = buf, *end = buf + r;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) {
                sb_add(&m->partial, p, (size_t)(end - p));
                break;
            }
            sb_add(&m->partial, p, (size_t)(nl - p));
            metrics_line(m, m->partial.s);
            m->partial.n = 0;
            p = nl + 1;
        }
    }
    close(fd);
}

static void progress_text(const launcher_t *L, char *out, size_t cap) {
    const metrics_t *m = &L->m;
    size_t n = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (n < cap)                                                                               \
            n += (size_t)snprintf(out + n, cap - n, __VA_ARGS__);                                  \
    } while (0)
    int el = (int)(rlx_now() - L->t0);
    ADD("%d:%02d:%02d", el / 3600, el / 60 % 60, el % 60);
    if (L->learner) {
        if (isnan(m->step) && isnan(m->samples)) {
            ADD(" | %s %s", L->learner->pid > 0 ? "learner running, waiting for" : "no metrics in",
                m->path);
        } else {
            if (!isnan(m->step))
                ADD(" | step %.0f", m->step);
            if (!isnan(m->samples)) {
                double sps = m->sps;
                if (isnan(sps) && m->t_first > 0 && rlx_now() > m->t_first + 1)
                    sps = (m->samples - m->samples_first) / (rlx_now() - m->t_first);
                ADD(" | samples %.0f", m->samples);
                if (!isnan(sps))
                    ADD(" (%.1f/s)", sps);
            }
            if (!isnan(m->reward))
                ADD(" | reward %.3f", m->reward);
            if (!isnan(m->eval))
                ADD(" | eval %.3f", m->eval);
            if (!isnan(m->l1))
                ADD(" | l1 %.4f", m->l1);
            if (!isnan(m->diversity))
                ADD(" | diversity %.3f", m->diversity);
            if (!isnan(m->lag_mean))
                ADD(" | lag %.2f/%.0f", m->lag_mean, isnan(m->lag_max) ? 0.0 : m->lag_max);
            if (!isnan(m->q_work) || !isnan(m->q_score) || !isnan(m->q_learner)) {
                ADD(" | queues");
                if (!isnan(m->q_work))
                    ADD(" work %.0f", m->q_work);
                if (!isnan(m->q_score))
                    ADD(" score %.0f", m->q_score);
                if (!isnan(m->q_learner))
                    ADD(" learner %.0f", m->q_learner);
            }
        }
    }
    if (count_role(L, ROLE_ACTOR))
        ADD(" | actors %d/%d", count_live(L, ROLE_ACTOR), count_role(L, ROLE_ACTOR));
    if (count_role(L, ROLE_REWARD))
        ADD(" | reward workers %d/%d", count_live(L, ROLE_REWARD), count_role(L, ROLE_REWARD));
#undef ADD
}

static void progress_show(launcher_t *L, int final) {
    char line[1024];
    progress_text(L, line, sizeof line);
    if (L->tty && !final) {
        struct winsize ws; // a line longer than the terminal would wrap and not be rewritten
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 &&
            strlen(line) >= ws.ws_col)
            line[ws.ws_col - 1] = 0;
        printf("\r\033[K%s", line);
        L->line_drawn = 1;
    } else {
        if (L->line_drawn)
            fputs("\r\033[K", stdout);
        printf("%s%s\n", final ? "final: " : "", line);
        L->line_drawn = 0;
    }
    fflush(stdout);
}

static void summary_show(launcher_t *L) {
    if (!L->m.summary)
        return;
    printf("summary:");
    json_object_object_foreach(L->m.summary, key, val) {
        if (!strcmp(key, "summary"))
            continue;
        printf(" %s %s", key, json_object_to_json_string_ext(val, JSON_C_TO_STRING_PLAIN));
    }
    printf("\n");
    // The run's result in one line: the model before RL (first evaluation) and after it.
    json_object *v;
    double sampled =
        json_object_object_get_ex(L->m.summary, "sampled", &v) ? json_object_get_double(v) : NAN;
    if (!isnan(L->m.eval_first))
        printf("result: eval accuracy %.4f before RL -> %.4f after; %.0f trajectories sampled; "
               "wall time %.1f s (all steps)\n",
               L->m.eval_first, L->m.eval, sampled, rlx_now() - L->t0);
    fflush(stdout);
}

// Prints the last lines of a log file (why the learner failed).
static void show_log_tail(const char *path, int lines) {
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fseek(f, 0, SEEK_END);
    long size = ftell(f), start = size > 8192 ? size - 8192 : 0;
    fseek(f, start, SEEK_SET);
    char buf[8193];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int seen = 0;
    char *p = buf + n;
    while (p > buf && seen <= lines)
        if (*--p == '\n' && p < buf + n - 1)
            seen++;
    printf("---- last lines of %s ----\n%s%s", path, p == buf ? p : p + 1,
           n && buf[n - 1] != '\n' ? "\n" : "");
}

// ---- preparation steps -----------------------------------------------------------------------

// Runs a preparation command (task files, pretraining) to completion, copying its output to its
// log and to stdout prefixed with its name. Returns its exit code (128+signal if killed), or
// 128+signal of the launcher if the launcher was interrupted (the step is then stopped).
static int run_prep(launcher_t *L, proc_t *p) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        RLX_DIE("pipe: %s", strerror(errno));
    int log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0)
        RLX_DIE("cannot open %s: %s (is run.out writable?)", p->log_path, strerror(errno));
    event(L, "%s: starting (log %s)", p->name, p->log_path);
    if (proc_start(L, p, fds[1]) != 0)
        RLX_DIE("cannot start %s", p->argv.v[0]);
    close(fds[1]);
    sbuf_t line = {0};
    int open_pipe = 1, interrupted = 0;
    double kill_at = 0;
    L->prep = p;
    while (p->pid > 0 || open_pipe) {
        if (stop_signal && !interrupted) {
            interrupted = 1;
            event(L, "interrupted: stopping %s (up to %.0f s)", p->name, L->learner_stop_s);
            proc_signal(p, SIGTERM);
            kill_at = rlx_now() + L->learner_stop_s;
        }
        if (interrupted && p->pid > 0 && (rlx_now() > kill_at || n_stops > 1)) {
            event(L, "%s (pid %d) still running: SIGKILL", p->name, (int)p->pid);
            proc_signal(p, SIGKILL);
            kill_at = INFINITY;
        }
        if (wait_events(0.2, open_pipe ? fds[0] : -1)) {
            char buf[4096];
            ssize_t r = read(fds[0], buf, sizeof buf);
            if (r > 0) {
                ssize_t w = write(log_fd, buf, (size_t)r);
                (void)w;
                for (ssize_t i = 0; i < r; i++) {
                    sb_add(&line, buf + i, 1);
                    if (buf[i] == '\n') {
                        printf("  %s | %s", p->name, line.s);
                        line.n = 0;
                    }
                }
                fflush(stdout);
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                open_pipe = 0;
                if (line.n)
                    printf("  %s | %s\n", p->name, line.s);
                fflush(stdout);
            }
        }
        reap_all(L);
    }
    L->prep = NULL;
    free(line.s);
    close(fds[0]);
    close(log_fd);
    if (interrupted)
        return 128 + stop_signal;
    return exit_code_of(p->status);
}

// ---- main ------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f,
            "usage: rlx-launch CONFIG.ini [section.key=value ...] [--dry-run] [--out DIR]\n"
            "                  [--only learner,actor,reward] [--show-config]\n"
            "Starts an rlx run from one INI file: the task files and pretrained checkpoint if\n"
            "missing, the learners under mpirun, the actors and reward workers; shows progress;\n"
            "Ctrl-C stops everything. Exit code: the learner's; 130 after Ctrl-C; 2 for a bad\n"
            "config.\n\n"
            "  section.key=value  set or override any config key (e.g. actor.count=4)\n"
            "  --dry-run          print the commands it would run, one per line, and exit\n"
            "  --out DIR          the run directory (same as run.out=DIR)\n"
            "  --only ROLES       run only these roles here (comma list of learner, actor,\n"
            "                     reward): e.g. the workers of another host (--role is a synonym)\n"
            "  --show-config      print every key with its expanded value and exit\n"
            "Relative paths in the config are relative to the current directory. Keys: see\n"
            "cluster/README.md.\n");
}

static int parse_roles(const char *s) {
    int roles = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "learner"))
            roles |= ROLE_LEARNER;
        else if (!strcmp(t, "actor"))
            roles |= ROLE_ACTOR;
        else if (!strcmp(t, "reward"))
            roles |= ROLE_REWARD;
        else
            die_config("--only: unknown role '%s' (roles: learner, actor, reward)", t);
    }
    if (!roles)
        die_config("--only needs a role: learner, actor or reward");
    return roles;
}

static proc_t *add_proc(launcher_t *L, int role, const char *name, const char *logs_dir) {
    L->procs = realloc(L->procs, (size_t)(L->n_procs + 1) * sizeof *L->procs);
    if (!L->procs)
        RLX_DIE("out of memory");
    proc_t *p = &L->procs[L->n_procs++];
    memset(p, 0, sizeof *p);
    p->role = role;
    p->name = xstrdup(name);
    p->log_path = xasprintf("%s/%s.log", logs_dir, name);
    return p;
}

static void proc_free(proc_t *p) {
    free(p->name);
    free(p->log_path);
    av_free(&p->argv);
}

// Builds the actor or reward worker processes of section.
static void add_workers(launcher_t *L, const char *section, int role, const char *bin,
                        const char *exe, const char *hub, const char *logs) {
    const config_t *c = &L->cfg;
    int count = config_int(c, section, "count", 0, 10000);
    char *prefix = config_get(c, section, "name");
    int restart = config_bool(c, section, "restart");
    double b0 = config_number(c, section, "backoff_s", 0, 3600);
    double bmax = config_number(c, section, "backoff_max_s", b0, 86400);
    for (int i = 0; i < count; i++) {
        char name[300], path[PATH_MAX];
        snprintf(name, sizeof name, "%s-%d", prefix, i);
        proc_t *p = add_proc(L, role, name, logs);
        snprintf(path, sizeof path, "%s/%s", bin, exe);
        av_push(&p->argv, path);
        av_push(&p->argv, "--hub");
        av_push(&p->argv, hub);
        av_push(&p->argv, "--name");
        av_push(&p->argv, name);
        av_push_flags(&p->argv, c, section, WORKER_KEYS);
        p->restart = restart;
        p->backoff_s = p->backoff_min = b0;
        p->backoff_max = bmax;
    }
    free(prefix);
}

int main(int argc, char **argv) {
    launcher_t L_ = {0}, *L = &L_;
    const char *config_path = NULL;
    int dry_run = 0, show_config = 0;
    L->roles = ROLE_LEARNER | ROLE_ACTOR | ROLE_REWARD;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--dry-run")) {
            dry_run = 1;
        } else if (!strcmp(a, "--show-config")) {
            show_config = 1;
        } else if ((!strcmp(a, "--only") || !strcmp(a, "--role")) && i + 1 < argc) {
            L->roles = parse_roles(argv[++i]);
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            i++; // applied with the overrides, below
        } else if (a[0] == '-') {
            fprintf(stderr, "rlx-launch: unknown option '%s'\n", a);
            usage(stderr);
            return EXIT_CONFIG;
        } else if (!strchr(a, '=') && !config_path) {
            config_path = a;
        } else if (!strchr(a, '=')) {
            die_config("unexpected argument '%s' (overrides are section.key=value)", a);
        }
    }
    if (!config_path) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    char bin_dir[PATH_MAX];
    self_dir(bin_dir, sizeof bin_dir, argv[0]);
    config_t *c = &L->cfg;
    c->path = config_path;
    config_defaults(c, bin_dir);
    config_load(c, config_path);
    for (int i = 1; i < argc; i++) { // command-line overrides, in order, after the file
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            config_set(c, "run", "out", argv[++i], 0, 0);
        } else if ((!strcmp(argv[i], "--only") || !strcmp(argv[i], "--role")) && i + 1 < argc) {
            i++;
        } else if (argv[i][0] != '-' && strchr(argv[i], '=')) {
            config_override(c, argv[i]);
        }
    }
    // Workers started on another host get the host name in their --name, unless named.
    if (!(L->roles & ROLE_LEARNER)) {
        char host[256] = "host", name[300];
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        const char *sections[] = {"actor", "reward"};
        for (int i = 0; i < 2; i++)
            if (config_find(c, sections[i], "name")->is_default) {
                snprintf(name, sizeof name, "%s-%s", sections[i], host);
                config_set(c, sections[i], "name", name, 1, 0);
            }
    }
    if (show_config) {
        for (int i = 0; i < c->n; i++) {
            char *v = config_get(c, c->e[i].section, c->e[i].key);
            printf("%s.%s = %s%s\n", c->e[i].section, c->e[i].key, v,
                   c->e[i].is_default ? "    ; default" : "");
            free(v);
        }
        config_free(c);
        return 0;
    }

    // ---- resolve the config into commands ----
    char *out = config_get(c, "run", "out"), *bin = config_get(c, "run", "bin");
    char *hub = config_get(c, "run", "hub"), *bind = config_get(c, "run", "bind");
    char *metrics = config_get(c, "run", "metrics");
    L->progress_every_s = config_number(c, "run", "progress_interval_s", 0, 1e9);
    L->stop_timeout_s = config_number(c, "run", "stop_timeout_s", 0, 1e6);
    L->learner_stop_s = config_number(c, "learner", "stop_timeout_s", 0, 1e6);
    if (!*out)
        die_config("run.out (the run directory) is empty");
    char logs[PATH_MAX], path[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", out);
    int root_env = geteuid() == 0;

    // preparation: task files, pretrained checkpoint (only where the learner runs)
    proc_t task = {0}, pretrain = {0};
    int run_task = 0, run_pretrain = 0;
    char *ckpt = NULL, *ckpt_partial = NULL;
    if ((L->roles & ROLE_LEARNER) && config_has_section(c, "task") &&
        config_bool(c, "task", "enabled")) {
        char *kind = config_get(c, "task", "kind");
        if (!kind)
            die_config("[task] needs kind = add (the only task so far)");
        if (strcmp(kind, "add"))
            die_config("task.kind = '%s': unknown task (known: add)", kind);
        char *dir = config_get(c, "task", "dir");
        const char *files[] = {"corpus.txt", "train.tsv", "eval.tsv"};
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            if (!file_exists(path))
                run_task = 1;
        }
        task.role = ROLE_PREP;
        task.name = xstrdup("task");
        task.log_path = xasprintf("%s/task.log", logs);
        snprintf(path, sizeof path, "%s/rlx-task-add", bin);
        av_push(&task.argv, path);
        av_push(&task.argv, "--dir");
        av_push(&task.argv, dir);
        av_push_flags(&task.argv, c, "task", TASK_KEYS);
        free(kind);
        free(dir);
    }
    if ((L->roles & ROLE_LEARNER) && config_has_section(c, "pretrain") &&
        config_bool(c, "pretrain", "enabled")) {
        ckpt = config_get(c, "pretrain", "out");
        if (!ckpt || !*ckpt)
            die_config("[pretrain] needs out = the checkpoint to write (or reuse if present)");
        // Pretraining writes CKPT.partial and renames it when done: an interrupted run is
        // resumed next time, never mistaken for a finished checkpoint.
        ckpt_partial = xasprintf("%s.partial", ckpt);
        run_pretrain = !file_exists(ckpt);
        pretrain.role = ROLE_PREP;
        pretrain.name = xstrdup("pretrain");
        pretrain.log_path = xasprintf("%s/pretrain.log", logs);
        snprintf(path, sizeof path, "%s/rlx-pretrain", bin);
        av_push(&pretrain.argv, path);
        av_push(&pretrain.argv, "--out");
        av_push(&pretrain.argv, ckpt_partial);
        if (!config_find(c, "pretrain", "resume"))
            av_push(&pretrain.argv, "--resume");
        av_push_flags(&pretrain.argv, c, "pretrain", PRETRAIN_KEYS);
    }

    if (L->roles & ROLE_LEARNER) {
        proc_t *p = add_proc(L, ROLE_LEARNER, "learner", logs);
        int np = config_int(c, "learner", "np", 1, 1 << 20);
        char *mpirun = config_get(c, "learner", "mpirun");
        char *np_flag = config_get(c, "learner", "np_flag");
        char *mpi_args = config_get(c, "learner", "mpi_args");
        char *hostfile = config_get(c, "learner", "hostfile");
        av_push_words(&p->argv, mpirun, "learner.mpirun");
        if (p->argv.n == 0)
            die_config("learner.mpirun is empty");
        if (*np_flag) {
            char num[32];
            snprintf(num, sizeof num, "%d", np);
            av_push(&p->argv, np_flag);
            av_push(&p->argv, num);
        }
        av_push_words(&p->argv, mpi_args, "learner.mpi_args");
        if (*hostfile) {
            av_push(&p->argv, "--hostfile");
            av_push(&p->argv, hostfile);
        }
        snprintf(path, sizeof path, "%s/rlx-learner", bin);
        av_push(&p->argv, path);
        av_push(&p->argv, "--bind");
        av_push(&p->argv, bind);
        av_push(&p->argv, "--metrics");
        av_push(&p->argv, metrics);
        av_push_flags(&p->argv, c, "learner", LEARNER_KEYS);
        p->root_env = root_env;
        if (!realpath(path, L->learner_real))
            snprintf(L->learner_real, sizeof L->learner_real, "%s", path);
        free(mpirun);
        free(np_flag);
        free(mpi_args);
        free(hostfile);
    }
    if (L->roles & ROLE_ACTOR)
        add_workers(L, "actor", ROLE_ACTOR, bin, "rlx-actor", hub, logs);
    if (L->roles & ROLE_REWARD)
        add_workers(L, "reward", ROLE_REWARD, bin, "rlx-reward", hub, logs);
    L->learner = (L->roles & ROLE_LEARNER) ? &L->procs[0] : NULL;

    if (dry_run) {
        if (task.argv.n && !run_task)
            printf("# task files in %s exist: rlx-task-add skipped\n", task.argv.v[2]);
        else if (task.argv.n)
            print_command(stdout, &task.argv, 0);
        if (pretrain.argv.n && !run_pretrain)
            printf("# checkpoint %s exists: rlx-pretrain skipped\n", ckpt);
        else if (pretrain.argv.n) {
            print_command(stdout, &pretrain.argv, 0);
            printf("# then: rename %s to %s\n", ckpt_partial, ckpt);
        }
        for (int i = 0; i < L->n_procs; i++)
            print_command(stdout, &L->procs[i].argv, L->procs[i].root_env);
        printf("# logs in %s; metrics %s\n", logs, metrics);
        goto done;
    }

    // ---- run ----
    setup_signals();
    L->tty = isatty(STDOUT_FILENO);
    L->t0 = rlx_now();
    if (mkdir_p(out) != 0 || mkdir_p(logs) != 0)
        RLX_DIE("cannot create the run directory %s: %s", logs, strerror(errno));
    int rc = 0;
    if (run_task) {
        rc = run_prep(L, &task);
        if (rc != 0) {
            if (!stop_signal)
                event(L, "rlx-task-add failed (%d); see %s", rc, task.log_path);
            goto done_rc;
        }
    } else if (task.argv.n) {
        event(L, "task files in %s exist: reused", task.argv.v[2]);
    }
    if (run_pretrain) {
        rc = run_prep(L, &pretrain);
        if (rc == 0 && !stop_signal && rename(ckpt_partial, ckpt) != 0) {
            event(L, "pretraining ended but %s cannot be renamed to %s: %s", ckpt_partial, ckpt,
                  strerror(errno));
            rc = 1;
        }
        if (rc != 0) {
            if (!stop_signal)
                event(L, "rlx-pretrain failed (%d); see %s", rc, pretrain.log_path);
            goto done_rc;
        }
        event(L, "pretrained checkpoint: %s", ckpt);
    } else if (pretrain.argv.n) {
        event(L, "checkpoint %s exists: pretraining skipped", ckpt);
    }
    if (stop_signal) {
        rc = 128 + stop_signal;
        goto done_rc;
    }

    metrics_init(&L->m, metrics);
    for (int i = 0; i < L->n_procs; i++) {
        proc_t *p = &L->procs[i];
        if (proc_start(L, p, -1) != 0) {
            if (p->role == ROLE_LEARNER)
                RLX_DIE("cannot start the learner (%s)", p->argv.v[0]);
            p->exited = 1;
            p->restart_at = rlx_now() + p->backoff_s;
        }
    }
    event(L, "started %s%d actor(s), %d reward worker(s); logs in %s",
          L->learner ? "learner, " : "", count_role(L, ROLE_ACTOR), count_role(L, ROLE_REWARD),
          logs);
    if (L->learner)
        event(L, "learner: %s (hub %s, metrics %s)", L->learner->argv.v[0], bind, metrics);

    double next_progress = L->t0 + (L->tty ? 0.5 : L->progress_every_s);
    for (;;) {
        reap_all(L);
        if (stop_signal)
            break;
        if (L->learner && L->learner->exited)
            break;
        if (!L->learner && count_live(L, ROLE_WORKERS) == 0) {
            int pending = 0;
            for (int i = 0; i < L->n_procs; i++)
                pending += L->procs[i].restart_at > 0;
            if (!pending) {
                event(L, "every actor and reward worker has exited and none restarts");
                break;
            }
        }
        double now = rlx_now(), next = next_progress;
        for (int i = 0; i < L->n_procs; i++) {
            proc_t *p = &L->procs[i];
            if (p->restart_at > 0 && p->restart_at <= now && p->pid == 0) {
                if (proc_start(L, p, -1) == 0)
                    event(L, "%s restarted (pid %d)", p->name, (int)p->pid);
                else
                    p->restart_at = now + p->backoff_s;
            }
            if (p->restart_at > 0 && p->restart_at < next)
                next = p->restart_at;
        }
        if (L->learner)
            metrics_poll(&L->m);
        if ((L->tty || L->progress_every_s > 0) && now >= next_progress) {
            progress_show(L, 0);
            next_progress = now + (L->tty ? 0.5 : L->progress_every_s);
        }
        if (L->tty || L->progress_every_s > 0)
            next = fmin(next, next_progress);
        wait_events(fmin(fmax(next - rlx_now(), 0.01), 0.5), -1);
    }

    // ---- stop, in order: learners (they checkpoint), then actors and reward workers ----
    L->stopping = 1;
    if (stop_signal) {
        event(L, "%s received: stopping the run (Ctrl-C again to kill at once)",
              stop_signal == SIGINT ? "SIGINT" : strsignal(stop_signal));
        stop_learner(L);
        rc = 128 + stop_signal;
    } else if (L->learner) {
        rc = exit_code_of(L->learner->status);
    } else {
        rc = 1;
    }
    stop_workers(L);
    reap_all(L);
    if (L->learner) {
        metrics_poll(&L->m);
        if (L->learner->exited && exit_code_of(L->learner->status) != 0 && !stop_signal)
            show_log_tail(L->learner->log_path, 15);
    }
    progress_show(L, 1);
    summary_show(L);
    if (L->learner && L->m.bad_lines)
        printf("note: %ld line(s) of %s were not JSON objects\n", L->m.bad_lines, metrics);
    printf("exit code %d; logs in %s\n", rc, logs);
    fflush(stdout);
done_rc:
    metrics_free(&L->m);
    for (int i = 0; i < L->n_procs; i++)
        proc_free(&L->procs[i]);
    free(L->procs);
    proc_free(&task);
    proc_free(&pretrain);
    free(ckpt);
    free(ckpt_partial);
    free(out);
    free(bin);
    free(hub);
    free(bind);
    free(metrics);
    config_free(c);
    return rc;
done:
    rc = 0;
    goto done_rc;
}
