"""DeepSpeedZeroOptimizer (ZeRO 1 and 2) against unpartitioned data-parallel training.

Parity: after 20 steps the parameters must equal those of a plain torch optimizer fed the
all-reduced mean gradients, within 1e-5 relative in fp32 (only summation order differs).
"""

import copy
import importlib.util

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

RTOL = 1e-5  # fp32: bucketing changes only the order of a few additions


def _model(seed=0):
    torch.manual_seed(seed)
    # Note: odd sizes, so partitions split parameters mid-tensor and the last rank holds padding.
    return torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 5))


def _groups(model, lr=1e-2, kind="adamw"):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        # Note: Adam is nearly invariant to the gradient's scale; SGD checks averaging and clipping.
        return torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def _batch(step, rank, micro=0):
    g = torch.Generator().manual_seed(1000 * step + 10 * rank + micro)
    return torch.randn(6, 7, generator=g), torch.randn(6, 5, generator=g)


def _max_rel(a_params, b_params):
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(a_params, b_params))


def _train_pair(stage, steps=20, gas=1, clip=0.0, kind="adamw", **kw):
    """Train ZeRO and the reference side by side; return the max relative param difference."""
    import torch.distributed as dist

    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    rank, world = dist.get_rank(), dist.get_world_size()
    model = _model()
    ref = copy.deepcopy(model)
    ref_opt = _groups(ref, kind=kind)
    zopt = DeepSpeedZeroOptimizer(_groups(model, kind=kind), partition_grads=stage == 2, clip_grad=clip,
                                  param_names={p: n for n, p in model.named_parameters()}, **kw)
    for step in range(steps):
        for micro in range(gas):
            x, y = _batch(step, rank, micro)
            zopt.backward(torch.nn.functional.mse_loss(model(x), y) / gas)
            torch.nn.functional.mse_loss(ref(x), y).div(gas).backward()
        for p in ref.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world
        if clip:
            torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
        ref_opt.step()
        ref_opt.zero_grad()
        zopt.step()
        zopt.zero_grad()
    return _max_rel(list(model.parameters()), list(ref.parameters())), zopt, model, ref, ref_opt


def _parity_body():
    import torch.distributed as dist

    out = {}
    for name, stage, kw in [
        ("stage1", 1, {}),
        ("stage2", 2, {}),
        # many small buckets: bucket intervals straddle partitions; chunked all-gather
        ("stage2_small_buckets", 2, dict(reduce_bucket_size=20, allgather_bucket_size=24)),
        ("stage1_small_buckets_sgd", 1, dict(reduce_bucket_size=20, allgather_bucket_size=24, kind="sgd")),
        ("stage2_gas_clip_sgd", 2, dict(gas=2, clip=0.05, kind="sgd")),
        ("stage1_gas_clip_sgd", 1, dict(gas=2, clip=0.05, kind="sgd")),
        ("stage2_sgd", 2, dict(kind="sgd")),
        ("stage2_overlap_off_offload", 2, dict(overlap_comm=False, offload_optimizer_config={"device": "cpu"})),
    ]:
        gas = kw.pop("gas", 1)
        clip = kw.pop("clip", 0.0)
        out[name] = _train_pair(stage, gas=gas, clip=clip, **kw)[0]

    # each rank keeps only its fp32 slice: sizes add up to the padded total
    _, zopt, model, _, _ = _train_pair(2, steps=1)
    n = sum(p.numel() for p in model.parameters())
    local = sum(m.numel() for m in zopt.single_partition_of_fp32_groups)
    out["partition_numel"] = (local, n)
    # checkpoint round trip: every rank's shard, reloaded into a fresh optimizer
    _, zopt, model, ref, ref_opt = _train_pair(2, steps=3)
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, zopt.state_dict())
    out["shard_keys"] = sorted(shards[0])
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    fresh = _model(seed=5)  # different weights: everything must come from the checkpoint
    fopt = DeepSpeedZeroOptimizer(_groups(fresh), partition_grads=True)
    fopt.load_state_dict(shards, load_from_fp32_weights=True)
    out["reload_params"] = _max_rel(list(fresh.parameters()), list(ref.parameters()))
    saved_ref = [p.detach().clone() for p in ref.parameters()]
    rank = dist.get_rank()
    for step in range(3, 6):  # keep training both: Adam moments came back too
        x, y = _batch(step, rank)
        fopt.backward(torch.nn.functional.mse_loss(fresh(x), y))
        torch.nn.functional.mse_loss(ref(x), y).backward()
        for p in ref.parameters():
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
        ref_opt.step()
        ref_opt.zero_grad()
        fopt.step()
        fopt.zero_grad()
    out["reload_continue"] = _max_rel(list(fresh.parameters()), list(ref.parameters()))
    # elastic: the shards of this world size loaded by a 1-rank group
    if dist.get_world_size() > 1:
        solo = dist.new_group([0])
        if rank == 0:
            single = _model(seed=7)
            sopt = DeepSpeedZeroOptimizer(_groups(single), partition_grads=True, dp_process_group=solo)
            sopt.load_state_dict(shards, load_from_fp32_weights=True)
            out["elastic_params"] = _max_rel(list(single.parameters()), saved_ref)
            exp = sopt.optimizer.state[sopt.single_partition_of_fp32_groups[0]]["exp_avg"]
            out["elastic_state_numel"] = exp.numel()
        dist.barrier()
    return out


@pytest.mark.parametrize("world_size,shm", [(2, "1"), (4, "1"), (2, "0")])  # DS_SHM_COMM=0: through gloo
def test_zero_1_2_parity_and_checkpoint(world_size, shm):
    results = run_distributed(_parity_body, world_size=world_size, timeout=300, env={"DS_SHM_COMM": shm})
    for rank, out in enumerate(results):
        for key, value in out.items():
            if key.startswith(("stage", "reload", "elastic_params")):
                assert value < RTOL, f"rank {rank} {key}: max relative difference {value:.3g} >= {RTOL}"
        local, n = out["partition_numel"]
        assert local * world_size >= n and local == -(-(7 * 13 + 13 * 5) // world_size) + (
            -(-(13 + 5) // world_size)), out["partition_numel"]
        assert {"single_partition_of_fp32_groups", "base_optimizer_state", "zero_stage",
                "partition_count", "loss_scaler"} <= set(out["shard_keys"])
    assert results[0]["elastic_state_numel"] == 7 * 13 + 13 * 5  # all weights in one group, padding dropped


def test_rejects_closure_and_non_optimizer():
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    with pytest.raises(ValueError, match="wraps a torch.optim.Optimizer; got list"):
        DeepSpeedZeroOptimizer([torch.zeros(2)])
    model = _model()
    opt = DeepSpeedZeroOptimizer(_groups(model), partition_grads=False)
    with pytest.raises(ValueError, match="closure"):
        opt.step(closure=lambda: 0.0)
    # NVMe offload: ds-aio's swapper when installed (then nvme_path is required), else a pip hint
    if importlib.util.find_spec("deepspeed.io") is not None:
        with pytest.raises(ValueError, match="zero_optimization.offload_optimizer.nvme_path is not set"):
            DeepSpeedZeroOptimizer(_groups(_model()), offload_optimizer_config={"device": "nvme"})
    else:
        with pytest.raises(ImportError, match="needs ds-aio .*Fix: pip install ds-aio"):
            DeepSpeedZeroOptimizer(_groups(_model()), offload_optimizer_config={"device": "nvme"})


def test_single_process_matches_torch_adamw():
    """World size 1 (no process group): the wrapper must be exactly the wrapped optimizer."""
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    model = _model()
    ref = copy.deepcopy(model)
    ref_opt = _groups(ref)
    zopt = DeepSpeedZeroOptimizer(_groups(model), partition_grads=True)
    for step in range(5):
        x, y = _batch(step, 0)
        zopt.backward(torch.nn.functional.mse_loss(model(x), y))
        torch.nn.functional.mse_loss(ref(x), y).backward()
        ref_opt.step()
        ref_opt.zero_grad()
        zopt.step()
        zopt.zero_grad()
    assert _max_rel(list(model.parameters()), list(ref.parameters())) < RTOL
