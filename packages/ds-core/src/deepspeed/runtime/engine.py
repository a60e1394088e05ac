"""``DeepSpeedEngine``: the training engine (docs/architecture.md, "Features and the engine").

The engine owns the training loop's bookkeeping (gradient accumulation, LR schedules, counters,
checkpoints, progress logs) and talks to exactly one
:class:`~deepspeed.protocols.optimizer.EngineOptimizer` for everything that touches gradients:
its own :class:`~deepspeed.runtime._data_parallel.DataParallelOptimizer`, or the one a feature's
``wrap_optimizer`` hook returned (ZeRO). It calls features only through their hooks
(:mod:`deepspeed.protocols.feature`, composed by :mod:`deepspeed._features`) and never names one.

Extending the engine (a subclass such as a pipeline engine): the constructor runs these protected
steps in this order, and a subclass may override any of them (call ``super()`` to keep the default):

=================================  ==================================================================
step                               default
=================================  ==================================================================
``_init_distributed(required)``    adopt or start torch.distributed (launcher environment)
``_configure_config(config)``      parse the ds_config (:class:`DeepSpeedConfig`), comms logger
``_configure_topology()``          ``self.topology``: the process groups of every dimension
``_configure_model(model)``        features' ``transform_model`` chain, then move/cast, broadcast
``_configure_optimizer(params)``   basic optimizer, features' ``wrap_optimizer`` chain, and the
                                   engine's data-parallel optimizer when no feature took over
``_configure_lr_scheduler()``      config or client schedule
``_configure_dataloader()``        ``training_data`` -> ``self.training_dataloader``
``_configure_checkpointing()``     checkpoint engine (feature or default), activation checkpointing
``_configure_monitoring()``        timers, throughput, flops profiler, monitors
=================================  ==================================================================

In the loop, ``forward``, ``backward`` and ``step`` are public; ``_take_model_step(lr_kwargs)`` is
the boundary step (optimizer, schedule, counters) a subclass may wrap.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from typing import Any

import torch

import deepspeed.comm as ds_comm
from deepspeed.accelerator import get_accelerator
from deepspeed.comm import topology as _topology
from deepspeed.protocols.optimizer import EngineOptimizer
from deepspeed.runtime import _engine_checkpoint
from deepspeed.runtime._data_parallel import DataParallelOptimizer
from deepspeed.runtime._grad_reduce import GradientReducer
from deepspeed.runtime._optim_factory import build_optimizer
from deepspeed.runtime._precision_choice import engine_precision_optimizer
from deepspeed.runtime._step_guard import StepGuard
from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler
from deepspeed.runtime.lr_schedules import _build_schedule
from deepspeed.utils.logging import log_dist, logger

#: Type hints DeepSpeed exposes for ``initialize``'s callables.
DeepSpeedOptimizerCallable = Any
DeepSpeedSchedulerCallable = Any

_ACCUM_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _is_optimizer(obj: Any) -> bool:
    return isinstance(obj, torch.optim.Optimizer) or hasattr(obj, "param_groups")


def init_distributed_from_env(dist_init_required) -> bool:
    """Start torch.distributed when a launcher's environment says so (unless the caller said
    ``dist_init_required=False``); True when a process group exists afterwards."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and dist_init_required is not False:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ or "OMPI_COMM_WORLD_RANK" in os.environ \
                or "PMI_RANK" in os.environ:
            ds_comm.init_distributed()
        else:
            logger.info("torch.distributed is not initialized and no launcher environment was found: "
                        "training in a single process without a process group")
    return ds_comm.is_initialized()


class DeepSpeedEngine(torch.nn.Module):
    """Wraps ``model`` for data-parallel training driven by a ds_config.

    Build it through :func:`deepspeed.initialize`. The training loop is::

        loss = engine(batch)        # forward
        engine.backward(loss)       # scales by 1/GAS, reduces gradients at the boundary
        engine.step()               # clip, optimizer and LR step at the boundary
    """

    def __init__(self, args=None, model=None, optimizer=None, model_parameters=None, training_data=None,
                 lr_scheduler=None, mpu=None, dist_init_required=None, collate_fn=None, config=None,
                 config_class=None, dont_change_device=False, features=None):
        super().__init__()
        if model is None:
            raise ValueError("deepspeed.initialize: model is None; pass the torch.nn.Module to train")
        from deepspeed import _features

        if features is None:
            features = _features.installed()
        elif not isinstance(features, _features.FeatureSet):
            features = _features.FeatureSet.from_features(*features)
        self._features = features
        self.args = args
        self.mpu = mpu
        self.client_optimizer = optimizer
        self.client_lr_scheduler = lr_scheduler
        self.training_data = training_data
        self.collate_fn = collate_fn
        self.global_steps = 0
        self.global_samples = 0
        self.micro_steps = 0
        self.skipped_steps = 0
        self.gradient_average = True
        self.warn_unscaled_loss = True
        self.loaded_checkpoint_dp_world_size = None
        self._is_gradient_accumulation_boundary = None
        self._no_sync = False
        self._global_grad_norm = None
        self.enable_backward_allreduce = True
        self._step_guard = StepGuard()

        self._init_distributed(dist_init_required)
        self._configure_config(config_class if config_class is not None else config)
        self._configure_topology()
        self._configure_model(model, dont_change_device)
        self._configure_optimizer(model_parameters)
        self.lr_scheduler = self._configure_lr_scheduler()
        self._configure_dataloader()
        self._configure_checkpointing()
        self._configure_monitoring()
        self._step_guard = StepGuard(getattr(getattr(self._config, "model", None), "nonfinite_gradients", "skip"))
        from deepspeed.version import __version__

        log_dist(f"DeepSpeed info: version={__version__}, git-hash=unknown, git-branch=unknown", ranks=[0])

    # -- construction (protected steps; see the module docstring) ------------------------------

    def _init_distributed(self, dist_init_required) -> None:
        self._dist = init_distributed_from_env(dist_init_required)
        self.global_rank = ds_comm.get_rank() if self._dist else 0
        self.world_size = ds_comm.get_world_size() if self._dist else 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    def _configure_config(self, config) -> None:
        from deepspeed.runtime.config import DeepSpeedConfig

        if not isinstance(config, DeepSpeedConfig):
            config = DeepSpeedConfig(config, self.mpu, features=self._features)
        self._config = config
        self.config = config._param_dict
        if "comms_logger" in self.config:
            ds_comm.configure(deepspeed_config=config)

    @property
    def reducer(self):
        """The engine's gradient reducer (flat buffers, buckets) when the engine's own data-parallel
        optimizer drives training; None when a feature's optimizer does."""
        return getattr(self._driver, "reducer", None) if hasattr(self, "_driver") else None

    @property
    def ds_config(self):
        """The parsed config (:class:`deepspeed.runtime.config.DeepSpeedConfig`), what features read."""
        return self._config

    def _configure_topology(self) -> None:
        cfg = self._config
        sizes = {"sequence": int(cfg.sequence_parallel_size or 1), **self._features.parallel_dims(cfg)}
        self.topology = _topology.ParallelTopology(
            sizes, use_data_before_expert_parallel=bool(cfg.use_data_before_expert_parallel_), mpu=self.mpu)
        _topology.set_current(self.topology)
        if self.mpu is not None:
            self.data_parallel_group = self.mpu.get_data_parallel_group()
            self.dp_world_size = self.mpu.get_data_parallel_world_size()
            self.mp_world_size = self.mpu.get_model_parallel_world_size()
        else:
            self.data_parallel_group = self.topology.sequence_data_parallel_group
            self.dp_world_size = self.topology.sequence_data_parallel_size
            self.mp_world_size = self.topology.size("tensor")

    def _configure_model(self, model, dont_change_device: bool = False) -> None:
        self.module = self._features.transform_model(model, self._config)
        # Note: the accelerator names the device of a local rank ("cpu" for every rank on CPU).
        self.device = torch.device(get_accelerator().device_name(self.local_rank))
        if not dont_change_device:
            self.module.to(self.device)
        if self.fp16_enabled():
            self.module.half()
        elif self.bfloat16_enabled():
            self.module.bfloat16()
        self.gradient_groups = self._features.gradient_groups(self)
        if self._dist and self.dp_world_size > 1:
            src = ds_comm.get_global_rank(self.data_parallel_group, 0) if self.mpu is not None else 0
            # Note: a gradient group's parameters differ between its shards: each is broadcast
            # over its own group only (from that group's source rank).
            grouped = {id(p): gg for gg in self.gradient_groups for p in gg.params}
            with torch.no_grad():
                for t in list(self.module.parameters()) + list(self.module.buffers()):
                    gg = grouped.get(id(t))
                    if gg is None:
                        ds_comm.broadcast(t.data, src, group=self.data_parallel_group)
                    elif gg.group is not None:
                        ds_comm.broadcast(t.data, gg.src_rank, group=gg.group)

    def _model_parameters(self, model_parameters) -> list:
        if model_parameters is None:
            return [p for p in self.module.parameters() if p.requires_grad]
        return list(model_parameters)

    def _configure_basic_optimizer(self, model_parameters):
        cfg = self._config
        if self.client_optimizer is not None and cfg.optimizer_name is not None:
            raise ValueError(
                f"deepspeed.initialize: an optimizer was passed and ds_config.optimizer.type={cfg.optimizer_name!r} "
                "is set; use one of them (remove the optimizer block or the optimizer argument)"
            )
        if self.client_optimizer is not None:
            if _is_optimizer(self.client_optimizer):
                logger.info(f"Using client Optimizer as basic optimizer: {type(self.client_optimizer).__name__}")
                return self.client_optimizer
            if callable(self.client_optimizer):
                opt = self.client_optimizer(self._model_parameters(model_parameters))
                logger.info(f"Using client callable to create basic optimizer: {type(opt).__name__}")
                return opt
            raise ValueError(f"optimizer={self.client_optimizer!r} is neither an Optimizer nor a callable(params)")
        if cfg.optimizer_name is None:
            return None
        params = self._model_parameters(model_parameters)
        if not params:
            return None
        host = self._features.optimizer_device(cfg) == "cpu"
        opt = build_optimizer(cfg.optimizer_name, cfg.optimizer_params, params, host_optimizer=host, engine=self)
        logger.info(f"Using DeepSpeed Optimizer param name {cfg.optimizer_name} as basic optimizer: {type(opt).__name__}")
        return opt

    def _configure_optimizer(self, model_parameters) -> None:
        """The basic optimizer, the features' ``wrap_optimizer`` chain, then the engine's own
        data-parallel optimizer unless a feature returned an EngineOptimizer."""
        self._grad_clip = float(self._config.gradient_clipping or 0.0)
        basic = self._configure_basic_optimizer(model_parameters)
        self.basic_optimizer = basic
        wrapped = self._features.wrap_optimizer(self, basic) if basic is not None else None
        if isinstance(wrapped, EngineOptimizer):
            self._driver = wrapped
            self.optimizer = wrapped
            return
        if wrapped is not None:
            self.basic_optimizer = basic = wrapped
        self._driver = self._data_parallel_optimizer(basic)
        self.optimizer = self._driver.public

    def _data_parallel_optimizer(self, basic) -> DataParallelOptimizer:
        reducer = self._gradient_reducer()
        precision = None
        separate = False
        if basic is not None and (self.fp16_enabled() or self.bfloat16_enabled()):
            if reducer is None or len(reducer.flats) != 1:
                raise NotImplementedError("fp16/bf16 without ZeRO needs every trainable parameter in one dtype")
            cfg = self._config
            if self.fp16_enabled():
                scaler = CreateLossScaler(torch.half, cfg.loss_scale, cfg.loss_scale == 0, cfg.dynamic_loss_scale_args)
            else:
                scaler = CreateLossScaler(torch.bfloat16, 1.0, False, None)
            precision = engine_precision_optimizer(basic, reducer.order, reducer.flats[0], scaler,
                                                clip_grad=self._grad_clip, check_overflow=self.fp16_enabled())
            if reducer.gradient_groups:
                precision.norm_fn = lambda g: reducer.global_norm([g])  # sharded parameters count once each
            separate = self.bfloat16_enabled()
        separate = separate or bool(getattr(basic, "per_rank_state", False))
        return DataParallelOptimizer(basic, reducer, precision, clip_grad=self._grad_clip,
                                     named_params=list(self.module.named_parameters()), separate_rank_file=separate)

    def _gradient_reducer(self) -> GradientReducer | None:
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            return None
        cfg = self._config
        # Note: like DeepSpeed's bf16 optimizer, bf16 gradients accumulate in fp32 (unless
        # data_types.grad_accum_dtype says otherwise); fp16 ones in fp16.
        accum = cfg.grad_accum_dtype
        accum_dtype = _ACCUM_DTYPES.get(accum) if isinstance(accum, str) else accum
        if accum_dtype is None and self.bfloat16_enabled():
            accum_dtype = torch.float32
        return GradientReducer(
            params, group=self.data_parallel_group, world_size=self.dp_world_size if self._dist else 1,
            bucket_numel=cfg.reduce_bucket_size, predivide=float(cfg.gradient_predivide_factor or 1.0),
            prescale=bool(cfg.prescale_gradients), comm_dtype=cfg.communication_data_type,
            average=cfg.gradient_allreduce_op != "sum", accum_dtype=accum_dtype,
            gradient_groups=getattr(self, "gradient_groups", ()),
        )

    def _configure_lr_scheduler(self):
        cfg = self._config
        opt = self.basic_optimizer
        if cfg.scheduler_name is not None and opt is not None:
            sched = _build_schedule(cfg.scheduler_name, opt, cfg.scheduler_params)
            log_dist(f"DeepSpeed using configured LR scheduler = {cfg.scheduler_name}", ranks=[0])
            return sched
        if self.client_lr_scheduler is None:
            return None
        if callable(self.client_lr_scheduler) and not hasattr(self.client_lr_scheduler, "step"):
            return self.client_lr_scheduler(opt)
        return self.client_lr_scheduler

    def _configure_dataloader(self) -> None:
        data = self.training_data
        self.training_dataloader = self.deepspeed_io(data) if data is not None else None

    def _configure_checkpointing(self) -> None:
        from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

        engine = self._features.checkpoint_engine(self._config)
        self.checkpoint_engine = engine or TorchCheckpointEngine(self.config.get("checkpoint"))
        if "activation_checkpointing" in self.config:
            from deepspeed.runtime.activation_checkpointing import checkpointing

            checkpointing.configure(self.mpu, deepspeed_config=self._config)

    def _configure_monitoring(self) -> None:
        from deepspeed.utils.timer import NoopTimer, SynchronizedWallClockTimer, ThroughputTimer

        cfg = self._config
        self._autocast = bool(cfg.torch_autocast_enabled)
        self._autocast_dtype = cfg.torch_autocast_dtype or torch.bfloat16
        self._fp16_auto_cast = bool(cfg.fp16_enabled and cfg.fp16_auto_cast)
        self._wall_clock = bool(cfg.wall_clock_breakdown)
        self._steps_per_print = cfg.steps_per_print
        spp = None if self._steps_per_print == float("inf") else int(self._steps_per_print)
        self.timers = SynchronizedWallClockTimer() if self._wall_clock else NoopTimer()
        tput = cfg.timers_config.throughput
        # Note: the throughput timer synchronizes the device at each reading; with nothing to
        # print (steps_per_print inf and no terminal for the progress bar) it is switched off so
        # the training step has no sync points.
        quiet = spp is None and not (getattr(sys.stdout, "isatty", lambda: False)() and self.global_rank == 0)
        self.tput_timer = ThroughputTimer(types.SimpleNamespace(enabled=tput.enabled and not quiet,
                                                                synchronized=tput.synchronized),
                                          batch_size=self.train_batch_size(), steps_per_output=spp,
                                          monitor_memory=False)
        fp = cfg.flops_profiler_config
        self.flops_profiler = None
        self._flops_step = None
        if fp is not None and fp.enabled:
            from deepspeed.profiling.flops_profiler import FlopsProfiler

            self.flops_profiler = FlopsProfiler(self.module, ds_engine=self, recompute_fwd_factor=fp.recompute_fwd_factor)
            self._flops_step = fp.profile_step
        self._monitor_loss = None
        from deepspeed.monitor.monitor import MonitorMaster

        # Note: an enabled monitor that cannot start (its package missing, an unwritable path) is an
        # error here, naming the monitor and the fix: training silently without logs is worse.
        mon = MonitorMaster(cfg.monitor_config)
        self.monitor = mon if mon.enabled else None

    # -- config accessors (DeepSpeed's names) -------------------------------------------------

    def train_batch_size(self) -> int:
        return self._config.train_batch_size

    def train_micro_batch_size_per_gpu(self) -> int:
        return self._config.train_micro_batch_size_per_gpu

    def gradient_accumulation_steps(self) -> int:
        return self._config.gradient_accumulation_steps

    def set_train_batch_size(self, train_batch_size: int) -> None:
        per_step = self.train_micro_batch_size_per_gpu() * self.dp_world_size
        if train_batch_size % per_step:
            raise ValueError(f"train_batch_size={train_batch_size} is not divisible by micro batch x data parallel "
                             f"size = {per_step}")
        self._config.gradient_accumulation_steps = train_batch_size // per_step
        self._config.train_batch_size = train_batch_size

    def set_train_micro_batch_size(self, micro_batch_size: int) -> None:
        self._config.train_micro_batch_size_per_gpu = micro_batch_size
        self._config.train_batch_size = micro_batch_size * self.gradient_accumulation_steps() * self.dp_world_size

    def fp16_enabled(self) -> bool:
        return bool(self._config.fp16_enabled)

    def bfloat16_enabled(self) -> bool:
        return bool(self._config.bfloat16_enabled)

    bf16_enabled = bfloat16_enabled

    def zero_optimization(self) -> bool:
        return self.zero_optimization_stage() > 0

    def zero_optimization_stage(self) -> int:
        """DeepSpeed's name: the partitioning stage of the optimizer that drives training."""
        return int(self._driver.zero_stage)

    def gradient_clipping(self) -> float:
        return self._grad_clip

    def steps_per_print(self):
        return self._config.steps_per_print

    def wall_clock_breakdown(self) -> bool:
        return bool(self._config.wall_clock_breakdown)

    def dynamic_loss_scale(self) -> bool:
        return self.fp16_enabled() and self._config.loss_scale == 0

    def postscale_gradients(self) -> bool:
        return not self._config.prescale_gradients

    def gradient_predivide_factor(self) -> float:
        return self._config.gradient_predivide_factor

    def communication_data_type(self):
        return self._config.communication_data_type

    def get_data_parallel_world_size(self) -> int:
        return self.dp_world_size

    # -- training loop --------------------------------------------------------------------

    def flops_profiler_enabled(self) -> bool:
        return self.flops_profiler is not None

    def forward(self, *inputs, **kwargs):
        if self.module.training and not self.tput_timer.started:
            self.tput_timer.start()
        if self._flops_step is not None and self.global_steps == self._flops_step and self.global_rank == 0 \
                and not self.flops_profiler.started:
            self.flops_profiler.start_profile(ignore_list=None)
        if self._wall_clock:
            self.timers("fwd_microstep").start()
            try:
                return self._forward(inputs, kwargs)
            finally:
                self.timers("fwd_microstep").stop()
        return self._forward(inputs, kwargs)

    def _forward(self, inputs, kwargs):
        if self._fp16_auto_cast:
            inputs = tuple(t.half() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs)
        if self._autocast:
            with torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype):
                return self.module(*inputs, **kwargs)
        return self.module(*inputs, **kwargs)

    def is_gradient_accumulation_boundary(self) -> bool:
        if self._is_gradient_accumulation_boundary is None:
            return (self.micro_steps + 1) % self.gradient_accumulation_steps() == 0
        return self._is_gradient_accumulation_boundary

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        """Override the boundary computed from ``micro_steps`` (integrations call it every step)."""
        self._is_gradient_accumulation_boundary = is_boundary

    @contextlib.contextmanager
    def no_sync(self):
        """Skip the gradient reduction of the backward passes inside (accumulate locally)."""
        reason = self._driver.no_sync_refusal()
        if reason:
            raise NotImplementedError(reason)
        prev, self._no_sync = self._no_sync, True
        try:
            yield
        finally:
            self._no_sync = prev

    def backward(self, loss: torch.Tensor, retain_graph: bool = False, scale_wrt_gas: bool = True):
        """Backward of ``loss`` (divided by GAS when ``scale_wrt_gas``), with the data-parallel
        gradient reduction overlapped when this micro-step ends an accumulation window."""
        gas = self.gradient_accumulation_steps()
        scaled = loss / gas if scale_wrt_gas and gas > 1 else loss
        if self.monitor is not None:
            self._monitor_loss = loss.detach()
        driver = self._driver
        driver.set_gradient_accumulation_boundary(
            self.enable_backward_allreduce and not self._no_sync and self.is_gradient_accumulation_boundary())
        if self._wall_clock:
            self.timers("bwd_microstep").start()
        self._step_guard.note_backward()
        try:
            driver.backward(scaled, retain_graph=retain_graph)
        finally:
            if self._wall_clock:
                self.timers("bwd_microstep").stop()
        return loss

    def allreduce_gradients(self, bucket_size=None) -> None:
        """Reduce the gradients now (for gradients computed without ``engine.backward``)."""
        self._step_guard.note_backward()
        self._driver.reduce_gradients()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients: ``.grad`` becomes None (``set_to_none``, the default) or zeros."""
        self._driver.zero_grad(set_to_none)

    def _take_model_step(self, lr_kwargs) -> None:
        driver = self._driver
        applied = driver.step() if driver.optimizer is not None else (driver.zero_grad(), True)[1]
        self._global_grad_norm = driver.global_grad_norm()
        if not applied:
            self.skipped_steps += 1
            self._step_guard.check_skipped(self.global_steps, self._global_grad_norm, self.fp16_enabled())
        else:
            self._features.after_step(self)
            if self.lr_scheduler is not None:
                self.lr_scheduler.step(**(lr_kwargs or {}))
        self.global_steps += 1
        self.global_samples += self.train_batch_size()

    def step(self, lr_kwargs=None) -> None:
        """At a gradient-accumulation boundary: clip, step the optimizer and the LR schedule, zero
        the gradients. ``micro_steps`` advances on every call that follows a backward; a call
        without one changes nothing (:mod:`deepspeed.runtime._step_guard`)."""
        if self._step_guard.no_gradients(self.module, self.global_steps):
            return
        self._step_guard.stepped()
        boundary = self.is_gradient_accumulation_boundary()
        profiling = self._flops_step is not None and self.global_steps == self._flops_step and self.global_rank == 0
        if self._wall_clock:
            self.timers("step_microstep").start()
        if boundary:
            self._take_model_step(lr_kwargs)
        if self._wall_clock:
            self.timers("step_microstep").stop()
        self.tput_timer.stop(global_step=boundary)
        if boundary:
            if profiling and self.flops_profiler.started:
                fp = self._config.flops_profiler_config
                self.flops_profiler.stop_profile()
                self.flops_profiler.print_model_profile(profile_step=self._flops_step, module_depth=fp.module_depth,
                                                        top_modules=fp.top_modules, detailed=fp.detailed,
                                                        output_file=fp.output_file)
                self.flops_profiler.end_profile()
            self._report_progress()
        self.micro_steps += 1

    def _report_progress(self) -> None:
        if self.monitor is not None and self.global_rank == 0:
            events = [("Train/Samples/lr", self.get_lr()[0], self.global_samples)]
            if self._monitor_loss is not None:
                events.append(("Train/Samples/train_loss", float(self._monitor_loss), self.global_samples))
            if self.fp16_enabled():
                events.append(("Train/Samples/loss_scale", self._driver.loss_scale, self.global_samples))
            self.monitor.write_events(events)
        spp = self._steps_per_print
        if spp == float("inf") or self.global_steps % int(spp):
            return
        log_dist(f"step={self.global_steps}, skipped={self.skipped_steps}, lr={self.get_lr()}, mom={self.get_mom()}",
                 ranks=[0])
        if self._wall_clock:
            self.timers.log(["fwd_microstep", "bwd_microstep", "step_microstep"])

    # -- state ----------------------------------------------------------------------------

    def get_lr(self) -> list:
        opt = self.basic_optimizer or self.optimizer
        return [g["lr"] for g in opt.param_groups] if opt is not None else []

    def get_mom(self) -> list:
        opt = self.basic_optimizer or self.optimizer
        if opt is None:
            return []
        return [g.get("betas", g.get("momentum")) for g in opt.param_groups]

    def get_type(self) -> list:
        opt = self.basic_optimizer or self.optimizer
        return [type(opt).__name__] if opt is not None else []

    def get_global_grad_norm(self):
        """Global L2 norm of the last step's gradients (None when nothing computed it)."""
        n = self._global_grad_norm
        return float(n) if torch.is_tensor(n) else n

    def was_step_applied(self) -> bool:
        return not bool(self._driver.overflow)

    def deepspeed_io(self, dataset, batch_size=None, route=None, pin_memory=True, data_sampler=None,
                     collate_fn=None, num_local_io_workers=None):
        from deepspeed.runtime.dataloader import DeepSpeedDataLoader

        if not isinstance(dataset, torch.utils.data.Dataset):
            raise ValueError(f"training_data must be a torch.utils.data.Dataset, got {type(dataset).__name__}")
        if self.mpu is not None:
            rank = self.mpu.get_data_parallel_rank()
        else:
            rank = ds_comm.get_rank(self.data_parallel_group) if self._dist else 0
        return DeepSpeedDataLoader(
            dataset, batch_size=batch_size or self.train_micro_batch_size_per_gpu(), pin_memory=pin_memory,
            collate_fn=collate_fn or self.collate_fn, num_local_io_workers=num_local_io_workers,
            data_sampler=data_sampler, data_parallel_world_size=self.dp_world_size, data_parallel_rank=rank,
            dataloader_drop_last=self._config.dataloader_drop_last,
        )

    def module_state_dict(self, destination=None, prefix="", keep_vars=False, exclude_frozen_parameters=False):
        sd = self.module.state_dict(destination=destination, prefix=prefix, keep_vars=keep_vars)
        if exclude_frozen_parameters:
            frozen = {n for n, p in self.module.named_parameters() if not p.requires_grad}
            sd = type(sd)((k, v) for k, v in sd.items() if k not in frozen)
        return sd

    def load_module_state_dict(self, checkpoint, strict=True, custom_load_fn=None, fetch_z3_params=False):
        sd = checkpoint["module"] if "module" in checkpoint else checkpoint
        if custom_load_fn is not None:
            custom_load_fn(src=sd, dst=self.module)
        else:
            self.module.load_state_dict(sd, strict=strict)
        self._driver.refresh_master_from_model()

    def zero_gather_16bit_weights_on_model_save(self) -> bool:
        """DeepSpeed's name: whether ``save_16bit_model`` gathers partitioned weights."""
        section = getattr(self._config, "zero_config", None)
        return bool(getattr(section, "gather_16bit_weights_on_model_save", False))

    def _consolidated_16bit_state_dict(self, exclude_frozen_parameters=False):
        """The full module state dict (gathered on rank 0 when weights are partitioned)."""
        if self._driver.weights_partitioned():
            return self._driver.full_state_dict(exclude_frozen_parameters=exclude_frozen_parameters)
        return self.module_state_dict(exclude_frozen_parameters=exclude_frozen_parameters)

    def _zero3_consolidated_16bit_state_dict(self, exclude_frozen_parameters=False):
        """ZeRO-3: the full state dict gathered on rank 0 (None on the other ranks); a collective."""
        if not self._driver.weights_partitioned():
            raise ValueError("_zero3_consolidated_16bit_state_dict needs zero_optimization.stage=3 "
                             f"(stage is {self.zero_optimization_stage()}); use module_state_dict() instead")
        return self._driver.full_state_dict(exclude_frozen_parameters=exclude_frozen_parameters)

    def save_16bit_model(self, save_dir, save_filename="pytorch_model.bin", exclude_frozen_parameters=False) -> bool:
        """Save the module's weights (in their training dtype) to ``<save_dir>/<save_filename>`` on rank 0."""
        if self._driver.weights_partitioned() and not self.zero_gather_16bit_weights_on_model_save():
            logger.warning("Did not save the model because zero_optimization.stage3_gather_16bit_weights_on_model_save "
                           "is false: under ZeRO-3 every rank holds only a slice of each weight. Set it to true, or "
                           "save_checkpoint() and consolidate with zero_to_fp32.")
            return False
        sd = self._consolidated_16bit_state_dict(exclude_frozen_parameters=exclude_frozen_parameters)
        if self.global_rank == 0:
            os.makedirs(save_dir, exist_ok=True)
            self.checkpoint_engine.save({k: v.detach().clone() for k, v in sd.items()},
                                        os.path.join(save_dir, save_filename))
        if self._dist:
            ds_comm.barrier()
        return True

    save_fp16_model = save_16bit_model

    def save_checkpoint(self, save_dir, tag=None, client_state={}, save_latest=True,  # noqa: B006 - DeepSpeed's signature
                        exclude_frozen_parameters=False):
        """Save ``<save_dir>/<tag>/`` (default tag ``global_step<N>``) and point ``latest`` at it."""
        return _engine_checkpoint.save(self, save_dir, tag, client_state, save_latest, exclude_frozen_parameters)

    def load_checkpoint(self, load_dir, tag=None, load_module_strict=True, load_optimizer_states=True,
                        load_lr_scheduler_states=True, load_module_only=False, custom_load_fn=None):
        """Load ``<load_dir>/<tag>`` (tag from ``latest`` when None); returns ``(path, client_state)``
        or ``(None, None)`` when there is nothing to load."""
        return _engine_checkpoint.load(self, load_dir, tag, load_module_strict, load_optimizer_states,
                                       load_lr_scheduler_states, load_module_only, custom_load_fn)

    def destroy(self) -> None:
        """Release hooks and buffers; the engine is unusable afterwards."""
        self._driver.destroy()

    def compile(self, backend=None, compile_kwargs=None, **kwargs) -> None:
        """``torch.compile`` the wrapped module in place."""
        if backend is None:
            acc = get_accelerator()
            backend = acc.get_compile_backend() if hasattr(acc, "get_compile_backend") else "inductor"
        self.module.compile(backend=backend, **(compile_kwargs or {}))
