"""Sound-event detection: the pure chain scores -> thresholded -> median filtered -> events, the
DCASE TSV, sed_eval scores on hand-made references whose F1 is known, and `weaksound detect`."""
from __future__ import annotations

import csv
import json
import shlex

import numpy as np
import pytest
import soundfile as sf
import torch

from inference import detect, detect_cli
from trainer.config import FrontEndConfig, ModelConfig, preset
from trainer.export import export_model
from trainer.model import WeakLabelCNN

NAMES = ["dog", "car"]
GRID = detect.SegmentGrid(hop_s=1.0, centre_offset_s=1.0, duration_s=6.0)  # stretches [0,1.5) [1.5,2.5) ...


def test_the_paper_grid_puts_segment_centres_0_74_s_apart_starting_at_0_74_s():
    grid = detect.SegmentGrid.of_model(FrontEndConfig(), ModelConfig(), duration_s=10.0)
    np.testing.assert_allclose(grid.centres(3), [63.5 * 512 / 44100 + k * 64 * 512 / 44100 for k in range(3)])
    assert grid.hop_s == pytest.approx(0.743, abs=1e-3)


def test_segment_stretches_tile_the_clip_from_zero_to_its_end():
    starts, ends = GRID.stretches(5)
    assert starts[0] == 0.0 and ends[-1] == 6.0
    np.testing.assert_allclose(starts[1:], ends[:-1])
    np.testing.assert_allclose(starts, [0.0, 1.5, 2.5, 3.5, 4.5])


def test_each_class_is_active_where_its_score_reaches_its_own_threshold():
    scores = np.array([[0.6, 0.6], [0.4, 0.9]])
    thresholds = detect.class_thresholds(NAMES, 0.5, {"car": 0.8})
    assert thresholds.tolist() == [0.5, 0.8]
    assert detect.binarize(scores, thresholds).tolist() == [[True, False], [False, True]]


def test_a_threshold_for_an_unknown_class_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'cat'"):
        detect.class_thresholds(NAMES, 0.5, {"cat": 0.3})
    assert detect.class_thresholds(NAMES, 0.5, {"/m/car": 0.1}, ids=["/m/dog", "/m/car"]).tolist() == [0.5, 0.1]


def test_a_median_filter_of_three_segments_fills_one_segment_gaps_and_drops_one_segment_blips():
    active = np.array([[1, 0], [0, 0], [1, 1], [1, 0], [1, 0]], dtype=bool)
    filtered = detect.median_filter_activity(active, 3)
    assert filtered[:, 0].tolist() == [True, True, True, True, True]  # gap at 1 filled
    assert filtered[:, 1].tolist() == [False] * 5                      # blip at 2 dropped
    assert detect.median_filter_activity(active, 1).tolist() == active.tolist()
    with pytest.raises(ValueError, match="odd"):
        detect.median_filter_activity(active, 2)


def test_runs_of_active_segments_become_events_spanning_their_stretches():
    active = np.array([[1, 0], [1, 0], [0, 0], [0, 1], [0, 1]], dtype=bool)
    scores = np.where(active, 0.9, 0.1)
    scores[1, 0] = 0.95
    events = detect.activity_to_events(active, scores, GRID, NAMES, "a.wav")
    assert events == [detect.Event("a.wav", 0.0, 2.5, "dog", 0.95), detect.Event("a.wav", 3.5, 6.0, "car", 0.9)]


def test_the_detection_chain_thresholds_then_filters_then_cuts_events():
    scores = np.array([[0.9, 0.1], [0.2, 0.1], [0.8, 0.7], [0.7, 0.1], [0.1, 0.1]])
    events = detect.detect_events(scores, GRID, NAMES, thresholds=0.5, median_window=3, filename="a.wav")
    assert [(e.onset, e.offset, e.label) for e in events] == [(0.0, 4.5, "dog")]  # the gap filled, car's blip gone
    assert detect.detect_events(np.zeros((0, 2)), GRID, NAMES, 0.5, 3) == []


def test_event_lists_round_trip_through_the_dcase_tsv():
    events = [detect.Event("a.wav", 0.0, 2.5, "dog", 0.9), detect.Event("b.wav", 1.25, 3.0, "car", 0.7)]
    text = detect.events_tsv(events)
    assert text.splitlines()[0] == "filename\tonset\toffset\tevent_label"
    rows, files = detect.read_events_tsv(text + "c.wav\n")
    assert files == ["a.wav", "b.wav", "c.wav"]  # a file-name-only row: a file without events
    assert [(r["filename"], r["onset"], r["offset"], r["event_label"]) for r in rows] == \
        [("a.wav", 0.0, 2.5, "dog"), ("b.wav", 1.25, 3.0, "car")]


def test_a_malformed_tsv_row_is_an_error_naming_the_file_and_line():
    with pytest.raises(ValueError, match=r"ref\.tsv, line 3"):
        detect.read_events_tsv("a.wav\t0\t1\tdog\na.wav\t1\t2\tdog\na.wav\tsoon\t2\tdog\n", "ref.tsv")
    with pytest.raises(ValueError, match="line 1"):
        detect.read_events_tsv("a.wav\t3\t2\tdog\n", "ref.tsv")  # offset before onset


def _write(path, rows):
    path.write_text("filename\tonset\toffset\tevent_label\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return str(path)


def test_sed_eval_scores_a_half_right_estimate_with_f1_one_half(tmp_path):
    # reference: dog [1, 3], car [5, 6]; estimate: dog within the collar, and a cat where the car is.
    ref = _write(tmp_path / "ref.tsv", [("audio/a.wav", 1.0, 3.0, "dog"), ("audio/a.wav", 5.0, 6.0, "car")])
    est = _write(tmp_path / "est.tsv", [("a.wav", 1.1, 3.1, "dog"), ("a.wav", 5.0, 6.0, "cat")])
    scores = detect.evaluate_events(ref, est)
    assert scores["files"] == 1 and scores["labels"] == ["car", "cat", "dog"]
    eb = scores["event_based"]
    assert (eb["precision"], eb["recall"], eb["f_measure"]) == pytest.approx((0.5, 0.5, 0.5))
    assert eb["class_wise_f_measure"]["dog"] == pytest.approx(1.0)
    # 1 s segments of [0, 6): dog hits 2 of the 3 it claims, car's one segment is missed, cat's is wrong
    sb = scores["segment_based"]
    assert (sb["precision"], sb["recall"], sb["f_measure"]) == pytest.approx((2 / 4, 2 / 3, 4 / 7))


def test_sed_eval_gives_a_perfect_estimate_f1_one_and_a_file_without_estimates_recall_zero(tmp_path):
    ref = _write(tmp_path / "ref.tsv", [("a.wav", 0.0, 2.0, "dog"), ("b.wav", 1.0, 2.0, "car")])
    perfect = detect.evaluate_events(ref, _write(tmp_path / "same.tsv", [("a.wav", 0.0, 2.0, "dog"),
                                                                           ("b.wav", 1.0, 2.0, "car")]))
    assert perfect["event_based"]["f_measure"] == pytest.approx(1.0)
    assert perfect["event_based"]["error_rate"] == pytest.approx(0.0)
    assert perfect["segment_based"]["f_measure"] == pytest.approx(1.0)
    half = detect.evaluate_events(ref, _write(tmp_path / "half.tsv", [("a.wav", 0.0, 2.0, "dog")]))
    assert half["files"] == 2
    assert half["event_based"]["recall"] == pytest.approx(0.5)
    assert half["event_based"]["precision"] == pytest.approx(1.0)


def _export(tmp_path) -> str:
    cfg = preset("cpu-small")
    arch = ModelConfig(**{**cfg.model.__dict__, "num_classes": 3})
    torch.manual_seed(0)
    model = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
    vocab = [{"index": i, "id": f"c{i}", "name": n} for i, n in enumerate(["Tone", "Noise", "Click"])]
    return export_model(str(tmp_path / "model"), model, frontend=cfg.frontend, architecture=arch, vocabulary=vocab)


def test_detect_writes_tsv_json_and_timelines_skips_bad_files_and_scores_against_a_reference(tmp_path):
    model = _export(tmp_path)
    clip = tmp_path / "clip.wav"
    sf.write(clip, (0.3 * np.sin(np.arange(16000 * 6) / 3)).astype(np.float32), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    # threshold 0: every class is active in every segment, so each class is one event over the whole clip
    reference = _write(tmp_path / "ref.tsv", [("clip.wav", 0.0, 6.0, "Noise"), ("clip.wav", 0.0, 6.0, "Tone")])
    out = tmp_path / "events"
    assert detect_cli.main(["--model", model, "--out", str(out), "--threshold", "0", "--class-threshold", "c2=1.01",
                            "--reference", reference, str(clip), str(broken)]) == 0
    rows = list(csv.DictReader((out / "events.tsv").open(), delimiter="\t"))
    assert [(r["filename"], float(r["onset"]), float(r["offset"]), r["event_label"]) for r in rows] == \
        [(str(clip), 0.0, 6.0, "Noise"), (str(clip), 0.0, 6.0, "Tone")]  # Click's threshold is out of reach
    doc = json.loads((out / "events.json").read_text())
    assert [s["filename"] for s in doc["skipped"]] == [str(broken)]
    assert doc["class_thresholds"]["Click"] == 1.01
    assert (out / "clip.timeline.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["event_based"]["f_measure"] == pytest.approx(1.0)


def test_detect_rejects_a_threshold_for_a_class_the_model_does_not_have(tmp_path, capsys):
    model = _export(tmp_path)
    with pytest.raises(SystemExit):
        detect_cli.main(["--model", model, "--out", str(tmp_path / "o"), "--class-threshold", "Cat=0.2", "x.wav"])
    assert "'Cat'" in capsys.readouterr().err


def test_per_class_thresholds_come_from_a_json_file_and_the_command_line_wins(tmp_path):
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(json.dumps({"dog": 0.3, "car": 0.7}))
    cfg = detect.DetectConfig("m", ("a.wav",), "out", thresholds_file=str(thresholds), class_thresholds=[("car", 0.9)])
    assert cfg.thresholds_by_label() == {"dog": 0.3, "car": 0.9}
    thresholds.write_text("[0.3]")
    with pytest.raises(ValueError, match="thresholds.json"):
        cfg.thresholds_by_label()


@pytest.mark.parametrize("cfg", [
    detect.DetectConfig("runs/r/model", ("a.wav", "dir/b c.wav"), "events"),
    detect.DetectConfig("s3://b/model", ("-x.wav",), "s3://b/ev", threshold=0.3, class_thresholds=(("Dog, bark", 0.6),),
                        thresholds_file="t.json", median_window=5, chunk_seconds=30.0, top_k=3, reference="ref.tsv",
                        t_collar=0.25, time_resolution=0.5),
])
def test_a_detect_config_renders_the_command_that_parses_back_to_it(cfg):
    argv = shlex.split(cfg.command())
    assert argv[:2] == ["weaksound", "detect"]
    assert detect_cli.config_from_args(detect_cli.build_parser().parse_args(argv[2:])) == cfg


def test_every_detect_option_states_its_default():
    for action in detect_cli.build_parser()._actions:
        if action.option_strings and action.dest not in ("help", "model", "out"):
            assert "default" in (action.help or ""), action.dest
