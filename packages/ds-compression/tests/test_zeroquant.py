"""ZeroQuant PTQ on the demo's Shakespeare GPT (examples/gpt.py on examples/data/shakespeare.txt,
2 layers x 128, trained 200 steps here): perplexity on held-out text within 1% of fp32 for W8A8
and within 5% for group-wise W4A8 (and the weight-only schemes), LKD, save / load of the
quantized model, and each QuantizedLinear against a float reference of its integer math."""

import copy
import io
import os
import sys

import pytest
import torch

from deepspeed.compression.zeroquant import (QuantizedLinear, convert_to_quantized, model_bytes,
                                             quantize_zeroquant)

sys.path.insert(0, os.path.dirname(__file__))
import _shakespeare as S  # noqa: E402

needs_data = pytest.mark.skipif(not S.available(), reason="examples/ is not part of this checkout")


@pytest.fixture(scope="module")
def trained():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ids, vocab = S.load_text()
        model = S.train(S.build(vocab), ids, steps=200)
    finally:
        torch.set_num_threads(before)
    x, y = S.eval_windows(ids, n=48)
    return model, ids, vocab, x, y, S.perplexity(model, x, y)


@needs_data
@pytest.mark.parametrize("scheme,group_size,limit", [("w8a8", 128, 0.01), ("w4a8", 32, 0.05),
                                                      ("w8", 128, 0.01), ("w4", 32, 0.05)])
def test_perplexity_within_limit_of_fp32(trained, scheme, group_size, limit):
    model, _, _, x, y, ppl = trained
    q = quantize_zeroquant(copy.deepcopy(model), scheme, group_size)
    assert sum(isinstance(m, QuantizedLinear) for m in q.modules()) == 2 * 4 + 1  # qkv proj fc fc x2, head
    pq = S.perplexity(q, x, y)
    assert ppl < 30, f"the model did not train (perplexity {ppl:.2f})"
    assert abs(pq / ppl - 1) <= limit, f"{scheme}: perplexity {pq:.4f} vs fp32 {ppl:.4f} ({pq / ppl - 1:+.3%})"
    assert model_bytes(q) < model_bytes(model) * (0.45 if scheme.startswith("w8") else 0.35)


@needs_data
def test_lkd_reduces_the_block_output_error(trained):
    model, ids, _, x, y, ppl = trained
    calib = [ids[i * 64:(i + 1) * 64].unsqueeze(0) for i in range(0, 32)]
    plain = quantize_zeroquant(copy.deepcopy(model), "w4a8", 32)
    distilled = quantize_zeroquant(copy.deepcopy(model), "w4a8", 32, lkd=True, lkd_layers=["blocks.0", "blocks.1"],
                                   calibration_data=calib, lkd_steps=60, lkd_lr=1e-4)

    def block_error(q):
        outs = {}
        for name, m in (("fp", model), ("q", q)):
            h = m.blocks[1].register_forward_hook(lambda mod, i, o, name=name: outs.__setitem__(name, o))
            with torch.no_grad():
                m(x[:8])
            h.remove()
        return torch.mean((outs["fp"] - outs["q"]) ** 2).item()

    assert block_error(distilled) < block_error(plain)
    assert abs(S.perplexity(distilled, x, y) / ppl - 1) <= 0.05


@needs_data
def test_saved_quantized_model_loads_with_weights_only(trained):
    model, _, vocab, x, _, _ = trained
    q = quantize_zeroquant(copy.deepcopy(model), "w4", 32)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    fresh = convert_to_quantized(S.build(vocab, seed=5), "w4", 32)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x[:4]), q(x[:4]))


@pytest.mark.parametrize("scheme,group_size", [("w8", 64), ("w4", 32), ("w8a8", 64), ("w4a8", 16)])
def test_quantized_linear_matches_its_float_reference(scheme, group_size):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 40)
    q = QuantizedLinear.from_linear(lin, scheme, group_size)
    x = torch.randn(2, 5, 64)
    w = q.dequantized_weight().double()
    xr = x.double()
    if scheme.endswith("a8"):
        s = xr.abs().amax(-1, keepdim=True) / 127
        xr = torch.round(xr / s).clamp(-127, 127) * s
    want = xr @ w.t() + lin.bias.double()
    torch.testing.assert_close(q(x).double(), want, rtol=1e-5, atol=1e-5)
    # the stored weight is on the scheme's grid and within half a step of the float weight
    step = (lin.weight.detach().abs().amax(1, keepdim=True) / 127) if scheme.startswith("w8") else None
    if step is not None:
        assert bool(((w.float() - lin.weight.detach()).abs() <= step / 2 + 1e-7).all())
    levels = max(int(torch.unique(r).numel()) for r in w.float().reshape(-1, group_size if scheme[1] == "4" else 64))
    assert levels <= (255 if scheme.startswith("w8") else 16)


def test_bad_input():
    lin = torch.nn.Sequential(torch.nn.Linear(48, 16))
    with pytest.raises(ValueError, match=r"scheme='w3a8' is not a ZeroQuant scheme"):
        quantize_zeroquant(copy.deepcopy(lin), "w3a8")
    with pytest.raises(ValueError, match=r"group_size=20 does not divide the 48 input features of '0'"):
        quantize_zeroquant(copy.deepcopy(lin), "w4a8", 20)
    with pytest.raises(ValueError, match=r"modules pattern 'attn' matches no nn.Linear of the model \(they are: 0\)"):
        quantize_zeroquant(copy.deepcopy(lin), "w8a8", modules=["attn"])
    with pytest.raises(ValueError, match=r"lkd=True needs lkd_layers"):
        quantize_zeroquant(copy.deepcopy(lin), "w8a8", lkd=True)
    with pytest.raises(ValueError, match=r"lkd=True needs calibration_data"):
        quantize_zeroquant(copy.deepcopy(lin), "w8a8", lkd=True, lkd_layers=["0"])
