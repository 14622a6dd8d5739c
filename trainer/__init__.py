"""weaksound trainer: the weak-label CNN of Kumar et al. (ICASSP 2018) trained with Ray Train.

Pure pieces (no Ray): config, frontend, model, metrics, bucketing, checkpoint, export.
Ray pieces: data (shard streaming), loop (per-worker training function), main (driver/CLI).
"""
