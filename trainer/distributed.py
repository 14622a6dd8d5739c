"""The collective operations both training loops need (torch.distributed, no pickle).

Every function takes ``world_size`` and is a no-op (or the identity) for a single rank, so the
same code runs with one worker, several DDP ranks, or outside Ray in a test.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["all_reduce_sum", "all_gather_rows", "broadcast_buffers", "process_group_backend"]


def process_group_backend(use_gpu: bool) -> str:
    """The torch.distributed backend of a training run: gloo on CPU; on GPU, NCCL for CUDA tensors
    (DDP's gradients) *and* gloo for CPU tensors, because the counters, meters and clip ids these
    helpers reduce live on the CPU, and an NCCL-only group refuses CPU tensors."""
    return "cpu:gloo,cuda:nccl" if use_gpu else "gloo"


def all_reduce_sum(values: list[float], world_size: int) -> list[float]:
    """Elementwise sum of ``values`` over every rank (float64)."""
    t = torch.tensor(values, dtype=torch.float64)
    if world_size > 1:
        dist.all_reduce(t)
    return t.tolist()


def all_gather_rows(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Concatenate the ``(n_r, ...)`` CPU tensors of every rank, in rank order, whatever each ``n_r``.

    ``dist.all_gather`` needs equal shapes, so each rank pads to the largest ``n_r`` first and
    the padding is cut off again after the gather.
    """
    if world_size == 1:
        return x
    n = torch.tensor([x.shape[0]], dtype=torch.long)
    counts = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(counts, n)
    top = int(max(c.item() for c in counts))
    padded = torch.zeros((top, *x.shape[1:]), dtype=x.dtype)
    padded[:x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts)])


def broadcast_buffers(module: nn.Module, world_size: int, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP keeps parameters in sync but each rank's BatchNorm statistics follow its own batches;
    before evaluation or export every rank should hold the one network rank 0 saves.
    """
    if world_size > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src=src)
