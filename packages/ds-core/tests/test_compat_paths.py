"""DeepSpeed's submodule import paths of ds-core's public classes, each imported the way DeepSpeed
code writes it and used once (the compatibility table in the README requires a test per provided
module). Optimizer steps are compared with torch's or the reference implementations (1e-6
relative, fp32)."""

import importlib.util
import math
import sys
import types

import pytest
import torch

import deepspeed.comm as dist
from deepspeed.testing.distributed import run_distributed


def _params(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)) for _ in range(n)]


def _step_both(ours_cls, ours_kwargs, ref_cls, ref_kwargs, steps=3):
    a, b = _params(), _params()
    ours, ref = ours_cls(a, **ours_kwargs), ref_cls(b, **ref_kwargs)
    for s in range(steps):
        g = torch.Generator().manual_seed(100 + s)
        for pa, pb in zip(a, b):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    return max(float(((pa - pb).abs().max() / pb.abs().max())) for pa, pb in zip(a, b))


# ------------------------------------------------------------------ deepspeed.ops.*
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cpu_optimizer_modules():
    from deepspeed.ops.adagrad.cpu_adagrad import DeepSpeedCPUAdagrad
    from deepspeed.ops.adam.cpu_adam import DeepSpeedCPUAdam
    from deepspeed.ops.lion.cpu_lion import DeepSpeedCPULion
    from deepspeed.testing.reference import ReferenceLion

    assert _step_both(DeepSpeedCPUAdam, {"lr": 1e-2, "weight_decay": 0.1}, torch.optim.AdamW,
                      {"lr": 1e-2, "weight_decay": 0.1}) < 1e-6
    assert _step_both(DeepSpeedCPUAdagrad, {"lr": 1e-1}, torch.optim.Adagrad, {"lr": 1e-1}) < 1e-6
    assert _step_both(DeepSpeedCPULion, {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}, ReferenceLion,
                      {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}) < 1e-6


def test_fused_optimizer_modules():
    from deepspeed.ops.adam.fused_adam import FusedAdam
    from deepspeed.ops.lion.fused_lion import FusedLion
    from deepspeed.testing.reference import ReferenceLion

    assert _step_both(FusedAdam, {"lr": 1e-2, "adam_w_mode": True, "weight_decay": 0.1}, torch.optim.AdamW,
                      {"lr": 1e-2, "weight_decay": 0.1}) < 1e-6
    assert _step_both(FusedLion, {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.0}, ReferenceLion,
                      {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.0}) < 1e-6


def test_fused_lamb_module_matches_the_formula():
    import deepspeed.ops.lamb as lamb_pkg
    from deepspeed.ops.lamb.fused_lamb import FusedLamb

    assert lamb_pkg.FusedLamb is FusedLamb
    (p,) = _params(n=1)
    ref = p.detach().clone()
    opt = FusedLamb([p], lr=1e-2, weight_decay=0.01)
    grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(3))
    p.grad = grad.clone()
    opt.step()
    # LAMB, first step: m = 0.1 g, v = 0.001 g^2, bias-corrected step lr * sqrt(1 - b2) / (1 - b1)
    m, v = 0.1 * grad, 0.001 * grad * grad
    u = m / (v.sqrt() + 1e-8) + 0.01 * ref
    trust = min(max(ref.norm().item() / u.norm().item(), 0.01), 10.0)
    expected = ref - 1e-2 * math.sqrt(1 - 0.999) / (1 - 0.9) * trust * u
    assert torch.allclose(p.detach(), expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ deepspeed.runtime.*
def test_runtime_modules_of_the_engine():
    import deepspeed
    import deepspeed.runtime.fp16 as fp16_pkg
    import deepspeed.runtime.fp16.loss_scaler  # noqa: F401  (DeepSpeed imports the submodule by path)
    from deepspeed.runtime.activation_checkpointing.config import DeepSpeedActivationCheckpointingConfig
    from deepspeed.runtime.base_optimizer import DeepSpeedOptimizer
    from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
    from deepspeed.runtime.dataloader import DeepSpeedDataLoader
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config, get_float16_config

    assert fp16_pkg.loss_scaler.DynamicLossScaler(init_scale=8).loss_scale == 8
    ac = DeepSpeedActivationCheckpointingConfig(partition_activations=True, number_checkpoints=2)
    assert ac.partition_activations and ac.number_checkpoints == 2
    fp16 = get_float16_config({"fp16": {"enabled": True, "initial_scale_power": 5}})
    assert isinstance(fp16, DeepSpeedFP16Config) and fp16.enabled and fp16.initial_scale_power == 5

    model = torch.nn.Linear(3, 1)
    data = torch.utils.data.TensorDataset(torch.arange(12.0).reshape(4, 3), torch.zeros(4, 1))
    engine, opt, loader, _ = deepspeed.initialize(model=model, training_data=data, config={
        "train_batch_size": 2, "fp16": {"enabled": True}, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}}})
    assert isinstance(opt, DeepSpeedOptimizer)
    assert isinstance(engine.checkpoint_engine, CheckpointEngine)
    assert isinstance(loader, DeepSpeedDataLoader) and len(loader) == 2
    assert sorted(int(v) for x, _ in loader for v in x[:, 0]) == [0, 3, 6, 9]  # every sample once per epoch
    mine = DeepSpeedDataLoader(data, batch_size=2, data_parallel_world_size=2, data_parallel_rank=1)
    assert len(mine) == 1 and next(iter(mine))[0].shape == (2, 3)


# ------------------------------------------------------------------ deepspeed.profiling.*
def test_profiling_modules():
    import deepspeed.profiling
    from deepspeed.profiling.config import DeepSpeedFlopsProfilerConfig
    from deepspeed.profiling.flops_profiler.profiler import FlopsProfiler

    assert deepspeed.profiling.flops_profiler.FlopsProfiler is FlopsProfiler
    cfg = DeepSpeedFlopsProfilerConfig(enabled=True, profile_step=3)
    assert cfg.enabled and cfg.profile_step == 3
    model = torch.nn.Linear(8, 4, bias=False)
    prof = FlopsProfiler(model)
    prof.start_profile()
    model(torch.randn(5, 8))
    flops = prof.get_total_flops()
    prof.end_profile()
    assert flops == 2 * 5 * 8 * 4  # DeepSpeed's convention: a MAC is 2 FLOPs


# ------------------------------------------------------------------ deepspeed.comm.*
def _reduce_body():
    from deepspeed.comm.comm import all_reduce, get_rank
    from deepspeed.comm.reduce_op import ReduceOp

    t = torch.tensor([float(get_rank() + 1)])
    all_reduce(t, op=ReduceOp.MAX)  # DeepSpeed's module of the collectives
    s = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(s, op=ReduceOp.AVG)
    return t.item(), s.item()


def test_comm_modules():
    from deepspeed.comm.config import CommsLoggerConfig, DeepSpeedCommsConfig

    cfg = DeepSpeedCommsConfig({"comms_logger": {"enabled": True, "prof_ops": ["all_reduce"], "verbose": True}})
    assert cfg.comms_logger_enabled and isinstance(cfg.comms_logger, CommsLoggerConfig)
    assert cfg.comms_logger.prof_ops == ["all_reduce"] and cfg.comms_logger.verbose
    assert run_distributed(_reduce_body, world_size=2) == [(2.0, 1.5), (2.0, 1.5)]


# ------------------------------------------------------------------ deepspeed.monitor.*
def test_tensorboard_monitor_module(tmp_path, monkeypatch):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("needs tensorboard")
    from deepspeed.monitor.config import TensorBoardConfig
    from deepspeed.monitor.tensorboard import TensorBoardMonitor

    monkeypatch.setattr("deepspeed.monitor.base._rank", lambda: 0)
    mon = TensorBoardMonitor(TensorBoardConfig(enabled=True, output_path=str(tmp_path), job_name="tb"))
    mon.write_events([("Train/Samples/train_loss", 0.5, 1)])
    mon.close()
    assert any(f.name.startswith("events.out.tfevents") for f in (tmp_path / "tb").iterdir())


def test_wandb_and_comet_monitor_modules(monkeypatch):
    from deepspeed.monitor.comet import CometMonitor
    from deepspeed.monitor.config import CometConfig, WandbConfig
    from deepspeed.monitor.wandb import WandbMonitor

    monkeypatch.setattr("deepspeed.monitor.base._rank", lambda: 0)
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)),
                                 log=lambda data, step=None, commit=None: calls.append(("log", data, step)),
                                 finish=lambda: calls.append(("finish",)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    mon = WandbMonitor(WandbConfig(enabled=True, project="p", group="g"))
    mon.write_events([("Train/Samples/lr", 0.1, 7)])
    mon.close()
    assert calls == [("init", {"project": "p", "group": "g", "entity": None}),
                     ("log", {"Train/Samples/lr": 0.1}, 7), ("finish",)]
    monkeypatch.setitem(sys.modules, "comet_ml", None)  # not installed
    with pytest.raises(RuntimeError, match="comet.enabled=true in the ds_config needs the comet_ml package"):
        CometMonitor(CometConfig(enabled=True))


# ------------------------------------------------------------------ small DeepSpeed modules
def test_constants_exceptions_and_torch_helpers():
    import deepspeed.comm
    from deepspeed.constants import TORCH_DISTRIBUTED_DEFAULT_PORT, default_pg_timeout
    from deepspeed.utils.exceptions import DeprecatedException
    from deepspeed.utils.torch import is_functorch_transforming, register_grad_hook, required_torch_version

    assert TORCH_DISTRIBUTED_DEFAULT_PORT == 29500 and default_pg_timeout is deepspeed.comm.default_pg_timeout
    assert issubclass(DeprecatedException, Exception)
    major, minor = (int(v) for v in torch.__version__.split(".")[:2])
    assert required_torch_version(min_version=f"{major}.{minor}") is True
    assert required_torch_version(min_version=f"{major}.{minor + 1}") is False
    assert required_torch_version(max_version=f"{major - 1}.0") is False
    assert required_torch_version(min_version=2.0, max_version=f"{major + 1}.0") is True
    with pytest.raises(ValueError, match="pass min_version and/or max_version"):
        required_torch_version()
    seen = []
    p = torch.nn.Parameter(torch.ones(3))
    register_grad_hook(p, lambda param: seen.append(param.grad.clone()))
    (p * 2).sum().backward()
    assert len(seen) == 1 and torch.equal(seen[0], torch.full((3,), 2.0))
    assert is_functorch_transforming() is False
    flags = torch.func.grad(lambda x: (x * float(is_functorch_transforming())).sum())(torch.ones(2))
    assert torch.equal(flags, torch.ones(2))


def test_repeating_loader_log_level_and_small_runtime_helpers(caplog):
    import logging

    from deepspeed.runtime.dataloader import RepeatingLoader
    from deepspeed.runtime.utils import is_model_parallel_parameter, prefix_sum_inc
    from deepspeed.utils import RepeatingLoader as FromUtils
    from deepspeed.utils import logger, set_log_level_from_string

    assert FromUtils is RepeatingLoader
    sampler = torch.utils.data.DistributedSampler(range(4), num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2, sampler=sampler)
    loader.set_epoch = sampler.set_epoch  # what DeepSpeedDataLoader offers
    it = RepeatingLoader(loader)
    epochs = [sorted(int(v) for _ in range(2) for v in next(it)) for _ in range(3)]
    assert epochs == [[0, 1, 2, 3]] * 3 and it.epoch == 2 and sampler.epoch == 2  # restarted, reshuffled
    with pytest.raises(ValueError, match="the loader yields no batch"):
        next(RepeatingLoader([]))

    before = logger.level
    try:
        set_log_level_from_string("warning")
        assert logger.level == logging.WARNING and all(h.level == logging.WARNING for h in logger.handlers)
        with pytest.raises(ValueError, match="log level 'loud' is not one of debug, info, warning, error, critical"):
            set_log_level_from_string("loud")
    finally:
        logger.setLevel(before)
        for h in logger.handlers:
            h.setLevel(before)

    assert prefix_sum_inc([3, 4, 5]) == [3, 7, 12]
    p = torch.nn.Parameter(torch.ones(2))
    assert is_model_parallel_parameter(p) is False
    p.tensor_model_parallel = True  # Megatron's attribute
    assert is_model_parallel_parameter(p) is True


def test_zero_optimizer_base_class():
    from deepspeed.runtime.base_optimizer import DeepSpeedOptimizer, ZeROOptimizer
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer

    class Partitioning(DeepSpeedOptimizer):
        def __init__(self, stage):
            self.zero_stage = stage

    assert isinstance(Partitioning(2), ZeROOptimizer) and not isinstance(Partitioning(0), ZeROOptimizer)
    model = torch.nn.Linear(2, 2).half()
    assert not isinstance(FP16_Optimizer(torch.optim.SGD(model.parameters(), lr=0.1)), ZeROOptimizer)
    assert not isinstance(object(), ZeROOptimizer)


def test_on_device_builds_modules_on_a_device_and_dtype():
    import deepspeed
    from deepspeed.utils import OnDevice as FromUtils
    from deepspeed.utils.init_on_device import OnDevice

    assert deepspeed.OnDevice is OnDevice and FromUtils is OnDevice
    with deepspeed.OnDevice(dtype=torch.float16, device="meta"):
        model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.LayerNorm(1024))
        explicit = torch.zeros(2, dtype=torch.float32)
    assert all(p.device.type == "meta" and p.dtype == torch.float16 for p in model.parameters())
    assert explicit.dtype == torch.float32 and explicit.device.type == "meta"
    assert torch.get_default_dtype() == torch.float32 and torch.empty(1).device.type == "cpu"  # restored
    with OnDevice(dtype=torch.bfloat16, device="cpu"):
        lin = torch.nn.Linear(2, 2)
    assert lin.weight.dtype == torch.bfloat16 and lin.weight.device.type == "cpu"
    with OnDevice(dtype=torch.float16, device="meta", enabled=False):
        off = torch.nn.Linear(2, 2)
    assert off.weight.dtype == torch.float32 and off.weight.device.type == "cpu"
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype"):
        OnDevice(dtype=torch.int8)


def test_top_level_names_of_deepspeed(monkeypatch):
    import importlib

    import deepspeed
    from deepspeed.runtime.base_optimizer import DeepSpeedOptimizer
    from deepspeed.runtime.config import DeepSpeedConfigError
    from deepspeed.runtime.dataloader import DeepSpeedDataLoader

    assert deepspeed.DeepSpeedConfigError is DeepSpeedConfigError
    assert deepspeed.DeepSpeedDataLoader is DeepSpeedDataLoader and deepspeed.DeepSpeedOptimizer is DeepSpeedOptimizer
    assert deepspeed.TORCH_DISTRIBUTED_DEFAULT_PORT == 29500
    assert deepspeed.git_hash == deepspeed.__git_hash__ and deepspeed.git_branch == deepspeed.__git_branch__
    # a name from a feature package that is missing says what to install
    real_import = importlib.import_module

    def no_pipe(name, *args, **kwargs):
        if name.startswith("deepspeed.pipe") or name.startswith("deepspeed.runtime.pipe"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_pipe)
    monkeypatch.delitem(deepspeed.__dict__, "PipelineModule", raising=False)
    with pytest.raises(AttributeError, match="deepspeed.PipelineModule is provided by ds-pipe, which is not installed. "
                                             "Fix: pip install ds-pipe"):
        deepspeed.PipelineModule
