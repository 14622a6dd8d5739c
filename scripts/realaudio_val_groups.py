"""Write the ``--val-groups`` file of the real-audio kit's AudioSet-like train split.

The kit renders its 1,500 train clips from 163 source recordings, so a val split drawn by clip id (AudioSet's CSVs name
nothing finer) shares recordings with train and rewards memorising them. Its provenance file names the
recording behind every event; this script turns it into ``clip_id,group`` rows for ``weaksound prep
audioset --val-fraction F --val-groups OUT`` (data_prep/validation_split.py).

    .venv/bin/python scripts/realaudio_val_groups.py /tmp/realaudio /tmp/ra/realaudio_val_groups.csv
"""
from __future__ import annotations

import argparse
import csv
import os


def event_sources(events_field: str) -> list[str]:
    """The source recordings of a provenance ``events(class=source)`` field such as
    ``Fire=ufo_firesoft;Gunshot, gunfire=ufo_rifle`` (class names may hold commas, never '=' or ';')."""
    return [part.rsplit("=", 1)[1] for part in events_field.split(";") if "=" in part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("kit", help="the folder make_set.sh wrote (holds provenance/audioset_events.csv)")
    parser.add_argument("out", help="the clip_id,group CSV to write")
    args = parser.parse_args(argv)
    path = os.path.join(args.kit, "provenance", "audioset_events.csv")
    if not os.path.exists(path):
        parser.error(f"{path} does not exist: is {args.kit} a folder written by the kit's make_set.sh?")
    rows = 0
    with open(path, newline="") as f, open(args.out, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["clip_id", "group"])
        for record in csv.DictReader(f):
            if record["split"] != "train":
                continue
            for source in dict.fromkeys(event_sources(record["events(class=source)"])):
                writer.writerow([record["ytid"], source])
                rows += 1
    print(f"{rows} rows written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
