"""trainer.augment: SpecAugment stays inside each clip's valid frames; mixup mixes inputs and weak labels alike."""
from __future__ import annotations

import pytest
import torch

from trainer.augment import mixup, spec_augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_spec_augment_masks_bands_only_inside_valid_frames():
    x = torch.ones(4, 1, 50, 16)
    frames = torch.tensor([50, 30, 10, 1])
    y = spec_augment(x, frames, time_masks=2, time_width=8, freq_masks=0, freq_width=0, generator=_gen())
    for i, n in enumerate(frames.tolist()):
        masked_frames = (y[i, 0].sum(dim=1) == 0).nonzero().flatten()
        assert all(f < n for f in masked_frames.tolist()), "a time mask reached into the padding"
    assert (y == 0).any(), "no frame was masked at all"
    assert y.shape == x.shape


def test_spec_augment_masks_whole_mel_bands_no_wider_than_asked():
    x = torch.ones(8, 1, 20, 32)
    y = spec_augment(x, torch.full((8,), 20), time_masks=0, time_width=0, freq_masks=1, freq_width=5,
                     generator=_gen(1))
    for i in range(8):
        zero_bins = (y[i, 0] == 0).all(dim=0)  # (M,) a masked bin is zero in every frame
        assert int(zero_bins.sum()) <= 5
        assert torch.equal(y[i, 0] == 0, zero_bins[None, :].expand(20, 32))


def test_spec_augment_is_repeatable_for_the_same_generator_state_and_off_when_asked():
    x = torch.randn(3, 1, 40, 16)
    frames = torch.tensor([40, 25, 12])
    kw = dict(time_masks=2, time_width=6, freq_masks=2, freq_width=4)
    assert torch.equal(spec_augment(x, frames, **kw, generator=_gen(7)), spec_augment(x, frames, **kw, generator=_gen(7)))
    off = spec_augment(x, frames, time_masks=0, time_width=6, freq_masks=0, freq_width=4, generator=_gen(7))
    assert torch.equal(off, x)
    with pytest.raises(ValueError, match="B, 1, T, n_mels"):
        spec_augment(x[:, 0], frames, **kw, generator=_gen())


def test_mixup_mixes_waveforms_and_label_vectors_with_the_same_weight():
    waves = torch.stack([torch.full((10,), 1.0), torch.full((10,), 3.0), torch.full((10,), -2.0)])
    targets = torch.eye(3)
    lengths = torch.tensor([10, 6, 8])
    mixed, mixed_len, mixed_y = mixup(waves, lengths, targets, alpha=0.4, generator=_gen(3))
    for i in range(3):
        # a mixture of constants a, b is lam*a + (1-lam)*b; its labels carry the same lam
        j = int(torch.argmax(mixed_y[i] * (torch.arange(3) != i))) if mixed_y[i, i] < 1 else i
        lam = float(mixed_y[i, i]) if j != i else 1.0
        expected = lam * waves[i, 0] + (1 - lam) * waves[j, 0]
        assert torch.allclose(mixed[i], torch.full((10,), float(expected)), atol=1e-6)
        assert torch.isclose(mixed_y[i].sum(), torch.tensor(1.0))
        assert int(mixed_len[i]) == max(int(lengths[i]), int(lengths[j]))


def test_mixup_with_alpha_zero_returns_the_batch_unchanged_and_leaves_the_global_rng_alone():
    waves, lengths, targets = torch.randn(4, 8), torch.tensor([8, 8, 5, 3]), torch.rand(4, 6)
    assert mixup(waves, lengths, targets, alpha=0.0, generator=_gen()) == (waves, lengths, targets)
    state = torch.random.get_rng_state()
    mixup(waves, lengths, targets, alpha=1.0, generator=_gen())
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match="alpha"):
        mixup(waves, lengths, targets, alpha=-1.0, generator=_gen())
