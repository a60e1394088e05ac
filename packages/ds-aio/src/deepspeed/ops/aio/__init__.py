"""``deepspeed.ops.aio`` (DeepSpeed's path, from ds-aio): ``AsyncIOBuilder`` and ``GDSBuilder``.

``AsyncIOBuilder().load().aio_handle(block_size, queue_depth, single_submit, overlap_events,
intra_op_parallelism)`` is the host handle of the installed ops package (ds-ops-cpu's
``async_io`` op). GDS (GPU Direct Storage) handles are an ops-package feature too: the interface
they implement is :class:`deepspeed.io.gds.GDSHandleInterface`; on a CPU-only install
``GDSBuilder().load()`` raises naming what to install.
"""

from deepspeed.ops.op_builder import AsyncIOBuilder, GDSBuilder

__all__ = ["AsyncIOBuilder", "GDSBuilder"]
