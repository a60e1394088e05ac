"""The plugin registry: the only module that reads entry points.

Three groups (docs/architecture.md, "Plugins"):

* ``deepspeed.accelerators``: ``<name>`` -> an accelerator class (ops packages);
* ``deepspeed.op_builders``: ``<accelerator>.<op>`` -> an op-builder class (ops packages);
* ``deepspeed.features``: ``<feature>`` -> a feature object (feature packages).

Entry points are read once per group and cached. Loading a plugin imports its module (which must
not import a vendor SDK or touch a device) and checks the plugin-API version the object declares
in ``DS_PLUGIN_API`` against its group's version in :data:`PLUGIN_API_VERSIONS`.

The version must be declared by the registered class itself (in its own class body; for a
registered instance, such as a feature object, on the instance or in its class's own body): a
value inherited from a base class says which contract the *base* was written for, so a plugin
that subclasses core's or another plugin's class without declaring its own is refused.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import threading
from typing import Any

ACCELERATORS = "deepspeed.accelerators"
OP_BUILDERS = "deepspeed.op_builders"
FEATURES = "deepspeed.features"
GROUPS = (ACCELERATORS, OP_BUILDERS, FEATURES)

#: Version of the contract between core and its accelerator and op-builder plugins: (major, minor).
#: A plugin that targets the same major and a minor no newer than core's is accepted.
PLUGIN_API_VERSION = (1, 0)
#: The contract version of each group. Features follow :mod:`deepspeed.protocols.feature`, whose
#: 2.0 (typed hooks with composition rules, one config type) replaced 1.0's first-wins hooks.
PLUGIN_API_VERSIONS = {ACCELERATORS: PLUGIN_API_VERSION, OP_BUILDERS: PLUGIN_API_VERSION, FEATURES: (2, 0)}

class PluginError(RuntimeError):
    """A plugin is missing, broken, or targets an incompatible plugin API."""


class PluginNotFoundError(PluginError, LookupError):
    """No plugin of that name is installed in the group."""


def provider_hint(group: str, name: str) -> str | None:
    """The distribution of this repository known to provide ``name`` in ``group``, if any (from
    the generated table :mod:`deepspeed._providers`)."""
    from deepspeed import _providers

    if group == ACCELERATORS:
        return _providers.ACCELERATORS.get(name)
    if group == FEATURES:
        return _providers.FEATURES.get(name)
    if group == OP_BUILDERS:
        return _providers.ACCELERATORS.get(name.split(".", 1)[0])
    return None


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One entry point, described without importing it."""

    group: str
    name: str
    value: str  # "module:attr"
    distribution: str
    version: str

    def load(self) -> Any:
        """Import the object, check its plugin-API version, and cache it."""
        return _load(self)


def _parse_api(declared: Any) -> tuple[int, int] | None:
    if isinstance(declared, tuple) and len(declared) == 2:
        return int(declared[0]), int(declared[1])
    if isinstance(declared, str):
        parts = declared.split(".")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
    return None


def _core_version() -> str:
    from deepspeed.version import __version__

    return __version__


def _own_api(obj: Any) -> tuple[bool, Any, str]:
    """``(declared here, value, where it comes from)`` for the ``DS_PLUGIN_API`` of ``obj``."""
    cls = obj if isinstance(obj, type) else type(obj)
    if not isinstance(obj, type) and "DS_PLUGIN_API" in getattr(obj, "__dict__", {}):
        return True, obj.__dict__["DS_PLUGIN_API"], ""
    if "DS_PLUGIN_API" in vars(cls):
        return True, vars(cls)["DS_PLUGIN_API"], ""
    for base in cls.__mro__[1:]:
        if "DS_PLUGIN_API" in vars(base):
            return False, vars(base)["DS_PLUGIN_API"], f"{base.__module__}.{base.__qualname__}"
    return False, None, ""


def check_api(obj: Any, plugin: Plugin) -> None:
    """Refuse ``obj`` unless it declares, itself, a plugin API this core accepts."""
    major, minor = PLUGIN_API_VERSIONS.get(plugin.group, PLUGIN_API_VERSION)
    accepted = f"{major}.0 to {major}.{minor}"
    own, declared, inherited_from = _own_api(obj)
    where = f"plugin '{plugin.name}' ({plugin.group}) from {plugin.distribution} {plugin.version}"
    if not own and inherited_from:
        raise PluginError(
            f"{where}: {plugin.value} does not declare its own plugin API version; it inherits "
            f"DS_PLUGIN_API = {declared!r} from {inherited_from}, which states what that base class "
            f"targets, not what {plugin.value} was written for. ds-core {_core_version()} accepts "
            f"plugin API {accepted}. Fix: set DS_PLUGIN_API = \"{major}.{minor}\" in the class body of "
            f"{plugin.value} once it keeps that contract, or upgrade {plugin.distribution}."
        )
    api = _parse_api(declared)
    if api is None:
        raise PluginError(
            f"{where} does not declare a plugin API version (DS_PLUGIN_API = {declared!r}); "
            f"ds-core {_core_version()} accepts plugin API {accepted}. "
            f"Fix: set DS_PLUGIN_API = \"{major}.{minor}\" on {plugin.value} or upgrade {plugin.distribution}."
        )
    if api[0] != major or api[1] > minor:
        raise PluginError(
            f"{where} targets plugin API {api[0]}.{api[1]}; ds-core {_core_version()} accepts "
            f"plugin API {accepted}. Fix: install a release of {plugin.distribution} built for "
            f"plugin API {major}.x, or a ds-core release that accepts {api[0]}.{api[1]}."
        )


_lock = threading.Lock()
_loaded: dict[tuple[str, str], Any] = {}


def _load(plugin: Plugin) -> Any:
    key = (plugin.group, plugin.name)
    with _lock:
        if key in _loaded:
            return _loaded[key]
    ep = importlib.metadata.EntryPoint(name=plugin.name, value=plugin.value, group=plugin.group)
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin must say which package broke
        raise PluginError(
            f"plugin '{plugin.name}' ({plugin.group}) from {plugin.distribution} {plugin.version} "
            f"failed to import {plugin.value}: {type(exc).__name__}: {exc}. "
            f"Fix: reinstall {plugin.distribution} or uninstall it."
        ) from exc
    check_api(obj, plugin)
    with _lock:
        _loaded[key] = obj
    return obj


@functools.cache
def entry_points(group: str) -> dict[str, Plugin]:
    """All plugins installed in ``group``, by name (read once, then cached)."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r}; the groups are {', '.join(GROUPS)}")
    found: dict[str, Plugin] = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
        dist_version = dist.version if dist is not None else "?"
        if ep.name in found and found[ep.name].distribution != dist_name:
            other = found[ep.name]
            raise PluginError(
                f"two distributions register '{ep.name}' in {group}: {other.distribution} "
                f"{other.version} and {dist_name} {dist_version}. Fix: uninstall one of them."
            )
        found[ep.name] = Plugin(group, ep.name, ep.value, dist_name, dist_version)
    return dict(sorted(found.items()))


def reset() -> None:
    """Forget cached entry points and loaded objects (after installing a plugin at run time)."""
    entry_points.cache_clear()
    with _lock:
        _loaded.clear()


def get(group: str, name: str) -> Plugin:
    """The plugin ``name`` of ``group``, or an error naming what is installed and what to install."""
    plugins = entry_points(group)
    if name in plugins:
        return plugins[name]
    installed = ", ".join(plugins) or "none"
    msg = f"{group}: no plugin named '{name}' (misspelled or not installed). Installed: {installed}."
    hint = provider_hint(group, name)
    if hint:
        msg += f" Fix: pip install {hint}"
    raise PluginNotFoundError(msg)


def load(group: str, name: str) -> Any:
    """Load the object of plugin ``name`` in ``group``."""
    return get(group, name).load()


def accelerators() -> dict[str, Plugin]:
    return entry_points(ACCELERATORS)


def op_builders(accelerator: str | None = None) -> dict[str, Plugin]:
    """Op builders, optionally only those of one accelerator (keys keep the ``acc.op`` form)."""
    plugins = entry_points(OP_BUILDERS)
    if accelerator is None:
        return plugins
    prefix = accelerator + "."
    return {k: v for k, v in plugins.items() if k.startswith(prefix)}


def features() -> dict[str, Plugin]:
    return entry_points(FEATURES)


def feature_for_module(module_name: str) -> str | None:
    """The distribution expected to provide ``module_name`` or the package it is in (for import errors)."""
    from deepspeed import _providers

    parts = module_name.split(".")
    for n in range(len(parts), 1, -1):
        dist = _providers.MODULES.get(".".join(parts[:n]))
        if dist is not None:
            return dist
    return None
