#!/usr/bin/python3
# gen_ref_diffusion.py: writes tests/ref/diffusion.bin, the PyTorch reference for
# tests/test_diffusion.c (common/diffusion/diffusion.c):
#   lin_* / cos_*   the linear and cosine schedules (abar), and for given x_t, eps, x_prev and
#                   per-row (t, t_prev): x0_hat (plain and clipped), the DDIM mean and sigma
#                   (eta 1 and 0.6), log P_F and log P_B (mean over dims and sum)
#   m_*             a class-conditional denoiser (residual mlp, tests/gen_ref.py's): eps, the
#                   model's x0_hat, log P_F of recorded transitions (clipped x0_hat) and the
#                   gradient of sum(dlogpf * logpf) w.r.t. every parameter; the MLE loss at
#                   given t and noise and its parameter gradients; eps, log P_F and its
#                   gradient under classifier-free guidance (w = 1.5)
# Same conventions as tests/gen_ref.py: float32 inputs, float64 computation, float32 storage.
# Run with no arguments (Debian's python3-torch): /usr/bin/python3 tests/gen_ref_diffusion.py
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_ref import DT, MLP_NAMES, RefWriter, f32, mlp_forward, mlp_params  # noqa: E402

LOG2PI = math.log(2 * math.pi)


def abar_linear(T, b0, b1):
    b0, b1 = float(np.float32(b0)), float(np.float32(b1))
    beta = torch.tensor([b0 + (b1 - b0) * i / (T - 1) for i in range(T)], dtype=DT)
    return torch.cumprod(1 - beta, 0)


def abar_cosine(T, s):
    s = float(np.float32(s))
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    beta = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=DT)
    return torch.cumprod(1 - beta, 0)


def x0_hat(abar, x, eps, t, clip):
    at = abar[t][:, None]
    v = (x - torch.sqrt(1 - at) * eps) / torch.sqrt(at)
    return v.clamp(-1, 1) if clip else v


def pf_mean(abar, x, eps, t, tp, eta, clip):
    at, ap = abar[t][:, None], abar[tp][:, None]
    sigma = eta * torch.sqrt((1 - ap) / (1 - at)) * torch.sqrt(1 - at / ap)
    c = torch.sqrt(torch.clamp(1 - ap - sigma ** 2, min=0))
    return torch.sqrt(ap) * x0_hat(abar, x, eps, t, clip) + c * eps, sigma[:, 0]


def gauss_logp(x, mean, std, reduce_mean):
    lp = -0.5 * ((x - mean) / std[:, None]) ** 2 - torch.log(std)[:, None] - 0.5 * LOG2PI
    return lp.mean(1) if reduce_mean else lp.sum(1)


def logpb(abar, x_t, x_prev, t, tp, reduce_mean):
    alpha = abar[t] / abar[tp]
    return gauss_logp(x_t, torch.sqrt(alpha)[:, None] * x_prev, torch.sqrt(1 - alpha),
                      reduce_mean)


def rows_t(rng, N, T):
    t = rng.randint(1, T, size=N)
    tp = np.array([rng.randint(0, ti) for ti in t])
    t[0], tp[0] = T - 1, 0      # the widest step
    t[1], tp[1] = 1, 0          # the last step of a chain
    return torch.from_numpy(t.astype(np.int64)), torch.from_numpy(tp.astype(np.int64))


def gen_math(w, rng, prefix, abar, T):
    N, D = 8, 6
    t, tp = rows_t(rng, N, T)
    x_t = f32(rng, (N, D), 1.2)
    eps = f32(rng, (N, D), 1.0)
    x_prev = f32(rng, (N, D), 1.0)
    w.add(prefix + "abar", abar)
    w.add_int(prefix + "t", t)
    w.add_int(prefix + "tp", tp)
    w.add(prefix + "x_t", x_t)
    w.add(prefix + "eps", eps)
    w.add(prefix + "x_prev", x_prev)
    w.add(prefix + "x0", x0_hat(abar, x_t, eps, t, False))
    w.add(prefix + "x0_clip", x0_hat(abar, x_t, eps, t, True))
    for eta, tag in ((1.0, "e1"), (0.6, "e06")):
        for clip in (0, 1):
            mean, sigma = pf_mean(abar, x_t, eps, t, tp, eta, clip)
            name = "%s%s_c%d_" % (prefix, tag, clip)
            w.add(name + "mean", mean)
            w.add(name + "sigma", sigma)
            w.add(name + "logpf", gauss_logp(x_prev, mean, sigma, True))
            w.add(name + "logpf_sum", gauss_logp(x_prev, mean, sigma, False))
    w.add(prefix + "logpb", logpb(abar, x_t, x_prev, t, tp, True))
    w.add(prefix + "logpb_sum", logpb(abar, x_t, x_prev, t, tp, False))


def gen_model(w, rng, abar, T):
    D, C, H, K, TD, N = 4, 3, 16, 2, 8, 6
    w.add_int("m_config", [D, C, H, K, TD, N])
    P = mlp_params(rng, D + C + 1, H, K, D, TD)
    for n in MLP_NAMES:
        w.add("m_" + n, P[n])
    t, tp = rows_t(rng, N, T)
    labels = np.array([0, 2, -1, 1, -1, 0], dtype=np.int64)
    x_t = f32(rng, (N, D), 1.5)
    x_prev = f32(rng, (N, D), 1.0)
    dlogpf = f32(rng, (N,), 1.0)
    w.add_int("m_t", t)
    w.add_int("m_tp", tp)
    w.add_int("m_labels", labels)
    w.add("m_x_t", x_t)
    w.add("m_x_prev", x_prev)
    w.add("m_dlogpf", dlogpf)
    onehot = torch.zeros(N, C + 1, dtype=DT)
    onehot[torch.arange(N), torch.from_numpy(np.where(labels < 0, C, labels))] = 1

    leaves = {n: P[n].clone().requires_grad_(True) for n in MLP_NAMES}
    eps = mlp_forward(leaves, torch.cat([x_t, onehot], 1), t.to(DT), TD)
    mean, sigma = pf_mean(abar, x_t, eps, t, tp, 1.0, True)
    lp = gauss_logp(x_prev, mean, sigma, True)
    w.add("m_eps", eps)
    w.add("m_x0", x0_hat(abar, x_t, eps, t, False))
    w.add("m_x0_clip", x0_hat(abar, x_t, eps, t, True))
    w.add("m_logpf", lp)
    nclip = int((x0_hat(abar, x_t, eps, t, False).abs() > 1).sum())
    assert 0 < nclip < N * D, nclip  # both gradient paths of the clip are exercised
    grads = torch.autograd.grad((dlogpf * lp).sum(), [leaves[n] for n in MLP_NAMES])
    for n, g in zip(MLP_NAMES, grads):
        w.add("m_g_" + n, g)

    # Classifier-free guidance w = 1.5: eps = (1 + w) eps(x, label) - w eps(x, null).
    G = 1.5
    null = torch.zeros(N, C + 1, dtype=DT)
    null[:, C] = 1
    leaves = {n: P[n].clone().requires_grad_(True) for n in MLP_NAMES}
    ec = mlp_forward(leaves, torch.cat([x_t, onehot], 1), t.to(DT), TD)
    eu = mlp_forward(leaves, torch.cat([x_t, null], 1), t.to(DT), TD)
    eg = (1 + G) * ec - G * eu
    mean, sigma = pf_mean(abar, x_t, eg, t, tp, 1.0, True)
    lp = gauss_logp(x_prev, mean, sigma, True)
    w.add("m_cfg_w", [G])
    w.add("m_cfg_eps", eg)
    w.add("m_cfg_logpf", lp)
    grads = torch.autograd.grad((dlogpf * lp).sum(), [leaves[n] for n in MLP_NAMES])
    for n, g in zip(MLP_NAMES, grads):
        w.add("m_cfg_g_" + n, g)

    # MLE loss at given t and noise.
    x0 = torch.from_numpy(rng.uniform(-1, 1, size=(N, D)).astype(np.float32).astype(np.float64))
    noise = f32(rng, (N, D), 1.0)
    lt = torch.from_numpy(rng.randint(0, T, size=N).astype(np.int64))
    w.add("m_x0_data", x0)
    w.add("m_noise", noise)
    w.add_int("m_loss_t", lt)
    at = abar[lt][:, None]
    xt = torch.sqrt(at) * x0 + torch.sqrt(1 - at) * noise
    leaves = {n: P[n].clone().requires_grad_(True) for n in MLP_NAMES}
    e = mlp_forward(leaves, torch.cat([xt, onehot], 1), lt.to(DT), TD)
    loss = ((e - noise) ** 2).mean()
    w.add("m_loss", loss)
    for n, g in zip(MLP_NAMES, torch.autograd.grad(loss, [leaves[n] for n in MLP_NAMES])):
        w.add("m_lg_" + n, g)


def main():
    if len(sys.argv) > 1:
        sys.exit("usage: tests/gen_ref_diffusion.py   (writes tests/ref/diffusion.bin)")
    torch.set_num_threads(1)
    rng = np.random.RandomState(4242)
    w = RefWriter()
    T = 50
    # schedules: T, beta_start, beta_end, cosine_s (the C side builds diff_config_t from these)
    w.add("sched", [T, 1e-3, 0.2, 0.008])
    lin, cos = abar_linear(T, 1e-3, 0.2), abar_cosine(T, 0.008)
    gen_math(w, rng, "lin_", lin, T)
    gen_math(w, rng, "cos_", cos, T)
    gen_model(w, rng, lin, T)
    w.write(os.path.join(HERE, "ref", "diffusion.bin"))


if __name__ == "__main__":
    main()
