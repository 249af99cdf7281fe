#!/usr/bin/env python3
"""exec_scorer_example.py: an external scorer for rlx-reward --exec (protocol: docs/scorers.md).

Reads one JSON request per line on stdin, writes one JSON reply per line on stdout, in order.
Reward: 1.0 if the response equals the target exactly, else the share of the target's
characters matched position by position, times 0.5 (partial credit). Components say which.

    rlx-reward --hub tcp://127.0.0.1:5555 --scorer exact \
        --exec "/usr/bin/python3 examples/exec_scorer_example.py"
"""
import argparse
import json
import sys
import time


def score(req):
    response, target = req.get("response", ""), req.get("target", "")
    exact = 1.0 if response == target else 0.0
    n = max(len(response), len(target))
    digits = sum(a == b for a, b in zip(response, target)) / n if n else 1.0
    reward = exact if exact else 0.5 * digits
    return {"id": req["id"], "reward": reward,
            "components": {"exact": exact, "digits": digits}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay-ms", type=float, default=0,
                    help="wait this long before each reply (to play a slow judge)")
    args = ap.parse_args()
    for line in sys.stdin:
        if args.delay_ms > 0:
            time.sleep(args.delay_ms / 1000)
        req = None
        try:
            req = json.loads(line)
            reply = score(req)
        except Exception as e:  # a bad request still gets a reply, so the order holds
            reply = {"id": req.get("id", "") if isinstance(req, dict) else "",
                     "reward": 0.0, "error": "scorer failed: %s" % e}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
