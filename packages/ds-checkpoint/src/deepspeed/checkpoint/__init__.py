"""``deepspeed.checkpoint`` (from ds-checkpoint): universal checkpoints, resharding, an async checkpoint engine.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no checkpoint API until the feature lands.
"""

from deepspeed.checkpoint._version import __version__

__all__ = ["__version__"]
