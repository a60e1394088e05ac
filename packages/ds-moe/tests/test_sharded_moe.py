"""Gating against routings computed by hand (the expected numbers are written out below).

Logits are ``log(P)`` for probability rows ``P``, so the softmax gates are ``P`` (to fp32
rounding): tolerances are 1e-6 absolute.
"""

import math

import pytest
import torch

from deepspeed.moe import _routing
from deepspeed.moe.sharded_moe import TopKGate, top1gating, top2gating, topkgating

TOL = dict(atol=1e-6, rtol=0)

# 6 tokens, 3 experts. First choices: e0 e0 e0 e1 e2 e0.
P6 = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7],
                   [0.8, 0.05, 0.15]])
# column means of P6 (x6): 2.9, 1.85, 1.25; first-choice fractions (x6): 4, 1, 1
LAUX6 = 3 * (2.9 * 4 + 1.85 * 1 + 1.25 * 1) / 36  # = 1.225


def _combine(entries, shape):
    out = torch.zeros(shape)
    for (s, e, c), v in entries.items():
        out[s, e, c] = v
    return out


def test_top1_capacity_drops_in_token_order_without_rts():
    # capacity = ceil(6 / 3 * 1.0) = 2: expert 0 keeps tokens 0 and 1, drops 2 and 5.
    l_aux, combine, dispatch, counts = top1gating(P6.log(), 1.0, 1, use_rts=False)
    assert combine.shape == (6, 3, 2)
    expected = _combine({(0, 0, 0): 0.7, (1, 0, 1): 0.6, (3, 1, 0): 0.7, (4, 2, 0): 0.7}, (6, 3, 2))
    torch.testing.assert_close(combine, expected, **TOL)
    assert torch.equal(dispatch, expected != 0)
    assert counts.tolist() == [4, 1, 1]
    assert abs(l_aux.item() - LAUX6) < 1e-6


def test_top1_min_capacity_and_dropless_capacity():
    _, combine, _, _ = top1gating(P6.log(), 1.0, 3, use_rts=False)
    assert combine.shape[2] == 3  # min_capacity wins over ceil(6/3) = 2
    assert combine[2, 0, 2] == pytest.approx(0.5)  # token 2 now fits in slot 2
    _, combine, dispatch, counts = top1gating(P6.log(), 1.0, 1, drop_tokens=False)
    assert combine.shape[2] == 4  # the largest load
    expected = _combine({(0, 0, 0): 0.7, (1, 0, 1): 0.6, (2, 0, 2): 0.5, (3, 1, 0): 0.7, (4, 2, 0): 0.7,
                         (5, 0, 3): 0.8}, (6, 3, 4))
    torch.testing.assert_close(combine, expected, **TOL)


def test_top1_random_token_selection_keeps_highest_draws():
    torch.manual_seed(5)
    draw = torch.rand(6)
    torch.manual_seed(5)
    _, combine, _, _ = top1gating(P6.log(), 1.0, 1, use_rts=True)
    contenders = [0, 1, 2, 5]
    keep = sorted(sorted(contenders, key=lambda t: -draw[t].item())[:2])
    kept = [t for t in range(6) if combine[t, 0].sum() > 0]
    assert kept == keep
    # slots follow token order among the kept ones
    for slot, t in enumerate(keep):
        assert combine[t, 0, slot].item() == pytest.approx(P6[t, 0].item())


@pytest.mark.parametrize("mask", [torch.tensor([1.0, 1, 0, 1, 1, 1]), torch.tensor([1, 1, 0, 1, 1, 1]),
                                  torch.tensor([True, True, False, True, True, True])])
def test_top1_used_token_mask_any_dtype(mask):
    # DeepSpeed 0.19.8 crashes on a float mask; token 2 is unused here.
    l_aux, combine, _, counts = top1gating(P6.log(), 1.0, 1, used_token=mask, use_rts=False)
    assert counts.tolist() == [3, 1, 1]
    assert combine[2].sum() == 0 and combine[5].sum() == 0  # 5 is the third for expert 0 (capacity 2)
    assert abs(l_aux.item() - 3 * (2.9 * 3 + 1.85 + 1.25) / 36) < 1e-6


def test_top2_capacity_and_renormalised_gates():
    # capacity = ceil(6 / 3 * 0.5 * 2) = 2. Second choices: e1 e1 e1 e0 e1 e2, queued after the firsts.
    l_aux, combine, dispatch, counts = top2gating(P6.log(), 0.5, 1, top2_2nd_expert_sampling=False)
    expected = _combine({(0, 0, 0): 7 / 9, (0, 1, 1): 2 / 9, (1, 0, 1): 1.0, (3, 1, 0): 1.0, (4, 2, 0): 1.0,
                         (5, 2, 1): 1.0}, (6, 3, 2))
    torch.testing.assert_close(combine, expected, **TOL)
    assert torch.equal(dispatch, expected != 0)
    assert counts.tolist() == [5, 5, 2]
    assert abs(l_aux.item() - LAUX6) < 1e-6


def test_top2_sampling_follows_the_softmax_of_the_rest():
    # Gumbel-max: the second expert is drawn with probability P_e / (1 - P_first).
    n = 20000
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().repeat(n, 1)
    before = logits.clone()
    torch.manual_seed(0)
    routes = _routing.route_top2(logits, 1.0, 1, drop_tokens=False)  # the routing behind top2gating
    assert torch.equal(logits, before)  # DeepSpeed adds the noise into the caller's logits
    assert (routes.expert[:, 0] == 0).all()
    second = torch.bincount(routes.expert[:, 1], minlength=4)[1:].float() / n
    torch.testing.assert_close(second, torch.tensor([0.6, 0.3, 0.1]), atol=0.015, rtol=0)


# 4 tokens, 4 experts, k = 3.
P4 = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.4, 0.3, 0.2], [0.3, 0.1, 0.4, 0.2], [0.27, 0.35, 0.28, 0.1]])
LAUX4 = (1.07 * 3 + 1.15 * 3 + 1.18 * 4 + 0.6 * 2) / 16 * 4 / 3


def test_topk_probs_policy():
    # capacity = ceil(4 / 4 * 0.5 * 3) = 2; each expert keeps its two highest gates.
    l_aux, combine, dispatch, counts = topkgating(P4.log(), 3, 0.5, 1)
    expected = _combine({(0, 0, 0): 1.0, (1, 1, 0): 4 / 9, (1, 2, 0): 3 / 9, (1, 3, 0): 2 / 9, (2, 0, 1): 3 / 9,
                         (2, 2, 1): 4 / 9, (2, 3, 1): 2 / 9, (3, 1, 1): 1.0}, (4, 4, 2))
    torch.testing.assert_close(combine, expected, **TOL)
    assert torch.equal(dispatch, expected != 0)
    assert counts.tolist() == [3, 3, 4, 2]
    assert abs(l_aux.item() - LAUX4) < 1e-6


def test_topk_position_policy_and_dropless():
    _, combine, _, _ = topkgating(P4.log(), 3, 0.5, 1, drop_policy="position")
    # first two per expert in token order: e0 {0, 2}, e1 {0, 1}, e2 {0, 1}, e3 {1, 2}
    expected = _combine({(0, 0, 0): 0.4 / 0.9, (0, 1, 0): 0.3 / 0.9, (0, 2, 0): 0.2 / 0.9, (1, 1, 1): 4 / 9,
                         (1, 2, 1): 3 / 9, (1, 3, 0): 2 / 9, (2, 0, 1): 0.3 / 0.5, (2, 3, 1): 0.2 / 0.5},
                        (4, 4, 2))
    torch.testing.assert_close(combine, expected, **TOL)
    _, combine, _, counts = topkgating(P4.log(), 3, 0.5, 1, drop_tokens=False)
    assert combine.shape[2] == 4 and (combine.sum((1, 2)) - 1).abs().max() < 1e-6  # nothing dropped


def test_rsample_first_choice_follows_softmax():
    n = 20000
    logits = torch.tensor([[0.6, 0.3, 0.1]]).log().repeat(n, 1)
    before = logits.clone()
    torch.manual_seed(1)
    routes = _routing.route_top1(logits, 1.0, 1, noisy_gate_policy="RSample", drop_tokens=False)
    assert torch.equal(logits, before)
    freq = torch.bincount(routes.expert[:, 0], minlength=3).float() / n
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.015, rtol=0)


def test_inputs_left_unmodified():
    x = torch.randn(10, 8)
    gate = TopKGate(8, 4, k=2, noisy_gate_policy="Jitter", min_capacity=1)
    before = x.clone()
    gate.train()
    gate(x)
    assert torch.equal(x, before)
    logits = torch.randn(10, 4)
    saved = logits.clone()
    for fn in (lambda: top1gating(logits, 1.0, 1, noisy_gate_policy="RSample"), lambda: top2gating(logits, 1.0, 1),
               lambda: topkgating(logits, 3, 1.0, 1)):
        fn()
        assert torch.equal(logits, saved)


def test_gate_uses_eval_capacity_and_no_noise_in_eval():
    gate = TopKGate(4, 2, k=1, capacity_factor=0.5, eval_capacity_factor=2.0, min_capacity=1, use_rts=False,
                    noisy_gate_policy="Jitter")
    x = torch.randn(8, 4)
    gate.train()
    assert gate(x)[1].shape[2] == math.ceil(8 / 2 * 0.5)
    gate.eval()
    out1, out2 = gate(x), gate(x)
    assert out1[1].shape[2] == math.ceil(8 / 2 * 2.0)
    assert torch.equal(out1[1], out2[1])  # no jitter in eval


def test_bias_balancing_moves_towards_balance():
    gate = TopKGate(4, 2, k=1, min_capacity=1, drop_tokens=False, bias_update_rate=0.1)
    with torch.no_grad():
        gate.wg.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]))
    x = torch.tensor([[1.0, 0, 0, 0]] * 6 + [[-1.0, 0, 0, 0]] * 2)  # 6 tokens prefer e0, 2 prefer e1
    gate.train()
    _, _, _, counts = gate(x)
    assert counts.tolist() == [6, 2]
    assert gate.expert_bias.tolist() == pytest.approx([-0.1, 0.1])
    combine = gate(x)[1]
    # the bias changes selection only: the combine weight is still the gate's softmax probability
    torch.testing.assert_close(combine.sum(2).max(1).values[:6], torch.softmax(gate.wg(x[:6]), 1)[:, 0])
    for _ in range(20):
        gate(x)
    assert abs(gate(x)[3][0].item() - 4) <= 2  # balanced to within the 0.1 step


def test_gating_bad_inputs():
    with pytest.raises(ValueError, match=r"k=5 must be between 1 and num_experts=4"):
        topkgating(torch.randn(8, 4), 5, 1.0, 1)
    with pytest.raises(ValueError, match=r"top-1 gating got 3 tokens, fewer than min_capacity=4"):
        top1gating(torch.randn(3, 2), 1.0, 4)
    with pytest.raises(ValueError, match=r"used_token must have one entry per token, shape \(8,\); got \(4,\)"):
        top1gating(torch.randn(8, 2), 1.0, 1, used_token=torch.ones(4))
    with pytest.raises(ValueError, match=r"drop_policy='first' is not one of"):
        topkgating(torch.randn(8, 4), 3, 1.0, 1, drop_policy="first")
    with pytest.raises(ValueError, match=r"noisy_gate_policy='Gauss' is not one of"):
        TopKGate(4, 2, noisy_gate_policy="Gauss")


def test_sparse_routes_output_matches_the_dense_one():
    # DeepSpeed 0.19's sparse_routes=True tuple: per route expert (-1 dropped), slot and gate.
    l_aux, capacity, E, idx, loc, gate, counts = top2gating(P6.log(), 0.5, 1, top2_2nd_expert_sampling=False,
                                                            sparse_routes=True)
    assert (int(capacity), E) == (2, 3) and idx.dtype == torch.int32 and idx.shape == (2, 6)
    assert idx.tolist() == [[0, 0, -1, 1, 2, -1], [1, -1, -1, -1, -1, 2]]
    assert loc.tolist() == [[0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]]
    torch.testing.assert_close(gate, torch.tensor([[7 / 9, 1, 0, 1, 1, 0], [2 / 9, 0, 0, 0, 0, 1]]), **TOL)
    assert counts.tolist() == [5, 5, 2] and abs(l_aux.item() - LAUX6) < 1e-6
    out = top1gating(P6.log(), 1.0, 1, None, None, True, False, None, True)  # DeepSpeed's positional order
    assert out[3].tolist() == [[0, 0, -1, 1, 2, -1]]
