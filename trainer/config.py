"""Every training option in one typed place.

Frozen dataclasses, one per concern, nested in :class:`TrainConfig`. ``dataclasses.asdict(cfg)``
is what travels to the Ray workers (``train_loop_config``), what is printed at start and what is
saved with every checkpoint; :meth:`TrainConfig.from_dict` rebuilds it and rejects unknown keys.

Presets (:data:`PRESETS`):

- ``"paper"``: the network N_S of Kumar et al. (ICASSP 2018) exactly -- 44.1 kHz, n_fft 1024,
  hop 512, 128 mel bands, six conv blocks of 16..512 channels, F1 of 1024 2x2 filters, F2 1x1;
  Adam at 1e-3, no augmentation, no weight averaging (the paper trains without either).
- ``"cpu-small"``: the same family (conv blocks + 2x2 F1 + 1x1 F2) at 16 kHz with 64 mel bands,
  five narrow blocks and a 128-d F1, so a 2-core CPU can run demos and tests in minutes.
- ``"paper-plus"`` / ``"cpu-small-plus"``: the same networks with a recipe beyond the paper
  (:data:`RECIPE`): SpecAugment, mixup of waveforms and label vectors, LR warm-up + cosine decay,
  decoupled weight decay (AdamW), an EMA of the weights for evaluation and export, and
  class-balanced sampling.

Example::

    >>> cfg = preset("cpu-small")
    >>> cfg = apply_overrides(cfg, ["optim.lr=3e-4", "epochs=2"])
    >>> TrainConfig.from_dict(dataclasses.asdict(cfg)) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

from runtime import storage

__all__ = [
    "FrontEndConfig",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "AugmentConfig",
    "TrainConfig",
    "PRESETS",
    "preset",
    "with_recipe",
    "apply_overrides",
]


@dataclass(frozen=True)
class FrontEndConfig:
    """Log-mel front end (computed on the training device, not in the loader)."""

    sample_rate: int = 44100  # Hz; shards must be written at this rate
    n_fft: int = 1024  # STFT window and size in samples (23.2 ms at 44.1 kHz)
    hop_length: int = 512  # samples between frames (11.6 ms at 44.1 kHz)
    n_mels: int = 128  # mel bands; after the conv blocks exactly 2 must remain for F1
    f_min: float = 0.0  # Hz, lowest mel edge (librosa default)
    f_max: float | None = None  # Hz, highest mel edge; None = sample_rate / 2 (librosa default)
    top_db: float | None = 80.0  # per-clip floor: max(dB) - top_db, as librosa.power_to_db
    short_pad: str = "zero"  # how clips shorter than one segment are filled in the dB domain:
    #                          "zero" (the released code) or "min" (the clip's own minimum)

    def __post_init__(self):
        _positive(self, "sample_rate", "n_fft", "hop_length", "n_mels")
        if self.hop_length > self.n_fft:
            raise ValueError(f"hop_length ({self.hop_length}) must be <= n_fft ({self.n_fft})")
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0.0 <= self.f_min < f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                             f"f_max={self.f_max}, sample_rate={self.sample_rate}")
        if self.top_db is not None and self.top_db <= 0:
            raise ValueError(f"top_db must be positive or None, got {self.top_db}")
        if self.short_pad not in ("zero", "min"):
            raise ValueError(f"short_pad must be 'zero' or 'min', got {self.short_pad!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the weak-label CNN (see trainer/model.py)."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)  # output channels of each conv block
    convs_per_block: tuple[int, ...] = (2, 2, 2, 2, 2, 1)  # 3x3 convs per block (paper: B6 has one)
    f1_channels: int = 1024  # F1: 2x2 conv, the 1024-d embedding layer
    num_classes: int = 527  # F2 outputs; the trainer sets it from the manifest vocabulary
    pooling: str = "avg"  # global segment pooling: "avg" (released model) or "max"
    f2_hidden: int = 0  # > 0: a 1x1 conv + ReLU of this width before F2 (adapted N_T^II); 0 = N_S

    def __post_init__(self):
        if len(self.channels) == 0 or len(self.channels) != len(self.convs_per_block):
            raise ValueError(f"channels {self.channels} and convs_per_block {self.convs_per_block} "
                             "must be non-empty and of equal length")
        if any(c <= 0 for c in self.channels) or any(n <= 0 for n in self.convs_per_block):
            raise ValueError("channels and convs_per_block must be positive")
        _positive(self, "f1_channels", "num_classes")
        if self.f2_hidden < 0:
            raise ValueError(f"f2_hidden must be >= 0 (0 = no extra layer), got {self.f2_hidden}")
        if self.pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {self.pooling!r}")

    @property
    def num_blocks(self) -> int:
        return len(self.channels)

    @property
    def segment_frames(self) -> int:
        """Input frames covered by one F1/F2 output on the output grid (128 for 6 blocks)."""
        return 2 * 2**self.num_blocks

    @property
    def segment_hop_frames(self) -> int:
        """Input frames between neighbouring segment outputs (64 for 6 blocks)."""
        return 2**self.num_blocks


@dataclass(frozen=True)
class DataConfig:
    """Streaming, bucketing and evaluation data options (see trainer/data.py, trainer/bucketing.py)."""

    train_split: str = "train"  # manifest split(s) used for training; "train+val" refits on both
    eval_split: str = "eval"  # manifest split used for evaluation (full clips, no crop)
    max_crop_s: float = 10.0  # training clips longer than this are randomly cropped to it
    batch_seconds: float = 160.0  # padded audio seconds per batch (n_clips * longest <= budget)
    max_batch_clips: int = 64  # hard cap on clips per batch (short clips would otherwise pile up)
    num_buckets: int = 30  # duration buckets, equal-count bins estimated from the index sidecars
    shuffle_buffer: int = 500  # samples held for in-stream shuffling (per loader worker)
    loader_workers: int = 1  # DataLoader worker processes per Train worker (0 = in-process)
    eval_batch_seconds: float = 320.0  # budget for eval batches (no gradients, so larger)
    steps_per_epoch: int = 0  # 0 = derived from manifest totals (same on every rank)
    sampling: str = "natural"  # "natural": every clip once per epoch; "balanced": drawn with
    #                            replacement, weighted so classes are seen about equally (trainer/sampling.py)
    select_split: str = "val"  # split of the training data that chooses best/ and best_epoch, used when the
    #                            data has it (prep --val-fraction); "" = never select (the last epoch is kept)
    input: str = "local"  # "local": shards read and decoded inside each Train worker (trainer/data.py);
    #                       "ray_data": read + decode in Ray Data tasks anywhere in the cluster (trainer/ray_data_input.py)
    decode_cpus: float = 1.0  # input="ray_data": CPUs reserved per read+decode task
    decode_concurrency: int = 0  # input="ray_data": read+decode tasks at once at most; 0 = Ray decides
    decode_nodes: str = ""  # input="ray_data": node label "key=value" (`ray start --labels`, a KubeRay group's
    #                         labels): read+decode tasks run only on nodes carrying it, the Train workers only on
    #                         nodes without it; "" = both anywhere

    def __post_init__(self):
        if self.sampling not in ("natural", "balanced"):
            raise ValueError(f"sampling must be 'natural' or 'balanced', got {self.sampling!r}")
        if self.input not in ("local", "ray_data"):
            raise ValueError(f"input must be 'local' or 'ray_data', got {self.input!r}")
        if self.input == "ray_data" and self.sampling != "natural":
            raise ValueError("sampling='balanced' needs input='local': the Ray Data path reads every row once")
        if self.decode_cpus <= 0 or self.decode_concurrency < 0:
            raise ValueError("decode_cpus must be > 0 and decode_concurrency >= 0")
        if self.decode_nodes:
            key, sep, value = self.decode_nodes.partition("=")
            if not (sep and key and value) or any(c.isspace() or c in "=!()," for c in key + value):
                raise ValueError(f"decode_nodes must be one node label key=value (e.g. node-group=cpu-data), "
                                 f"got {self.decode_nodes!r}")
            if self.input != "ray_data":
                raise ValueError("decode_nodes places Ray Data's read+decode tasks: it needs input='ray_data'")
        if self.select_split and self.select_split in (*self.train_split.split("+"), self.eval_split):
            raise ValueError(f"select_split {self.select_split!r} must differ from the train and eval splits: "
                             "choosing the model on either would make its reported numbers optimistic "
                             "(a refit on train+val chooses nothing: --select-split '')")
        _positive(self, "max_crop_s", "batch_seconds", "max_batch_clips", "num_buckets",
                  "eval_batch_seconds")
        if self.max_crop_s > self.batch_seconds:
            raise ValueError(f"max_crop_s ({self.max_crop_s}) must fit in batch_seconds "
                             f"({self.batch_seconds})")
        if self.shuffle_buffer < 0 or self.loader_workers < 0 or self.steps_per_epoch < 0:
            raise ValueError("shuffle_buffer, loader_workers and steps_per_epoch must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    """Adam with an optional warmup + cosine schedule (paper summary: Adam, lr 1e-3), and an
    optional exponential moving average of the weights."""

    lr: float = 1e-3  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas (torch defaults)
    weight_decay: float = 0.0  # Adam L2 penalty, or AdamW's decoupled decay (the paper states none)
    decoupled_weight_decay: bool = False  # True: AdamW (decay applied to the weights, not the gradient)
    ema_decay: float = 0.0  # > 0: evaluate and export an EMA of the weights (and BN buffers); 0 = off
    schedule: str = "constant"  # "constant" or "cosine" (decays to min_lr_ratio * lr)
    warmup_steps: int = 0  # linear warmup from 0 over this many optimizer steps
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    grad_clip: float = 5.0  # max global grad norm; 0 disables clipping

    def __post_init__(self):
        _positive(self, "lr")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("warmup_steps, grad_clip >= 0 and 0 <= min_lr_ratio <= 1 required")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (trainer/augment.py); every default is off, as in the paper."""

    time_masks: int = 0  # SpecAugment: time bands zeroed per clip (inside its valid frames)
    time_width: int = 0  # SpecAugment: maximum frames per time band
    mel_masks: int = 0  # SpecAugment: mel bands zeroed per clip
    mel_width: int = 0  # SpecAugment: maximum mel bins per band
    mixup_alpha: float = 0.0  # mixup of waveforms and label vectors, lam ~ Beta(a, a); 0 = off

    def __post_init__(self):
        if min(self.time_masks, self.time_width, self.mel_masks, self.mel_width) < 0 or self.mixup_alpha < 0:
            raise ValueError("augmentation mask counts, widths and mixup_alpha must be >= 0")

    @property
    def spec_augment(self) -> bool:
        return bool((self.time_masks and self.time_width) or (self.mel_masks and self.mel_width))

    @property
    def enabled(self) -> bool:
        return self.spec_augment or self.mixup_alpha > 0


@dataclass(frozen=True)
class TrainConfig:
    """A whole run: data locations, run identity, scale, and the four groups above."""

    data: str = ""  # URL of the training shards (folder with manifest.json, or s3://...)
    eval_data: str = ""  # URL of the evaluation shards; "" = the eval split of --data
    out: str = "runs"  # checkpoint storage (RunConfig.storage_path), local folder or s3://
    name: str = "weaksound"  # run name; the same name under the same --out resumes
    preset: str = "paper"  # which preset the run started from (informational)
    epochs: int = 10  # passes over the (nominal) training epoch
    workers: int = 2  # Ray Train workers (DDP ranks)
    use_gpu: bool = False  # one GPU per worker, NCCL, bf16 autocast
    cpus_per_worker: float = 1.0  # CPUs reserved per Train worker
    seed: int = 0  # base seed; ranks and loader workers derive theirs from it
    keep_last_k: int = 3  # checkpoints kept (the best by eval mAP is kept in addition)
    max_failures: int = 2  # worker-group restarts from the last checkpoint before giving up
    loss_target: str = "weak"  # "weak": BCE on the pooled clip output (N_S); "slat": every segment
    #                            gets the clip's labels, BCE on segment outputs (the paper's N_S^slat)
    init_from: str = ""  # exported model (folder or s3://) to start from, with a new output layer
    #                      for the vocabulary of --data; "" = random initialisation
    freeze_blocks: int = 0  # with init_from: the lowest N conv blocks stay frozen (weights and BN stats)
    checkpoint_every_s: float = 600.0  # mid-epoch checkpoint (with the data position) after this many seconds
    #                                    of training since the last one; 0 = only at epoch ends
    checkpoint_every_steps: int = 0  # > 0: mid-epoch checkpoint every N optimizer steps instead of by time
    clip_log: bool = False  # audit: every rank appends the clip ids of each step to <run>/clip_log/ (JSON lines)
    frontend: FrontEndConfig = field(default_factory=FrontEndConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loader: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        if self.augment.mel_width > self.frontend.n_mels:
            raise ValueError(f"augment.mel_width ({self.augment.mel_width}) exceeds n_mels ({self.frontend.n_mels})")
        _positive(self, "epochs", "workers", "cpus_per_worker", "keep_last_k")
        if self.loss_target not in ("weak", "slat"):
            raise ValueError(f"loss_target must be 'weak' or 'slat', got {self.loss_target!r}")
        if self.freeze_blocks < 0 or self.freeze_blocks > self.model.num_blocks:
            raise ValueError(f"freeze_blocks must be in 0..{self.model.num_blocks}, got {self.freeze_blocks}")
        if self.freeze_blocks and not self.init_from:
            raise ValueError("freeze_blocks needs init_from: frozen random blocks would never learn")
        if self.clip_log and storage.is_remote(self.out):
            raise ValueError("clip_log writes <run>/clip_log/ on local disk: use a local --out or drop --clip-log")
        if self.checkpoint_every_s < 0 or self.checkpoint_every_steps < 0:
            raise ValueError("checkpoint_every_s and checkpoint_every_steps must be >= 0 (0 = off)")
        if self.max_failures < -1:
            raise ValueError(f"max_failures must be >= -1 (-1 = unlimited), got {self.max_failures}")
        left = self.frontend.n_mels // 2**self.model.num_blocks
        if left != 2:
            raise ValueError(
                f"n_mels={self.frontend.n_mels} with {self.model.num_blocks} 2x2 poolings leaves {left} "
                "mel rows, but F1 (2x2, no padding) needs exactly 2; use n_mels in "
                f"[{2 * 2**self.model.num_blocks}, {3 * 2**self.model.num_blocks - 1}]")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``dataclasses.asdict``; unknown keys raise ``KeyError`` naming them."""
        return _from_dict(cls, d, "")


def _positive(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if not v > 0:
            raise ValueError(f"{type(obj).__name__}.{n} must be positive, got {v!r}")


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise TypeError(f"{where or cls.__name__}: expected a dict, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise KeyError(f"unknown key(s) {unknown} for {where or cls.__name__}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in d.items()}
    return cls(**kwargs)


def _coerce(tp, v, where: str):
    """Convert a JSON-ish value to the declared field type, or raise TypeError."""
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, v, where + ".")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, v, where)
            except (TypeError, ValueError):
                pass
        raise TypeError(f"{where}: {v!r} does not match {tp}")
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"{where}: expected a list for {tp}, got {v!r}")
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, x, where) for x in v)
        if len(args) != len(v):
            raise TypeError(f"{where}: expected {len(args)} items, got {v!r}")
        return tuple(_coerce(a, x, where) for a, x in zip(args, v))
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise TypeError(f"{where}: expected a bool, got {v!r}")
    if tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise TypeError(f"{where}: expected an int, got {v!r}")
    if tp is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        raise TypeError(f"{where}: expected a number, got {v!r}")
    if tp is str:
        if isinstance(v, str):
            return v
        raise TypeError(f"{where}: expected a string, got {v!r}")
    raise TypeError(f"{where}: unsupported field type {tp}")


_PAPER = TrainConfig(preset="paper")  # the paper's N_S (arXiv 1711.01369, sections 1-2)
# Same family, sized for a 2-core CPU: 16 kHz, 64 mel (5 poolings leave 2 rows for F1),
# segments of 64 frames = 1.02 s with a 0.51 s hop; ~0.2 M parameters.
_CPU_SMALL = TrainConfig(
    preset="cpu-small",
    frontend=FrontEndConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=64),
    model=ModelConfig(channels=(8, 16, 32, 64, 128), convs_per_block=(1, 1, 1, 1, 1), f1_channels=128),
    loader=DataConfig(max_crop_s=5.0, batch_seconds=80.0, max_batch_clips=32, num_buckets=10,
                      shuffle_buffer=200, loader_workers=0, eval_batch_seconds=160.0),
    optim=OptimConfig(lr=1e-3),
    epochs=3,
)


def with_recipe(cfg: TrainConfig, name: str, *, warmup_steps: int, ema_decay: float) -> TrainConfig:
    """``cfg`` with the recipe beyond the paper: mild SpecAugment (two time bands of up to ~0.25 s, one
    mel band of up to 1/16 of the bins: a weak label must survive the masks, and wider masks hid whole
    narrow-band events in a 6-epoch comparison on the synthetic corpus), mixup alpha 0.5 (PANNs uses 1.0
    on AudioSet; milder suits small data), linear warm-up then cosine decay to 1 % of the peak,
    AdamW weight decay 0.01 (decoupled, so it does not fight Adam's per-weight scaling), an EMA of
    the weights (``ema_decay``: its horizon ~1/(1-decay) steps must be short next to the run) for
    evaluation and export, and class-balanced sampling."""
    frames_quarter_s = max(1, round(0.25 * cfg.frontend.sample_rate / cfg.frontend.hop_length))
    return dataclasses.replace(
        cfg, preset=name,
        augment=AugmentConfig(time_masks=2, time_width=frames_quarter_s, mel_masks=1,
                              mel_width=max(1, cfg.frontend.n_mels // 16), mixup_alpha=0.5),
        optim=dataclasses.replace(cfg.optim, schedule="cosine", warmup_steps=warmup_steps, min_lr_ratio=0.01,
                                  weight_decay=0.01, decoupled_weight_decay=True, ema_decay=ema_decay),
        loader=dataclasses.replace(cfg.loader, sampling="balanced"))


PRESETS: dict[str, TrainConfig] = {
    "paper": _PAPER,
    "cpu-small": _CPU_SMALL,
    "paper-plus": with_recipe(_PAPER, "paper-plus", warmup_steps=1000, ema_decay=0.999),
    "cpu-small-plus": with_recipe(_CPU_SMALL, "cpu-small-plus", warmup_steps=50, ema_decay=0.99),
}


def preset(name: str) -> TrainConfig:
    """The named preset; ``KeyError`` lists the available ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}") from None


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (values parsed as JSON, else taken as strings).

    Unknown keys and wrong types fail loudly, like nanoGPT's configurator but without ``exec``::

        apply_overrides(cfg, ["optim.lr=3e-4", "model.channels=[8,16,32,64,128]"])
    """
    import json

    d = dataclasses.asdict(cfg)
    for ov in overrides:
        key, sep, raw = ov.partition("=")
        if not sep:
            raise ValueError(f"override {ov!r} is not of the form key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = d
        *parents, leaf = key.strip().split(".")
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise KeyError(f"override {ov!r}: no config section {p!r}")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"override {ov!r}: unknown key {leaf!r}; known: {sorted(node)}")
        node[leaf] = value
    return TrainConfig.from_dict(d)
