"""ZeroQuant post-training quantization: group-wise int8 / int4 weights, optionally with
token-wise int8 activations (W8A8, W4A8), and layer-by-layer knowledge distillation (LKD).

:func:`quantize_zeroquant` replaces the model's ``nn.Linear`` layers (those the ``modules``
patterns name) by :class:`QuantizedLinear`, which stores the weight as integer codes and fp32
scales and computes with integer-weight kernels on the CPU:

=========  ==============================================  ===============================================
scheme     weights                                         matmul
=========  ==============================================  ===============================================
``w8``     int8, symmetric, one scale per output row       dequantized weight, fp32 GEMM
``w4``     int4, asymmetric, groups of ``group_size``      dequantized weight (ds-ops-cpu kernel), fp32 GEMM
``w8a8``   int8, symmetric, one scale per output row       token-wise int8 activations, ``torch._int_mm``
                                                           (int32 sums), rescaled per token and row
``w4a8``   int4, symmetric, groups of ``group_size``       token-wise int8 activations, dequantized weight
=========  ==============================================  ===============================================

Token-wise activation quantization gives each row of the input (each token) its own symmetric
int8 scale, computed on the fly. The quantized model's ``state_dict`` holds only the codes and
scales; :func:`convert_to_quantized` builds the same structure without data, so a saved model
loads back with ``torch.load(..., weights_only=True)`` (what ds-inference will consume).
"""

from __future__ import annotations

import copy
import re
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from deepspeed.compression import _fake_quant as fq

SCHEMES = ("w8", "w4", "w8a8", "w4a8")


def _check(scheme: str, group_size: int, in_features: int, name: str) -> int:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not a ZeroQuant scheme; use one of {', '.join(SCHEMES)}")
    if scheme in ("w8", "w8a8"):
        return in_features  # one scale per output row
    if group_size < 1 or in_features % group_size:
        raise ValueError(f"group_size={group_size} does not divide the {in_features} input features of {name!r}. "
                         f"Fix: use a divisor of {in_features}.")
    return group_size


def _tokenwise_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Note: the same numbers as amax(|x|) / 127 and round(x / scale), in fewer passes (the
    # infinity norm reads x once; the rounding and clamping work in place).
    scale = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True).div_(127.0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.div(x, scale).round_().clamp_(-127, 127).to(torch.int8), scale


class QuantizedLinear(nn.Module):
    """A Linear layer with integer weights (see the module docstring for the schemes)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: str, group_size: int,
                 name: str = "linear"):
        super().__init__()
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        self.group_size = _check(scheme, group_size, in_features, name)
        n, k, gs = out_features, in_features, self.group_size
        if scheme in ("w8", "w8a8"):
            self.register_buffer("weight_int8", torch.zeros(n, k, dtype=torch.int8))
            self.register_buffer("weight_scale", torch.ones(n))
        else:
            groups = n * k // gs
            self.register_buffer("weight_int4", torch.zeros(groups, (gs + 1) // 2, dtype=torch.uint8))
            self.register_buffer("weight_scale", torch.ones(groups))
            if scheme == "w4":
                self.register_buffer("weight_offset", torch.zeros(groups))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, m: nn.Linear, scheme: str, group_size: int, name: str = "linear") -> "QuantizedLinear":
        q = cls(m.in_features, m.out_features, m.bias is not None, scheme, group_size, name)
        q.set_weight(m.weight.detach(), None if m.bias is None else m.bias.detach())
        return q

    def set_weight(self, w: torch.Tensor, b: torch.Tensor | None) -> None:
        """Quantize the float weight ``w`` ``[out, in]`` into this layer."""
        from deepspeed.ops.quantizer import quantize

        w = w.to(torch.float32)
        with torch.no_grad():
            if self.scheme in ("w8", "w8a8"):
                qt = quantize(w, self.in_features, 8, symmetric=True)
                self.weight_int8.copy_(qt.codes.view(torch.int8).reshape(self.out_features, self.in_features))
            else:
                qt = quantize(w, self.group_size, 4, symmetric=self.scheme == "w4a8")
                self.weight_int4.copy_(qt.codes)
                if qt.offset is not None:
                    self.weight_offset.copy_(qt.offset)
            self.weight_scale.copy_(qt.scale)
            if b is not None:
                self.bias.copy_(b)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight ``[out, in]`` the layer computes with."""
        if self.scheme in ("w8", "w8a8"):
            return self.weight_int8 * self.weight_scale.unsqueeze(1)
        from deepspeed.ops.quantizer import QuantizedTensor, dequantize

        qt = QuantizedTensor(self.weight_int4, self.weight_scale, getattr(self, "weight_offset", None),
                             (self.out_features, self.in_features), torch.float32, 4, self.group_size)
        return dequantize(qt)

    def weight_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers()) + (
            0 if self.bias is None else self.bias.numel() * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.float32)
        if self.scheme == "w8a8":
            # Note: int8 x int8 -> int32 sums (torch._int_mm); the weight is passed transposed
            # as a view, the layout the CPU kernel is fastest with.
            xq, xs = _tokenwise_int8(x2)
            y = torch._int_mm(xq, self.weight_int8.t()).to(torch.float32).mul_(xs).mul_(self.weight_scale)
            if self.bias is not None:
                y = y.add_(self.bias)
        else:
            # Note: weight-only schemes dequantize the codes (one pass over the weight, the int4
            # unpacking in ds-ops-cpu's quantizer kernel) and run the fp32 GEMM: on this CPU
            # build that is an order of magnitude faster than aten's int8/int4-weight GEMMs.
            xin = fq.tokenwise_int8(x2) if self.scheme == "w4a8" else x2
            y = F.linear(xin, self.dequantized_weight(), self.bias)
        return y.reshape(*shape, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}, " \
               f"group_size={self.group_size}"


def _targets(model: nn.Module, modules: Iterable[str] | None) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    if modules is None:
        return names
    out: list[str] = []
    for pattern in modules:
        found = [n for n in names if pattern == "*" or re.search(pattern, n)]
        if not found:
            raise ValueError(f"quantize_zeroquant: modules pattern {pattern!r} matches no nn.Linear of the model "
                             f"(they are: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})")
        out.extend(n for n in found if n not in out)
    return out


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def convert_to_quantized(model: nn.Module, scheme: str = "w8a8", group_size: int = 64,
                         modules: Iterable[str] | None = None) -> nn.Module:
    """Replace the Linear layers by :class:`QuantizedLinear` of ``scheme`` holding the
    quantization of their current weights; returns ``model`` (changed in place). With a freshly
    built model this is the skeleton a saved quantized ``state_dict`` loads into."""
    for name in _targets(model, modules):
        m = model.get_submodule(name)
        _set(model, name, QuantizedLinear.from_linear(m, scheme, group_size, name))
    return model


class _FakeQuantLinear(nn.Module):
    """LKD's student layer: float weights trained through the scheme's fake quantization."""

    def __init__(self, m: nn.Linear, scheme: str, group_size: int):
        super().__init__()
        self.weight = nn.Parameter(m.weight.detach().clone())
        self.bias = None if m.bias is None else nn.Parameter(m.bias.detach().clone())
        self.scheme, self.group_size = scheme, group_size

    def forward(self, x):
        w = self.weight
        n, k = w.shape
        if self.scheme in ("w8", "w8a8"):
            wq = fq.symmetric(w, 8, n)
        elif self.scheme == "w4":
            wq = fq.asymmetric(w, 4, n * k // self.group_size)
        else:
            wq = fq.symmetric(w, 4, n * k // self.group_size)
        w = fq.ste(w, wq)
        if self.scheme in ("w8a8", "w4a8"):
            x = fq.ste(x, fq.tokenwise_int8(x))
        return F.linear(x, w, self.bias)


def _lkd(model: nn.Module, teacher: nn.Module, layers: list[str], targets: list[str], scheme: str, group_size: int,
         calibration_data: Iterable, steps: int, lr: float) -> None:
    """ZeroQuant's layer-by-layer distillation: each layer (a block holding Linear layers) is
    trained, through fake quantization, to reproduce the full-precision layer's output on the
    full-precision model's own inputs to it."""
    batches = list(calibration_data)
    if not batches:
        raise ValueError("quantize_zeroquant: lkd=True needs calibration_data (an iterable of model inputs)")
    for lname in layers:
        t_layer = teacher.get_submodule(lname)
        captured: list[tuple] = []
        handle = t_layer.register_forward_hook(lambda m, inp, out: captured.append((inp, out)))
        with torch.no_grad():
            for b in batches:
                teacher(*b) if isinstance(b, (tuple, list)) else teacher(b)
        handle.remove()
        student = copy.deepcopy(t_layer)
        inner = [n for n in targets if n.startswith(lname + ".")]
        for n in inner:
            _set(student, n[len(lname) + 1:], _FakeQuantLinear(t_layer.get_submodule(n[len(lname) + 1:]), scheme,
                                                               group_size))
        params = [p for n, p in student.named_parameters() if any(n.startswith(i[len(lname) + 1:]) for i in inner)]
        for p in student.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        for step in range(steps):
            inp, out = captured[step % len(captured)]
            loss = F.mse_loss(student(*inp), out.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for n in inner:
                rel = n[len(lname) + 1:]
                src, dst = student.get_submodule(rel), model.get_submodule(n)
                dst.weight.copy_(src.weight)
                if dst.bias is not None:
                    dst.bias.copy_(src.bias)


def quantize_zeroquant(model: nn.Module, scheme: str = "w8a8", group_size: int = 64,
                       modules: Iterable[str] | None = None, lkd: bool = False, lkd_layers: Iterable[str] | None = None,
                       calibration_data: Iterable | None = None, lkd_steps: int = 100,
                       lkd_lr: float = 1e-4) -> nn.Module:
    """Post-training quantization of ``model`` (changed in place and returned).

    ``scheme``: ``"w8a8"``, ``"w4a8"``, ``"w8"`` or ``"w4"`` (see the module docstring);
    ``group_size``: the int4 weight groups; ``modules``: regular expressions of the Linear layers
    to quantize (all when None). ``lkd=True`` first distils each of ``lkd_layers`` (module names
    of the model's blocks) from the full-precision model on ``calibration_data`` (model inputs)
    for ``lkd_steps`` Adam steps at ``lkd_lr``."""
    targets = _targets(model, modules)
    for name in targets:
        _check(scheme, group_size, model.get_submodule(name).in_features, name)
    if lkd:
        if not lkd_layers:
            raise ValueError("quantize_zeroquant: lkd=True needs lkd_layers (the names of the blocks to distil, "
                             "e.g. ['blocks.0', 'blocks.1'])")
        layers = list(lkd_layers)
        for lname in layers:
            try:
                model.get_submodule(lname)
            except AttributeError:
                raise ValueError(f"quantize_zeroquant: lkd_layers entry {lname!r} is not a module of the model") \
                    from None
        teacher = copy.deepcopy(model).eval()
        _lkd(model, teacher, layers, targets, scheme, group_size, calibration_data or [], lkd_steps, lkd_lr)
    return convert_to_quantized(model, scheme, group_size, targets)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (the quantized codes and scales included)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total
