"""``deepspeed.runtime.comm``: the compressed-communication backends DeepSpeed scripts import
(``nccl.NcclBackend``, ``mpi.MpiBackend``, ``hccl.HcclBackend``, ``compressed.CompressedBackend``).
All are :class:`deepspeed.comm.compressed.CompressedBackend`, which runs on every backend."""
