"""What one rank measures during an epoch, and the epoch's totals over every rank; the running sums
travel in a mid-epoch checkpoint (:meth:`EpochMeter.gather`, :meth:`EpochMeter.from_row`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.distributed import all_gather_rows, all_reduce_sum

__all__ = ["EpochMeter"]


@dataclass
class EpochMeter:
    """Running sums of one rank's epoch; :meth:`summary` combines every rank's."""

    loss_sum: float = 0.0  # summed per-clip losses
    clips: int = 0
    audio_s: float = 0.0  # seconds of (possibly cropped) audio trained on
    wait_s: float = 0.0  # time spent waiting for the next batch
    step_s: float = 0.0  # wall time of the steps, waiting included
    steps: int = 0
    last_loss: float = float("nan")  # mean per-clip loss of the latest step

    def add(self, per_clip: torch.Tensor, *, audio_s: float, wait_s: float, step_s: float) -> None:
        batch_loss = float(per_clip.sum().item())  # a device sync; once per step is fine for this CNN
        self.loss_sum += batch_loss
        self.clips += int(per_clip.shape[0])
        self.audio_s += audio_s
        self.wait_s += wait_s
        self.step_s += step_s
        self.steps += 1
        self.last_loss = batch_loss / per_clip.shape[0]

    FIELDS = ("loss_sum", "clips", "audio_s", "wait_s", "step_s", "steps", "last_loss")

    def gather(self, world_size: int) -> list[list[float]]:
        """Every rank's running sums, in rank order (collective), for a mid-epoch checkpoint."""
        row = torch.tensor([[float(getattr(self, f)) for f in self.FIELDS]], dtype=torch.float64)
        return all_gather_rows(row, world_size).tolist()

    @classmethod
    def from_row(cls, row: list[float] | None) -> EpochMeter:
        """A rank's meter continued from its row of :meth:`gather` (a fresh one for None)."""
        if row is None:
            return cls()
        values = dict(zip(cls.FIELDS, row))
        values["clips"], values["steps"] = int(values["clips"]), int(values["steps"])
        return cls(**{k: (float("nan") if v is None else v) for k, v in values.items()})

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.clips if self.clips else float("nan")

    @property
    def clips_per_s(self) -> float:
        return self.clips / max(self.step_s, 1e-9)

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / max(self.step_s, 1e-9)

    @property
    def wait_fraction(self) -> float:
        return self.wait_s / max(self.step_s, 1e-9)

    def summary(self, world_size: int) -> dict:
        """The epoch over every rank (collective: every rank must call it).

        Throughput is all clips over the mean rank's step time; the loss is the mean per clip.
        """
        loss, clips, audio, wait, step = all_reduce_sum(
            [self.loss_sum, float(self.clips), self.audio_s, self.wait_s, self.step_s], world_size)
        steps_per_rank = all_gather_rows(torch.tensor([self.steps]), world_size).tolist()
        per_rank_s = step / world_size
        return {"train_loss": loss / clips if clips else float("nan"), "train_clips": int(clips),
                "train_audio_s": audio, "clips_per_s": clips / per_rank_s if per_rank_s else 0.0,
                "audio_s_per_s": audio / per_rank_s if per_rank_s else 0.0,
                "data_wait_fraction": wait / step if step else 0.0, "steps_per_rank": steps_per_rank}
