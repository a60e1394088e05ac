"""``deepspeed.runtime.activation_checkpointing``: activation checkpointing
(:mod:`.checkpointing`, re-exported as ``deepspeed.checkpointing``)."""
