"""``deepspeed.runtime.checkpoint_engine``: checkpoint writers."""
