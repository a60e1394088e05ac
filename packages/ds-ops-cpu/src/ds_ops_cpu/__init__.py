"""ds-ops-cpu: the CPU accelerator plugin and its host kernels. Found by ds-core through entry
points; not an API."""

from ds_ops_cpu._version import __version__

__all__ = ["__version__"]
