"""The feature object ds-core finds through the ``deepspeed.features`` entry point.

Only declarations and hook dispatch live here; the work is in ``deepspeed.runtime.zero``'s modules
(:mod:`~deepspeed.runtime.zero._build` decides from the config, the optimizers in
``stage_1_and_2`` / ``stage3``, checkpoint files in :mod:`~deepspeed.runtime.zero._checkpoint`).
"""

from typing import Optional

from deepspeed.protocols import Cond, DeepSpeedFeature, FeatureProvides, Order, SectionUse

_FRAGMENTS = (
    "safe_get_full_fp32_param", "safe_set_full_fp32_param", "safe_get_full_grad", "safe_set_full_grad",
    "safe_get_full_optimizer_state", "safe_set_full_optimizer_state", "safe_get_local_fp32_param",
    "safe_set_local_fp32_param", "safe_get_local_grad", "safe_set_local_grad",
    "safe_get_local_optimizer_state", "safe_set_local_optimizer_state", "safe_update_full_grad_vectorized",
)
_LEAF = ("set_z3_leaf_modules", "unset_z3_leaf_modules", "get_z3_leaf_modules", "z3_leaf_module", "z3_leaf_parameter")


class ZeroFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "zero"
    order = Order.PARTITION
    # Note: zero_allow_untested_optimizer / zero_force_ds_cpu_optimizer / allgather_size are top-level
    # keys of DeepSpeed's config that only ZeRO reads; without ds-zero they never matter.
    provides = FeatureProvides(
        modules=("deepspeed.zero", "deepspeed.runtime.zero"),
        sections={
            "zero_optimization": SectionUse((Cond("stage", "not_in", (0, None)),)),
            "zero_allow_untested_optimizer": SectionUse(()),
            "zero_force_ds_cpu_optimizer": SectionUse(()),
            "allgather_size": SectionUse(()),
        },
        utils={"deepspeed.utils.tensor_fragment": _FRAGMENTS, "deepspeed.utils.z3_leaf_module": _LEAF},
        attributes={"zero_config": None, "zero_optimization_stage": 0, "zero_enabled": False, "mics_shard_size": -1,
                    "mics_hierarchial_params_gather": False, "zero_allow_untested_optimizer": False,
                    "zero_force_ds_cpu_optimizer": True, "reduce_bucket_size": None},
    )

    # -- configuration ---------------------------------------------------------------------

    def config_sections(self) -> dict:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        return {"zero_optimization": DeepSpeedZeroConfig, "zero_allow_untested_optimizer": (bool, False),
                "zero_force_ds_cpu_optimizer": (bool, True), "allgather_size": (Optional[int], None)}

    def config_attributes(self, config) -> dict:
        from deepspeed.runtime.zero.config import attributes

        return attributes(config)

    def validate_config(self, config) -> None:
        from deepspeed.runtime.zero.config import validate

        validate(config)

    def is_active(self, config) -> bool:
        return int(config.zero_optimization_stage) > 0

    def incompatibility(self, other: str, config) -> str | None:
        if other == "pipe" and int(config.zero_optimization_stage) >= 2:
            return "ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism"
        return None

    # -- engine construction ---------------------------------------------------------------

    def optimizer_device(self, config) -> str | None:
        from deepspeed.runtime.zero._build import optimizer_device

        return optimizer_device(config)

    def wrap_optimizer(self, engine, optimizer):
        """Stage 1/2: :class:`DeepSpeedZeroOptimizer`; stage 3: the stage-3 optimizer; else None."""
        from deepspeed.runtime.zero._build import build_zero_optimizer

        return build_zero_optimizer(engine, optimizer)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_state(self, engine):
        """Per-group parameter shapes and tied-parameter names for ``zero_to_fp32``."""
        from deepspeed.runtime.zero import _checkpoint

        return _checkpoint.checkpoint_state(engine)

    def save_checkpoint_files(self, engine, save_dir, tag):
        """Each rank's ``zero_pp_rank_*`` shard, and ``zero_to_fp32.py`` beside the tags."""
        from deepspeed.runtime.zero import _checkpoint

        _checkpoint.save_files(engine, save_dir, tag)

    def load_checkpoint_state(self, engine, state, load_dir, tag, load_optimizer_states=True, load_module_only=False):
        """Restore the ZeRO optimizer (fp32 master partitions and optimizer state) from the shards."""
        from deepspeed.runtime.zero import _checkpoint

        _checkpoint.load_state(engine, state, load_dir, tag, load_optimizer_states, load_module_only)


feature = ZeroFeature()
