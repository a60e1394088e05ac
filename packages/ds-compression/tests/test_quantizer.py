"""int8 / int4 group quantizers: native CPU kernel (ds-ops-cpu) byte for byte against the
pure-PyTorch reference for odd group sizes, round-trip error, non-finite input refused, and
DeepSpeed's ds_quantizer. Comparisons are exact (the numbers are defined bit for bit)."""

import pytest
import torch

from deepspeed.ops.quantizer import dequantize, ds_quantizer, quantize


def native_available():
    from deepspeed.compression import _native

    return _native.load("quantizer") is not None


needs_native = pytest.mark.skipif(not native_available(), reason="ds-ops-cpu quantizer op cannot load here")


def sample(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp2(torch.randint(-6, 6, (n,), generator=g).float())
    x[:: 17] = 0.0
    return x


@needs_native
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [1, 3, 7, 33, 128])
def test_native_matches_reference(bits, symmetric, group_size):
    x = sample(group_size * 30, group_size)
    a = quantize(x, group_size, bits, symmetric, backend="native")
    b = quantize(x, group_size, bits, symmetric, backend="reference")
    assert a.codes.shape == (30, (group_size * bits + 7) // 8)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)
    assert (a.offset is None) == symmetric and (symmetric or torch.equal(a.offset, b.offset))
    assert torch.equal(dequantize(a, backend="native"), dequantize(b, backend="reference"))


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_and_levels(bits, symmetric):
    gs = 33
    x = sample(gs * 20, 3)
    qt = quantize(x, gs, bits, symmetric)
    y = dequantize(qt).reshape(-1, gs)
    g = x.reshape(-1, gs)
    step = qt.scale.reshape(-1, 1)
    assert bool(((y - g).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())
    levels = max(int(torch.unique(r).numel()) for r in y)
    assert levels <= (2 ** bits - 1 if symmetric else 2 ** bits)
    if symmetric:  # the extreme of each group is hit exactly (up to the scale's rounding)
        top = g.abs().argmax(1, keepdim=True)
        torch.testing.assert_close(y.gather(1, top), g.gather(1, top), rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_refused(bad):
    x = torch.randn(16)
    x[5] = bad
    with pytest.raises(ValueError, match=r"the input has 1 NaN/inf values; int8 has no encoding for them"):
        quantize(x, 8, 8)


def test_ds_quantizer_fake_quantizes_in_place_of_the_input():
    x = torch.randn(8, 64, dtype=torch.float16)
    y = ds_quantizer(x, groups=8, bit_num=4)
    assert y.shape == x.shape and y.dtype == torch.float16
    assert max(int(torch.unique(r).numel()) for r in y) <= 15
    assert torch.equal(y, dequantize(quantize(x, 64, 4, True)))
    ya = ds_quantizer(x, groups=4, bit_num=8, asym=True)
    assert torch.equal(ya, dequantize(quantize(x, 128, 8, False)))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"bits=3: the int group quantizer supports 8 and 4"):
        quantize(torch.randn(8), 8, 3)
    with pytest.raises(ValueError, match=r"group_size=5 does not divide the input's 8 elements"):
        quantize(torch.randn(8), 5)
    with pytest.raises(ValueError, match=r"groups=3 does not divide the input's 8 elements"):
        ds_quantizer(torch.randn(8), groups=3)
    with pytest.raises(NotImplementedError, match=r"sr=True \(stochastic rounding\) is not implemented"):
        ds_quantizer(torch.randn(8), sr=True)
    with pytest.raises(ValueError, match=r"input dtype torch.int64 is not floating point"):
        quantize(torch.arange(8), 8)
