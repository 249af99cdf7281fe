// learner_main.c: rlx-learner, the MPI RL learner (run under mpirun). Parses options and
// calls learner_run (learner/learner.c); rank 0 also hosts the hub.
#include <getopt.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gflownet.h"
#include "learner.h"
#include "learner_common.h"
#include "objective.h"

static void usage(FILE *f) {
    learner_config_t d = learner_defaults();
    fprintf(
        f,
        "usage: mpirun -np K rlx-learner --init CKPT --out DIR --train-prompts TSV [options]\n"
        "Trains a gpt by reward: actors (rlx-actor) and reward workers (rlx-reward) connect to\n"
        "the hub that rank 0 binds.\n\n"
        "run:       --init CKPT --out DIR --resume --metrics PATH --replay TRAJLOG\n"
        "           --steps N (%lld) --max-samples N (0: none) --threads N (%d) --seed N\n"
        "hub:       --bind EP (%s) --run-id ID --train-prompts TSV --scorer NAME (%s)\n"
        "           --prompts-per-item N (%d) --k N samples per prompt (%d)\n"
        "           --temperature X (%g) --top-k N (%d) --max-new N (%d)\n"
        "           --max-learner-queue N (%d) --max-in-flight N (%d) --heartbeat-ms N (%d)\n"
        "           --score-deadline-ms N (%d) --score-retries N (%d) --work-deadline-ms N (%d)\n"
        "           --score-batch N (%d) --trajectory-log PATH --take-timeout S (%g)\n"
        "objective: --batch N trajectories per step (%d) --clip-eps X (%g) --kl-coef X (%g)\n"
        "           --normalize (per-prompt reward normalisation) --max-lag N (%d)\n"
        "optimizer: --lr X (%g) --warmup N (%d) --beta2 X (%g) --wd X (%g) --clip X (%g)\n"
        "eval:      --eval-prompts TSV --eval-scorer NAME (%s) --eval-n N (%d) --eval-every N "
        "(%d)\n"
        "output:    --publish-every N (%d) --ckpt-every N (%d)\n"
        "sampling:  --alphabet STR: responses hold only these bytes (WorkItem.allowed_tokens)\n\n"
        "GFlowNet on text (--objective tb without --env; docs/gflownet.md): trajectory balance\n"
        "           on responses of exactly --max-new L bytes of --alphabet STR (e.g. ab), one\n"
        "           log Z per --train-prompts line (TSV prompt<TAB>target, the target the\n"
        "           scorer's, e.g. seqmodes' mode list); log R = --reward-beta X (%g) * reward;\n"
        "           --logz-lr X; without --init a fresh gpt of --layers N (%d) --dim N (%d)\n"
        "           --heads N (%d) and context longest prompt + L; every --eval-every steps\n"
        "           the exact L1 by enumerating all |A|^L responses (a built-in --scorer).\n"
        "           Defaults there: --scorer seqmodes --batch 16 --k 16 --prompts-per-item 1\n"
        "           --lr 1e-3 --beta2 0.999 --max-in-flight 2*batch --max-learner-queue\n"
        "           2*batch, --steps unlimited (stop with --max-samples)\n\n"
        "GFlowNet mode (no --init/--train-prompts; docs/gflownet.md):\n"
        "           --env hypergrid --ndim D --height H --objective tb|db|subtb (tb)\n"
        "           --logz-lr X (%g) --lambda X SubTB (%g) --epsilon X exploration (0)\n"
        "           --hidden N (%d) --blocks N (%d); defaults there: --batch 16 --k 16\n"
        "           --lr 1e-3 --beta2 0.999 --clip 0 --eval-every 20 (exact L1), --steps\n"
        "           unlimited (stop with --max-samples)\n"
        "           --max-in-flight 2*batch --max-learner-queue 2*batch --scorer hypergrid\n"
        "Diffusion mode (--init DDPM.ckpt from rlx-ddpm, no --train-prompts; docs/diffusion.md):\n"
        "           --env diffusion --objective ddpo|dag|dagkl (dagkl) --scorer NAME (an image\n"
        "           scorer of rlx-reward: toy, digit_logprob, ink, ...) --sample-steps S (20)\n"
        "           --eta X (1) --guidance W (0) --clip-x0 --logp-sum --classes N (the model's;\n"
        "           0 = one unconditional prompt) --target STR (unconditional scorer target)\n"
        "           --shape A,B (8,8 for 64-dim, else [D]) --beta X --beta-warmup N --fl-abar\n"
        "           --fl-scorer NAME|none (forward-looking term; default --scorer) --classifier\n"
        "           CKPT --flow-hidden N (128) --flow-blocks N (2) --flow-lr X (--lr)\n"
        "           --ddpo-is 0|1 --adv-clip X --clip-eps X (PPO, 1e-4); defaults there:\n"
        "           --batch 32 --k 8 --prompts-per-item 1 --beta2 0.999\n",
        (long long)d.steps, d.threads, d.hub.bind ? d.hub.bind : "tcp://*:5555", d.hub.scorer,
        d.hub.prompts_per_item, d.hub.samples_per_prompt, d.hub.temperature, d.hub.top_k,
        d.hub.max_new_tokens, d.hub.max_learner_queue, d.hub.max_in_flight, d.hub.heartbeat_ms,
        d.hub.score_deadline_ms, d.hub.score_retries, d.hub.work_deadline_ms, d.hub.score_batch,
        d.take_timeout_s, d.batch, d.rl.clip_eps, d.rl.kl_coef, d.max_lag, d.opt.lr,
        d.opt.warmup_steps, d.opt.beta2, d.opt.weight_decay, d.opt.grad_clip, d.eval_scorer,
        d.eval_n, d.eval_every, d.publish_every, d.ckpt_every, d.reward_beta, d.new_gpt.n_layer,
        d.new_gpt.n_embd, d.new_gpt.n_head, d.logz_lr, d.gfn_lambda, d.gfn_hidden,
        d.gfn_blocks);
}

static double num(const char *opt, const char *s, int rank) {
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: --%s expects a number, got '%s'\n", opt, s);
        MPI_Finalize();
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    int provided = 0, rank = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    learner_config_t c = learner_defaults();
    if (!c.hub.bind)
        c.hub.bind = "tcp://*:5555";
    if (!c.hub.run_id)
        c.hub.run_id = "rlx";
    c.hub.diff_classes = -1; // diffusion: the model's classes unless --classes says otherwise
    static const struct option opts[] = {{"init", 1, 0, 'i'},
                                         {"out", 1, 0, 'o'},
                                         {"resume", 0, 0, 'R'},
                                         {"metrics", 1, 0, 'm'},
                                         {"replay", 1, 0, 'P'},
                                         {"steps", 1, 0, 'S'},
                                         {"max-samples", 1, 0, 'X'},
                                         {"threads", 1, 0, 't'},
                                         {"seed", 1, 0, 's'},
                                         {"bind", 1, 0, 'b'},
                                         {"run-id", 1, 0, 'r'},
                                         {"train-prompts", 1, 0, 'p'},
                                         {"scorer", 1, 0, 'c'},
                                         {"prompts-per-item", 1, 0, 'n'},
                                         {"k", 1, 0, 'k'},
                                         {"temperature", 1, 0, 'T'},
                                         {"top-k", 1, 0, 'K'},
                                         {"max-new", 1, 0, 'N'},
                                         {"max-learner-queue", 1, 0, 'Q'},
                                         {"max-in-flight", 1, 0, 'F'},
                                         {"heartbeat-ms", 1, 0, 'H'},
                                         {"score-deadline-ms", 1, 0, 'D'},
                                         {"score-retries", 1, 0, 'y'},
                                         {"work-deadline-ms", 1, 0, 'W'},
                                         {"score-batch", 1, 0, 'z'},
                                         {"trajectory-log", 1, 0, 'L'},
                                         {"take-timeout", 1, 0, 'O'},
                                         {"batch", 1, 0, 'B'},
                                         {"clip-eps", 1, 0, 'e'},
                                         {"kl-coef", 1, 0, 'l'},
                                         {"normalize", 0, 0, 'Z'},
                                         {"max-lag", 1, 0, 'g'},
                                         {"lr", 1, 0, 'a'},
                                         {"warmup", 1, 0, 'w'},
                                         {"beta2", 1, 0, '2'},
                                         {"wd", 1, 0, 'd'},
                                         {"clip", 1, 0, 'C'},
                                         {"eval-prompts", 1, 0, 'E'},
                                         {"eval-scorer", 1, 0, 'x'},
                                         {"eval-n", 1, 0, 'v'},
                                         {"eval-every", 1, 0, 'V'},
                                         {"publish-every", 1, 0, 'u'},
                                         {"ckpt-every", 1, 0, 'j'},
                                         {"env", 1, 0, 1000},
                                         {"ndim", 1, 0, 1001},
                                         {"height", 1, 0, 1002},
                                         {"objective", 1, 0, 1003},
                                         {"logz-lr", 1, 0, 1004},
                                         {"lambda", 1, 0, 1005},
                                         {"epsilon", 1, 0, 1006},
                                         {"hidden", 1, 0, 1007},
                                         {"blocks", 1, 0, 1008},
                                         {"sample-steps", 1, 0, 1010},
                                         {"eta", 1, 0, 1011},
                                         {"guidance", 1, 0, 1012},
                                         {"clip-x0", 0, 0, 1013},
                                         {"logp-sum", 0, 0, 1014},
                                         {"classes", 1, 0, 1015},
                                         {"target", 1, 0, 1016},
                                         {"shape", 1, 0, 1017},
                                         {"beta", 1, 0, 1018},
                                         {"beta-warmup", 1, 0, 1019},
                                         {"fl-scorer", 1, 0, 1020},
                                         {"classifier", 1, 0, 1021},
                                         {"flow-hidden", 1, 0, 1022},
                                         {"flow-blocks", 1, 0, 1023},
                                         {"flow-lr", 1, 0, 1024},
                                         {"ddpo-is", 1, 0, 1025},
                                         {"adv-clip", 1, 0, 1026},
                                         {"fl-abar", 0, 0, 1027},
                                         {"alphabet", 1, 0, 1028},
                                         {"reward-beta", 1, 0, 1029},
                                         {"layers", 1, 0, 1030},
                                         {"dim", 1, 0, 1031},
                                         {"heads", 1, 0, 1032},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch, idx = 0;
    unsigned char given[256] = {0}; // options seen (short codes), for mode-dependent defaults
    const char *objective = NULL;   // resolved once the mode (--env) is known
    const char *env = NULL;         // --env
    int diff_clip_given = 0;
    while ((ch = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        const char *nm = opts[idx].name;
        if (ch > 0 && ch < 256)
            given[ch] = 1;
        switch (ch) {
        case 1000:
            env = optarg;
            c.kind = !strcmp(optarg, "diffusion") ? KIND_DIFFUSION : KIND_GFLOW;
            break;
        case 1001:
            c.hub.gfn_ndim = (int)num(nm, optarg, rank);
            break;
        case 1002:
            c.hub.gfn_height = (int)num(nm, optarg, rank);
            break;
        case 1003:
            objective = optarg;
            if (!strcmp(optarg, "ddpo") || !strcmp(optarg, "dag") || !strcmp(optarg, "dagkl") ||
                !strcmp(optarg, "rl"))
                break;
            if (!strcmp(optarg, "tb") || !strcmp(optarg, "db") || !strcmp(optarg, "subtb")) {
                c.gfn_objective = !strcmp(optarg, "tb")   ? GFN_LOSS_TB
                                    : !strcmp(optarg, "db") ? GFN_LOSS_DB
                                                            : GFN_LOSS_SUBTB;
                break;
            }
            if (rank == 0)
                fprintf(stderr,
                        "rlx-learner: --objective tb|db|subtb (gflownet), rl|tb (text) "
                        "or ddpo|dag|dagkl (diffusion), got '%s'\n",
                        optarg);
            MPI_Finalize();
            return 2;
        case 1004:
            c.logz_lr = (float)num(nm, optarg, rank);
            break;
        case 1005:
            c.gfn_lambda = (float)num(nm, optarg, rank);
            break;
        case 1006:
            c.hub.gfn_epsilon = (float)num(nm, optarg, rank);
            break;
        case 1007:
            c.gfn_hidden = (int)num(nm, optarg, rank);
            break;
        case 1008:
            c.gfn_blocks = (int)num(nm, optarg, rank);
            break;
        case 1010: c.hub.diff_steps = (int)num(nm, optarg, rank); break;
        case 1011: c.hub.diff_eta = (float)num(nm, optarg, rank); break;
        case 1012: c.hub.diff_guidance = (float)num(nm, optarg, rank); break;
        case 1013: c.hub.diff_clip_x0 = 1; break;
        case 1014: c.hub.diff_logp_sum = 1; break;
        case 1015: c.hub.diff_classes = (int)num(nm, optarg, rank); break;
        case 1016: c.hub.diff_target = optarg; break;
        case 1017: {
            char *e = optarg;
            c.hub.diff_shape_n = 0;
            while (*e && c.hub.diff_shape_n < 4) {
                c.hub.diff_shape[c.hub.diff_shape_n++] = (int)strtol(e, &e, 10);
                if (*e == ',' || *e == 'x')
                    e++;
                else if (*e)
                    break;
            }
            if (*e || c.hub.diff_shape_n < 1) {
                if (rank == 0)
                    fprintf(stderr, "rlx-learner: --shape wants e.g. 8,8 or 2, got '%s'\n",
                            optarg);
                MPI_Finalize();
                return 2;
            }
            break;
        }
        case 1018: c.drl.beta = (float)num(nm, optarg, rank); break;
        case 1019: c.drl.beta_warmup = (int)num(nm, optarg, rank); break;
        case 1020: c.fl_scorer = optarg; break;
        case 1021: c.classifier = optarg; break;
        case 1022: c.flow_hidden = (int)num(nm, optarg, rank); break;
        case 1023: c.flow_blocks = (int)num(nm, optarg, rank); break;
        case 1024: c.flow_lr = (float)num(nm, optarg, rank); break;
        case 1025: c.drl.ddpo_is = (int)num(nm, optarg, rank); break;
        case 1026: c.drl.adv_clip = (float)num(nm, optarg, rank); break;
        case 1027: c.drl.fl_abar = 1; break;
        case 1028: {
            size_t n = strlen(optarg);
            if (n < 1 || n > HUB_MAX_ALLOWED) {
                if (rank == 0)
                    fprintf(stderr, "rlx-learner: --alphabet wants 1..%d bytes\n", HUB_MAX_ALLOWED);
                MPI_Finalize();
                return 2;
            }
            for (size_t i = 0; i < n; i++)
                c.hub.allowed_tokens[i] = (unsigned char)optarg[i];
            c.hub.n_allowed_tokens = (int)n;
            break;
        }
        case 1029: c.reward_beta = (float)num(nm, optarg, rank); break;
        case 1030: c.new_gpt.n_layer = (int)num(nm, optarg, rank); break;
        case 1031: c.new_gpt.n_embd = (int)num(nm, optarg, rank); break;
        case 1032: c.new_gpt.n_head = (int)num(nm, optarg, rank); break;
        case 'i': c.init = optarg; break;
        case 'o': c.out = optarg; break;
        case 'R': c.resume = 1; break;
        case 'm': c.metrics = optarg; break;
        case 'P': c.replay = optarg; break;
        case 'S': c.steps = (long long)num(nm, optarg, rank); break;
        case 'X': c.max_samples = (long long)num(nm, optarg, rank); break;
        case 't': c.threads = (int)num(nm, optarg, rank); break;
        case 's': c.seed = c.hub.seed = (unsigned long long)num(nm, optarg, rank); break;
        case 'b': c.hub.bind = optarg; break;
        case 'r': c.hub.run_id = optarg; break;
        case 'p': c.hub.train_prompts = optarg; break;
        case 'c': c.hub.scorer = optarg; break;
        case 'n': c.hub.prompts_per_item = (int)num(nm, optarg, rank); break;
        case 'k': c.hub.samples_per_prompt = (int)num(nm, optarg, rank); break;
        case 'T': c.hub.temperature = (float)num(nm, optarg, rank); break;
        case 'K': c.hub.top_k = (int)num(nm, optarg, rank); break;
        case 'N': c.hub.max_new_tokens = (int)num(nm, optarg, rank); break;
        case 'Q': c.hub.max_learner_queue = (int)num(nm, optarg, rank); break;
        case 'F': c.hub.max_in_flight = (int)num(nm, optarg, rank); break;
        case 'H': c.hub.heartbeat_ms = (int)num(nm, optarg, rank); break;
        case 'D': c.hub.score_deadline_ms = (int)num(nm, optarg, rank); break;
        case 'y': c.hub.score_retries = (int)num(nm, optarg, rank); break;
        case 'W': c.hub.work_deadline_ms = (int)num(nm, optarg, rank); break;
        case 'z': c.hub.score_batch = (int)num(nm, optarg, rank); break;
        case 'L': c.hub.trajectory_log = optarg; break;
        case 'O': c.take_timeout_s = num(nm, optarg, rank); break;
        case 'B': c.batch = (int)num(nm, optarg, rank); break;
        case 'e':
            c.rl.clip_eps = c.drl.clip_eps = (float)num(nm, optarg, rank);
            diff_clip_given = 1;
            break;
        case 'l': c.rl.kl_coef = (float)num(nm, optarg, rank); break;
        case 'Z': c.rl.normalize = 1; break;
        case 'g': c.max_lag = (int)num(nm, optarg, rank); break;
        case 'a': c.opt.lr = (float)num(nm, optarg, rank); break;
        case 'w': c.opt.warmup_steps = (int)num(nm, optarg, rank); break;
        case '2': c.opt.beta2 = (float)num(nm, optarg, rank); break;
        case 'd': c.opt.weight_decay = (float)num(nm, optarg, rank); break;
        case 'C': c.opt.grad_clip = (float)num(nm, optarg, rank); break;
        case 'E': c.eval_prompts = optarg; break;
        case 'x': c.eval_scorer = optarg; break;
        case 'v': c.eval_n = (int)num(nm, optarg, rank); break;
        case 'V': c.eval_every = (int)num(nm, optarg, rank); break;
        case 'u': c.publish_every = (int)num(nm, optarg, rank); break;
        case 'j': c.ckpt_every = (int)num(nm, optarg, rank); break;
        case 'h':
            if (rank == 0)
                usage(stdout);
            MPI_Finalize();
            return 0;
        default:
            if (rank == 0)
                usage(stderr);
            MPI_Finalize();
            return 2;
        }
    }
    (void)diff_clip_given;
    int is_diff = !strcmp(objective ? objective : "", "ddpo") ||
                  !strcmp(objective ? objective : "", "dag") ||
                  !strcmp(objective ? objective : "", "dagkl");
    if (c.kind == KIND_DIFFUSION && objective && !is_diff) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: --env diffusion: --objective ddpo|dag|dagkl\n");
        MPI_Finalize();
        return 2;
    } else if (c.kind != KIND_DIFFUSION && is_diff) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: --objective %s needs --env diffusion\n", objective);
        MPI_Finalize();
        return 2;
    }
    if (is_diff)
        c.diff_objective = !strcmp(objective, "ddpo")  ? DIFF_OBJ_DDPO
                           : !strcmp(objective, "dag") ? DIFF_OBJ_DAG
                                                       : DIFF_OBJ_DAGKL;
    if (c.kind == KIND_GFLOW && strcmp(env, "hypergrid") != 0) {
        if (rank == 0)
            fprintf(stderr, "rlx-learner: --env hypergrid or diffusion (got env %s)\n", env);
        MPI_Finalize();
        return 2;
    }
    // The objective, decided once: its table's mode defaults (objective.h).
    c.objective = objective;
    const objective_ops_t *ops = objective_pick(c.kind, objective);
    if (!ops) { // only text can get here: gflow took tb|db|subtb, diffusion was checked
        if (rank == 0)
            fprintf(stderr,
                    "rlx-learner: text training: --objective rl|tb (db and subtb "
                    "need --env hypergrid), got '%s'\n",
                    objective);
        MPI_Finalize();
        return 2;
    }
    if (ops->defaults)
        ops->defaults(&c, given);
    c.hub.kind = c.kind;
    // The hub's old kind sentinels, kept set until the hub no longer reads them.
    if (c.kind != KIND_DIFFUSION)
        c.hub.diff_steps = 0;
    if (c.kind != KIND_GFLOW)
        c.hub.gfn_ndim = 0; // --ndim/--height mean nothing without --env
    const char *bad = NULL;
    if (!c.out)
        bad = "--out DIR is required";
    else if (c.kind == KIND_GFLOW && (c.hub.gfn_ndim < 1 || c.hub.gfn_height < 2 || c.replay))
        bad = "--env needs --ndim D >= 1 and --height H >= 2 (and no --replay)";
    else if (c.kind == KIND_DIFFUSION && (!c.init || c.replay || !c.hub.scorer))
        bad = "--env diffusion needs --init DDPM.ckpt and --scorer NAME (and no --replay)";
    else if (c.kind == KIND_TEXT && !c.replay && !c.hub.train_prompts)
        bad = "--train-prompts TSV is required (or --replay TRAJLOG)";
    else if (ops == &objective_text_tb && (!c.hub.train_prompts || c.hub.n_allowed_tokens < 2))
        bad = "--objective tb on text needs --train-prompts TSV (even with --replay: its lines "
              "are the log Z table and the evaluation) and --alphabet of at least 2 bytes";
    else if (ops == &objective_text_tb && (c.eval_prompts || c.rl.kl_coef > 0))
        bad = "--objective tb on text evaluates exactly on the train prompts and has no KL "
              "term: drop --eval-prompts and --kl-coef";
    else if (c.batch < 1 || c.steps < 1 || c.threads < 1 || c.hub.samples_per_prompt < 1)
        bad = "--batch, --steps, --threads and --k must be >= 1";
    if (bad || optind != argc) {
        if (rank == 0) {
            fprintf(stderr, "rlx-learner: %s\n", bad ? bad : "unexpected arguments");
            usage(stderr);
        }
        MPI_Finalize();
        return 2;
    }
    c.opt.decay_steps = 0; // constant learning rate after warm-up: RL runs have no fixed end
    int rc = learner_run(&c);
    // mpirun is aborting the job (it was sent SIGINT or SIGTERM) if it sent a rank the stop
    // signal: MPI_Finalize would then wait for its PMIx server until the SIGKILL that follows
    // a second later. Once every rank is here (rank 0 last: the checkpoint, the summary and
    // the hub's Bye are out; mpirun SIGKILLs the others as soon as one rank exits), leave.
    int aborting = learner_stop_by_parent();
    MPI_Allreduce(MPI_IN_PLACE, &aborting, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (aborting) {
        fflush(NULL);
        _exit(rc);
    }
    MPI_Finalize();
    return rc;
}
