"""The native CPU optimizer kernels against their references, for every ISA variant this CPU runs.

Tolerance: after 100 steps on random data, max |ours - reference| <= 1e-6 * max |reference|, per
tensor (parameters and every state). Per-element relative error is not used: elements that cross
zero make it meaningless, and torch's own kernels contract some multiply-adds into FMAs where ours
(built with -ffp-contract=off, so all variants are bit-identical) do not; the observed gap is
~3e-7. The low-precision copies must equal ``param.to(dtype)`` exactly (round-to-nearest-even).
"""

from __future__ import annotations

import copy

import pytest
import torch

from deepspeed.testing.reference import ReferenceLion
from deepspeed.ops.adagrad import DeepSpeedCPUAdagrad
from deepspeed.ops.adam import DeepSpeedCPUAdam
from deepspeed.ops.lion import DeepSpeedCPULion
from ds_ops_cpu.op_builders import CPUAdamBuilder, runnable_isas

ISAS = runnable_isas()
STEPS = 100
TOL = 1e-6
# Note: sizes cover several 2048-element blocks with a ragged tail, and a tiny tensor; the thread
# split of large tensors is covered by test_thread_split_gives_identical_results.
SHAPES = [(10_001,), (33, 65), (3,)]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread for the references: on a shared 2-core machine torch's OpenMP spin-waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    err = (ours.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    assert err <= TOL * scale, f"{what}: max |diff| {err:.3e} > {TOL} * max|ref| {scale:.3e}"




def _run(make_ours, make_ref, states, lowp_dtype=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ours_p = [torch.randn(s, generator=gen) for s in SHAPES]
    ref_p = [p.clone() for p in ours_p]
    ours, ref = make_ours(ours_p), make_ref(ref_p)
    assert ours.uses_native, "native kernel expected on this machine"
    lowp = [torch.empty_like(p, dtype=lowp_dtype) for p in ours_p] if lowp_dtype else None
    for _ in range(STEPS):
        for a, b in zip(ours_p, ref_p):
            g = torch.randn(a.shape, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        ours.step(fp16_param_groups=[lowp] if lowp else None)
        ref.step()
    for i, (a, b) in enumerate(zip(ours_p, ref_p)):
        _close(a, b, f"param {i}")
        for key_ours, key_ref in states:
            _close(ours.state[a][key_ours], ref.state[b][key_ref], f"{key_ours} {i}")
        if lowp:
            assert torch.equal(lowp[i], a.to(lowp_dtype)), f"{lowp_dtype} copy {i} is not param.to({lowp_dtype})"
    return ours


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setenv("DS_CPU_ISA", request.param)
    return request.param


LOWP = [None, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("lowp", LOWP, ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("adamw", [True, False], ids=["adamw", "adam-l2"])
def test_adam_matches_torch(isa, adamw, lowp):
    ref_cls = torch.optim.AdamW if adamw else torch.optim.Adam
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    opt = _run(
        lambda ps: DeepSpeedCPUAdam(ps, adamw_mode=adamw, **kw),
        lambda ps: ref_cls(ps, **kw),
        [("exp_avg", "exp_avg"), ("exp_avg_sq", "exp_avg_sq")],
        lowp,
    )
    assert opt.isa == isa


@pytest.mark.parametrize("lowp", LOWP, ids=["fp32", "bf16", "fp16"])
def test_adagrad_matches_torch(isa, lowp):
    kw = dict(lr=1e-2, eps=1e-10, weight_decay=0.01)
    _run(lambda ps: DeepSpeedCPUAdagrad(ps, **kw), lambda ps: torch.optim.Adagrad(ps, **kw), [("sum", "sum")], lowp)


@pytest.mark.parametrize("lowp", LOWP, ids=["fp32", "bf16", "fp16"])
def test_lion_matches_reference(isa, lowp):
    kw = dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    _run(lambda ps: DeepSpeedCPULion(ps, **kw), lambda ps: ReferenceLion(ps, **kw), [("exp_avg", "exp_avg")], lowp)


def test_isa_variants_are_bit_identical(monkeypatch):
    """Every variant runs the same arithmetic (no FMA contraction), so results are identical."""
    results = []
    for isa in ISAS:
        monkeypatch.setenv("DS_CPU_ISA", isa)
        p = torch.randn(50_000, generator=torch.Generator().manual_seed(1))
        opt = DeepSpeedCPUAdam([p], lr=1e-2, weight_decay=0.1)
        for s in range(5):
            p.grad = torch.randn(50_000, generator=torch.Generator().manual_seed(100 + s))
            opt.step()
        results.append(p)
    for isa, r in zip(ISAS[1:], results[1:]):
        assert torch.equal(r, results[0]), f"{isa} differs from {ISAS[0]}"


def test_thread_split_gives_identical_results():
    """A tensor large enough to split across threads gives the same bits as one thread."""
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        p = torch.randn(200_003, generator=torch.Generator().manual_seed(5))
        opt = DeepSpeedCPUAdam([p], lr=1e-2, weight_decay=0.1)
        low = torch.empty_like(p, dtype=torch.bfloat16)
        for s in range(3):
            p.grad = torch.randn(200_003, generator=torch.Generator().manual_seed(200 + s))
            opt.step(fp16_param_groups=[[low]])
        results.append((p, low))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_bf16_rounding_is_nearest_even():
    """Values exactly halfway between two bf16 numbers round to the even one, as torch does."""
    # 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125; 1 + 3 * 2^-8 is halfway up to even.
    vals = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.0e38, 1e-40, float("inf")], dtype=torch.float32)
    p = vals.clone()
    opt = DeepSpeedCPULion([p], lr=0.0)  # lr 0: the parameter is unchanged, only copied
    p.grad = torch.zeros_like(p)
    out = torch.empty_like(p, dtype=torch.bfloat16)
    opt.step(fp16_param_groups=[[out]])
    assert torch.equal(out, vals.to(torch.bfloat16))
    assert out[0].item() == 1.0 and out[1].item() == 1.015625


def test_native_is_used_and_isa_reported():
    """On this machine the native op loads (prebuilt or JIT) and ds_report names the variant."""
    opt = DeepSpeedCPUAdam([torch.zeros(4)])
    assert opt.uses_native and opt.isa in ISAS
    notes = CPUAdamBuilder().compatibility_notes()
    assert f"ISA {ISAS[0]}" in notes and "this CPU runs" in notes


def test_forcing_an_unknown_isa_is_a_value_error(monkeypatch):
    monkeypatch.setenv("DS_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match=r"DS_CPU_ISA='sse9' is not one of auto, avx512, avx2, scalar"):
        DeepSpeedCPUAdam([torch.zeros(4)])


def test_amsgrad_is_rejected():
    with pytest.raises(NotImplementedError, match="amsgrad=True"):
        DeepSpeedCPUAdam([torch.zeros(4)], amsgrad=True)


def test_state_dict_round_trips_with_torch_adamw():
    """Our state_dict loads into torch.optim.AdamW (and back), and both continue identically."""
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(5000, generator=gen)
    ours = DeepSpeedCPUAdam([p], lr=1e-2, weight_decay=0.01)
    for _ in range(3):
        p.grad = torch.randn(5000, generator=gen)
        ours.step()
    q = p.clone()
    theirs = torch.optim.AdamW([q], lr=1e-2, weight_decay=0.01)
    # Note: deep copies, since load_state_dict keeps (does not copy) tensors already on the right device.
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    back = DeepSpeedCPUAdam([p], lr=1e-2, weight_decay=0.01)
    back.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for _ in range(3):
        g = torch.randn(5000, generator=gen)
        p.grad, q.grad = g.clone(), g.clone()
        back.step()
        theirs.step()
    _close(p, q, "param after reload")
    assert float(back.state[p]["step"]) == 6.0
