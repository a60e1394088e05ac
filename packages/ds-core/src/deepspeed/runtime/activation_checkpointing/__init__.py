"""``deepspeed.runtime.activation_checkpointing``: activation checkpointing."""
