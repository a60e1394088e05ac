"""Activation checkpointing with DeepSpeed's API (``deepspeed.checkpointing``).

``checkpoint(function, *args)`` runs ``function`` without keeping its activations and recomputes
it in backward, restoring the CPU, accelerator and model-parallel RNG states so dropout draws
the same masks. Options (``configure`` or the ``activation_checkpointing`` config section):

* ``partition_activations``: each model-parallel rank keeps only its 1/mp slice of the saved
  inputs; they are all-gathered before the recomputation;
* ``checkpoint_in_cpu`` (``cpu_checkpointing``): saved inputs live in host memory;
* ``synchronize_checkpoint_boundary``: synchronize the device around each checkpoint;
* ``profile``: log forward/recompute times;
* ``contiguous_memory_optimization`` / ``number_checkpoints``: accepted; buffers are left to the
  PyTorch allocator here (no effect on results).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.utils.checkpoint

from deepspeed.accelerator import get_accelerator
from deepspeed.utils.logging import logger

_MODEL_PARALLEL_RNG_TRACKER_NAME = "model-parallel-rng"


class _Settings:
    def __init__(self) -> None:
        self.configured = False
        self.mpu: Any = None
        self.partition_activations = False
        self.contiguous_memory_optimization = False
        self.num_checkpoints: int | None = None
        self.cpu_checkpointing = False
        self.synchronize = False
        self.profile = False


_settings = _Settings()


# -- RNG tracking -----------------------------------------------------------------------------


def _device_rng_state() -> torch.Tensor:
    return get_accelerator().get_rng_state()


def _set_device_rng_state(state: torch.Tensor) -> None:
    get_accelerator().set_rng_state(state)


class CudaRNGStatesTracker:
    """Named RNG states, forked into for model-parallel regions (Megatron's tracker)."""

    def __init__(self) -> None:
        self.states_: dict[str, torch.Tensor] = {}
        self.seeds_: set[int] = set()

    def reset(self) -> None:
        self.states_ = {}
        self.seeds_ = set()

    def get_states(self) -> dict:
        return dict(self.states_)

    def set_states(self, states: dict) -> None:
        self.states_ = dict(states)

    def add(self, name: str, seed: int) -> None:
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists in the RNG tracker")
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} already exists in the RNG tracker")
        self.seeds_.add(seed)
        orig = _device_rng_state()
        get_accelerator().manual_seed(seed)
        self.states_[name] = _device_rng_state()
        _set_device_rng_state(orig)

    @contextlib.contextmanager
    def fork(self, name: str = _MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise ValueError(f"RNG state {name!r} is not added; call model_parallel_cuda_manual_seed first")
        orig = _device_rng_state()
        _set_device_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = _device_rng_state()
            _set_device_rng_state(orig)


_RNG_TRACKER = CudaRNGStatesTracker()


def get_cuda_rng_tracker() -> CudaRNGStatesTracker:
    return _RNG_TRACKER


def model_parallel_cuda_manual_seed(seed: int) -> None:
    """Seed the default generator with ``seed`` (same on all model-parallel ranks) and the tracker's
    model-parallel state with ``seed + 2718 + model_parallel_rank`` (different per rank)."""
    mpu = _settings.mpu
    mp_rank = mpu.get_model_parallel_rank() if mpu is not None else 0
    _RNG_TRACKER.reset()
    get_accelerator().manual_seed(seed)
    _RNG_TRACKER.add(_MODEL_PARALLEL_RNG_TRACKER_NAME, seed + 2718 + mp_rank)


# -- configuration ----------------------------------------------------------------------------


def _section(deepspeed_config: Any):
    if deepspeed_config is None:
        return None
    if hasattr(deepspeed_config, "activation_checkpointing_config"):
        return deepspeed_config.activation_checkpointing_config
    from deepspeed.runtime.config import DeepSpeedConfig

    return DeepSpeedConfig(deepspeed_config).activation_checkpointing_config


def configure(mpu_, deepspeed_config=None, partition_activations=None, contiguous_checkpointing=None,
              num_checkpoints=None, checkpoint_in_cpu=None, synchronize=None, profile=None) -> None:
    """Set the options; explicit arguments override the config's ``activation_checkpointing``."""
    s = _settings
    s.mpu = mpu_
    sec = _section(deepspeed_config)
    if sec is not None:
        s.partition_activations = sec.partition_activations
        s.contiguous_memory_optimization = sec.contiguous_memory_optimization
        s.num_checkpoints = sec.number_checkpoints
        s.cpu_checkpointing = sec.cpu_checkpointing
        s.synchronize = sec.synchronize_checkpoint_boundary
        s.profile = sec.profile
    for attr, value in (("partition_activations", partition_activations),
                        ("contiguous_memory_optimization", contiguous_checkpointing),
                        ("num_checkpoints", num_checkpoints), ("cpu_checkpointing", checkpoint_in_cpu),
                        ("synchronize", synchronize), ("profile", profile)):
        if value is not None:
            setattr(s, attr, value)
    if s.contiguous_memory_optimization and s.num_checkpoints is None:
        raise ValueError("activation_checkpointing.contiguous_memory_optimization needs number_checkpoints; set it")
    if s.partition_activations and mpu_ is None:
        logger.warning("activation_checkpointing.partition_activations has no effect without an mpu")
    s.configured = True


def is_configured() -> bool:
    return _settings.configured


def reset() -> None:
    """Free buffers kept between checkpoints (none are kept here); the configuration stays."""


def _unconfigure() -> None:
    global _settings
    _settings = _Settings()


# -- the checkpoint function ------------------------------------------------------------------


def _mp(s: _Settings) -> tuple[int, int, Any]:
    if s.mpu is None:
        return 1, 0, None
    return s.mpu.get_model_parallel_world_size(), s.mpu.get_model_parallel_rank(), s.mpu.get_model_parallel_group()


class _Saved:
    """One tensor argument as kept between forward and backward."""

    __slots__ = ("data", "shape", "numel", "device", "requires_grad", "partitioned")

    def __init__(self, t: torch.Tensor, s: _Settings):
        self.shape, self.numel, self.device = t.shape, t.numel(), t.device
        self.requires_grad = t.requires_grad
        data = t.detach()
        world, rank, _ = _mp(s)
        self.partitioned = s.partition_activations and world > 1 and t.is_floating_point()
        if self.partitioned:
            per = -(-self.numel // world)
            flat = data.reshape(-1)
            data = torch.nn.functional.pad(flat, (0, per * world - self.numel))[rank * per:(rank + 1) * per].clone()
        if s.cpu_checkpointing:
            data = data.to("cpu", copy=True)
        self.data = data

    def restore(self, s: _Settings) -> torch.Tensor:
        t = self.data.to(self.device)
        if self.partitioned:
            world, _, group = _mp(s)
            parts = [torch.empty_like(t) for _ in range(world)]
            dist.all_gather(parts, t.contiguous(), group=group)
            t = torch.cat(parts)[: self.numel].view(self.shape)
        t = t.detach()
        t.requires_grad_(self.requires_grad)
        return t


def _rng_snapshot() -> tuple:
    return torch.get_rng_state(), _device_rng_state(), _RNG_TRACKER.get_states()


def _rng_restore(snap: tuple) -> None:
    torch.set_rng_state(snap[0])
    _set_device_rng_state(snap[1])
    _RNG_TRACKER.set_states(snap[2])


class CheckpointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run_function, *args):
        s = _settings
        ctx.run_function = run_function
        ctx.settings = s
        if s.synchronize:
            get_accelerator().synchronize()
        ctx.rng = _rng_snapshot()
        t0 = time.perf_counter()
        with torch.no_grad():
            outputs = run_function(*args)
        if s.profile:
            logger.info(f"activation checkpoint forward: {1e3 * (time.perf_counter() - t0):.3f} ms")
        ctx.saved = [_Saved(a, s) if torch.is_tensor(a) else a for a in args]
        ctx.is_tensor = [torch.is_tensor(a) for a in args]
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        s = ctx.settings
        inputs = [a.restore(s) if isinstance(a, _Saved) else a for a in ctx.saved]
        current = _rng_snapshot()
        _rng_restore(ctx.rng)
        t0 = time.perf_counter()
        try:
            with torch.enable_grad():
                outputs = ctx.run_function(*inputs)
        finally:
            _rng_restore(current)
        if s.profile:
            logger.info(f"activation checkpoint recompute: {1e3 * (time.perf_counter() - t0):.3f} ms")
        if torch.is_tensor(outputs):
            outputs = (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads) if torch.is_tensor(o) and o.requires_grad]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        if s.synchronize:
            get_accelerator().synchronize()
        return (None,) + tuple(inp.grad if is_t else None for inp, is_t in zip(inputs, ctx.is_tensor))


def checkpoint(function, *args):
    """Run ``function(*args)`` without storing its activations; recompute them in backward."""
    return CheckpointFunction.apply(function, *args)


def non_reentrant_checkpoint(function, *args):
    """The non-reentrant variant (``torch.utils.checkpoint`` with ``use_reentrant=False``): works
    when no input requires grad and with ``torch.autograd.grad``."""
    ctx = torch.autograd.graph.save_on_cpu() if _settings.cpu_checkpointing else contextlib.nullcontext()
    with ctx:
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
