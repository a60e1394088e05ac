"""Resident model-state bytes per rank at ZeRO stages 1-3 against the ZeRO formulas.

Ψ = parameter count, N = data-parallel ranks, fp32 weights with Adam (two fp32 moments); the
fp32 master of an fp32 model is the weight buffer itself, so no extra copy. Measured after
backward (gradients reduced, before the step), when model states peak:

- stage 1: 4Ψ weights + 4Ψ unreduced gradients + 8Ψ/N moments + 4Ψ/N reduced gradient slice
  (the ZeRO paper counts 8Ψ + 8Ψ/N; this implementation keeps the reduced slice in fp32)
- stage 2: 4Ψ weights + (8 + 4)Ψ/N
- stage 3: (4 weights + 4 gradients + 8 moments)Ψ/N = 16Ψ/N

Every live CPU tensor storage in the process is counted (gc, plus the parameters' ``.grad``),
minus what existed before the model was built, and minus the shared-memory collectives'
workspace (deepspeed.comm.shm: a fixed header + 2 (N + 1) slots of 1 MiB whatever the model size,
a communication buffer like gloo's own, checked separately against that size). Bound: formula <= measured <= formula + 1 MiB (inputs, activations kept by the
loss, padding to N, optimizer step counters; buckets are freed once reduced).
"""

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

SLACK = 2**20
WIDTH, LAYERS = 1024, 4  # ≈ 4.2M parameters


def _shm_workspaces() -> dict:
    from deepspeed.comm import shm

    return {sg._base.untyped_storage().data_ptr(): sg for sg in shm._cache.values() if sg is not None}


def _live_bytes(module=None) -> int:
    """Bytes of every distinct CPU tensor storage reachable from Python objects, plus ``.grad``s.

    Note: a parameter's ``.grad`` lives in autograd's C++ metadata with no Python object until it
    is read, so gc cannot see it; it is added explicitly for the module's parameters.
    """
    import gc

    seen = {}
    skip = _shm_workspaces()
    tensors = [obj for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor)]
    if module is not None:
        tensors += [p.grad for p in module.parameters() if p.grad is not None]
    for t in tensors:
        if t.device.type == "cpu":
            st = t.untyped_storage()
            if st.data_ptr() not in skip:
                seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _body(stage):
    import gc

    import deepspeed
    import deepspeed.comm as dist

    gc.collect()
    base = _live_bytes()
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])
    psi = sum(p.numel() for p in model.parameters())
    cfg = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-4}},
           "zero_optimization": {"stage": stage, "reduce_bucket_size": 100_000, "allgather_bucket_size": 100_000,
                                 "stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": 0}}
    engine, _, _, _ = deepspeed.initialize(model=model, config=cfg)
    del model
    peak = 0
    for step in range(2):
        x = torch.randn(2, WIDTH)
        engine.backward(engine(x).square().mean())
        gc.collect()
        peak = max(peak, _live_bytes(engine.module) - base)
        engine.step()
    n = dist.get_world_size()
    for sg in _shm_workspaces().values():
        assert sg._base.untyped_storage().nbytes() <= 4096 + 2 * (n + 1) * sg.slot_bytes and sg.slot_bytes == 2**20
    return psi, peak, n


def _formula(stage, psi, n):
    return {1: 8 * psi + 12 * psi // n, 2: 4 * psi + 12 * psi // n, 3: 16 * psi // n}[stage]


@pytest.mark.parametrize("world_size", [2, 4])
def test_model_state_bytes_follow_zero_formulas(world_size):
    # Note: one fresh set of processes per stage, so nothing a previous engine left behind is
    # counted in (or freed out of) the baseline.
    per_stage = [run_distributed(_body, world_size=world_size, args=(stage,), timeout=300) for stage in (1, 2, 3)]
    for rank in range(world_size):
        for stage, (psi, measured, n) in zip((1, 2, 3), (results[rank] for results in per_stage)):
            want = _formula(stage, psi, n)
            assert want <= measured <= want + SLACK, (
                f"rank {rank} stage {stage}: {measured / 2**20:.2f} MiB of model states, formula "
                f"{want / 2**20:.2f} MiB (+{SLACK / 2**20:.0f} MiB allowed)")


def test_estimators_use_deepspeeds_formulas(capsys):
    """16-bit weights and gradients (2 + 2 bytes) plus fp32 master and Adam moments (12 bytes)."""
    from deepspeed.runtime.zero.stage3 import (estimate_zero3_model_states_mem_needs,
                                               estimate_zero3_model_states_mem_needs_all_live)
    from deepspeed.runtime.zero.stage_1_and_2 import (estimate_zero2_model_states_mem_needs,
                                                      estimate_zero2_model_states_mem_needs_all_live)

    psi = 10**6
    assert estimate_zero2_model_states_mem_needs(psi, 4, 1, cpu_offload=False) == (int(psi * 4 * 4 * 1.5),
                                                                                 4 * psi + 16 * psi // 4)
    assert estimate_zero2_model_states_mem_needs(psi, 4, 1, cpu_offload=True)[1] == 2 * psi
    cpu, gpu, largest = estimate_zero3_model_states_mem_needs(psi, 1000, 4, 1, cpu_offload=False,
                                                              cpu_offload_params=False, zero_init=True)
    assert (gpu, largest) == (4000 + 18 * psi // 4, 4000)
    model = torch.nn.Sequential(torch.nn.Linear(100, 100), torch.nn.Linear(100, 10))
    rows = estimate_zero2_model_states_mem_needs_all_live(model, num_gpus_per_node=2)
    assert [r[0] for r in rows] == ["offload_optimizer=cpu", "offload_optimizer=none"]
    rows3 = estimate_zero3_model_states_mem_needs_all_live(model, num_gpus_per_node=2)
    assert len(rows3) == 6 and "per CPU" in capsys.readouterr().out
