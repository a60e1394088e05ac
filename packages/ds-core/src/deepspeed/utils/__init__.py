"""``deepspeed.utils``: logging and helpers. Feature packages extend it (``zero_to_fp32``,
``tensor_fragment`` and ``z3_leaf_module`` come from ds-zero)."""

import importlib
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

from deepspeed.utils.logging import log_dist, logger  # noqa: E402

# Note: DeepSpeed exposes ZeRO helpers at deepspeed.utils; they live in ds-zero and are resolved on
# first use, so ds-core alone imports cleanly and a missing ds-zero is named in the error.
_FROM_FEATURES = {
    **{name: ("deepspeed.utils.tensor_fragment", "ds-zero") for name in (
        "safe_get_full_fp32_param", "safe_set_full_fp32_param", "safe_get_full_grad", "safe_set_full_grad",
        "safe_get_full_optimizer_state", "safe_set_full_optimizer_state", "safe_get_local_fp32_param",
        "safe_set_local_fp32_param", "safe_get_local_grad", "safe_set_local_grad",
        "safe_get_local_optimizer_state", "safe_set_local_optimizer_state")},
    **{name: ("deepspeed.utils.z3_leaf_module", "ds-zero") for name in (
        "set_z3_leaf_modules", "unset_z3_leaf_modules", "get_z3_leaf_modules", "z3_leaf_module",
        "z3_leaf_parameter")},
}


def __getattr__(name):
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
    raise AttributeError(f"module 'deepspeed.utils' has no attribute '{name}'")


__all__ = ["log_dist", "logger", *_FROM_FEATURES]
