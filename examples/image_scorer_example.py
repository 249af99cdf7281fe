#!/usr/bin/env python3
"""image_scorer_example.py: an image/point scorer for rlx-reward --exec (protocol: docs/scorers.md).

Scores non-text items (kind "diffusion" or "gflow"): the request carries the item's payload
(a flattened x_0, row-major) and its shape. The request's scorer name selects the reward:

  symmetry  -mean |x[c][i][j] - x[c][i][W-1-j]| over an image of shape [H, W] or [C, H, W]
            (a flat [64] is read as 8x8), as the built-in "symmetry": 0 for a mirror image.
  ink       mean brightness mapped from [-1, 1] to [0, 1]: mean of (x + 1) / 2, as the
            built-in "ink" without a target.
  toy_x     -|x[0] - 1|: a generic function of the first coordinate (for the 2-D toy points).
  toy_point -|x - p|, the distance of a 2-D point x to p given by the target "X,Y" (default
            "2,0": the 8-Gaussian toy's mode 0, as the built-in "toy" with target 0).

A request without a payload (a text item), a payload that does not match its shape, or an
unknown scorer name gets an error reply; the reply order always holds.

    rlx-reward --hub tcp://127.0.0.1:5555 --scorer symmetry \
        --exec "/usr/bin/python3 examples/image_scorer_example.py"

Standard library only.
"""
import json
import math
import sys


def image_dims(shape, n):
    """(C, H, W) of a payload of n floats with this shape."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 1 and n == 64:
        return 1, 8, 8
    raise ValueError("symmetry needs an image [H, W] or [C, H, W], got shape %s" % shape)


def symmetry(x, shape, target=""):
    C, H, W = image_dims(shape, len(x))
    total = 0.0
    for c in range(C):
        for i in range(H):
            row = (c * H + i) * W
            for j in range(W):
                total += abs(x[row + j] - x[row + W - 1 - j])
    return -total / len(x)


def ink(x, shape, target=""):
    return sum(0.5 * (v + 1.0) for v in x) / len(x)


def toy_x(x, shape, target=""):
    return -abs(x[0] - 1.0)


def toy_point(x, shape, target=""):
    if len(x) != 2:
        raise ValueError("toy_point needs a 2-D point, got %d values" % len(x))
    px, py = (float(v) for v in (target or "2,0").split(","))
    return -math.hypot(x[0] - px, x[1] - py)


SCORERS = {"symmetry": symmetry, "ink": ink, "toy_x": toy_x, "toy_point": toy_point}


def score(req):
    name = req.get("scorer", "")
    fn = SCORERS.get(name)
    if fn is None:
        raise ValueError("unknown scorer %r (this one has %s)" % (name, ", ".join(SCORERS)))
    x, shape = req.get("payload"), req.get("shape", [])
    if not x:
        raise ValueError("no payload: %s scores images and points, not %s items"
                         % (name, req.get("kind", "text")))
    n = 1
    for d in shape:
        n *= d
    if n != len(x) or any(v is None for v in x):
        raise ValueError("payload of %d values does not match its shape %s" % (len(x), shape))
    reward = fn(x, shape, req.get("target", ""))
    return {"id": req["id"], "reward": reward, "components": {name: reward}}


def main():
    for line in sys.stdin:
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
