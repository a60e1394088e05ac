"""The feature contract: what a feature package declares and the hooks the engine calls.

A feature package (ds-zero, ds-pipe, ds-moe, ...) registers one :class:`DeepSpeedFeature`
instance under the ``deepspeed.features`` entry-point group. Core calls the hooks below at fixed
points; it never names a feature. Every hook that receives a config receives the same type: the
parsed :class:`deepspeed.runtime.config.DeepSpeedConfig`. Hooks that receive the engine may read
only what :class:`deepspeed.protocols.engine.EngineView` lists.

How hooks compose (enforced by core's feature set, ``deepspeed._features``):

============================  =========  ==============================================================
hook                          kind       composition rule
============================  =========  ==============================================================
``config_sections``           all        every feature adds its sections; a key registered twice, or a
                                         key core owns, is an error naming both packages
``config_attributes``         all        each feature sets its DeepSpeed flat attribute names
``validate_config``           chain      called in :attr:`~DeepSpeedFeature.order`; each may raise
``parallel_dims``             all        each feature adds its own dimensions; a dimension given twice
                                         with different sizes is an error naming both packages
``model_parallel_dims``       all        like ``parallel_dims``, for dimensions a model carries itself
``incompatibility``           pairwise   for every pair of *active* features; a reason refuses the mix
``engine_class``              single     at most one feature may answer; two answers are an error
``transform_model``           chain      in ``order``, each sees the previous result
``optimizer_device``          single     features that answer must agree; different answers are an error
``wrap_optimizer``            chain      in ``order``, each sees the previous result; at most one may
                                         return an :class:`~deepspeed.protocols.optimizer.EngineOptimizer`
``checkpoint_engine``         single     at most one feature may answer
``gradient_groups``           all        every feature's groups together; a parameter in two groups is an
                                         error naming both packages
``after_step``                all        in ``order``, after every applied optimizer step
``model_states_entries``      all        every feature's top-level entries together; a name core uses, or
                                         one two features give, is an error naming both
``checkpoint_state`` /        all        in ``order``; each feature's state is stored under its own key
``save_checkpoint_files`` /              (``ds_feature_<name>``)
``load_checkpoint_state``
============================  =========  ==============================================================

"chain" hooks need a total order among the features that implement them: two features with the
same :attr:`~DeepSpeedFeature.order` that both override one chain hook are refused at
registration, naming both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping, NamedTuple

if TYPE_CHECKING:  # the contract names these types without importing their implementations
    import torch

    from deepspeed.protocols.engine import EngineView
    from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
    from deepspeed.runtime.config import DeepSpeedConfig


class Order:
    """Positions in the chain hooks (lower runs first). A feature picks the band of what it does;
    the examples are this repository's features."""

    #: Rewrites modules (compression and quantization layers replace Linear/Conv).
    MODEL_REWRITE = 100
    #: Groups parameters by role (MoE expert vs. shared parameters, their process groups).
    PARAMETER_GROUPS = 200
    #: Splits model states across ranks (ZeRO partitions optimizer state, gradients, weights).
    PARTITION = 300
    #: Schedules the model across ranks (pipeline stages).
    SCHEDULE = 400
    #: Everything else: checkpoint formats, I/O.
    DEFAULT = 500


class Cond(NamedTuple):
    """One condition on a ds_config section, used to decide whether a section of a feature that is
    *not installed* matters (see :class:`SectionUse`).

    ``path``: ``"a/b"`` inside the section, ``"/x/y"`` from the config root, ``"*"`` matches any
    key at that level, ``""`` is the section itself. A missing key reads as None. ``op`` is
    ``"in"`` or ``"not_in"`` over ``values``.
    """

    path: str
    op: str
    values: tuple


class SectionUse(NamedTuple):
    """When a section of this feature matters. A section whose package is not installed is ignored
    (with a log line) unless one of ``active_if`` holds; it is then an error naming the package to
    install. The section values ``None``, ``false`` and ``{}`` never matter and ``true`` always
    does. An empty ``active_if`` means "never matters without the package" (keys accepted for
    compatibility)."""

    active_if: tuple = (Cond("enabled", "in", (True,)),)


class FeatureProvides(NamedTuple):
    """What a feature package puts into the ``deepspeed`` namespace, declared so that core can
    name the package when it is missing. Core's table of these (``deepspeed/_providers.py``) is
    generated from every feature's declaration and checked by the FeatureRegistration kit.

    ``modules``: the importable subpackages (``"deepspeed.zero"``). ``sections``: ds_config
    top-level keys and when they matter. ``utils``: ``{module: names}`` re-exported at
    ``deepspeed.utils``. ``attributes``: DeepSpeedConfig attributes the feature sets (through
    :meth:`DeepSpeedFeature.config_attributes`) with the value they take when it is absent.
    """

    modules: tuple = ()
    sections: Mapping[str, SectionUse] = {}
    utils: Mapping[str, tuple] = {}
    attributes: Mapping[str, Any] = {}


class GradientGroup(NamedTuple):
    """Parameters that not every data-parallel rank holds (each rank holds one shard of a larger
    set, e.g. the experts of an expert-parallel layer), declared by :meth:`DeepSpeedFeature.gradient_groups`.

    ``params``: the parameters (this rank's shard). ``group``: the ranks holding the same shard;
    gradients are summed over it instead of over the data-parallel group, then divided by the
    whole data-parallel size like every other gradient (each shard saw a share of the whole
    batch). ``shard_group``: one rank per distinct shard (norms add their squares over it).
    ``src_rank``: the global rank whose values the engine broadcasts over ``group`` at start.
    A group of one rank is None.
    """

    params: tuple
    group: Any
    shard_group: Any
    src_rank: int


class DeepSpeedFeature:
    """Base of feature objects. Override only the hooks the feature needs; the defaults do nothing.

    Every subclass declares its own ``DS_PLUGIN_API`` (the contract version it was written for),
    ``name`` (its entry-point name), ``order`` and ``provides``.
    """

    DS_PLUGIN_API: ClassVar[str] = "2.0"
    #: The entry-point name, e.g. ``"zero"``.
    name: ClassVar[str] = ""
    #: Position in the chain hooks (:class:`Order`).
    order: ClassVar[int] = Order.DEFAULT
    #: What the package provides (:class:`FeatureProvides`).
    provides: ClassVar[FeatureProvides] = FeatureProvides()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- configuration ---------------------------------------------------------------------

    def config_sections(self) -> dict[str, Any]:
        """ds_config top-level keys this feature validates: ``{key: pydantic model class}``, or
        ``{key: (type, default)}`` for a scalar key."""
        return {}

    def config_attributes(self, config: "DeepSpeedConfig") -> dict[str, Any]:
        """DeepSpeed's flat attribute names for this feature's sections (``zero_config``,
        ``zero_optimization_stage``, ...), set on ``config`` after parsing. ``config.model`` is
        the validated root (this feature's sections are fields of it)."""
        return {}

    def validate_config(self, config: "DeepSpeedConfig") -> None:
        """Refuse a config this feature cannot run (raise ValueError / NotImplementedError with the
        dotted key, the value and the fix); warn about keys without effect."""

    def is_active(self, config: "DeepSpeedConfig") -> bool:
        """Does ``config`` use this feature? Only active features take part in
        :meth:`incompatibility` checks."""
        return False

    def incompatibility(self, other: str, config: "DeepSpeedConfig") -> str | None:
        """Why this feature cannot run together with the active feature ``other`` under ``config``
        (DeepSpeed's reason), or None when they compose."""
        return None

    def parallel_dims(self, config: "DeepSpeedConfig") -> dict[str, int]:
        """Sizes of the parallel dimensions this feature owns (``{"pipe": 4}``); core builds one
        :class:`deepspeed.comm.topology.ParallelTopology` from every feature's answer."""
        return {}

    def model_parallel_dims(self, model: "torch.nn.Module") -> dict[str, int]:
        """Sizes of the parallel dimensions ``model`` was already built for (a model constructed
        split across ranks), e.g. ``{"pipe": 2}``. ``initialize`` calls it before parsing the
        ds_config, whose batch triangle then counts only the data-parallel ranks (the world divided
        by these sizes); the engine class the feature returns builds its topology from them."""
        return {}

    # -- engine construction ---------------------------------------------------------------

    def engine_class(self, model: "torch.nn.Module", config: "DeepSpeedConfig") -> type | None:
        """The engine class for ``model`` (a subclass of DeepSpeedEngine), or None."""
        return None

    def transform_model(self, model: "torch.nn.Module", config: "DeepSpeedConfig") -> "torch.nn.Module":
        """Before the model is moved or cast: return the model to train."""
        return model

    def optimizer_device(self, config: "DeepSpeedConfig") -> str | None:
        """Where the optimizer will step (``"cpu"`` when this feature keeps optimizer state in host
        memory), or None. Core then builds the host variant of the configured optimizer
        (DeepSpeedCPUAdam for Adam, ...)."""
        return None

    def wrap_optimizer(self, engine: "EngineView", optimizer: Any) -> Any | None:
        """Wrap or regroup the optimizer, or return None to leave it as it is.

        ``optimizer`` is the previous feature's result (first: the basic torch optimizer). Return an
        :class:`~deepspeed.protocols.optimizer.EngineOptimizer` to take over gradient reduction,
        precision, stepping and the optimizer's checkpoint state."""
        return None

    def checkpoint_engine(self, config: "DeepSpeedConfig") -> "CheckpointEngine | None":
        """A checkpoint engine to use instead of core's default one, or None."""
        return None

    def gradient_groups(self, engine: "EngineView") -> list:
        """Parameters reduced over a sub-group of the data-parallel ranks (:class:`GradientGroup`);
        called in the engine constructor after the model is moved and cast, before its weights are
        broadcast (``engine.module``, ``engine.topology`` and the data-parallel group are set). The
        engine's own data-parallel optimizer honours them; an EngineOptimizer returned by
        ``wrap_optimizer`` must declare ``supports_gradient_groups`` or the engine refuses it."""
        return []

    # -- training --------------------------------------------------------------------------

    def after_step(self, engine: "EngineView") -> None:
        """After the optimizer applied a step (not after a skipped fp16-overflow step), before the
        LR scheduler steps. For work driven by training steps (compression's schedule)."""

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_state(self, engine: "EngineView") -> dict | None:
        """Extra state saved in the model-states file under ``ds_feature_<name>``, or None."""
        return None

    def model_states_entries(self, engine: "EngineView") -> dict | None:
        """Top-level entries of the model-states file under names another tool reads (DeepSpeed's
        loader reads ``num_experts``), or None. ``load_checkpoint`` leaves these names out of the
        client state it returns. Prefer :meth:`checkpoint_state` for this package's own state."""
        return None

    def save_checkpoint_files(self, engine: "EngineView", save_dir: str, tag: str) -> None:
        """Write this feature's own files into ``<save_dir>/<tag>`` (called on every rank)."""

    def load_checkpoint_state(self, engine: "EngineView", state: dict | None, load_dir: str, tag: str,
                              load_optimizer_states: bool = True, load_module_only: bool = False) -> None:
        """Restore what :meth:`checkpoint_state` / :meth:`save_checkpoint_files` saved (``state`` is
        None when the checkpoint has none); the flags are ``load_checkpoint``'s."""

    def load_checkpoint(self, engine: "EngineView", load_dir: str, tag: str | None, options: dict) -> tuple | None:
        """Load a checkpoint layout this feature owns instead of core's reading of DeepSpeed's
        layout (ds-checkpoint: ``checkpoint.load_universal``), or return None to leave it to core.
        ``options`` holds ``load_checkpoint``'s keyword arguments; the answer is what
        ``load_checkpoint`` returns, ``(path, client_state)``. Called on every rank."""
        return None


class HookSpec(NamedTuple):
    """One row of the contract table."""

    name: str
    kind: str  # "all", "chain", "single", "pairwise"
    when: str


#: The hooks, in the order core calls them.
HOOKS: tuple[HookSpec, ...] = (
    HookSpec("config_sections", "all", "when a ds_config is parsed (DeepSpeedConfig)"),
    HookSpec("config_attributes", "all", "after the config validated"),
    HookSpec("validate_config", "chain", "after the config validated"),
    HookSpec("incompatibility", "pairwise", "at initialize, for every pair of active features"),
    HookSpec("model_parallel_dims", "all", "at initialize, before the ds_config is parsed"),
    HookSpec("parallel_dims", "all", "when the engine builds its topology"),
    HookSpec("engine_class", "single", "at initialize, before the engine is built"),
    HookSpec("transform_model", "chain", "in the engine constructor, before the model is moved or cast"),
    HookSpec("gradient_groups", "all", "in the engine constructor, after the model is moved and cast"),
    HookSpec("optimizer_device", "single", "when the engine builds the ds_config optimizer"),
    HookSpec("wrap_optimizer", "chain", "in the engine constructor, after the basic optimizer is built"),
    HookSpec("checkpoint_engine", "single", "in the engine constructor"),
    HookSpec("after_step", "all", "in engine.step, after an applied optimizer step, before the LR scheduler"),
    HookSpec("checkpoint_state", "all", "in save_checkpoint, on the rank writing the model states"),
    HookSpec("model_states_entries", "all", "in save_checkpoint on the rank writing the model states, and in "
                                            "load_checkpoint"),
    HookSpec("save_checkpoint_files", "all", "in save_checkpoint, on every rank"),
    HookSpec("load_checkpoint_state", "all", "in load_checkpoint, on every rank"),
    HookSpec("load_checkpoint", "single", "at the start of load_checkpoint, on every rank"),
)
