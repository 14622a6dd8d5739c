"""Task "scenes": DCASE-like, 10 s clips, 4 folds, 4 clips per recording location.

Scenes share everything a clip-level spectrum sees. Every location draws its background colour
from one range and one ambience bed from one pool, whatever the scene, and every scene hears
the same spectral families of events: a high tonal sound, a train of transients, a low voiced
sound and a mid-band signal. A scene is which member of each family is frequent (tweets or
trills, clicks or a rattle, babble or a hummed tone, beeps or a siren); two members of one
family occupy the same band, and any two scenes differ in two or four families. Averaged
spectral statistics (the MFCC baseline) therefore separate scenes far less well than features
that recognise the individual events.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from data_prep.sources.synthetic.dsp import _poisson_times
from data_prep.sources.synthetic.kinds import _KINDS
from data_prep.sources.synthetic.plan import _PLAN, _RECORDING, SyntheticClip, _draw_params, _event, _jitter, _rng

_SCENES_DURATION_S = 10.0
_SCENES_FOLDS = 4
_SCENES_CLIPS_PER_LOCATION = 4
# Shared by every scene: background colour (power ~ f^-tilt), ambience beds (kind, SNR range dB).
_SCENE_TILT = (0.4, 1.8)
_SCENE_BEDS = ("hum", "noise_low", "am_noise_slow", "am_noise_fast")
_SCENE_BED_SNR_DB = (-8.0, 0.0)
# Spectral families: both members of a family fill the same band with different sounds.
_SCENE_FAMILIES = (("tweets", "trill"), ("clicks", "impulse_buzz"), ("babble", "tone_low"), ("beeps", "siren"))
# Every kind of the pool also occurs in every scene, rarely (rate per 10 s).
_SCENE_POOL = tuple(k for family in _SCENE_FAMILIES for k in family) + ("drips", "knock", "bell", "engine_buzz")
_SCENE_BASE_RATE = 0.2
_SCENE_RATE = 2.5            # events per 10 s of each of the scene's four kinds
_SCENE_MAX_PER_KIND = 6


@dataclass(frozen=True)
class _Scene:
    name: str
    members: tuple[int, int, int, int]   # per family, which member is frequent (an even-parity code)

    @property
    def rates(self) -> Mapping[str, float]:
        """kind -> expected events per 10 s on top of _SCENE_BASE_RATE."""
        return {family[m]: _SCENE_RATE for family, m in zip(_SCENE_FAMILIES, self.members)}


# The 8 even-parity codes over 4 families: any two scenes differ in at least two families.
_SCENES: dict[str, _Scene] = {
    "street": _Scene("Street traffic", (0, 1, 1, 0)),
    "park": _Scene("Park", (0, 0, 0, 0)),
    "office": _Scene("Office", (1, 0, 0, 1)),
    "cafe": _Scene("Cafe", (1, 0, 1, 0)),
    "beach": _Scene("Beach", (0, 0, 1, 1)),
    "metro_station": _Scene("Metro station", (1, 1, 1, 1)),
    "home": _Scene("Home", (1, 1, 0, 0)),
    "forest": _Scene("Forest", (0, 1, 0, 1)),
}
_SCENE_IDS = tuple(_SCENES)


def _plan_scenes(index: int, seed: int) -> SyntheticClip:
    n_classes = len(_SCENE_IDS)
    class_index, k = index % n_classes, index // n_classes
    location = k // _SCENES_CLIPS_PER_LOCATION
    fold = location % _SCENES_FOLDS + 1
    label = _SCENE_IDS[class_index]
    scene = _SCENES[label]
    loc = _rng(seed, "scenes", _RECORDING, class_index, location)
    clip = _rng(seed, "scenes", _PLAN, index)
    length = _SCENES_DURATION_S

    # Location: background colour, level, its ambience bed and how busy it is - none scene-specific.
    tilt = float(loc.uniform(*_SCENE_TILT))
    level = float(loc.uniform(-30.0, -18.0))
    bed = _SCENE_BEDS[int(loc.integers(len(_SCENE_BEDS)))]
    bed_snr = float(loc.uniform(*_SCENE_BED_SNR_DB))
    bed_params = _draw_params(loc, _KINDS[bed].ranges)
    busy = float(loc.uniform(0.6, 1.5))

    events = [_event(bed, 0.0, length, bed_snr, _jitter(bed_params, clip, 0.01))]
    for kind in _SCENE_POOL:
        spec = _KINDS[kind]
        rate = (_SCENE_BASE_RATE + scene.rates.get(kind, 0.0)) * busy
        for onset in _poisson_times(clip, rate / 10.0, length)[:_SCENE_MAX_PER_KIND]:   # rates are per 10 s
            duration = min(float(clip.uniform(*spec.duration)), length - onset)
            events.append(_event(kind, onset, duration, clip.uniform(0.0, 12.0), _draw_params(clip, spec.ranges)))
    return SyntheticClip(task="scenes", index=index, seed=seed, duration_s=length, labels=(label,),
                         split=f"fold{fold}", fold=fold, source_id=f"{label}-loc{location:03d}",
                         background_tilt=tilt, level_db=level + float(clip.uniform(-1.5, 1.5)),
                         events=tuple(events))
