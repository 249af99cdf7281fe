#!/usr/bin/python3
# gen_ref.py: writes the PyTorch reference files the C model tests check against:
#   tests/ref/gpt.bin  (tests/test_gpt.c)   the GPT forward, MLE and RL-style gradients, and
#                                           10 AdamW steps of MLE training
#   tests/ref/mlp.bin  (tests/test_mlp.c)   the residual MLP forward, gradients (params, x, t),
#                                           a time_dim = 0 variant, and 10 AdamW steps of MSE
#
# Inputs and parameters are drawn as float32 from a fixed seed, and everything is computed in
# float64 from them, then stored as float32: the reference is the exact answer for the
# float32 inputs the C side sees, so only the C side's own rounding counts against the
# tolerances. Run with no arguments (Debian's python3-torch, hence /usr/bin/python3):
#     tests/gen_ref.py            regenerates both files, deterministically.
# The file format is tests/refio.h's.
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
DT = torch.float64

# ---- refio writer --------------------------------------------------------------------------


class RefWriter:
    """Collects named tensors and writes them in the RLXREF1 format."""

    def __init__(self):
        self.items = []  # (name, np.ndarray float32 or int32)
        self.names = set()

    def add(self, name, value, dtype=np.float32):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        arr = np.ascontiguousarray(np.asarray(value), dtype=dtype)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        assert name not in self.names, name
        assert arr.ndim <= 8
        if dtype == np.float32:
            assert np.all(np.isfinite(arr)), name
        self.names.add(name)
        self.items.append((name, arr))

    def add_int(self, name, value):
        self.add(name, value, np.int32)

    def write(self, path):
        out = bytearray(b"RLXREF1\0")
        out += struct.pack("<I", len(self.items))
        for name, arr in self.items:
            nb = name.encode()
            out += struct.pack("<I", len(nb)) + nb
            out += struct.pack("<II", 0 if arr.dtype == np.float32 else 1, arr.ndim)
            out += struct.pack("<%dq" % arr.ndim, *arr.shape)
            out += arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(out)
        print("wrote %s: %d tensors, %d bytes" % (path, len(self.items), len(out)))


def f32(rng, shape, std=1.0, mean=0.0):
    """float32 normal draws (the values the C side gets), returned as a float64 tensor."""
    a = (mean + std * rng.standard_normal(shape)).astype(np.float32)
    return torch.from_numpy(a.astype(np.float64))


# ---- AdamW as rlx runs it --------------------------------------------------------------------

ADAM = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, grad_clip=1.0,
            warmup=3, decay_steps=10, min_lr_frac=0.1, steps=10)


def adamw_lr(step):
    """adamw_lr(): linear warm-up to lr, then cosine decay to lr * min_lr_frac at decay_steps."""
    lr, w, d, mf = ADAM["lr"], ADAM["warmup"], ADAM["decay_steps"], ADAM["min_lr_frac"]
    if step < w:
        return lr * (step + 1) / w
    if step >= d:
        return lr * mf
    progress = (step - w) / (d - w)
    return lr * mf + 0.5 * (lr - lr * mf) * (1.0 + math.cos(math.pi * progress))


def train_adamw(params, loss_fn):
    """ADAM['steps'] AdamW steps on float64 copies of params; loss_fn(params, step) -> loss.
    Returns (losses before each step, final params)."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    opt = torch.optim.AdamW(ps, lr=ADAM["lr"], betas=ADAM["betas"], eps=ADAM["eps"],
                            weight_decay=ADAM["weight_decay"])
    losses = []
    for s in range(ADAM["steps"]):
        for g in opt.param_groups:
            g["lr"] = adamw_lr(s)
        opt.zero_grad()
        loss = loss_fn(ps, s)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ps, ADAM["grad_clip"])
        opt.step()
    return losses, [p.detach() for p in ps]


# ---- GPT -----------------------------------------------------------------------------------

GPT_NAMES = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
             "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]


def gpt_forward(P, tokens, targets, NH):
    """logits (B,T,V) and logp (B,T) (0 where target < 0). P: dict of float64 tensors."""
    B, T = tokens.shape
    L, C = P["ln1w"].shape
    hs = C // NH
    x = P["wte"][tokens] + P["wpe"][:T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], eps=1e-5)
        qkv = h @ P["qkvw"][l].T + P["qkvb"][l]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in (q, k, v))  # (B,NH,T,hs)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        att = torch.softmax(s.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + (y @ P["attprojw"][l].T + P["attprojb"][l])
        h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l], eps=1e-5)
        f = F.gelu(h @ P["fcw"][l].T + P["fcb"][l], approximate="tanh")
        x = x + (f @ P["fcprojw"][l].T + P["fcprojb"][l])
    x = F.layer_norm(x, (C,), P["lnfw"], P["lnfb"], eps=1e-5)
    logits = x @ P["wte"].T
    lsm = torch.log_softmax(logits, dim=-1)
    has = targets >= 0
    lp = lsm.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logp = torch.where(has, lp, torch.zeros_like(lp))
    return logits, logp


def gpt_mle_loss(logp, targets, mask, weight):
    """gpt_mle_loss(): positions without a target never count, in the numerator or the count."""
    m = mask * (targets >= 0).to(DT)
    return -(m * weight * logp).sum() / torch.clamp(m.sum(), min=1.0)


def gen_gpt(path):
    rng = np.random.RandomState(20240611)
    L, C, NH, maxT, V, B, T = 2, 32, 4, 16, 260, 3, 12
    w = RefWriter()
    w.add_int("config", [L, C, NH, maxT, V, B, T])

    # Random tokens over the whole vocabulary (specials included); some targets missing.
    tokens = rng.randint(0, V, size=(B, T)).astype(np.int64)
    tokens[:, 0] = 256  # BOS
    targets = rng.randint(0, V, size=(B, T)).astype(np.int64)
    targets[0, 3] = targets[1, 0] = targets[2, 7] = targets[2, 11] = -1
    # A mask with zeros (one on a missing target, others not) and non-uniform weights.
    mask = np.ones((B, T), np.float32)
    mask[0, 3] = mask[0, 5] = mask[1, 10] = mask[2, 2] = 0.0
    weight = rng.uniform(0.2, 2.0, size=(B, T)).astype(np.float32)
    w.add_int("tokens", tokens)
    w.add_int("targets", targets)
    w.add("mask", mask)
    w.add("weight", weight)

    # Parameters: weights normal 0.1..0.3, LayerNorm weights around 1 and biases around 0 but
    # not 1/0, so every gradient path carries a non-trivial signal.
    shapes = {"wte": (V, C), "wpe": (maxT, C), "ln1w": (L, C), "ln1b": (L, C),
              "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C), "attprojw": (L, C, C),
              "attprojb": (L, C), "ln2w": (L, C), "ln2b": (L, C), "fcw": (L, 4 * C, C),
              "fcb": (L, 4 * C), "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
              "lnfw": (C,), "lnfb": (C,)}
    std = {"wte": 0.3, "wpe": 0.2, "qkvw": 0.25, "attprojw": 0.15, "fcw": 0.2,
           "fcprojw": 0.1}
    P = {}
    for n in GPT_NAMES:
        if n in ("ln1w", "ln2w", "lnfw"):
            P[n] = f32(rng, shapes[n], 0.2, 1.0)
        elif n in std:
            P[n] = f32(rng, shapes[n], std[n])
        else:  # biases, LayerNorm biases
            P[n] = f32(rng, shapes[n], 0.1)
        w.add(n, P[n])

    tok = torch.from_numpy(tokens)
    tgt = torch.from_numpy(targets)
    mk = torch.from_numpy(mask).to(DT)
    wt = torch.from_numpy(weight).to(DT)
    leaves = {n: P[n].clone().requires_grad_(True) for n in GPT_NAMES}
    logits, logp = gpt_forward(leaves, tok, tgt, NH)
    loss = gpt_mle_loss(logp, tgt, mk, wt)
    grads = torch.autograd.grad(loss, [leaves[n] for n in GPT_NAMES], retain_graph=True)
    w.add("logits", logits)
    w.add("logp", logp)
    w.add("loss", loss)
    for n, g in zip(GPT_NAMES, grads):
        w.add("g_" + n, g)

    # RL-style loss sum(dlogp * logp): the gradient for an arbitrary dLoss/dlogp.
    dlogp = f32(rng, (B, T), 1.0)
    w.add("dlogp", dlogp)
    rl = (dlogp * logp).sum()
    for n, g in zip(GPT_NAMES, torch.autograd.grad(rl, [leaves[n] for n in GPT_NAMES])):
        w.add("rlg_" + n, g)

    # AdamW: a different batch every step, every position a target, no mask or weights.
    S = ADAM["steps"]
    atok = rng.randint(0, V, size=(S, B, T)).astype(np.int64)
    atok[:, :, 0] = 256
    atgt = np.concatenate([atok[:, :, 1:], rng.randint(0, V, size=(S, B, 1))], axis=2)
    w.add_int("adam_tokens", atok)
    w.add_int("adam_targets", atgt)
    ones = torch.ones(B, T, dtype=DT)

    def step_loss(ps, s):
        Q = dict(zip(GPT_NAMES, ps))
        tt = torch.from_numpy(atgt[s])
        _, lp = gpt_forward(Q, torch.from_numpy(atok[s]), tt, NH)
        return gpt_mle_loss(lp, tt, ones, ones)

    losses, final = train_adamw([P[n] for n in GPT_NAMES], step_loss)
    w.add("adam_losses", losses)
    for n, p in zip(GPT_NAMES, final):
        w.add("adam_final_" + n, p)
    w.write(path)


# ---- MLP -----------------------------------------------------------------------------------

MLP_NAMES = ["w_in", "b_in", "ln_w", "ln_b", "w1", "b1", "w2", "b2", "lnf_w", "lnf_b",
             "w_out", "b_out"]


def timeemb(t, D):
    half = D // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=DT) / half)
    a = t[:, None] * f[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


def mlp_forward(P, x, t, td):
    H = P["b_in"].shape[0]
    inp = torch.cat([x, timeemb(t, td)], dim=1) if td > 0 else x
    h = inp @ P["w_in"].T + P["b_in"]
    for k in range(P["ln_w"].shape[0]):
        z = F.layer_norm(h, (H,), P["ln_w"][k], P["ln_b"][k], eps=1e-5)
        h = h + F.silu(z @ P["w1"][k].T + P["b1"][k]) @ P["w2"][k].T + P["b2"][k]
    z = F.layer_norm(h, (H,), P["lnf_w"], P["lnf_b"], eps=1e-5)
    return z @ P["w_out"].T + P["b_out"]


def mlp_params(rng, D, H, K, O, td):
    shapes = {"w_in": (H, D + td), "b_in": (H,), "ln_w": (K, H), "ln_b": (K, H),
              "w1": (K, H, H), "b1": (K, H), "w2": (K, H, H), "b2": (K, H), "lnf_w": (H,),
              "lnf_b": (H,), "w_out": (O, H), "b_out": (O,)}
    std = {"w_in": 0.3, "w1": 0.25, "w2": 0.15, "w_out": 0.2}
    P = {}
    for n in MLP_NAMES:
        if n in ("ln_w", "lnf_w"):
            P[n] = f32(rng, shapes[n], 0.2, 1.0)
        elif n in std:
            P[n] = f32(rng, shapes[n], std[n])
        else:
            P[n] = f32(rng, shapes[n], 0.1)
    return P


def gen_mlp_case(w, rng, prefix, D, H, K, O, td, N, adam):
    w.add_int(prefix + "config", [D, H, K, O, td, N])
    P = mlp_params(rng, D, H, K, O, td)
    x = f32(rng, (N, D), 1.0)
    t = torch.from_numpy(rng.uniform(0, 1000, size=N).astype(np.float32).astype(np.float64))
    w.add(prefix + "x", x)
    if td > 0:
        w.add(prefix + "t", t)
    for n in MLP_NAMES:
        w.add(prefix + n, P[n])
    leaves = {n: P[n].clone().requires_grad_(True) for n in MLP_NAMES}
    xl = x.clone().requires_grad_(True)
    tl = t.clone().requires_grad_(True)
    out = mlp_forward(leaves, xl, tl, td)
    dout = f32(rng, (N, O), 1.0)
    w.add(prefix + "out", out)
    w.add(prefix + "dout", dout)
    wrt = [leaves[n] for n in MLP_NAMES] + [xl] + ([tl] if td > 0 else [])
    grads = torch.autograd.grad((dout * out).sum(), wrt)
    for n, g in zip(MLP_NAMES, grads):
        w.add(prefix + "g_" + n, g)
    w.add(prefix + "dx", grads[len(MLP_NAMES)])
    if td > 0:
        w.add(prefix + "dt", grads[len(MLP_NAMES) + 1])
    if adam:
        y = f32(rng, (N, O), 1.0)
        w.add(prefix + "y", y)

        def step_loss(ps, s):
            return ((mlp_forward(dict(zip(MLP_NAMES, ps)), x, t, td) - y) ** 2).mean()

        losses, final = train_adamw([P[n] for n in MLP_NAMES], step_loss)
        w.add(prefix + "adam_losses", losses)
        for n, p in zip(MLP_NAMES, final):
            w.add(prefix + "adam_final_" + n, p)


def gen_mlp(path):
    rng = np.random.RandomState(777)
    w = RefWriter()
    gen_mlp_case(w, rng, "", D=5, H=24, K=2, O=3, td=8, N=7, adam=True)
    gen_mlp_case(w, rng, "nt_", D=5, H=24, K=2, O=3, td=0, N=7, adam=False)
    w.write(path)


def main():
    if len(sys.argv) > 1:
        sys.exit("usage: tests/gen_ref.py   (writes tests/ref/gpt.bin and tests/ref/mlp.bin)")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # deterministic reductions
    gen_gpt(os.path.join(HERE, "ref", "gpt.bin"))
    gen_mlp(os.path.join(HERE, "ref", "mlp.bin"))


if __name__ == "__main__":
    main()
