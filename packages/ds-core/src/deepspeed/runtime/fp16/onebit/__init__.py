"""``deepspeed.runtime.fp16.onebit``: the 1-bit optimizers (``optimizer.type`` ``OneBitAdam``,
``ZeroOneAdam``, ``OneBitLamb``), whose data-parallel communication after the warm-up is the
error-compensated 1-bit all-reduce of :mod:`deepspeed.comm.compressed`."""

from deepspeed.runtime.fp16.onebit.adam import OnebitAdam
from deepspeed.runtime.fp16.onebit.lamb import OnebitLamb
from deepspeed.runtime.fp16.onebit.zoadam import ZeroOneAdam

__all__ = ["OnebitAdam", "OnebitLamb", "ZeroOneAdam"]
