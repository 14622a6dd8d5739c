"""Starting from a trained network: a new output layer for a new vocabulary, frozen lower blocks.

Used by network adaptation (N_T^I/II/III, transfer/) and by ``--init-from`` fine-tuning of the
trainer; both then train with the one engine (trainer/engine.py).
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from trainer.model import WeakLabelCNN, output_layer

__all__ = ["replace_output_layer", "freeze_lower_blocks", "train_mode", "param_groups"]


def replace_output_layer(base: WeakLabelCNN, num_classes: int, *, hidden: int = 0, seed: int = 0) -> WeakLabelCNN:
    """A copy of ``base`` whose F2 is a new output layer of ``num_classes`` filters (with a 1x1
    conv + ReLU of width ``hidden`` before it when ``hidden > 0``). The new layer is initialised
    from ``seed`` alone (the same on every DDP rank); torch's global RNG is left as it was.
    Every parameter of the copy is trainable; ``base`` is untouched."""
    model = copy.deepcopy(base)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model.f2 = output_layer(model.cfg.f1_channels, num_classes, hidden)
    finally:
        torch.random.set_rng_state(state)
    model.cfg = replace(model.cfg, num_classes=num_classes, f2_hidden=hidden)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def freeze_lower_blocks(model: WeakLabelCNN, n: int) -> None:
    """No gradient for the conv blocks B1..Bn (``n`` = ``len(model.blocks)`` freezes them all)."""
    if not 0 <= n <= len(model.blocks):
        raise ValueError(f"cannot freeze {n} blocks of a network with {len(model.blocks)}")
    for block in model.blocks[:n]:
        for p in block.parameters():
            p.requires_grad_(False)


def train_mode(model: nn.Module, frozen_blocks: int = 0) -> None:
    """``model.train()``, but the ``frozen_blocks`` lowest conv blocks keep their BatchNorm
    statistics (eval mode): frozen means weights and statistics."""
    model.train()
    raw = model.module if hasattr(model, "module") else model
    if frozen_blocks == len(raw.blocks):
        raw.blocks.eval()
    for block in raw.blocks[:frozen_blocks]:
        block.eval()


def param_groups(model: WeakLabelCNN, lr: float, pretrained_lr_scale: float = 1.0) -> list[dict]:
    """New output layer at ``lr``; the other trainable (pretrained) parameters at
    ``lr * pretrained_lr_scale``, or frozen when that is 0. Each group carries its ``lr_scale``."""
    new = [p for p in model.f2.parameters() if p.requires_grad]
    old = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("f2.")]
    groups = [{"params": new, "lr": lr, "lr_scale": 1.0}]
    if old and pretrained_lr_scale > 0:
        groups.append({"params": old, "lr": lr * pretrained_lr_scale, "lr_scale": pretrained_lr_scale})
    elif old:
        for p in old:
            p.requires_grad_(False)
    return groups


def build_model(cfg) -> WeakLabelCNN:
    """The network a run starts from (``cfg``: TrainConfig): random N_S, or with ``cfg.init_from`` the
    exported network with a new output layer for ``cfg.model.num_classes`` classes (seeded by
    ``cfg.seed``) and its ``cfg.freeze_blocks`` lowest blocks frozen."""
    if not cfg.init_from:
        return WeakLabelCNN(cfg.model, cfg.frontend.n_mels)
    from trainer.export import load_exported

    model = replace_output_layer(load_exported(cfg.init_from).model, cfg.model.num_classes, seed=cfg.seed)
    freeze_lower_blocks(model, cfg.freeze_blocks)
    return model


def init_from_export(cfg, num_classes: int):
    """``cfg`` (TrainConfig) with the front end and architecture of the export ``cfg.init_from``
    (F2 replaced by ``num_classes`` outputs); unchanged when there is no ``init_from``."""
    if not cfg.init_from:
        return replace(cfg, model=replace(cfg.model, num_classes=num_classes))
    from trainer.export import read_export_config

    frontend, architecture = read_export_config(cfg.init_from)
    return replace(cfg, frontend=frontend, model=replace(architecture, num_classes=num_classes, f2_hidden=0))
