"""``deepspeed.pipe`` (from ds-pipe): PipelineModule, LayerSpec/TiedLayerSpec, 1F1B schedules, PipelineEngine, topologies.

Not implemented yet: this release installs the namespace and registers the feature with
ds-core so configs and ``ds_report`` see it; it offers no pipe API until the feature lands.
"""

from deepspeed.pipe._version import __version__

__all__ = ["__version__"]
