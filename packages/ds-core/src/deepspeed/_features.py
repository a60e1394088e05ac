"""The installed feature packages, composed by the rules of :mod:`deepspeed.protocols.feature`.

:class:`FeatureSet` is what the config parser, ``initialize`` and the engine call; it is the only
place that decides how two features' answers to one hook combine. Features are validated when the
set is built (pluggy's habit): each must be a :class:`DeepSpeedFeature` declaring its own plugin
API version and name, hooks it overrides must keep the contract's parameters, and two features
sharing an ``order`` may not both override one chain hook.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

from deepspeed.protocols.feature import HOOKS, DeepSpeedFeature
from deepspeed.protocols.optimizer import EngineOptimizer

_CHAIN = tuple(h.name for h in HOOKS if h.kind == "chain")
_CHECKED = tuple(h.name for h in HOOKS) + ("is_active",)


class FeatureError(RuntimeError):
    """Two features cannot be combined, or a feature breaks the contract."""


class _Entry:
    __slots__ = ("feature", "distribution", "version")

    def __init__(self, feature: DeepSpeedFeature, distribution: str, version: str):
        self.feature, self.distribution, self.version = feature, distribution, version

    @property
    def label(self) -> str:
        return f"{self.distribution} {self.version} (feature '{self.feature.name}')"


def _overrides(feature: DeepSpeedFeature, hook: str) -> bool:
    return getattr(type(feature), hook) is not getattr(DeepSpeedFeature, hook)


def _check_contract(feature: Any, name: str, distribution: str) -> None:
    where = f"feature '{name}' from {distribution}"
    if not isinstance(feature, DeepSpeedFeature):
        raise FeatureError(f"{where} is a {type(feature).__name__}, not a deepspeed.protocols.DeepSpeedFeature. "
                           f"Fix: subclass DeepSpeedFeature in {distribution}.")
    if feature.name != name:
        raise FeatureError(f"{where} declares name={feature.name!r}; it must equal its entry-point name {name!r}.")
    for hook in _CHECKED:
        if not _overrides(feature, hook):
            continue
        want = list(inspect.signature(getattr(DeepSpeedFeature, hook)).parameters)[1:]
        params = inspect.signature(getattr(feature, hook)).parameters
        got = list(params)
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()):
            continue  # (*args) takes whatever the contract passes
        positional = [n for n, p in params.items() if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        if positional[:len(want)] != want:
            raise FeatureError(f"{where}: hook {hook}({', '.join(got)}) does not match the contract's "
                               f"{hook}({', '.join(want)}). Fix: keep the contract's parameter names and order.")


class FeatureSet:
    """The features of one process (or of a test), in hook order."""

    def __init__(self, entries: Iterable[tuple[DeepSpeedFeature, str, str]] = ()):
        items = []
        for feature, distribution, version in entries:
            _check_contract(feature, getattr(feature, "name", "?"), distribution)
            items.append(_Entry(feature, distribution, version))
        items.sort(key=lambda e: (e.feature.order, e.feature.name))
        for a, b in zip(items, items[1:]):
            if a.feature.order != b.feature.order:
                continue
            shared = [h for h in _CHAIN if _overrides(a.feature, h) and _overrides(b.feature, h)]
            if shared:
                raise FeatureError(
                    f"{a.label} and {b.label} both implement the chain hook {shared[0]} at order "
                    f"{a.feature.order}, so their order is undefined. Fix: give one of them another `order`.")
        self._entries = items

    @classmethod
    def from_features(cls, *features: DeepSpeedFeature) -> "FeatureSet":
        """A set of feature objects that are not installed (tests, embedding)."""
        return cls((f, f"<{type(f).__name__}>", "0") for f in features)

    # -- queries ---------------------------------------------------------------------------

    def __iter__(self):
        return (e.feature for e in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[_Entry]:
        return list(self._entries)

    def distribution_of(self, feature: DeepSpeedFeature) -> str:
        for e in self._entries:
            if e.feature is feature:
                return e.distribution
        return "?"

    def _label(self, feature: DeepSpeedFeature) -> str:
        for e in self._entries:
            if e.feature is feature:
                return e.label
        return repr(feature)

    # -- config ----------------------------------------------------------------------------

    def config_sections(self, core_keys: Iterable[str]) -> tuple[dict[str, Any], dict[str, str]]:
        """``({key: model}, {installed distribution: feature name})``."""
        core = set(core_keys)
        sections: dict[str, Any] = {}
        owner: dict[str, _Entry] = {}
        installed: dict[str, str] = {}
        for e in self._entries:
            installed[e.distribution] = e.feature.name
            for key, model in (e.feature.config_sections() or {}).items():
                if key in core:
                    raise FeatureError(f"{e.label} registers ds_config section '{key}', which ds-core owns. "
                                       f"Fix: upgrade {e.distribution} or ds-core.")
                if key in sections:
                    raise FeatureError(f"two feature packages register ds_config section '{key}': "
                                       f"{owner[key].label} and {e.label}. Fix: uninstall one of them.")
                sections[key] = model
                owner[key] = e
        return sections, installed

    def config_attributes(self, config: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for e in self._entries:
            out.update(e.feature.config_attributes(config) or {})
        return out

    def validate_config(self, config: Any) -> None:
        for feature in self:
            feature.validate_config(config)

    def active(self, config: Any) -> list[DeepSpeedFeature]:
        return [f for f in self if f.is_active(config)]

    def check_composition(self, config: Any) -> None:
        """Refuse a mix of active features that one of them does not compose with."""
        active = self.active(config)
        for a in active:
            for b in active:
                if a is b:
                    continue
                reason = a.incompatibility(b.name, config)
                if reason:
                    raise NotImplementedError(f"{reason} ({self._label(a)} does not compose with "
                                              f"{self._label(b)} under this config)")

    def parallel_dims(self, config: Any) -> dict[str, int]:
        return self._dims("parallel_dims", config)

    def model_parallel_dims(self, model: Any) -> dict[str, int]:
        return self._dims("model_parallel_dims", model)

    def _dims(self, hook: str, arg: Any) -> dict[str, int]:
        dims: dict[str, int] = {}
        source: dict[str, DeepSpeedFeature] = {}
        for feature in self:
            for dim, size in (getattr(feature, hook)(arg) or {}).items():
                if dim in dims and dims[dim] != int(size):
                    raise FeatureError(f"{self._label(source[dim])} sets parallel dimension '{dim}' to {dims[dim]} "
                                       f"and {self._label(feature)} to {size}; they must agree")
                dims[dim] = int(size)
                source[dim] = feature
        return dims

    # -- single-answer hooks -----------------------------------------------------------------

    def _single(self, hook: str, *args) -> Any:
        answer, by = None, None
        for feature in self:
            value = getattr(feature, hook)(*args)
            if value is None:
                continue
            if by is not None:
                raise FeatureError(f"two features answer {hook}: {self._label(by)} and {self._label(feature)}; "
                                   f"only one may. Fix: uninstall one of them or disable one in the ds_config.")
            answer, by = value, feature
        return answer

    def engine_class(self, model: Any, config: Any) -> type | None:
        return self._single("engine_class", model, config)

    def checkpoint_engine(self, config: Any) -> Any | None:
        return self._single("checkpoint_engine", config)

    def optimizer_device(self, config: Any) -> str | None:
        answer, by = None, None
        for feature in self:
            value = feature.optimizer_device(config)
            if value is None:
                continue
            if answer is not None and value != answer:
                raise FeatureError(f"{self._label(by)} steps the optimizer on {answer!r} and {self._label(feature)} "
                                   f"on {value!r}; they must agree")
            answer, by = value, feature
        return answer

    # -- chain hooks ----------------------------------------------------------------------------

    def transform_model(self, model: Any, config: Any) -> Any:
        for feature in self:
            result = feature.transform_model(model, config)
            if result is not None:
                model = result
        return model

    def wrap_optimizer(self, engine: Any, optimizer: Any) -> Any:
        owner = None
        for feature in self:
            result = feature.wrap_optimizer(engine, optimizer)
            if result is None or result is optimizer:
                continue
            if isinstance(result, EngineOptimizer):
                if owner is not None:
                    raise FeatureError(f"{self._label(owner)} and {self._label(feature)} both take over the optimizer "
                                       "(return an EngineOptimizer from wrap_optimizer); only one may")
                owner = feature
                declared = getattr(engine, "gradient_groups", None)
                if declared and not result.supports_gradient_groups:
                    raise NotImplementedError(
                        f"{self._label(feature)} takes over the optimizer with {type(result).__name__}, which does not "
                        f"reduce gradient groups, but {len(declared)} gradient group(s) were declared (parameters "
                        "held by only some data-parallel ranks, e.g. expert-parallel experts); reducing them over "
                        "the whole data-parallel group would mix different shards. Train without that feature, or "
                        "without the sharding (e.g. ep_size=1).")
            optimizer = result
        return optimizer

    # -- parameters ---------------------------------------------------------------------------

    def gradient_groups(self, engine: Any) -> list:
        out, owner = [], {}
        for feature in self:
            for gg in feature.gradient_groups(engine) or ():
                for p in gg.params:
                    if id(p) in owner:
                        raise FeatureError(f"{self._label(owner[id(p)])} and {self._label(feature)} both put a "
                                           f"parameter of shape {tuple(p.shape)} into a gradient group; a parameter "
                                           "is reduced over one group only")
                    owner[id(p)] = feature
                out.append(gg)
        return out

    # -- training -----------------------------------------------------------------------------

    def after_step(self, engine: Any) -> None:
        for feature in self:
            feature.after_step(engine)

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint_state(self, engine: Any) -> dict[str, Any]:
        out = {}
        for feature in self:
            state = feature.checkpoint_state(engine)
            if state is not None:
                out[f"ds_feature_{feature.name}"] = state
        return out

    def model_states_entries(self, engine: Any, reserved: Iterable[str] = ()) -> dict[str, Any]:
        """Every feature's top-level model-states entries; ``reserved``: the names core writes."""
        reserved = set(reserved)
        out: dict[str, Any] = {}
        owner: dict[str, DeepSpeedFeature] = {}
        for feature in self:
            for key, value in (feature.model_states_entries(engine) or {}).items():
                if key in reserved or key.startswith("ds_feature_"):
                    raise FeatureError(f"{self._label(feature)} adds model-states entry '{key}', a name ds-core "
                                       "writes itself; pick another name")
                if key in out:
                    raise FeatureError(f"{self._label(owner[key])} and {self._label(feature)} both add model-states "
                                       f"entry '{key}'; only one may")
                out[key], owner[key] = value, feature
        return out

    def save_checkpoint_files(self, engine: Any, save_dir: str, tag: str) -> None:
        for feature in self:
            feature.save_checkpoint_files(engine, save_dir, tag)

    def load_checkpoint(self, engine: Any, load_dir: str, tag: Any, options: dict) -> tuple | None:
        return self._single("load_checkpoint", engine, load_dir, tag, options)

    def load_checkpoint_state(self, engine: Any, sd: dict, load_dir: str, tag: str, load_optimizer_states: bool,
                              load_module_only: bool) -> None:
        for feature in self:
            feature.load_checkpoint_state(engine, sd.get(f"ds_feature_{feature.name}"), load_dir, tag,
                                          load_optimizer_states=load_optimizer_states,
                                          load_module_only=load_module_only)


def installed() -> FeatureSet:
    """The features of every installed feature package (entry points, read through the registry)."""
    from deepspeed import _plugins

    entries = []
    for name, plugin in _plugins.features().items():
        feature = plugin.load()
        _check_contract(feature, name, plugin.distribution)
        entries.append((feature, plugin.distribution, plugin.version))
    return FeatureSet(entries)
