"""deepspeed.utils.safe_get/set_full_* and set_z3_leaf_modules at stages 1, 2 and 3 (2 gloo ranks).

The reference is stage 0 trained on the same data: its parameters, mean gradients and Adam
moments must equal what the helpers assemble from the ZeRO partitions (1e-5 relative, fp32).
"""

import torch

from deepspeed.testing.distributed import run_distributed

RTOL = 1e-5


class Experts(torch.nn.Module):
    """Reads its children's weights directly in forward: only works as a ZeRO-3 leaf module."""

    def __init__(self):
        super().__init__()
        self.experts = torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(3))

    def forward(self, x):
        return sum(torch.nn.functional.linear(x, e.weight, e.bias) for e in self.experts)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), Experts(), torch.nn.Linear(6, 2))


def _config(stage):
    return {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}},
            "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _body():
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.utils.z3_leaf_module import set_z3_leaf_modules
    from deepspeed.utils.tensor_fragment import (safe_get_full_fp32_param, safe_get_full_grad,
                                                 safe_get_full_optimizer_state, safe_set_full_fp32_param)
    from deepspeed.zero import GatheredParameters

    rank = dist.get_rank()
    out = {}

    def run(stage):
        model = _model()
        if stage == 3:
            out["leaves"] = len(set_z3_leaf_modules(model, [Experts]))
        engine, _, _, _ = deepspeed.initialize(model=model, config=_config(stage))
        for step in range(3):
            g = torch.Generator().manual_seed(10 * step + rank)
            x, y = torch.randn(4, 5, generator=g), torch.randn(4, 2, generator=g)
            engine.backward(torch.nn.functional.mse_loss(engine(x), y))
            if step < 2:
                engine.step()
        return engine

    ref = run(0)
    ref_grads = [p.grad.detach().clone() for p in ref.module.parameters()]
    ref.step()
    ref_state = [ref.optimizer.state[p]["exp_avg"].clone() for p in ref.module.parameters()]
    ref_params = [p.detach().clone() for p in ref.module.parameters()]
    for stage in (1, 2, 3):
        engine = run(stage)
        params = list(engine.module.parameters())
        grads = [safe_get_full_grad(p) for p in params]
        engine.step()
        fp32 = [safe_get_full_fp32_param(p) for p in params]
        state = [safe_get_full_optimizer_state(p, "exp_avg") for p in params]
        out[f"stage{stage}"] = max(max(_rel(a, b) for a, b in zip(grads, ref_grads)),
                                   max(_rel(a, b) for a, b in zip(fp32, ref_params)),
                                   max(_rel(a, b) for a, b in zip(state, ref_state)))
        # setting the master value reaches the model's weights on every rank
        target = params[0]
        safe_set_full_fp32_param(target, torch.full(tuple(fp32[0].shape), 0.5))
        with GatheredParameters(target):
            out[f"stage{stage}_set"] = bool((target.data == 0.5).all()) and bool(
                (safe_get_full_fp32_param(target) == 0.5).all())
    out["unmanaged"] = safe_get_full_fp32_param(torch.nn.Parameter(torch.zeros(2)))
    return out


def test_safe_get_full_matches_stage0():
    for rank, out in enumerate(run_distributed(_body, world_size=2, timeout=300)):
        for stage in (1, 2, 3):
            assert out[f"stage{stage}"] < RTOL, f"rank {rank} stage {stage}: {out[f'stage{stage}']:.3g}"
            assert out[f"stage{stage}_set"], f"rank {rank} stage {stage}: safe_set_full_fp32_param lost"
        assert out["leaves"] == 1 and out["unmanaged"] is None
