"""Saving and loading an engine's checkpoint in DeepSpeed's layout::

    <save_dir>/latest                                   the tag, written last, atomically
    <save_dir>/<tag>/mp_rank_00_model_states.pt         module, optimizer (fp32/fp16), schedule,
                                                        counters, ds_config, client_state keys
    <save_dir>/<tag>/<per-rank files of the optimizer>   e.g. bf16_zero_pp_rank_<r>_mp_rank_00_optim_states.pt

Every file goes through the engine's checkpoint engine (atomic writes, ``weights_only`` loads).
The optimizer that drives training says what goes under ``"optimizer"`` and which per-rank files
it needs (:class:`~deepspeed.protocols.optimizer.EngineOptimizer`); features add their state through
their ``checkpoint_state``/``save_checkpoint_files`` hooks.
"""

from __future__ import annotations

import os
from typing import Any

import torch

import deepspeed.comm as dist
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import atomic_write_bytes
from deepspeed.utils.logging import logger

#: Top-level keys of the model-states file that are not client state (Lightning warns on these).
DS_KEYS = frozenset({
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "lr_scheduler",
    "sparse_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size",
    "mp_world_size", "ds_config", "ds_version", "frozen_param_fragments", "shared_params",
})


def _mp_rank(engine) -> int:
    return engine.mpu.get_model_parallel_rank() if engine.mpu is not None else 0


def _dp_rank(engine) -> int:
    if engine.mpu is not None:
        return engine.mpu.get_data_parallel_rank()
    return dist.get_rank(engine.data_parallel_group) if engine._dist else 0


def model_states_path(ckpt_dir: str, mp_rank: int = 0) -> str:
    return os.path.join(ckpt_dir, f"mp_rank_{mp_rank:02d}_model_states.pt")


def _rank_file(ckpt_dir: str, pattern: str, dp_rank: int, mp_rank: int) -> str:
    return os.path.join(ckpt_dir, pattern.format(dp_rank=dp_rank, mp_rank=mp_rank))


def _barrier(engine) -> None:
    if engine._dist:
        dist.barrier()


def _validate_tag(engine, tag: str) -> None:
    cfg = engine._config
    if not engine._dist or not getattr(cfg, "checkpoint_tag_validation_enabled", False):
        return
    tags: list = [None] * dist.get_world_size()
    dist.all_gather_object(tags, tag)
    if len(set(tags)) > 1:
        msg = f"[rank={engine.global_rank}] The checkpoint tag name '{tag}' is not consistent across all ranks: {tags}"
        if cfg.checkpoint_tag_validation_fail:
            raise ValueError(msg + " (checkpoint.tag_validation=FAIL)")
        logger.warning(msg)


def save(engine, save_dir: str, tag: Any, client_state: dict, save_latest: bool, exclude_frozen: bool) -> bool:
    if tag is None:
        tag = f"global_step{engine.global_steps}"
    tag = str(tag)
    _validate_tag(engine, tag)
    ce = engine.checkpoint_engine
    ckpt_dir = os.path.join(save_dir, tag)
    if engine.global_rank == 0:
        ce.makedirs(ckpt_dir, exist_ok=True)
    _barrier(engine)
    ce.create(tag)
    dp_rank, mp_rank = _dp_rank(engine), _mp_rank(engine)
    driver = engine._driver
    if dp_rank == 0:
        module_sd = engine.module_state_dict(exclude_frozen_parameters=exclude_frozen)
        # Note: parameters may be views of flat buffers; cloning saves just their own elements.
        module_sd = type(module_sd)((k, v.detach().clone() if torch.is_tensor(v) else v) for k, v in module_sd.items())
        state = {
            "module": module_sd,
            "buffer_names": [n for n, _ in engine.module.named_buffers()],
            "optimizer": driver.model_states_entry(),
            # Note: the optimizer knows the per-group flat order zero_to_fp32 needs (and partitioned
            # parameters' true shapes).
            "param_shapes": driver.param_shapes(),
            "frozen_param_shapes": {n: list(p.shape) for n, p in engine.module.named_parameters() if not p.requires_grad}
            if exclude_frozen else None,
            "lr_scheduler": engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None
            and hasattr(engine.lr_scheduler, "state_dict") else None,
            "sparse_tensor_module_names": [],
            "skipped_steps": engine.skipped_steps,
            "global_steps": engine.global_steps,
            "global_samples": engine.global_samples,
            "dp_world_size": engine.dp_world_size,
            "mp_world_size": engine.mp_world_size,
            "ds_config": engine.config,
            "ds_version": _version(),
        }
        state.update(engine._features.checkpoint_state(engine))
        state.update(client_state or {})
        ce.save(state, model_states_path(ckpt_dir, mp_rank))
    for pattern, rank_state in driver.rank_files().items():
        ce.save({**rank_state, "ds_config": engine.config, "ds_version": _version()},
                _rank_file(ckpt_dir, pattern, dp_rank, mp_rank))
    engine._features.save_checkpoint_files(engine, save_dir, tag)
    _barrier(engine)
    committed = ce.commit(tag)
    if save_latest and committed and engine.global_rank == 0:
        atomic_write_bytes(os.path.join(save_dir, "latest"), tag.encode())
    _barrier(engine)
    return True


def _version() -> str:
    from deepspeed.version import __version__

    return __version__


def load(engine, load_dir: str, tag: Any, strict: bool, load_optimizer_states: bool, load_lr_scheduler_states: bool,
         load_module_only: bool, custom_load_fn) -> tuple[str | None, dict | None]:
    if getattr(engine._config, "load_universal_checkpoint", False):
        raise NotImplementedError("checkpoint.load_universal=true: universal checkpoints are not implemented yet "
                                  "(they come with ds-checkpoint); remove the key to load a regular checkpoint")
    if tag is None:
        latest = os.path.join(load_dir, "latest")
        if not os.path.isfile(latest):
            logger.warning(f"Unable to find latest file at {latest}, if trying to load latest checkpoint please "
                           "ensure this file exists or pass an explicit checkpoint tag when loading a checkpoint.")
            return None, None
        with open(latest) as f:
            tag = f.read().strip()
    ckpt_dir = os.path.join(load_dir, str(tag))
    path = model_states_path(ckpt_dir, _mp_rank(engine))
    if not os.path.exists(path):
        logger.warning(f"Client provided checkpoint load path: {path} does not exist ... skip checkpoint load")
        return None, None
    ce = engine.checkpoint_engine
    sd = ce.load(path, map_location="cpu")
    engine.load_module_state_dict(sd, strict=strict, custom_load_fn=custom_load_fn)
    if not load_module_only:
        driver = engine._driver
        if load_optimizer_states:
            patterns = driver.rank_files()
            if patterns:
                dp_rank, mp_rank = _dp_rank(engine), _mp_rank(engine)
                driver.load_rank_files({p: ce.load(_rank_file(ckpt_dir, p, dp_rank, mp_rank), map_location="cpu")
                                        for p in patterns})
            elif sd.get("optimizer") is not None:
                driver.load_model_states_entry(sd["optimizer"])
        if load_lr_scheduler_states and engine.lr_scheduler is not None and sd.get("lr_scheduler") is not None:
            engine.lr_scheduler.load_state_dict(sd["lr_scheduler"])
        engine.global_steps = sd["global_steps"]
        engine.global_samples = sd.get("global_samples", engine.global_steps * engine.train_batch_size())
        engine.skipped_steps = sd["skipped_steps"]
        engine.loaded_checkpoint_dp_world_size = sd.get("dp_world_size")
    engine._features.load_checkpoint_state(engine, sd, load_dir, str(tag), load_optimizer_states=load_optimizer_states,
                                           load_module_only=load_module_only)
    client_state = {k: v for k, v in sd.items() if k not in DS_KEYS and not k.startswith("ds_feature_")}
    return path, client_state
