"""Inference with an exported model: embedding extraction (``inference.embed``) and clip tagging with a
segment timeline (``inference.tag``). Reads shards or audio files; knows nothing of transfer experiments."""
