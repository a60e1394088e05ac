"""``deepspeed.monitor``: training-metric monitors (TensorBoard, WandB, CSV, Comet)."""
