"""``deepspeed.runtime.fp16``: loss scaling for fp16 training (:mod:`.loss_scaler`)."""
