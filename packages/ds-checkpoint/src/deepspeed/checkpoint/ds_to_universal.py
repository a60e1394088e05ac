"""``python -m deepspeed.checkpoint.ds_to_universal --input_folder <dir>/<tag> --output_folder <dir>/<tag>_universal``

Converts one tag of an engine checkpoint (ZeRO stage 0, 1, 2 or 3, with or without offload, any
data-parallel size) into DeepSpeed's universal layout::

    <output_folder>/mp_rank_00_model_states.pt      the source's, plus ``universal_checkpoint_info``
    <output_folder>/zero/<param name>/fp32.pt       {"param": full fp32 value}
    <output_folder>/zero/<param name>/exp_avg.pt    one file per elementwise optimizer state
    <output_folder>/zero/<param name>/exp_avg_sq.pt
    <output_folder>/zero/<param name>/step.pt       {"param": the optimizer step count}
    <output_folder>/zero/optimizer_state.pt         {"param_groups": [...]} (hyperparameters)
    <output_folder>/ds_manifest.json                sizes and CRC-32s of every file above
    <parent of output_folder>/latest_universal      the output folder's name, written last

Every file is read with the engine's safe loader (``weights_only``, checked against the source's
manifest) and written atomically. Unlike DeepSpeed's, a checkpoint without
``universal_checkpoint_info`` converts as it is (``--inject_missing_state`` is accepted and implied).
``engine.load_checkpoint`` with ds_config ``checkpoint.load_universal: true`` loads the result at
any data-parallel size and ZeRO stage.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import torch

from deepspeed.checkpoint.constants import (UNIVERSAL_CHECKPOINT_INFO, UNIVERSAL_CHECKPOINT_VERSION_KEY,
                                            UNIVERSAL_CHECKPOINT_VERSION_VALUE)
from deepspeed.runtime.checkpoint_engine._manifest import MANIFEST_NAME, Manifest, file_record
from deepspeed.runtime.checkpoint_engine._safe_load import safe_load
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import atomic_write_bytes
from deepspeed.utils import zero_to_fp32 as z2f

LATEST_UNIVERSAL = "latest_universal"
ZERO_DIR = "zero"
MODEL_STATES = "mp_rank_00_model_states.pt"


class _Progress:
    """A one-line progress bar on stderr (``label  12/40 [#####.....]``)."""

    def __init__(self, total: int, label: str, enabled: bool = True):
        self.total, self.done, self.label, self.enabled = max(total, 1), 0, label, enabled

    def step(self, n: int = 1) -> None:
        before = 100 * self.done // self.total
        self.done += n
        # Note: redrawn only when the percentage moves (a log file gets at most 100 updates).
        if self.enabled and (100 * self.done // self.total != before or self.done >= self.total):
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r{self.label} {self.done}/{self.total} [{'#' * filled}{'.' * (30 - filled)}]")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


class _Reader:
    """Loads files of one source tag: safe loader, each file checked against the tag's manifest."""

    def __init__(self, tag_dir: str):
        self.dir = tag_dir
        self.manifest = Manifest.read(tag_dir)
        if self.manifest is not None:
            self.manifest.check_present(tag_dir)

    def __call__(self, name: str):
        path = os.path.join(self.dir, name)
        expected = self.manifest.record_for(path, self.dir) if self.manifest is not None else None
        return safe_load(path, map_location="cpu", expected=expected)


def _trainable_names(model_sd: dict) -> list[list[str]]:
    return [list(group) for group in z2f._shapes(model_sd)]


def _zero_stage(reader: _Reader, model_sd: dict) -> int:
    section = model_sd.get("ds_feature_zero") or {}
    if "zero_stage" in section:
        return int(section["zero_stage"])
    if reader.manifest is not None:
        return int(reader.manifest.zero_stage)
    return 0 if not [n for n in os.listdir(reader.dir) if n.endswith("_optim_states.pt")] else 1


def _per_key(optim_sds: list[dict], stage: int, groups: int) -> tuple[dict[str, list[dict]], list, list]:
    """``{state key: per-rank stand-ins of the shards}`` in the layout zero_to_fp32 merges (so its
    merge re-assembles moments exactly as it re-assembles fp32 weights), and each group's step."""
    flat_key = "single_partition_of_fp32_groups" if stage <= 2 else "fp32_flat_groups"
    base_key = "base_optimizer_state" if stage <= 2 else "optimizer_state_dict"
    keys: dict[str, list[dict]] = {"fp32": [{flat_key: sd[flat_key]} for sd in optim_sds]}
    steps = []
    for g in range(groups):
        state = optim_sds[0][base_key]["state"].get(g, {})
        steps.append(state.get("step"))
        numel = optim_sds[0][flat_key][g].numel()
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.numel() == numel:
                per_rank = keys.setdefault(key, [{flat_key: [None] * groups} for _ in optim_sds])
                for r, sd in enumerate(optim_sds):
                    per_rank[r][flat_key][g] = sd[base_key]["state"][g][key]
    param_groups = optim_sds[0][base_key]["param_groups"]
    return keys, steps, param_groups


def extract(tag_dir: str, no_strict: bool = False) -> tuple[dict, "OrderedDict[str, dict]", list]:
    """The source tag as ``(model_states, {param name: {state key: full tensor}}, param_groups)``."""
    reader = _Reader(tag_dir)
    if not os.path.exists(os.path.join(tag_dir, MODEL_STATES)):
        raise FileNotFoundError(f"ds_to_universal: {os.path.join(tag_dir, MODEL_STATES)} does not exist; "
                                "--input_folder must be one tag folder of an engine checkpoint (e.g. ckpt/global_step10), "
                                "or the folder holding its 'latest' file")
    model_sd = reader(MODEL_STATES)
    stage = _zero_stage(reader, model_sd)
    names = _trainable_names(model_sd)
    out: OrderedDict[str, dict] = OrderedDict()
    if stage == 0:
        opt = model_sd.get("optimizer")
        flat = [n for group in names for n in group]
        if not isinstance(opt, dict) or "state" not in opt:
            raise ValueError(f"ds_to_universal: {os.path.join(tag_dir, MODEL_STATES)} holds no torch optimizer "
                             "state (ZeRO stage 0 with a precision wrapper is not supported yet)")
        indices = [i for g in opt["param_groups"] for i in g["params"]]
        if len(indices) != len(flat):
            raise ValueError(f"ds_to_universal: the optimizer has {len(indices)} parameters but param_shapes names "
                             f"{len(flat)}; the model states file is inconsistent")
        module = model_sd["module"]
        for name, idx in zip(flat, indices):
            entry = {"fp32": module[name].float().clone()}
            for key, value in opt["state"].get(idx, {}).items():
                entry[key] = value.clone() if torch.is_tensor(value) else torch.tensor(value)
            out[name] = entry
        return model_sd, out, [{k: v for k, v in g.items() if k != "params"} for g in opt["param_groups"]]
    files = [os.path.basename(f) for f in z2f.get_optim_files(tag_dir)]
    z2f._check_ranks(files, tag_dir)
    optim_sds = [reader(f)["optimizer_state_dict"] for f in files]
    if stage == 3 and "backup_optimizer_state_dict" in optim_sds[0]:
        raise NotImplementedError("ds_to_universal: ZeRO-3 partial optimizer offload (offload_optimizer.ratio < 1) "
                                  "checkpoints are not supported; save with ratio=1.0")
    if stage == 3:
        model_sd_shapes = reader("zero_pp_rank_0_mp_rank_00_model_states.pt")
        names = _trainable_names(model_sd_shapes)
    keys, steps, param_groups = _per_key(optim_sds, stage, len(names))
    merge = z2f._merge_stage_1_2 if stage <= 2 else z2f._merge_stage_3
    merged = {key: merge(model_sd if stage <= 2 else model_sd_shapes, per_rank) for key, per_rank in keys.items()}
    for g, group in enumerate(names):
        for name in group:
            entry = {key: merged[key][name] for key in keys}
            if steps[g] is not None:
                entry["step"] = steps[g].clone() if torch.is_tensor(steps[g]) else torch.tensor(float(steps[g]))
            out[name] = entry
    if not no_strict:
        missing = [n for n, e in out.items() if "fp32" not in e]
        if missing:
            raise ValueError(f"ds_to_universal: no fp32 value for {missing}")
    return model_sd, out, [{k: v for k, v in g.items() if k != "params"} for g in param_groups]


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def convert(input_folder: str, output_folder: str, num_workers: int = 4, progress: bool = True,
            no_strict: bool = False, keep_temp_folder: bool = False) -> str:
    """Write the universal form of the tag ``input_folder`` into ``output_folder``; returns it."""
    input_folder, output_folder = os.path.abspath(input_folder), os.path.abspath(output_folder)
    if not os.path.exists(os.path.join(input_folder, MODEL_STATES)):
        # Note: the checkpoint root (the folder holding 'latest') stands for its latest tag.
        from deepspeed.runtime.checkpoint_engine._tags import read_latest

        tag = read_latest(input_folder)
        if tag is not None:
            input_folder = os.path.join(input_folder, tag)
    if input_folder == output_folder:
        raise ValueError("ds_to_universal: --output_folder must differ from --input_folder")
    model_sd, params, param_groups = extract(input_folder, no_strict=no_strict)
    info = dict(model_sd.get(UNIVERSAL_CHECKPOINT_INFO) or {})
    info.setdefault(UNIVERSAL_CHECKPOINT_VERSION_KEY, UNIVERSAL_CHECKPOINT_VERSION_VALUE)
    model_sd[UNIVERSAL_CHECKPOINT_INFO] = info
    jobs = [(MODEL_STATES, model_sd), (os.path.join(ZERO_DIR, "optimizer_state.pt"), {"param_groups": param_groups})]
    for name, entry in params.items():
        for key, value in entry.items():
            jobs.append((os.path.join(ZERO_DIR, name, f"{key}.pt"), {"param": value.contiguous()}))
    if os.path.isdir(output_folder):
        shutil.rmtree(output_folder)
    for rel, _ in jobs:
        os.makedirs(os.path.dirname(os.path.join(output_folder, rel)), exist_ok=True)
    bar = _Progress(len(jobs), "ds_to_universal: writing", progress)

    def write(job):
        rel, obj = job
        path = os.path.join(output_folder, rel)
        atomic_write_bytes(path, _bytes(obj))
        return rel, file_record(path)

    records = {}
    with ThreadPoolExecutor(max(1, int(num_workers))) as pool:
        for rel, rec in pool.map(write, jobs):
            records[rel] = rec
            bar.step()
    root, step_folder = os.path.split(output_folder)
    world = int(model_sd.get("dp_world_size") or 1) * int(model_sd.get("mp_world_size") or 1)
    manifest = Manifest(step_folder, world, int(model_sd.get("dp_world_size") or 1),
                        int(model_sd.get("mp_world_size") or 1), -1, records)
    atomic_write_bytes(os.path.join(output_folder, MANIFEST_NAME), manifest.to_bytes())
    atomic_write_bytes(os.path.join(root, LATEST_UNIVERSAL), step_folder.encode())
    return output_folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ds_to_universal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_folder", required=True, help="one tag folder of a checkpoint (e.g. ckpt/global_step10)")
    parser.add_argument("--output_folder", required=True, help="where the universal checkpoint goes")
    parser.add_argument("--num_extract_workers", type=int, default=4, help="accepted; reading is one pass per rank file")
    parser.add_argument("--num_merge_workers", type=int, default=4, help="threads writing the per-parameter files")
    parser.add_argument("--keep_temp_folder", action="store_true", help="accepted (no temporary folder is used)")
    parser.add_argument("--no_strict", action="store_true", help="do not require every parameter to have a value")
    parser.add_argument("--inject_missing_state", action="store_true",
                        help="accepted; universal_checkpoint_info is always added when missing")
    args = parser.parse_args(argv)
    out = convert(args.input_folder, args.output_folder, num_workers=args.num_merge_workers,
                  no_strict=args.no_strict, keep_temp_folder=args.keep_temp_folder)
    print(f"ds_to_universal: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["LATEST_UNIVERSAL", "convert", "extract", "main"]
