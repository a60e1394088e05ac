"""FP8 (e4m3, e5m2), FP6 (e3m2), FP4 (e2m1) group quantizers: the pure-PyTorch reference against
torch's float8 casts and a brute-force nearest-value search, the native CPU kernel (ds-ops-cpu)
byte for byte against the reference, NaN / inf / subnormal handling, odd group sizes, and
DeepSpeed's FP_Quantize API. Every comparison is exact (the formats are defined bit for bit)."""

import pytest
import torch

from deepspeed.ops.fp_quantizer import FP_Quantize, fp_dequantize, fp_quantize, fp_selective_dequantize
from deepspeed.ops.fp_quantizer import reference as ref

FORMATS = ["e4m3", "e5m2", "e3m2", "e2m1"]
GROUP_SIZES = [1, 3, 7, 33, 64, 512]


def native_available():
    from deepspeed.compression import _native

    return _native.load("fp_quantizer") is not None


needs_native = pytest.mark.skipif(not native_available(), reason="ds-ops-cpu fp_quantizer op cannot load here")


def sample(n, seed, specials=True, nan=True):
    """Normal values over many magnitudes, plus subnormal-range values, exact ties, zeros of both
    signs and (optionally) inf and NaN."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-12, 12, (n,), generator=g).float())
    if specials:
        k = n // 10
        idx = torch.randperm(n, generator=g)
        x[idx[:k]] = torch.randn(k, generator=g) * 1e-6  # tiny next to their group's max: subnormal codes
        x[idx[k:k + 3]] = torch.tensor([0.0, -0.0, float("inf")])[: min(3, n - k)]
        x[idx[k + 3:k + 5]] = -float("inf")
        if nan:
            x[idx[k + 5:k + 8]] = float("nan")
    return x


def same(a, b):
    """Exact equality, NaN equal to NaN."""
    return torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(a[~torch.isnan(a)], b[~torch.isnan(b)])


# -- the reference ------------------------------------------------------------------------------


@pytest.mark.parametrize("name,dtype", [("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)])
def test_reference_matches_torch_float8(name, dtype):
    f = ref.fmt(name)
    codes = torch.arange(256)
    assert same(ref.decode(codes, f), codes.to(torch.uint8).view(dtype).float())
    v = sample(20000, 1, specials=False).clamp(-f.fmax, f.fmax)
    v = torch.cat([v, torch.randn(5000) * 2.0 ** (1 - f.bias - f.mbits)])  # the subnormal range
    got, _ = ref.encode(v, f)
    assert torch.equal(got, v.to(dtype).view(torch.uint8).to(torch.int64))


@pytest.mark.parametrize("name", FORMATS)
def test_reference_rounds_to_the_nearest_value_ties_to_even(name):
    f = ref.fmt(name)
    codes = torch.arange(2 ** f.bits)
    values = ref.decode(codes, f)
    finite = torch.isfinite(values) & ~((values == 0) & torch.signbit(values))  # one zero
    table, table_codes = values[finite], codes[finite]
    v = torch.cat([torch.linspace(-f.fmax, f.fmax, 4001), (table[:-1] + table[1:]) / 2])  # includes every tie
    got = ref.decode(ref.encode(v, f)[0], f)
    dist = (v.unsqueeze(1) - table.unsqueeze(0)).abs()
    best = dist.min(dim=1, keepdim=True).values
    tie_even = torch.where(dist == best, (table_codes % 2 == 0).float().unsqueeze(0), -1.0)
    pick = torch.where((dist == best).sum(1) > 1, tie_even.argmax(1), dist.argmin(1))
    want = table[pick]
    assert torch.equal(got.abs(), want.abs())


# -- native kernel against the reference ----------------------------------------------------------


@needs_native
@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_native_matches_reference_bytes(name, group_size):
    f = ref.fmt(name)
    x = sample(group_size * 40, group_size, nan=f.has_nan)
    rows_n = fp_quantize(x, name, group_size, backend="native")
    rows_r = fp_quantize(x, name, group_size, backend="reference")
    assert rows_n.shape == (40, ref.row_bytes(group_size, f))
    assert torch.equal(rows_n, rows_r)
    assert same(fp_dequantize(rows_n, name, group_size, backend="native"),
                fp_dequantize(rows_r, name, group_size, backend="reference"))


@needs_native
def test_native_large_tensor_multithreaded_matches_reference():
    x = sample(512 * 600, 5)
    assert torch.equal(fp_quantize(x, "e4m3", 512, backend="native"), fp_quantize(x, "e4m3", 512, backend="reference"))


# -- round trips and special values ---------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("group_size", [7, 64])
def test_round_trip_error_within_half_a_step(name, group_size):
    f = ref.fmt(name)
    x = sample(group_size * 50, 9, specials=False)
    y = fp_dequantize(fp_quantize(x, name, group_size), name, group_size)
    g, yg = x.reshape(-1, group_size), y.reshape(-1, group_size)
    scale = g.abs().amax(1, keepdim=True) / f.fmax
    v = g / scale
    e = torch.clamp(torch.floor(torch.log2(v.abs().clamp_min(1e-30))), min=1 - f.bias)
    half_step = torch.exp2(e - f.mbits - 1) * scale
    assert bool(((yg - g).abs() <= half_step * (1 + 1e-6)).all())
    # the group's largest magnitude is exact up to the scale's own rounding
    top = g.abs().argmax(1, keepdim=True)
    torch.testing.assert_close(yg.gather(1, top), g.gather(1, top), rtol=1e-6, atol=0)


@pytest.mark.parametrize("backend", ["auto", "reference"])  # one group: the reference once failed on it
@pytest.mark.parametrize("name", FORMATS)
def test_nan_inf_and_zeros(name, backend):
    f = ref.fmt(name)
    x = torch.tensor([1.0, -2.0, float("inf"), -float("inf"), 0.0, -0.0, 3e-7, 0.5])
    y = fp_dequantize(fp_quantize(x, name, 8, backend=backend), name, 8, backend=backend)
    scale = 2.0 / f.fmax  # inf is not counted in the group maximum
    assert y[0].item() == pytest.approx(1.0, rel=2 ** -f.mbits) and y[1].item() == pytest.approx(-2.0, rel=1e-6)
    if f.has_inf:
        assert y[2].item() == float("inf") and y[3].item() == -float("inf")
    else:  # saturates to the largest finite value
        assert y[2].item() == pytest.approx(f.fmax * scale) and y[3].item() == pytest.approx(-f.fmax * scale)
    assert y[4].item() == 0.0 and y[5].item() == 0.0 and torch.signbit(y[5])
    # 3e-7 is far below the group's maximum: rounded at the quantum of its binade (or of the
    # subnormals, where it falls below the format's smallest normal)
    v = 3e-7 / scale
    e = max(int(torch.floor(torch.log2(torch.tensor(v)))), 1 - f.bias)
    assert abs(y[6].item() - 3e-7) <= 2.0 ** (e - f.mbits) * scale / 2 * (1 + 1e-6)
    nan = torch.tensor([1.0, float("nan"), -1.0, 0.25])
    if f.has_nan:
        y = fp_dequantize(fp_quantize(nan, name, 4), name, 4)
        assert torch.isnan(y[1]) and y[0].item() == 1.0 and y[2].item() == -1.0
    else:
        with pytest.raises(ValueError, match=rf"the input has 1 NaN values and {name} has no NaN encoding"):
            fp_quantize(nan, name, 4)


def test_all_zero_group_and_bf16_input():
    x = torch.zeros(16, dtype=torch.bfloat16)
    rows = fp_quantize(x, "e4m3", 8)
    assert torch.equal(ref.scales_of(rows).flatten(), torch.ones(2))
    assert torch.equal(fp_dequantize(rows, "e4m3", 8, dtype=torch.bfloat16), x)


# -- DeepSpeed's FP_Quantize -------------------------------------------------------------------


@pytest.mark.parametrize("q_bits,mant,name", [(8, 3, "e4m3"), (8, 2, "e5m2"), (6, 2, "e3m2"), (4, 1, "e2m1")])
def test_fp_quantize_class_round_trip(q_bits, mant, name):
    x = torch.randn(4, 8, 32, dtype=torch.bfloat16)
    q = FP_Quantize(group_size=32)
    rows = q.quantize(x, q_bits=q_bits, q_mantisa_bits=mant)
    y = q.dequantize(rows, q_bits=q_bits, q_mantisa_bits=mant)
    assert y.shape == x.shape and y.dtype == torch.bfloat16
    assert torch.equal(y, fp_dequantize(fp_quantize(x, name, 32), name, 32, x.shape, torch.bfloat16))
    sel = q.selective_dequantize(rows, torch.tensor([3, 1]), q_bits=q_bits, q_mantisa_bits=mant)
    assert torch.equal(sel, y[[3, 1]])
    codes, scales = q.quantize(x, q_bits=q_bits, q_mantisa_bits=mant, return_meta_tensor=True)
    assert torch.equal(q.dequantize(codes, q_bits=q_bits, q_mantisa_bits=mant, scale=scales), y)
    out = torch.empty_like(x)
    assert q.dequantize(rows, fp_out=out, q_bits=q_bits, q_mantisa_bits=mant) is out and torch.equal(out, y)


def test_fp_quantize_bad_input():
    q = FP_Quantize(group_size=32)
    with pytest.raises(ValueError, match=r"q_bits=12, q_mantisa_bits=3 is not a supported FP format"):
        q.quantize(torch.randn(64), q_bits=12)
    with pytest.raises(RuntimeError, match=r"call quantize before dequantizing"):
        FP_Quantize().dequantize(torch.zeros(1, 516, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"group_size=32 does not divide the input's 40 elements"):
        q.quantize(torch.randn(40))
    q.quantize(torch.randn(2, 32))
    with pytest.raises(ValueError, match=r"selective_dequantize works on 3-d tensors; the quantized tensor has shape"):
        q.selective_dequantize(q._rows, torch.tensor([0]))
    with pytest.raises(NotImplementedError, match=r"stochastic_mode=True is not implemented"):
        q.quantize(torch.randn(64), stochastic_mode=True)
    with pytest.raises(ValueError, match=r"unknown FP format 'e8m0'"):
        fp_quantize(torch.randn(8), "e8m0", 8)
    with pytest.raises(ValueError, match=r"indexes \[5\] out of range for 4 slices"):
        fp_selective_dequantize(fp_quantize(torch.randn(4, 32), "e4m3", 32), torch.tensor([5]), (4, 1, 32),
                                "e4m3", 32)
