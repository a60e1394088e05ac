"""ds-ops-npu: the npu accelerator plugin. Found by ds-core through entry points; not an API."""

from ds_ops_npu._version import __version__

__all__ = ["__version__"]
