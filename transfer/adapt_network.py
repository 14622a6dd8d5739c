"""What network adaptation builds: N_T^I / N_T^II / N_T^III from N_S, and its fine-tuning settings.

Working definitions (arXiv 1711.01369, section 3.4, as configurable presets, see ``AdaptSpec``):

==========  ==================================================================================
N_T^I       N_S with F2 replaced by a new 1x1 conv of C_T filters; the whole network fine-tuned
N_T^II      N_T^I plus one new 1x1 conv + ReLU layer between F1 and the new output layer
N_T^III     N_T^I (or II, ``--iii-base II``) with the conv blocks B1..B6 frozen (weights and
            BatchNorm statistics); F1 and the new layers are trained
==========  ==================================================================================

The mechanics (new output layer, frozen blocks, parameter groups) are trainer/finetune.py's,
shared with the trainer's ``--init-from`` fine-tuning; an adapted network is a WeakLabelCNN
(``ModelConfig.f2_hidden`` > 0 for N_T^II) and exports like N_S.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdaptConfig", "AdaptSpec", "NETWORK_NAMES", "LOSS_NAMES", "build_adapted", "frozen_block_count",
           "variant_spec"]

NETWORK_NAMES = {"I": "N_T^I", "II": "N_T^II", "III": "N_T^III"}
LOSS_NAMES = {"bce": "weak", "ce": "ce"}  # AdaptConfig.loss -> trainer.losses name


@dataclass(frozen=True)
class AdaptSpec:
    """What changes in N_S: the new output layer is always there; these are the options."""

    variant: str  # "I", "II", "III" (names the network "N_T^<variant>")
    extra_layer: bool = False  # a new 1x1 conv + ReLU between F1 and the output layer
    freeze_blocks: bool = False  # conv blocks B1.. frozen (no gradient, BatchNorm in eval mode)
    extra_channels: int = 0  # width of the extra layer; 0 = F1's width

    @property
    def network(self) -> str:
        return NETWORK_NAMES.get(self.variant, f"N_T^{self.variant}")


def variant_spec(variant: str, *, iii_base: str = "I", extra_channels: int = 0) -> AdaptSpec:
    """The preset of ``variant`` ("I", "II" or "III"); N_T^III builds on ``iii_base``."""
    if variant == "I":
        return AdaptSpec("I", extra_channels=extra_channels)
    if variant == "II":
        return AdaptSpec("II", extra_layer=True, extra_channels=extra_channels)
    if variant == "III":
        if iii_base not in ("I", "II"):
            raise ValueError(f"iii_base must be 'I' or 'II', got {iii_base!r}")
        return AdaptSpec("III", extra_layer=iii_base == "II", freeze_blocks=True, extra_channels=extra_channels)
    raise ValueError(f"unknown adaptation variant {variant!r}; choose from I, II, III")


@dataclass(frozen=True)
class AdaptConfig:
    """Fine-tuning settings (not stated in the paper; sensible defaults)."""

    epochs: int = 10  # passes over the training folds
    batch_clips: int = 16  # clips per optimizer step per worker
    lr: float = 1e-3  # Adam learning rate of the new layers
    finetune_lr_scale: float = 0.1  # pretrained (not frozen) layers learn at lr * this; 0 = new layers only
    grad_clip: float = 5.0  # max global gradient norm (as the trainer); 0 disables clipping
    crop_seconds: float = 10.0  # training clips longer than this are randomly cropped; 0 = never
    loss: str = "bce"  # "bce": sigmoid + BCE on one-hot (N_S's design); "ce": softmax cross-entropy
    workers: int = 1  # Ray Train workers (DDP ranks)
    use_gpu: bool = False  # one GPU per worker
    seed: int = 0  # initialisation of the new layers, clip order, crops
    batch_seconds: float = 60.0  # feature re-extraction: padded audio seconds per forward pass

    def __post_init__(self):
        if self.epochs < 1 or self.batch_clips < 1 or self.workers < 1:
            raise ValueError("epochs, batch_clips and workers must be >= 1")
        if not self.lr > 0 or not self.finetune_lr_scale >= 0 or self.crop_seconds < 0 or self.grad_clip < 0:
            raise ValueError("need lr > 0 and finetune_lr_scale, crop_seconds, grad_clip >= 0")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss must be 'bce' or 'ce', got {self.loss!r}")
        if not self.batch_seconds > 0:
            raise ValueError(f"batch_seconds must be positive, got {self.batch_seconds}")


def frozen_block_count(model, spec: AdaptSpec) -> int:
    """How many of the lowest conv blocks ``spec`` freezes (all of them for N_T^III)."""
    return len(model.blocks) if spec.freeze_blocks else 0


def build_adapted(base, spec: AdaptSpec, num_classes: int, *, seed: int = 0):
    """A copy of ``base`` (a WeakLabelCNN) with a new output layer of ``num_classes`` 1x1 filters.

    The new layers replace ``f2``, so ``forward`` still returns F1 (``out.f1``) and the new
    segment-level sigmoid scores (``out.segments``, ``(B, K, num_classes)``). New layers are
    initialised from ``seed`` (identical on every DDP rank).
    """
    from trainer.finetune import freeze_lower_blocks, replace_output_layer

    if num_classes < 2:
        raise ValueError(f"the target task needs at least 2 classes, got {num_classes}")
    hidden = (spec.extra_channels or base.cfg.f1_channels) if spec.extra_layer else 0
    model = replace_output_layer(base, num_classes, hidden=hidden, seed=seed)
    freeze_lower_blocks(model, frozen_block_count(model, spec))
    return model
