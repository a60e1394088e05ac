"""The base of every ds_config section model, and the helpers that turn pydantic errors into
messages a user can act on ("unknown key 'fp16.loss_scal'; did you mean 'fp16.loss_scale'?").

Sections are pydantic v2 models that forbid unknown keys. ``"auto"`` values are dropped before
validation so the field takes its default (DeepSpeed's behaviour; Hugging Face fills them in
before the config reaches us when it can). Deprecated fields follow DeepSpeed's convention:
``Field(json_schema_extra={"deprecated": True, "new_param": "...", "new_param_fn": f})``.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, ClassVar, Iterable

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from deepspeed._errors import InputError
from deepspeed.config._scalars import refuse_string_scalar
from deepspeed.utils.logging import logger

AUTO = "auto"


def _is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


class ConfigError(InputError):
    """A ds_config problem. A ValueError (our convention for bad input) that is also an
    AssertionError, the type DeepSpeed raises for most config problems (``assert`` in its config
    code), so ``except ValueError`` and ``except AssertionError`` / ``pytest.raises(AssertionError)``
    written for DeepSpeed both catch it."""


class _DeprecatedConflict(ValueError):
    """Raised inside validation when a deprecated key and its replacement are both set."""


class DeepSpeedConfigModel(BaseModel):
    """Base of ds_config section models: unknown keys are errors, ``"auto"`` means "default".

    Subclasses declare fields with DeepSpeed's names and defaults. A field may carry
    ``json_schema_extra={"deprecated": True, "new_param": "<field>", "new_param_fn": f,
    "set_new_param": True}``; setting it logs a warning and, unless ``set_new_param`` is False,
    sets ``new_param`` to ``new_param_fn(value)`` (or the value itself).
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_default=True,
        validate_assignment=True,
        populate_by_name=True,
        arbitrary_types_allowed=True,
        use_enum_values=True,
        protected_namespaces=(),
    )
    _deprecated_mapped: bool = PrivateAttr(default=False)
    #: Dotted ds_config key of this section, for messages (e.g. "zero_optimization").
    _config_path: ClassVar[str] = ""

    def __init__(self, strict: bool = False, **data: Any) -> None:
        # Note: DeepSpeed's models take `strict` as a constructor flag (no "auto" dropping when
        # True); keep the signature so feature code written against DeepSpeed works.
        if strict:
            for key, value in data.items():
                if _is_auto(value):
                    raise ValueError(f"ds_config: '{key}' is \"auto\", which strict parsing does not allow")
        try:
            super().__init__(**data)
        except ValidationError as exc:
            # Note: DeepSpeed asserts when a deprecated key comes with its replacement; re-raise
            # that case as ConfigError (also an AssertionError), keeping our message.
            conflicts = [str(e["ctx"]["error"]) for e in exc.errors(include_url=False)
                         if isinstance((e.get("ctx") or {}).get("error"), _DeprecatedConflict)]
            if conflicts and len(conflicts) == len(exc.errors()):
                raise ConfigError("\n".join(conflicts)) from None
            raise

    @field_validator("*", mode="before")
    @classmethod
    def _no_string_scalars(cls, value: Any, info: ValidationInfo) -> Any:
        # Note: no silent coercion of "yes"/"32" into bool/int fields (deepspeed.config._scalars).
        return refuse_string_scalar(cls, value, info.field_name)

    @model_validator(mode="before")
    @classmethod
    def _drop_auto(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kept = {}
        for key, value in data.items():
            if _is_auto(value) and key not in cls._auto_kept_fields():
                logger.info(f"ds_config: '{cls._dotted(key)}' is \"auto\"; using its default")
                continue
            kept[key] = value
        return kept

    @classmethod
    def _dotted(cls, key: str) -> str:
        return f"{cls._config_path}.{key}" if cls._config_path else key

    @classmethod
    def _auto_kept_fields(cls) -> frozenset[str]:
        """Fields for which "auto" is a real value, not "use the default" (none by default)."""
        return frozenset()

    @model_validator(mode="after")
    def _map_deprecated(self) -> "DeepSpeedConfigModel":
        # Note: validate_assignment re-runs after-validators; map (and warn) only once.
        if self._deprecated_mapped:
            return self
        self._deprecated_mapped = True
        fields = type(self).model_fields
        by_key = {}
        for fname, f in fields.items():
            by_key[fname] = fname
            if f.alias:
                by_key[f.alias] = fname
        for name in list(self.model_fields_set):
            field = fields.get(name)
            extra = field.json_schema_extra if field is not None else None
            if not isinstance(extra, dict) or not extra.get("deprecated"):
                continue
            old_key = self._dotted(field.alias or name)
            new_key = extra.get("new_param", "")
            logger.warning(f"ds_config: '{old_key}' is deprecated" + (f"; use '{self._dotted(new_key)}' instead" if new_key else ""))
            target = by_key.get(new_key)
            if target is None or not extra.get("set_new_param", True):
                continue
            if target in self.model_fields_set:
                # Note: DeepSpeed's wording first (scripts match on it), then ours.
                raise _DeprecatedConflict(
                    f"Cannot provide deprecated parameter '{name}' and replacing parameter '{new_key}' together: "
                    f"'{old_key}' is deprecated and '{self._dotted(new_key)}' is also set; remove '{old_key}'")
            fn = extra.get("new_param_fn", lambda v: v)
            # Note: write through __dict__ so validate_assignment does not re-run this validator.
            self.__dict__[target] = fn(getattr(self, name))
        return self


# ---------------------------------------------------------------------------------------------
# Error formatting
# ---------------------------------------------------------------------------------------------


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """BaseModel subclasses reachable from a field annotation (through Optional, Union, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            out.extend(_model_classes(arg))
    return out


def _container_value(annotation: Any) -> list[type[BaseModel]]:
    """Models inside a dict/list annotation (``dict[str, Model]``, ``list[Model]``)."""
    out: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (dict, typing.Dict) and len(args) == 2:
        out.extend(_model_classes(args[1]))
    elif origin in (list, typing.List, tuple) and args:
        out.extend(_model_classes(args[0]))
    elif origin in (typing.Union, types.UnionType):
        for arg in args:
            out.extend(_container_value(arg))
    return out


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a user may write for ``model`` (aliases and names)."""
    names = []
    for name, field in model.model_fields.items():
        if field.alias and field.alias != name:
            names.append(field.alias)
        names.append(name)
    extra = getattr(model, "_extra_key_names", None)
    if callable(extra):
        names.extend(extra())
    return names


def _models_at(root: type[BaseModel], loc: Iterable[Any]) -> tuple[list[type[BaseModel]], list[str]]:
    """Follow ``loc`` (a pydantic error location) from ``root``; return the models reached and
    the user-facing path (union tags and container indices are resolved, not printed)."""
    current: list[type[BaseModel]] = [root]
    path: list[str] = []
    pending_container: list[type[BaseModel]] = []
    for part in loc:
        if pending_container:
            # a dict key or list index inside a container of models
            current, pending_container = pending_container, []
            path.append(str(part))
            continue
        by_tag = [m for m in current if m.__name__ == part]
        if by_tag:  # a union member tag
            current = by_tag
            continue
        found = False
        for model in current:
            for name, field in model.model_fields.items():
                if part in (name, field.alias):
                    path.append(field.alias or name)
                    current = _model_classes(field.annotation)
                    pending_container = [] if current else _container_value(field.annotation)
                    found = True
                    break
            if found:
                break
        if not found:
            path.append(str(part))
            current = []
    return current, path


def format_errors(exc: ValidationError, root: type[BaseModel], prefix: str = "ds_config") -> list[str]:
    """One line per error of ``exc`` (raised while validating ``root``), naming the dotted key,
    the value, and for an unknown key the closest valid key."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"]]
        if err["type"] == "extra_forbidden":
            parents, parent_path = _models_at(root, loc[:-1])
            key = str(loc[-1])
            dotted = ".".join(parent_path + [key])
            candidates: list[str] = []
            for model in parents:
                candidates.extend(field_names(model))
            candidates = [c for c in candidates if c != key]  # Note: never suggest the key itself
            close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
            if close:
                hint = f"; did you mean '{'.'.join(parent_path + [close[0]])}'?"
            elif candidates:
                where = "'" + ".".join(parent_path) + "'" if parent_path else "the top level"
                hint = f" (valid keys at {where}: {', '.join(sorted(set(candidates)))})"
            else:
                hint = ""
            lines.append(f"{prefix}: unknown key '{dotted}'{hint}")
            continue
        _, path = _models_at(root, loc)
        dotted = ".".join(path)
        value = err.get("input")
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        where = f"{prefix}.{dotted}" if dotted else prefix
        if err["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        elif isinstance(value, (dict, list)) or not dotted or f"(got {value!r})" in msg or f"(got {value})" in msg:
            lines.append(f"{where}: {msg}")
        else:
            lines.append(f"{where}: {msg} (got {value!r})")
    # Note: unions of several types repeat one problem per member; keep the first of each line.
    seen: set[str] = set()
    unique = []
    for line in lines:
        if line not in seen:
            seen.add(line)
            unique.append(line)
    return unique


def validate_model(model: type[BaseModel], data: Any, prefix: str) -> BaseModel:
    """Validate ``data`` as ``model``; a ValidationError becomes one ValueError listing every
    problem with its dotted key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValueError("\n".join(format_errors(exc, model, prefix))) from None
