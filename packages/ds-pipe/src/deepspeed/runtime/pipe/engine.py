"""``PipelineEngine`` (DeepSpeed's ``deepspeed.runtime.pipe.engine``): trains a
:class:`~deepspeed.runtime.pipe.module.PipelineModule` by executing a schedule's instruction
stream (:mod:`deepspeed.runtime.pipe.schedule`) on every stage.

It is core's :class:`~deepspeed.runtime.engine.DeepSpeedEngine` with three of its documented
protected steps replaced: ``_configure_config`` (the module's grid is the ``mpu``; features that do
not compose with pipeline parallelism refuse through their ``incompatibility`` hook),
``_configure_topology`` (the module's process groups) and the checkpoint module state (one file
per layer). Gradients go through the engine's optimizer driver as in data-parallel training; the
data-parallel reduction waits for the ``ReduceGrads`` instruction at the end of the batch.
"""

from __future__ import annotations

import os
import time

import torch

import deepspeed.comm as dist
from deepspeed.runtime.engine import DeepSpeedEngine
from deepspeed.runtime.pipe import _split_backward, schedule
from deepspeed.runtime.pipe._pipe_checkpoint import load_pipeline_checkpoint
from deepspeed.runtime.pipe.module import PipelineModule
from deepspeed.runtime.pipe.p2p import Transfer, needs_grad
from deepspeed.utils.logging import log_dist, logger


class PipelineError(Exception):
    """Errors related to the use of deepspeed.PipelineEngine."""


def _to_device(x, device, dtype=None):
    def one(t):
        if not torch.is_tensor(t):
            return t
        t = t.to(device)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.detach()

    return tuple(one(t) for t in x) if isinstance(x, (tuple, list)) else one(x)


def _flagged(x) -> list:
    items = x if isinstance(x, tuple) else (x,)
    return [t for t in items if torch.is_tensor(t) and needs_grad(t)]


class PipelineEngine(DeepSpeedEngine):
    """Pipeline-parallel training: ``train_batch()`` runs one batch of
    ``gradient_accumulation_steps`` micro-batches through the stages and steps the optimizer."""

    def __init__(self, *super_args, has_bool_tensors=False, **super_kwargs):
        model = super_kwargs.get("model")
        if not isinstance(model, PipelineModule):
            raise ValueError(f"PipelineEngine needs a PipelineModule, got {type(model).__name__}; build the model "
                             "with deepspeed.pipe.PipelineModule(layers=..., num_stages=...)")
        if super_kwargs.get("mpu") is not None:
            raise ValueError("deepspeed.initialize: mpu must be None for a PipelineModule (its topology defines the "
                             "process groups); remove the mpu argument")
        self._grid = model.mpu()
        self.has_bool_tensors = has_bool_tensors
        super().__init__(*super_args, **super_kwargs)
        self.enable_backward_allreduce = False  # reduced by the ReduceGrads instruction
        self.num_stages = self.module.num_stages
        self.stage_id = self._grid.get_stage_id()
        self.prev_stage, self.next_stage = self.stage_id - 1, self.stage_id + 1
        self.micro_batch_size = self.train_micro_batch_size_per_gpu()
        self.micro_batches = self.gradient_accumulation_steps()
        self.is_pipe_parallel = self.num_stages > 1
        self.is_data_parallel = self._grid.data_parallel_size > 1
        self.is_model_parallel = self._grid.model_parallel_size > 1
        self.data_iterator = None
        self.batch_fn = None
        self.agg_train_loss = None
        self.total_loss = None
        self.loss = None
        self.outputs = None
        self._curr_ckpt_path = None
        self._transfer = Transfer(self.device, dynamic_shape=self.module.dynamic_shape)
        self._schedule_name = self._pipe_config.get("schedule", "1f1b")
        self._check_schedule(self.micro_batches)
        if self.training_dataloader is not None and (self.is_first_stage() or self.is_last_stage()):
            self.set_dataiterator(_repeat(self.training_dataloader))
        self._log_layout()

    # -- construction steps (see DeepSpeedEngine) -----------------------------------------------

    def _configure_config(self, config) -> None:
        self.mpu = self._grid
        super()._configure_config(config)
        cfg = self._config
        # Note: a pipeline is chosen by the model's type, which is_active() cannot see; the
        # pairwise rule of the contract is applied here, at initialize, with each feature's reason.
        for feature in self._features.active(cfg):
            reason = feature.incompatibility("pipe", cfg)
            if reason:
                raise NotImplementedError(f"{reason} ({self._features.distribution_of(feature)} does not compose "
                                          "with ds-pipe's PipelineEngine under this config)")
        self._pipe_config = dict(getattr(cfg, "pipeline", None) or {})

    def _configure_topology(self) -> None:
        from deepspeed.comm import topology as _topology

        grid = self._grid
        self.topology = grid.core
        _topology.set_current(self.topology)
        self.data_parallel_group = grid.get_data_parallel_group()
        self.dp_world_size = grid.data_parallel_size
        self.mp_world_size = grid.model_parallel_size

    def _check_schedule(self, micro_batches: int) -> None:
        name, module, p = self._schedule_name, self.module, self.num_stages
        stages_key = self._pipe_config.get("stages", "auto")
        if stages_key != "auto" and int(stages_key) != p:
            raise ValueError(f"ds_config.pipeline.stages={stages_key} but the PipelineModule has num_stages={p}; "
                             "make them equal or set \"stages\": \"auto\"")
        if name == "interleaved":
            if module.virtual_stages < 2:
                raise ValueError("ds_config.pipeline.schedule=\"interleaved\" needs a model built in chunks: pass "
                                 "PipelineModule(..., virtual_stages=2) (or more)")
            if micro_batches % p:
                raise ValueError(f"ds_config.pipeline.schedule=\"interleaved\" needs a number of micro-batches "
                                 f"divisible by the stages: gradient_accumulation_steps={micro_batches}, stages={p}; "
                                 f"use a multiple of {p}")
        elif module.virtual_stages > 1:
            raise ValueError(f"the PipelineModule is built with virtual_stages={module.virtual_stages}, which only "
                             f"the interleaved schedule runs; set ds_config.pipeline.schedule=\"interleaved\" "
                             f"(it is {name!r}) or build with virtual_stages=1")
        if name == "zero_bubble" and module.activation_checkpoint_interval > 0:
            raise NotImplementedError("ds_config.pipeline.schedule=\"zero_bubble\" with activation_checkpoint_"
                                      f"interval={module.activation_checkpoint_interval}: the split backward keeps each "
                                      "layer's graph; use the 1f1b schedule with activation checkpointing")

    def _log_layout(self) -> None:
        params = sum(p.numel() for p in self.module.parameters())
        ranges = ", ".join(f"[{a}, {b})" for a, b in self.module._chunk_ranges)
        log_dist(f"CONFIG: micro_batches={self.micro_batches} micro_batch_size={self.micro_batch_size} "
                 f"schedule={self._schedule_name}", ranks=[0])
        logger.info(f"RANK={self.global_rank} STAGE={self.stage_id} LAYERS={ranges} STAGE_PARAMS={params} "
                    f"({params / 1e6:0.3f}M)")

    # -- DeepSpeed's public surface -------------------------------------------------------------

    def is_first_stage(self) -> bool:
        return self.stage_id == 0

    def is_last_stage(self) -> bool:
        return self.stage_id == self.num_stages - 1

    def set_dataiterator(self, iterator) -> None:
        """The iterator ``train_batch()`` reads micro-batches ``(inputs, labels)`` from (first and
        last stage; the others never read it)."""
        if self.is_first_stage() or self.is_last_stage():
            self.data_iterator = iterator

    def set_batch_fn(self, fn) -> None:
        """Apply ``fn`` to every batch read from the data iterator."""
        self.batch_fn = fn

    def reset_activation_shape(self) -> None:
        self._transfer.reset_meta()

    def is_gradient_accumulation_boundary(self) -> bool:
        return self._exec_boundary

    _exec_boundary = False

    def forward(self, *args, **kwargs):
        raise PipelineError("Only train_batch() is accessible in pipeline mode.")

    def backward(self, *args, **kwargs):
        raise PipelineError("Only train_batch() is accessible in pipeline mode.")

    def step(self, *args, **kwargs):
        raise PipelineError("Only train_batch() is accessible in pipeline mode.")

    def train_batch(self, data_iter=None):
        """Run one batch (``gradient_accumulation_steps`` micro-batches) and step; returns the loss
        averaged over micro-batches and data-parallel ranks, on every stage."""
        if not torch.is_grad_enabled():
            raise RuntimeError("train_batch() requires gradients enabled. Use eval_batch() instead.")
        if data_iter is not None:
            self.set_dataiterator(data_iter)
        self.module.train()
        self.total_loss = None
        self._training = True
        self.tput_timer.start()
        started = time.perf_counter()
        sched = self._train_schedule(self.micro_batches)
        self._exec_schedule(sched)
        self.agg_train_loss = self._aggregate_total_loss()
        self.tput_timer.stop(global_step=True)
        elapsed = time.perf_counter() - started
        spp = self._steps_per_print
        if spp != float("inf") and self.global_steps % int(spp) == 0:
            log_dist(f"steps: {self.global_steps} loss: {float(self.agg_train_loss):0.4f} iter time (s): "
                     f"{elapsed:0.3f} samples/sec: {self.train_batch_size() / elapsed:0.3f}", ranks=[0])
        return self.agg_train_loss

    def eval_batch(self, data_iter, return_logits=False, compute_loss=True, reduce_output="avg", bcast_loss=True,
                   num_micro_batches=None):
        """Forward ``num_micro_batches`` (default: gradient_accumulation_steps) micro-batches; returns
        the loss (averaged as ``reduce_output`` says, on every stage when ``bcast_loss``) and, with
        ``return_logits``, the last micro-batch's outputs (on the last stage; None elsewhere)."""
        if reduce_output not in (None, "avg"):
            raise ValueError(f"eval_batch: reduce_output={reduce_output!r}; use 'avg' or None")
        micro_batches = self.micro_batches if num_micro_batches is None else int(num_micro_batches)
        if micro_batches < 1:
            raise ValueError(f"eval_batch: num_micro_batches={num_micro_batches} must be >= 1")
        self.module.eval()
        self._training = False
        self._compute_loss = compute_loss
        saved_iter = self.data_iterator
        self.set_dataiterator(data_iter)
        self.total_loss = None
        self._eval_outputs = []
        self._eval_losses = []
        if self.module.virtual_stages > 1:
            sched = _ChunkedInference(micro_batches, self.num_stages, self.stage_id, self.module.virtual_stages)
        else:
            sched = schedule.InferenceSchedule(micro_batches, self.num_stages, self.stage_id)
        with torch.no_grad():
            self._exec_schedule(sched)
        self._compute_loss = True
        result = None
        if self.is_last_stage():
            items = self._eval_losses if compute_loss else self._eval_outputs
            result = self._reduce_outputs(items, reduce_output, micro_batches)
        if compute_loss and bcast_loss:
            result = self._bcast_from_last(result)
        self.data_iterator = saved_iter
        self.module.train()
        # DeepSpeed's: the last micro-batch's outputs (on the last stage)
        self.outputs = self._eval_outputs[-1] if self.is_last_stage() and self._eval_outputs else None
        if return_logits:
            return result, self.outputs
        return result

    # -- schedule execution ----------------------------------------------------------------------

    def _train_schedule(self, micro_batches):
        cls = schedule.TRAIN_SCHEDULES[self._schedule_name]
        if self._schedule_name == "interleaved":
            return cls(micro_batches, self.num_stages, self.stage_id, chunks=self.module.virtual_stages)
        if self.num_stages == 1 and self._schedule_name == "1f1b":
            return schedule.DataParallelSchedule(micro_batches, 1, 0)
        return cls(micro_batches, self.num_stages, self.stage_id)

    def _exec_schedule(self, sched) -> None:
        self._buffers = {}
        self._labels = {}
        self._stashed_labels = []
        self._loads = 0
        cmds = [cmd for step_cmds in sched for cmd in step_cmds]
        recvs = {kind: [i for i, c in enumerate(cmds) if isinstance(c, kind)]
                 for kind in (schedule.RecvActivation, schedule.RecvGrad)}
        posted = {kind: -1 for kind in recvs}  # index of the last receive posted ahead, per kind
        try:
            for i, cmd in enumerate(cmds):
                handler = self._INSTRUCTION_MAP.get(type(cmd))
                if handler is None:
                    raise RuntimeError(f"{type(self).__name__} does not understand {cmd!r}")
                handler(self, cmd)
                self._prefetch(cmds, i, recvs, posted)
        finally:
            self._transfer.wait_all()
        self._buffers = {}
        self._labels = {}

    def _prefetch(self, cmds, i, recvs, posted) -> None:
        """Post the next receive of each kind once the previous one was consumed (at most one ahead:
        bounded memory, and the channel order is kept since receives are posted in stream order)."""
        for kind, idx in recvs.items():
            if posted[kind] > i:
                continue  # one is already waiting
            nxt = next((j for j in idx if j > i), None)
            if nxt is None:
                continue
            cmd = cmds[nxt]
            v = self._virtual(cmd)
            if kind is schedule.RecvActivation:
                ok = self._transfer.prefetch_activations(self._rank_of_virtual(v - 1), v - 1, self._training)
            else:
                buf = self._buffers.get(cmd.buffer_id)
                if buf is None or "outputs" not in buf:
                    continue  # its forward has not run yet
                ok = self._transfer.prefetch_grads(_flagged(buf["outputs"]), self._rank_of_virtual(v + 1), v + 1)
            if ok:
                posted[kind] = nxt

    def _virtual(self, cmd) -> int:
        return getattr(cmd, "chunk_id", 0) * self.num_stages + self.stage_id

    def _last_virtual(self) -> int:
        return self.module.virtual_stages * self.num_stages - 1

    def _rank_of_virtual(self, v: int) -> int:
        return self._grid.stage_to_global(v % self.num_stages)

    def _next_batch(self):
        if self.data_iterator is None:
            raise ValueError("train_batch()/eval_batch(): no data on the first or last stage; pass data_iter=... "
                             "or set_dataiterator(), or give training_data to deepspeed.initialize")
        try:
            batch = next(self.data_iterator)
        except StopIteration:
            raise ValueError("the pipeline's data iterator ran out of micro-batches in the middle of a batch; give "
                             "one that yields at least gradient_accumulation_steps micro-batches per train_batch() "
                             "(deepspeed.utils.RepeatingLoader repeats a loader)") from None
        if self.batch_fn is not None:
            batch = self.batch_fn(batch)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(f"a pipeline micro-batch must be a pair (inputs, labels); got {type(batch).__name__}"
                             + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
        return batch

    def _compute_dtype(self):
        if self.fp16_enabled():
            return torch.float16
        if self.bfloat16_enabled():
            return torch.bfloat16
        return None

    def _exec_load_micro_batch(self, cmd) -> None:
        v = self._virtual(cmd) if hasattr(cmd, "chunk_id") else (0 if self.is_first_stage() else self._last_virtual())
        if hasattr(cmd, "chunk_id") and 0 < v == self._last_virtual() and self.is_first_stage():
            # one rank holds the first and the last virtual stage: the labels came with the inputs
            self._labels[cmd.buffer_id] = self._stashed_labels.pop(0)
            return
        batch = self._next_batch()
        if hasattr(cmd, "chunk_id") and v == 0 and self.is_last_stage() and self._last_virtual() > 0:
            self._stashed_labels.append(_to_device(batch[1], self.device))
        if self.is_first_stage() and (v == 0 or not hasattr(cmd, "chunk_id")):
            inputs = _to_device(batch[0], self.device, self._compute_dtype())
            if self._training and self.module.activation_checkpoint_interval > 0:
                # Note: reentrant checkpointing returns no parameter gradients unless an input needs one.
                inputs = tuple(t.requires_grad_(t.is_floating_point()) if torch.is_tensor(t) else t
                               for t in inputs) if isinstance(inputs, tuple) else inputs.requires_grad_(
                                   inputs.is_floating_point())
            self._buffers[cmd.buffer_id] = {"inputs": inputs}
        if self.is_last_stage() and (v == self._last_virtual() or not hasattr(cmd, "chunk_id")):
            self._labels[cmd.buffer_id] = _to_device(batch[1], self.device)
        self._loads += 1

    def _exec_recv_activations(self, cmd) -> None:
        v = self._virtual(cmd)
        inputs = self._transfer.recv_activations(self._rank_of_virtual(v - 1), v - 1, self._training)
        self._buffers[cmd.buffer_id] = {"inputs": inputs[0] if len(inputs) == 1 else inputs}

    def _exec_send_activations(self, cmd) -> None:
        v = self._virtual(cmd)
        buf = self._buffers[cmd.buffer_id]
        self._transfer.send_activations(buf["outputs"], self._rank_of_virtual(v + 1), v, self._training)
        if not self._training:
            del self._buffers[cmd.buffer_id]

    def _exec_forward_pass(self, cmd) -> None:
        buf = self._buffers[cmd.buffer_id]
        chunk = getattr(cmd, "chunk_id", 0)
        v = self._virtual(cmd)
        if self._training and self._schedule_name == "zero_bubble":
            outputs, buf["records"] = _split_backward.forward(self.module.chunk_layers(chunk), buf["inputs"],
                                                              self._stage_params())
        else:
            if self._autocast:
                with torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype):
                    outputs = self.module(buf["inputs"], chunk_id=chunk)
            else:
                outputs = self.module(buf["inputs"], chunk_id=chunk)
        buf["outputs"] = outputs
        if v != self._last_virtual():
            return
        if not self._training and not self._compute_loss:
            self._eval_outputs.append(outputs)
            return
        loss = self._loss(outputs, self._labels.pop(cmd.buffer_id, None))
        buf["loss"] = loss
        if not self._training:
            self._eval_outputs.append(outputs)
            self._eval_losses.append(loss.detach())
            return
        self.total_loss = loss.detach().clone() if self.total_loss is None else self.total_loss + loss.detach()

    def _loss(self, outputs, labels):
        fn = self.module.loss_fn
        if fn is not None:
            return fn(outputs, labels)
        if torch.is_tensor(outputs) and outputs.numel() == 1:
            return outputs  # DeepSpeed: a model whose last layer computes the loss
        shape = tuple(outputs.shape) if torch.is_tensor(outputs) else f"a {type(outputs).__name__}"
        raise ValueError(f"the last pipeline stage has no loss_fn and its output is {shape}, not a scalar loss; "
                         "pass PipelineModule(..., loss_fn=<fn(outputs, labels)>) or end the model with a layer "
                         "that returns the loss")

    def _stage_params(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _exec_recv_grads(self, cmd) -> None:
        v = self._virtual(cmd)
        buf = self._buffers[cmd.buffer_id]
        buf["grads"] = self._transfer.recv_grads(_flagged(buf["outputs"]), self._rank_of_virtual(v + 1), v + 1)

    def _exec_send_grads(self, cmd) -> None:
        v = self._virtual(cmd)
        buf = self._buffers[cmd.buffer_id]
        self._transfer.send_grads(buf.pop("input_grads"), self._rank_of_virtual(v - 1), v)
        if buf.get("done"):
            del self._buffers[cmd.buffer_id]

    def _input_grads(self, inputs) -> list:
        return [t.grad if t.grad is not None else torch.zeros_like(t) for t in _flagged(inputs)]

    def _exec_backward_pass(self, cmd) -> None:
        buf = self._buffers[cmd.buffer_id]
        if self._wall_clock:
            self.timers("backward_microstep").start()
        if "loss" in buf:
            DeepSpeedEngine.backward(self, buf["loss"])
        else:
            outs = _flagged(buf["outputs"])
            if outs:
                torch.autograd.backward(outs, list(buf["grads"]))
        if self._wall_clock:
            self.timers("backward_microstep").stop()
        self._finish_backward(cmd, buf, self._input_grads(buf["inputs"]))

    def _finish_backward(self, cmd, buf, input_grads, done=True) -> None:
        buf.pop("outputs", None)
        buf.pop("grads", None)
        buf.pop("loss", None)
        if self._virtual(cmd) > 0:
            buf["input_grads"] = input_grads
        buf["done"] = done
        if done and self._virtual(cmd) == 0:
            del self._buffers[cmd.buffer_id]

    def _exec_backward_input_pass(self, cmd) -> None:
        buf = self._buffers[cmd.buffer_id]
        params = self._stage_params()
        if "loss" in buf:
            gas = self.gradient_accumulation_steps()
            scale = self._driver.loss_scale / gas
            if self.monitor is not None:
                self._monitor_loss = buf["loss"].detach()
            outs = _flagged(buf["outputs"])
            grads = torch.autograd.grad(buf["loss"] * scale, outs, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, outs)]
        else:
            grads = list(buf["grads"])
        input_grads = _split_backward.backward_input(buf["records"], grads, params)
        self._finish_backward(cmd, buf, input_grads, done=False)

    def _exec_backward_weight_pass(self, cmd) -> None:
        buf = self._buffers[cmd.buffer_id]
        _split_backward.backward_weight(buf.pop("records"), self._stage_params())
        buf["done"] = True
        if "input_grads" not in buf:
            del self._buffers[cmd.buffer_id]

    def _grad_of(self, param):
        reducer = self.reducer
        if reducer is not None:
            reducer.ensure_views()
            if reducer.accumulating:
                return reducer.views[reducer.order.index(param)]
        return param.grad

    def _exec_reduce_tied_grads(self, cmd) -> None:
        self.module.allreduce_tied_weight_gradients(grad_of=self._grad_of)

    def _exec_reduce_grads(self, cmd) -> None:
        self._exec_boundary = True
        self._driver.reduce_gradients()

    def _clip_over_pipeline(self, max_norm: float) -> None:
        """Clip by the norm of the whole model (every stage's gradients, tied copies counted once)
        before the optimizer's own clipping, which then sees a norm within bounds and does nothing."""
        from deepspeed.runtime.utils import clip_coefficient

        reducer = self.reducer
        reducer.ensure_views()
        sq = torch.zeros((), dtype=torch.float32, device=self.device)
        for p, view in zip(reducer.order, reducer.views):
            if not getattr(p, "ds_pipe_replicated", False):
                sq += view.float().pow(2).sum()
        dist.all_reduce(sq, group=self._grid.get_model_parallel_group())
        norm = sq.sqrt() / self._driver.loss_scale
        if not torch.isfinite(norm):
            return  # fp16 overflow: the optimizer skips the step
        coef = clip_coefficient(norm, max_norm)
        for flat in reducer.flats:
            flat.mul_(coef.to(flat.dtype))

    def _exec_optimizer_step(self, cmd) -> None:
        clip = self.gradient_clipping()
        if clip > 0 and self.is_pipe_parallel:
            if self.reducer is None:
                raise NotImplementedError("gradient_clipping with a pipeline and ZeRO: the norm over every stage "
                                          "is not implemented for ZeRO's partitions; remove gradient_clipping or "
                                          "ZeRO")
            self._clip_over_pipeline(clip)
        self._take_model_step(None)
        self._exec_boundary = False
        self.micro_steps += self.micro_batches
        self._report_progress()

    _INSTRUCTION_MAP = {
        schedule.OptimizerStep: _exec_optimizer_step,
        schedule.ReduceGrads: _exec_reduce_grads,
        schedule.ReduceTiedGrads: _exec_reduce_tied_grads,
        schedule.LoadMicroBatch: _exec_load_micro_batch,
        schedule.ForwardPass: _exec_forward_pass,
        schedule.BackwardPass: _exec_backward_pass,
        schedule.BackwardInputPass: _exec_backward_input_pass,
        schedule.BackwardWeightPass: _exec_backward_weight_pass,
        schedule.SendActivation: _exec_send_activations,
        schedule.RecvActivation: _exec_recv_activations,
        schedule.SendGrad: _exec_send_grads,
        schedule.RecvGrad: _exec_recv_grads,
    }

    # -- losses ----------------------------------------------------------------------------------

    def _bcast_from_last(self, value):
        """``value`` (a tensor on the last stage) on every stage of this pipeline."""
        if not self.is_pipe_parallel:
            return value
        src = self._grid.stage_to_global(self.num_stages - 1)
        t = value.detach().clone().float().reshape(1) if self.is_last_stage() else torch.zeros(1, device=self.device)
        dist.broadcast(t, src=src, group=self._grid.get_pipe_parallel_group())
        return t.reshape(())

    def _aggregate_total_loss(self):
        loss = None
        if self.is_last_stage():
            loss = self.total_loss / self.micro_batches
            if self.is_data_parallel:
                loss = loss.detach().clone().float()
                dist.all_reduce(loss, group=self.data_parallel_group)
                loss /= self.dp_world_size
        return self._bcast_from_last(loss).detach()

    def _reduce_outputs(self, outputs, reduce, micro_batches):
        if reduce is None or not outputs:
            return outputs
        if torch.is_tensor(outputs[0]):
            reduced = sum(o.float() for o in outputs) / micro_batches
            if self.is_data_parallel:
                dist.all_reduce(reduced, group=self.data_parallel_group)
                reduced /= self.dp_world_size
            return reduced
        reduced = [sum(o[i].float() for o in outputs) / micro_batches for i in range(len(outputs[0]))]
        if self.is_data_parallel:
            for t in reduced:
                dist.all_reduce(t, group=self.data_parallel_group)
                t /= self.dp_world_size
        return reduced

    # -- checkpoints -----------------------------------------------------------------------------

    def module_state_dict(self, destination=None, prefix="", keep_vars=False, exclude_frozen_parameters=False):
        """While saving a checkpoint: writes one file per layer and returns an empty dict (the
        layers are not in the model-states file). Otherwise: this rank's layers, named by their
        index in the full model."""
        if self._curr_ckpt_path is not None:
            self.module.save_state_dict(self._curr_ckpt_path, checkpoint_engine=self.checkpoint_engine,
                                        exclude_frozen_params=exclude_frozen_parameters)
            return {}
        return super().module_state_dict(destination, prefix, keep_vars, exclude_frozen_parameters)

    def load_module_state_dict(self, checkpoint, strict=True, custom_load_fn=None, fetch_z3_params=False):
        if self._curr_ckpt_path is None or custom_load_fn is not None:
            return super().load_module_state_dict(checkpoint, strict, custom_load_fn, fetch_z3_params)
        self.module.load_state_dir(self._curr_ckpt_path, checkpoint_engine=self.checkpoint_engine, strict=strict)
        self._driver.refresh_master_from_model()

    def save_checkpoint(self, save_dir, tag=None, client_state={}, save_latest=True,  # noqa: B006 - DeepSpeed's
                        exclude_frozen_parameters=False):
        tag = f"global_step{self.global_steps}" if tag is None else str(tag)
        self._curr_ckpt_path = os.path.join(save_dir, tag)
        try:
            return super().save_checkpoint(save_dir, tag, client_state, save_latest, exclude_frozen_parameters)
        finally:
            self._curr_ckpt_path = None

    def load_checkpoint(self, load_dir, tag=None, load_module_strict=True, load_optimizer_states=True,
                        load_lr_scheduler_states=True, load_module_only=False, custom_load_fn=None):
        return load_pipeline_checkpoint(self, super().load_checkpoint, load_dir, tag, load_module_strict,
                                        load_optimizer_states, load_lr_scheduler_states, load_module_only,
                                        custom_load_fn)


class _ChunkedInference(schedule._PassSchedule):
    """Forwards only over virtual stages: micro-batch by micro-batch, chunk by chunk."""

    def __init__(self, micro_batches, stages, stage_id, chunks):
        super().__init__(micro_batches, stages, stage_id)
        self.chunks = chunks

    def _passes(self):
        return [("F", mb, c) for mb in range(self.micro_batches) for c in range(self.chunks)]

    def _streams(self):
        steps, peak = super()._streams()
        if steps:
            steps[-1] = [c for c in steps[-1] if not isinstance(c, (schedule.ReduceTiedGrads, schedule.ReduceGrads,
                                                                    schedule.OptimizerStep))]
        return steps, peak


def _repeat(loader):
    while True:
        yield from loader
