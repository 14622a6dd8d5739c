"""Fault scoreboard: inject each kind of bad input into the real prep pipeline and report what happened.

For every fault, a small dataset of good clips plus that one fault goes through
``data_prep.pipeline.run_prep`` (in-process executor, real files in a temporary folder); then the
shards are read back through the manifest. One row per fault:

  injected   how many bad inputs of that kind
  survived   the job finished (or, for damaged output, refused to read it) instead of crashing
             or silently producing wrong data
  lost       good clips that did not reach the shards (must be 0)
  told       what the user was told: the reject reason in rejects.jsonl, or the error raised

    .venv/bin/python bench/faults.py [--good 6]
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test factories write the bad files

from data_prep.manifest import read_manifest  # noqa: E402
from data_prep.pipeline import run_prep  # noqa: E402
from data_prep.records import ClipRecord, LabelVocab, SourceListing  # noqa: E402
from data_prep.shards import ShardConfig, ShardError, iter_shard  # noqa: E402
from data_prep.sources import load_folder  # noqa: E402
from factories import (BAD_AUDIO, flac_bytes, make_folder_layout, sine, write_bad_audio,  # noqa: E402
                       write_gnu_sparse_tar, write_hostile_audio, write_tar, write_wav)
from runtime import storage  # noqa: E402

VOCAB = LabelVocab(ids=("tone",), names=("Tone",))
CFG = ShardConfig(sample_rate=16000, max_clips_per_shard=4)


def _good(folder: Path, n: int) -> list[ClipRecord]:
    out = []
    for i in range(n):
        path = write_wav(folder / f"good_{i}.wav", sine(300.0 + 40 * i, 0.6))
        out.append(ClipRecord(f"good_{i}", str(path), ("tone",), "train"))
    return out


def _stored_ids(out: str) -> set[str]:
    return {s.meta["clip_id"] for s in read_manifest(out).samples()}


def _rejects(out: str) -> list[dict]:
    return [json.loads(line) for line in Path(out, "rejects.jsonl").read_text().splitlines()]


def _one_bad_file(work: Path, good: int, name: str, write) -> tuple[bool, int, str]:
    """Prep ``good`` clips plus one file written by ``write(path)``; returns (survived, lost, told)."""
    records = _good(work / "audio", good)
    path = work / "audio" / name
    write(path)
    records.append(ClipRecord("bad", str(path), ("tone",), "train"))
    out = str(work / "out")
    summary = run_prep(SourceListing("faults", VOCAB, records, []), out, CFG, executor="local", progress=False)
    lost = good - len(_stored_ids(out) & {r.clip_id for r in records[:-1]})
    rejected = [r for r in _rejects(out) if r["clip_id"] == "bad"]
    if rejected:
        told = f"rejected: {rejected[0]['reason']} ({rejected[0]['detail']})"
    elif summary.truncated:
        told = f"kept, truncated to {CFG.limits.max_duration_s:g} s (counted in the summary)"
    else:
        told = "kept (valid audio)"
    return True, lost, told


def audio_faults(good: int):
    for kind in BAD_AUDIO:
        yield kind, lambda w, k=kind: _one_bad_file(w, good, f"{k}.wav", lambda p: write_bad_audio(p, k))
    yield "low rate (2 kHz)", lambda w: _one_bad_file(
        w, good, "low.wav", lambda p: write_wav(p, sine(300.0, 1.0, 2000), 2000))
    yield "unsupported codec", lambda w: _one_bad_file(
        w, good, "clip.xyz", lambda p: p.write_bytes(b"\x00\x00\x01\xba" + bytes(range(256)) * 8))
    for kind in ("huge_rate", "too_many_channels", "many_channels", "float_overflow"):
        ext = "flac" if kind == "many_channels" else "wav"
        yield kind.replace("_", " "), lambda w, k=kind, e=ext: _one_bad_file(
            w, good, f"{k}.{e}", lambda p: write_hostile_audio(p, k))
    yield "longer than max duration", lambda w: _one_bad_file(
        w, good, "long.wav", lambda p: write_wav(p, sine(300.0, CFG.limits.max_duration_s + 5.0)))


def listing_faults():
    """The folder source's CSV with each listing fault (its layout also has decode faults)."""
    def run(work: Path, reason: str):
        expected = make_folder_layout(work / "layout", n_clips=6, bad=True)
        listing = load_folder(**expected["load_kwargs"])
        out = str(work / "out")
        run_prep(listing, out, CFG, executor="local", progress=False)
        stored = {Path(s.meta["audio"]).relative_to(expected["root"]).as_posix() for s in read_manifest(out).samples()}
        lost = len(set(expected["good"]) - stored)
        told = [r for r in _rejects(out) if r["reason"] == reason]
        return True, lost, f"rejected: {reason} x{len(told)} ({told[0]['detail']})" if told else "NOT REPORTED"

    for reason in ("missing_audio", "unknown_label", "duplicate_id", "bad_csv_row"):
        yield reason.replace("_", " "), lambda w, r=reason: run(w, r)


def _refused(action) -> tuple[bool, str]:
    try:
        action()
    except (ShardError, ValueError, storage.LeaseHeld) as error:
        return True, f"{type(error).__name__}: {error}"
    return False, "NOT DETECTED"


def output_faults(good: int):
    def prepared(work: Path):
        listing = SourceListing("faults", VOCAB, _good(work / "audio", good), [])
        out = str(work / "out")
        run_prep(listing, out, CFG, executor="local", progress=False)
        return listing, out

    def shard_file(work: Path, make):
        path = make(work / "x.tar")
        survived, told = _refused(lambda: list(iter_shard(str(path))))
        return survived, 0, told

    yield "GNU sparse tar member", lambda w: shard_file(w, write_gnu_sparse_tar)
    yield "duplicate tar member", lambda w: shard_file(
        w, lambda p: write_tar(p, [("k.flac", flac_bytes()), ("k.json", b'{"labels": [0]}'), ("k.flac", flac_bytes())]))
    yield "negative label index", lambda w: shard_file(
        w, lambda p: write_tar(p, [("k.flac", flac_bytes()), ("k.json", b'{"labels": [-1]}')]))

    def manifest_escape(work: Path):
        _, out = prepared(work)
        doc = json.loads(Path(out, "manifest.json").read_text())
        doc["shards"][0]["name"] = "/etc/passwd"
        Path(out, "manifest.json").write_text(json.dumps(doc))
        survived, told = _refused(lambda: read_manifest(out))
        return survived, 0, told

    yield "manifest names /etc/passwd", manifest_escape

    def damaged(work: Path, how: str):
        listing, out = prepared(work)
        entry = read_manifest(out).shards[0]
        path = Path(out, entry.name)
        if how == "deleted":
            path.unlink()
        elif how == "truncated":
            with tarfile.open(path) as tar:
                cut = tar.getmembers()[-2].offset  # a member boundary: the tar still parses
            with open(path, "r+b") as f:
                f.truncate(cut)
        else:
            data = bytearray(path.read_bytes())
            data[600] ^= 0xFF
            path.write_bytes(bytes(data))
        if how == "deleted":  # the re-run of the same command must rebuild it
            summary = run_prep(listing, out, CFG, executor="local", progress=False)
            return True, good - len(_stored_ids(out)), f"rebuilt on resume ({summary.shard_tasks_resumed} tasks resumed)"
        survived, told = _refused(lambda: list(read_manifest(out).samples()))
        run_prep(listing, out, CFG, executor="local", progress=False)  # and the re-run repairs it
        return survived, good - len(_stored_ids(out)), told + "; rebuilt on resume"

    for how in ("deleted", "truncated", "changed"):
        yield f"shard part {how}", lambda w, h=how: damaged(w, h)

    def second_writer(work: Path):
        listing = SourceListing("faults", VOCAB, _good(work / "audio", good), [])
        out = str(work / "out")
        lease = storage.acquire_lease(out, "first-run")
        try:
            survived, told = _refused(lambda: run_prep(listing, out, CFG, executor="local", progress=False))
        finally:
            lease.release()
        run_prep(listing, out, CFG, executor="local", progress=False)
        return survived, good - len(_stored_ids(out)), told

    yield "second prep into one --out", second_writer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=6, help="good clips next to each fault (default: %(default)s)")
    args = parser.parse_args(argv)
    rows = []
    faults = [*audio_faults(args.good), *listing_faults(), *output_faults(args.good)]
    for name, run in faults:
        with tempfile.TemporaryDirectory(prefix="weaksound-faults-") as tmp:
            try:
                survived, lost, told = run(Path(tmp))
            except Exception as error:  # a crash is a result too
                survived, lost, told = False, -1, f"CRASH {type(error).__name__}: {str(error)[:80]}"
                traceback.print_exc(file=sys.stderr)
        told = told.replace(f"{tmp}/", "").replace(tmp, "")  # paths relative to the scratch folder
        rows.append((name, 1, "yes" if survived else "NO", lost, told if len(told) <= 120 else told[:117] + "..."))
        print(f"  {name}: {'ok' if survived and lost == 0 else 'FAILED'}", file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"| {'fault':<{width}} | injected | survived | clips lost | what the user was told |")
    print(f"|{'-' * (width + 2)}|----------|----------|------------|------------------------|")
    for name, injected, survived, lost, told in rows:
        print(f"| {name:<{width}} | {injected:>8} | {survived:>8} | {lost:>10} | {told} |")
    bad = [r for r in rows if r[2] != "yes" or r[3] != 0]
    print(f"\n{len(rows)} faults, {len(rows) - len(bad)} survived with no good clip lost")
    return 1 if bad else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
