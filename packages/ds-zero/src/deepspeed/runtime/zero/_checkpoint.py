"""ZeRO's files in an engine checkpoint, in DeepSpeed's layout::

    <save_dir>/zero_to_fp32.py                                    the consolidation script
    <save_dir>/<tag>/mp_rank_00_model_states.pt                   written by the engine (stages 1-2)
    <save_dir>/<tag>/zero_pp_rank_<r>_mp_rank_00_optim_states.pt  one per data-parallel rank
    <save_dir>/<tag>/zero_pp_rank_<r>_mp_rank_00_model_states.pt  stage 3: one per rank

The optimizer-states files hold ``{"optimizer_state_dict": <the ZeRO optimizer's state_dict()>,
"ds_config": ..., "ds_version": ...}``; ``zero_to_fp32`` reads them back.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import torch


def optim_states_path(ckpt_dir: str, dp_rank: int, mp_rank: int = 0) -> str:
    return os.path.join(ckpt_dir, f"zero_pp_rank_{dp_rank}_mp_rank_{mp_rank:02d}_optim_states.pt")


def zero_model_states_path(ckpt_dir: str, dp_rank: int, mp_rank: int = 0) -> str:
    return os.path.join(ckpt_dir, f"zero_pp_rank_{dp_rank}_mp_rank_{mp_rank:02d}_model_states.pt")


def _zero_optimizer(engine):
    """The engine's ZeRO optimizer, or None when ZeRO does not drive this engine."""
    from deepspeed.runtime.zero._optimizer_base import ZeroOptimizerBase

    opt = engine.optimizer
    return opt if isinstance(opt, ZeroOptimizerBase) else None


def _ranks(engine) -> tuple[int, int]:
    from deepspeed.runtime.zero import _ranks as ranks

    mp = engine.mpu.get_model_parallel_rank() if engine.mpu is not None else 0
    return ranks.rank(engine.data_parallel_group), mp


def shared_params(module: torch.nn.Module) -> list[list[str]]:
    """``[[alias, source], ...]`` for parameters reachable under more than one name (tied weights)."""
    first: dict[int, str] = {}
    pairs = []
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            pairs.append([name, first[id(p)]])
        else:
            first[id(p)] = name
    return pairs


def checkpoint_state(engine) -> dict | None:
    """What the model-states file carries for ZeRO: stage, per-group parameter shapes, tied names."""
    opt = _zero_optimizer(engine)
    if opt is None:
        return None
    return {"zero_stage": opt.zero_stage, "param_shapes": opt.zero_param_shapes(),
            "shared_params": shared_params(engine.module)}


def save_files(engine, save_dir: str, tag: str) -> None:
    """Every rank writes its optimizer shard; rank 0 copies ``zero_to_fp32.py`` into ``save_dir``."""
    opt = _zero_optimizer(engine)
    if opt is None:
        return
    dp_rank, mp_rank = _ranks(engine)
    ckpt_dir = os.path.join(save_dir, tag)
    state = {"optimizer_state_dict": opt.state_dict(), "ds_config": engine.config, "ds_version": _version()}
    engine.checkpoint_engine.save(state, optim_states_path(ckpt_dir, dp_rank, mp_rank))
    if opt.zero_stage == 3:  # each rank also saves its parameter shards
        engine.checkpoint_engine.save(opt.zero_model_states(engine), zero_model_states_path(ckpt_dir, dp_rank, mp_rank))
    if getattr(engine, "global_rank", 0) == 0:
        from deepspeed.utils import zero_to_fp32

        shutil.copyfile(zero_to_fp32.__file__, os.path.join(save_dir, "zero_to_fp32.py"))


def _rank_of(path: str) -> int:
    return int(re.search(r"zero_pp_rank_(\d+)_", os.path.basename(path)).group(1))


def load_state(engine, state, load_dir: str, tag: str, load_optimizer_states: bool, load_module_only: bool) -> None:
    """What ``load_checkpoint`` restores besides the module, by case:

    - checkpoint without ZeRO shards (``state`` None) or ``load_module_only``, stages 1-2: the fp32
      masters are refreshed from the module weights the engine just loaded;
    - ``load_module_only`` at stage 3: the weights come from the shards, the optimizer starts afresh;
    - otherwise every rank's shard is loaded (``load_optimizer_states`` decides about moments).
    """
    opt = _zero_optimizer(engine)
    if opt is None:
        return
    stage3 = opt.zero_stage == 3
    if state is None or load_module_only:
        if not stage3:
            opt.refresh_master_from_model()
            return
        if state is None:
            raise ValueError(f"load_checkpoint: {os.path.join(load_dir, tag)} has no ZeRO-3 shards; a ZeRO-3 engine "
                             "loads its weights from zero_pp_rank_* files (consolidate other checkpoints with "
                             "zero_to_fp32 and load the state dict under GatheredParameters).")
        load_optimizer_states = False
    load_files(engine, load_dir, tag, load_optimizer_states=load_optimizer_states, force_fp32_weights=stage3)


def _shard_files(engine, ckpt_dir: str, mp_rank: int) -> list[str]:
    """Every rank's ``zero_pp_rank_<r>_mp_rank_<mp>_optim_states.pt``, checked to be complete: the
    manifest's list when the tag has one, else the files found, which must be ranks 0..N-1."""
    suffix = f"_mp_rank_{mp_rank:02d}_optim_states.pt"
    manifest = getattr(engine.checkpoint_engine, "manifest", None)
    if manifest is not None:
        names = manifest.names_matching("zero_pp_rank_", suffix)
        expected = manifest.dp_world_size
        files = [os.path.join(ckpt_dir, n) for n in names]
    else:
        files = glob.glob(os.path.join(ckpt_dir, f"zero_pp_rank_*{suffix}"))
        expected = None
    files = sorted(files, key=_rank_of)
    if not files:
        raise ValueError(f"load_checkpoint: no zero_pp_rank_*{suffix} in {ckpt_dir}; "
                         "the checkpoint was not saved with ZeRO (load it with load_optimizer_states=False).")
    _check_missing(files, expected if expected is not None else max(_rank_of(f) for f in files) + 1, ckpt_dir, suffix)
    return files


def _check_missing(files: list[str], count: int, ckpt_dir: str, suffix: str) -> None:
    missing = sorted(set(range(count)) - {_rank_of(f) for f in files})
    if missing:
        names = ", ".join(os.path.join(ckpt_dir, f"zero_pp_rank_{r}{suffix}") for r in missing)
        raise FileNotFoundError(f"load_checkpoint: the ZeRO checkpoint {ckpt_dir} was saved by {count} data-parallel "
                                f"rank(s) but these shard files are missing: {names}; every rank's shard is needed "
                                "(load another tag, or save it again)")


def _check_shards(shards: list[dict], files: list[str], ckpt_dir: str, suffix: str) -> None:
    """The shards were saved by as many ranks as there are files, each by the rank its name says."""
    for f, sd in zip(files, shards):
        count = sd.get("partition_count")
        count = count[0] if isinstance(count, (list, tuple)) else count
        if count is not None and int(count) > len(files):
            _check_missing(files, int(count), ckpt_dir, suffix)
        if count is not None and int(count) != len(files):
            raise ValueError(f"load_checkpoint: {f} was saved by a job of {int(count)} data-parallel rank(s), but "
                             f"{len(files)} shard file(s) are in {os.path.dirname(f)}; the folder mixes checkpoints "
                             "of different world sizes")
        saved_rank = sd.get("dp_rank")
        if saved_rank is not None and int(saved_rank) != _rank_of(f):
            raise ValueError(f"load_checkpoint: {f} holds the shard of rank {int(saved_rank)}, not of rank "
                             f"{_rank_of(f)} as its name says; the file was renamed or copied over")


def load_files(engine, load_dir: str, tag: str, load_optimizer_states: bool = True,
               force_fp32_weights: bool = False) -> None:
    """Give the ZeRO optimizer every rank's shard (it re-slices them when the world size changed)."""
    opt = _zero_optimizer(engine)
    if opt is None:
        return
    _, mp_rank = _ranks(engine)
    ckpt_dir = os.path.join(load_dir, tag)
    files = _shard_files(engine, ckpt_dir, mp_rank)
    shards = [engine.checkpoint_engine.load(f, map_location="cpu")["optimizer_state_dict"] for f in files]
    _check_shards(shards, files, ckpt_dir, f"_mp_rank_{mp_rank:02d}_optim_states.pt")
    zcfg = engine.ds_config.zero_config
    opt.load_state_dict(shards, load_optimizer_states=load_optimizer_states,
                        load_from_fp32_weights=force_fp32_weights or bool(getattr(zcfg, "load_from_fp32_weights", True)),
                        checkpoint_folder=ckpt_dir)


def _version() -> str:
    from deepspeed.zero._version import __version__

    return __version__

