"""``deepspeed.runtime``: the engine and its parts. Feature packages extend this package
(``deepspeed.runtime.zero`` comes from ds-zero)."""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
