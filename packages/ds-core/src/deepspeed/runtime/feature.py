"""The contract between the engine and a feature package (DESIGN §5).

A feature package registers one :class:`DeepSpeedFeature` instance under the
``deepspeed.features`` entry-point group. The engine calls its hooks at fixed points and never
names a feature; a hook that a feature does not override does nothing.
"""

from __future__ import annotations



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
