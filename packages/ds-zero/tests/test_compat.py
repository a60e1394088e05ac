"""DeepSpeed names of ds-zero used as callers use them: ``deepspeed.utils.safe_update_full_grad_vectorized``
between backward and step (stages 0-3, 2 gloo ranks), ``partition_parameters.MultipleAllGatherHandles``
over async all-gathers, and DeepSpeed's wording in ZeRO's config refusals."""

import pytest
import torch

from deepspeed.runtime.config import DeepSpeedConfig
from deepspeed.testing.distributed import run_distributed


def _body():
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.runtime.zero.partition_parameters import MultipleAllGatherHandles
    from deepspeed.utils import safe_get_full_grad, safe_update_full_grad_vectorized

    rank, n = dist.get_rank(), dist.get_world_size()
    out = {}
    # two async all-gathers waited on as one
    outs = [torch.zeros(2 * n), torch.zeros(3 * n)]
    works = [dist.all_gather_into_tensor(outs[0], torch.full((2,), float(rank)), async_op=True),
             dist.all_gather_into_tensor(outs[1], torch.full((3,), 10.0 + rank), async_op=True)]
    MultipleAllGatherHandles(works).wait()
    out["gathered"] = [o.tolist() for o in outs]

    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    for stage in (0, 1, 2, 3):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
        cfg = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 0.1}},
               "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
        engine, *_ = deepspeed.initialize(model=model, config=cfg)
        out[f"zero_optimizer{stage}"] = isinstance(engine.optimizer, ZeROOptimizer)
        g = torch.Generator().manual_seed(rank)
        engine.backward(engine(torch.randn(2, 5, generator=g)).pow(2).mean())
        params = list(engine.module.parameters())

        def full(p):
            return (p.grad if p.grad is not None else safe_get_full_grad(p)).detach().clone()

        before = [full(p) for p in params]
        # DeepSpeed's call: update_func(current full gradient, param) -> new gradient
        safe_update_full_grad_vectorized(params, lambda grad, p: grad * 3.0 + 1.0)
        after = [full(p) for p in params]
        out[stage] = max(float((a - (b * 3.0 + 1.0)).abs().max()) for a, b in zip(after, before))
        engine.step()
    return out


def test_safe_update_full_grad_vectorized_and_multiple_allgather_handles():
    for rank_out in run_distributed(_body, world_size=2):
        assert rank_out["gathered"] == [[0.0, 0.0, 1.0, 1.0], [10.0, 10.0, 10.0, 11.0, 11.0, 11.0]]
        for stage in (0, 1, 2, 3):
            assert rank_out[stage] < 1e-6, (stage, rank_out[stage])
            assert rank_out[f"zero_optimizer{stage}"] is (stage > 0)  # DeepSpeed's ZeROOptimizer base


class _Handle:
    def __init__(self, log):
        self.log = log

    def wait(self, handle_dependency=True):
        self.log.append(handle_dependency)


def test_multiple_allgather_handles_pass_handle_dependency():
    from deepspeed.runtime.zero.partition_parameters import MultipleAllGatherHandles

    log = []
    MultipleAllGatherHandles([_Handle(log), _Handle(log)]).wait(handle_dependency=False)
    assert log == [False, False]


@pytest.mark.parametrize("config, message", [
    ({"zero_optimization": {"stage": 3}, "gradient_allreduce_op": "sum"},
     "gradient_allreduce_op='sum' is not supported with ZeRO stage 3"),
    ({"zero_optimization": {"stage": 4}}, "Maximum supported ZeRO stage is 3"),
    ({"zero_optimization": {"stage": 0}, "bf16": {"enabled": True, "bf16_master_weights_and_grads": True}},
     "Bf16_master_weights_and_grads is only supported with ZeRO Stage 1, 2, or 3"),
])
def test_refusals_carry_deepspeeds_wording(config, message):
    for exc_type in (ValueError, AssertionError):
        with pytest.raises(exc_type, match=message):
            DeepSpeedConfig({"train_batch_size": 2, **config}, world_size=1)


def test_runtime_zero_exports_deepspeeds_names():
    from deepspeed.runtime.zero import GatheredParameters, Init, ZeroParamStatus, register_external_parameter
    from deepspeed.runtime.zero import partition_parameters as pp

    assert (GatheredParameters, Init, ZeroParamStatus, register_external_parameter) == (
        pp.GatheredParameters, pp.Init, pp.ZeroParamStatus, pp.register_external_parameter)
    lin = torch.nn.Linear(2, 2)
    with GatheredParameters(list(lin.parameters())):  # not partitioned: a no-op, as in DeepSpeed
        assert lin.weight.shape == (2, 2)
