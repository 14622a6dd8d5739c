"""trainer/model.py: the paper's N_S -- size, segment geometry, masked pooling."""
import pytest
import torch

from trainer.config import FrontEndConfig, ModelConfig, preset
from trainer.model import WeakLabelCNN, num_segments, pool_segments, segment_geometry


def _n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_network_has_the_papers_parameter_count():
    m = WeakLabelCNN(ModelConfig(num_classes=527), n_mels=128)
    assert _n_params(m) == 5_002_047  # arXiv 1711.01369, section 2
    assert _n_params(m) - _n_params(m.f2) == 4_461_872  # without F2


@pytest.mark.parametrize("frames,k", [(896, 13), (431, 5), (862, 12), (128, 1), (2584, 39)])
def test_segment_count_is_floor_t_over_64_minus_one(frames, k):
    m = WeakLabelCNN(ModelConfig(num_classes=10, f1_channels=32, channels=(4, 4, 4, 4, 4, 4)), 128).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 1, frames, 128))
    assert out.segments.shape == (1, k, 10) and out.f1.shape == (1, k, 32)
    assert num_segments(frames) == k


def test_segment_size_and_hop_in_seconds():
    seg, hop = segment_geometry(FrontEndConfig(), ModelConfig())
    assert seg == pytest.approx(1.4977, abs=1e-4)  # (127 * 512 + 1024) / 44100
    assert hop == pytest.approx(0.7430, abs=1e-4)  # 64 * 512 / 44100


def test_inputs_shorter_than_one_segment_are_padded_to_one_segment():
    m = WeakLabelCNN(ModelConfig(num_classes=3, f1_channels=8, channels=(4,) * 6), 128).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 1, 50, 128), torch.tensor([50, 20]))
    assert out.segments.shape == (2, 1, 3) and out.num_segments.tolist() == [1, 1]


def test_masked_pooling_ignores_segments_beyond_each_clip():
    v = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])  # (B=2, K=3, D=1)
    n = torch.tensor([2, 3])
    assert pool_segments(v, n, "avg")[:, 0].tolist() == [2.0, 4.0]
    assert pool_segments(v, n, "max")[:, 0].tolist() == [3.0, 6.0]


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_clip_scored_alone_equals_the_same_clip_inside_a_padded_batch(pooling):
    cfg = preset("cpu-small")
    torch.manual_seed(0)
    m = WeakLabelCNN(ModelConfig(**{**cfg.model.__dict__, "num_classes": 7, "pooling": pooling}),
                     cfg.frontend.n_mels)
    # make BN non-trivial so masking mistakes would show
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.5, 0.5)
    m.eval()
    lengths = [300, 97, 40, 181]  # frames; 40 < one segment (64)
    T = max(lengths)
    x = torch.zeros(len(lengths), 1, T, cfg.frontend.n_mels)
    for i, n in enumerate(lengths):
        x[i, 0, :n] = torch.randn(n, cfg.frontend.n_mels) * 10 - 30
    with torch.no_grad():
        batch = m(x, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone = m(x[i:i + 1, :, :n])
            k = int(batch.num_segments[i])
            assert k == alone.segments.shape[1] == num_segments(n, 5)
            torch.testing.assert_close(batch.clip[i], alone.clip[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch.segments[i, :k], alone.segments[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch.f1[i, :k], alone.f1[0], atol=1e-4, rtol=1e-5)


def test_wrong_mel_count_is_rejected_with_the_value():
    with pytest.raises(ValueError, match="n_mels=96"):
        WeakLabelCNN(ModelConfig(), n_mels=96)
