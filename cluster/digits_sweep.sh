#!/bin/sh
# digits_sweep.sh: the digit comparison of docs/diffusion.md "Results": DDPO vs DAG vs DAG-KL
# fine-tuning a class-conditional DDPM on the 8x8 UCI digits for left-right symmetry, at equal
# trajectory budgets, 3 seeds each, through the whole system (rlx-launch cluster/digits.ini,
# driven by cluster/sweep.py). Run from the repository root after building (build/).
#
#   cluster/digits_sweep.sh                 # pretrain if missing, reference run, sweep
#   OUT=runs/other STEPS=300 cluster/digits_sweep.sh
#
# Makes (once; delete them to redo):
#   runs/digits/classifier.ckpt   rlx-train-classifier (~2 s, ~99% test accuracy)
#   runs/digits/ddpm_small.ckpt   rlx-ddpm, a small denoiser (128 wide, 2 blocks, ~8 s on one
#                                 core, ~90% of its conditional samples recognised)
# then $OUT/pretrained (the pretrained model's metrics: lr 0), and the sweep in $OUT
# (sweep.csv, final.csv, reward_mean.png, diversity.png, class_coverage.png,
# class_accuracy.png, frontier.txt, frontier.png). Finished runs are reused by a second
# invocation. Everything runs one process per role, single-threaded, one run at a time
# (~4 min in all on 2 cores).
set -eu

BIN=${BIN:-build}
OUT=${OUT:-runs/digits-sweep}
STEPS=${STEPS:-600}   # learner steps of 40 chains: 24,000 trajectories per run
SEEDS=${SEEDS:-1,2,3}
BETA=${BETA:-10}      # DAG / DAG-KL: log R = beta r (mean log-densities: target exp(64 beta r))
DDPM=runs/digits/ddpm_small.ckpt
CLF=runs/digits/classifier.ckpt

mkdir -p runs/digits "$OUT"
if [ ! -f "$CLF" ]; then
    "$BIN/rlx-train-classifier" --out "$CLF" --threads 1
fi
if [ ! -f "$DDPM" ]; then
    "$BIN/rlx-ddpm" --data digits --cond --schedule cosine --T 200 --hidden 128 --blocks 2 \
        --steps 3000 --threads 1 --clip-x0 --sample-steps 20 --samples 20 \
        --classifier "$CLF" --out "$DDPM"
fi

# Shared by every run: the small DDPM, the symmetry reward (remote reward workers and the
# learner's local forward-looking scorer), lr 1e-4 for the denoiser, 1e-3 for the flow net.
COMMON="learner.init=$DDPM learner.classifier=$CLF reward.classifier=$CLF
    learner.scorer=symmetry reward.scorer=symmetry learner.lr=1e-4 learner.flow-lr=1e-3
    learner.beta=$BETA learner.steps=$STEPS learner.ckpt-every=0"

# The pretrained model's values: the same sampling with lr 0 (nothing changes), 50 steps.
if [ ! -s "$OUT/pretrained/metrics.jsonl" ] || ! grep -q '"summary"' "$OUT/pretrained/metrics.jsonl"; then
    # shellcheck disable=SC2086
    "$BIN/rlx-launch" cluster/digits.ini $COMMON learner.objective=ddpo learner.lr=0 \
        learner.flow-lr=0 learner.steps=50 run.out="$OUT/pretrained" \
        run.hub=tcp://127.0.0.1:5599 'run.bind=tcp://*:5599' > "$OUT/pretrained.log" 2>&1
fi
python3 - "$OUT/pretrained/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"reward_mean"' in l]
keys = ["reward_mean", "diversity", "class_coverage", "class_accuracy"]
print("pretrained (%d batches of 40): " % len(rows) + ", ".join(
    "%s %.4f" % (k, sum(r[k] for r in rows) / len(rows)) for k in keys))
EOF

SET=""
for kv in $COMMON; do SET="$SET --set $kv"; done
# shellcheck disable=SC2086
python3 cluster/sweep.py --config cluster/digits.ini $SET \
    --grid learner.objective=ddpo,dag,dagkl --seeds "$SEEDS" --x trajectories \
    --metrics reward_mean,diversity,class_coverage,class_accuracy --smooth 10 --out "$OUT" \
    ${TARGET:+--target "$TARGET"}
# Trajectories each method needs to reach DDPO's final reward: rerun the collection (the runs
# are reused) with DDPO's final seed-mean reward as the target.
if [ -z "${TARGET:-}" ]; then
    T=$(python3 - "$OUT/sweep.csv" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))
        if r["setting"] == "objective=ddpo" and r["metric"] == "reward_mean"]
# the last grid point (each seed averaged over its last 10 steps), a hair lower so that DDPO
# itself counts as reaching it (the csv rounds to 6 digits)
print("%.6f" % (float(rows[-1]["mean"]) - 1e-6))
EOF
)
    # shellcheck disable=SC2086
    python3 cluster/sweep.py --config cluster/digits.ini $SET \
        --grid learner.objective=ddpo,dag,dagkl --seeds "$SEEDS" --x trajectories \
        --metrics reward_mean,diversity,class_coverage,class_accuracy --smooth 10 \
        --out "$OUT" --target "$T" | grep -E 'final mean|reaches'
fi

# Matched reward: diversity, coverage and accuracy of each method where its seed-mean reward
# first reaches a level (frontier.txt), and diversity against reward (frontier.png).
python3 - "$OUT" <<'EOF2'
import csv, os, shutil, subprocess, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "sweep.csv"))))
settings = list(dict.fromkeys(r["setting"] for r in rows))
lines, dat = [], []
for s in settings:
    by = {}
    for r in rows:
        if r["setting"] == s:
            by.setdefault(r["metric"], {})[r["x"]] = r
    rw = sorted(by["reward_mean"].values(), key=lambda r: float(r["x"]))
    fin = ", ".join("%s %.3f +- %.3f" % (m, float(v[rw[-1]["x"]]["mean"]), float(v[rw[-1]["x"]]["std"]))
                    for m, v in by.items() if rw[-1]["x"] in v)
    lines.append("%s at %s trajectories: %s" % (s, rw[-1]["x"], fin))
    for level in (-0.30, -0.25, -0.20, -0.16, -0.14):
        hit = next((r for r in rw if float(r["mean"]) >= level), None)
        if hit is None:
            lines.append("  reward %.2f: not reached" % level)
            continue
        x = hit["x"]
        lines.append("  reward %.2f at %6s trajectories: diversity %.3f, class_coverage %.3f, "
                     "class_accuracy %.3f" % (level, x, float(by["diversity"][x]["mean"]),
                     float(by["class_coverage"][x]["mean"]), float(by["class_accuracy"][x]["mean"])))
    dat.append("# %s\n" % s + "".join("%s %s\n" % (r["mean"], by["diversity"][r["x"]]["mean"])
                                      for r in rw if r["x"] in by["diversity"]))
open(os.path.join(out, "frontier.txt"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
path = os.path.join(out, "frontier.dat")
open(path, "w").write("\n\n".join(dat))
if shutil.which("gnuplot"):
    plots = ", ".join("'%s' index %d using 1:2 with linespoints lw 2 pt 7 ps 0.5 title '%s'" % (path, i, s)
                      for i, s in enumerate(settings))
    subprocess.run(["gnuplot"], text=True, input="\n".join([
        "set terminal png size 900,560 noenhanced",
        "set output '%s'" % os.path.join(out, "frontier.png"),
        "set key outside right", "set grid",
        "set xlabel 'reward_mean (seed mean, smoothed over 10 steps)'",
        "set ylabel 'diversity (mean pairwise distance)'",
        "plot " + plots]))
    print("wrote %s" % os.path.join(out, "frontier.png"))
EOF2
