"""``deepspeed.io`` (from ds-aio): tensor swapping to NVMe for ZeRO-Infinity.

- :mod:`deepspeed.io.swap`: :class:`~deepspeed.io.swap.SwapFolder` (checked ``nvme_path``, removed
  on exit), :class:`~deepspeed.io.swap.SwapBufferPool`, :class:`~deepspeed.io.swap.TensorSwapper`.
- :mod:`deepspeed.io.optimizer_swapper`: optimizer state on NVMe, stepped one parameter at a time.
- :mod:`deepspeed.io.gds`: the GDS handle interface device ops packages implement.
- :mod:`deepspeed.io.config`: the ``aio`` ds_config section.

The I/O handle is DeepSpeed's ``AsyncIOBuilder().load().aio_handle(...)`` (``deepspeed.ops.aio``),
provided by the installed ops package; the tools are ``ds_io`` and ``ds_nvme_tune``
(``deepspeed.nvme``).
"""

from deepspeed.io._version import __version__

__all__ = ["__version__"]
