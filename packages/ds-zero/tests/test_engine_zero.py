"""ZeRO through ``deepspeed.initialize``: parity with stage 0, checkpoints and zero_to_fp32.

Parity tolerance: 1e-5 relative in fp32 after 20 steps; ZeRO changes only the order of a few
floating-point additions (bucketed reductions), never the arithmetic.
"""

import os
import subprocess
import sys

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

RTOL = 1e-5
STEPS = 20


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(9, 17), torch.nn.GELU(), torch.nn.Linear(17, 17), torch.nn.GELU(),
                               torch.nn.Linear(17, 3))


def _config(stage, **zero):
    return {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "gradient_clipping": 0.5,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.01}},
            "zero_optimization": dict(stage=stage, reduce_bucket_size=100, allgather_bucket_size=100, **zero)}


def _batch(step, rank):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(4, 9, generator=g), torch.randn(4, 3, generator=g)


def _train(engine, start, stop):
    import deepspeed.comm as dist

    for step in range(start, stop):
        for micro in range(engine.gradient_accumulation_steps()):
            x, y = _batch(2 * step + micro, dist.get_rank())
            engine.backward(torch.nn.functional.mse_loss(engine(x), y))
            engine.step()


def _params(engine):
    return [p.detach().clone().float() for p in engine.module.parameters()]


def _rel(a, b):
    return max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b))


def _parity_body(tmp):
    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.utils import zero_to_fp32

    out = {}
    ref, _, _, _ = deepspeed.initialize(model=_model(), config=_config(0))
    _train(ref, 0, STEPS)
    want = _params(ref)
    for name, stage, zero in [("stage1", 1, {}), ("stage2", 2, {}), ("stage2_overlap", 2, {"overlap_comm": True}),
                              ("stage2_offload", 2, {"offload_optimizer": {"device": "cpu"}}),
                              ("stage1_offload", 1, {"offload_optimizer": {"device": "cpu"}})]:
        engine, opt, _, _ = deepspeed.initialize(model=_model(), config=_config(stage, **zero))
        assert type(opt).__name__ == "DeepSpeedZeroOptimizer"
        if "offload" in name:  # the step runs on the host with ds-ops-cpu's kernels
            assert type(opt.optimizer).__name__ == "DeepSpeedCPUAdam" and opt.cpu_offload
        _train(engine, 0, STEPS)
        out[name] = _rel(_params(engine), want)
        if name == "stage2":
            kept = engine

    # checkpoint at stage 2 half way, consolidate, resume in a fresh engine
    engine, _, _, _ = deepspeed.initialize(model=_model(), config=_config(2))
    _train(engine, 0, STEPS // 2)
    engine.save_checkpoint(tmp)
    mid = _params(engine)
    sd = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(tmp)
    names = [n for n, _ in engine.module.named_parameters()]
    out["consolidated"] = _rel([sd[n] for n in names], mid)
    torch.manual_seed(123)
    fresh, _, _, _ = deepspeed.initialize(model=torch.nn.Sequential(*[type(m)(*m.weight.shape[::-1]) if isinstance(
        m, torch.nn.Linear) else type(m)() for m in _model()]), config=_config(2))
    fresh.load_checkpoint(tmp)
    out["loaded"] = _rel(_params(fresh), mid)
    _train(fresh, STEPS // 2, STEPS)
    out["resumed"] = _rel(_params(fresh), want)
    out["files"] = sorted(os.listdir(os.path.join(tmp, "global_step10")))
    dist.barrier()
    del kept
    return out


# Note: on one host collectives go through shared memory (deepspeed.comm.shm); DS_SHM_COMM=0 keeps
# the gloo path covered.
@pytest.mark.parametrize("world_size,shm", [(2, "1"), (4, "1"), (2, "0")])
def test_zero_stages_match_stage0(tmp_path, world_size, shm):
    results = run_distributed(_parity_body, world_size=world_size, args=(str(tmp_path),), timeout=300,
                              env={"DS_SHM_COMM": shm})
    for rank, out in enumerate(results):
        for key, value in out.items():
            if key != "files":
                assert value < RTOL, f"rank {rank} {key}: max relative difference {value:.3g} vs stage 0"
    assert results[0]["files"] == ["ds_manifest.json", "mp_rank_00_model_states.pt"] + [
        f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(world_size)]
    assert (tmp_path / "latest").read_text() == "global_step10"
    # the copied script consolidates on its own, with only torch importable
    script = tmp_path / "zero_to_fp32.py"
    out_dir = tmp_path / "hf"
    env = dict(os.environ, PYTHONPATH="")
    subprocess.run([sys.executable, "-I", str(script), str(tmp_path), str(out_dir), "--max_shard_size", "1KB"],
                   check=True, env=env, cwd=str(tmp_path))
    index = (out_dir / "pytorch_model.bin.index.json").read_text()
    shards = sorted(p.name for p in out_dir.iterdir() if p.suffix == ".bin")
    assert len(shards) > 1 and all(s in index for s in shards)
    merged = {}
    for s in shards:
        merged.update(torch.load(out_dir / s, weights_only=True))
    model = _model()
    model.load_state_dict(merged)  # strict: every name present, shapes right
    from deepspeed.utils import zero_to_fp32

    want = zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(tmp_path))
    assert all(torch.equal(merged[k], want[k]) for k in want)
    # resume on another world size: this single process loads the world_size-rank shards
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=_model(), config=_config(2))
    engine.load_checkpoint(str(tmp_path))
    assert all(torch.equal(p.detach(), want[n]) for n, p in engine.module.named_parameters())
    assert engine.optimizer.optimizer.state[engine.optimizer.single_partition_of_fp32_groups[0]]["exp_avg"].numel() \
        == sum(p.numel() for p in engine.module.parameters())


def test_offload_rules():
    """Offload uses DeepSpeed's CPU optimizer; a client torch optimizer needs the explicit opt-out; nvme waits for ds-aio."""
    import deepspeed

    cfg = {"train_batch_size": 2, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}
    model = _model()
    with pytest.raises(ValueError, match="zero_force_ds_cpu_optimizer"):
        deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=cfg)
    model = _model()
    _, opt, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()),
                                        config=dict(cfg, zero_force_ds_cpu_optimizer=False))
    assert type(opt.optimizer).__name__ == "AdamW" and opt.cpu_offload
    _, opt, _, _ = deepspeed.initialize(model=_model(), config=dict(cfg, optimizer={"type": "AdamW"}))
    assert type(opt.optimizer).__name__ == "DeepSpeedCPUAdam"
    assert opt.single_partition_of_fp32_groups[0].device.type == "cpu"
    nvme = {"train_batch_size": 2, "optimizer": {"type": "AdamW"},
            "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "/tmp"}}}
    with pytest.raises(NotImplementedError, match="offload_param.device='nvme' \\(parameters on NVMe\\) is not"):
        deepspeed.initialize(model=_model(), config=nvme)


@pytest.mark.parametrize("stage", [2, 3])
def test_load_module_only_and_without_optimizer_states(tmp_path, stage):
    """load_module_only restores weights (and the fp32 masters follow them) but not Adam's moments."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
    from deepspeed.zero import GatheredParameters

    cfg = dict(_config(stage), bf16={"enabled": True}, gradient_accumulation_steps=1)
    cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0

    def run(engine, steps):
        for step in range(steps):
            x, y = _batch(step, 0)
            engine.backward(torch.nn.functional.mse_loss(engine(x.bfloat16()).float(), y))
            engine.step()

    engine, _, _, _ = deepspeed.initialize(model=_model(), config=cfg)
    run(engine, 3)
    engine.save_checkpoint(str(tmp_path))
    want = [safe_get_full_fp32_param(p).clone() for p in engine.module.parameters()]
    torch.manual_seed(5)
    fresh, _, _, _ = deepspeed.initialize(model=torch.nn.Sequential(*[type(m)(*m.weight.shape[::-1]) if isinstance(
        m, torch.nn.Linear) else type(m)() for m in _model()]), config=cfg)
    run(fresh, 1)  # moments exist and differ from the checkpoint's
    fresh.load_checkpoint(str(tmp_path), load_module_only=True)
    params = list(fresh.module.parameters())
    got = [safe_get_full_fp32_param(p) for p in params]
    with GatheredParameters(params):
        lp = [p.detach().float().clone() for p in params]
    # bf16 weights in the module; the masters hold exactly them after a module-only load at stage 2,
    # the saved fp32 values at stage 3 (its weights only exist in the shards)
    assert all(torch.equal(g.bfloat16().float(), w) for g, w in zip(got, lp))
    assert max(_rel(g, w) for g, w in zip(got, want)) < (1e-2 if stage == 2 else 1e-7)
    moments = safe_get_full_optimizer_state(params[0], "exp_avg")
    fresh.load_checkpoint(str(tmp_path))
    assert not torch.equal(moments, safe_get_full_optimizer_state(params[0], "exp_avg"))


@pytest.mark.parametrize("key,value,what", [
    ("zero_quantized_weights", True, "qwZ"), ("zero_quantized_gradients", True, "qgZ"),
])
def test_unimplemented_zero_features_are_refused(key, value, what):
    import deepspeed

    cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam"}, "zero_optimization": {"stage": 3, key: value}}
    with pytest.raises(NotImplementedError, match=f"zero_optimization.{key}={value!r}: .*{what}"):
        deepspeed.initialize(model=_model(), config=cfg)


def test_knobs_without_effect_are_named_in_a_warning():
    import logging

    import deepspeed
    from deepspeed.utils import logger

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam"},
               "zero_optimization": {"stage": 3, "round_robin_gradients": True, "sub_group_size": 1e9}}
        deepspeed.initialize(model=_model(), config=cfg)
        cfg["zero_optimization"] = {"stage": 2, "sub_group_size": 1e9}
        deepspeed.initialize(model=_model(), config=cfg)
    finally:
        logger.removeHandler(handler)
    text = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any("zero_optimization: round_robin_gradients accepted but without effect" in t for t in text), text
    assert any("zero_optimization: sub_group_size accepted but without effect" in t for t in text), text
