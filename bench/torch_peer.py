#!/usr/bin/python3
"""PyTorch peer of rlx-bench-learner: the same GPT-2-style model (tanh-GELU, tied embeddings,
vocab 260), batch, threads and AdamW, timed the same way (forward + loss + backward + step on
random byte tokens, after warm-up steps). Prints `tokens_per_s N` last.
Needs Debian's python3-torch (run with /usr/bin/python3).

Threads: Debian's torch does its float matmuls in the system BLAS (libblas.so.3, OpenBLAS's
pthread build), and torch.set_num_threads does not reach that library's own thread pool, which
starts one thread per core. Left alone, a "--threads 1" run does its matmuls on every core. The
peer therefore sets OPENBLAS_NUM_THREADS to --threads before torch loads (--blas-threads 0 leaves
OpenBLAS at its default, to reproduce figures taken without this) and prints the count in use."""
import argparse
import ctypes
import math
import os
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--blas-threads", type=int, default=-1,
                   help="OpenBLAS threads: -1 = --threads (default), 0 = OpenBLAS's default")
    return p.parse_args()


ARGS = parse_args()
if ARGS.blas_threads != 0:  # must precede torch's import: OpenBLAS reads it when it loads
    os.environ["OPENBLAS_NUM_THREADS"] = str(
        ARGS.threads if ARGS.blas_threads < 0 else ARGS.blas_threads)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def openblas_threads():
    """Threads of the OpenBLAS loaded into this process, or None if there is none."""
    with open("/proc/self/maps") as f:  # torch loaded it privately: find it by its path
        paths = {ln.split()[-1] for ln in f if "blas" in ln and ".so" in ln}
    for path in sorted(paths):
        try:
            return ctypes.CDLL(path).openblas_get_num_threads()  # dlopen of a loaded lib
        except (OSError, AttributeError):
            continue
    return None


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        hs = C // self.NH
        q = q.view(B, T, self.NH, hs).transpose(1, 2)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(mask[:T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.proj(y)
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, NH, T, V=260):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList([Block(C, NH) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        self.register_buffer("mask", torch.tril(torch.ones(T, T)))
        for mod in self.modules():  # GPT-2 initialisation, as rlx's gpt_new
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, 0.0, 0.02)
            if isinstance(mod, nn.Linear):
                nn.init.zeros_(mod.bias)

    def forward(self, idx):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x, self.mask)
        return self.lnf(x) @ self.wte.weight.t()


def main():
    a = ARGS
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = GPT(a.layers, a.dim, a.heads, a.ctx)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01)
    V = 260
    total = 0.0
    cpu_total = 0.0
    for s in range(a.warmup + a.steps):
        tok = torch.randint(0, 256, (a.batch, a.ctx + 1))
        t0, c0 = time.perf_counter(), time.process_time()
        logits = m(tok[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), tok[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if s >= a.warmup:
            total += dt
            cpu_total += dc
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"openblas_threads {openblas_threads()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"{sum(p.numel() for p in m.parameters())} parameters")
    print(f"steps {a.steps}, {1e3 * total / a.steps:.2f} ms/step, final loss {loss.item():.4f}")
    # CPU time of the whole process, as rlx-bench-learner's cpu_ms_per_step (see there).
    print(f"cpu_ms_per_step {1e3 * cpu_total / a.steps:.2f} "
          f"cpu_tokens_per_s {a.steps * a.batch * a.ctx / cpu_total:.0f}")
    print(f"tokens_per_s {a.steps * a.batch * a.ctx / total:.0f}")


if __name__ == "__main__":
    main()
