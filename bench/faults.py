"""Fault scoreboard: inject each kind of bad input into the real prep pipeline and report what happened.

For every fault, a small dataset of good clips plus that one fault goes through
``data_prep.pipeline.run_prep`` (in-process executor, real files in a temporary folder); then the
shards are read back through the manifest. One row per fault:

  injected   how many bad inputs of that kind
  survived   the job finished (or, for damaged output, refused to read it) instead of crashing
             or silently producing wrong data
  lost       good clips that did not reach the shards (must be 0)
  told       what the user was told: the reject reason in rejects.jsonl, or the error raised

Process faults (``--processes``, default on) run the real ``python -m data_prep.cli folder`` in
subprocesses over ``--clips`` good clips: two preps racing for one ``--out``; a moto S3 server paused
(SIGSTOP, requests hang) and resumed mid-prep; moto killed mid-prep, restarted, the prep re-run; the
prep driver SIGKILLed at ``--kills`` random points (after a random number of finished shard tasks),
each followed by a re-run whose output must be byte-identical to an uninterrupted run.

    .venv/bin/python bench/faults.py [--good 6] [--clips 30] [--kills 3] [--seed 0] [--no-processes]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import re
import time
import tarfile
import tempfile
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from data_prep.manifest import read_manifest  # noqa: E402
from data_prep.pipeline import run_prep  # noqa: E402
from data_prep.records import ClipRecord, LabelVocab, SourceListing  # noqa: E402
from data_prep.shards import ShardConfig, ShardError, iter_shard  # noqa: E402
from data_prep.sources import load_folder  # noqa: E402


def _test_helpers(name: str):
    """The test suite's file factories (tests/<name>.py), loaded by path: the faults are the tests' own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tree_bytes = _test_helpers("audio_fixtures").tree_bytes
_factories = _test_helpers("factories")
(BAD_AUDIO, MotoServer, flac_bytes, make_folder_layout, prep_command, prep_env, race_commands, sine,
 stored_clip_ids, stored_clip_ids_via, write_bad_audio, write_folder_dataset, write_gnu_sparse_tar,
 write_hostile_audio, write_tar, write_wav) = (getattr(_factories, n) for n in (
    "BAD_AUDIO", "MotoServer", "flac_bytes", "make_folder_layout", "prep_command", "prep_env", "race_commands",
    "sine", "stored_clip_ids", "stored_clip_ids_via", "write_bad_audio", "write_folder_dataset",
    "write_gnu_sparse_tar", "write_hostile_audio", "write_tar", "write_wav"))
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
    try:
        summary = run_prep(SourceListing("faults", VOCAB, records, []), out, CFG, executor="local", progress=False)
    except Exception as error:  # one bad file must never fail the job: every good clip is lost with it
        return False, good, f"the whole prep failed: {type(error).__name__}: {str(error)[:100]}"
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
    def damaged_frame(path: Path) -> None:  # the header intact, the first audio frame zeroed
        data = bytearray(flac_bytes(sine(440.0, 1.0)))
        data[200:260] = bytes(60)
        path.write_bytes(bytes(data))

    yield "FLAC with a damaged frame", lambda w: _one_bad_file(w, good, "damaged.flac", damaged_frame)
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

    def too_long_path(work: Path):
        write_wav(work / "a.wav", sine(300.0, 0.6))
        (work / "labels.csv").write_text(f"path,labels\n{'x' * 300}.wav,tone\na.wav,tone\n")
        try:
            listing = load_folder(work, work / "labels.csv")
        except Exception as error:  # one row must never fail the listing
            return False, 1, f"the whole listing failed: {type(error).__name__}: {error}"
        out = str(work / "out")
        run_prep(listing, out, CFG, executor="local", progress=False)
        told = [r for r in _rejects(out) if r["clip_id"] != "a.wav"]
        return True, 1 - len(_stored_ids(out)), f"rejected: {told[0]['reason']}" if told else "NOT REPORTED"

    yield "path longer than 255 bytes", too_long_path


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
    def damaged_header(p: Path) -> Path:  # a flipped byte in the first member's header: bad checksum
        write_tar(p, [("k.flac", flac_bytes()), ("k.json", b'{"labels": [0]}')])
        data = bytearray(p.read_bytes())
        data[100] ^= 0xFF
        p.write_bytes(bytes(data))
        return p

    yield "tar header checksum damaged", lambda w: shard_file(w, damaged_header)
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


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing)"


def _wait_for_indexes(count, proc: subprocess.Popen, at_least: int, timeout_s: float = 300) -> int:
    deadline = time.time() + timeout_s
    while (done := count()) < at_least:
        if proc.poll() is not None:
            raise RuntimeError(f"the prep ended (exit {proc.returncode}) before {at_least} shard tasks were done")
        if time.time() > deadline:
            raise RuntimeError("no shard index appeared")
        time.sleep(0.02)
    return done


def process_faults(clips: int, kills: int, seed: int):
    """Real prep processes (local executor) over ``clips`` good clips; each run returns
    (injected, survived, lost, told)."""

    def dataset(work: Path):
        csv_path = write_folder_dataset(work / "data", clips)
        reference = str(work / "reference")
        subprocess.run(prep_command(csv_path, reference), env=prep_env(), cwd=ROOT, check=True, capture_output=True)
        return csv_path, reference

    def race(work: Path):
        csv_path, reference = dataset(work)
        out = str(work / "out")
        results = race_commands([prep_command(csv_path, out)] * 2, work / "start", prep_env())
        codes = sorted(r.returncode for r in results)
        loser = [r for r in results if r.returncode] or [results[1]]
        survived = codes == [0, 1] and "is in use by run" in loser[0].stderr and tree_bytes(out) == tree_bytes(reference)
        return 2, survived, clips - len(set(stored_clip_ids(out))), f"loser exit {loser[0].returncode}: " + \
            _last_line(loser[0].stderr)

    yield "two preps racing for one --out", race

    def s3_outage(work: Path, kill: bool):
        csv_path, reference = dataset(work)
        with MotoServer() as moto:
            moto.client().create_bucket(Bucket="faults")
            url, cmd = "s3://faults/out", prep_command(csv_path, "s3://faults/out")
            proc = subprocess.Popen(cmd, env=moto.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            _wait_for_indexes(lambda: sum(k.endswith(".index.json") for k in moto.keys("faults", "out/shards/")),
                              proc, 1)
            if kill:
                moto.kill()
            else:
                moto.pause()
                time.sleep(3)
                moto.resume()
            _, err = proc.communicate(timeout=900)
            first_rc = proc.returncode
            if kill:
                moto.start()  # moto keeps no state across a restart: the bucket comes back empty
                moto.client().create_bucket(Bucket="faults")
                rerun = subprocess.run(cmd, env=moto.env(), cwd=ROOT, capture_output=True, text=True, timeout=900)
                survived = first_rc != 0 and f"127.0.0.1:{moto.port}" in err and rerun.returncode == 0
                told = f"exit {first_rc}, {len(err.splitlines())}-line traceback ending: {_last_line(err)[:150]}; " \
                       "re-run after restart: exit " + str(rerun.returncode)
            else:
                survived = first_rc == 0
                told = "nothing: requests waited for the server, the prep finished" if first_rc == 0 else \
                    f"exit {first_rc}: {_last_line(err)}"
            ids = stored_clip_ids_via(moto.env(), url)
        expected = set(stored_clip_ids(reference))
        survived = survived and len(ids) == len(set(ids)) == len(expected)
        return 1, survived, len(expected - set(ids)), told

    yield "S3 server paused 3 s mid-prep (SIGSTOP/CONT)", lambda w: s3_outage(w, kill=False)
    yield "S3 server killed mid-prep, restarted, re-run", lambda w: s3_outage(w, kill=True)

    def driver_killed(work: Path):
        csv_path, reference = dataset(work)
        tasks = -(-clips // 2)
        rng = random.Random(seed)
        points = sorted(rng.sample(range(1, tasks), min(kills, tasks - 1)))
        survived, lost, told = True, 0, []
        for i, point in enumerate(points):
            out = work / f"out{i}"
            proc = subprocess.Popen(prep_command(csv_path, str(out)), env=prep_env(), cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done = _wait_for_indexes(lambda: len(list(out.glob("shards/*.index.json"))), proc, point)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            rerun = subprocess.run(prep_command(csv_path, str(out)), env=prep_env(), cwd=ROOT, capture_output=True,
                                   text=True)
            got, want = tree_bytes(str(out)) if rerun.returncode == 0 else {}, tree_bytes(reference)
            same = rerun.returncode == 0 and got == want
            survived = survived and same
            extra = sorted(set(got) - set(want))
            changed = sorted(k for k in want if got.get(k) != want[k])
            lost = max(lost, clips - len(set(stored_clip_ids(str(out)))) if rerun.returncode == 0 else clips)
            resumed = next((line.split("; ")[-1] for line in rerun.stdout.splitlines() if "resumed" in line), "")
            diff = "; ".join(([f"left behind: {', '.join(extra)}"] if extra else [])
                             + ([f"differs: {', '.join(changed)}"] if changed else []))
            told.append(f"killed after {done}/{tasks} tasks: re-run {'byte-identical' if same else diff or 'FAILED'}"
                        + (f" ({resumed.split(' shard')[0]} resumed)" if resumed else ""))
        return len(points), survived, lost, "; ".join(told)

    yield f"prep driver SIGKILLed at {kills} random points", driver_killed


def training_faults(epochs: int = 3):
    """A Ray Train worker SIGKILLed mid-epoch, and the S3 server holding the checkpoints paused mid-training:
    the run must finish every epoch once, with every training clip in every epoch."""
    import json
    import os
    import signal
    import threading

    make_tone_dataset = _test_helpers("test_trainer_data").make_tone_dataset

    def train(tmp: Path, out: str, name: str, on_rank1) -> tuple[int, dict, str]:
        """Run `weaksound train` in this process; ``on_rank1(progress)`` is polled with rank 1's progress."""
        import io
        from contextlib import redirect_stdout

        import ray

        from trainer.main import main as train_main

        data = make_tone_dataset(tmp / "wav", str(tmp / "shards"), n_train=96, n_eval=24, clips_per_shard=20)
        done = threading.Event()

        def watch():
            while not done.wait(0.1):
                if not ray.is_initialized():  # the trainer connects first; ray.get_actor here would init Ray
                    continue
                try:
                    ranks = ray.get(ray.get_actor(f"weaksound-progress-{name}").get.remote(), timeout=5)
                except Exception:  # noqa: BLE001 - the actor comes and goes with the run
                    continue
                if ranks.get(1) and on_rank1(ranks[1]):
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        printed = io.StringIO()
        try:
            with redirect_stdout(printed):
                rc = train_main(["--data", data, "--out", out, "--name", name, "--preset", "cpu-small",
                                 "--workers", "2", "--epochs", str(epochs), "--no-progress", "--max-failures", "2",
                                 "--set", "loader.max_crop_s=2.0", "--set", "loader.batch_seconds=16"])
        finally:
            done.set()
            watcher.join(timeout=5)
            if ray.is_initialized():
                ray.shutdown()
        metrics = json.loads(storage.read_text(storage.join(out, name, "metrics.json")))
        return rc, metrics, printed.getvalue()

    def judge(rc: int, metrics: dict, n_train: int = 96) -> tuple[bool, int]:
        history = metrics["epochs"]
        once = [h["epoch"] for h in history] == list(range(epochs))
        lost = sum(max(0, n_train - int(h["train_clips"])) for h in history) + n_train * (epochs - len(history))
        return rc == 0 and once, lost

    def worker_killed(tmp: Path):
        killed: dict = {}

        def kill(r1: dict) -> bool:
            if r1["epoch"] == 1 and r1["step_in_epoch"] >= max(1, r1["steps_per_epoch"] // 3):
                os.kill(r1["pid"], signal.SIGKILL)
                killed.update(r1)
                return True
            return False

        rc, metrics, printed = train(tmp, str(tmp / "runs"), "killed", kill)
        survived, lost = judge(rc, metrics)
        restarts = [h["start"] for h in metrics["epochs"]]
        resumed = [re.sub(r"\x1b\[[0-9;]*m|\(RayTrainWorker pid=\d+\)\s*", "", line).strip()
                   for line in printed.splitlines() if "resumed" in line]
        told = (f"worker pid {killed.get('pid')} killed at step {killed.get('step_in_epoch')} of epoch 2; "
                f"the run restarted from the last checkpoint (starts per epoch {restarts}); "
                + (resumed[0] if resumed else "exit 0")) if killed else "the worker was never killed (run too fast)"
        return 1 if killed else 0, survived and bool(killed), lost, told

    def s3_paused(tmp: Path):
        moto = MotoServer().start()
        saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                "AWS_DEFAULT_REGION")}
        paused: dict = {}
        try:
            os.environ.update(AWS_ENDPOINT_URL=moto.endpoint, AWS_ACCESS_KEY_ID="testing",
                              AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
            moto.client().create_bucket(Bucket="faults")

            def pause(r1: dict) -> bool:
                if r1["epoch"] == 1 and r1["step_in_epoch"] >= 1:
                    moto.pause()
                    paused["at"] = r1["step_in_epoch"]
                    threading.Timer(3.0, moto.resume).start()
                    return True
                return False

            rc, metrics, _ = train(tmp, "s3://faults/runs", "s3paused", pause)
            survived, lost = judge(rc, metrics)
            told = (f"nothing: S3 paused 3 s in epoch 2 (step {paused.get('at')}); requests waited, "
                    f"every epoch finished once, checkpoints in S3") if paused else "S3 was never paused (run too fast)"
            return 1 if paused else 0, survived and bool(paused), lost, told
        finally:
            moto.resume()
            moto.kill()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    yield "training worker SIGKILLed mid-epoch", worker_killed
    yield "S3 server paused 3 s mid-training (SIGSTOP/CONT)", s3_paused


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=6, help="good clips next to each fault (default: %(default)s)")
    parser.add_argument("--clips", type=int, default=30,
                        help="good clips in each process-fault prep, 2 per shard task (default: %(default)s)")
    parser.add_argument("--kills", type=int, default=3, help="random points the prep driver is killed at "
                                                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points (default: %(default)s)")
    parser.add_argument("--no-processes", dest="processes", action="store_false",
                        help="only the bad-input faults, no subprocesses or S3 server (default: all faults)")
    parser.add_argument("--no-training", dest="training", action="store_false",
                        help="skip the two Ray Train faults, about a minute each (default: all faults)")
    args = parser.parse_args(argv)
    rows = []
    faults = [*audio_faults(args.good), *listing_faults(), *output_faults(args.good)]
    if args.processes:
        faults += list(process_faults(args.clips, args.kills, args.seed))
    if args.training:
        faults += list(training_faults())
    for name, run in faults:
        with tempfile.TemporaryDirectory(prefix="weaksound-faults-") as tmp:
            try:
                result = run(Path(tmp))
                injected, (survived, lost, told) = (1, result) if len(result) == 3 else (result[0], result[1:])
            except Exception as error:  # a crash is a result too
                injected, survived, lost, told = 1, False, -1, f"CRASH {type(error).__name__}: {str(error)[:100]}"
                traceback.print_exc(file=sys.stderr)
        told = told.replace(f"{tmp}/", "").replace(tmp, "").replace("|", "\\|")  # relative paths; Markdown cells
        rows.append((name, injected, "yes" if survived else "NO", lost,
                     told if len(told) <= 240 else told[:237] + "..."))
        print(f"  {name}: {'ok' if survived and lost == 0 else 'FAILED'}", file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"| {'fault':<{width}} | injected | survived | clips lost | what the user was told |")
    print(f"|{'-' * (width + 2)}|----------|----------|------------|------------------------|")
    for name, injected, survived, lost, told in rows:
        print(f"| {name:<{width}} | {injected:>8} | {survived:>8} | {lost if lost >= 0 else '?':>10} | {told} |")
    bad = [r for r in rows if r[2] != "yes" or r[3] != 0]
    print(f"\n{len(rows)} faults, {len(rows) - len(bad)} survived with no good clip lost")
    return 1 if bad else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
