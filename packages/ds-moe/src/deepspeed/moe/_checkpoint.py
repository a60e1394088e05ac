"""Expert weights in checkpoints, in DeepSpeed's layout: one file per expert and MoE layer,

    <dir>/<tag>/layer_<L>_expert_<E>_mp_rank_<MP:02d>_model_states.pt

holding that expert's entries of the module state dict under their full names with the *global*
expert id (``<path>.deepspeed_moe.experts.deepspeed_experts.<E>.<param>``); ``L`` counts the MoE
layers in module order. The first rank of each expert-data-parallel group writes its experts, so a
checkpoint saved at any ``ep_size`` loads at any other: each rank reads the files of the global
experts it holds now. DeepSpeed's older ``expert_<E>_mp_rank_<MP>_model_states.pt`` (every layer's
expert E in one file) is read too.

The engine's model-states file keeps its ``module`` entry (with the writing rank's local experts);
when its experts do not match the loading layer's layout (another ``ep_size``), the layer skips
them (:func:`tolerate_other_layouts`) and :func:`load` fills every local expert from the expert
files.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from deepspeed.utils import groups
from deepspeed.utils.logging import logger

_EXPERTS = ".deepspeed_moe.experts.deepspeed_experts."


def moe_layers(module: torch.nn.Module) -> list[tuple[str, Any]]:
    from deepspeed.moe.layer import MoE

    return [(name, m) for name, m in module.named_modules() if isinstance(m, MoE)]


def _mp_rank(engine) -> int:
    return engine.mpu.get_model_parallel_rank() if engine.mpu is not None else 0


def expert_file(ckpt_dir: str, layer_id: int, expert_id: int, mp_rank: int) -> str:
    if layer_id < 0:
        return os.path.join(ckpt_dir, f"expert_{expert_id}_mp_rank_{mp_rank:02d}_model_states.pt")
    return os.path.join(ckpt_dir, f"layer_{layer_id}_expert_{expert_id}_mp_rank_{mp_rank:02d}_model_states.pt")


def _ranks(layer) -> tuple[int, int]:
    name = layer.expert_group_name
    return groups._get_expert_parallel_rank(name), groups._get_expert_data_parallel_rank(name)


def state(engine) -> dict:
    """What the model-states file records about the MoE layers (``ds_feature_moe``)."""
    return {"layers": [{"name": n, "num_experts": m.num_experts, "ep_size": m.ep_size}
                       for n, m in moe_layers(engine.module)]}


def save(engine, save_dir: str, tag: str) -> None:
    ckpt_dir = os.path.join(save_dir, tag)
    mp = _mp_rank(engine)
    for layer_id, (name, layer) in enumerate(moe_layers(engine.module)):
        ep_rank, edp_rank = _ranks(layer)
        if edp_rank != 0:
            continue
        prefix = f"{name}{_EXPERTS}" if name else _EXPERTS[1:]
        for j, expert in enumerate(layer.deepspeed_moe.experts.deepspeed_experts):
            global_id = ep_rank * layer.num_local_experts + j
            sd = {f"{prefix}{global_id}.{k}": v.detach().clone() for k, v in expert.state_dict().items()}
            engine.checkpoint_engine.save(sd, expert_file(ckpt_dir, layer_id, global_id, mp))


def load(engine, saved: dict | None, load_dir: str, tag: str) -> None:
    """Fill every local expert of every MoE layer from the expert files of ``<load_dir>/<tag>``."""
    ckpt_dir = os.path.join(load_dir, tag)
    mp = _mp_rank(engine)
    layers = moe_layers(engine.module)
    if saved is not None:
        was = saved.get("layers", [])
        if [w["num_experts"] for w in was] != [m.num_experts for _, m in layers]:
            raise ValueError(f"checkpoint {ckpt_dir} has MoE layers with num_experts "
                             f"{[w['num_experts'] for w in was]}, this model {[m.num_experts for _, m in layers]}; "
                             "the expert count must match (ep_size may differ)")
    loaded_any = False
    for layer_id, (name, layer) in enumerate(layers):
        ep_rank, _ = _ranks(layer)
        prefix = f"{name}{_EXPERTS}" if name else _EXPERTS[1:]
        for j, expert in enumerate(layer.deepspeed_moe.experts.deepspeed_experts):
            global_id = ep_rank * layer.num_local_experts + j
            path = expert_file(ckpt_dir, layer_id, global_id, mp)
            if not os.path.exists(path):
                old = expert_file(ckpt_dir, -1, global_id, mp)
                if os.path.exists(old):
                    path = old
                elif saved is None and not getattr(layer.deepspeed_moe.experts, "_ds_from_files", False):
                    continue  # Note: no MoE records, no expert files, and the module load had the experts
                else:
                    raise FileNotFoundError(f"expert checkpoint {path} is missing (MoE layer {layer_id} '{name}', "
                                            f"expert {global_id}); the checkpoint is incomplete")
            sd = engine.checkpoint_engine.load(path, map_location="cpu")
            mine = {k[len(f"{prefix}{global_id}."):]: v for k, v in sd.items()
                    if k.startswith(f"{prefix}{global_id}.")}
            if not mine:
                raise ValueError(f"{path} holds no entries for '{prefix}{global_id}.*' (keys: {sorted(sd)[:4]}...); "
                                 "was it saved from a model with the same module names?")
            expert.load_state_dict(mine, strict=True)
            loaded_any = True
    if loaded_any:
        refresh = getattr(engine.optimizer, "refresh_master_from_model", None)
        if callable(refresh):
            refresh()


_LOCAL = re.compile(r"deepspeed_experts\.(\d+)\.")


def tolerate_other_layouts(experts: torch.nn.Module) -> None:
    """Let ``experts`` (an :class:`~deepspeed.moe.experts.Experts`) skip a state dict's experts
    when their ids do not match its own (a checkpoint written at another ``ep_size``): the engine
    then loads them from the expert files. Layouts that match load as usual."""
    if getattr(experts, "_ds_tolerates_layouts", False):
        return
    experts._ds_tolerates_layouts = True
    experts._ds_skipped = None

    def pre_hook(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        inner = prefix + "deepspeed_experts."
        keys = [k for k in state_dict if k.startswith(inner)]
        ids = {int(m.group(1)) for k in keys if (m := _LOCAL.match(k[len(prefix):]))}
        module._ds_skipped = None
        module._ds_from_files = ids != set(range(module.num_local_experts))
        if module._ds_from_files:
            for k in keys:
                del state_dict[k]
            module._ds_skipped = inner
            logger.info(f"{inner}*: the state dict holds experts {sorted(ids)}, this rank "
                        f"{module.num_local_experts}; they are loaded from the expert checkpoint files")

    def post_hook(module, incompatible):
        inner = module._ds_skipped
        if inner is not None:
            incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not k.startswith(inner)]
            module._ds_skipped = None

    experts.register_load_state_dict_pre_hook(pre_hook)
    experts.register_load_state_dict_post_hook(post_hook)
