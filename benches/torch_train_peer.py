#!/usr/bin/env python3
"""PyTorch CPU peer for `bridge-bench --model train --compare-torch`: one training step of the
same BridgeNet student (unfolded conv -> batch-norm -> PReLU, as bridgeface trains it), the same
CosFace loss over the same number of classes, and SGD with momentum and weight decay, timed on
the CPU with the same protocol (one warm-up step, then the median of N timed steps).

Prints one JSON object: {"faces_per_sec": ..., "step_s": ..., "forward_s": ..., "batch": B,
"threads": T, "classes": C, "torch": version}.

Usage: python3 benches/torch_train_peer.py [--batch 256] [--threads 1] [--runs 7]
       [--resolution 16] [--classes 1542]
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_peer import BLOCKS, BN_EPS

STEM_CHANNELS = 32
HEAD_CHANNELS = 256
EMBEDDING = 128


def conv_bn_prelu(c_in, c_out, k, stride, groups, prelu=True):
    layers = [
        nn.Conv2d(c_in, c_out, k, stride, k // 2 if k > 1 else 0, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.1),
    ]
    if prelu:
        layers.append(nn.PReLU(c_out, init=0.25))
    return nn.Sequential(*layers)


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride, residual):
        super().__init__()
        self.dw = conv_bn_prelu(c_in, c_in, 3, stride, c_in)
        self.pw = conv_bn_prelu(c_in, c_out, 1, 1, 1)
        self.residual = residual

    def forward(self, x):
        y = self.pw(self.dw(x))
        return y + x if self.residual else y


class Student(nn.Module):
    """BridgeNet as src/autograd/student.rs records it for training."""

    def __init__(self, resolution):
        super().__init__()
        self.stem = conv_bn_prelu(3, STEM_CHANNELS, 3, 1, 1)
        self.blocks = nn.Sequential(*[Block(ci, co, s, r) for _, ci, co, s, r in BLOCKS])
        side = resolution
        for _, _, _, s, _ in BLOCKS:
            side = (side + 2 - 3) // s + 1
        self.gdc = nn.Conv2d(HEAD_CHANNELS, HEAD_CHANNELS, side, groups=HEAD_CHANNELS, bias=False)
        self.gdc_bn = nn.BatchNorm1d(HEAD_CHANNELS, eps=BN_EPS)
        self.linear = nn.Linear(HEAD_CHANNELS, EMBEDDING, bias=False)
        self.bn = nn.BatchNorm1d(EMBEDDING, eps=BN_EPS)

    def forward(self, x):
        y = self.blocks(self.stem(x))
        y = self.gdc_bn(self.gdc(y).flatten(1))
        return F.normalize(self.bn(self.linear(y)), dim=1)


def cosface(emb, centres, labels, s=16.0, m=0.2):
    logits = emb @ F.normalize(centres, dim=1).t()
    logits = logits - m * F.one_hot(labels, centres.shape[0]).to(logits.dtype)
    return F.cross_entropy(s * logits, labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--classes", type=int, default=1542)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = Student(a.resolution).train()
    centres = nn.Parameter(torch.randn(a.classes, EMBEDDING))
    opt = torch.optim.SGD(list(net.parameters()) + [centres], lr=0.01, momentum=0.9,
                          weight_decay=5e-4)
    g = torch.Generator().manual_seed(7)
    x = torch.rand(a.batch, 3, a.resolution, a.resolution, generator=g) * 2 - 1
    labels = torch.randint(0, a.classes, (a.batch,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = cosface(net(x), centres, labels)
        loss.backward()
        opt.step()

    def median(f):
        f()
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    # The forward alone as the trainer runs it (batch statistics, no tape): the peer of
    # bridge-bench's `forward_s`, which records the tape.
    fwd = median(lambda: net(x).sum().item())
    st = median(step)
    print(json.dumps({"faces_per_sec": a.batch / st, "step_s": st, "forward_s": fwd,
                      "batch": a.batch, "threads": a.threads, "classes": a.classes,
                      "runs": a.runs, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
