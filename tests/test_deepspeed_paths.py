"""Feature packages' modules imported by their DeepSpeed submodule paths (as DeepSpeed code writes
them) and used once, so every provided row of the compatibility table has a test. Runs in the
combined session, where every package is installed."""

import itertools

import torch


def test_fp_quantizer_quantize_module():
    from deepspeed.ops.fp_quantizer.quantize import FP_Quantize

    torch.manual_seed(0)
    x = torch.randn(4, 64)
    q = FP_Quantize(group_size=64)
    rows = q.quantize(x, q_bits=8, q_mantisa_bits=3)  # FP8 e4m3
    y = q.dequantize(rows, q_bits=8, q_mantisa_bits=3)
    assert y.shape == x.shape and y.dtype == x.dtype
    # e4m3 keeps 3 mantissa bits: round-to-nearest is within 2^-4 relative for normal values
    normal = x.abs() > x.abs().amax(dim=1, keepdim=True) * 2**-6
    assert float(((y - x).abs() / x.abs())[normal].max()) <= 2**-4


def test_pipe_module_and_p2p_modules():
    from deepspeed.runtime.pipe import p2p
    from deepspeed.runtime.pipe.module import LayerSpec, PipelineModule

    torch.manual_seed(0)
    pm = PipelineModule(layers=[LayerSpec(torch.nn.Linear, 4, 8), torch.nn.ReLU(), LayerSpec(torch.nn.Linear, 8, 2)],
                        num_stages=1)
    x = torch.randn(3, 4)
    expected = x
    for layer in pm.forward_funcs:  # one stage holds every layer, built from the specs
        expected = layer(expected)
    assert [type(f) for f in pm.forward_funcs] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert torch.equal(pm(x), expected)

    assert p2p.needs_grad(torch.ones(2, requires_grad=True)) and not p2p.needs_grad(torch.ones(2, dtype=torch.long))
    tags = {p2p.channel_tag(s, k, m, t) for s, k, m, t in itertools.product(range(3), range(2), (False, True), (False, True))}
    assert len(tags) == 3 * 2 * 2 * 2  # every (sender, kind, meta, training) has its own tag


def test_top_level_pipeline_names():
    import deepspeed
    from deepspeed.runtime.pipe.engine import PipelineEngine
    from deepspeed.runtime.pipe.module import PipelineModule

    assert deepspeed.PipelineModule is PipelineModule and deepspeed.PipelineEngine is PipelineEngine
    assert issubclass(PipelineEngine, deepspeed.DeepSpeedEngine)
