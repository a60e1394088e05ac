"""Fake quantization (quantize, then dequantize, in the input's dtype) of weights and activations,
with straight-through gradients. Pure PyTorch; these define the numbers every compression layer
and ZeroQuant produce.

Rounding is round-half-to-even (``torch.round``) everywhere.
"""

from __future__ import annotations

import torch


def _groups(x: torch.Tensor, num_groups: int, key: str) -> torch.Tensor:
    if num_groups < 1 or x.numel() % num_groups:
        raise ValueError(f"{key}={num_groups}: the weight of shape {tuple(x.shape)} ({x.numel()} elements) does not "
                         f"split into {num_groups} equal groups. Fix: use a divisor of {x.numel()}.")
    return x.reshape(num_groups, -1)


def symmetric(x: torch.Tensor, bits: int, num_groups: int = 1, key: str = "quantize_groups") -> torch.Tensor:
    """Per-group symmetric: ``scale = max|x| / (2^(bits-1) - 1)``, integers in
    ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]``."""
    g = _groups(x.detach(), num_groups, key)
    qmax = 2 ** (bits - 1) - 1
    scale = g.abs().amax(dim=1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (torch.round(g / scale).clamp_(-qmax, qmax) * scale).reshape(x.shape).to(x.dtype)


def asymmetric(x: torch.Tensor, bits: int, num_groups: int = 1, key: str = "quantize_groups") -> torch.Tensor:
    """Per-group asymmetric: ``scale = (max - min) / (2^bits - 1)``, integers in ``[0, 2^bits - 1]``
    offset by the group minimum."""
    g = _groups(x.detach(), num_groups, key)
    levels = 2 ** bits - 1
    lo = g.amin(dim=1, keepdim=True)
    scale = (g.amax(dim=1, keepdim=True) - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (torch.round((g - lo) / scale).clamp_(0, levels) * scale + lo).reshape(x.shape).to(x.dtype)


def ternary(x: torch.Tensor, num_groups: int = 1, key: str = "quantize_groups") -> torch.Tensor:
    """XTC/TernaryBERT ternary: per group, ``delta = 0.7 * mean|x|``; values with ``|x| > delta``
    become ``±alpha`` (alpha = their mean magnitude), the rest 0."""
    g = _groups(x.detach(), num_groups, key)
    delta = 0.7 * g.abs().mean(dim=1, keepdim=True)
    keep = (g.abs() > delta).to(g.dtype)
    alpha = (g.abs() * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp_min(1)
    return (torch.sign(g) * keep * alpha).reshape(x.shape).to(x.dtype)


def binary(x: torch.Tensor, num_groups: int = 1, key: str = "quantize_groups") -> torch.Tensor:
    """XTC/BinaryBERT binary: per group ``sign(x) * mean|x|`` (zero maps to +)."""
    g = _groups(x.detach(), num_groups, key)
    alpha = g.abs().mean(dim=1, keepdim=True)
    sign = torch.where(g >= 0, torch.ones_like(g), -torch.ones_like(g))
    return (sign * alpha).reshape(x.shape).to(x.dtype)


def weight(x: torch.Tensor, bits: int, quantization_type: str, num_groups: int) -> torch.Tensor:
    """The quantized value of a weight at ``bits`` (1: binary, 2: ternary, >= 3: integer grid)."""
    if bits == 1:
        return binary(x, num_groups)
    if bits == 2:
        return ternary(x, num_groups)
    fn = symmetric if quantization_type == "symmetric" else asymmetric
    return fn(x, bits, num_groups)


def activation(x: torch.Tensor, bits: int, quantization_type: str, lo: torch.Tensor | None = None,
               hi: torch.Tensor | None = None) -> torch.Tensor:
    """Per-tensor activation quantization with the range ``[lo, hi]`` (the tensor's own range when
    None: dynamic calibration). Values outside a static range are clamped."""
    xd = x.detach()
    lo = xd.amin() if lo is None else lo
    hi = xd.amax() if hi is None else hi
    if quantization_type == "symmetric":
        qmax = 2 ** (bits - 1) - 1
        scale = torch.maximum(lo.abs(), hi.abs()) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.round(xd / scale).clamp_(-qmax, qmax) * scale
    levels = 2 ** bits - 1
    scale = (hi - lo) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round((xd.clamp(lo, hi) - lo) / scale).clamp_(0, levels) * scale + lo


def tokenwise_int8(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """ZeroQuant's token-wise activation quantization: one symmetric scale per token (last dim)."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(dim=-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(x / scale).clamp_(-qmax, qmax) * scale


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, q):
        return q.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exactly ``q`` in the forward pass (so quantized values stay on their grid), the identity's
    gradient to ``x`` in the backward pass."""
    return _StraightThrough.apply(x, q)
