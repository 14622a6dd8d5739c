"""Training checkpoints as safetensors + a JSON sidecar -- no pickle anywhere.

A checkpoint directory holds two files:

- ``state.safetensors``: every tensor (model weights and buffers, Adam moments, RNG states);
- ``state.json``: everything else (counters, config, optimizer hyper-parameters, scheduler state,
  numpy/Python RNG states, batcher state), with ``{"__tensor__": name}`` placeholders for tensors.

:func:`flatten`/:func:`unflatten` do the split for any nesting of dicts (also with int keys, as
in ``optimizer.state_dict()``), lists, tuples, tensors and JSON scalars.

Both files are written atomically under unique temporary names (``runtime.storage``), tensors
first; the sidecar records the sha256 and size of the tensors file it belongs to, so
``load_checkpoint`` refuses a pair mixed from two saves (checkpoints written before that field
load unchecked).

Example::

    save_checkpoint(d, model=model, optimizer=opt, scheduler=sched,
                    counters={"epoch": 3, "step": 1200}, config=asdict(cfg))
    info = load_checkpoint(d, model=model, optimizer=opt, scheduler=sched)
    info["counters"]["epoch"]  # 3
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from runtime import storage

__all__ = ["flatten", "unflatten", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state",
           "TENSORS", "SIDECAR"]

TENSORS = "state.safetensors"
SIDECAR = "state.json"
FORMAT = "weaksound-checkpoint/1"


def flatten(obj, prefix: str = "", tensors: dict | None = None):
    """Split ``obj`` into ``(json_tree, {name: tensor})``; inverse of :func:`unflatten`."""
    if tensors is None:
        tensors = {}
    if isinstance(obj, torch.Tensor):
        name = prefix or "tensor"
        if name in tensors:
            raise ValueError(f"duplicate tensor name {name!r}")
        tensors[name] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": name}, tensors
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: flatten(v, f"{prefix}/{k}" if prefix else k, tensors)[0] for k, v in obj.items()}, tensors
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"unsupported dict key {k!r} at {prefix!r}")
            items.append([k, flatten(v, f"{prefix}/{k}" if prefix else str(k), tensors)[0]])
        return {"__items__": items}, tensors
    if isinstance(obj, (list, tuple)):
        tree = [flatten(v, f"{prefix}/{i}" if prefix else str(i), tensors)[0] for i, v in enumerate(obj)]
        return ({"__tuple__": tree} if isinstance(obj, tuple) else tree), tensors
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item(), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} without pickle")


def unflatten(tree, tensors: dict):
    """Rebuild the object from :func:`flatten`'s output."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__items__" in tree:
            return {k: unflatten(v, tensors) for k, v in tree["__items__"]}
        if "__tuple__" in tree:
            return tuple(unflatten(v, tensors) for v in tree["__tuple__"])
        return {k: unflatten(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    return tree


def rng_state() -> dict:
    """Global RNG states of Python, numpy (legacy) and torch (CPU, and CUDA when present)."""
    py = random.getstate()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": list(np.random.get_state(legacy=True)),
             "torch": torch.get_rng_state()}
    state["numpy"][1] = state["numpy"][1].tolist()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def save_checkpoint(directory, *, model: torch.nn.Module, optimizer=None, scheduler=None,
                    counters: dict | None = None, config: dict | None = None, extra: dict | None = None,
                    include_rng: bool = True) -> Path:
    """Write ``state.safetensors`` + ``state.json`` into ``directory`` (created if needed).

    ``model`` must be the unwrapped module (``ddp_model.module``). ``extra`` carries anything else
    the loop needs on resume (e.g. batcher state, best mAP); it must be tensors or JSON values.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"model": model.state_dict(),
               "optimizer": optimizer.state_dict() if optimizer is not None else None,
               "scheduler": scheduler.state_dict() if scheduler is not None else None,
               "rng": rng_state() if include_rng else None,
               "extra": extra or {}}
    tree, tensors = flatten(payload)
    data = save_safetensors(tensors)
    storage.write_bytes_atomic(str(directory / TENSORS), data)
    sidecar = {"format": FORMAT, "counters": counters or {}, "config": config or {}, "state": tree,
               "tensors": {"file": TENSORS, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    storage.write_text_atomic(str(directory / SIDECAR), json.dumps(sidecar, indent=1, allow_nan=True))
    return directory


def load_checkpoint(directory, *, model: torch.nn.Module | None = None, optimizer=None, scheduler=None,
                    restore_rng: bool = True, map_location: str | torch.device = "cpu") -> dict:
    """Restore what :func:`save_checkpoint` wrote into the given objects.

    Returns ``{"counters", "config", "extra"}``. The model load is strict: a checkpoint of a
    different architecture fails with the missing/unexpected keys listed.
    """
    directory = Path(directory)
    sidecar = json.loads((directory / SIDECAR).read_text())
    if sidecar.get("format") != FORMAT:
        raise ValueError(f"{directory}: not a {FORMAT} checkpoint (format={sidecar.get('format')!r})")
    data = (directory / TENSORS).read_bytes()
    recorded = sidecar.get("tensors")
    if recorded and (recorded.get("bytes") != len(data) or recorded.get("sha256") != hashlib.sha256(data).hexdigest()):
        raise ValueError(f"{directory}: {TENSORS} ({len(data)} bytes) is not the file {SIDECAR} was saved with "
                         f"({recorded.get('bytes')} bytes, sha256 {recorded.get('sha256')}): the two files come "
                         "from different saves")
    tensors = {k: v.to(map_location) for k, v in load_safetensors(data).items()}
    payload = unflatten(sidecar["state"], tensors)
    if model is not None:
        model.load_state_dict(payload["model"], strict=True)
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise ValueError(f"{directory}: checkpoint has no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    if restore_rng and payload["rng"] is not None:
        set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in payload["rng"].items()})
    return {"counters": sidecar["counters"], "config": sidecar["config"], "extra": payload["extra"],
            "model_state": payload["model"]}
