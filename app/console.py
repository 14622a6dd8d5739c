"""The `weaksound` command: one entry point for every stage of the pipeline.

  weaksound prep SOURCE ...      raw audio + weak labels -> shards + manifest   (data_prep/)
  weaksound train ...            Ray Train DDP of the weak-label CNN            (trainer/)
  weaksound embed ...            parallel embedding extraction (Ray)             (inference/)
  weaksound transfer TASK ...    SVM / adaptation / semantic experiments         (transfer/)
  weaksound tag --model M FILE   clip tags and a segment timeline for any audio  (inference/)
  weaksound detect --model M ... sound events (onset, offset, label) in audio files (inference/)
  weaksound export --model M ... the exported model as one ONNX graph, waveforms in (inference/)
  weaksound demo ...             all of the above on the embedded synthetic corpus (app/)

Each command is a thin parser over its stage's typed run (`run(config) -> summary`).

`weaksound COMMAND --help` explains every option and its default.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "prep": ("data_prep.cli", "raw audio with weak labels -> validated WebDataset shards + manifest"),
    "train": ("trainer.main", "train the weak-label CNN with Ray Train (DDP), checkpointing and resuming"),
    "embed": ("inference.embed_cli", "extract F1/F2 embeddings of a prepared dataset in parallel (Ray)"),
    "transfer": ("transfer.cli", "transfer experiments: events, scenes, adaptation, semantic relations"),
    "tag": ("inference.tag_cli", "clip-level tags and a segment-level timeline for audio files"),
    "detect": ("inference.detect_cli", "sound events (onset, offset, label) from segment scores"),
    "export": ("inference.export_cli", "the exported model as one ONNX graph (front end included)"),
    "demo": ("app.demo", "the main job end to end on the embedded synthetic corpus"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:10s} {text}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
