"""``deepspeed.runtime.comm.mpi.MpiBackend``: DeepSpeed's name for the 1-bit compressed all-reduce
backend; here it is :class:`deepspeed.comm.compressed.CompressedBackend` (any torch.distributed
backend, no cupy/mpi4py needed)."""

from deepspeed.comm.compressed import CompressedBackend

MpiBackend = CompressedBackend
__all__ = ["MpiBackend"]
