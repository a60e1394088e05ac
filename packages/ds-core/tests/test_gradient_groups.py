"""The ``gradient_groups`` hook with a fake feature: parameters each rank holds its own shard of.

The model has a shared layer (replicated, averaged over the data-parallel ranks as usual) and a
"sharded" layer whose weights differ per rank (what an expert-parallel layer's experts are). The
fake feature declares the sharded layer a gradient group held by one rank (group None) with a
shard group spanning both ranks. Expected after one clipped SGD step, computed in this process
with plain torch: shared grads = mean over ranks, each shard's grad = its rank's grad / 2 (the
data-parallel average), clipping by the norm over the shared grads and *both* shards. Tolerance:
1e-6 relative (fp32, two-rank sums).
"""

import pytest
import torch

import deepspeed
from deepspeed import _features
from deepspeed._features import FeatureSet
from deepspeed.protocols import DeepSpeedFeature, EngineOptimizer, GradientGroup
from deepspeed.testing.distributed import run_distributed

LR, CLIP = 0.5, 0.05
CFG = {"train_micro_batch_size_per_gpu": 4, "gradient_clipping": CLIP,
       "optimizer": {"type": "SGD", "params": {"lr": LR}}}


class Net(torch.nn.Module):
    def __init__(self, shard_seed):
        super().__init__()
        torch.manual_seed(100 + shard_seed)  # a different shared init per rank: the engine broadcasts rank 0's
        self.shared = torch.nn.Linear(6, 6)
        torch.manual_seed(shard_seed)
        self.sharded = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.sharded(torch.tanh(self.shared(x)))


class ShardFeature(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "fake_shards"

    def gradient_groups(self, engine):
        import deepspeed.comm as dist

        if not dist.is_initialized():
            return [GradientGroup(tuple(engine.module.sharded.parameters()), None, None, 0)]
        return [GradientGroup(tuple(engine.module.sharded.parameters()), None, engine.data_parallel_group, dist.get_rank())]


def _data(rank):
    g = torch.Generator().manual_seed(7 + rank)
    return torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)


def _body():
    import deepspeed.comm as dist

    rank = dist.get_rank()
    from deepspeed.runtime.engine import DeepSpeedEngine

    engine = DeepSpeedEngine(model=Net(rank), config=CFG,
                             features=FeatureSet.from_features(ShardFeature()))
    start = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    x, y = _data(rank)
    engine.backward(torch.nn.functional.mse_loss(engine(x), y))
    engine.step()
    return start, {n: p.detach().clone() for n, p in engine.module.named_parameters()}, engine.get_global_grad_norm()


def test_gradient_group_reduced_over_its_group_and_norm_over_shards():
    results = run_distributed(_body, world_size=2)
    # the shared layer was broadcast from rank 0, the shards kept their own values
    ref0 = Net(0)
    for rank, (start, _, _) in enumerate(results):
        torch.testing.assert_close(start["shared.weight"], ref0.shared.weight.detach())
        torch.testing.assert_close(start["sharded.weight"], Net(rank).sharded.weight.detach())
    grads = []
    for rank in range(2):
        net = Net(rank)
        net.shared.load_state_dict(ref0.shared.state_dict())
        x, y = _data(rank)
        torch.nn.functional.mse_loss(net(x), y).backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    shared = {n: (grads[0][n] + grads[1][n]) / 2 for n in grads[0] if n.startswith("shared")}
    shards = [{n: grads[r][n] / 2 for n in grads[r] if n.startswith("sharded")} for r in range(2)]
    norm = torch.sqrt(sum(g.square().sum() for g in [*shared.values(), *shards[0].values(), *shards[1].values()]))
    coef = min(1.0, CLIP / (float(norm) + 1e-6))
    assert coef < 1.0  # clipping is active, so a norm without the other shard would show
    for rank, (start, end, reported) in enumerate(results):
        assert reported == pytest.approx(float(norm), rel=1e-6)
        for n, g in {**shared, **shards[rank]}.items():
            torch.testing.assert_close(end[n], start[n] - LR * coef * g, rtol=1e-6, atol=1e-7)


class _TakeOver(DeepSpeedFeature):
    DS_PLUGIN_API = "2.0"
    name = "fake_takeover"
    order = 300

    def wrap_optimizer(self, engine, optimizer):
        class Driver(EngineOptimizer):
            def backward(self, loss, retain_graph=False):
                loss.backward()

            def step(self):
                return True

            def zero_grad(self, set_to_none=True):
                pass

        d = Driver()
        d.optimizer = optimizer
        return d


def test_optimizer_without_gradient_group_support_is_refused(monkeypatch):
    monkeypatch.setattr(_features, "installed", lambda: FeatureSet.from_features(ShardFeature(), _TakeOver()))
    with pytest.raises(NotImplementedError, match=r"does not reduce gradient groups, but 1 gradient group\(s\)"):
        deepspeed.initialize(model=Net(0), config=CFG)


def _bf16_body():
    import deepspeed.comm as dist
    from deepspeed.runtime.engine import DeepSpeedEngine

    rank = dist.get_rank()
    engine = DeepSpeedEngine(model=Net(rank), config={**CFG, "bf16": {"enabled": True}},
                             features=FeatureSet.from_features(ShardFeature()))
    start = {n: p.detach().float().clone() for n, p in engine.module.named_parameters()}
    x, y = _data(rank)
    engine.backward(torch.nn.functional.mse_loss(engine(x.bfloat16()).float(), y))
    engine.step()
    return start, engine.get_global_grad_norm()


def test_bf16_norm_counts_every_shard():
    """bf16 (fp32 master weights and gradients): the clipping norm still adds both shards. The
    reference computes fp32 gradients from the same bf16-valued weights, so it agrees to ~1%
    (bf16 activations); 3% is allowed, and leaving the other shard out would be off by more."""
    results = run_distributed(_bf16_body, world_size=2)
    sq = {"shared": 0.0, 0: 0.0, 1: 0.0}
    shared = None
    for rank, (start, _) in enumerate(results):
        net = Net(rank)
        net.load_state_dict(start)
        x, y = _data(rank)
        torch.nn.functional.mse_loss(net(x.bfloat16().float()), y).backward()
        shared = {n: p.grad / 2 for n, p in net.named_parameters() if n.startswith("shared")} if shared is None else \
            {n: shared[n] + p.grad / 2 for n, p in net.named_parameters() if n.startswith("shared")}
        sq[rank] = sum((p.grad / 2).square().sum() for n, p in net.named_parameters() if n.startswith("sharded"))
    sq["shared"] = sum(g.square().sum() for g in shared.values())
    full = float(torch.sqrt(sq["shared"] + sq[0] + sq[1]))
    for rank, (_, reported) in enumerate(results):
        assert reported == pytest.approx(full, rel=0.03)
        assert abs(float(torch.sqrt(sq["shared"] + sq[rank])) - full) > 0.06 * full  # a local norm would fail


def test_a_parameter_in_two_groups_is_refused(monkeypatch):
    class Other(ShardFeature):
        name = "fake_other"

    monkeypatch.setattr(_features, "installed", lambda: FeatureSet.from_features(ShardFeature(), Other()))
    with pytest.raises(_features.FeatureError, match=r"both put a parameter of shape \(3, 6\) into a gradient group"):
        deepspeed.initialize(model=Net(0), config=CFG)
