#!/usr/bin/env python
"""Consolidate a ZeRO checkpoint (stages 1, 2 and 3) into one fp32 state dict.

The engine copies this file into every checkpoint folder, so it runs there with only torch
installed::

    python zero_to_fp32.py <checkpoint_dir> <output_dir> [-t TAG] [--max_shard_size 5GB]
                           [--safe_serialization] [--exclude_frozen_parameters]

``<checkpoint_dir>`` holds the ``latest`` file and the tag folders. As a library (import it as
``deepspeed.utils.zero_to_fp32``):

- :func:`get_fp32_state_dict_from_zero_checkpoint` returns the fp32 state dict,
- :func:`convert_zero_checkpoint_to_fp32_state_dict` writes it (``pytorch_model.bin`` or
  ``model.safetensors``, sharded with an index file above ``max_shard_size``),
- :func:`load_state_dict_from_zero_checkpoint` loads it into a model.

How partitions are laid out: at stages 1 and 2, each param group is one flat buffer split into
equal slices, rank ``r`` saving slice ``r`` (``single_partition_of_fp32_groups``); at stage 3
every parameter is split on its own into ``ceil(numel / world_size)``-element slices and each rank
saves its slices of a group end to end (``fp32_flat_groups``).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
from collections import OrderedDict

import torch

__all__ = [
    "convert_zero_checkpoint_to_fp32_state_dict",
    "get_fp32_state_dict_from_zero_checkpoint",
    "get_model_state_file",
    "get_model_state_files",
    "get_optim_files",
    "load_state_dict_from_zero_checkpoint",
]


try:  # Note: the copy of this file beside a checkpoint may run where only torch is installed.
    from deepspeed.runtime.checkpoint_engine._manifest import Manifest as _Manifest
    from deepspeed.runtime.checkpoint_engine._safe_load import safe_load as _safe_load
except ImportError:  # pragma: no cover - exercised by running the copied script without deepspeed
    _Manifest = None
    _safe_load = None


def _load(path: str, unsafe_load: bool = False, expected=None):
    """Read a checkpoint file without running code from it (``weights_only=True``), naming the file
    on failure; ``unsafe_load=True`` (only for trusted files) unpickles arbitrary objects."""
    if _safe_load is not None:
        return _safe_load(path, map_location="cpu", unsafe=unsafe_load, expected=expected)
    if unsafe_load:
        print(f"zero_to_fp32: WARNING: loading {path} with weights_only=False: it can run code it carries")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe_load)
    except Exception as exc:
        raise ValueError(f"cannot load checkpoint file {path} ({type(exc).__name__}: {exc}); if it holds objects "
                         "other than tensors and you trust it, pass --unsafe_load") from None


def _verify_tag_dir(ckpt_dir: str):
    """The tag's manifest (every listed file present with its size), or None when it has none."""
    if _Manifest is not None:
        manifest = _Manifest.read(ckpt_dir)
        if manifest is not None:
            manifest.check_present(ckpt_dir)
        return manifest
    path = os.path.join(ckpt_dir, "ds_manifest.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        files = json.load(f)["files"]
    bad = [n for n, rec in files.items() if not os.path.exists(os.path.join(ckpt_dir, n))
           or os.path.getsize(os.path.join(ckpt_dir, n)) != rec["size"]]
    if bad:
        raise ValueError(f"checkpoint {ckpt_dir} is incomplete: missing or truncated: {', '.join(sorted(bad))}")
    return None


def _rank_of(path: str) -> int:
    m = re.search(r"zero_pp_rank_(\d+)_", os.path.basename(path))
    return int(m.group(1)) if m else 0


def get_optim_files(checkpoint_dir: str) -> list[str]:
    """Every ``*_optim_states.pt`` in a tag folder, in rank order."""
    files = sorted(glob.glob(os.path.join(checkpoint_dir, "*_optim_states.pt")), key=_rank_of)
    if not files:
        raise FileNotFoundError(f"no *_optim_states.pt files in {checkpoint_dir!r}: not a ZeRO checkpoint tag folder")
    return files


def get_model_state_files(checkpoint_dir: str) -> list[str]:
    """Every ``*_model_states.pt`` in a tag folder, in rank order."""
    files = sorted(glob.glob(os.path.join(checkpoint_dir, "*_model_states.pt")), key=_rank_of)
    if not files:
        raise FileNotFoundError(f"no *_model_states.pt files in {checkpoint_dir!r}")
    return files


def get_model_state_file(checkpoint_dir: str, zero_stage: int) -> str:
    """The model-states file holding module buffers and parameter shapes for ``zero_stage``."""
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"directory {checkpoint_dir!r} does not exist")
    name = "zero_pp_rank_0_mp_rank_00_model_states.pt" if zero_stage == 3 else "mp_rank_00_model_states.pt"
    path = os.path.join(checkpoint_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot find model state file {path!r}")
    return path


def _resolve_tag_dir(checkpoint_dir: str, tag: str | None) -> str:
    if tag is None:
        latest = os.path.join(checkpoint_dir, "latest")
        if not os.path.isfile(latest):
            raise ValueError(f"unable to find 'latest' file at {latest}; pass tag= (the folder name, e.g. "
                             "'global_step10') or point checkpoint_dir at the folder that holds 'latest'")
        with open(latest) as f:
            tag = f.read().strip()
        source = f"the tag in {latest}"
    else:
        source = "tag"
    if not tag or tag in (".", "..") or os.path.isabs(tag) or "/" in tag or os.sep in tag:
        raise ValueError(f"zero_to_fp32: {source} {tag!r} is not a plain folder name inside {checkpoint_dir}")
    return os.path.join(checkpoint_dir, tag)


def _zero_section(model_sd: dict) -> dict:
    return model_sd.get("ds_feature_zero") or {}


def _shapes(model_sd: dict) -> list:
    shapes = _zero_section(model_sd).get("param_shapes") or model_sd.get("param_shapes")
    if isinstance(shapes, dict):
        shapes = [shapes]
    return [OrderedDict((k, torch.Size(v)) for k, v in group.items()) for group in shapes]


def _merge_stage_1_2(model_sd: dict, optim_sds: list[dict]) -> OrderedDict:
    out = OrderedDict()
    groups = [sd["single_partition_of_fp32_groups"] for sd in optim_sds]
    for g, shapes in enumerate(_shapes(model_sd)):
        full = torch.cat([rank_groups[g].reshape(-1).float() for rank_groups in groups])
        offset = 0
        for name, shape in shapes.items():
            n = math.prod(shape)
            if offset + n > full.numel():
                raise ValueError(f"zero_to_fp32: group {g} holds {full.numel()} elements but parameter {name!r} "
                                 f"needs [{offset}, {offset + n}); the shards do not match the model states file")
            out[name] = full.narrow(0, offset, n).view(shape).clone()
            offset += n
    return out


def _merge_stage_3(model_sd: dict, optim_sds: list[dict]) -> OrderedDict:
    out = OrderedDict()
    world = len(optim_sds)
    groups = [sd["fp32_flat_groups"] for sd in optim_sds]
    for g, shapes in enumerate(_shapes(model_sd)):
        offset = 0
        for name, shape in shapes.items():
            n = math.prod(shape)
            part = -(-n // world)
            pieces = [rank_groups[g].reshape(-1).narrow(0, offset, part).float() for rank_groups in groups]
            out[name] = torch.cat(pieces)[:n].view(shape).clone()
            offset += part
    return out


def _frozen_stage_3(model_sds: list[dict]) -> OrderedDict:
    out = OrderedDict()
    shapes = model_sds[0].get("frozen_param_shapes") or {}
    for name, shape in shapes.items():
        shape = torch.Size(shape)
        pieces = [sd["frozen_param_fragments"][name].reshape(-1) for sd in model_sds]
        out[name] = torch.cat(pieces)[:math.prod(shape)].view(shape).float().clone()
    return out


def _check_ranks(files: list[str], ckpt_dir: str) -> None:
    ranks = [_rank_of(f) for f in files]
    missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
    if missing:
        raise FileNotFoundError(f"zero_to_fp32: {ckpt_dir} lacks the shard(s) of rank(s) {missing} "
                                f"(found ranks {ranks}); every rank's shard is needed")


def _get_fp32_state_dict_from_tag_dir(ckpt_dir: str, exclude_frozen_parameters: bool,
                                      unsafe_load: bool = False) -> OrderedDict:
    manifest = _verify_tag_dir(ckpt_dir)

    def load(path):
        expected = manifest.record_for(path, ckpt_dir) if manifest is not None else None
        return _load(path, unsafe_load, expected)

    optim_files = get_optim_files(ckpt_dir)
    _check_ranks(optim_files, ckpt_dir)
    optim_sds = [load(f)["optimizer_state_dict"] for f in optim_files]
    stage = optim_sds[0].get("zero_stage")
    if stage is None:
        raise ValueError(f"{optim_files[0]} has no 'zero_stage': it was not written by a ZeRO optimizer")
    stage = int(stage)
    count = optim_sds[0].get("partition_count")
    count = count[0] if isinstance(count, (list, tuple)) else count
    if count is not None and int(count) != len(optim_sds):
        raise ValueError(f"zero_to_fp32: expected {count} optimizer shards in {ckpt_dir}, found {len(optim_sds)}")
    model_files = get_model_state_files(ckpt_dir)
    model_sd = load(get_model_state_file(ckpt_dir, stage))
    out = OrderedDict()
    # buffers first, as DeepSpeed's script orders them
    module = model_sd.get("module") or {}
    for name in model_sd.get("buffer_names", []):
        if name in module and module[name] is not None:
            out[name] = module[name].float() if module[name].is_floating_point() else module[name]
    if stage <= 2:
        params = _merge_stage_1_2(model_sd, optim_sds)
    elif stage == 3:
        params = _merge_stage_3(model_sd, optim_sds)
    else:
        raise ValueError(f"zero_to_fp32: unknown zero_stage {stage}")
    if not exclude_frozen_parameters:
        if stage == 3:
            model_sds = [load(f) for f in model_files if "zero_pp_rank_" in os.path.basename(f)]
            out.update(_frozen_stage_3(model_sds))
        else:
            known = set(params) | set(model_sd.get("buffer_names", []))
            for name, value in module.items():
                if name not in known and torch.is_tensor(value):
                    out[name] = value.float() if value.is_floating_point() else value
    out.update(params)
    shared = _zero_section(model_sd).get("shared_params") or model_sd.get("shared_params") or []
    for alias, source in shared:
        if source in out:
            out[alias] = out[source]
    return out


class _LazyTensor:
    """A tensor built only when ``.contiguous()`` is called (``lazy_mode=True``)."""

    def __init__(self, build):
        self._build = build

    def contiguous(self) -> torch.Tensor:
        return self._build()


def get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir: str, tag: str | None = None,
                                             exclude_frozen_parameters: bool = False, lazy_mode: bool = False,
                                             unsafe_load: bool = False):
    """The consolidated fp32 state dict of a ZeRO checkpoint (on CPU).

    ``checkpoint_dir``: the folder with ``latest`` and the tag folders; ``tag``: a tag folder
    name (default: the one in ``latest``). ``lazy_mode``: values are placeholders whose
    ``.contiguous()`` returns the tensor (this implementation builds them eagerly underneath).
    Files are read with ``weights_only=True`` and checked against the tag's ``ds_manifest.json``;
    ``unsafe_load=True`` unpickles arbitrary objects (it can run code: only for trusted files).
    """
    sd = _get_fp32_state_dict_from_tag_dir(_resolve_tag_dir(checkpoint_dir, tag), exclude_frozen_parameters,
                                           unsafe_load=unsafe_load)
    if lazy_mode:
        return OrderedDict((k, _LazyTensor(lambda v=v: v)) for k, v in sd.items())
    return sd


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def _parse_size(size) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(size))
    if not m or m.group(2).upper() not in _UNITS | {"": 1}:
        raise ValueError(f"max_shard_size={size!r} is not a size like '5GB', '500MB' or a number of bytes")
    return int(float(m.group(1)) * _UNITS.get(m.group(2).upper(), 1))


def _shards(state_dict: dict, max_bytes: int) -> list[OrderedDict]:
    shards, current, size = [], OrderedDict(), 0
    for name, t in state_dict.items():
        n = t.numel() * t.element_size()
        if current and size + n > max_bytes:
            shards.append(current)
            current, size = OrderedDict(), 0
        current[name] = t
        size += n
    shards.append(current)
    return shards


def convert_zero_checkpoint_to_fp32_state_dict(checkpoint_dir: str, output_dir: str, max_shard_size="5GB",
                                               safe_serialization: bool = False, tag: str | None = None,
                                               exclude_frozen_parameters: bool = False,
                                               unsafe_load: bool = False) -> None:
    """Write the consolidated fp32 weights into ``output_dir`` (created if needed).

    One ``pytorch_model.bin`` (``model.safetensors`` with ``safe_serialization``), or, above
    ``max_shard_size``, numbered shards and a ``*.index.json`` weight map as Hugging Face writes
    them. An ``output_dir`` ending in ``.bin``/``.pt``/``.pth``/``.safetensors`` is taken as the
    output file itself (the older form of this function).
    """
    sd = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag, exclude_frozen_parameters,
                                                  unsafe_load=unsafe_load)
    # Note: tied weights share storage; saving clones keeps every name loadable on its own.
    sd = OrderedDict((k, v.contiguous().clone()) for k, v in sd.items())
    if safe_serialization:
        try:
            from safetensors.torch import save_file
        except ImportError as exc:
            raise RuntimeError("safe_serialization=True needs the safetensors package: pip install safetensors") from exc
    if str(output_dir).endswith((".bin", ".pt", ".pth", ".safetensors")):
        os.makedirs(os.path.dirname(os.path.abspath(output_dir)), exist_ok=True)
        if str(output_dir).endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(sd, output_dir, metadata={"format": "pt"})
        else:
            torch.save(sd, output_dir)
        return
    os.makedirs(output_dir, exist_ok=True)
    stem, ext = ("model", ".safetensors") if safe_serialization else ("pytorch_model", ".bin")
    shards = _shards(sd, _parse_size(max_shard_size))
    names = [f"{stem}{ext}"] if len(shards) == 1 else \
        [f"{stem}-{i + 1:05d}-of-{len(shards):05d}{ext}" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        path = os.path.join(output_dir, name)
        if safe_serialization:
            save_file(shard, path, metadata={"format": "pt"})
        else:
            torch.save(shard, path)
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in sd.values())},
                 "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
        with open(os.path.join(output_dir, f"{stem}{ext}.index.json"), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)


def load_state_dict_from_zero_checkpoint(model: torch.nn.Module, checkpoint_dir: str, tag: str | None = None,
                                         unsafe_load: bool = False):
    """Load the consolidated fp32 weights into ``model`` (moved to CPU, as DeepSpeed does); return it."""
    sd = get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag, unsafe_load=unsafe_load)
    model = model.cpu()
    model.load_state_dict(sd, strict=False)
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint_dir", help="folder with the 'latest' file and the tag folders")
    parser.add_argument("output_dir", help="where to write pytorch_model.bin / model.safetensors (and shards)")
    parser.add_argument("-t", "--tag", default=None, help="tag folder to convert (default: the one in 'latest')")
    parser.add_argument("--max_shard_size", default="5GB", help="largest shard, e.g. 5GB or 500MB")
    parser.add_argument("--safe_serialization", action="store_true", help="write safetensors")
    parser.add_argument("--exclude_frozen_parameters", action="store_true", help="leave out frozen parameters")
    parser.add_argument("--unsafe_load", action="store_true",
                        help="load files with weights_only=False (they can run code: only for files you trust)")
    parser.add_argument("-d", "--debug", action="store_true", help="accepted for compatibility")
    args = parser.parse_args(argv)
    convert_zero_checkpoint_to_fp32_state_dict(args.checkpoint_dir, args.output_dir, args.max_shard_size,
                                               args.safe_serialization, args.tag, args.exclude_frozen_parameters,
                                               unsafe_load=args.unsafe_load)


if __name__ == "__main__":
    main()
