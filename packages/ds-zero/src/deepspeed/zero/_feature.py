"""The feature object ds-core finds through the ``deepspeed.features`` entry point."""

from deepspeed.runtime.feature import DeepSpeedFeature


class ZeroFeature(DeepSpeedFeature):
    name = "zero"

    def config_sections(self) -> dict[str, type]:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        return {"zero_optimization": DeepSpeedZeroConfig}

    # -- engine hooks (DESIGN §5); the work is in deepspeed.runtime.zero's private modules ----------

    def wrap_optimizer(self, engine, optimizer):
        """Stage 1/2: :class:`DeepSpeedZeroOptimizer`; stage 3: the stage-3 optimizer; else None."""
        from deepspeed.runtime.zero._optimizer_factory import build_zero_optimizer

        return build_zero_optimizer(engine, optimizer)

    def checkpoint_state(self, engine):
        """Per-group parameter shapes and tied-parameter names for ``zero_to_fp32``."""
        from deepspeed.runtime.zero import _checkpoint

        if not getattr(engine.optimizer, "zero_stage", 0):
            return None
        return _checkpoint.checkpoint_state(engine)

    def save_checkpoint_files(self, engine, save_dir, tag):
        """Each rank's ``zero_pp_rank_*`` shard, and ``zero_to_fp32.py`` beside the tags."""
        from deepspeed.runtime.zero import _checkpoint

        _checkpoint.save_files(engine, save_dir, tag)

    def load_checkpoint_state(self, engine, state, load_dir, tag, load_optimizer_states=True, load_module_only=False,
                              **kwargs):
        """Restore the ZeRO optimizer (fp32 master partitions and optimizer state) from the shards."""
        from deepspeed.runtime.zero import _checkpoint

        _checkpoint.load_state(engine, state, load_dir, tag, load_optimizer_states, load_module_only)


feature = ZeroFeature()
