"""Loading a pipeline checkpoint, also into a different number of stages.

A pipeline checkpoint holds one ``layer_XX[-model_YY]-model_states.pt`` per layer (written by the
stages' first data-parallel rank) and one ``mp_rank_XX_model_states.pt`` per model-parallel rank
(counters, LR schedule, this stage's optimizer state). With the same number of stages the normal
load runs (layers from their files instead of the model-states file). With another number of
stages the layers are still found by their index; counters and the LR schedule come from
``mp_rank_00``; the optimizer state, which belongs to the old stages' parameters, is not loaded
(a warning says so).
"""

from __future__ import annotations

import glob
import os

from deepspeed.utils.logging import logger

#: Keys of a model-states file that are not client state (ds-core's list).
_DS_KEYS = frozenset({
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "lr_scheduler",
    "sparse_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size",
    "mp_world_size", "ds_config", "ds_version", "frozen_param_fragments", "shared_params",
})


def saved_stage_count(ckpt_dir: str, slice_size: int) -> int | None:
    files = glob.glob(os.path.join(ckpt_dir, "mp_rank_*_model_states.pt"))
    return len(files) // max(slice_size, 1) if files else None


def load_pipeline_checkpoint(engine, base_load, load_dir, tag, strict, load_optimizer_states, load_lr_scheduler_states,
                             load_module_only, custom_load_fn):
    if tag is None:
        latest = os.path.join(load_dir, "latest")
        if not os.path.isfile(latest):
            logger.warning(f"Unable to find latest file at {latest}, if trying to load latest checkpoint please "
                           "ensure this file exists or pass an explicit checkpoint tag when loading a checkpoint.")
            return None, None
        with open(latest) as f:
            tag = f.read().strip()
    tag = str(tag)
    ckpt_dir = os.path.join(load_dir, tag)
    saved = saved_stage_count(ckpt_dir, engine._grid.slice_parallel_size)
    engine._curr_ckpt_path = ckpt_dir
    try:
        if saved is None or saved == engine.num_stages:
            return base_load(load_dir, tag, strict, load_optimizer_states, load_lr_scheduler_states, load_module_only,
                             custom_load_fn)
        path = os.path.join(ckpt_dir, "mp_rank_00_model_states.pt")
        sd = engine.checkpoint_engine.load(path, map_location="cpu")
        engine.load_module_state_dict(sd, strict=strict)
        if not load_module_only:
            if load_optimizer_states:
                logger.warning(f"{ckpt_dir} was saved with {saved} pipeline stages and is loaded into "
                               f"{engine.num_stages}: the layers are loaded, the optimizer state (per stage) is not")
            if load_lr_scheduler_states and engine.lr_scheduler is not None and sd.get("lr_scheduler") is not None:
                engine.lr_scheduler.load_state_dict(sd["lr_scheduler"])
            engine.global_steps = sd["global_steps"]
            engine.global_samples = sd.get("global_samples", engine.global_steps * engine.train_batch_size())
            engine.skipped_steps = sd["skipped_steps"]
            engine.loaded_checkpoint_dp_world_size = sd.get("dp_world_size")
        client = {k: v for k, v in sd.items() if k not in _DS_KEYS and not k.startswith("ds_feature_")}
        return path, client
    finally:
        engine._curr_ckpt_path = None
