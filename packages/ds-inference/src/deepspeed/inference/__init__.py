"""``deepspeed.inference`` (from ds-inference): `init_inference` (AutoTP, kernel injection) and a FastGen-style ragged engine.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no inference API until the feature lands.
"""

from deepspeed.inference._version import __version__

__all__ = ["__version__"]
