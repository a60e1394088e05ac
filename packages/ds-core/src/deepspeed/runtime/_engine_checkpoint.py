"""Saving and loading an engine's checkpoint in DeepSpeed's layout::

    <save_dir>/latest                                   the tag, written last, atomically
    <save_dir>/<tag>/mp_rank_00_model_states.pt         module, optimizer (fp32/fp16), schedule,
                                                        counters, ds_config, client_state keys
    <save_dir>/<tag>/<per-rank files of the optimizer>   e.g. bf16_zero_pp_rank_<r>_mp_rank_00_optim_states.pt

Every file goes through the engine's checkpoint engine (atomic writes, ``weights_only`` loads).
Integrity: tags are plain folder names (:mod:`~deepspeed.runtime.checkpoint_engine._tags`); every
rank's write succeeds or the save raises on every rank (one exchange of outcomes, no timeout
wait), and then rank 0 writes ``<tag>/ds_manifest.json`` (sizes and CRC-32s of every file) before
``latest``; a load checks the manifest (every file present with its size, each file's checksum as
it is read) and refuses a bad file by name.
The optimizer that drives training says what goes under ``"optimizer"`` and which per-rank files
it needs (:class:`~deepspeed.protocols.optimizer.EngineOptimizer`); features add their state through
their ``checkpoint_state``/``save_checkpoint_files`` hooks.
"""

from __future__ import annotations

import os
from typing import Any

import torch

import deepspeed.comm as dist
from deepspeed.runtime.checkpoint_engine._manifest import MANIFEST_NAME, Manifest, file_record
from deepspeed.runtime.checkpoint_engine._tags import read_latest, validate_tag
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import atomic_write_bytes, remove_stale_tmp
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


def _exchange(engine, error: BaseException | None, payload: Any, what: str) -> list:
    """Every rank's ``payload``, once every rank reported how its part of ``what`` went; when one
    failed, every rank raises (the failing one its own error, the others one naming it)."""
    mine = (None if error is None else f"{type(error).__name__}: {error}", payload)
    if engine._dist:
        outs: list = [None] * dist.get_world_size()
        dist.all_gather_object(outs, mine)
    else:
        outs = [mine]
    if error is not None:
        raise error
    failed = [(rank, err) for rank, (err, _) in enumerate(outs) if err]
    if failed:
        rank, err = failed[0]
        raise RuntimeError(f"{what} failed on rank {rank} ({err})"
                           + (f" and on {len(failed) - 1} more rank(s)" if len(failed) > 1 else "")
                           + "; this rank stopped too")
    return [p for _, p in outs]


def _ckpt_section(engine):
    return getattr(engine._config, "checkpoint_config", None)


def save(engine, save_dir: str, tag: Any, client_state: dict, save_latest: bool, exclude_frozen: bool) -> bool:
    if tag is None:
        tag = f"global_step{engine.global_steps}"
    tag = validate_tag(str(tag))
    _validate_tag(engine, tag)
    ce = engine.checkpoint_engine
    ckpt_dir = os.path.join(save_dir, tag)
    what = f"save_checkpoint({save_dir!r}, tag={tag!r})"
    error = None
    if engine.global_rank == 0:
        try:
            ce.makedirs(ckpt_dir, exist_ok=True)
            remove_stale_tmp(save_dir)
        except Exception as exc:  # noqa: BLE001 - reported to every rank below
            error = exc
    _exchange(engine, error, None, what)
    ce.create(tag)
    try:
        _write_files(engine, ce, save_dir, ckpt_dir, tag, client_state, exclude_frozen)
        records = {os.path.basename(p): r for p, r in ce.records().items()
                   if os.path.dirname(p) == os.path.abspath(ckpt_dir)}
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        error, records = exc, None
    per_rank = _exchange(engine, error, records, what + " (nothing was committed; 'latest' is unchanged)")
    if engine.global_rank == 0:
        try:
            _write_manifest(engine, ckpt_dir, tag, per_rank)
        except Exception as exc:  # noqa: BLE001 - reported to every rank below
            error = exc
    _exchange(engine, error, None, what + " (manifest)")
    committed = ce.commit(tag)
    if save_latest and committed and engine.global_rank == 0:
        atomic_write_bytes(os.path.join(save_dir, "latest"), tag.encode())
    _barrier(engine)
    return True


def _write_files(engine, ce, save_dir: str, ckpt_dir: str, tag: str, client_state: dict, exclude_frozen: bool) -> None:
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
        state.update(engine._features.model_states_entries(engine, DS_KEYS | state.keys()))
        state.update(client_state or {})
        ce.save(state, model_states_path(ckpt_dir, mp_rank))
    for pattern, rank_state in driver.rank_files().items():
        ce.save({**rank_state, "ds_config": engine.config, "ds_version": _version()},
                _rank_file(ckpt_dir, pattern, dp_rank, mp_rank))
    engine._features.save_checkpoint_files(engine, save_dir, tag)


def _write_manifest(engine, ckpt_dir: str, tag: str, per_rank: list) -> None:
    files = {}
    for records in per_rank:
        files.update(records or {})
    # Note: a checkpoint engine that does not report records (another writer) gets its files hashed here.
    for entry in os.scandir(ckpt_dir):
        if entry.is_file() and entry.name not in files and ".tmp-" not in entry.name and entry.name != MANIFEST_NAME:
            files[entry.name] = file_record(entry.path)
    world = dist.get_world_size() if engine._dist else 1
    manifest = Manifest(tag, world, int(engine.dp_world_size), int(engine.mp_world_size),
                        int(getattr(engine._driver, "zero_stage", 0)), files)
    atomic_write_bytes(os.path.join(ckpt_dir, MANIFEST_NAME), manifest.to_bytes())


def _version() -> str:
    from deepspeed.version import __version__

    return __version__


def _resolve(engine, load_dir: str, tag: Any) -> tuple[str | None, str]:
    """(tag, where it came from); tag None when there is nothing to resume (no ``latest``)."""
    if tag is not None:
        return validate_tag(str(tag)), "the tag argument"
    tag = read_latest(load_dir)
    if tag is None:
        logger.warning(f"Unable to find latest file at {os.path.join(load_dir, 'latest')}, if trying to load latest "
                       "checkpoint please ensure this file exists or pass an explicit checkpoint tag when loading a "
                       "checkpoint.")
    return tag, f"{os.path.join(load_dir, 'latest')}"


def load(engine, load_dir: str, tag: Any, strict: bool, load_optimizer_states: bool, load_lr_scheduler_states: bool,
         load_module_only: bool, custom_load_fn) -> tuple[str | None, dict | None]:
    options = {"strict": strict, "load_optimizer_states": load_optimizer_states,
               "load_lr_scheduler_states": load_lr_scheduler_states, "load_module_only": load_module_only,
               "custom_load_fn": custom_load_fn}
    answer = engine._features.load_checkpoint(engine, load_dir, tag, options)
    if answer is not None:
        return answer
    if getattr(engine._config, "load_universal_checkpoint", False):
        raise NotImplementedError("checkpoint.load_universal=true: no installed feature loads universal checkpoints "
                                  "(ds-checkpoint does: pip install ds-checkpoint); remove the key to load a regular "
                                  "checkpoint")
    section = _ckpt_section(engine)
    tag, source = _resolve(engine, load_dir, tag)
    if tag is None:
        return None, None
    ckpt_dir = os.path.join(load_dir, tag)
    path = model_states_path(ckpt_dir, _mp_rank(engine))
    if not os.path.isdir(ckpt_dir):
        msg = f"load_checkpoint: checkpoint folder {ckpt_dir} does not exist (tag {tag!r} from {source})"
        if getattr(section, "start_fresh_if_missing", False):
            logger.warning(msg + "; starting from the current weights (checkpoint.start_fresh_if_missing=true)")
            return None, None
        raise FileNotFoundError(msg + "; pass the tag of an existing checkpoint, or set ds_config "
                                "checkpoint.start_fresh_if_missing=true to start fresh when it is missing")
    ce = engine.checkpoint_engine
    error, result = None, None
    try:
        manifest = Manifest.read(ckpt_dir)
        if manifest is not None:
            manifest.check_present(ckpt_dir)
        else:
            logger.info(f"{ckpt_dir} has no ds_manifest.json (saved by DeepSpeed or an older version): its files are "
                        "not verified")
        if not os.path.exists(path):
            raise FileNotFoundError(f"load_checkpoint: {path} does not exist: the tag folder {ckpt_dir} is incomplete; "
                                    "load another tag")
        ce.manifest, ce.manifest_dir = manifest, ckpt_dir
        ce.unsafe_load = bool(getattr(section, "unsafe_load", False))
        result = _load_files(engine, ce, load_dir, tag, ckpt_dir, path, strict, load_optimizer_states,
                             load_lr_scheduler_states, load_module_only, custom_load_fn)
    except Exception as exc:  # noqa: BLE001 - reported to every rank below
        error = exc
    finally:
        ce.manifest, ce.manifest_dir = None, None
    _exchange(engine, error, None, f"load_checkpoint({load_dir!r}, tag={tag!r})")
    return result


def _load_files(engine, ce, load_dir, tag, ckpt_dir, path, strict, load_optimizer_states, load_lr_scheduler_states,
                load_module_only, custom_load_fn):
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
    entries = engine._features.model_states_entries(engine, DS_KEYS)
    client_state = {k: v for k, v in sd.items()
                    if k not in DS_KEYS and k not in entries and not k.startswith("ds_feature_")}
    return path, client_state
