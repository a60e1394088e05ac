"""Flops profiler: totals match hand-counted FLOPs and MACs exactly (DeepSpeed's conventions:
matmul = 2 FLOPs per MAC, linear bias not counted, one FLOP per element for activations and
softmax, 5 per element for an affine LayerNorm)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepspeed.profiling.flops_profiler import (
    FlopsProfiler,
    duration_to_string,
    flops_to_string,
    get_model_profile,
    macs_to_string,
    number_to_string,
    params_to_string,
)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Pre-norm causal self-attention written out by hand (B=2, T=8, C=16, 2 heads of 8)."""

    def __init__(self, sdpa=False):
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.sdpa = sdpa

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, 2, c // 2).transpose(1, 2) for z in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = torch.mul(q @ k.transpose(-2, -1), 1.0 / math.sqrt(c // 2))
            mask = torch.ones(t, t, dtype=torch.bool).tril()
            att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
            y = torch.matmul(att, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


# Hand counts.
MLP_FC1_MACS = 4 * 16 * 32          # input (4,16) x weight (16->32)
MLP_FC2_MACS = 4 * 32 * 8
MLP_RELU_FLOPS = 4 * 32
MLP_MACS = MLP_FC1_MACS + MLP_FC2_MACS                                    # 3072
MLP_FLOPS = 2 * MLP_MACS + MLP_RELU_FLOPS                                 # 6272
MLP_PARAMS = 16 * 32 + 32 + 32 * 8 + 8                                    # 808

B, T, C, H, D = 2, 8, 16, 2, 8
QKV_MACS = B * T * C * 3 * C
PROJ_MACS = B * T * C * C
SCORE_MACS = B * H * T * T * D      # q @ k^T
MIX_MACS = B * H * T * T * D        # att @ v
LN_FLOPS = 5 * B * T * C            # affine LayerNorm
SCALE_FLOPS = B * H * T * T         # torch.mul by the scale
SOFTMAX_FLOPS = B * H * T * T
ATTN_MACS = QKV_MACS + PROJ_MACS + SCORE_MACS + MIX_MACS                   # 20480
ATTN_FLOPS = 2 * ATTN_MACS + LN_FLOPS + SCALE_FLOPS + SOFTMAX_FLOPS         # 42752


def _profile(model, *inputs):
    prof = FlopsProfiler(model)
    prof.start_profile()
    with torch.no_grad():
        model(*inputs)
    return prof


def test_mlp_totals_and_per_module():
    model = MLP()
    prof = _profile(model, torch.randn(4, 16))
    assert prof.get_total_macs() == MLP_MACS == 3072
    assert prof.get_total_flops() == MLP_FLOPS == 6272
    assert prof.get_total_params() == MLP_PARAMS == 808
    assert prof.module_profile(model.fc1)["flops"] == 2 * MLP_FC1_MACS
    assert prof.module_profile(model.act)["flops"] == MLP_RELU_FLOPS
    assert prof.module_profile(model.fc2)["params"] == 32 * 8 + 8
    total = prof.module_profile(model)
    assert total["duration"] > 0 and total["flops_per_s"] == pytest.approx(MLP_FLOPS / total["duration"])
    prof.end_profile()
    assert not hasattr(model.fc1, "__flops__")


def test_attention_block_by_hand():
    model = Attention()
    prof = _profile(model, torch.randn(B, T, C))
    assert prof.get_total_macs() == ATTN_MACS == 20480
    assert prof.get_total_flops() == ATTN_FLOPS == 42752
    # the block's own ops (matmuls, scale, softmax) belong to it; the linears to their modules
    assert prof.module_profile(model.qkv)["macs"] == QKV_MACS
    assert model.__flops__ == 2 * (SCORE_MACS + MIX_MACS) + SCALE_FLOPS + SOFTMAX_FLOPS
    assert prof.module_profile(model.ln)["flops"] == LN_FLOPS
    prof.end_profile()


def test_scaled_dot_product_attention_counts_both_matmuls():
    model = Attention(sdpa=True)
    prof = _profile(model, torch.randn(B, T, C))
    assert prof.get_total_macs() == ATTN_MACS
    assert prof.get_total_flops() == 2 * ATTN_MACS + LN_FLOPS  # no separate scale/softmax ops
    prof.end_profile()


def test_conv_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, kernel_size=3, padding=1), nn.BatchNorm2d(4).eval())
    prof = _profile(model, torch.randn(1, 3, 8, 8))
    positions = 8 * 8
    conv_macs = positions * 4 * 3 * 9
    assert prof.get_total_macs() == conv_macs
    # conv: 2 per MAC + bias per output; eval batch norm with affine: 2 per element
    assert prof.get_total_flops() == 2 * conv_macs + 4 * positions + 2 * 4 * positions
    prof.end_profile()


def test_einsum_and_bmm():
    class Mix(nn.Module):
        def forward(self, a, b):
            return torch.einsum("bij,bjk->bik", a, b) + torch.bmm(a, b)

    prof = _profile(Mix(), torch.randn(3, 4, 5), torch.randn(3, 5, 6))
    assert prof.get_total_macs() == 2 * (3 * 4 * 5 * 6)
    prof.end_profile()


def test_torch_restored_and_nothing_counted_outside():
    original = (torch.matmul, F.linear, torch.Tensor.__matmul__)
    model = MLP()
    prof = _profile(model, torch.randn(4, 16))
    assert torch.matmul is not original[0]
    torch.matmul(torch.randn(2, 2), torch.randn(2, 2))  # outside any module: not counted
    assert prof.get_total_flops() == MLP_FLOPS
    prof.stop_profile()
    assert (torch.matmul, F.linear, torch.Tensor.__matmul__) == original
    assert prof.get_total_flops() == MLP_FLOPS  # counts stay readable after stop
    prof.end_profile()


def test_ignore_list_moves_ops_to_parent():
    model = MLP()
    prof = FlopsProfiler(model)
    prof.start_profile(ignore_list=[nn.ReLU])
    with torch.no_grad():
        model(torch.randn(4, 16))
    assert prof.get_total_flops() == MLP_FLOPS
    assert model.__flops__ == MLP_RELU_FLOPS
    prof.end_profile()


def test_get_model_profile(tmp_path):
    out = tmp_path / "profile.txt"
    flops, macs, params = get_model_profile(MLP(), input_shape=(4, 16), as_string=False, output_file=str(out))
    assert (flops, macs, params) == (MLP_FLOPS, MLP_MACS, MLP_PARAMS)
    text = out.read_text()
    assert "DeepSpeed Flops Profiler" in text and "fwd MACs per GPU:" in text and "3.07 KMACs" in text
    assert "(fc1): Linear(544, 67.33%, 2.05 KMACs, 66.67%" in text
    assert get_model_profile(MLP(), args=[torch.randn(4, 16)], print_profile=False) == ("6.27 K", "3.07 KMACs", "808")


def test_get_model_profile_bad_input():
    with pytest.raises(ValueError, match="needs an input: input_shape, args or kwargs"):
        get_model_profile(MLP())
    with pytest.raises(ValueError, match="mode='backward' is not supported"):
        get_model_profile(MLP(), input_shape=(1, 16), mode="backward")
    with pytest.raises(ValueError, match="recompute_fwd_factor=2 must be between 0 and 1"):
        FlopsProfiler(MLP(), recompute_fwd_factor=2)


def test_number_formatting():
    assert number_to_string(1234567) == "1.23 M"
    assert number_to_string(999) == "999 "
    assert macs_to_string(2.5e9) == "2.5 GMACs"
    assert flops_to_string(3e12) == "3 TFLOPS"
    assert params_to_string(125e6) == "125 M"
    assert duration_to_string(0.01234) == "12.34 ms" and duration_to_string(2e-6) == "2 us"
    assert number_to_string(5e9, units="M") == "5000 M"


def test_summary_with_engine_timers():
    """With a DeepSpeed engine the summary adds the backward/step latencies from its timers."""
    import types

    from deepspeed.utils.timer import SynchronizedWallClockTimer

    timers = SynchronizedWallClockTimer()
    for name, seconds in (("bwd", 0.02), ("step", 0.01)):
        timers(name).start()
        timers(name).stop()
        timers(name)._elapsed = seconds  # a known latency, so the printed FLOPS can be checked
    engine = types.SimpleNamespace(timers=timers, world_size=2, dp_world_size=2, mpu=None,
                                   train_micro_batch_size_per_gpu=lambda: 4)
    model = MLP()
    prof = FlopsProfiler(model, ds_engine=engine, recompute_fwd_factor=0.5)
    prof.start_profile()
    with torch.no_grad():
        model(torch.randn(4, 16))
    from deepspeed.profiling.flops_profiler.report import summary

    lines = "\n".join(summary(prof, profile_step=3))
    assert "Profile Summary at step 3:" in lines
    assert "world size: " in lines and "batch size per GPU: " in lines
    # bwd FLOPS = (2 + 0.5) * 6272 / 0.02 s = 784 KFLOPS
    assert "bwd FLOPS per GPU = 2.5 * fwd flops per GPU / bwd latency: " in lines
    assert "784 KFLOPS" in lines and "bwd latency: " in lines and "20 ms" in lines
    assert "step latency: " in lines and "10 ms" in lines and "samples/second: " in lines
    prof.end_profile()
