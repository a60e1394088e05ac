"""``deepspeed.config``: the base of every ds_config section model and the error formatting.

It imports nothing else from ds-core, so any package (comm, monitor, profiling, features) can
define its section here without importing the engine. The parsed config object is
:class:`deepspeed.runtime.config.DeepSpeedConfig` (DeepSpeed's path).
"""

from deepspeed.config.model import AUTO, ConfigError, DeepSpeedConfigModel, format_errors, validate_model

__all__ = ["AUTO", "ConfigError", "DeepSpeedConfigModel", "format_errors", "validate_model"]
