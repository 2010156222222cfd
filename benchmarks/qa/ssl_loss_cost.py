"""What Sy-CON's and MoCo's losses alone cost per step (forward + backward on random unit embeddings of a step's
shapes).

The throughput benchmark's "+heads" floor replays every network pass of a method; what a method costs above it is its
loss, queues and bookkeeping. For Sy-CON (PNR, MoCo base) that remainder is mostly the loss: each of the two query views
is scored against the other view's current-key queue *and* its past-model queue, in two cross-entropies (current and
distillation branch), i.e. 4× the logits of MoCo's InfoNCE. Shapes as in
`python -m protosphere.bench.throughput --methods sycon --augmentation contrastive` (batch 256, 128-d, each queue
clamped to the 2,304 keys of a 2,400-image task).

    python benchmarks/qa/ssl_loss_cost.py > benchmarks/results/ssl_loss_cost.txt
"""

import os
import platform
import time

import torch
import torch.nn.functional as F

from protosphere.losses import moco_infonce, pnr_moco

torch.manual_seed(0)
B, d, M = 256, 128, 2304


def unit(*s):
    return F.normalize(torch.randn(*s), dim=-1)


def time_it(fn, n=20):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def pnr_step():
    q = [unit(B, d).requires_grad_() for _ in range(2)]
    p = [unit(B, d).requires_grad_() for _ in range(2)]
    k = [unit(B, d) for _ in range(2)]
    f = [unit(B, d) for _ in range(2)]
    queue, past = unit(2, M, d), unit(2, M, d)
    loss = 0.5 * sum(pnr_moco(q[v], k[1 - v], p[v], f[v], torch.cat([queue[1 - v], past[1 - v]])) for v in (0, 1))
    loss.backward()


def moco_step():
    q = [unit(B, d).requires_grad_() for _ in range(2)]
    k = [unit(B, d) for _ in range(2)]
    queue = unit(2, M, d)
    loss = 0.5 * (moco_infonce(q[0], k[1], queue[1]) + moco_infonce(q[1], k[0], queue[0]))
    loss.backward()


print(
    f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
    f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}; median of 20"
)
print(f"# B={B} d={d} queue M={M} per view")
print(f"pnr_moco x2 (Sy-CON's loss) forward+backward: {1000 * time_it(pnr_step):.1f} ms/step")
print(f"moco_infonce x2 (MoCo's loss) forward+backward: {1000 * time_it(moco_step):.1f} ms/step")
