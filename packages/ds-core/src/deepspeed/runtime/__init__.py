"""``deepspeed.runtime``: the engine and its parts. Feature packages extend this package
(``deepspeed.runtime.zero`` comes from ds-zero)."""

import importlib
import importlib.util
import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)


def __getattr__(name):
    # Note: DeepSpeed's `import deepspeed` imports the runtime eagerly, and integrations rely on it:
    # Accelerate reads deepspeed.runtime.lr_schedules.VALID_LR_SCHEDULES after a bare
    # `import deepspeed`. Here a submodule (ours or a feature package's) is imported on first
    # attribute access instead, which keeps `import deepspeed` cheap.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
