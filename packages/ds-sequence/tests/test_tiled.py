"""TiledMLP, TiledFusedLogitsLoss and sequence_tiled_compute equal their untiled computation
(values and gradients of the input and of every parameter), with uneven tiles, batch > 1 and an
upstream gradient other than 1; bad arguments are refused by name.

Tolerance: fp32, 1e-6 relative (only the summation order of the parameter gradients differs).
"""

import pytest
import torch
import torch.nn.functional as F

from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledFusedLogitsLoss, TiledMLP, sequence_tiled_compute

REL = 1e-6


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


class MLP(torch.nn.Module):
    def __init__(self, d=12, f=20):
        super().__init__()
        torch.manual_seed(0)
        self.gate, self.up, self.down = torch.nn.Linear(d, f), torch.nn.Linear(d, f), torch.nn.Linear(f, d)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _mlp_fn(self, x):
    return self.down(F.silu(self.gate(x)) * self.up(x))


def _grads(module, x):
    return [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("shape,shards", [((2, 11, 12), 3), ((1, 8, 12), 4), ((13, 12), 5)])
def test_tiled_mlp_equals_untiled(shape, shards):
    mlp = MLP()
    x = torch.randn(*shape, requires_grad=True)
    up = torch.randn(*shape[:-1], 12)  # any upstream gradient
    ref = mlp(x)
    (ref * up).sum().backward()
    want = _grads(mlp, x)
    mlp.zero_grad()
    x.grad = None
    out = TiledMLP.apply(_mlp_fn, mlp, x, shards, None)
    (out * up).sum().backward()
    assert _rel(out.detach(), ref.detach()) <= REL
    for g, w in zip(_grads(mlp, x), want):
        assert _rel(g, w) <= REL


def test_tiled_mlp_parameter_gradient_arrives_once():
    """Engine hooks see one complete gradient per parameter per call, not one per tile."""
    mlp = MLP()
    calls = []
    for p in mlp.parameters():
        p.register_post_accumulate_grad_hook(lambda p: calls.append(p))
    x = torch.randn(2, 9, 12, requires_grad=True)
    TiledMLP.apply(_mlp_fn, mlp, x, 3, list(mlp.parameters())).sum().backward()
    assert len(calls) == len(list(mlp.parameters()))


def _head_and_loss(vocab=17, d=12):
    torch.manual_seed(1)
    head = torch.nn.Linear(d, vocab, bias=False)

    def loss_fn(self, x, y, mask=None):
        logits = self(x)
        if mask is None:
            return F.cross_entropy(logits.view(-1, vocab), y.view(-1), reduction="sum")
        per = F.cross_entropy(logits.view(-1, vocab), y.view(-1), reduction="none")
        return (per * mask.view(-1)).sum()

    return head, loss_fn


@pytest.mark.parametrize("use_mask", [False, True])
def test_tiled_fused_logits_loss_sum_equals_untiled(use_mask):
    head, loss_fn = _head_and_loss()
    x = torch.randn(2, 7, 12, requires_grad=True)
    y = torch.randint(0, 17, (2, 7))
    mask = (torch.rand(2, 7) > 0.3).float() if use_mask else None
    ref = loss_fn(head, x, y, mask) if use_mask else loss_fn(head, x, y)
    (ref * 0.37).backward()  # an upstream gradient other than 1 (a loss weight)
    want = [x.grad.clone(), head.weight.grad.clone()]
    head.zero_grad()
    x.grad = None
    out = TiledFusedLogitsLoss.apply(loss_fn, head, x, y, mask, 4, [head.weight], "sum")
    (out * 0.37).backward()
    assert _rel(out.detach(), ref.detach()) <= REL
    assert _rel(x.grad, want[0]) <= REL
    assert _rel(head.weight.grad, want[1]) <= REL


def test_tiled_fused_logits_loss_mean_of_equal_tiles():
    head, _ = _head_and_loss()

    def mean_loss(self, x, y):
        return F.cross_entropy(self(x).view(-1, 17), y.view(-1))

    x = torch.randn(2, 8, 12, requires_grad=True)
    y = torch.randint(0, 17, (2, 8))
    ref = mean_loss(head, x, y)
    ref.backward()
    want = [x.grad.clone(), head.weight.grad.clone()]
    head.zero_grad()
    x.grad = None
    out = TiledFusedLogitsLoss.apply(mean_loss, head, x, y, None, 4, [head.weight], "mean")
    out.backward()
    assert _rel(out.detach(), ref.detach()) <= REL
    assert _rel(x.grad, want[0]) <= REL and _rel(head.weight.grad, want[1]) <= REL


@pytest.mark.parametrize("reduction", [None, "sum", "mean"])
def test_sequence_tiled_compute_equals_untiled(reduction):
    mlp = MLP()
    x = torch.randn(2, 10, 12, requires_grad=True)
    scale = torch.tensor(1.5)

    def fn(hidden_states, scale):
        return _mlp_fn(mlp, hidden_states) * scale

    up = torch.randn(2, 10, 12)
    ref = fn(x, scale)
    red = {None: lambda t: (t * up).sum(), "sum": lambda t: t.sum() * 0.5, "mean": lambda t: t.mean() * 3.0}[reduction]
    red(ref).backward()
    want = _grads(mlp, x)
    mlp.zero_grad()
    x.grad = None
    out = sequence_tiled_compute(fn, 10, 3, {"hidden_states": x}, {"scale": scale}, "hidden_states",
                                 compute_params=list(mlp.parameters()), output_unshard_dimension=1,
                                 output_reduction=reduction)
    if reduction is None:
        (out * up).sum().backward()
        assert _rel(out.detach(), ref.detach()) <= REL
    else:
        (out * (0.5 if reduction == "sum" else 3.0)).backward()
        expect = ref.sum() if reduction == "sum" else ref.mean()
        assert _rel(out.detach(), expect.detach()) <= REL
    for g, w in zip(_grads(mlp, x), want):
        assert _rel(g, w) <= REL


def test_sequence_tiled_compute_scalar_outputs():
    """output_unshard_dimension=0: one loss per tile, averaged (DeepSpeed's loss use)."""
    head, _ = _head_and_loss()
    x = torch.randn(1, 9, 12, requires_grad=True)
    y = torch.randint(0, 17, (1, 9))

    def fn(x, y):
        return F.cross_entropy(head(x).view(-1, 17), y.view(-1), reduction="sum")

    ref = fn(x, y) / 3
    ref.backward()
    want = [x.grad.clone(), head.weight.grad.clone()]
    head.zero_grad()
    x.grad = None
    out = sequence_tiled_compute(fn, 9, 3, {"x": x, "y": y}, {}, "x", compute_params=[head.weight],
                                 output_unshard_dimension=0, output_reduction="mean")
    out.backward()
    assert _rel(out.detach(), ref.detach()) <= REL
    assert _rel(x.grad, want[0]) <= REL and _rel(head.weight.grad, want[1]) <= REL


def test_bad_arguments():
    mlp = MLP()
    x = torch.randn(2, 4, 12)
    with pytest.raises(ValueError, match=r"TiledMLP: shards must be a positive integer \(got 0\)"):
        TiledMLP.apply(_mlp_fn, mlp, x, 0, None)
    with pytest.raises(ValueError, match=r"unknown output_reduction 'avg'"):
        TiledFusedLogitsLoss.apply(lambda s, a, b: a.sum(), mlp, x, x, None, 2, [], "avg")
    with pytest.raises(ValueError, match=r"x and y must agree on \[batch, seq\] \(got \(2, 4\) and \(2, 3\)\)"):
        TiledFusedLogitsLoss.apply(lambda s, a, b: a.sum(), mlp, x, x[:, :3], None, 2, [], "sum")
    with pytest.raises(ValueError, match=r"kwargs_to_shard\['h'\] must be a \[batch, seqlen=5"):
        sequence_tiled_compute(lambda h: h, 5, 2, {"h": x}, {}, "h")
    with pytest.raises(ValueError, match=r"grad_requiring_tensor_key 'z' is not one of kwargs_to_shard \('h'\)"):
        sequence_tiled_compute(lambda h: h, 4, 2, {"h": x}, {}, "z")
