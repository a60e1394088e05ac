"""ZeRO-Infinity (ds-zero + ds-aio + ds-ops-cpu): optimizer state offloaded to NVMe (a folder on
this disk) trains exactly like CPU offload, uses less host memory, checkpoints, and cleans up.

Lives in tests/ (combined session): it needs all three packages."""

from __future__ import annotations

import os

import pytest
import torch

from deepspeed.testing.distributed import run_distributed

STEPS = 20
#: Same kernels, same per-parameter order: NVMe offload must match CPU offload to fp32 rounding
#: of nothing at all; 1e-6 relative leaves room only for a summation-order change.
RTOL = 1e-6


def _model(width=64, depth=3):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, 4))


def _config(stage, device, nvme_path=None, **extra):
    off = {"device": device}
    if device == "nvme":
        off.update(nvme_path=nvme_path, pipeline_read=True, pipeline_write=True)
    zero = {"stage": stage, "offload_optimizer": off, "reduce_bucket_size": 10**6, "sub_group_size": 10**6}
    zero.update(extra)
    return {"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1.0,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01}},
            "aio": {"block_size": 262144, "queue_depth": 4, "intra_op_parallelism": 2},
            "zero_optimization": zero}


def _train_body(stage, device, nvme_path, width, depth, save_dir=None):
    import resource

    import deepspeed
    import deepspeed.comm as dist

    engine, _, _, _ = deepspeed.initialize(model=_model(width, depth), config=_config(stage, device, nvme_path))
    rank = dist.get_rank()
    losses = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(1000 * step + rank)
        x, y = torch.randn(4, width, generator=g), torch.randn(4, 4, generator=g)
        loss = torch.nn.functional.mse_loss(engine(x), y)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    out = {"losses": losses, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    swapper = engine.optimizer.optimizer_swapper
    if device == "nvme":
        out["swap_files"] = sorted(os.listdir(swapper.folder.path))
        out["swap_bytes"] = sum(os.path.getsize(os.path.join(swapper.folder.path, f)) for f in out["swap_files"])
        out["swap_folder"] = swapper.folder.path
        out["resident_state"] = sum(v.numel() for st in engine.optimizer.optimizer.state.values()
                                    for k, v in st.items() if k != "step")
    else:
        assert swapper is None
    if save_dir is not None:
        engine.save_checkpoint(save_dir, tag="t")
        engine2, _, _, _ = deepspeed.initialize(model=_model(width, depth),
                                                config=_config(stage, device, nvme_path))
        engine2.load_checkpoint(save_dir, tag="t")
        g = torch.Generator().manual_seed(7 + rank)
        x, y = torch.randn(4, width, generator=g), torch.randn(4, 4, generator=g)
        pair = []
        for e in (engine, engine2):
            loss = torch.nn.functional.mse_loss(e(x), y)
            e.backward(loss)
            e.step()
            pair.append([p.detach().clone() for p in e.module.parameters()])
        out["resume_max_diff"] = max((a - b).abs().max().item() for a, b in zip(*pair))
    return out


def _rel(a, b):
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_nvme_optimizer_offload_matches_cpu_offload(tmp_path, stage):
    nvme = tmp_path / "nvme"
    nvme.mkdir()
    cpu = run_distributed(_train_body, world_size=2, args=(stage, "cpu", None, 64, 3), timeout=300)
    ssd = run_distributed(_train_body, world_size=2, args=(stage, "nvme", str(nvme), 64, 3, str(tmp_path / "ckpt")),
                          timeout=300)
    for rank in range(2):
        assert _rel(ssd[rank]["losses"], cpu[rank]["losses"]) <= RTOL, (stage, rank)
        assert ssd[rank]["resident_state"] == 0  # every moment is on disk between steps
        assert ssd[rank]["swap_files"] and all(f.endswith(".swp") for f in ssd[rank]["swap_files"])
        assert ssd[rank]["resume_max_diff"] == 0.0  # a checkpoint saved with state on NVMe resumes exactly
        assert not os.path.exists(ssd[rank]["swap_folder"])  # removed when the rank exited
    assert os.listdir(nvme) == []


def test_nvme_path_errors(tmp_path):
    import deepspeed

    missing = tmp_path / "absent"
    with pytest.raises(ValueError, match=f"zero_optimization.offload_optimizer.nvme_path='{missing}' does not exist"):
        deepspeed.initialize(model=_model(), config=_config(2, "nvme", str(missing)))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="nvme_path='.*file' is not a folder"):
        deepspeed.initialize(model=_model(), config=_config(3, "nvme", str(f)))
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ValueError, match="nvme_path='.*ro' is not writable"):
            deepspeed.initialize(model=_model(), config=_config(1, "nvme", str(ro)))
