"""``deepspeed.utils``: logging and helpers. Feature packages extend it (``zero_to_fp32``,
``tensor_fragment`` and ``z3_leaf_module`` come from ds-zero)."""

import importlib
import importlib.util
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

from deepspeed.utils.logging import log_dist, logger, set_log_level_from_string  # noqa: E402

# Note: DeepSpeed exposes ZeRO helpers at deepspeed.utils; they live in feature packages and are
# resolved on first use (the generated provider table says where), so ds-core alone imports
# cleanly and a missing package is named in the error.
from deepspeed._providers import UTILS as _FROM_FEATURES  # noqa: E402


#: DeepSpeed's names at deepspeed.utils that live elsewhere in core (imported on first use).
_FROM_CORE = {"RepeatingLoader": "deepspeed.runtime.dataloader", "OnDevice": "deepspeed.utils.init_on_device"}


def __getattr__(name):
    if name in _FROM_CORE:
        value = getattr(importlib.import_module(_FROM_CORE[name]), name)
        globals()[name] = value
        return value
    if name in _FROM_FEATURES:
        module_name, dist = _FROM_FEATURES[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise AttributeError(
                f"deepspeed.utils.{name} is provided by {dist}, which is not installed. Fix: pip install {dist}"
            ) from exc
        value = getattr(module, name)
        globals()[name] = value
        return value
    # Note: submodules (deepspeed.utils.zero_to_fp32 from ds-zero, ...) as attributes after a bare
    # `import deepspeed`, as DeepSpeed's eager imports make them (deepspeed.runtime does the same).
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'deepspeed.utils' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_FROM_FEATURES) | set(_FROM_CORE))


__all__ = ["log_dist", "logger", "set_log_level_from_string"]
