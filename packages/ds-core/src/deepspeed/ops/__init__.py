"""``deepspeed.ops``: optimizers and ops backed by native kernels from the ops packages."""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)
