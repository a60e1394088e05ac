"""Expert parallelism: ``ep_size=2`` on 2 ranks equals ``ep_size=1`` in one process.

Each rank routes its own tokens; the one-process reference runs rank 0's tokens, then rank 1's,
through a layer holding all four experts with the same weights. Outputs, ``l_aux`` and
``exp_counts`` must match per rank; an expert's gradient on the rank that holds it must equal the
reference's gradient summed over both ranks' losses (the all-to-all's backward brings every
rank's contribution to the expert's owner), the gate's the reference's for that rank's loss.
Tolerance: 1e-6 absolute plus 1e-5 relative on outputs, 1e-6 of the largest gradient on
gradients (fp32; the exchange only moves rows, but experts see batches of another size).
"""

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

CASES = {
    # name: (MoE keyword arguments, tokens on rank 0, tokens on rank 1)
    "top1-drop": (dict(k=1, capacity_factor=0.5), 16, 16),
    "top2-drop": (dict(k=2, capacity_factor=0.5), 16, 16),
    "top1-dropless": (dict(k=1, drop_tokens=False), 20, 13),
    "top3-dropless": (dict(k=3, drop_tokens=False), 20, 13),
}


def _global_layer(kw, ep_size=1):
    from deepspeed.moe.layer import MoE

    torch.manual_seed(0)
    expert = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.GELU(), torch.nn.Linear(12, 8))
    return MoE(8, expert, num_experts=4, ep_size=ep_size, min_capacity=0, use_rts=False,
               top2_2nd_expert_sampling=False, **kw)


def _global_weights():
    g = torch.Generator().manual_seed(1)
    gate = torch.randn(4, 8, generator=g)
    experts = [[torch.randn(12, 8, generator=g) * 0.5, torch.randn(12, generator=g) * 0.5,
                torch.randn(8, 12, generator=g) * 0.5, torch.randn(8, generator=g) * 0.5] for _ in range(4)]
    return gate, experts


def _load(moe, first_expert):
    gate, experts = _global_weights()
    with torch.no_grad():
        moe.deepspeed_moe.gate.wg.weight.copy_(gate)
        for j, e in enumerate(moe.deepspeed_moe.experts.deepspeed_experts):
            for p, w in zip(e.parameters(), experts[first_expert + j]):
                p.copy_(w)


def _tokens(rank, n):
    g = torch.Generator().manual_seed(10 + rank)
    x = torch.randn(n, 8, generator=g)
    x[: n // 2] += 2.0  # a skewed load
    return x, torch.randn(n, 8, generator=g)


def _ep2_body():
    import deepspeed.comm as dist
    from deepspeed.utils import groups

    out = {}
    for name, (kw, *sizes) in CASES.items():
        moe = _global_layer(kw, ep_size=2)
        moe.set_deepspeed_parallelism()
        ep_rank = groups._get_expert_parallel_rank("ep_size_2")
        _load(moe, 2 * ep_rank)
        x, t = _tokens(dist.get_rank(), sizes[dist.get_rank()])
        y, l_aux, counts = moe(x)
        ((y * t).sum() + l_aux).backward()
        experts = {2 * ep_rank + j: [p.grad.clone() for p in e.parameters()]
                   for j, e in enumerate(moe.deepspeed_moe.experts.deepspeed_experts)}
        out[name] = (y.detach(), l_aux.detach(), counts, moe.deepspeed_moe.gate.wg.weight.grad.clone(), experts)
    from deepspeed.moe.layer import MoE

    try:
        MoE(8, torch.nn.Linear(8, 8), num_experts=3, ep_size=3).set_deepspeed_parallelism()
    except ValueError as e:
        out["ep_size=3 error"] = str(e)
    return out


def _close(got, want, what):
    diff = (got - want).abs().max().item()
    assert diff <= 1e-6 * want.abs().max().item() + 1e-7, f"{what}: max |diff| {diff:.3g}"


@pytest.fixture(scope="module")
def ep2_results():
    return run_distributed(_ep2_body, world_size=2)


@pytest.mark.parametrize("name", list(CASES))
def test_ep2_equals_ep1(ep2_results, name):
    kw, *sizes = CASES[name]
    ref = _global_layer(kw)
    _load(ref, 0)
    expert_sum = None
    dropped = False
    for rank in range(2):
        y, l_aux, counts, gate_grad, _ = ep2_results[rank][name]
        ref.zero_grad()
        x, t = _tokens(rank, sizes[rank])
        ry, rl, rc = ref(x)
        dropped |= not bool(ref.deepspeed_moe.gate.route(x).kept.all())
        torch.testing.assert_close(y, ry.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(l_aux, rl.detach(), atol=1e-7, rtol=1e-6)
        assert torch.equal(counts, rc)
        ((ry * t).sum() + rl).backward()
        _close(gate_grad, ref.deepspeed_moe.gate.wg.weight.grad, f"{name} gate (rank {rank})")
        grads = [[p.grad.clone() for p in e.parameters()] for e in ref.deepspeed_moe.experts.deepspeed_experts]
        expert_sum = grads if expert_sum is None else [[a + b for a, b in zip(u, v)] for u, v in zip(expert_sum, grads)]
    assert dropped == kw.get("drop_tokens", True)  # the capacity cases do drop routes
    for rank in range(2):
        for e, grads in ep2_results[rank][name][4].items():
            for i, (g, w) in enumerate(zip(grads, expert_sum[e])):
                _close(g, w, f"{name} expert {e} param {i}")


def test_ep_size_not_dividing_the_world_is_refused(ep2_results):
    assert ep2_results[0]["ep_size=3 error"] == (
        "MoE: ep_size=3 does not fit this job: data parallel size 2 is not divisible by the expert parallel size 3; "
        "pick an ep_size that divides it")
