"""The quantizer op builders (cpu.quantizer, cpu.fp_quantizer): registered, built, loaded, and
the kernels' numbers on values whose codes are known by hand (the full comparison with the
pure-PyTorch reference is ds-compression's tests/test_fp_quantizer.py and test_quantizer.py)."""

import struct

import pytest
import torch

from deepspeed.accelerator import get_accelerator


@pytest.fixture(scope="module", params=["quantizer", "fp_quantizer"])
def built(request):
    builder = get_accelerator().create_op_builder(request.param)
    if not builder.is_compatible():
        pytest.skip("no C++ compiler")
    return builder, builder.load(verbose=False)


def test_registered_and_loads_with_its_source_hash(built):
    builder, module = built
    assert builder.BUILD_VAR == {"quantizer": "DS_BUILD_QUANTIZER", "fp_quantizer": "DS_BUILD_FP_QUANTIZER"}[builder.NAME]
    assert module.SOURCE_HASH == builder.source_hash()
    assert "scalar" in module.compiled_isas()


def test_fp4_e2m1_codes_by_hand():
    module = get_accelerator().create_op_builder("fp_quantizer").load(verbose=False)
    # group max 6 -> scale 1: the eight FP4 magnitudes encode to codes 0..7, negatives set bit 3
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.5, -6.0, 2.5, 5.0], dtype=torch.float32)
    rows = torch.empty(1, 6 + 4, dtype=torch.uint8)
    assert module.quantize(x.data_ptr(), rows.data_ptr(), 1, 12, 10, 3, 0, 1) == 0
    nibbles = [b >> s & 0xF for b in rows[0, :6].tolist() for s in (0, 4)]
    # ties go to the even code: 2.5 (between 2 = code 4 and 3 = code 5) -> 4; 5.0 (4 = code 6, 6 = code 7) -> 6
    assert nibbles == [0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 4, 6]
    assert struct.unpack("<f", bytes(rows[0, 6:].tolist()))[0] == 1.0
    out = torch.empty(12)
    module.dequantize(rows.data_ptr(), out.data_ptr(), 1, 12, 10, 3, 0, 1)
    assert out.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.5, -6.0, 2.0, 4.0]


def test_int4_symmetric_codes_by_hand():
    module = get_accelerator().create_op_builder("quantizer").load(verbose=False)
    x = torch.tensor([7.0, -7.0, 0.5, 1.5, 3.0, -2.5], dtype=torch.float32)  # scale 1; .5 ties round to even
    codes, scale = torch.empty(1, 3, dtype=torch.uint8), torch.empty(1)
    assert module.quantize(x.data_ptr(), codes.data_ptr(), scale.data_ptr(), 0, 1, 6, 3, 4, 1, 0, 1) == 0
    nibbles = [b >> s & 0xF for b in codes[0].tolist() for s in (0, 4)]
    assert scale.item() == 1.0 and nibbles == [7, 9, 0, 2, 3, 14]  # -7 = 0b1001, -2 = 0b1110
    out = torch.empty(6)
    module.dequantize(codes.data_ptr(), scale.data_ptr(), 0, out.data_ptr(), 1, 6, 3, 4, 1, 0, 1)
    assert out.tolist() == [7.0, -7.0, 0.0, 2.0, 3.0, -2.0]
