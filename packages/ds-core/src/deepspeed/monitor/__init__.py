"""``deepspeed.monitor``: training-metric monitors (TensorBoard, WandB, CSV, Comet) behind
``MonitorMaster`` (:mod:`.monitor`); their config sections are in :mod:`.config`."""
