"""weaksound trainer: the weak-label CNN of Kumar et al. (ICASSP 2018, arXiv 1711.01369) trained with Ray Train.

Pure pieces (no Ray): config, frontend, model, augment, losses, metrics, bucketing, batch_plan,
sampling, collate, checkpoint, export, finetune, meter.
The engine (engine, distributed, reporter, run_state) is shared by N_S training (loop) and the
N_T adaptation in transfer/; data streams shards per rank (data) or through Ray Data
(ray_data_input), train_input picks one per epoch; mid_epoch (step checkpoints and resume) and
clip_log (the per-step clip audit) serve loop; main is the driver and CLI.
"""
