"""Accelerator selection: explicit ``set_accelerator`` -> ``DS_ACCELERATOR`` -> the available plugin
with the highest priority -> the plain CPU accelerator (no kernels).

``priority`` is a class attribute of each accelerator (an int, higher wins among the available
ones). This repository's plugins use: device accelerators 40-50 (cuda and rocm 50; xpu, hpu,
npu 40), ds-ops-cpu's CPU accelerator 0, core's plain CPU fallback -100 (never a plugin; used
only when no plugin is available). Two available plugins with the same highest priority are an
error naming both: the choice is the user's (``DS_ACCELERATOR``), never alphabetical.
"""

from __future__ import annotations

import os
import threading

from deepspeed import _plugins
from deepspeed.accelerator.abstract_accelerator import DeepSpeedAccelerator
from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

_lock = threading.RLock()
_accelerator: DeepSpeedAccelerator | None = None
_reason: str = ""


def _validate(obj: object) -> DeepSpeedAccelerator:
    if not isinstance(obj, DeepSpeedAccelerator):
        raise ValueError(
            f"set_accelerator expects an instance of deepspeed.accelerator.DeepSpeedAccelerator, "
            f"got {type(obj).__module__}.{type(obj).__name__}. Fix: subclass DeepSpeedAccelerator."
        )
    return obj


def _instantiate(plugin: _plugins.Plugin) -> DeepSpeedAccelerator:
    cls = plugin.load()
    if not (isinstance(cls, type) and issubclass(cls, DeepSpeedAccelerator)):
        raise _plugins.PluginError(
            f"plugin '{plugin.name}' ({plugin.group}) from {plugin.distribution} {plugin.version} "
            f"points at {plugin.value}, which is not a DeepSpeedAccelerator subclass. "
            f"Fix: reinstall or uninstall {plugin.distribution}."
        )
    return cls()


def _from_env(name: str) -> tuple[DeepSpeedAccelerator, str]:
    plugins = _plugins.accelerators()
    if name not in plugins:
        if name == "cpu":
            return CPU_Accelerator(), "DS_ACCELERATOR=cpu (core CPU accelerator; pip install ds-ops-cpu for CPU kernels)"
        names = [f"{n} ({p.distribution})" for n, p in plugins.items()]
        if "cpu" not in plugins:
            names.insert(0, "cpu (ds-core, no kernels)")
        installed = ", ".join(names)
        hint = _plugins.provider_hint(_plugins.ACCELERATORS, name)
        fix = f"pip install {hint}" if hint else "check the spelling or install the vendor's ds-ops package"
        raise ValueError(
            f"DS_ACCELERATOR={name}: no accelerator named '{name}' is installed "
            f"(group {_plugins.ACCELERATORS}). Installed: {installed}. Fix: {fix}, or unset DS_ACCELERATOR."
        )
    plugin = plugins[name]
    cls = plugin.load()
    if not cls.is_available():
        raise RuntimeError(
            f"DS_ACCELERATOR={name}: the {name} accelerator ({plugin.distribution} {plugin.version}) is "
            f"installed but not available on this machine: {cls.unavailable_reason()}. "
            f"Fix: unset DS_ACCELERATOR to pick an available accelerator, or run where {name} is present."
        )
    return _instantiate(plugin), f"DS_ACCELERATOR={name} ({plugin.distribution} {plugin.version})"


def _auto() -> tuple[DeepSpeedAccelerator, str]:
    candidates = []
    for plugin in _plugins.accelerators().values():
        cls = plugin.load()
        if cls.is_available():
            candidates.append((cls.priority, plugin.name, plugin))
    if candidates:
        candidates.sort(key=lambda c: (-c[0], c[1]))
        _prio, name, plugin = candidates[0]
        tied = [c for c in candidates if c[0] == _prio]
        if len(tied) > 1:
            listed = " and ".join(f"{n} ({p.distribution} {p.version})" for _p, n, p in tied)
            choices = " or ".join(f"DS_ACCELERATOR={n}" for _p, n, _pl in tied)
            raise RuntimeError(
                f"{len(tied)} available accelerators share the highest priority {_prio}: {listed}; "
                f"ds-core does not guess between them. Fix: set {choices} (or call "
                f"deepspeed.accelerator.set_accelerator), or give one plugin its own priority "
                f"(class attribute `priority`, higher wins)."
            )
        others = [c[1] for c in candidates[1:]]
        why = f"highest-priority available plugin ({plugin.distribution} {plugin.version}, priority {_prio})"
        if others:
            why += f"; also available: {', '.join(others)}"
        return _instantiate(plugin), why
    return CPU_Accelerator(), "no accelerator plugin is available; plain CPU accelerator from ds-core (no kernels)"


def get_accelerator() -> DeepSpeedAccelerator:
    """The accelerator in use (chosen once, then cached)."""
    global _accelerator, _reason
    if _accelerator is not None:
        return _accelerator
    with _lock:
        if _accelerator is None:
            name = os.environ.get("DS_ACCELERATOR", "").strip()
            acc, why = _from_env(name) if name else _auto()
            _accelerator, _reason = acc, why
    return _accelerator


def set_accelerator(accel_obj: DeepSpeedAccelerator) -> None:
    """Use ``accel_obj`` from now on (wins over ``DS_ACCELERATOR`` and auto-detection)."""
    global _accelerator, _reason
    with _lock:
        _accelerator = _validate(accel_obj)
        _reason = f"set_accelerator({type(accel_obj).__name__}())"


def selection_reason() -> str:
    """Why the current accelerator was chosen (for ``ds_report``)."""
    get_accelerator()
    return _reason


def is_current_accelerator_supported() -> bool:
    return get_accelerator()._name in set(_plugins.accelerators()) | {"cpu"}


def _reset_for_tests() -> None:
    global _accelerator, _reason
    with _lock:
        _accelerator, _reason = None, ""
