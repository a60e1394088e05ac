"""The contract between the engine and a feature package (DESIGN §5).

A feature package registers one :class:`DeepSpeedFeature` instance under the
``deepspeed.features`` entry-point group. The engine calls its hooks at fixed points and never
names a feature; a hook that a feature does not override does nothing.
"""

from __future__ import annotations

from typing import Any


class DeepSpeedFeature:
    """Base of feature objects. Override only the hooks the feature needs."""

    DS_PLUGIN_API = "1.0"
    #: Short feature name (the entry-point name), e.g. ``"zero"``.
    name: str = ""

    def config_sections(self) -> dict[str, type]:
        """ds_config top-level sections this feature owns: ``{key: pydantic model class}``."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- engine hooks (DESIGN §5). The engine calls each installed feature's hooks at fixed points,
    # in entry-point name order; a hook that returns None (or its input unchanged) does nothing. ---

    def transform_config(self, config: dict) -> dict:
        """At ``initialize``, before the config is parsed: return the (possibly edited) config dict."""
        return config

    def engine_class(self, model: Any, config: Any) -> type | None:
        """The engine class for ``model`` (e.g. a pipeline engine for a pipeline module), or None."""
        return None

    def transform_model(self, model: Any, config: Any) -> Any:
        """At engine construction, before the model is moved or cast: return the model to train."""
        return model

    def wrap_optimizer(self, engine: Any, optimizer: Any) -> Any | None:
        """Wrap the basic (fp32, unwrapped) optimizer, or return None to leave it to the engine.

        A wrapper that returns non-None takes over gradient reduction and precision: the engine
        then calls ``wrapper.backward(loss, retain_graph=...)`` in ``engine.backward`` and
        ``wrapper.step()`` at each gradient-accumulation boundary, and reads ``wrapper.overflow``.
        """
        return None

    def checkpoint_engine(self, config: Any) -> Any | None:
        """A :class:`~deepspeed.runtime.checkpoint_engine.CheckpointEngine` to use instead of the
        default one, or None."""
        return None

    def checkpoint_state(self, engine: Any) -> dict | None:
        """Extra state saved in the model-states file under ``ds_feature_<name>``, or None."""
        return None

    def save_checkpoint_files(self, engine: Any, save_dir: str, tag: str) -> None:
        """Write this feature's own files into ``<save_dir>/<tag>`` (called on every rank)."""

    def load_checkpoint_state(self, engine: Any, state: dict | None, load_dir: str, tag: str,
                              load_optimizer_states: bool = True, load_module_only: bool = False) -> None:
        """Restore what :meth:`checkpoint_state` / :meth:`save_checkpoint_files` saved (``state`` is
        None when the checkpoint has none); the flags are ``load_checkpoint``'s."""
