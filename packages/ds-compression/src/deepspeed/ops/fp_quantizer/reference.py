"""Pure-PyTorch reference of the FP8 / FP6 / FP4 group quantizer: the definition the native
kernels (ds-ops-cpu's ``fp_quantizer`` op) are tested against, and the path used without them.

Formats (sign, exponent, mantissa bits): ``e4m3`` (OCP FP8 E4M3FN: max 448, no inf, NaN =
all ones), ``e5m2`` (max 57344, inf and NaN), ``e3m2`` (FP6, max 28) and ``e2m1`` (FP4, max 6),
the last two with neither inf nor NaN.

Per group of ``group_size`` values: ``scale = max|finite x| / max_normal`` (1 when that is 0),
each ``x / scale`` rounded to the nearest representable value (ties to even, subnormals
included), saturating at the largest finite value. NaN stays NaN where the format has one (a
format without NaN refuses it); inf stays inf in e5m2 and saturates elsewhere. A group is stored
as its codes packed LSB-first in ``ceil(group_size * bits / 8)`` bytes, then its fp32 scale (4
bytes): a uint8 tensor of shape ``[num_groups, row_bytes(group_size, format)]``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class FPFormat(NamedTuple):
    name: str
    ebits: int
    mbits: int
    bias: int
    fmax: float
    has_inf: bool
    has_nan: bool
    max_code: int  # largest finite magnitude code

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits


FORMATS = {
    "e4m3": FPFormat("e4m3", 4, 3, 7, 448.0, False, True, (15 << 3) | 6),
    "e5m2": FPFormat("e5m2", 5, 2, 15, 57344.0, True, True, (30 << 2) | 3),
    "e3m2": FPFormat("e3m2", 3, 2, 3, 28.0, False, False, (7 << 2) | 3),
    "e2m1": FPFormat("e2m1", 2, 1, 1, 6.0, False, False, (3 << 1) | 1),
}
#: index of each format in the native op
KIND = {"e4m3": 0, "e5m2": 1, "e3m2": 2, "e2m1": 3}


def fmt(name: str) -> FPFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown FP format {name!r}; the formats are {', '.join(FORMATS)}")
    return FORMATS[name]


def code_bytes(group_size: int, f: FPFormat) -> int:
    return (group_size * f.bits + 7) // 8


def row_bytes(group_size: int, f: FPFormat) -> int:
    return code_bytes(group_size, f) + 4


def _pow2(n: torch.Tensor) -> torch.Tensor:
    """Exactly 2^n in fp32 for integer n in [-126, 127] (built from the exponent bits)."""
    return ((n.to(torch.int64) + 127) << 23).to(torch.int32).view(torch.float32)


def encode(v: torch.Tensor, f: FPFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """(int64 codes of the fp32 values ``v``, mask of NaNs the format cannot hold)."""
    width = f.ebits + f.mbits
    sign = torch.signbit(v).to(torch.int64)
    a = v.abs()
    nan = torch.isnan(a)
    inf = torch.isinf(a)
    a = torch.where(nan, torch.zeros_like(a), a).clamp(max=f.fmax)
    emin = 1 - f.bias
    _, e = torch.frexp(a)  # a = m * 2^e, m in [0.5, 1)
    ue = torch.clamp(e.to(torch.int64) - 1, min=emin)
    k = torch.round(a * _pow2(f.mbits - ue)).to(torch.int64)  # exact scaling, then ties to even
    up = k >= (2 << f.mbits)
    k = torch.where(up, k // 2, k)
    ue = ue + up.to(torch.int64)
    normal = ((ue + f.bias) << f.mbits) | (k - (1 << f.mbits))
    code = torch.where(k < (1 << f.mbits), k, normal).clamp(max=f.max_code)
    if f.has_inf:
        code = torch.where(inf, torch.full_like(code, ((1 << f.ebits) - 1) << f.mbits), code)
    if f.has_nan:
        code = torch.where(nan, torch.full_like(code, (1 << width) - 1), code)
    code = code | (sign << width)
    missing = nan if not f.has_nan else torch.zeros_like(nan)
    code = torch.where(missing, torch.zeros_like(code), code)
    return code, missing


def decode(code: torch.Tensor, f: FPFormat) -> torch.Tensor:
    """fp32 values of int64 ``code``."""
    width = f.ebits + f.mbits
    neg = ((code >> width) & 1).bool()
    ef = (code >> f.mbits) & ((1 << f.ebits) - 1)
    mf = code & ((1 << f.mbits) - 1)
    sub = mf.to(torch.float32) * _pow2(torch.full_like(mf, 1 - f.bias - f.mbits))
    nor = (mf + (1 << f.mbits)).to(torch.float32) * _pow2(ef - f.bias - f.mbits)
    mag = torch.where(ef == 0, sub, nor)
    top = ef == (1 << f.ebits) - 1
    if f.has_inf:
        mag = torch.where(top & (mf == 0), torch.full_like(mag, float("inf")), mag)
        mag = torch.where(top & (mf != 0), torch.full_like(mag, float("nan")), mag)
    elif f.has_nan:
        mag = torch.where(top & (mf == (1 << f.mbits) - 1), torch.full_like(mag, float("nan")), mag)
    return torch.where(neg, -mag, mag)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """[G, n] codes of ``bits`` bits each -> [G, ceil(n * bits / 8)] uint8, LSB first."""
    g, n = codes.shape
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((codes.unsqueeze(-1) >> shifts) & 1).reshape(g, n * bits)
    nbytes = (n * bits + 7) // 8
    stream = torch.nn.functional.pad(stream, (0, nbytes * 8 - n * bits))
    weights = (1 << torch.arange(8, dtype=torch.int64))
    return (stream.reshape(g, nbytes, 8) * weights).sum(-1).to(torch.uint8)


def unpack(rows: torch.Tensor, n: int, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack`: [G, nbytes] uint8 -> [G, n] int64 codes."""
    g = rows.shape[0]
    stream = ((rows.to(torch.int64).unsqueeze(-1) >> torch.arange(8, dtype=torch.int64)) & 1).reshape(g, -1)
    stream = stream[:, :n * bits].reshape(g, n, bits)
    return (stream << torch.arange(bits, dtype=torch.int64)).sum(-1)


def group_scales(g: torch.Tensor, f: FPFormat) -> torch.Tensor:
    finite = torch.isfinite(g)
    amax = torch.where(finite, g.abs(), torch.zeros_like(g)).amax(dim=1, keepdim=True)
    return torch.where(amax > 0, amax / f.fmax, torch.ones_like(amax))


def quantize(x: torch.Tensor, f: FPFormat, group_size: int) -> tuple[torch.Tensor, int]:
    """(rows, number of NaNs the format cannot hold)."""
    g = x.detach().to(torch.float32).reshape(-1, group_size)
    scale = group_scales(g, f)
    codes, missing = encode(g / scale, f)
    rows = torch.cat([pack(codes, f.bits), scale.contiguous().view(torch.uint8).reshape(-1, 4)], dim=1)
    return rows, int(missing.sum())


def scales_of(rows: torch.Tensor) -> torch.Tensor:
    # Note: a fresh 1-D copy, not contiguous(): a one-row slice already counts as contiguous, yet
    # its offset and row stride (the packed width) need not be multiples of 4, which view refuses.
    return rows[:, -4:].reshape(-1).clone().view(torch.float32).reshape(-1, 1)


def dequantize(rows: torch.Tensor, f: FPFormat, group_size: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """[G, group_size] fp32 values of ``rows`` (``scale``: [G, 1] scales instead of the stored ones)."""
    codes = unpack(rows[:, :-4], group_size, f.bits)
    s = scales_of(rows) if scale is None else scale.to(torch.float32).reshape(-1, 1)
    return decode(codes, f) * s
