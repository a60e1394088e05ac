"""No silent string coercion in ds_config: a boolean or numeric key given as a JSON string.

pydantic's lax mode turns ``"yes"`` into True and ``"32"`` into 32, so ``"fp16": {"enabled":
"yes"}`` or ``"train_batch_size": "32"`` would pass unnoticed. :func:`refuse_string_scalar` runs
before every field of every section (:class:`~deepspeed.config.model.DeepSpeedConfigModel`) and
refuses a string for a field whose type is only bool, int or float (optionally None). Fields with
their own "before" validator (they parse strings on purpose, e.g. ``steps_per_print: "inf"``) and
``"auto"`` (dropped earlier) are left alone.
"""

from __future__ import annotations

import types
import typing
from typing import Any

_KINDS = {bool: "true or false", int: "an integer", float: "a number"}
_EXAMPLE = {bool: "true", int: "32", float: "0.001"}


def scalar_types(annotation: Any) -> tuple[type, ...] | None:
    """The scalar types (bool/int/float) an annotation allows, or None when it allows anything
    else too (str, Literal, models, containers, Any)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return scalar_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            inner = scalar_types(arg)
            if inner is None:
                return None
            out.extend(inner)
        return tuple(out) or None
    if annotation in _KINDS:
        return (annotation,)
    return None


def _has_own_before_validator(cls, field: str) -> bool:
    decorators = getattr(cls, "__pydantic_decorators__", None)
    if decorators is None:
        return False
    for dec in decorators.field_validators.values():
        if dec.info.mode in ("before", "wrap", "plain") and field in dec.info.fields and "*" not in dec.info.fields:
            return True
    return False


def refuse_string_scalar(cls, value: Any, field: str | None) -> Any:
    """``value`` unchanged, unless it is a string for a bool/int/float-only field: then ValueError."""
    if not isinstance(value, str) or field is None or value.strip().lower() == "auto":
        return value
    info = cls.model_fields.get(field)
    if info is None:
        return value
    kinds = scalar_types(info.annotation)
    if not kinds or _has_own_before_validator(cls, field):
        return value
    main = bool if bool in kinds else (int if kinds == (int,) else float)
    raise ValueError(f"must be {_KINDS[main]}, written without quotes (e.g. {_EXAMPLE[main]}), not a string")
