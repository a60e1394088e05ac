"""``deepspeed.moe`` (from ds-moe): the MoE layer, top-k gating, expert parallelism.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no moe API until the feature lands.
"""

from deepspeed.moe._version import __version__

__all__ = ["__version__"]
