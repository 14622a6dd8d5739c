"""Embedding extraction: per-clip F1/F2 segment outputs and max/avg mappings, resumable,
independent of batch composition, and identical between the Ray actors and in-process."""
from __future__ import annotations

import os

import numpy as np
import torch

from audio_fixtures import VOCAB, make_listing
from data_prep.pipeline import run_prep
from data_prep.shards import ShardConfig, iter_shard
from inference.embed_metrics import EMBED_METRICS
from runtime.telemetry import Telemetry
from trainer.config import preset
from trainer.export import export_model, load_exported
from trainer.model import WeakLabelCNN
from inference.config import EmbedConfig
from inference.embed import embed_samples, load_embeddings, run_embed


def _dataset_and_model(tmp_path):
    listing, _ = make_listing(tmp_path / "audio", n_good=10)
    data = str(tmp_path / "data")
    run_prep(listing, data, ShardConfig(sample_rate=16000, max_clips_per_shard=4), executor="local", progress=False)
    cfg = preset("cpu-small")
    arch = cfg.model.__class__(**{**cfg.model.__dict__, "num_classes": 5})
    torch.manual_seed(0)
    model = WeakLabelCNN(arch, n_mels=cfg.frontend.n_mels).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    vocab = [{"index": i, "id": f"c{i}", "name": f"Class {i}"} for i in range(5)]
    model_url = export_model(str(tmp_path / "model"), model, frontend=cfg.frontend, architecture=arch,
                             vocabulary=vocab)
    return data, model_url


def test_an_embedding_does_not_depend_on_the_other_clips_in_its_batch(tmp_path):
    data, model_url = _dataset_and_model(tmp_path)
    exported = load_exported(model_url)
    log_mel = exported.log_mel()
    from data_prep.manifest import read_manifest

    samples = [s for url in read_manifest(data).shard_urls() for s in iter_shard(url)]
    together = embed_samples(exported, log_mel, samples, batch_seconds=1e6)  # one padded batch
    alone = embed_samples(exported, log_mel, samples, batch_seconds=1e-6)    # one clip per batch
    assert together["key"].tolist() == alone["key"].tolist()
    assert np.array_equal(together["seg_offsets"], alone["seg_offsets"])
    for name in ("f1_seg", "f2_seg", "f1_max", "f1_avg", "f2_max", "f2_avg"):
        np.testing.assert_allclose(together[name], alone[name], rtol=1e-4, atol=1e-5, err_msg=name)
    # K = floor(T/32) - 1 segments for the 5-block preset (T frames, at least one segment)
    durations = together["duration_s"]
    frames = np.floor(durations * 16000 / 256).astype(int) + 1
    expected_k = np.maximum(frames // 32 - 1, 1)
    assert np.diff(together["seg_offsets"]).tolist() == expected_k.tolist()


def test_extraction_with_ray_actors_matches_in_process_and_resumes(tmp_path, ray_local):
    data, model_url = _dataset_and_model(tmp_path)
    local, distributed = str(tmp_path / "emb_local"), str(tmp_path / "emb_ray")
    # a prometheus_client Telemetry stays in this process: the embedder (local) or the driver (ray) counts
    tel = Telemetry("prometheus", EMBED_METRICS, run="emb")
    run_embed(EmbedConfig(model_url, data, local, executor="local", progress=False), telemetry=tel)
    summary = run_embed(EmbedConfig(model_url, data, distributed, progress=False), telemetry=tel)
    assert summary.clips == 10 and summary.shards_skipped == 0
    from prometheus_client.parser import text_string_to_metric_families

    counted = [(s.labels, s.value) for f in text_string_to_metric_families(tel.text()) for s in f.samples
               if s.name == "weaksound_embed_clips_total"]
    assert counted == [({"run": "emb", "kind": "embed"}, 20.0)]  # 10 clips, embedded twice
    a, b = load_embeddings(local), load_embeddings(distributed)
    assert a.arrays["clip_id"].tolist() == b.arrays["clip_id"].tolist()
    np.testing.assert_allclose(a.arrays["f1_max"], b.arrays["f1_max"], rtol=1e-4, atol=1e-5)
    assert sorted(a.arrays["clip_id"].tolist()) == sorted(f"good_{i}" for i in range(10))
    assert a.arrays["f1_max"].shape == (10, 128) and a.arrays["f2_avg"].shape == (10, 5)
    labels = dict(zip(a.arrays["clip_id"].tolist(), a.labels()))
    assert labels["good_1"] == [VOCAB.index("tone")] and labels["good_0"] == [0, 1]

    # resume: one shard's output lost -> only that shard is recomputed
    first = os.path.join(distributed, "shards", "train-000000.npz")
    os.remove(first)
    again = run_embed(EmbedConfig(model_url, data, distributed, progress=False))
    from data_prep.manifest import read_manifest

    assert again.shards_done == 1 and again.shards_skipped == len(read_manifest(data).shards) - 1
    assert os.path.exists(first)
    c = load_embeddings(distributed)
    np.testing.assert_allclose(c.arrays["f2_seg"], b.arrays["f2_seg"], rtol=1e-4, atol=1e-5)


def test_the_embed_command_line_stands_for_exactly_its_config():
    """`weaksound embed` is a thin parser: the config it builds renders back to the same command."""
    import shlex

    from inference import embed_cli

    for cfg in (EmbedConfig("runs/r 1/model", "s3://b/esc50", "emb/esc50"),
                EmbedConfig("m", "d", "o", split="eval", batch_seconds=12.5, actors=3, executor="local",
                            address="10.0.0.1:6379", progress=False, metrics_port=9101, metrics_linger_s=0.0,
                            on_mismatch="redo")):
        argv = shlex.split(cfg.command())
        assert argv[:2] == ["weaksound", "embed"]
        assert embed_cli.config_from_args(embed_cli.build_parser().parse_args(argv[2:])) == cfg
    for action in embed_cli.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in action.help or "required" in action.help, action.dest
