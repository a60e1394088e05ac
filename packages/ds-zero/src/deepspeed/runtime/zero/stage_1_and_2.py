"""ZeRO stages 1 and 2: ``DeepSpeedZeroOptimizer``.

Stage 1 partitions the optimizer state: each data-parallel rank keeps the fp32 master copy (and the
wrapped optimizer's state) of only its slice of every parameter group. Stage 2 also partitions the
gradients: they are reduce-scattered in buckets from post-accumulate-grad hooks while backward is
still running, and each rank keeps only the fp32 gradients of its slice.

After the wrapped optimizer steps on the local slices, the updated slices are all-gathered back into
the model's parameters, which are views into one flat buffer per group.
"""

from __future__ import annotations

import math

import weakref
from collections import OrderedDict

import torch

import deepspeed.comm as ds_comm
from deepspeed.protocols.optimizer import Fragment
from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler
from deepspeed.runtime.grad_buckets import bucket_numel
from deepspeed.runtime.zero import _ranks
from deepspeed.runtime.zero._flat_layout import FlatLayout
from deepspeed.runtime.zero._grad_collectives import IntervalReduceScatter
from deepspeed.runtime.zero._nvme import attach_optimizer_swapper
from deepspeed.runtime.zero._memory import (  # noqa: F401 - DeepSpeed's import path
    estimate_zero2_model_states_mem_needs, estimate_zero2_model_states_mem_needs_all_cold,
    estimate_zero2_model_states_mem_needs_all_live)
from deepspeed.runtime.zero._optimizer_base import ZeroOptimizerBase, cfg_get, offload_device, zero_version

_DEFAULT_ALLGATHER_BUCKET = int(5e8)


class DeepSpeedZeroOptimizer(ZeroOptimizerBase):
    """Wraps a torch optimizer so it runs ZeRO stage 1 (``partition_grads=False``) or 2.

    The wrapped optimizer (``.optimizer``) keeps its ``param_groups`` dicts (so LR schedulers keep
    working) but each group's ``params`` becomes this rank's fp32 master slice. Only elementwise
    optimizers (Adam, AdamW, SGD, Adagrad, Lion, ...) give the same result as unpartitioned
    training; that is also true of DeepSpeed.
    """

    def __init__(self, init_optimizer: torch.optim.Optimizer, param_names: dict | None = None, timers=None,
                 static_loss_scale: float = 1.0, dynamic_loss_scale: bool = False,
                 dynamic_loss_args: dict | None = None, verbose: bool = False, contiguous_gradients: bool = True,
                 reduce_bucket_size: int | None = None, use_multi_rank_bucket_allreduce: bool = True,
                 allgather_bucket_size: int = _DEFAULT_ALLGATHER_BUCKET, dp_process_group=None,
                 expert_parallel_group=None, expert_data_parallel_group=None, reduce_scatter: bool = True,
                 overlap_comm: bool = False, offload_optimizer_config=None, mpu=None, clip_grad: float = 0.0,
                 gradient_accumulation_dtype: torch.dtype = torch.float32,
                 communication_data_type: torch.dtype | None = None, postscale_gradients: bool = True,
                 gradient_predivide_factor: float = 1.0, gradient_accumulation_steps: int = 1,
                 ignore_unused_parameters: bool = True, partition_grads: bool = True,
                 round_robin_gradients: bool = False, has_moe_layers: bool = False,
                 fp16_master_weights_and_gradients: bool = False, elastic_checkpoint: bool = False,
                 check_grad_overflow: bool = True, **unused):
        if has_moe_layers:
            raise NotImplementedError("DeepSpeedZeroOptimizer: has_moe_layers=True (expert-parallel ZeRO) is not "
                                      "supported yet by ds-zero; train MoE models with zero_optimization.stage=0.")
        if fp16_master_weights_and_gradients:
            raise NotImplementedError("zero_optimization with fp16.fp16_master_weights_and_grads=true is not "
                                      "supported by ds-zero; remove the key to keep fp32 master weights.")
        if gradient_accumulation_dtype not in (None, torch.float32):
            raise NotImplementedError(f"gradient_accumulation_dtype={gradient_accumulation_dtype} is not supported "
                                      "by ds-zero stages 1-2: gradients accumulate in fp32; use fp32.")
        if not isinstance(init_optimizer, torch.optim.Optimizer):
            raise ValueError(f"DeepSpeedZeroOptimizer wraps a torch.optim.Optimizer; got "
                             f"{type(init_optimizer).__name__}. Pass an optimizer built on the model's parameters.")
        self.optimizer = init_optimizer
        self.zero_stage = 2 if partition_grads else 1
        self.partition_gradients = partition_grads
        self.dp_process_group = dp_process_group
        self.partition_count = _ranks.world_size(dp_process_group)
        self.dp_rank = _ranks.rank(dp_process_group)
        self.clip_grad = float(clip_grad or 0.0)
        self.elastic_checkpoint = elastic_checkpoint
        self.overlap_comm = bool(overlap_comm)
        self.contiguous_gradients = contiguous_gradients
        self.reduce_bucket_size = bucket_numel(reduce_bucket_size)
        self.allgather_bucket_size = int(allgather_bucket_size)
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.is_gradient_accumulation_boundary = True
        self._dynamic_loss_args = dynamic_loss_args
        self.check_grad_overflow = check_grad_overflow
        self.overflow = False
        self._global_grad_norm = 0.0
        self.timers = timers
        self.param_names = dict(param_names or {})

        offload = offload_device(offload_optimizer_config)
        # Note: nvme (ZeRO-Infinity) keeps the masters on the host too; their states go to NVMe (_nvme.py).
        self.cpu_offload = offload in ("cpu", "nvme")
        pin = bool(cfg_get(offload_optimizer_config, "pin_memory", False))

        # -- partition every param group -----------------------------------------------------
        self.bit16_groups: list[list[torch.Tensor]] = []
        self.bit16_groups_flat: list[torch.Tensor] = []
        self.single_partition_of_fp32_groups: list[torch.Tensor] = []
        self._layouts: list[FlatLayout] = []
        self._grad_partitions: list[torch.Tensor] = []
        self._master_is_view: list[bool] = []
        for group in self.optimizer.param_groups:
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                raise ValueError("DeepSpeedZeroOptimizer: a param group has no trainable parameters; drop the group "
                                 "or leave requires_grad=True on its parameters.")
            dtypes = {p.dtype for p in params}
            if len(dtypes) > 1:
                raise ValueError(f"DeepSpeedZeroOptimizer: a param group mixes dtypes {sorted(map(str, dtypes))}; "
                                 "cast the model to one dtype (the engine does this for fp16/bf16).")
            device = params[0].device
            model_dtype = params[0].dtype
            layout = FlatLayout(params, self.partition_count)
            flat = layout.flatten_into_buffer(params[0].dtype, device)
            own = flat.narrow(0, self.dp_rank * layout.partition_numel, layout.partition_numel)
            master_device = torch.device("cpu") if self.cpu_offload else device
            # Note: an fp32 model that is not offloaded needs no separate master copy: the optimizer
            # steps the rank's slice of the flat buffer in place (saves 4 bytes per owned element).
            is_view = flat.dtype == torch.float32 and master_device == device
            if is_view:
                master = own
            else:
                master = own.detach().to(master_device, torch.float32, copy=True)
                if pin and master.device.type == "cpu" and torch.accelerator.is_available():
                    master = master.pin_memory()
            grad_part = torch.zeros(layout.partition_numel, dtype=torch.float32, device=master_device)
            group["params"] = [master]
            self.bit16_groups.append(params)
            self.bit16_groups_flat.append(flat)
            self.single_partition_of_fp32_groups.append(master)
            self._layouts.append(layout)
            self._grad_partitions.append(grad_part)
            self._master_is_view.append(is_view)
            for i, p in enumerate(params):
                p._zero_optimizer = weakref.ref(self)
                p._zero_index = (len(self._layouts) - 1, i)
        # Note: collectives run on the compute device (NCCL needs device tensors), even when the
        # fp32 partitions live on the host (offload_optimizer).
        self._comm_device = self.bit16_groups_flat[0].device
        self.loss_scaler = CreateLossScaler(model_dtype, static_loss_scale, dynamic_loss_scale, dynamic_loss_args)
        self.dynamic_loss_scale = bool(getattr(self.loss_scaler, "dynamic", False))
        # Note: optimizer state created before wrapping refers to the old params; start it afresh.
        self.optimizer.state.clear()
        self.optimizer_swapper = attach_optimizer_swapper(self.optimizer, offload_optimizer_config,
                                                          unused.get("aio_config"), self.dp_rank)

        # Note: stage 1 reduces at the step (gradients stay whole until then); stage 2 reduces from
        # backward hooks and overlaps with backward whatever overlap_comm says, as its buckets free
        # gradient memory only once reduced.
        self._reducer = IntervalReduceScatter.reducer(self._layouts, self._grad_partitions, self.reduce_bucket_size,
                                                      communication_data_type, dp_process_group,
                                                      overlap=self.overlap_comm or self.partition_gradients)
        self._hooks = []
        if self.partition_gradients:
            self._hooks = [p.register_post_accumulate_grad_hook(self._reducer.ready)
                           for layout in self._layouts for p in layout.params]

    # Note: param_groups, state, defaults, loss_scale, cur_scale and the global norm come from
    # ZeroOptimizerBase (the torch.optim.Optimizer look-alike integrations rely on).

    # -- backward --------------------------------------------------------------------------------
    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        """Scale ``loss`` by the loss scale, run backward and (stage 2) finish reducing its gradients."""
        (loss.float() * self.loss_scaler.loss_scale).backward(retain_graph=retain_graph)
        if self.partition_gradients:
            self.overlapping_partition_gradients_reduce_epilogue()

    def overlapping_partition_gradients_reduce_epilogue(self) -> None:
        """Stage 2: launch the buckets backward did not fill and wait for every reduction."""
        if self.partition_gradients:
            self._reducer.flush()

    def reduce_gradients(self, pipeline_parallel: bool = False) -> None:
        """Reduce the gradients accumulated in ``param.grad`` into this rank's partition (stage 1)."""
        self._reducer.flush()
        self._stage1_reduced = True

    def _finish_reduction(self) -> None:
        if self.partition_gradients:
            if self._reducer.has_pending():
                self._reducer.flush()
        elif not getattr(self, "_stage1_reduced", False):
            self._reducer.flush()
        self._stage1_reduced = False

    # -- step ------------------------------------------------------------------------------------
    def step(self, closure=None) -> bool:
        """Unscale, clip, step the wrapped optimizer on this rank's slices, then all-gather params."""
        if closure is not None:
            raise ValueError("DeepSpeedZeroOptimizer.step(closure=...) is not supported: gradients come from "
                             "the engine's backward; call step() without a closure.")
        self._finish_reduction()
        scale = self.loss_scaler.loss_scale
        self.overflow = self.dynamic_loss_scale and self.check_grad_overflow and self._any_overflow(self._grad_partitions)
        if self.overflow:
            self.loss_scaler.update_scale(True)
            self._zero_grad_partitions()
            self._global_grad_norm = float("inf")
            return False
        norm = self._partition_norm(self._grad_partitions) / scale
        self._global_grad_norm = norm
        if not math.isfinite(norm):  # bf16/fp32: skip the step (the engine warns or raises)
            self.overflow = True
            self._zero_grad_partitions()
            return False
        self._unscale_clip_step(self.single_partition_of_fp32_groups, self._grad_partitions, norm, scale)
        for master in self.single_partition_of_fp32_groups:
            master.grad = None
        self._zero_grad_partitions()
        self._gather_params()
        self.loss_scaler.update_scale(False)
        return True

    def _gather_params(self) -> None:
        """Write each rank's updated slice into every rank's flat parameter buffer."""
        for g, layout in enumerate(self._layouts):
            flat = self.bit16_groups_flat[g]
            master = self.single_partition_of_fp32_groups[g]
            P = layout.partition_numel
            own = flat.narrow(0, self.dp_rank * P, P)
            if not self._master_is_view[g]:
                own.copy_(master)
            if self.partition_count == 1:
                continue
            chunk = max(1, self.allgather_bucket_size // self.partition_count)
            if chunk >= P:
                ds_comm.all_gather_into_tensor(flat, own, group=self.dp_process_group)
                continue
            # Note: gathering in chunks bounds the temporary buffer to allgather_bucket_size elements.
            for start in range(0, P, chunk):
                n = min(chunk, P - start)
                tmp = flat.new_empty(n * self.partition_count)
                ds_comm.all_gather_into_tensor(tmp, own.narrow(0, start, n), group=self.dp_process_group)
                for r in range(self.partition_count):
                    flat.narrow(0, r * P + start, n).copy_(tmp.narrow(0, r * n, n))

    def _zero_grad_partitions(self) -> None:
        for g in self._grad_partitions:
            g.zero_()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the model's gradients and this rank's reduced gradient partitions."""
        for group in self.bit16_groups:
            for p in group:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()
        if self._reducer.has_pending():
            self._reducer.flush()
        self._zero_grad_partitions()
        self._stage1_reduced = False

    # -- parameter fragments (deepspeed.utils.safe_get_full_* / safe_get_local_*) ---------------
    def _sources(self, kind: Fragment, key: str | None = None) -> list[torch.Tensor]:
        """Per-group partition tensors holding ``kind``: fp32 master, gradient or optimizer state."""
        if kind is Fragment.FP32_PARAM:
            return self.single_partition_of_fp32_groups
        if kind is Fragment.GRAD:
            self._finish_reduction()
            self._stage1_reduced = True
            return self._grad_partitions
        return self._state_sources(self.single_partition_of_fp32_groups, key, self.optimizer)

    def _get_local(self, param, kind: Fragment, key: str | None = None) -> torch.Tensor | None:
        """This rank's 1-D fragment of ``param``'s ``kind`` (None when the rank owns none of it)."""
        g, i = param._zero_index
        hit = self._layouts[g].owned_fragment(i, self.dp_rank)
        if hit is None:
            return None
        return self._sources(kind, key)[g][hit[1].start:hit[1].end]

    def _get_full(self, param, kind: Fragment, key: str | None = None) -> torch.Tensor:
        """The full ``kind`` value of ``param``, assembled from every rank (a collective)."""
        g, i = param._zero_index
        sources = self._sources(kind, key)  # Note: on every rank: it may reduce pending gradients
        full = torch.zeros(param.numel(), dtype=torch.float32, device=self._comm_device)
        hit = self._layouts[g].owned_fragment(i, self.dp_rank)
        if hit is not None:
            pslice, oslice = hit
            full[pslice.start:pslice.end] = sources[g][oslice.start:oslice.end].detach().to(full.device, torch.float32)
        if self.partition_count > 1:
            ds_comm.all_reduce(full, group=self.dp_process_group)
        if kind is Fragment.GRAD:
            full /= self.loss_scaler.loss_scale
        return full.view(param.shape).to(param.device)

    def _set_full(self, param, value: torch.Tensor, kind: Fragment, key: str | None = None) -> None:
        g, i = param._zero_index
        sources = self._sources(kind, key)
        hit = self._layouts[g].owned_fragment(i, self.dp_rank)
        if kind is Fragment.FP32_PARAM:
            with torch.no_grad():
                param.data.copy_(value.reshape(param.shape))
        if hit is not None:
            pslice, oslice = hit
            piece = value.detach().reshape(-1)[pslice.start:pslice.end]
            if kind is Fragment.GRAD:
                piece = piece * self.loss_scaler.loss_scale
            sources[g][oslice.start:oslice.end].copy_(piece)

    def _set_local(self, param, value: torch.Tensor, kind: Fragment, key: str | None = None) -> None:
        local = self._get_local(param, kind, key)
        if local is not None:
            local.copy_(value.reshape(-1))

    # -- checkpoints -----------------------------------------------------------------------------
    def zero_param_shapes(self) -> list[OrderedDict]:
        """Per group, ``{param name: shape}`` in flat order (the model states file's ``param_shapes``)."""
        shapes = []
        for group in self.bit16_groups:
            od = OrderedDict()
            for k, p in enumerate(group):
                od[self.param_names.get(p, f"param_{len(shapes)}_{k}")] = list(p.shape)
            shapes.append(od)
        return shapes

    def state_dict(self) -> dict:
        """This rank's share, in DeepSpeed's ZeRO 1/2 layout (``zero_pp_rank_*_optim_states.pt``)."""
        last = self.dp_rank == self.partition_count - 1
        return {
            "loss_scaler": self.loss_scaler.state_dict(),
            "dynamic_loss_scale": self.dynamic_loss_scale,
            "overflow": self.overflow,
            "clip_grad": self.clip_grad,
            "base_optimizer_state": self.optimizer.state_dict(),
            # Note: clone, since a view would make torch.save write the whole flat buffer.
            "single_partition_of_fp32_groups": [m.detach().clone() for m in self.single_partition_of_fp32_groups],
            "zero_stage": self.zero_stage,
            "group_paddings": [layout.padding if last else 0 for layout in self._layouts],
            "partition_count": [self.partition_count] * len(self._layouts),
            "dp_rank": self.dp_rank,
            "ds_version": zero_version(),
        }

    def load_state_dict(self, state_dict_list, load_optimizer_states: bool = True,
                        load_from_fp32_weights: bool = False, checkpoint_folder=None, load_serial=None) -> None:
        """Load one rank's ``state_dict()`` or the list of every rank's (any former world size)."""
        if isinstance(state_dict_list, dict):
            state_dict_list = [state_dict_list]
        saved_count = state_dict_list[0].get("partition_count", len(state_dict_list))
        saved_count = saved_count[0] if isinstance(saved_count, (list, tuple)) else int(saved_count)
        if len(state_dict_list) == 1 and saved_count == self.partition_count and self.partition_count > 1:
            # Note: one shard of a multi-rank checkpoint is this rank's only if it says so; taking
            # any rank's slice as our own would give every rank the same weights, silently.
            saved_rank = state_dict_list[0].get("dp_rank")
            if saved_rank is None or int(saved_rank) != self.dp_rank:
                raise ValueError(
                    f"load_state_dict got one ZeRO shard of a checkpoint saved by {saved_count} ranks, and it is "
                    + ("not marked with its rank" if saved_rank is None else f"rank {int(saved_rank)}'s")
                    + f" (this is rank {self.dp_rank}); pass every zero_pp_rank_* shard of the checkpoint, in rank order.")
            own = state_dict_list[0]
        elif len(state_dict_list) == saved_count:
            for i, sd in enumerate(state_dict_list):
                if sd.get("dp_rank") is not None and int(sd["dp_rank"]) != i:
                    raise ValueError(f"load_state_dict: shard {i} of the list is rank {int(sd['dp_rank'])}'s; pass "
                                     "every zero_pp_rank_* shard in rank order (0, 1, ...).")
            own = state_dict_list[self.dp_rank] if saved_count == self.partition_count else None
        else:
            raise ValueError(f"load_state_dict got {len(state_dict_list)} ZeRO shards but they were saved by "
                             f"{saved_count} ranks; pass every zero_pp_rank_* shard of the checkpoint.")
        self.loss_scaler.load_state_dict(state_dict_list[0]["loss_scaler"])
        self.dynamic_loss_scale = state_dict_list[0]["dynamic_loss_scale"]
        self.overflow = state_dict_list[0].get("overflow", False)
        self.clip_grad = state_dict_list[0].get("clip_grad", self.clip_grad)
        if load_optimizer_states:
            if own is not None:
                self.optimizer.load_state_dict(own["base_optimizer_state"])
            else:
                self.optimizer.load_state_dict(self._merge_base_state(state_dict_list))
        for g, master in enumerate(self.single_partition_of_fp32_groups):
            if load_from_fp32_weights:
                if own is not None:
                    src = own["single_partition_of_fp32_groups"][g]
                else:
                    src = self._reslice([sd["single_partition_of_fp32_groups"][g] for sd in state_dict_list], g)
                master.data.copy_(src.to(master.device, master.dtype))
            elif not self._master_is_view[g]:
                layout = self._layouts[g]
                P = layout.partition_numel
                master.data.copy_(self.bit16_groups_flat[g].narrow(0, self.dp_rank * P, P))
        self._gather_params()

    def destroy(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def refresh_master_from_model(self) -> None:
        """Copy the model's weights (this rank's slices) into the fp32 masters, after they were loaded."""
        for g, master in enumerate(self.single_partition_of_fp32_groups):
            if not self._master_is_view[g]:
                P = self._layouts[g].partition_numel
                master.data.copy_(self.bit16_groups_flat[g].narrow(0, self.dp_rank * P, P))

    def _reslice(self, partitions: list[torch.Tensor], g: int) -> torch.Tensor:
        """This rank's slice of the flat tensor made by concatenating another world size's partitions."""
        layout = self._layouts[g]
        full = torch.cat([p.reshape(-1).float().cpu() for p in partitions])[:layout.numel]
        padded = torch.zeros(layout.padded_numel)
        padded[:full.numel()] = full
        P = layout.partition_numel
        return padded[self.dp_rank * P:(self.dp_rank + 1) * P].clone()

    def _merge_base_state(self, state_dict_list: list[dict]) -> dict:
        # Note: elementwise state (exp_avg, ...) has one value per element of the partition, so the
        # shards concatenate and re-slice like the fp32 weights; scalars (step) come from shard 0.
        bases = [sd["base_optimizer_state"] for sd in state_dict_list]
        merged = {"param_groups": bases[0]["param_groups"], "state": {}}
        for idx, st in bases[0]["state"].items():
            g = idx
            out = {}
            for key, value in st.items():
                old_numel = state_dict_list[0]["single_partition_of_fp32_groups"][g].numel()
                if torch.is_tensor(value) and value.numel() == old_numel and value.dim() > 0:
                    out[key] = self._reslice([b["state"][idx][key] for b in bases], g)
                else:
                    out[key] = value
            merged["state"][idx] = out
        return merged
