"""``deepspeed.ops.lamb``: the LAMB optimizer (``FusedLamb``; a pure-PyTorch implementation)."""

from deepspeed.ops.lamb.fused_lamb import FusedLamb

__all__ = ["FusedLamb"]
