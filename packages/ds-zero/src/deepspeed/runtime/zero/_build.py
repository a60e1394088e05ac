"""Everything ZeRO decides from the config: which features it refuses, which optimizers it runs,
and the optimizer it builds for an engine (the ``zero`` feature's hooks call these)."""

from __future__ import annotations

from typing import Any

import torch

from deepspeed.runtime.zero._optimizer_base import offload_device
from deepspeed.utils.logging import logger

# Optimizer classes ZeRO is tested with (by class name, so no optimizer package is imported).
ZERO_SUPPORTED_OPTIMIZERS = {
    "Adam", "AdamW", "FusedAdam", "DeepSpeedCPUAdam", "FusedLamb", "DeepSpeedCPUAdagrad", "Adagrad",
    "FusedLion", "DeepSpeedCPULion",
}
#: The 1-bit optimizers compress the engine's data-parallel all-reduce: DeepSpeed refuses them with ZeRO.
_ONEBIT = {"OnebitAdam": "OneBitAdam", "OnebitLamb": "OneBitLamb", "ZeroOneAdam": "ZeroOneAdam"}
_CPU_OPTIMIZERS = ("DeepSpeedCPUAdam", "DeepSpeedCPUAdagrad", "DeepSpeedCPULion")


def reduce_bucket_size(zcfg: Any) -> int | None:
    """``reduce_bucket_size`` as configured, or None (ds-core's bucket reducer default) when not given."""
    if zcfg is not None and "reduce_bucket_size" in getattr(zcfg, "model_fields_set", ()):
        return int(zcfg.reduce_bucket_size)
    return None


#: Keys whose feature ds-zero does not implement: refused rather than silently ignored.
_UNSUPPORTED = (
    ("zero_quantized_weights", lambda v: bool(v), "ZeRO++ quantized weights (qwZ)"),
    ("zero_quantized_nontrainable_weights", lambda v: bool(v), "ZeRO++ quantized frozen weights"),
    ("zero_quantized_gradients", lambda v: bool(v), "ZeRO++ quantized gradients (qgZ)"),
    ("zero_hpz_partition_size", lambda v: int(v) > 1, "ZeRO++ hierarchical partitioning (hpZ)"),
    ("zenflow", lambda v: v is not None, "ZenFlow"),
    ("zeropp_loco_param", lambda v: v is not None, "ZeRO++ LoCo"),
)
#: Keys accepted for compatibility that change nothing here (a warning names them when set).
_NO_EFFECT = ("module_granularity_threshold",
              "use_all_reduce_for_fetch_params", "allgather_sequential", "round_robin_gradients",
              "use_multi_rank_bucket_allreduce", "model_persistence_threshold",
              "memory_efficient_linear", "partition_stream_chunk_size")


def check_comm_efficient(zcfg: Any, world: int) -> None:
    """ZeRO++ / MiCS values that cannot work, named with the fix (before anything is built)."""
    from deepspeed.config.model import ConfigError

    stage = int(getattr(zcfg, "stage", 0) or 0)
    for key in ("zero_quantized_weights", "zero_quantized_nontrainable_weights", "zero_quantized_gradients"):
        if getattr(zcfg, key, False) and stage != 3:
            raise ConfigError(f"zero_optimization.{key}=true needs zero_optimization.stage=3 (got stage={stage}); "
                              f"ZeRO++ quantizes the stage-3 collectives: set stage to 3 or remove the key")
    hpz = int(getattr(zcfg, "zero_hpz_partition_size", 1) or 1)
    if hpz > 1:
        if stage != 3:
            raise ConfigError(f"zero_optimization.zero_hpz_partition_size={hpz} needs zero_optimization.stage=3 "
                              f"(got stage={stage}); set stage to 3 or zero_hpz_partition_size to 1")
        if world % hpz != 0:
            raise ConfigError(f"zero_optimization.zero_hpz_partition_size={hpz} does not divide the data-parallel "
                              f"world size {world}; use a divisor of {world} (the ranks per node)")
        import os

        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if hpz > per_node:
            raise ConfigError(f"zero_optimization.zero_hpz_partition_size={hpz} is larger than a node "
                              f"({per_node} ranks, LOCAL_WORLD_SIZE); use at most {per_node}")
    mics = int(getattr(zcfg, "mics_shard_size", -1) or -1)
    if mics > 0:
        if stage != 3:
            raise ConfigError(f"zero_optimization.mics_shard_size={mics} needs zero_optimization.stage=3 "
                              f"(got stage={stage}); set stage to 3 or mics_shard_size to -1")
        if world % mics != 0:
            raise ConfigError(f"zero_optimization.mics_shard_size={mics} does not divide the data-parallel world "
                              f"size {world}; use a divisor of {world} (e.g. the ranks per node) or -1")


def check_supported(zcfg: Any) -> None:
    """Refuse zero_optimization features ds-zero lacks; warn about accepted knobs without effect."""
    from deepspeed.runtime.zero import _ranks

    check_comm_efficient(zcfg, _ranks.world_size())
    for key, active, what in _UNSUPPORTED:
        value = getattr(zcfg, key, None)
        if value is not None and active(value):
            raise NotImplementedError(f"zero_optimization.{key}={value!r}: {what} is not implemented by ds-zero; "
                                      f"remove the key (or set it to its default) to train without it.")
    offload = getattr(zcfg, "offload_optimizer", None)
    if offload is not None and getattr(offload, "super_offload", False):
        raise NotImplementedError("zero_optimization.offload_optimizer.super_offload=true is not implemented by "
                                  "ds-zero; remove it (plain CPU offload stays available).")
    given = getattr(zcfg, "model_fields_set", set())
    idle = sorted(k for k in _NO_EFFECT if k in given)
    if "sub_group_size" in given and int(getattr(zcfg, "stage", 0)) != 3:
        idle = sorted(idle + ["sub_group_size"])  # Note: only stage 3 cuts groups into sub-groups, as in DeepSpeed
    if idle:
        logger.warning(f"zero_optimization: {', '.join(idle)} accepted but without effect in ds-zero "
                       "(buckets, partitions and parameter gathering work as documented in the ds-zero README)")


def zero_stage(config: Any) -> int:
    return int(getattr(config, "zero_optimization_stage", 0) or 0)


def check_zero_optimizer(optimizer: Any, config: Any) -> None:
    """ZeRO (stage > 0) only runs with tested optimizers unless ``zero_allow_untested_optimizer``."""
    if zero_stage(config) <= 0 or optimizer is None:
        return
    inner = getattr(optimizer, "optimizer", optimizer)
    if type(inner).__name__ in _ONEBIT:
        from deepspeed.config.model import ConfigError

        raise ConfigError(
            f"optimizer.type={_ONEBIT[type(inner).__name__]!r} with zero_optimization.stage={zero_stage(config)}: "
            "the 1-bit optimizers compress the data-parallel all-reduce and work without ZeRO only (DeepSpeed's "
            "rule); set zero_optimization.stage to 0 or use Adam/Lamb")
    if type(inner).__name__ in ZERO_SUPPORTED_OPTIMIZERS:
        return
    if not getattr(config, "zero_allow_untested_optimizer", False):
        raise NotImplementedError(
            f"You are using an untested ZeRO Optimizer ({type(inner).__name__}). Please add "
            '<"zero_allow_untested_optimizer": true> in the configuration file to use it.'
        )
    logger.warning(f"**** You are using ZeRO with an untested optimizer ({type(inner).__name__}), proceed with caution *****")


def optimizer_device(config: Any) -> str | None:
    """DeepSpeed's rule: with ZeRO-Offload (``offload_optimizer.device`` cpu or nvme) and
    ``zero_force_ds_cpu_optimizer`` (default true) the config's optimizer steps on the host."""
    zcfg = getattr(config, "zero_config", None)
    if offload_device(getattr(zcfg, "offload_optimizer", None)) in ("cpu", "nvme") and \
            getattr(config, "zero_force_ds_cpu_optimizer", True):
        return "cpu"
    return None


def _check_offload_optimizer(config: Any, optimizer: torch.optim.Optimizer, zcfg: Any) -> None:
    """DeepSpeed's rule: ZeRO-Offload steps on the CPU with a DeepSpeed CPU optimizer."""
    if offload_device(getattr(zcfg, "offload_optimizer", None)) == "none":
        return
    if type(optimizer).__name__ in _CPU_OPTIMIZERS:
        return
    if not getattr(config, "zero_force_ds_cpu_optimizer", True):
        return
    raise ValueError(
        f"zero_optimization.offload_optimizer.device=cpu with the client optimizer {type(optimizer).__name__}: "
        "ZeRO-Offload steps the optimizer on the CPU; pass deepspeed.ops.adam.DeepSpeedCPUAdam (or set an "
        "optimizer in ds_config), or set \"zero_force_ds_cpu_optimizer\": false to keep this one.")


def build_zero_optimizer(engine: Any, optimizer: torch.optim.Optimizer):
    """The wrapper for ``engine``'s stage, or None at stage 0. The config is read here once and
    handed to the optimizer classes as their DeepSpeed keyword arguments."""
    cfg = engine.ds_config
    stage = zero_stage(cfg)
    if stage == 0:
        return None
    zcfg = cfg.zero_config
    check_zero_optimizer(optimizer, cfg)
    _check_offload_optimizer(cfg, optimizer, zcfg)
    from deepspeed.runtime.zero import _ranks

    check_comm_efficient(zcfg, _ranks.world_size(engine.data_parallel_group))
    fp16 = bool(cfg.fp16_enabled)
    common = dict(
        param_names={p: n for n, p in engine.module.named_parameters()},
        static_loss_scale=float(cfg.loss_scale or 1.0) if fp16 else 1.0,
        dynamic_loss_scale=fp16 and not cfg.loss_scale,
        dynamic_loss_args=cfg.dynamic_loss_scale_args if fp16 else None,
        reduce_bucket_size=reduce_bucket_size(zcfg),
        dp_process_group=engine.data_parallel_group,
        overlap_comm=bool(zcfg.overlap_comm),
        offload_optimizer_config=zcfg.offload_optimizer,
        aio_config=getattr(cfg, "aio_config", None),  # ds-aio's `aio` section (NVMe offload)
        mpu=engine.mpu,
        clip_grad=float(cfg.gradient_clipping or 0.0),
        communication_data_type=cfg.communication_data_type,
        gradient_accumulation_steps=int(cfg.gradient_accumulation_steps or 1),
    )
    if stage == 3:
        from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

        cls, extra = DeepSpeedZeroOptimizer_Stage3, {}
        if int(zcfg.mics_shard_size or -1) > 0:
            from deepspeed.runtime.zero.mics import MiCS_Optimizer

            cls, extra = MiCS_Optimizer, {"mics_shard_size": int(zcfg.mics_shard_size)}
        return cls(
            engine.module, optimizer, ds_config=engine.config, prefetch_bucket_size=zcfg.prefetch_bucket_size,
            max_reuse_distance=zcfg.max_reuse_distance, max_live_parameters=zcfg.max_live_parameters,
            param_persistence_threshold=zcfg.param_persistence_threshold,
            model_persistence_threshold=zcfg.model_persistence_threshold, offload_param_config=zcfg.offload_param,
            sub_group_size=zcfg.sub_group_size, **extra, **common)
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    return DeepSpeedZeroOptimizer(
        optimizer, contiguous_gradients=zcfg.contiguous_gradients, allgather_bucket_size=zcfg.allgather_bucket_size,
        reduce_scatter=zcfg.reduce_scatter, ignore_unused_parameters=zcfg.ignore_unused_parameters,
        partition_grads=stage == 2, round_robin_gradients=zcfg.round_robin_gradients,
        elastic_checkpoint=zcfg.elastic_checkpoint,
        fp16_master_weights_and_gradients=bool(getattr(cfg, "fp16_master_weights_and_gradients", False)), **common)
