#!/usr/bin/python3
# gen_ref_adamw.py: writes tests/ref/adamw.bin, the PyTorch reference tests/test_adamw.c checks
# common/nn/adamw.c against: 10 steps of torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW
# (PyTorch 1.13, float32, foreach=False) over 1000 parameters split into four tensors, each
# step with a fresh random gradient whose norm is above the clip threshold on some steps and
# below it on others, and the learning rate set per step by the warm-up + cosine schedule.
#
# Hyper-parameters are float32 values (the C config is float) and the schedule is computed in
# double and rounded to float32, as adamw_lr does, so both sides start from the same numbers.
# Run with Debian's python3-torch (hence /usr/bin/python3), no arguments; deterministic.
#
# Tensors written (refio format, tests/refio.h):
#   config     (9)      lr, beta1, beta2, eps, weight_decay, grad_clip, warmup, decay, min_frac
#   w0         (1000)   initial parameters (the four tensors concatenated)
#   grad       (10,1000) raw gradient of each step, before clipping
#   lr         (10)     learning rate used at each step
#   grad_norm  (10)     total norm clip_grad_norm_ returned at each step
#   w          (10,1000) parameters after each step
#   m, v       (1000)   AdamW moments after the last step
import math
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))

SIZES = [400, 300, 200, 100]
STEPS = 10
# target gradient norms per step: above and below grad_clip = 1
GRAD_SCALE = [0.5, 3.0, 0.02, 2.0, 0.9, 5.0, 0.1, 1.5, 0.01, 4.0]


def f32(x):
    return float(np.float32(x))


LR = f32(1e-2)
BETA1 = f32(0.9)
BETA2 = f32(0.95)
EPS = f32(1e-8)
WD = f32(0.1)
CLIP = f32(1.0)
WARMUP = 3
DECAY = 10
MIN_FRAC = f32(0.1)


def schedule(s):
    """adamw_lr in double, rounded to float32 like the C function's return value."""
    if WARMUP > 0 and s < WARMUP:
        return f32(LR * (s + 1) / WARMUP)
    if DECAY > 0:
        span = max(1, DECAY - WARMUP)
        progress = min(max((s - WARMUP) / span, 0.0), 1.0)
        return f32(LR * (MIN_FRAC + (1.0 - MIN_FRAC) * 0.5 * (1.0 + math.cos(math.pi * progress))))
    return LR


def write_ref(path, items):
    out = bytearray(b"RLXREF1\0")
    out += struct.pack("<I", len(items))
    for name, arr in items:
        arr = np.ascontiguousarray(arr, dtype="<f4")
        if arr.ndim == 0:
            arr = arr.reshape(1)
        nb = name.encode()
        out += struct.pack("<I", len(nb)) + nb
        out += struct.pack("<II", 0, arr.ndim)
        out += struct.pack("<%dq" % arr.ndim, *arr.shape)
        out += arr.tobytes()
    with open(path, "wb") as f:
        f.write(out)


def main():
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    n = sum(SIZES)
    params = [torch.nn.Parameter(torch.randn(k, dtype=torch.float32) * 0.5) for k in SIZES]
    w0 = torch.cat([p.detach().clone() for p in params])
    opt = torch.optim.AdamW(params, lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WD,
                            foreach=False)
    grads, lrs, norms, ws = [], [], [], []
    for s in range(STEPS):
        g = torch.randn(n, dtype=torch.float32) * (GRAD_SCALE[s] / math.sqrt(n))
        grads.append(g.clone())
        off = 0
        for p, k in zip(params, SIZES):
            p.grad = g[off:off + k].clone()
            off += k
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP)
        lr = schedule(s)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        lrs.append(lr)
        norms.append(norm.item())
        ws.append(torch.cat([p.detach().clone() for p in params]))
    assert any(x > CLIP for x in norms) and any(x < CLIP for x in norms)
    m = torch.cat([opt.state[p]["exp_avg"] for p in params])
    v = torch.cat([opt.state[p]["exp_avg_sq"] for p in params])
    config = [LR, BETA1, BETA2, EPS, WD, CLIP, WARMUP, DECAY, MIN_FRAC]
    items = [
        ("config", np.array(config)),
        ("w0", w0.numpy()),
        ("grad", torch.stack(grads).numpy()),
        ("lr", np.array(lrs)),
        ("grad_norm", np.array(norms)),
        ("w", torch.stack(ws).numpy()),
        ("m", m.numpy()),
        ("v", v.numpy()),
    ]
    os.makedirs(os.path.join(HERE, "ref"), exist_ok=True)
    path = os.path.join(HERE, "ref", "adamw.bin")
    write_ref(path, items)
    print("wrote %s: %d steps, grad norms %s" % (path, STEPS, " ".join("%.3g" % x for x in norms)))


if __name__ == "__main__":
    main()
