"""``optimizer.params`` checked against the optimizer ``optimizer.type`` names, before it is built.

Each key must be a parameter of that optimizer (an unknown one gets a did-you-mean and the list of
valid ones), and well-known parameters must be in range: ``lr``, ``eps``, ``weight_decay``,
``momentum``, ``lr_decay``... ``>= 0``, ``betas`` two numbers in ``[0, 1)``, flags true/false.
Messages name the dotted key (``ds_config.optimizer.params.lr: must be a number >= 0 (got -0.1)``)
instead of torch's ``Invalid learning rate: -0.1`` or a TypeError from the constructor.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from typing import Any

import torch

from deepspeed.config.model import ConfigError

_PREFIX = "ds_config.optimizer.params"

#: Keys the factory itself reads (it picks the implementation from them).
_FACTORY_KEYS = {"adam": {"torch_adam", "adam_w_mode"}, "adamw": {"torch_adam", "adam_w_mode"}}
#: Where each DeepSpeed optimizer name may be built (module under deepspeed.ops, class), plus torch's.
_IMPLEMENTATIONS = {
    "adam": [("adam", "FusedAdam"), ("adam", "DeepSpeedCPUAdam"), (None, "AdamW")],
    "adamw": [("adam", "FusedAdam"), ("adam", "DeepSpeedCPUAdam"), (None, "AdamW")],
    "adagrad": [("adagrad", "DeepSpeedCPUAdagrad"), (None, "Adagrad")],
    "lamb": [("lamb", "FusedLamb")],
    "lion": [("lion", "FusedLion"), ("lion", "DeepSpeedCPULion")],
    "onebitadam": [("runtime.fp16.onebit", "OnebitAdam")],
    "zerooneadam": [("runtime.fp16.onebit", "ZeroOneAdam")],
    "onebitlamb": [("runtime.fp16.onebit", "OnebitLamb")],
}
#: Names people write for another optimizer's key.
_ALIASES = {"learning_rate": "lr", "epsilon": "eps", "beta1": "betas", "beta2": "betas", "beta": "betas",
            "wd": "weight_decay", "decay": "weight_decay", "weightdecay": "weight_decay"}

_NON_NEGATIVE = {"lr", "eps", "weight_decay", "momentum", "dampening", "lr_decay", "initial_accumulator_value",
                 "max_coeff", "min_coeff", "alpha", "rho", "lambd", "t0", "etas_min"}
_FLAGS = {"amsgrad", "bias_correction", "adam_w_mode", "adamw_mode", "torch_adam", "set_grad_none", "nesterov",
          "centered", "maximize", "foreach", "fused", "capturable", "differentiable", "eps_inside_sqrt",
          "fp32_optimizer_states", "decoupled_weight_decay"}


def _torch_params(cls) -> set[str]:
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return set()  # takes **kwargs: cannot check names
    return {n for n in sig.parameters if n not in ("self", "params")}


def _class(module: str | None, cls: str):
    if module is None:
        return getattr(torch.optim, cls, None)
    path = f"deepspeed.{module}" if module.startswith("runtime.") else f"deepspeed.ops.{module}"
    try:
        return getattr(__import__(path, fromlist=[cls]), cls, None)
    except ImportError:
        return None


def accepted(name: str) -> set[str]:
    """The keys ``optimizer.type=name`` accepts: the parameters of every implementation the
    factory may pick for it (empty: unknown, not checked)."""
    lname = name.lower()
    if lname in _IMPLEMENTATIONS:
        out = set(_FACTORY_KEYS.get(lname, ()))
        for module, cls in _IMPLEMENTATIONS[lname]:
            klass = _class(module, cls)
            if klass is not None:
                out |= _torch_params(klass) | ({"lr", "betas", "weight_decay"} if lname == "lion" else set())
        return out - {"model_params", "deepspeed"}
    torch_names = {n.lower(): n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)}
    if lname in torch_names:
        return _torch_params(getattr(torch.optim, torch_names[lname]))
    return set()


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) or (torch.is_tensor(v) and v.numel() == 1)


def _check_value(key: str, v: Any) -> str | None:
    """What is wrong with ``v`` for ``key`` (None when fine or not checked)."""
    if key in _FLAGS:
        return None if isinstance(v, bool) else "must be true or false"
    if key == "betas":
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            return "must be a list of two numbers, e.g. [0.9, 0.999]"
        for i, b in enumerate(v):
            if not _is_number(b):
                return f"must be a list of two numbers, e.g. [0.9, 0.999] (item {i} is {b!r})"
            if not 0.0 <= float(b) < 1.0:
                return f"must be two numbers in [0, 1) (item {i} is {b!r})"
        return None
    if key in _NON_NEGATIVE:
        if not _is_number(v):
            return "must be a number"
        if math.isnan(float(v)) or float(v) < 0:
            return "must be a number >= 0"
    return None


def check_optimizer_params(name: str, params: dict | None) -> None:
    """Raise one ConfigError listing every bad key of ``optimizer.params`` for ``optimizer.type=name``."""
    if not params:
        return
    valid = accepted(name)
    problems = []
    for key, value in params.items():
        if valid and key not in valid:
            alias = _ALIASES.get(key.lower())
            close = [alias] if alias in valid else difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.5)
            hint = f"; did you mean 'optimizer.params.{close[0]}'?" if close else ""
            problems.append(f"{_PREFIX}.{key}: unknown parameter of optimizer {name!r}{hint} "
                            f"(valid: {', '.join(sorted(valid))})")
            continue
        wrong = _check_value(key, value)
        if wrong:
            problems.append(f"{_PREFIX}.{key}: {wrong} (got {value!r})")
    if problems:
        raise ConfigError("\n".join(problems))
