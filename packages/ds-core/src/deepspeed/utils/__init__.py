"""``deepspeed.utils``: logging and helpers. Feature packages extend it (``zero_to_fp32`` comes
from ds-zero)."""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

from deepspeed.utils.logging import log_dist, logger  # noqa: E402

__all__ = ["log_dist", "logger"]
