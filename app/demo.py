"""`weaksound demo`: the main job end to end on the embedded synthetic corpus.

Stages (each prints a progress bar; each resumes if re-run with the same --out):
  1. prep      generate the synthetic corpus and write shards + manifests to the object store
               (--store, a local folder by default; s3://bucket/prefix works the same)
  2. train     Ray Train, 2 DDP workers, preset cpu-small, on the weakly labelled source corpus
  3. embed     Ray actors extract F1/F2 embeddings of the two target tasks
  4. transfer  linear SVMs on every feature set + MFCC baseline (events: 5 folds, scenes: 4 folds),
               semantic relations, one adaptation variant (N_T^I) on the events task: one Ray Train
               run fits it once per test fold
  5. report    <out>/report/report.md and report.html with every plot

Each stage is its typed run (``run_prep_job``, ``trainer.main.run``, ``run_embed``,
``run_transfer``) on a config built here; the command line each config stands for is printed and
kept in the report, so every stage can be repeated on its own. Pointing a stage at real data
instead (see the README for the full commands):
  prep:      weaksound prep audioset --root CSV_DIR --split balanced_train --audio CLIPS --out s3://b/as
             weaksound prep esc50 --root ESC-50-master --out s3://b/esc50
  train:     weaksound train --data s3://b/as --eval-data s3://b/as-eval --out s3://b/runs --name as-r1
  embed:     weaksound embed --model s3://b/runs/as-r1/model --data s3://b/esc50 --out s3://b/emb/esc50
  transfer:  weaksound transfer events --embeddings s3://b/emb/esc50 --out results/esc50
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

from app.quiet import native_stderr_to, ray_logs_to
from data_prep.job import PrepConfig, changed_options, run_prep_job
from data_prep.shards import ShardConfig
from data_prep.sources import SOURCES, SYNTHETIC_TASKS
from inference.config import EmbedConfig
from inference.detect import DetectConfig, run_detect
from runtime import storage
from trainer.config import TrainConfig, preset
from transfer.job import AdaptOptions, TransferConfig

__all__ = ["DemoConfig", "DemoSummary", "StagePlan", "plan_demo", "run_demo", "train_command"]

TARGET_TASKS = ("events", "scenes")
CLIPS_PER_SHARD = 100  # a few shards per synthetic task, so prep and embedding run in parallel


@dataclass(frozen=True)
class DemoConfig:
    """Attributes mirror `weaksound demo --help`."""

    out: str = "runs/demo"  # local folder for results and the report
    store: str | None = None  # object-store URL for shards, checkpoints, embeddings; None = OUT/store
    preset: str = "cpu-small"  # training preset; "paper" is the paper's N_S
    epochs: int = 6
    workers: int = 2  # Ray Train DDP workers of the train stage
    source_clips: int | None = None  # clips of the synthetic source corpus; None = its built-in size
    adapt_variants: tuple[str, ...] = ("I",)  # adaptation variants on the events task; () = none
    seed: int = 0  # corpus and training seed
    address: str | None = None  # Ray cluster; None = $RAY_ADDRESS, else a local Ray

    def argv(self) -> list[str]:
        d = DemoConfig()
        return changed_options([
            ("--out", self.out, d.out), ("--store", self.store, d.store), ("--preset", self.preset, d.preset),
            ("--epochs", self.epochs, d.epochs), ("--workers", self.workers, d.workers),
            ("--source-clips", self.source_clips, d.source_clips),
            ("--adapt-variants", ",".join(self.adapt_variants) or "none", ",".join(d.adapt_variants)),
            ("--seed", self.seed, d.seed), ("--address", self.address, d.address)])


@dataclass(frozen=True)
class StagePlan:
    """The config of every stage run, derived from a ``DemoConfig`` before anything runs."""

    prep: tuple[PrepConfig, ...]
    train: TrainConfig
    embed: tuple[EmbedConfig, ...]
    transfer: tuple[TransferConfig, ...]
    model_url: str  # where the train stage exports the model the embed stage reads

    def commands(self) -> list[str]:
        """The stage-by-stage command lines, in run order."""
        return ([c.command() for c in self.prep] + [train_command(self.train, address=self.prep[0].address)]
                + [c.command() for c in self.embed] + [c.command() for c in self.transfer])


@dataclass
class DemoSummary:
    report_md: str
    report_html: str
    stage_seconds: dict[str, float] = field(default_factory=dict)


_TRAIN_FLAGS = (("--data", "data"), ("--eval-data", "eval_data"), ("--out", "out"), ("--name", "name"),
                ("--workers", "workers"), ("--epochs", "epochs"), ("--cpus-per-worker", "cpus_per_worker"),
                ("--seed", "seed"), ("--keep-last", "keep_last_k"), ("--max-failures", "max_failures"))


def train_command(cfg: TrainConfig, *, address: str | None = None) -> str:
    """`weaksound train ...` for a config that differs from its preset in top-level fields only."""
    base = preset(cfg.preset)
    nested = [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))
              and getattr(cfg, f.name) != getattr(base, f.name)]
    if nested:
        raise ValueError(f"train_command renders top-level fields only; {nested} differ from preset {cfg.preset!r}")
    argv = ["weaksound", "train", "--preset", cfg.preset]
    argv += changed_options([(flag, getattr(cfg, name), getattr(base, name)) for flag, name in _TRAIN_FLAGS])
    argv += ["--use-gpu"] if cfg.use_gpu and not base.use_gpu else []
    argv += ["--address", address] if address else []
    return shlex.join(argv)


def plan_demo(cfg: DemoConfig) -> StagePlan:
    """Every stage's config: where each stage reads and writes, and with which settings."""
    out = os.path.abspath(cfg.out)
    store = cfg.store or os.path.join(out, "store")
    train_base = preset(cfg.preset)
    rate = train_base.frontend.sample_rate
    data = {task: storage.join(store, "data", task) for task in SYNTHETIC_TASKS}
    shard = ShardConfig(sample_rate=rate, max_clips_per_shard=CLIPS_PER_SHARD)
    prep = tuple(PrepConfig(SOURCES["synthetic"](task=task, seed=cfg.seed,
                                                 num_clips=cfg.source_clips if task == "source" else None),
                            out=url, shard=shard, address=cfg.address) for task, url in data.items())
    train = dataclasses.replace(train_base, data=data["source"], eval_data=data["source"],
                                out=storage.join(store, "runs"), name="demo", workers=cfg.workers,
                                epochs=cfg.epochs, seed=cfg.seed)
    model_url = storage.join(store, "runs", "demo", "model")
    emb = {task: storage.join(store, "embeddings", task) for task in TARGET_TASKS}
    embed = tuple(EmbedConfig(model=model_url, data=data[task], out=emb[task], address=cfg.address)
                  for task in TARGET_TASKS)
    transfer = [TransferConfig("all", os.path.join(out, "transfer"), events=emb["events"], scenes=emb["scenes"],
                               address=cfg.address)]
    if cfg.adapt_variants:  # one adapted network family on the events task
        # One Ray Train worker: two DDP ranks of 8 clips each (BatchNorm statistics over 8 clips; no
        # SyncBatchNorm on CPU) trained worse networks on the demo data, and lost to one worker
        # when other jobs shared the cores (bench/adapt_folds.py).
        transfer.append(TransferConfig("adapt", os.path.join(out, "transfer-adapt"), embeddings=emb["events"],
                                       adapt=AdaptOptions(variants=cfg.adapt_variants), address=cfg.address))
    return StagePlan(prep=prep, train=train, embed=embed, transfer=tuple(transfer), model_url=model_url)


def _stage(n: int, name: str, text: str) -> None:
    print(f"\n=== [{n}/5] {name}: {text}", flush=True)


def _print_command(command: str) -> None:
    print(f"[demo] the same, on its own: {command}", flush=True)


def run_demo(cfg: DemoConfig) -> DemoSummary:
    """Run every stage of ``plan_demo(cfg)`` and write the report; returns where it is.

    The terminal shows one line per event of ours and the progress bars; Ray's own output (its
    workers' lines, native warnings, the driver's Ray log records) goes to ``<out>/logs/ray-native.log``
    and Ray's session logs, which the last line names.
    """
    out = os.path.abspath(cfg.out)
    native_log = os.path.join(out, "logs", "ray-native.log")
    with ray_logs_to(native_log), native_stderr_to(native_log):
        summary = _run_stages(cfg)
    print(f"[demo] Ray's own messages: {native_log} and {_ray_logs_dir()}")
    return summary


def _ray_logs_dir() -> str:
    try:  # Ray has no public accessor for its session's log folder
        import ray._private.worker as ray_worker

        return ray_worker._global_node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - only for the message
        return "Ray's session folder (ray/session_latest/logs under the temp dir)"


def _print_epochs(run_dir: str) -> None:
    """One line per trained epoch, from the run's metrics.json (the workers' own lines stay in Ray's logs)."""
    import json

    doc = json.loads(storage.read_text(storage.join(run_dir, "metrics.json")))
    for h in doc.get("epochs", []):
        scores = ", ".join(f"{k} {h[k]:.4f}" for k in ("val_mAP", "eval_mAP", "eval_auc")
                           if isinstance(h.get(k), (int, float)))
        print(f"[train] epoch {h['epoch'] + 1}: loss {h['train_loss']:.4f}" + (f", {scores}" if scores else "")
              + f", {h.get('clips_per_s', 0):.0f} clips/s")


DETECT_CLIPS = 40  # held-out source clips scored for sound-event detection against the prep's reference sidecar


def detection_inputs(data_url: str, out_dir: str, limit: int = DETECT_CLIPS) -> tuple[list[str], str]:
    """The first ``limit`` eval clips of a synthetic dataset as WAV files under ``out_dir`` and the
    matching rows of its ``reference_events.tsv`` (filenames ``<clip id>.wav``); returns (files, tsv)."""
    import csv
    import io

    import soundfile as sf

    from data_prep.job import REFERENCE_EVENTS
    from data_prep.manifest import read_manifest

    manifest = read_manifest(data_url)
    os.makedirs(out_dir, exist_ok=True)
    files: list[str] = []
    for entry in manifest.shards_of("eval"):
        for sample in manifest.read_shard(entry):
            if len(files) >= limit:
                break
            path = os.path.join(out_dir, f"{sample.meta['clip_id']}.wav")
            sf.write(path, sample.audio, manifest.sample_rate, subtype="PCM_16")
            files.append(path)
    wanted = {os.path.splitext(os.path.basename(f))[0] for f in files}
    rows = csv.reader(io.StringIO(storage.read_text(storage.join(data_url, REFERENCE_EVENTS))), delimiter="\t")
    header = next(rows)
    kept = ["\t".join(header)] + ["\t".join([f"{r[0]}.wav", *r[1:]]) for r in rows if r and r[0] in wanted]
    reference = os.path.join(out_dir, "reference.tsv")
    storage.write_text_atomic(reference, "\n".join(kept) + "\n")
    return files, reference


def detection_notes(summary) -> list[str]:
    """The report's detection section: event- and segment-based scores next to the tagging results."""
    m = summary.metrics or {}
    eb, sb = m.get("event_based", {}), m.get("segment_based", {})

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}"

    return ["## Sound-event detection (held-out source clips)", "",
            f"`weaksound detect` on {summary.files} eval clips of the source corpus ({summary.events} events found), "
            "scored with sed_eval against where the corpus placed each event (`reference_events.tsv`, written by "
            "prep; never a training label). Threshold 0.5, median filter over 3 segments.", "",
            "| evaluation | F1 | precision | recall | error rate |", "|---|---:|---:|---:|---:|",
            f"| event-based (0.2 s collar) | {pct(eb.get('f_measure'))} | {pct(eb.get('precision'))} | "
            f"{pct(eb.get('recall'))} | {eb.get('error_rate', float('nan')):.2f} |",
            f"| segment-based (1 s grid) | {pct(sb.get('f_measure'))} | {pct(sb.get('precision'))} | "
            f"{pct(sb.get('recall'))} | {sb.get('error_rate', float('nan')):.2f} |", ""]


def _run_stages(cfg: DemoConfig) -> DemoSummary:
    from app.report import ReportInputs, build_report
    from inference.embed import run_embed
    from runtime.ray_cluster import ensure_ray
    from trainer import main as train_main
    from transfer.job import run_transfer

    plan = plan_demo(cfg)
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    # Ray Train reads its health-check period only from the environment (no API argument), and
    # its controller inherits it when Ray starts here: 0.5 s instead of Ray's default for short epochs.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    ensure_ray(cfg.address, log_to_driver=False)

    _stage(1, "prep", f"synthetic corpus -> WebDataset shards at {plan.train.frontend.sample_rate} Hz "
                      f"under {os.path.dirname(plan.prep[0].out)}")
    t0 = time.perf_counter()
    for prep in plan.prep:
        _print_command(prep.command())
        for summary in run_prep_job(prep).datasets:
            for line in summary.lines():
                print(f"[prep] {line}")
    seconds["prep"] = time.perf_counter() - t0

    _stage(2, "train", f"Ray Train DDP, {cfg.workers} workers, preset {cfg.preset}, {cfg.epochs} epochs")
    t0 = time.perf_counter()
    _print_command(train_command(plan.train, address=cfg.address))
    train_summary = train_main.run(plan.train, address=cfg.address)
    _print_epochs(train_summary["run_dir"])
    if train_summary["export"].rstrip("/") != plan.model_url.rstrip("/"):
        raise RuntimeError(f"the model was exported to {train_summary['export']}, not {plan.model_url}")
    seconds["train"] = time.perf_counter() - t0

    _stage(3, "embed", "F1/F2 segment embeddings with Ray actors; sound-event detection on held-out clips")
    t0 = time.perf_counter()
    for embed in plan.embed:
        _print_command(embed.command())
        print(f"[embed] {embed.out}: {run_embed(embed).line()}")
    files, reference = detection_inputs(plan.train.data, os.path.join(out, "detect", "audio"))
    detect = DetectConfig(model=plan.model_url, files=tuple(files), out=os.path.join(out, "detect"),
                          reference=reference)
    _print_command(detect.command())
    detection = run_detect(detect)
    print(f"[detect] {detection.line()}")
    seconds["embed"] = time.perf_counter() - t0

    _stage(4, "transfer", "SVMs on every feature set + MFCC baseline, semantic relations, adaptation")
    t0 = time.perf_counter()
    for transfer in plan.transfer:
        _print_command(transfer.command())
        summary = run_transfer(transfer)
        print(f"[transfer] {len(summary.files)} files in {summary.out} after {summary.seconds:.1f} s")
    seconds["transfer"] = time.perf_counter() - t0

    _stage(5, "report", f"{out}/report")
    t0 = time.perf_counter()
    sections = {"Transfer: events (ESC-50-like, 5 folds) and scenes (DCASE-2016-like, 4 folds)": plan.transfer[0].out}
    for extra in plan.transfer[1:]:
        sections[f"Network adaptation N_T^{','.join(extra.adapt.variants)} on the events task"] = extra.out
    md, html_path = build_report(ReportInputs(
        title="weaksound demo report", run_dir=storage.join(plan.train.out, plan.train.name),
        transfer_dirs=sections,
        commands=[shlex.join(["scripts/demo.sh", *cfg.argv()]), "# or stage by stage:", *plan.commands()],
        config=dataclasses.asdict(plan.train), stage_seconds=seconds | {"report": time.perf_counter() - t0},
        notes=[f"Synthetic corpus (seed {cfg.seed}), preset `{cfg.preset}`, {cfg.workers} DDP workers, "
               f"{cfg.epochs} epochs. Every number below was measured by this run."],
        sections=detection_notes(detection)), os.path.join(out, "report"))
    print(f"\n[demo] done in {time.perf_counter() - started:.0f} s; report: {md} (HTML: {html_path})")
    return DemoSummary(md, html_path, seconds)


def _variants(text: str) -> tuple[str, ...]:
    return () if text.strip().lower() == "none" else tuple(v.strip() for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="weaksound demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=d.out, help="local folder for results and the report (default: %(default)s)")
    p.add_argument("--store", default=d.store,
                   help="object-store URL for shards, checkpoints and embeddings (default: OUT/store; s3:// works)")
    p.add_argument("--preset", default=d.preset, help="training preset; 'paper' is the paper's N_S "
                                                      "(default: %(default)s, sized for a 2-core CPU)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="Ray Train DDP workers of the train stage (default: %(default)s)")
    p.add_argument("--source-clips", type=int, default=d.source_clips,
                   help="clips in the synthetic source corpus (default: the corpus' built-in size)")
    p.add_argument("--adapt-variants", type=_variants, default=",".join(d.adapt_variants),
                   help="network adaptation variants to run on the events task, e.g. I,II,III; "
                        "'none' skips adaptation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="corpus and training seed (default: %(default)s)")
    p.add_argument("--address", default=d.address,
                   help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(out=args.out, store=args.store, preset=args.preset, epochs=args.epochs, workers=args.workers,
                      source_clips=args.source_clips, adapt_variants=args.adapt_variants, seed=args.seed,
                      address=args.address)


def main(argv: list[str] | None = None) -> int:
    try:
        run_demo(config_from_args(build_parser().parse_args(argv)))
    except (ValueError, FileNotFoundError) as e:
        print(f"[demo] error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
