"""Factories for test data: tiny audio written in code and fixture layouts of every real source.

Nothing binary is checked in: each ``make_<source>_layout(root, ...)`` writes a small dataset in
the source's real layout under ``root`` (a pytest ``tmp_path``) and returns a dict saying what a
correct reader must make of it::

    {
      "root": str,                      # the layout's root folder
      "load_kwargs": {...},             # call load_<source>(**load_kwargs)
      "vocab": (label ids, in order),   # the expected LabelVocab.ids
      "records": {clip_id: {"labels": (...), "split": str, "fold": int|None, "source_id": str|None}},
                                        # every record the listing must return (good + bad audio)
      "good": [clip_id, ...],           # records whose audio is fine: all must end up in the shards
      "listing_rejects": [(clip_id|None, reason), ...],   # rejects the source itself reports
      "decode_rejects": [(clip_id, reason), ...],         # listed records the decoder must reject
      "rejects_by_reason": {reason: count},               # listing + decode rejects together
    }

With ``bad=True`` each layout also holds one of each kind of bad input: files that fail at decode
time (``BAD_AUDIO``: corrupt bytes, 0-byte file, digital silence, NaN samples, 0.05 s long) and
rows that fail in the listing (missing audio, duplicate id, unparseable row, and an unknown label
where the layout has a fixed vocabulary). All audio is 16 kHz unless told otherwise.
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

from data_prep.records import ClipRecord

__all__ = ["BAD_AUDIO", "HOSTILE_AUDIO", "MotoServer", "SAMPLE_RATE", "make_audioset_layout", "make_clip_record", "make_dcase2016_layout",
           "make_esc50_layout", "make_folder_layout", "noise", "sine", "write_bad_audio", "write_hostile_audio",
           "prep_command", "prep_env", "stored_clip_ids", "write_folder_dataset", "write_wav"]

SAMPLE_RATE = 16000

# kind of bad audio file -> the reject reason the decoder must give it. The order is the order
# in which the layouts list them.
BAD_AUDIO = {
    "corrupt": "unreadable",   # a WAV header cut short, followed by garbage bytes
    "empty": "empty",          # a 0-byte file
    "silent": "silent",        # 1 s of all-zero 16-bit PCM
    "nan": "non_finite",       # 1 s of 32-bit float with NaN samples
    "short": "too_short",      # 0.05 s of tone: below any sensible minimum duration
}


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

def sine(freq: float, duration_s: float = 0.5, sample_rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine tone."""
    t = np.arange(int(round(duration_s * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(duration_s: float = 0.5, sample_rate: int = SAMPLE_RATE, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    """Float32 white noise from a seeded generator."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(round(duration_s * sample_rate)))).astype(np.float32)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str | None = None) -> Path:
    """Write ``wave`` (frames or frames x channels) with soundfile.

    The format follows the extension (.wav, .flac, .ogg, ...); ``subtype`` defaults to the
    format's default (16-bit PCM for WAV and FLAC, Vorbis for OGG).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate, subtype=subtype)
    return path


def _clip_audio(i: int, duration_s: float, sample_rate: int) -> np.ndarray:
    """A distinct, clearly non-silent clip for index ``i``: a tone plus a little noise."""
    return sine(220.0 * (1 + i % 7), duration_s, sample_rate, 0.4) + noise(duration_s, sample_rate, 0.02, seed=i)


def write_bad_audio(path: str | Path, kind: str, sample_rate: int = SAMPLE_RATE) -> str:
    """Write one bad file of ``kind`` (a key of ``BAD_AUDIO``); returns the expected reject reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        buf = io.BytesIO()
        sf.write(buf, sine(440.0, 0.5, sample_rate), sample_rate, format="WAV", subtype="PCM_16")
        garbage = np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes()
        path.write_bytes(buf.getvalue()[:20] + garbage)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "silent":
        write_wav(path, np.zeros(sample_rate, dtype=np.float32), sample_rate)
    elif kind == "nan":
        wave = sine(440.0, 1.0, sample_rate)
        wave[100:110] = np.nan
        write_wav(path, wave, sample_rate, subtype="FLOAT")
    elif kind == "short":
        write_wav(path, sine(440.0, 0.05, sample_rate), sample_rate)
    else:
        raise ValueError(f"unknown bad audio kind {kind!r}; kinds: {', '.join(BAD_AUDIO)}")
    return BAD_AUDIO[kind]


def make_clip_record(i: int, labels: tuple[str, ...] = ("a",), split: str = "train", audio: str | None = None,
                     **fields) -> ClipRecord:
    """A ClipRecord for index ``i`` (``clip-000i``); pass other fields as keywords."""
    return ClipRecord(clip_id=f"clip-{i:04d}", audio=audio or f"/nonexistent/clip-{i:04d}.wav", labels=tuple(labels),
                      split=split, **fields)


def _expect(root, load_kwargs, vocab, records, decode_rejects, listing_rejects) -> dict:
    bad = {clip_id for clip_id, _ in decode_rejects}
    reasons = Counter(reason for _, reason in listing_rejects) + Counter(reason for _, reason in decode_rejects)
    return {"root": str(root), "load_kwargs": load_kwargs, "vocab": tuple(vocab), "records": records,
            "good": sorted(c for c in records if c not in bad),
            "listing_rejects": sorted(listing_rejects, key=lambda x: (x[1], x[0] or "")),
            "decode_rejects": sorted(decode_rejects), "rejects_by_reason": dict(sorted(reasons.items()))}


def _write_csv(path: Path, header: list[str] | None, rows: list[list], raw_lines: list[str] = ()) -> None:
    """Write rows with the csv module, then append ``raw_lines`` verbatim (for broken rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue() + "".join(line + "\n" for line in raw_lines))


# --------------------------------------------------------------------------------------------
# ESC-50
# --------------------------------------------------------------------------------------------

ESC50_CATEGORIES = ("dog", "rain", "chirping_birds", "door_wood_knock", "siren", "clock_tick")


def make_esc50_layout(root: str | Path, n_classes: int = 3, n_per_class: int = 4, *, bad: bool = True,
                      duration_s: float = 0.5, sample_rate: int = SAMPLE_RATE) -> dict:
    """Write an ESC-50 layout (``audio/*.wav``, ``meta/esc50.csv``) under ``root``.

    Good clips: ``n_per_class`` per class, in pairs cut from one source recording (takes A and B
    share ``src_file`` and fold; fold = pair number % 5 + 1). Targets are 0..n_classes-1 with
    categories from ``ESC50_CATEGORIES``; the CSV rows are sorted by file name as in the real
    file, so the vocabulary must be re-ordered by target. Even classes are ESC-10.

    With ``bad``: one listed clip per ``BAD_AUDIO`` kind (class 0, fold 1..5, decode rejects), and
    listing rejects for a row whose file is missing, a repeated row (duplicate id), a row with a
    non-integer fold, a row whose category contradicts its target, and a row that does not parse
    as CSV (unbalanced quote).
    """
    root = Path(root)
    if not 1 <= n_classes <= len(ESC50_CATEGORIES):
        raise ValueError(f"n_classes must be in 1..{len(ESC50_CATEGORIES)}")
    rows, records = [], {}
    for target in range(n_classes):
        category = ESC50_CATEGORIES[target]
        for k in range(n_per_class):
            pair = k // 2
            src = f"{100000 + 1000 * target + pair}"
            fold = pair % 5 + 1
            take = "AB"[k % 2]
            filename = f"{fold}-{src}-{take}-{target}.wav"
            write_wav(root / "audio" / filename, _clip_audio(target, duration_s, sample_rate), sample_rate)
            rows.append([filename, fold, target, category, target % 2 == 0, src, take])
            records[Path(filename).stem] = {"labels": (category,), "split": f"fold{fold}", "fold": fold,
                                            "source_id": src}
    decode_rejects, listing_rejects, raw = [], [], []
    if bad:
        for j, kind in enumerate(BAD_AUDIO):
            fold = j % 5 + 1
            filename = f"{fold}-{900000 + j}-A-0.wav"
            reason = write_bad_audio(root / "audio" / filename, kind, sample_rate)
            rows.append([filename, fold, 0, ESC50_CATEGORIES[0], True, str(900000 + j), "A"])
            records[Path(filename).stem] = {"labels": (ESC50_CATEGORIES[0],), "split": f"fold{fold}", "fold": fold,
                                            "source_id": str(900000 + j)}
            decode_rejects.append((Path(filename).stem, reason))
        rows.append(["2-910000-A-0.wav", 2, 0, ESC50_CATEGORIES[0], True, "910000", "A"])   # no audio file
        listing_rejects.append(("2-910000-A-0", "missing_audio"))
        rows.append(list(rows[0]))                                                      # repeated row
        listing_rejects.append((Path(rows[0][0]).stem, "duplicate_id"))
        write_wav(root / "audio" / "3-920000-A-0.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        rows.append(["3-920000-A-0.wav", "three", 0, ESC50_CATEGORIES[0], True, "920000", "A"])  # bad fold
        listing_rejects.append(("3-920000-A-0", "bad_csv_row"))
        write_wav(root / "audio" / "4-930000-A-0.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        rows.append(["4-930000-A-0.wav", 4, 0, "cat", False, "930000", "A"])     # target 0 is not "cat"
        listing_rejects.append(("4-930000-A-0", "bad_csv_row"))
        raw.append('"5-940000-A-0.wav,5,0,dog,True,940000,A')                    # unbalanced quote
        listing_rejects.append((None, "bad_csv_row"))
    rows.sort(key=lambda r: str(r[0]))
    _write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
               rows, raw)
    return _expect(root, {"root": str(root)}, ESC50_CATEGORIES[:n_classes], records, decode_rejects, listing_rejects)


# --------------------------------------------------------------------------------------------
# DCASE 2016 (TUT Acoustic Scenes 2016, development)
# --------------------------------------------------------------------------------------------

def make_dcase2016_layout(root: str | Path, scenes: tuple[str, ...] = ("beach", "bus", "home"),
                          locations_per_scene: int = 4, clips_per_location: int = 2, *, bad: bool = True,
                          duration_s: float = 0.5, sample_rate: int = SAMPLE_RATE) -> dict:
    """Write a TUT Acoustic Scenes 2016 development layout under ``root``.

    Location ``l`` of scene ``s`` is named ``<letter of s><l:03d>`` (``a000``), its clips
    ``audio/<location>_<start>_<start+10>.wav``, and it belongs to fold ``l % 4 + 1``:
    ``evaluation_setup/fold<n>_evaluate.txt`` (and ``_test.txt``) list that fold's clips,
    ``fold<n>_train.txt`` the others. ``meta.txt`` lists every clip with its scene.

    With ``bad``: one clip per ``BAD_AUDIO`` kind at location ``z900`` (fold 1, scene
    ``scenes[0]``; decode rejects), and listing rejects for a ``meta.txt`` line without a scene,
    a clip whose audio file is missing, a repeated ``meta.txt`` line (duplicate id), a clip in no
    fold's evaluate list and a clip in two folds' evaluate lists.
    """
    root = Path(root)
    meta: list[str] = []
    fold_clips: dict[int, list[tuple[str, str]]] = {n: [] for n in range(1, 5)}
    records = {}
    for s, scene in enumerate(scenes):
        for loc in range(locations_per_scene):
            location = f"{chr(ord('a') + s)}{loc:03d}"
            fold = loc % 4 + 1
            for c in range(clips_per_location):
                name = f"audio/{location}_{10 * c}_{10 * c + 10}.wav"
                write_wav(root / name, _clip_audio(s, duration_s, sample_rate), sample_rate)
                meta.append(f"{name}\t{scene}")
                fold_clips[fold].append((name, scene))
                records[Path(name).stem] = {"labels": (scene,), "split": f"fold{fold}", "fold": fold,
                                            "source_id": location}
    decode_rejects, listing_rejects = [], []
    extra_eval: dict[int, list[tuple[str, str]]] = {n: [] for n in range(1, 5)}
    if bad:
        scene = scenes[0]
        for j, kind in enumerate(BAD_AUDIO):
            name = f"audio/z900_{10 * j}_{10 * j + 10}.wav"
            reason = write_bad_audio(root / name, kind, sample_rate)
            meta.append(f"{name}\t{scene}")
            fold_clips[1].append((name, scene))
            records[Path(name).stem] = {"labels": (scene,), "split": "fold1", "fold": 1, "source_id": "z900"}
            decode_rejects.append((Path(name).stem, reason))
        meta.append("audio/z901_0_10.wav")                       # no scene column
        write_wav(root / "audio" / "z901_0_10.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        fold_clips[2].append(("audio/z901_0_10.wav", scene))
        listing_rejects.append(("z901_0_10", "bad_csv_row"))
        meta.append(f"audio/z902_0_10.wav\t{scene}")             # listed everywhere, no file
        fold_clips[2].append(("audio/z902_0_10.wav", scene))
        listing_rejects.append(("z902_0_10", "missing_audio"))
        meta.append(meta[0])                                      # repeated line
        listing_rejects.append((Path(meta[0].split("\t")[0]).stem, "duplicate_id"))
        write_wav(root / "audio" / "z903_0_10.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        meta.append(f"audio/z903_0_10.wav\t{scene}")             # in no fold list
        listing_rejects.append(("z903_0_10", "bad_csv_row"))
        write_wav(root / "audio" / "z904_0_10.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        meta.append(f"audio/z904_0_10.wav\t{scene}")             # evaluated in folds 3 and 4
        extra_eval[3].append(("audio/z904_0_10.wav", scene))
        extra_eval[4].append(("audio/z904_0_10.wav", scene))
        listing_rejects.append(("z904_0_10", "bad_csv_row"))
    (root / "meta.txt").write_text("".join(line + "\n" for line in meta))
    setup = root / "evaluation_setup"
    setup.mkdir(parents=True, exist_ok=True)
    for n in range(1, 5):
        evaluate = fold_clips[n] + extra_eval[n]
        train = [item for m in range(1, 5) if m != n for item in fold_clips[m]]
        (setup / f"fold{n}_train.txt").write_text("".join(f"{name}\t{scene}\n" for name, scene in train))
        (setup / f"fold{n}_evaluate.txt").write_text("".join(f"{name}\t{scene}\n" for name, scene in evaluate))
        (setup / f"fold{n}_test.txt").write_text("".join(f"{name}\n" for name, _ in evaluate))
    return _expect(root, {"root": str(root)}, sorted(scenes), records, decode_rejects, listing_rejects)


# --------------------------------------------------------------------------------------------
# AudioSet
# --------------------------------------------------------------------------------------------

AUDIOSET_CLASSES = (("/m/0t001", "Speech"), ("/m/0t002", "Dog, bark"), ("/m/0t003", "Music"),
                    ("/m/0t004", "Vehicle"))

# How the i-th clip's audio file is named (cycled): every convention the reader must accept.
AUDIOSET_NAMINGS = ("{id}.wav", "Y{id}.flac", "{id}_{start_int}.wav", "part01/{id}_{start:.3f}_{end:.3f}.flac",
                    "Y{id}_{start:.1f}_{end:.1f}.wav", "part02/nested/{id}.ogg")


def _ytid(i: int) -> str:
    """An 11-character YouTube-style id; some contain '-' and '_' and one starts with 'Y'."""
    prefix = ("--PJ", "a_b-", "Yxyz", "Q9rT")[i % 4]
    return f"{prefix}{i:07d}"


def make_audioset_layout(root: str | Path, split: str = "balanced_train", n_clips: int = 8, *, bad: bool = True,
                         audio_subdir: str = "downloads", duration_s: float = 0.5,
                         sample_rate: int = SAMPLE_RATE) -> dict:
    """Write the AudioSet CSV release for one split plus an audio folder under ``root``.

    ``class_labels_indices.csv`` holds ``AUDIOSET_CLASSES`` (a display name with a comma, so it
    is quoted), written out of index order. ``<split>_segments.csv`` has the three ``#`` header
    lines and rows ``YTID, start, end, "mid1,mid2"`` (clip i has 1-2 labels, start 30 s or 0 s).
    Audio files are named with every convention in ``AUDIOSET_NAMINGS`` in turn (nested folders
    included); a ``.txt`` note and a ``.part`` partial download sit in the folder and must be ignored.

    With ``bad``: one row per ``BAD_AUDIO`` kind (decode rejects) and listing rejects for a row
    with no audio file, a row with a mid not in the vocabulary, a repeated YTID, a row whose start
    is not a number, and a row with too few fields.
    """
    root = Path(root)
    audio = root / audio_subdir
    mids = [m for m, _ in AUDIOSET_CLASSES]
    labels_rows = [[i, m, n] for i, (m, n) in enumerate(AUDIOSET_CLASSES)]
    _write_csv(root / "class_labels_indices.csv", ["index", "mid", "display_name"], labels_rows[::-1])
    split_field = "eval" if split == "eval" else "train"
    lines = ["# Segments csv created for a test fixture",
             f"# num_ytids={n_clips}, num_segs={n_clips}, num_unique_labels={len(mids)}, num_positive_labels=0",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    records = {}

    def row(ytid, start, labels):
        return f'{ytid}, {start:.3f}, {start + 10:.3f}, "{",".join(labels)}"'

    for i in range(n_clips):
        ytid, start = _ytid(i), (30.0 if i % 2 == 0 else 0.0)
        labels = (mids[i % 4],) if i % 3 else (mids[i % 4], mids[(i + 1) % 4])
        name = AUDIOSET_NAMINGS[i % len(AUDIOSET_NAMINGS)].format(id=ytid, start=start, end=start + 10,
                                                                  start_int=int(start))
        write_wav(audio / name, _clip_audio(i, duration_s, sample_rate), sample_rate)
        lines.append(row(ytid, start, labels))
        records[ytid] = {"labels": labels, "split": split_field, "fold": None, "source_id": None,
                         "start_s": start, "end_s": start + 10}
    (audio / "README.txt").write_text("not audio\n")
    (audio / f"{_ytid(0)}.wav.part").write_bytes(b"partial")
    decode_rejects, listing_rejects = [], []
    if bad:
        for j, kind in enumerate(BAD_AUDIO):
            ytid = f"badaudio{j:03d}"
            reason = write_bad_audio(audio / f"{ytid}.wav", kind, sample_rate)
            lines.append(row(ytid, 0.0, (mids[0],)))
            records[ytid] = {"labels": (mids[0],), "split": split_field, "fold": None, "source_id": None,
                             "start_s": 0.0, "end_s": 10.0}
            decode_rejects.append((ytid, reason))
        lines.append(row("nofile00000", 0.0, (mids[0],)))
        listing_rejects.append(("nofile00000", "missing_audio"))
        write_wav(audio / "unknownlab0.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        lines.append(row("unknownlab0", 0.0, (mids[0], "/m/notreal")))
        listing_rejects.append(("unknownlab0", "unknown_label"))
        lines.append(row(_ytid(0), 30.0, (mids[1],)))
        listing_rejects.append((_ytid(0), "duplicate_id"))
        lines.append(f'badstart000, abc, 10.000, "{mids[0]}"')
        listing_rejects.append(("badstart000", "bad_csv_row"))
        lines.append("toofew00000, 0.000")
        listing_rejects.append(("toofew00000", "bad_csv_row"))
    (root / f"{split}_segments.csv").write_text("".join(line + "\n" for line in lines))
    return _expect(root, {"root": str(root), "split": split, "audio_dir": str(audio)}, mids, records,
                   decode_rejects, listing_rejects)


# --------------------------------------------------------------------------------------------
# Folder + CSV
# --------------------------------------------------------------------------------------------

FOLDER_LABELS = ("bird", "car", "dog", "rain")


def make_folder_layout(root: str | Path, n_clips: int = 6, *, bad: bool = True, duration_s: float = 0.5,
                       sample_rate: int = SAMPLE_RATE) -> dict:
    """Write a folder of audio and ``labels.csv`` (``path,labels``) under ``root``.

    Clip i lives at ``<letter>/clip<i>.<wav|flac>``; its labels are written with ``;`` for even
    i and as a quoted ``,`` list for odd i (odd clips have two labels, with stray spaces). With
    ``bad``, a vocabulary file ``vocab.txt`` (``FOLDER_LABELS``) is written and passed as
    ``vocab_path``; then: one row per ``BAD_AUDIO`` kind (decode rejects) and listing rejects
    for a missing file, a label not in the vocabulary, a repeated path, a row with no labels and
    a row that does not parse (unbalanced quote).
    """
    root = Path(root)
    rows, records = [], {}
    for i in range(n_clips):
        rel = f"{'abc'[i % 3]}/clip{i}.{'wav' if i % 2 == 0 else 'flac'}"
        write_wav(root / rel, _clip_audio(i, duration_s, sample_rate), sample_rate)
        if i % 2 == 0:
            labels = (FOLDER_LABELS[i % 4],)
            rows.append([rel, ";".join(labels)])
        else:
            labels = (FOLDER_LABELS[i % 4], FOLDER_LABELS[(i + 1) % 4])
            rows.append([rel, " , ".join(labels)])
        records[rel] = {"labels": labels, "split": "train", "fold": None, "source_id": None}
    decode_rejects, listing_rejects, raw = [], [], []
    load_kwargs = {"root": str(root), "csv_path": str(root / "labels.csv")}
    vocab = sorted({label for r in records.values() for label in r["labels"]})
    if bad:
        (root / "vocab.txt").write_text("".join(f"{label}\n" for label in FOLDER_LABELS))
        load_kwargs["vocab_path"] = str(root / "vocab.txt")
        vocab = list(FOLDER_LABELS)
        for kind in BAD_AUDIO:
            rel = f"bad/{kind}.wav"
            reason = write_bad_audio(root / rel, kind, sample_rate)
            rows.append([rel, FOLDER_LABELS[0]])
            records[rel] = {"labels": (FOLDER_LABELS[0],), "split": "train", "fold": None, "source_id": None}
            decode_rejects.append((rel, reason))
        rows.append(["missing/nofile.wav", FOLDER_LABELS[0]])
        listing_rejects.append(("missing/nofile.wav", "missing_audio"))
        write_wav(root / "x" / "unknown.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        rows.append(["x/unknown.wav", f"{FOLDER_LABELS[0]};zebra"])
        listing_rejects.append(("x/unknown.wav", "unknown_label"))
        rows.append(list(rows[0]))
        listing_rejects.append((rows[0][0], "duplicate_id"))
        write_wav(root / "x" / "nolabels.wav", _clip_audio(0, duration_s, sample_rate), sample_rate)
        rows.append(["x/nolabels.wav", " ; "])
        listing_rejects.append(("x/nolabels.wav", "bad_csv_row"))
        raw.append('x/broken.wav,"bird;car')
        listing_rejects.append((None, "bad_csv_row"))
    _write_csv(root / "labels.csv", ["path", "labels"], rows, raw)
    return _expect(root, load_kwargs, vocab, records, decode_rejects, listing_rejects)


# --------------------------------------------------------------------------------------------
# Hostile audio: small files whose headers ask for huge work (see tests/test_hostile_audio.py)
# --------------------------------------------------------------------------------------------

# kind -> (what it is, the reject reason prep must give it, or None when it must be kept)
HOSTILE_AUDIO = {
    "huge_rate": ("0.6 MB of 16-bit WAV declared at 999,983 Hz (a prime: resampling would need a 1 GB filter)",
                  "bad_sample_rate"),
    "many_channels": ("8-channel 96 kHz FLAC of 30 s (tiny compressed, 92 MB decoded whole)", None),
    "too_many_channels": ("64-channel WAV", "unreadable"),
    "float_overflow": ("32-bit float WAV with samples near 3.3e38 (finite, overflow when filtered)", None),
}


def write_hostile_audio(path: str | Path, kind: str) -> tuple[str, str | None]:
    """Write one file of ``kind`` (a key of ``HOSTILE_AUDIO``); returns (description, expected reason)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "huge_rate":
        wave = (0.3 * np.sin(np.arange(300_000) * 0.01)).astype(np.float32)
        sf.write(str(path), wave, 999_983, format="WAV", subtype="PCM_16")
    elif kind == "many_channels":
        rate, seconds = 96_000, 30
        # a square wave that flips every FLAC block (4096 frames): each block is one constant subframe
        one = np.where((np.arange(rate * seconds) // 4096) % 2 == 0, 8192, -8192).astype(np.int16)
        wave = np.tile(one[:, None], (1, 8))
        sf.write(str(path), wave, rate, format="FLAC", subtype="PCM_16")
    elif kind == "too_many_channels":
        sf.write(str(path), np.tile(sine(440.0, 0.5)[:, None], (1, 64)), SAMPLE_RATE, format="WAV",
                 subtype="PCM_16")
    elif kind == "float_overflow":
        sf.write(str(path), sine(440.0, 1.0, amplitude=1.0) * np.float32(3.3e38), SAMPLE_RATE, format="WAV",
                 subtype="FLOAT")
    else:
        raise ValueError(f"unknown hostile audio kind {kind!r}; kinds: {', '.join(HOSTILE_AUDIO)}")
    return HOSTILE_AUDIO[kind]


# --------------------------------------------------------------------------------------------
# Hostile shards: tar files the project's writer never produces (see tests/test_hostile_shards.py)
# --------------------------------------------------------------------------------------------

def flac_bytes(wave: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of ``wave`` (default: 0.5 s of 440 Hz)."""
    buf = io.BytesIO()
    sf.write(buf, sine(440.0) if wave is None else wave, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_tar(path: str | Path, members: list[tuple[str, bytes]], *, member_type: bytes = b"0") -> Path:
    """A USTAR tar of (name, data) members, all of ``member_type`` (tarfile.REGTYPE by default)."""
    import tarfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.type = member_type
            if member_type == tarfile.SYMTYPE:
                info.size, info.linkname = 0, "/etc/passwd"
                tar.addfile(info)
            else:
                tar.addfile(info, io.BytesIO(data))
    return path


def write_gnu_sparse_tar(path: str | Path, name: str = "a.flac", real_size: int = 256 * 2**20) -> Path:
    """A ~10 kB tar whose one GNU sparse member claims ``real_size`` bytes (old GNU sparse format:
    the sparse map and the real size sit in the header, the data block is tiny)."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = 512
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = b"%011o\0" % (real_size - 512)   # one data region of 512 bytes at the end
    header[398:410] = b"%011o\0" % 512
    header[483:495] = b"%011o\0" % real_size           # the member's size once expanded
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header[:512])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(header) + b"\x01" * 512 + b"\0" * 9216)
    return path


# --------------------------------------------------------------------------------------------
# Process-level faults (see tests/test_faults_processes.py and bench/faults.py): a folder dataset,
# the `weaksound prep` command line over it, and a moto S3 server that can be paused, killed, restarted
# --------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def write_folder_dataset(root: str | Path, n_clips: int, sample_rate: int = SAMPLE_RATE) -> Path:
    """``n_clips`` good tones (1-3 s) under ``root/audio`` and ``root/labels.csv``; returns the CSV."""
    root = Path(root)
    rows = ["path,labels"]
    for i in range(n_clips):
        write_wav(root / "audio" / f"c{i:03d}.wav", sine(100.0 + 20 * i, 1.0 + i % 3, sample_rate, 0.2), sample_rate)
        rows.append(f"c{i:03d}.wav,{'low' if i % 2 else 'high;other'}")
    csv_path = root / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


def prep_command(csv_path: str | Path, out: str, *, executor: str = "local", clips_per_shard: int = 2) -> list[str]:
    """The `weaksound prep folder` command (as ``python -m data_prep.cli``) over a ``write_folder_dataset``."""
    import sys

    return [sys.executable, "-m", "data_prep.cli", "folder", "--root", str(Path(csv_path).parent / "audio"),
            "--csv", str(csv_path), "--out", out, "--sample-rate", "16000", "--clips-per-shard",
            str(clips_per_shard), "--executor", executor, "--no-progress"]


def prep_env(**extra: str) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", **extra}


def stored_clip_ids(out: str) -> list[str]:
    """Every clip id the manifest's shards hold, read back and checked (sizes, sha256), in order."""
    from data_prep.manifest import read_manifest

    return [s.meta["clip_id"] for s in read_manifest(out).samples(decode_audio=False)]


class MotoServer:
    """A real moto_server on loopback that a test can pause (SIGSTOP: requests hang), resume, kill and
    restart on the same port (moto keeps no state across a restart: buckets are gone)."""

    def __init__(self, port: int | None = None):
        import socket

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.proc = None

    def env(self) -> dict:
        return prep_env(AWS_ENDPOINT_URL=self.endpoint, AWS_ACCESS_KEY_ID="testing",
                        AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")

    def start(self) -> "MotoServer":
        import shutil
        import subprocess
        import sys
        import time
        import urllib.request

        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen([str(exe) if exe.exists() else (shutil.which("moto_server") or "moto_server"),
                                      "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1)
                return self
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.kill()
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def pause(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process still dies of SIGKILL, but be plain
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def stored_clip_ids_via(env: dict, out: str) -> list[str]:
    """``stored_clip_ids(out)`` read by a fresh process with ``env`` (an S3 endpoint other than this
    process's: runtime.storage keeps one S3 client per process)."""
    import json
    import subprocess
    import sys

    code = "import json, sys; from factories import stored_clip_ids; print(json.dumps(stored_clip_ids(sys.argv[1])))"
    done = subprocess.run([sys.executable, "-c", code, out], env={**env, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# Run `weaksound prep` once a start file exists (imports done first): two of these race for real.
RACE_LAUNCHER = """\
import os, sys, time
from data_prep import cli
start = sys.argv[1]
open(f"{start}.ready.{os.getpid()}", "w").close()
while not os.path.exists(start):
    time.sleep(0.002)
sys.exit(cli.main(sys.argv[2:]))
"""


def race_commands(commands: list[list[str]], start_file: str | Path, env: dict, timeout_s: float = 300):
    """Start every ``prep_command`` at once (after all imported); returns their CompletedProcess-like results."""
    import glob
    import subprocess
    import sys
    import time

    procs = [subprocess.Popen([sys.executable, "-c", RACE_LAUNCHER, str(start_file), *cmd[3:]], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in commands]
    deadline = time.time() + timeout_s
    while len(glob.glob(f"{start_file}.ready.*")) < len(procs):
        if time.time() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            raise RuntimeError("a racer did not start: " + " | ".join(p.communicate()[1][-500:] for p in procs))
        time.sleep(0.01)
    Path(start_file).touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=timeout_s)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (the scripts folder is not a package), for testing its functions."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
