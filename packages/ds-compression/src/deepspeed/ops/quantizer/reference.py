"""Pure-PyTorch reference of the int8 / int4 group quantizer, the definition ds-ops-cpu's
``quantizer`` op is tested against (and the path used without it).

Per group of ``group_size`` values, ``b`` bits:

- symmetric: ``scale = max|x| / (2^(b-1) - 1)`` (1 when 0), ``q = clamp(round(x / scale),
  -(2^(b-1) - 1), 2^(b-1) - 1)``, stored two's complement; ``x' = q * scale``.
- asymmetric: ``scale = (max - min) / (2^b - 1)`` (1 when 0), ``q = clamp(round((x - min) /
  scale), 0, 2^b - 1)``; ``x' = q * scale + min``.

``round`` is half to even. Codes are packed LSB-first, ``ceil(group_size * b / 8)`` bytes a
group (int4: two a byte, low nibble first). An integer grid has no NaN or inf: such inputs are
refused.
"""

from __future__ import annotations

import torch

from deepspeed.ops.fp_quantizer.reference import pack, unpack


def code_bytes(group_size: int, bits: int) -> int:
    return (group_size * bits + 7) // 8


def quantize(x: torch.Tensor, group_size: int, bits: int, symmetric: bool):
    """(packed codes uint8 [G, code_bytes], scale fp32 [G], offset fp32 [G] or None, bad count)."""
    g = x.detach().to(torch.float32).reshape(-1, group_size)
    finite = torch.isfinite(g)
    bad = int((~finite).sum())
    gf = torch.where(finite, g, torch.zeros_like(g))
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        amax = torch.where(finite, g.abs(), torch.zeros_like(g)).amax(dim=1, keepdim=True)
        scale = amax / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(gf / scale).clamp(-qmax, qmax).to(torch.int64)
        codes = q & ((1 << bits) - 1)
        offset = None
    else:
        big = torch.finfo(torch.float32).max
        lo = torch.where(finite, g, torch.full_like(g, big)).amin(dim=1, keepdim=True)
        hi = torch.where(finite, g, torch.full_like(g, -big)).amax(dim=1, keepdim=True)
        none = lo > hi
        lo, hi = torch.where(none, torch.zeros_like(lo), lo), torch.where(none, torch.zeros_like(hi), hi)
        scale = (hi - lo) / (2 ** bits - 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        codes = torch.round((gf - lo) / scale).clamp(0, 2 ** bits - 1).to(torch.int64)
        offset = lo.flatten()
    return pack(codes, bits), scale.flatten(), offset, bad


def dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None, group_size: int,
               bits: int) -> torch.Tensor:
    """[G, group_size] fp32 values."""
    c = unpack(codes, group_size, bits)
    s = scale.to(torch.float32).reshape(-1, 1)
    if offset is None:
        q = torch.where(c >= (1 << (bits - 1)), c - (1 << bits), c)
        return q.to(torch.float32) * s
    return c.to(torch.float32) * s + offset.to(torch.float32).reshape(-1, 1)
