"""``MoE`` in one process: outputs and gradients against a dense per-token reference loop.

The reference runs every token through its experts one at a time (``expert(x[s])`` weighted by
the gate), so it shares no code with the layer's dispatch. Tolerance: outputs 1e-6 absolute plus
1e-5 relative in fp32 (a one-row matmul and a batched one round differently in the last bits);
gradients, which sum over tokens in another order, 1e-6 of the largest reference gradient.
"""

import pytest
import torch

from deepspeed.moe.experts import Experts
from deepspeed.moe.layer import MoE
from deepspeed.moe.utils import (
    has_moe_layers,
    is_moe_param,
    split_params_into_different_moe_groups_for_optimizer,
)

TOL = dict(atol=1e-6, rtol=1e-5)


def assert_grad_close(got, want, name):
    """Gradients sum many token contributions in a different order: max |diff| <= 1e-6 x max |want|."""
    diff = (got - want).abs().max().item()
    assert diff <= 1e-6 * want.abs().max().item() + 1e-7, f"{name}: max |diff| {diff:.3g}"


class MLP(torch.nn.Module):
    def __init__(self, d=8, h=12):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, h)
        self.fc2 = torch.nn.Linear(h, d)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def _layer(num_experts=4, k=1, seed=0, **kw):
    torch.manual_seed(seed)
    moe = MoE(8, MLP(), num_experts=num_experts, k=k, min_capacity=0, use_rts=False, top2_2nd_expert_sampling=False,
              **kw)
    with torch.no_grad():  # experts start as copies in DeepSpeed; make them differ
        for p in moe.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return moe


def _reference(moe, x, kept=None):
    """Token by token: sum_j w_j * expert_{e_j}(x_s) over the token's top-k experts."""
    gate = moe.deepspeed_moe.gate
    experts = moe.deepspeed_moe.experts.deepspeed_experts
    k = gate.k
    probs = torch.softmax(x.float() @ gate.wg.weight.float().t(), dim=1)
    rows = []
    for s in range(x.shape[0]):
        top = torch.topk(probs[s], k)
        w = top.values if k == 1 else top.values / top.values.sum()
        acc = torch.zeros(x.shape[1])
        for j in range(k):
            e = int(top.indices[j])
            if kept is None or kept[s][j]:
                acc = acc + w[j] * experts[e](x[s:s + 1])[0]
        rows.append(acc)
    return torch.stack(rows)


def _grads(moe):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in moe.named_parameters()}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dropless_equals_dense_reference_loop(k):
    moe = _layer(k=k, drop_tokens=False)
    x = torch.randn(40, 8)
    x[:25] += 3 * moe.deepspeed_moe.gate.wg.weight[0].detach()  # a skewed router: most tokens prefer expert 0
    target = torch.randn(40, 8)
    out, l_aux, counts = moe(x)
    assert counts.sum().item() == 40 * k and counts.max().item() > 40 * k / 4
    (out * target).sum().backward()
    got = _grads(moe)
    moe.zero_grad()
    ref = _reference(moe, x)
    torch.testing.assert_close(out, ref, **TOL)
    (ref * target).sum().backward()
    want = _grads(moe)
    for name in want:
        assert_grad_close(got[name], want[name], name)


@pytest.mark.parametrize("k", [1, 2])
def test_capacity_path_equals_reference_with_drops(k):
    moe = _layer(k=k, capacity_factor=0.5)
    x = torch.randn(24, 8)
    out, _, _ = moe(x)
    routes = moe.deepspeed_moe.gate.route(x)  # deterministic here: no RTS, no sampling
    assert not routes.kept.all()  # some routes were dropped
    # the reference drops the same routes and renormalises as DeepSpeed does (over survivors)
    gate = moe.deepspeed_moe.gate
    probs = torch.softmax(x @ gate.wg.weight.t(), dim=1)
    experts = moe.deepspeed_moe.experts.deepspeed_experts
    ref = torch.zeros_like(out)
    for s in range(24):
        idx = routes.expert[s].tolist()
        live = [j for j in range(k) if routes.kept[s, j]]
        w = probs[s, idx]
        if k > 1:
            w = w / w[live].sum() if live else w * 0
        for j in live:
            ref[s] += w[j] * experts[idx[j]](x[s:s + 1])[0]
    torch.testing.assert_close(out, ref, **TOL)


def test_dropless_and_capacity_agree_when_nothing_drops():
    moe = _layer(k=2, capacity_factor=8.0)
    x = torch.randn(3, 5, 8)
    a, la, ca = moe(x)
    moe.deepspeed_moe.gate.drop_tokens = False
    b, lb, cb = moe(x)
    torch.testing.assert_close(a, b, **TOL)
    assert torch.equal(ca, cb) and torch.equal(la, lb)
    assert a.shape == x.shape


def test_used_token_and_residual():
    moe = _layer(k=1, use_residual=True, drop_tokens=False)
    x = torch.randn(6, 8)
    used = torch.tensor([1.0, 0, 1, 1, 0, 1])
    out, _, counts = moe(x, used)
    assert counts.sum().item() == 4
    coef = torch.softmax(moe.coefficient(x), -1)
    moe_part = _reference(moe, x, kept=[[bool(u)] for u in used])
    torch.testing.assert_close(out, moe_part * coef[:, :1] + moe.mlp(x) * coef[:, 1:], **TOL)


def test_expert_params_are_marked_and_grouped():
    moe = _layer(num_experts=2)
    expert_params = [p for p in moe.parameters() if is_moe_param(p)]
    assert len(expert_params) == 2 * 4 and all(p.group_name == "ep_size_1" for p in expert_params)
    assert has_moe_layers(torch.nn.Sequential(moe)) == (True, 2)
    groups = split_params_into_different_moe_groups_for_optimizer(
        [{"params": list(moe.parameters()), "name": "dense", "lr": 0.1}], max_group_size=220)
    assert [g["name"] for g in groups] == ["dense", "ep_size_1", "ep_size_1"]  # 212 elements per expert
    assert len(groups[0]["params"]) == 1 and all(g.get("moe") for g in groups[1:]) and groups[1]["lr"] == 0.1
    assert sum(len(g["params"]) for g in groups[1:]) == 8
    with pytest.raises(ValueError, match=r"param group 0 has no 'name' key"):
        split_params_into_different_moe_groups_for_optimizer([{"params": list(moe.parameters())}])


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"num_experts=6 is not divisible by ep_size=4"):
        MoE(8, MLP(), num_experts=6, ep_size=4)
    with pytest.raises(ValueError, match=r"k=5 must be an int between 1 and num_experts=4"):
        MoE(8, MLP(), num_experts=4, k=5)
    moe = MoE(8, torch.nn.Linear(8, 6), num_experts=2, min_capacity=0)
    with pytest.raises(ValueError, match=r"returned shape \(1, 2, 4, 6\) for an input of shape \(1, 2, 4, 8\)"):
        moe(torch.randn(8, 8))
    moe = MoE(8, torch.nn.Linear(8, 6), num_experts=2, drop_tokens=False)
    with pytest.raises(ValueError, match=r"MoE expert returned shape \(\d+, 6\) for an input of shape \(\d+, 8\)"):
        moe(torch.randn(8, 8))
    moe = MoE(8, MLP(), num_experts=4, ep_size=2)
    with pytest.raises(RuntimeError, match=r"ep_size=2 outside torch.distributed: it holds only 2 of 4 experts"):
        moe(torch.randn(8, 8))


def test_experts_run_each_local_expert_on_its_slice():
    torch.manual_seed(0)
    experts = Experts(torch.nn.Linear(8, 8), num_local_experts=3, expert_group_name="ep_size_2")
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 3, 5, 8)  # [ranks, local experts, capacity, d]
    out = experts(x)
    for j in range(3):
        torch.testing.assert_close(out[:, j], experts.deepspeed_experts[j](x[:, j]), **TOL)
    assert all(p.allreduce is False and p.group_name == "ep_size_2" for p in experts.parameters())
