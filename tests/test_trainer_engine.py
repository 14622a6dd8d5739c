"""trainer/engine.py, losses.py, distributed.py: the one training engine of N_S and N_T.

Invariants:
- the F2 sigmoid, the pooling and the loss run in float32 under bf16 autocast, so a confident
  wrong negative still has its full gradient (issue 12);
- a step's gradient is the mean over the step's clips; the step returns one loss per clip;
- the collectives concatenate uneven per-rank rows in rank order and copy rank 0's buffers.
"""
from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from trainer.config import FrontEndConfig, ModelConfig, OptimConfig
from trainer.distributed import all_gather_rows, all_reduce_sum, broadcast_buffers
from trainer.engine import jsonable, lr_at, set_lr, train_step
from trainer.frontend import LogMel
from trainer.losses import per_clip_loss
from trainer.model import WeakLabelCNN, pool_segments

SMALL = ModelConfig(channels=(4, 8, 8, 8, 8), convs_per_block=(1, 1, 1, 1, 1), f1_channels=16, num_classes=4)
FE = FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64)


def _confident_network(logit: float) -> WeakLabelCNN:
    """Every segment's F2 logit is ``logit`` whatever the input (zero weights, constant bias)."""
    torch.manual_seed(0)
    m = WeakLabelCNN(SMALL, 64).eval()
    torch.nn.init.zeros_(m.f2.weight)
    torch.nn.init.constant_(m.f2.bias, logit)
    return m


@pytest.mark.parametrize("loss", ["weak", "slat"])
def test_a_confident_wrong_negative_keeps_its_gradient_under_bf16_autocast(loss):
    m = _confident_network(6.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.randn(1, 1, 256, 64))
        per_clip = per_clip_loss(loss, out, torch.zeros(1, SMALL.num_classes), SMALL.pooling)
    assert out.segments.dtype == out.clip.dtype == per_clip.dtype == torch.float32
    per_clip.sum().backward()
    # d BCE(sigmoid(z), 0) / dz = sigmoid(z) = 0.9985 at z = 6.5, averaged over the classes (in bf16
    # sigmoid(6.5) rounds to 1.0, the clamp cuts the gradient and this was 0); the conv's own
    # backward is still bf16, hence the tolerance
    expected = torch.sigmoid(torch.tensor(6.5)).item() / SMALL.num_classes
    torch.testing.assert_close(m.f2.bias.grad, torch.full((SMALL.num_classes,), expected), rtol=1e-2, atol=0)


def test_weak_loss_is_bce_of_the_pooled_clip_output_per_clip():
    torch.manual_seed(1)
    out = WeakLabelCNN(SMALL, 64).eval()(torch.randn(3, 1, 200, 64), torch.tensor([200, 150, 128]))
    y = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    want = F.binary_cross_entropy(out.clip, y, reduction="none").mean(1)
    torch.testing.assert_close(per_clip_loss("weak", out, y), want)


def test_slat_loss_gives_every_valid_segment_the_clip_labels():
    torch.manual_seed(2)
    out = WeakLabelCNN(SMALL, 64).eval()(torch.randn(2, 1, 320, 64), torch.tensor([320, 128]))
    y = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    got = per_clip_loss("slat", out, y)
    for b in range(2):
        k = int(out.num_segments[b])
        seg = out.segments[b, :k]
        want = F.binary_cross_entropy(seg, y[b].expand_as(seg))
        torch.testing.assert_close(got[b], want)
    assert out.num_segments.tolist() == [9, 3]  # the short clip's padding segments are not scored


def test_ce_loss_is_softmax_cross_entropy_of_the_pooled_logits():
    torch.manual_seed(3)
    out = WeakLabelCNN(SMALL, 64).eval()(torch.randn(2, 1, 256, 64))
    y = torch.tensor([2, 0])
    want = F.cross_entropy(pool_segments(torch.logit(out.segments.double()), out.num_segments, "avg"), y,
                           reduction="none")
    torch.testing.assert_close(per_clip_loss("ce", out, F.one_hot(y, 4).float()).double(), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown loss"):
        per_clip_loss("hinge", out, F.one_hot(y, 4).float())


def _batch(n=3, seconds=(1.0, 2.0, 1.5)):
    g = torch.Generator().manual_seed(5)
    lengths = torch.tensor([int(s * FE.sample_rate) for s in seconds[:n]])
    wave = torch.randn(n, int(lengths.max()), generator=g) * 0.1
    for i, L in enumerate(lengths):
        wave[i, L:] = 0
    return {"waveform": wave, "lengths": lengths, "targets": torch.eye(4)[:n]}


def test_train_step_returns_per_clip_losses_and_steps_on_their_mean():
    torch.manual_seed(0)
    model, frontend = WeakLabelCNN(SMALL, 64), LogMel(FE, min_frames=SMALL.segment_frames)
    twin = WeakLabelCNN(SMALL, 64)
    twin.load_state_dict(model.state_dict())
    batch = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    per_clip = train_step(model, frontend, opt, batch, world_size=1, loss="weak", grad_clip=0.0)
    assert per_clip.shape == (3,) and not per_clip.requires_grad
    # the same update by hand: SGD on the mean of the per-clip losses
    x, n = frontend(batch["waveform"], batch["lengths"])
    twin.train()
    mean = per_clip_loss("weak", twin(x, n), batch["targets"]).mean()
    torch.testing.assert_close(mean.detach(), per_clip.mean())
    mean.backward()
    with torch.no_grad():
        for p in twin.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


def test_lr_schedule_warms_up_then_follows_the_cosine_to_its_floor():
    o = OptimConfig(lr=1.0, schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, o, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, o, 14) == pytest.approx(1.0) and lr_at(14, o, 14) == pytest.approx(0.1)
    assert lr_at(9, o, 14) == pytest.approx(0.55)
    assert lr_at(100, OptimConfig(lr=0.5), 10) == 0.5
    opt = torch.optim.Adam([{"params": [torch.zeros(1, requires_grad=True)], "lr_scale": 0.1},
                            {"params": [torch.zeros(1, requires_grad=True)]}])
    set_lr(opt, 2.0)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.2), 2.0]


def test_jsonable_turns_non_finite_floats_into_null():
    assert jsonable({"a": [1.0, math.nan], "b": (math.inf, "x")}) == {"a": [1.0, None], "b": [None, "x"]}


def test_single_rank_collectives_are_the_identity():
    x = torch.arange(6).reshape(3, 2)
    assert all_gather_rows(x, 1) is x
    assert all_reduce_sum([1.5, 2.0], 1) == [1.5, 2.0]
    broadcast_buffers(torch.nn.BatchNorm1d(2), 1)  # no process group needed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        rows = torch.full((rank + 2, 3), float(rank))  # 2 rows on rank 0, 3 on rank 1
        gathered = all_gather_rows(rows, 2)
        summed = all_reduce_sum([1.0, rank * 10.0], 2)
        bn = torch.nn.BatchNorm1d(2)
        bn.running_mean.fill_(rank + 5.0)
        broadcast_buffers(bn, 2)
        results[rank] = (gathered.tolist(), summed, bn.running_mean.tolist())
    finally:
        dist.destroy_process_group()


def test_two_ranks_gather_uneven_rows_in_rank_order_and_share_rank_0_buffers():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_two_ranks, args=(_free_port(), results), nprocs=2, join=True)
        results = dict(results)
    for rank in (0, 1):
        gathered, summed, running_mean = results[rank]
        assert gathered == [[0.0] * 3] * 2 + [[1.0] * 3] * 3
        assert summed == [2.0, 10.0]
        assert running_mean == [5.0, 5.0]


def test_a_gpu_run_reduces_its_cpu_counters_over_gloo_and_its_gradients_over_nccl():
    # NCCL alone refuses the CPU tensors all_reduce_sum / all_gather_rows exchange every step; this
    # machine has no GPU, so the mapping is checked here and the GPU run itself is listed as not run.
    from trainer.distributed import process_group_backend

    per_device = dict(part.split(":") for part in process_group_backend(True).split(","))
    assert per_device == {"cpu": "gloo", "cuda": "nccl"}
    assert process_group_backend(False) == "gloo"
