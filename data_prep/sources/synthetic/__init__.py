"""The embedded default corpus: weakly labelled "web-like" audio, generated on the fly.

Nothing is downloaded: every clip is a pure function of ``(task, index, seed)``. A record's
``audio`` is a location string such as ``"synthetic:source/123?seed=0"`` and
``render_synthetic(location, sample_rate)`` regenerates exactly the same waveform from it in any
process (per-clip generators come from ``numpy.random.SeedSequence(seed, spawn_key=...)``; no
global RNG is touched). Bytes are identical for the same numpy version on the same kind of CPU
(numpy's SIMD float32 ``sin`` may differ in the last bit between instruction sets). Rendering is
vectorised numpy, about 1-3 ms per second of audio at 44.1 kHz.

Three tasks (see ``SYNTHETIC_TASKS``):

``source``  the pre-training corpus. 27 sound-event classes with clearly different signatures
            (harmonic tones with vibrato at three pitches, a chord, rising/falling chirps, sirens,
            trills, bleeps, tweets, beeps, a pulsed tone, mains hum, an engine-like buzz,
            band-limited noise bursts in three bands, slow and fast amplitude-modulated noise,
            ticks, an impulse buzz, random clicks, crackle, knocks, drips, a bell and speech-like
            babble). Each clip holds 1-4 event classes (long clips repeat them) at random times
            over coloured background noise, each at its own SNR (2-20 dB); the class prior is
            long-tailed. Clip lengths are log-normal (median 3 s) clipped to 0.5-60 s. Labels are
            clip-level only. Splits: ``train`` (85 %) / ``eval`` (15 %).
``events``  an ESC-50-like transfer task: 12 classes of single-label 5 s clips, 5 folds. Some
            classes are variants the source never labels (barking = short fast-vibrato bursts,
            church bells = low repeated bell), others combinations of two source events
            (rain = crackle + hiss, engine = low buzz + rumble). Clips come in pairs cut from one
            "source recording" (shared parameters, background and ambience, ``source_id``), and
            both clips of a recording are in the same fold. Unlabelled distractor sounds (source
            event kinds) play under the target, as in real field recordings.
``scenes``  a DCASE-like acoustic scene task: 8 scenes of 10 s clips, 4 folds. Scenes share
            background colours, ambience beds and event types; a scene is only which member of
            each of four spectral families of events is frequent, so clip-averaged spectra
            (the MFCC baseline) separate scenes much less well than event-aware features.
            ``source_id`` is the recording location (4 clips each), never split across folds.

Module map: ``plan`` (locations, seeds, clip plans), ``dsp`` (signal helpers), ``kinds`` (the
27 event generators), ``source_task`` / ``events_task`` / ``scenes_task`` (one planner each),
``api`` (tasks, listings, rendering), ``reference`` (strong reference labels per clip).

Example:
    >>> listing = load_synthetic("source", num_clips=8)
    >>> listing.records[0].audio
    'synthetic:source/0?seed=0'
    >>> wave = render_synthetic(listing.records[0].audio, 16000)
    >>> wave.dtype, wave.ndim
    (dtype('float32'), 1)
"""
from __future__ import annotations

from data_prep.sources.synthetic.api import (SYNTHETIC_TASKS, SyntheticTask, load_synthetic, plan_synthetic,
                                             render_plan, render_synthetic)
from data_prep.sources.synthetic.plan import (MIN_SAMPLE_RATE, SyntheticClip, SyntheticEvent,
                                              parse_synthetic_location, synthetic_location)
from data_prep.sources.synthetic.reference import reference_events

__all__ = ["MIN_SAMPLE_RATE", "SYNTHETIC_TASKS", "SyntheticClip", "SyntheticEvent", "SyntheticTask",
           "load_synthetic", "parse_synthetic_location", "plan_synthetic", "reference_events", "render_plan",
           "render_synthetic", "synthetic_location"]
