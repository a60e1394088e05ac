"""Old path of the ds_config section base (kept for feature code written against it); the
implementation is :mod:`deepspeed.config.model`."""

from deepspeed.config.model import (  # noqa: F401
    AUTO,
    DeepSpeedConfigModel,
    _is_auto,
    field_names,
    format_errors,
    validate_model,
)
