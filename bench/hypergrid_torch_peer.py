#!/usr/bin/python3
"""A plain-PyTorch trajectory-balance HyperGrid trainer in torchgfn's published configuration,
as a peer for rlx's GFlowNet numbers (docs/gflownet.md).

torchgfn's HyperGrid setup: states {0..H-1}^D from 0, actions "increment coordinate d" (masked
at H-1) or stop; R(s) = R0 + R1 prod 1[0.25 < |s/(H-1) - 0.5|] + R2 prod 1[0.3 < ... < 0.4];
one-hot (KHot) inputs; a ReLU MLP with 2 hidden layers of 256 shared by the forward and
backward heads; Adam, lr 1e-3 for the network and 0.1 for log Z; on-policy TB. Every
--eval-every trajectories it prints the exact L1 = sum_x |p(x) - R(x)/Z| of the sampler's
terminal distribution (dynamic programming over the DAG), like rlx's learner.

    /usr/bin/python3 bench/hypergrid_torch_peer.py --ndim 4 --height 8 --batch 128 --seed 1
Last line: `l1 X` after --trajectories. Written for rlx (no torchgfn code).
"""
import argparse
import itertools

import torch


def reward(coords, H, r0=0.1, r1=0.5, r2=2.0):
    a = (coords.float() / (H - 1) - 0.5).abs()
    outer = (a > 0.25).all(-1).float()
    band = ((a > 0.3) & (a < 0.4)).all(-1).float()
    return r0 + r1 * outer + r2 * band


class Policy(torch.nn.Module):
    def __init__(self, D, H, hidden=256):
        super().__init__()
        self.D, self.H = D, H
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(D * H, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.pf = torch.nn.Linear(hidden, D + 1)
        self.pb = torch.nn.Linear(hidden, D)
        self.logz = torch.nn.Parameter(torch.zeros(()))

    def encode(self, s):
        return torch.nn.functional.one_hot(s, self.H).float().flatten(-2)

    def logprobs(self, s):
        """log P_F over D+1 actions and log P_B over D parents of states s (N, D)."""
        h = self.trunk(self.encode(s))
        lf = self.pf(h).masked_fill(
            torch.cat([s == self.H - 1, torch.zeros_like(s[:, :1], dtype=torch.bool)], 1),
            float("-inf"))
        lb = self.pb(h).masked_fill(s == 0, float("-inf"))
        return lf.log_softmax(-1), lb.log_softmax(-1)


def sample_tb_loss(p, n, gen):
    D = p.D
    s = torch.zeros(n, D, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    sum_pf = torch.zeros(n)
    sum_pb = torch.zeros(n)
    while alive.any():
        idx = alive.nonzero().squeeze(1)
        lf, _ = p.logprobs(s[idx])
        a = torch.multinomial(lf.detach().exp(), 1, generator=gen).squeeze(1)
        sum_pf = sum_pf.index_add(0, idx, lf.gather(1, a[:, None]).squeeze(1))
        move = a < D
        mi = idx[move]
        if len(mi):
            s[mi, a[move]] += 1
            _, lb = p.logprobs(s[mi])
            sum_pb = sum_pb.index_add(0, mi, lb.gather(1, a[move][:, None]).squeeze(1))
        alive[idx[~move]] = False
    logr = reward(s, p.H).log()
    return ((p.logz + sum_pf - sum_pb - logr) ** 2).mean()


@torch.no_grad()
def exact_l1(p):
    D, H = p.D, p.H
    states = torch.tensor(list(itertools.product(range(H), repeat=D))).flip(1).contiguous()
    index = (states * (H ** torch.arange(D))).sum(1)  # s_0 + s_1 H + ...: parents come first
    order = index.argsort()
    states = states[order]
    lf, _ = p.logprobs(states)
    pf = lf.exp()
    reach = torch.zeros(len(states))
    reach[0] = 1.0
    for i in range(len(states)):  # ascending index is a topological order
        for d in range(D):
            if states[i, d] < H - 1:
                reach[i + H ** d] += reach[i] * pf[i, d]
    pterm = reach * pf[:, D]
    r = reward(states, H)
    return (pterm - r / r.sum()).abs().sum().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ndim", type=int, default=4)
    ap.add_argument("--height", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--trajectories", type=int, default=32768)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--logz-lr", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed)
    p = Policy(a.ndim, a.height)
    net = [q for n, q in p.named_parameters() if n != "logz"]
    opt = torch.optim.Adam([{"params": net, "lr": a.lr}, {"params": [p.logz], "lr": a.logz_lr}])
    n = 0
    while n < a.trajectories:
        if n % a.eval_every == 0:
            print(f"trajectories {n} l1 {exact_l1(p):.4f} logz {p.logz.item():.3f}", flush=True)
        opt.zero_grad()
        sample_tb_loss(p, a.batch, gen).backward()
        opt.step()
        n += a.batch
    print(f"trajectories {n} l1 {exact_l1(p):.4f} logz {p.logz.item():.3f}")
    print(f"l1 {exact_l1(p):.4f}")


if __name__ == "__main__":
    main()
