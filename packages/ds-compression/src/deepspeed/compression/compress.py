"""``init_compression`` and ``redundancy_clean`` (DeepSpeed's names and arguments).

``init_compression(model, deepspeed_config)`` replaces every Linear / Conv2d / Embedding that a
``different_groups`` entry names (``modules``: regular expressions searched in the module's
qualified name, ``"*"`` for all) by its compress layer and configures the group's technique on
it; the scheduler switches each technique on at its ``schedule_offset``.
``redundancy_clean(model, deepspeed_config)`` then makes the result permanent: quantized values
written into the weights, pruned weights zeroed, pruned rows, heads and channels physically
removed (together with the matching input columns / rows of the ``related_modules``), and the
compress layers replaced by plain torch layers.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import torch
import torch.nn as nn
from pydantic import ValidationError

from deepspeed.compression.basic_layer import (COMPRESS_LAYERS, Conv2dLayer_Compress, Embedding_Compress,
                                               LinearLayer_Compress)
from deepspeed.compression.config import DeepSpeedCompressionConfig

_PREFIX = "compression_training"


def _section(deepspeed_config: Any) -> DeepSpeedCompressionConfig:
    """The parsed ``compression_training`` section of a ds_config (path, dict, parsed
    DeepSpeedConfig, or the section itself)."""
    if isinstance(deepspeed_config, DeepSpeedCompressionConfig):
        return deepspeed_config
    if isinstance(deepspeed_config, (str, os.PathLike)):
        with open(deepspeed_config, encoding="utf-8") as fd:
            deepspeed_config = json.load(fd)
    if hasattr(deepspeed_config, "_param_dict"):
        deepspeed_config = deepspeed_config._param_dict
    if not isinstance(deepspeed_config, dict):
        raise ValueError(f"deepspeed_config must be a ds_config dict or the path of a JSON file, "
                         f"got {type(deepspeed_config).__name__}")
    bare = any(k in deepspeed_config for k in DeepSpeedCompressionConfig.model_fields)  # the section itself
    section = deepspeed_config.get(_PREFIX, deepspeed_config if bare else {})
    try:
        return DeepSpeedCompressionConfig(**section)
    except ValidationError as exc:
        lines = [f"{_PREFIX}.{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}"
                 for e in exc.errors()]
        raise ValueError("invalid compression config: " + "; ".join(lines)) from None


def _compressible(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)) and n]


def _match(names: list[str], pattern: str) -> list[str]:
    if pattern == "*":
        return list(names)
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"module pattern {pattern!r} is not a regular expression ({exc})") from None
    return [n for n in names if rx.search(n)]


def _group_modules(model: nn.Module, technique: str, group: str, patterns: list[str]) -> list[str]:
    names = [n for n, _ in _compressible(model)]
    out: list[str] = []
    for pattern in patterns:
        found = _match(names, pattern)
        if not found:
            sample = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ValueError(f"{_PREFIX}.{technique}.different_groups.{group}.modules: pattern {pattern!r} matches no "
                             f"Linear/Conv2d/Embedding module of the model (they are: {sample}). Fix: use a "
                             f"regular expression searched in the module names, or '*'.")
        out.extend(n for n in found if n not in out)
    return out


def _related(model: nn.Module, technique: str, group: str, related: list | None, count: int) -> list[list[str]]:
    """For each of the ``count`` matched modules, the names of its related modules: pattern lists
    are matched over the model and paired with the matched modules by order."""
    if not related:
        return [[] for _ in range(count)]
    names = [n for n, _ in _compressible(model)] + [n for n, m in model.named_modules()
                                                    if isinstance(m, nn.BatchNorm2d)]
    per_module: list[list[str]] = [[] for _ in range(count)]
    for patterns in related:
        for pattern in ([patterns] if isinstance(patterns, str) else patterns):
            found = sorted(_match(names, pattern), key=names.index)
            if len(found) != count:
                raise ValueError(f"{_PREFIX}.{technique}.different_groups.{group}.related_modules: pattern {pattern!r} "
                                 f"matches {len(found)} modules ({', '.join(found) or 'none'}) but modules matched "
                                 f"{count}; each pruned module needs exactly one related module per pattern")
            for i, n in enumerate(found):
                per_module[i].append(n)
    return per_module


def _get(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _to_compress(model: nn.Module, name: str) -> nn.Module:
    m = _get(model, name)
    if isinstance(m, COMPRESS_LAYERS):
        return m
    if isinstance(m, nn.Linear):
        new = LinearLayer_Compress.from_linear(m)
    elif isinstance(m, nn.Conv2d):
        new = Conv2dLayer_Compress.from_conv(m)
    else:
        new = Embedding_Compress.from_embedding(m)
    new.train(m.training)
    _set(model, name, new)
    return new


def _check_ratio(technique: str, group: str, ratio: float) -> None:
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"{_PREFIX}.{technique}.different_groups.{group}.params.dense_ratio={ratio} must be in "
                         f"(0, 1): the fraction of weights kept")


def _num_layers(model: nn.Module, prefix: str, who: str) -> nn.ModuleList:
    try:
        layers = model.get_submodule(prefix)
    except AttributeError:
        raise ValueError(f"{_PREFIX}.layer_reduction.module_name_prefix={prefix!r}: the {who} has no such module") \
            from None
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        raise ValueError(f"{_PREFIX}.layer_reduction.module_name_prefix={prefix!r} is a {type(layers).__name__} in the "
                         f"{who}, not a ModuleList of layers")
    return layers


class _ChannelMaskHook:
    def __init__(self, conv: Conv2dLayer_Compress):
        self.conv = conv

    def __call__(self, module, inputs, output):
        mask = self.conv.current_channel_mask()
        return None if mask is None else output * mask.view(1, -1, 1, 1)


def student_initialization(student_model: nn.Module, teacher_model: nn.Module, deepspeed_config: Any) -> None:
    """Layer reduction: student layer ``i`` of ``module_name_prefix`` takes the weights of teacher
    layer ``teacher_layer[i]``; each ``other_module_name`` module is copied from the teacher. A
    student with more layers than ``keep_number_layer`` is cut to that many first."""
    lr = _section(deepspeed_config).layer_reduction
    prefix, keep, picks = lr.module_name_prefix, lr.keep_number_layer, list(lr.teacher_layer)
    if keep is None:
        raise ValueError(f"{_PREFIX}.layer_reduction.keep_number_layer is not set. Fix: give the number of layers "
                         f"the student keeps.")
    if len(picks) != keep:
        raise ValueError(f"{_PREFIX}.layer_reduction.teacher_layer={picks} names {len(picks)} layers but "
                         f"keep_number_layer={keep}. Fix: list one teacher layer per student layer.")
    teacher_layers = _num_layers(teacher_model, prefix, "teacher")
    bad = [t for t in picks if not 0 <= t < len(teacher_layers)]
    if bad:
        raise ValueError(f"{_PREFIX}.layer_reduction.teacher_layer={picks} asks for layer {bad[0]} but the teacher's "
                         f"{prefix!r} has {len(teacher_layers)} layers (0..{len(teacher_layers) - 1})")
    student_layers = _num_layers(student_model, prefix, "student")
    if len(student_layers) < keep:
        raise ValueError(f"{_PREFIX}.layer_reduction.keep_number_layer={keep} but the student's {prefix!r} has only "
                         f"{len(student_layers)} layers")
    if len(student_layers) > keep:
        kept = type(student_layers)(*[student_layers[i] for i in range(keep)]) \
            if isinstance(student_layers, nn.Sequential) else nn.ModuleList(student_layers[i] for i in range(keep))
        _set(student_model, prefix, kept)
        student_layers = kept
    with torch.no_grad():
        for i, t in enumerate(picks):
            student_layers[i].load_state_dict(teacher_layers[t].state_dict())
        for name in lr.other_module_name:
            try:
                src = teacher_model.get_submodule(name)
                dst = student_model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"{_PREFIX}.layer_reduction.other_module_name: {name!r} is not a module of both the "
                                 f"teacher and the student") from None
            dst.load_state_dict(src.state_dict())


def init_compression(model: nn.Module, deepspeed_config: Any, teacher_model: nn.Module | None = None,
                     mpu: Any = None) -> nn.Module:
    """Prepare ``model`` for compression training per ``deepspeed_config``'s
    ``compression_training`` section; returns the model (changed in place).

    Layer reduction initialises the student from ``teacher_model`` (a copy of ``model`` itself
    when None, so a model can be cut to a subset of its own layers). ``mpu`` is accepted for
    DeepSpeed compatibility; tensor-parallel layers are not rewritten."""
    cfg = _section(deepspeed_config)
    if cfg.layer_reduction.enabled:
        student_initialization(model, teacher_model if teacher_model is not None else copy.deepcopy(model), cfg)
    if cfg.sparse_pruning.shared_parameters.enabled and cfg.sparse_pruning.shared_parameters.method == "snip_momentum":
        raise NotImplementedError(f"{_PREFIX}.sparse_pruning.shared_parameters.method='snip_momentum' is not "
                                  f"implemented. Fix: use 'l1' or 'topk'.")

    wq = cfg.weight_quantization
    if wq.shared_parameters.enabled:
        sp = wq.shared_parameters
        for gname, g in wq.different_groups.items():
            p = g.params
            if p.target_bits > p.start_bits:
                raise ValueError(f"{_PREFIX}.weight_quantization.different_groups.{gname}.params: target_bits="
                                 f"{p.target_bits} is above start_bits={p.start_bits}; bits only go down")
            for name in _group_modules(model, "weight_quantization", gname, g.modules):
                _to_compress(model, name).enable_weight_quantization(
                    p.start_bits, p.target_bits, p.quantization_period, sp.quantize_weight_in_forward,
                    sp.quantization_type, sp.quantize_groups)

    aq = cfg.activation_quantization
    if aq.shared_parameters.enabled:
        for gname, g in aq.different_groups.items():
            for name in _group_modules(model, "activation_quantization", gname, g.modules):
                m = _to_compress(model, name)
                if isinstance(m, Embedding_Compress):
                    continue  # embeddings take integer ids
                m.enable_activation_quantization(g.params.bits, aq.shared_parameters.quantization_type,
                                                 aq.shared_parameters.range_calibration)

    sp_ = cfg.sparse_pruning
    if sp_.shared_parameters.enabled:
        for gname, g in sp_.different_groups.items():
            _check_ratio("sparse_pruning", gname, g.params.dense_ratio)
            for name in _group_modules(model, "sparse_pruning", gname, g.modules):
                _to_compress(model, name).enable_sparse_pruning(g.params.dense_ratio, sp_.shared_parameters.method)

    for technique, kinds in (("row_pruning", (nn.Linear,)), ("head_pruning", (nn.Linear,)),
                             ("channel_pruning", (nn.Conv2d,))):
        t = getattr(cfg, technique)
        if not t.shared_parameters.enabled:
            continue
        for gname, g in t.different_groups.items():
            _check_ratio(technique, gname, g.params.dense_ratio)
            names = _group_modules(model, technique, gname, g.modules)
            for name in names:
                if not isinstance(_get(model, name), kinds):
                    raise ValueError(f"{_PREFIX}.{technique}.different_groups.{gname}.modules matches {name!r}, a "
                                     f"{type(_get(model, name)).__name__}; {technique} applies to "
                                     f"{' / '.join(k.__name__ for k in kinds)} only")
            related = _related(model, technique, gname, g.related_modules, len(names))
            for name, rel in zip(names, related):
                m = _to_compress(model, name)
                method = t.shared_parameters.method
                if technique == "row_pruning":
                    m.enable_row_pruning(g.params.dense_ratio, method)
                elif technique == "head_pruning":
                    m.enable_head_pruning(g.params.dense_ratio, method, t.shared_parameters.num_heads)
                else:
                    m.enable_channel_pruning(g.params.dense_ratio, method)
                m._ds_related = {**getattr(m, "_ds_related", {}), technique: rel}
                if technique == "channel_pruning":
                    # Note: a batch norm after a pruned channel would turn its zeros into its bias;
                    # masking the norm's output too makes the masked model compute what the
                    # model with the channel removed computes.
                    for r in rel:
                        bn = _get(model, r)
                        if isinstance(bn, nn.BatchNorm2d):
                            m._ds_hooks = [*getattr(m, "_ds_hooks", []),
                                           bn.register_forward_hook(_ChannelMaskHook(m))]
    return model


# -- redundancy_clean ------------------------------------------------------------------------------


def _keep_index(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask.detach() > 0.5, as_tuple=False).flatten()


def _shrink_linear_in(m: nn.Module, cols: torch.Tensor) -> None:
    with torch.no_grad():
        m.weight = nn.Parameter(m.weight.detach().index_select(1, cols).clone())
    if isinstance(m, nn.Linear):
        m.in_features = int(cols.numel())
    else:
        m.in_channels = int(cols.numel())


def _shrink_out(m: nn.Module, rows: torch.Tensor) -> None:
    with torch.no_grad():
        if isinstance(m, nn.BatchNorm2d):
            for attr in ("weight", "bias"):
                if getattr(m, attr) is not None:
                    setattr(m, attr, nn.Parameter(getattr(m, attr).detach().index_select(0, rows).clone()))
            for attr in ("running_mean", "running_var"):
                if getattr(m, attr) is not None:
                    setattr(m, attr, getattr(m, attr).index_select(0, rows).clone())
            m.num_features = int(rows.numel())
            return
        m.weight = nn.Parameter(m.weight.detach().index_select(0, rows).clone())
        if m.bias is not None:
            m.bias = nn.Parameter(m.bias.detach().index_select(0, rows).clone())
    if isinstance(m, nn.Linear):
        m.out_features = int(rows.numel())
    else:
        m.out_channels = int(rows.numel())


def _plain(m: nn.Module) -> nn.Module:
    """A torch layer with ``m``'s (cleaned) weight and bias."""
    w = m.weight.detach()
    b = m.bias.detach() if getattr(m, "bias", None) is not None else None
    if isinstance(m, LinearLayer_Compress):
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    elif isinstance(m, Conv2dLayer_Compress):
        new = nn.Conv2d(w.shape[1] * m.groups, w.shape[0], m.kernel_size, stride=m.stride, padding=m.padding,
                        dilation=m.dilation, groups=m.groups, bias=b is not None, padding_mode=m.padding_mode,
                        device=w.device, dtype=w.dtype)
    else:
        new = nn.Embedding(w.shape[0], w.shape[1], padding_idx=m.padding_idx, max_norm=m.max_norm,
                           norm_type=m.norm_type, scale_grad_by_freq=m.scale_grad_by_freq, sparse=m.sparse,
                           device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(m.training)
    return new


def redundancy_clean(model: nn.Module, deepspeed_config: Any, mpu: Any = None) -> nn.Module:
    """Make the compression permanent; returns the model (changed in place).

    Every compress layer gets its effective weight (masks applied; weight quantization at its
    target bits written into the values). Then row pruning removes the pruned output rows (and
    the related modules' input columns), head pruning removes the pruned heads' input columns
    (and the related q/k/v modules' output rows; a fused qkv module of three times the width
    loses them in each third), channel pruning removes the pruned output channels (and the
    related convolutions' input channels / batch norms' channels). Layers without activation
    quantization become plain ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Embedding``."""
    _section(deepspeed_config)  # validates the config the caller passes
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, COMPRESS_LAYERS)]
    removals: list[tuple[str, nn.Module, torch.Tensor, list[str]]] = []
    with torch.no_grad():
        for name, m in layers:
            w, b = m.effective_weight(bits=m.wq["target_bits"] if m.wq is not None else None)
            m.weight.data.copy_(w.detach())
            if b is not None:
                m.bias.data.copy_(b.detach())
            related = getattr(m, "_ds_related", {})
            if isinstance(m, LinearLayer_Compress):
                rm = m.current_row_mask()
                if rm is not None:
                    removals.append(("row", m, _keep_index(rm), related.get("row_pruning", [])))
                hm = m.current_head_mask()
                if hm is not None:
                    removals.append(("head", m, _keep_index(hm), related.get("head_pruning", [])))
            elif isinstance(m, Conv2dLayer_Compress):
                cm = m.current_channel_mask()
                if cm is not None:
                    removals.append(("channel", m, _keep_index(cm), related.get("channel_pruning", [])))
        for kind, m, keep, related in removals:
            if kind in ("row", "channel"):
                _shrink_out(m, keep)
                for rel in related:
                    r = _get(model, rel)
                    if isinstance(r, nn.BatchNorm2d):
                        _shrink_out(r, keep)
                    else:
                        _shrink_linear_in(r, keep)
            else:
                h = m.head["num_heads"]
                d = m.in_features // h
                cols = (keep.unsqueeze(1) * d + torch.arange(d, device=keep.device)).flatten()
                width = m.in_features
                _shrink_linear_in(m, cols)
                for rel in related:
                    r = _get(model, rel)
                    if r.out_features == 3 * width:  # fused qkv
                        rows = torch.cat([cols + i * width for i in range(3)])
                    elif r.out_features == width:
                        rows = cols
                    else:
                        raise ValueError(f"{_PREFIX}.head_pruning.related_modules: {rel!r} has {r.out_features} "
                                         f"outputs; head pruning needs {width} (q, k or v) or {3 * width} (fused qkv)")
                    _shrink_out(r, rows)
        for name, m in layers:
            for handle in getattr(m, "_ds_hooks", []):
                handle.remove()
            m.sparse_pruning_enabled = m.row_pruning_enabled = m.head_pruning_enabled = False
            m.channel_pruning_enabled = m.weight_quantization_enabled = False
            if m.wq is not None:
                m.wq["in_forward"] = False
            if not m.activation_quantization_enabled:
                _set(model, name, _plain(_get(model, name)))
            else:
                for attr in ("sparse_mask_scores", "row_mask_scores", "head_pruning_scores", "channel_mask_scores"):
                    if hasattr(m, attr):
                        delattr(m, attr)
    return model
