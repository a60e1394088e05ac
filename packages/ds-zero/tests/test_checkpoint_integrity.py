"""ZeRO checkpoints against damage and hostile files: a deleted or foreign rank shard at stages 1-3,
a poisoned shard through the engine, the ``zero_to_fp32`` API and the script copied beside the
checkpoint (also when deepspeed is not importable), ``step()`` without backward and NaN gradients
under ZeRO."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from deepspeed.testing.distributed import run_distributed


class Payload:
    """Unpickling this creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(9, 17), torch.nn.GELU(), torch.nn.Linear(17, 3))


def _config(stage, **extra):
    return {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
            "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}, **extra}


def _train(engine, steps, rank=0, poison_at=None):
    for step in range(steps):
        g = torch.Generator().manual_seed(100 * step + rank)
        x, y = torch.randn(4, 9, generator=g), torch.randn(4, 3, generator=g)
        loss = torch.nn.functional.mse_loss(engine(x.to(next(engine.module.parameters()).dtype)).float(), y)
        if step == poison_at:
            loss = loss * float("inf")
        engine.backward(loss)
        engine.step()


def _full_params(engine):
    from deepspeed.utils import safe_get_full_fp32_param

    return torch.cat([safe_get_full_fp32_param(p).reshape(-1) for p in engine.module.parameters()])


def _missing_shard_body(save_dir, stage):
    import deepspeed
    import deepspeed.comm as dist

    rank = dist.get_rank()
    engine, *_ = deepspeed.initialize(model=_model(), config=_config(stage))
    _train(engine, 2, rank)
    engine.save_checkpoint(save_dir, tag="t")
    out = {}
    shard = os.path.join(save_dir, "t", "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    if rank == 0:
        shutil.copytree(os.path.join(save_dir, "t"), os.path.join(save_dir, "nomanifest"))
        os.remove(os.path.join(save_dir, "nomanifest", "ds_manifest.json"))
        os.remove(os.path.join(save_dir, "nomanifest", "zero_pp_rank_1_mp_rank_00_optim_states.pt"))
        os.remove(shard)
    dist.barrier()
    for tag in ("t", "nomanifest"):
        fresh, *_ = deepspeed.initialize(model=_model(), config=_config(stage))
        try:
            fresh.load_checkpoint(save_dir, tag=tag)
            out[tag] = None
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[tag] = (type(exc).__name__, str(exc))
    if stage < 3:
        # the optimizer's own API: one shard that is not this rank's is refused
        mine = engine.optimizer.state_dict()
        others = [None] * 2
        dist.all_gather_object(others, mine)
        try:
            engine.optimizer.load_state_dict([others[1 - rank]])
            out["foreign"] = None
        except ValueError as exc:
            out["foreign"] = str(exc)
        engine.optimizer.load_state_dict([others[rank]])  # its own shard is fine
    return out


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_missing_rank_shard_is_refused_on_every_rank(tmp_path, stage):
    """Before (stages 1-2): with one rank's zero_pp_rank_* file gone, an explicit-tag load
    "succeeded" and gave every rank the surviving slice."""
    results = run_distributed(_missing_shard_body, args=(str(tmp_path), stage), timeout=300)
    shard = "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    for rank, out in enumerate(results):
        kind, msg = out["t"]
        assert kind == "CheckpointError" and f"t/{shard} is missing" in msg, (rank, out["t"])
        assert "saved by 2 rank(s), ZeRO stage" in msg
        kind, msg = out["nomanifest"]
        assert kind == "FileNotFoundError", (rank, out["nomanifest"])
        assert "was saved by 2 data-parallel rank(s) but these shard files are missing: " in msg and shard in msg
        if stage < 3:
            assert "load_state_dict got one ZeRO shard of a checkpoint saved by 2 ranks, and it is rank " \
                   f"{1 - rank}'s (this is rank {rank})" in out["foreign"]


def _poison_body(save_dir, marker):
    import deepspeed
    import deepspeed.comm as dist

    rank = dist.get_rank()
    engine, *_ = deepspeed.initialize(model=_model(), config=_config(2))
    _train(engine, 2, rank)
    engine.save_checkpoint(save_dir)
    if rank == 0:
        path = os.path.join(save_dir, "global_step2", "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        sd = torch.load(path, weights_only=True)
        sd["evil"] = Payload(marker)
        torch.save(sd, path)
        os.remove(os.path.join(save_dir, "global_step2", "ds_manifest.json"))  # as a DeepSpeed checkpoint
    dist.barrier()
    fresh, *_ = deepspeed.initialize(model=_model(), config=_config(2))
    try:
        fresh.load_checkpoint(save_dir)
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc)
    return None, None


def test_poisoned_shard_runs_no_code_through_any_loader(tmp_path):
    """Before: zero_to_fp32 retried torch.load(weights_only=False) and ran the payload (4/4)."""
    marker = tmp_path / "payload_ran"
    for kind, msg in run_distributed(_poison_body, args=(str(tmp_path), str(marker)), timeout=300):
        assert kind == "CheckpointError" and "refused to load" in msg and "zero_pp_rank_0" in msg, (kind, msg)
    assert not marker.exists()
    from deepspeed.utils import zero_to_fp32

    with pytest.raises(ValueError, match=r"refused to load .*zero_pp_rank_0_mp_rank_00_optim_states.pt.*--unsafe_load"):
        zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(tmp_path))
    assert not marker.exists()
    script = tmp_path / "zero_to_fp32.py"
    assert script.exists()
    runs = {
        "copied script": [sys.executable, "-I", str(script), str(tmp_path), str(tmp_path / "out")],
        # the copy beside a checkpoint used where deepspeed is not installed
        "copied script without deepspeed": [
            sys.executable, "-I", "-c", "import sys, runpy; sys.modules['deepspeed'] = None; "
            f"sys.argv = ['zero_to_fp32.py', {str(tmp_path)!r}, {str(tmp_path / 'out')!r}]; "
            f"runpy.run_path({str(script)!r}, run_name='__main__')"],
    }
    for what, cmd in runs.items():
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
        assert proc.returncode != 0, what
        assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in proc.stderr and "--unsafe_load" in proc.stderr, \
            (what, proc.stderr[-2000:])
        assert not marker.exists(), what
    # the documented opt-in runs it (the flag is real)
    zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(str(tmp_path), unsafe_load=True)
    assert marker.exists()


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_step_without_backward_changes_nothing(stage):
    import deepspeed

    engine, *_ = deepspeed.initialize(model=_model(), config=_config(stage))
    _train(engine, 1)
    before, steps = _full_params(engine).clone(), engine.global_steps
    engine.step()
    assert torch.equal(_full_params(engine), before) and engine.global_steps == steps


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("precision", [None, "bf16"])
def test_nonfinite_gradients_skip_or_raise(stage, precision):
    """Before: with bf16 or fp32 one inf loss turned every weight into NaN, silently."""
    import deepspeed

    extra = {precision: {"enabled": True}} if precision else {}
    engine, *_ = deepspeed.initialize(model=_model(), config=_config(stage, **extra))
    _train(engine, 1)
    before = _full_params(engine).clone()
    _train(engine, 1, poison_at=0)
    assert torch.equal(_full_params(engine), before) and engine.skipped_steps == 1
    _train(engine, 1)
    assert torch.isfinite(_full_params(engine)).all() and not torch.equal(_full_params(engine), before)
    strict, *_ = deepspeed.initialize(model=_model(), config=_config(stage, nonfinite_gradients="raise", **extra))
    with pytest.raises(FloatingPointError, match=r"step 0: the gradient norm is (nan|inf) \(not finite\)"):
        _train(strict, 1, poison_at=0)
