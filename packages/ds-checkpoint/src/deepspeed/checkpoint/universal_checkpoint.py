"""Loading a universal checkpoint (``ds_to_universal``'s output) into an engine of any
data-parallel size and ZeRO stage (ds_config ``checkpoint.load_universal: true``).

Each rank reads ``zero/<param name>/{fp32,<moment>,step}.pt`` of every trainable parameter and
writes the values into its own engine through the optimizer's fragment accessors (the
``deepspeed.utils.safe_set_full_*`` API: each rank keeps just its partition), so the fp32 masters,
the low-precision copies and the optimizer moments equal the saved ones bit for bit. Counters,
the LR schedule, buffers and client state come from the copied ``mp_rank_00_model_states.pt``.
No collective is needed: every rank reads the same files.
"""

from __future__ import annotations

import os

import torch

from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO
from deepspeed.checkpoint.ds_to_universal import LATEST_UNIVERSAL, MODEL_STATES, ZERO_DIR
from deepspeed.protocols.optimizer import Fragment
from deepspeed.runtime.checkpoint_engine._manifest import Manifest
from deepspeed.runtime.checkpoint_engine._safe_load import safe_load
from deepspeed.runtime.checkpoint_engine._tags import read_latest, validate_tag

#: Keys of the model-states file that are engine state, not client state.
_ENGINE_KEYS = frozenset({
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "lr_scheduler",
    "sparse_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size",
    "mp_world_size", "ds_config", "ds_version", "frozen_param_fragments", "shared_params", UNIVERSAL_CHECKPOINT_INFO,
})


class _Files:
    def __init__(self, folder: str, unsafe: bool):
        self.folder, self.unsafe = folder, unsafe
        self.manifest = Manifest.read(folder)
        if self.manifest is not None:
            self.manifest.check_present(folder)

    def load(self, rel: str):
        path = os.path.join(self.folder, rel)
        expected = self.manifest.files.get(rel) if self.manifest is not None else None
        return safe_load(path, map_location="cpu", unsafe=self.unsafe, expected=expected)


def _resolve_tag(load_dir: str, tag) -> str | None:
    """The tag argument, else the one in ``latest_universal`` (None without that file)."""
    if tag is not None:
        return validate_tag(str(tag))
    path = os.path.join(load_dir, LATEST_UNIVERSAL)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return validate_tag(f.read().strip())


def _target(engine):
    """``(fragment optimizer or None, the torch optimizer holding the state)``."""
    opt = engine.optimizer
    if hasattr(opt, "set_full_fragment") and getattr(opt, "zero_stage", 0) > 0:
        return opt, opt.optimizer
    inner = getattr(engine, "_driver", None)
    params = {id(p) for g in getattr(opt, "param_groups", []) for p in g["params"]}
    if params and all(id(p) in params for p in engine.module.parameters() if p.requires_grad):
        return None, opt  # stage 0, fp32: the module's parameters are the optimizer's
    raise NotImplementedError(f"checkpoint.load_universal: the engine's optimizer ({type(inner).__name__}) keeps "
                              "masters this loader cannot reach (ZeRO stage 0 with bf16/fp16); load it with ZeRO "
                              "stage >= 1, or in fp32")


def _init_state(torch_opt, keys: list[str], step) -> None:
    """Adam-family state for every parameter the optimizer has not stepped yet."""
    for group in torch_opt.param_groups:
        for p in group["params"]:
            state = torch_opt.state[p]
            for key in keys:
                if key not in state:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if step is not None:
                state["step"] = step.clone().to(torch.float32) if torch.is_tensor(step) else torch.tensor(float(step))


def _param_groups(torch_opt, saved: list[dict], folder: str) -> None:
    if len(saved) == len(torch_opt.param_groups):
        pairs = zip(torch_opt.param_groups, saved)
    elif all({k: v for k, v in s.items() if k != "params"} == {k: v for k, v in saved[0].items() if k != "params"}
             for s in saved):
        pairs = ((g, saved[0]) for g in torch_opt.param_groups)
    else:
        raise ValueError(f"checkpoint.load_universal: {folder} has {len(saved)} optimizer parameter groups with "
                         f"different settings, this engine {len(torch_opt.param_groups)}; build the optimizer with "
                         "the same groups")
    for group, src in pairs:
        for key, value in src.items():
            if key != "params":
                group[key] = value


def _read_universal(folder: str, files: "_Files", names: list[str]) -> tuple[dict, dict, list, list]:
    sd = files.load(MODEL_STATES)
    missing = [n for n in names if not os.path.exists(os.path.join(folder, ZERO_DIR, n, "fp32.pt"))]
    loaded = {}
    for n in names:
        if n in missing:
            continue
        pdir = os.path.join(ZERO_DIR, n)
        loaded[n] = {f[:-3]: files.load(os.path.join(pdir, f))["param"]
                     for f in sorted(os.listdir(os.path.join(folder, pdir))) if f.endswith(".pt")}
    groups_file = os.path.join(ZERO_DIR, "optimizer_state.pt")
    groups = files.load(groups_file)["param_groups"] if os.path.exists(os.path.join(folder, groups_file)) else []
    return sd, loaded, groups, missing


def _read_regular(folder: str, names: list[str]) -> tuple[dict, dict, list, list]:
    """A regular engine checkpoint (any ZeRO stage and world size), merged in memory: resharding
    on load without running ds_to_universal."""
    from deepspeed.checkpoint.ds_to_universal import extract

    sd, params, groups = extract(folder)
    return sd, {n: params[n] for n in names if n in params}, groups, [n for n in names if n not in params]


def load(engine, load_dir: str, tag, options: dict):
    """What ``engine.load_checkpoint`` returns: a universal checkpoint (``zero/`` folder) or a regular
    one under ``load_dir``, loaded at this engine's data-parallel size and ZeRO stage. Without
    ``tag``: the tag in ``latest_universal``, else the one in ``latest``."""
    section = getattr(engine._config, "checkpoint_config", None)
    resolved = _resolve_tag(load_dir, tag)
    if resolved is None:
        resolved = read_latest(load_dir)
    if resolved is None:
        raise FileNotFoundError(f"load_checkpoint(load_universal=true): neither {os.path.join(load_dir, LATEST_UNIVERSAL)} "
                                f"nor {os.path.join(load_dir, 'latest')} exists; pass tag=<checkpoint folder name>")
    folder = os.path.join(load_dir, resolved)
    names = [n for n, p in engine.module.named_parameters() if p.requires_grad]
    params = dict(engine.module.named_parameters())
    if os.path.isdir(os.path.join(folder, ZERO_DIR)):
        files = _Files(folder, bool(getattr(section, "unsafe_load", False)))
        sd, loaded, saved_groups, missing = _read_universal(folder, files, names)
    elif os.path.exists(os.path.join(folder, MODEL_STATES)):
        sd, loaded, saved_groups, missing = _read_regular(folder, names)
    else:
        raise FileNotFoundError(f"load_checkpoint(load_universal=true): {folder} holds neither a universal checkpoint "
                                f"({ZERO_DIR}/ folder) nor an engine checkpoint ({MODEL_STATES}); pass the tag of one")
    if missing and options.get("strict", True):
        raise FileNotFoundError(f"load_checkpoint(load_universal=true): {folder} has no value for {missing}; the "
                                "checkpoint is of another model (strict=False loads the others)")
    module = sd.get("module") or {}
    with torch.no_grad():
        for name, buf in engine.module.named_buffers():
            if name in module and torch.is_tensor(module[name]):
                buf.copy_(module[name])
    frag, torch_opt = _target(engine)
    load_opt = options.get("load_optimizer_states", True) and not options.get("load_module_only", False)
    if load_opt and loaded:
        moments = sorted({k for e in loaded.values() for k in e if k not in ("fp32", "step")})
        steps = {float(e["step"]) for e in loaded.values() if "step" in e}
        if len(steps) > 1:
            raise ValueError(f"load_checkpoint(load_universal=true): {folder} holds different step counts {sorted(steps)}")
        step = next(iter(loaded.values())).get("step")
        _init_state(torch_opt, moments, step)
        if saved_groups:
            _param_groups(torch_opt, saved_groups, folder)
    with torch.no_grad():
        for n, entry in loaded.items():
            p = params[n]
            if frag is not None:
                frag.set_full_fragment(p, entry["fp32"], Fragment.FP32_PARAM)
            else:
                p.data.copy_(entry["fp32"].reshape(p.shape))
            if not load_opt:
                continue
            for key, value in entry.items():
                if key in ("fp32", "step"):
                    continue
                if frag is not None:
                    frag.set_full_fragment(p, value, Fragment.OPTIMIZER_STATE, key)
                else:
                    torch_opt.state[p][key].copy_(value.reshape(p.shape))
    if not options.get("load_module_only", False):
        if options.get("load_lr_scheduler_states", True) and engine.lr_scheduler is not None \
                and sd.get("lr_scheduler") is not None:
            engine.lr_scheduler.load_state_dict(sd["lr_scheduler"])
        engine.global_steps = sd["global_steps"]
        engine.global_samples = sd.get("global_samples", engine.global_steps * engine.train_batch_size())
        engine.skipped_steps = sd["skipped_steps"]
        engine.loaded_checkpoint_dp_world_size = sd.get("dp_world_size")
    client = {k: v for k, v in sd.items() if k not in _ENGINE_KEYS and not k.startswith("ds_feature_")}
    return os.path.join(folder, MODEL_STATES), client


__all__ = ["load"]
