"""The feature object ds-core finds through the ``deepspeed.features`` entry point.

Only declarations and hook dispatch live here; the work is in ``deepspeed.runtime.pipe``
(``module``, ``topology``, ``schedule``, ``engine``, ``p2p``).
"""

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse


def _is_pipeline_module(model) -> bool:
    import sys

    module = sys.modules.get("deepspeed.runtime.pipe.module")  # not imported: no PipelineModule exists
    return module is not None and isinstance(model, module.PipelineModule)


class PipeFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "pipe"
    order = Order.SCHEDULE
    provides = FeatureProvides(
        modules=("deepspeed.pipe", "deepspeed.runtime.pipe"),
        sections={"pipeline": SectionUse((Cond("", "not_in", ()),))},
        attributes={"pipeline": None},
    )

    def config_sections(self) -> dict[str, type]:
        from deepspeed.pipe.config import DeepSpeedPipelineConfig

        return {"pipeline": DeepSpeedPipelineConfig}

    def config_attributes(self, config) -> dict:
        # DeepSpeed's DeepSpeedConfig.pipeline: the section as a dict with its defaults filled in
        return {"pipeline": config.model.pipeline.model_dump()}

    def model_parallel_dims(self, model) -> dict[str, int]:
        """A PipelineModule is built for its stages (and its topology's model-parallel size)."""
        if not _is_pipeline_module(model):
            return {}
        grid = model.mpu()
        dims = {"pipe": grid.pipe_parallel_size}
        if grid.slice_parallel_size > 1:
            dims["tensor"] = grid.slice_parallel_size
        return dims

    def engine_class(self, model, config):
        """DeepSpeed's rule: a PipelineModule trains with the PipelineEngine."""
        if not _is_pipeline_module(model):
            return None
        from deepspeed.runtime.pipe.engine import PipelineEngine

        return PipelineEngine

    def checkpoint_state(self, engine):
        """The stage count and partition a pipeline checkpoint was written with."""
        module = getattr(engine, "module", None)
        if not _is_pipeline_module(module):
            return None
        return {"num_stages": module.num_stages, "virtual_stages": module.virtual_stages, "parts": module.partitions()}


feature = PipeFeature()
