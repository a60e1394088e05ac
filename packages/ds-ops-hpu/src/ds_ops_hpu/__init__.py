"""ds-ops-hpu: the hpu accelerator plugin. Found by ds-core through entry points; not an API."""

from ds_ops_hpu._version import __version__

__all__ = ["__version__"]
