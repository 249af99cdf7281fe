#!/usr/bin/python3
"""sweep.py: sample-efficiency experiments, a grid of {setting} x {seed} runs of rlx-launch.

Each run is `rlx-launch CONFIG [overrides] <grid values> learner.seed=S run.out=OUT/<name>`;
runs go one at a time or several at once (--parallel, each on its own hub port). When all are
done (or already done: a run directory with a summary line is reused), it reads every run's
metrics.jsonl, puts each metric on a common grid of trajectories consumed (the value of the last
metrics line at or before each grid point), and writes

  OUT/sweep.csv    setting, x, metric, mean, std, min, max, seeds   (one row per point)
  OUT/final.csv    setting, seed, and each metric's last value, plus the first x at which the
                   seed mean reached --target (if given)
  OUT/<metric>.png mean over seeds against trajectories, with a min..max band (gnuplot)

    cluster/sweep.py --config cluster/hypergrid.ini --grid learner.objective=tb,db,subtb \\
        --seeds 1,2,3 --x trajectories --metrics l1,reward_mean --out runs/sweep-hg

--grid KEY=V1,V2,... may be given several times (the product is run); --set KEY=VALUE applies
to every run (e.g. a shared pretrain.out, so one pretrained model serves all runs: the first
run makes it, alone, before the others start). Needs gnuplot (Debian gnuplot-nox) for the PNGs.
"""
import argparse
import csv
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_grid(items):
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            sys.exit("sweep: --grid wants KEY=V1,V2,...; got %r" % item)
        grid.append((key, values.split(",")))
    return grid


def read_metrics(path, xkey):
    """Step lines (x, {metric: value}) in file order, and the summary line (or None)."""
    rows, summary = [], None
    if not os.path.exists(path):
        return rows, summary
    with open(path) as f:
        for line in f:
            try:
                o = json.loads(line)
            except ValueError:
                continue
            if not isinstance(o, dict):
                continue
            if o.get("summary"):
                summary = o
            elif xkey in o:
                rows.append((float(o[xkey]), o))
    return rows, summary


def value_at(rows, metric, x, smooth=1):
    """The mean of the last `smooth` values of metric at or before x (None if none yet)."""
    vals = []
    for rx, o in rows:
        if rx > x:
            break
        if isinstance(o.get(metric), (int, float)):
            vals.append(float(o[metric]))
    vals = vals[-smooth:]
    return sum(vals) / len(vals) if vals else None


def run_one(args, overrides, out, port, log):
    cmd = [args.launch, args.config] + overrides + [
        "run.out=" + out,
        "run.hub=tcp://127.0.0.1:%d" % port,
        "run.bind=tcp://*:%d" % port,
    ]
    with open(log, "w") as f:
        f.write("# " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)


def plot(out, metric, settings, xlabel, logscale):
    gp = shutil.which("gnuplot")
    if not gp:
        print("sweep: gnuplot not found (apt-get install gnuplot-nox): no %s.png" % metric)
        return
    data = os.path.join(out, "sweep.csv")
    png = os.path.join(out, metric + ".png")
    plots = []
    for i, s in enumerate(settings):
        def col(n):  # column n of this setting's rows of this metric, NaN elsewhere
            return '(strcol(1) eq "%s" && strcol(3) eq "%s" ? $%d : NaN)' % (s, metric, n)
        band = "'%s' using 2:%s:%s with filledcurves lc %d fs transparent solid 0.2 notitle" % (
            data, col(6), col(7), i + 1)
        line = "'%s' using 2:%s with lines lw 2 lc %d title '%s'" % (data, col(4), i + 1, s)
        plots += [band, line]
    script = "\n".join([
        "set terminal pngcairo size 900,560 noenhanced" if has_cairo(gp) else
        "set terminal png size 900,560 noenhanced",
        "set output '%s'" % png,
        "set datafile separator ','",
        "set key outside right",
        "set grid",
        "set xlabel '%s'" % xlabel,
        "set ylabel '%s (mean over seeds, band min..max)'" % metric,
        "set logscale y" if logscale else "",
        "plot " + ", ".join(plots),
    ])
    r = subprocess.run([gp], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        print("sweep: gnuplot failed for %s: %s" % (metric, r.stderr.strip()))
    else:
        print("sweep: wrote %s" % png)


def has_cairo(gp):
    r = subprocess.run([gp, "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in (r.stdout + r.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="rlx-launch INI file")
    ap.add_argument("--grid", action="append", default=[], help="KEY=V1,V2,... (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for every run")
    ap.add_argument("--seeds", default="1,2,3", help="learner seeds (comma list)")
    ap.add_argument("--seed-key", default="learner.seed", help="the key the seed sets")
    ap.add_argument("--out", required=True, help="sweep directory")
    ap.add_argument("--x", default="samples", help="metrics key for the x axis")
    ap.add_argument("--metrics", default="reward_mean", help="metrics to collect (comma list)")
    ap.add_argument("--points", type=int, default=50, help="points on the x grid")
    ap.add_argument("--smooth", type=int, default=1,
                    help="average each metric over its last N values (noisy per-step rewards)")
    ap.add_argument("--parallel", type=int, default=1, help="runs at once")
    ap.add_argument("--port", type=int, default=5600, help="first hub port")
    ap.add_argument("--timeout-s", type=float, default=3600, help="deadline per run")
    ap.add_argument("--target", type=float, default=None,
                    help="report the first x where the first metric's seed mean crosses this")
    ap.add_argument("--lower-is-better", action="store_true",
                    help="--target is crossed from above (e.g. l1)")
    ap.add_argument("--logscale", action="store_true", help="log y axis in the plots")
    ap.add_argument("--launch", default=None, help="rlx-launch binary (default build/rlx-launch)")
    args = ap.parse_args()
    args.launch = args.launch or os.path.join(os.path.dirname(HERE), "build", "rlx-launch")
    if not os.access(args.launch, os.X_OK):
        sys.exit("sweep: %s is not executable: build rlx first (or --launch)" % args.launch)
    grid = parse_grid(args.grid)
    seeds = [s for s in args.seeds.split(",") if s]
    metrics = [m for m in args.metrics.split(",") if m]
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)

    # The runs: every combination of the grid, every seed.
    runs = []
    combos = list(itertools.product(*[[(k, v) for v in vs] for k, vs in grid])) or [()]
    for combo in combos:
        # No commas in a setting's name: it is a field of the CSV files gnuplot reads.
        setting = " ".join("%s=%s" % (k.split(".")[-1], v) for k, v in combo) or "default"
        for seed in seeds:
            name = (setting.replace("=", "-").replace(" ", "_") or "run") + "-s" + seed
            overrides = list(args.set) + ["%s=%s" % kv for kv in combo] + [
                "%s=%s" % (args.seed_key, seed)]
            runs.append({"setting": setting, "seed": seed, "name": name,
                         "out": os.path.join(args.out, name), "overrides": overrides})

    # Run what is not done yet: the first alone (it may make shared files), then in parallel.
    todo = [r for r in runs if read_metrics(os.path.join(r["out"], "metrics.jsonl"), args.x)[1]
            is None]
    print("sweep: %d runs, %d to do (%d at once)" % (len(runs), len(todo), args.parallel))
    running, port, failed = [], args.port, 0
    t_start = time.time()
    first_alone = bool(todo) and todo[0] is runs[0]
    while todo or running:
        limit = 1 if first_alone else args.parallel
        while todo and len(running) < limit:
            r = todo.pop(0)
            shutil.rmtree(r["out"], ignore_errors=True)
            log = os.path.join(args.out, "logs", r["name"] + ".log")
            running.append((r, run_one(args, r["overrides"], r["out"], port, log), time.time()))
            print("sweep: started %s (port %d)" % (r["name"], port), flush=True)
            port += 1
        time.sleep(0.5)
        for item in list(running):
            r, p, t0 = item
            rc = p.poll()
            if rc is None and time.time() - t0 > args.timeout_s:
                p.terminate()
                try:
                    rc = p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    rc = p.wait()
                print("sweep: %s passed its deadline: stopped" % r["name"])
            if rc is not None:
                running.remove(item)
                failed += rc != 0
                first_alone = False
                print("sweep: %s exited %d after %.0f s" % (r["name"], rc, time.time() - t0),
                      flush=True)
    print("sweep: all runs done in %.0f s (%d failed)" % (time.time() - t_start, failed))

    # Collect.
    data = {}
    xmax = 0.0
    for r in runs:
        rows, summary = read_metrics(os.path.join(r["out"], "metrics.jsonl"), args.x)
        r["rows"], r["summary"] = rows, summary
        if rows:
            xmax = max(xmax, rows[-1][0])
    if xmax <= 0:
        sys.exit("sweep: no run has metrics with %r" % args.x)
    xs = [xmax * (i + 1) / args.points for i in range(args.points)]
    settings = list(dict.fromkeys(r["setting"] for r in runs))
    with open(os.path.join(args.out, "sweep.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "x", "metric", "mean", "std", "min", "max", "seeds"])
        for s in settings:
            for m in metrics:
                for x in xs:
                    vals = [value_at(r["rows"], m, x, args.smooth) for r in runs
                            if r["setting"] == s]
                    vals = [v for v in vals if v is not None and math.isfinite(v)]
                    if not vals:
                        continue
                    mean = sum(vals) / len(vals)
                    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
                    w.writerow([s, "%.0f" % x, m, "%.6g" % mean, "%.6g" % std,
                                "%.6g" % min(vals), "%.6g" % max(vals), len(vals)])
                    data.setdefault((s, m), []).append((x, mean))
    with open(os.path.join(args.out, "final.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "seed", args.x] + metrics + ["sampled", "trained", "dropped"])
        for r in runs:
            last = r["rows"][-1] if r["rows"] else (float("nan"), {})
            finals = [value_at(r["rows"], m, float("inf")) for m in metrics]
            s = r["summary"] or {}
            dropped = sum(v for k, v in s.items() if k.startswith("dropped_"))
            w.writerow([r["setting"], r["seed"], "%.0f" % last[0]] +
                       ["" if v is None else "%.6g" % v for v in finals] +
                       [s.get("sampled", ""), s.get("trained", ""), dropped if s else ""])
    print("sweep: wrote %s and %s" % (os.path.join(args.out, "sweep.csv"),
                                      os.path.join(args.out, "final.csv")))
    for s in settings:
        parts = []
        for m in metrics:
            pts = data.get((s, m), [])
            if pts:
                parts.append("%s %.4g" % (m, pts[-1][1]))
        line = "sweep: %s: final mean %s" % (s, ", ".join(parts))
        if args.target is not None and metrics:
            pts = data.get((s, metrics[0]), [])
            hit = next((x for x, v in pts if (v <= args.target if args.lower_is_better
                                              else v >= args.target)), None)
            line += "; %s reaches %g at %s" % (metrics[0], args.target,
                                               "%.0f %s" % (hit, args.x) if hit else "never")
        print(line)
    for m in metrics:
        plot(args.out, m, settings, args.x, args.logscale)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the launchers got the same Ctrl-C and stop their runs
        print("sweep: interrupted; finished runs are kept and reused by the next sweep")
        sys.exit(130)
