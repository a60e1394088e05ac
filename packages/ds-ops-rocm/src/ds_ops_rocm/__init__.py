"""ds-ops-rocm: the rocm accelerator plugin. Found by ds-core through entry points; not an API."""

from ds_ops_rocm._version import __version__

__all__ = ["__version__"]
