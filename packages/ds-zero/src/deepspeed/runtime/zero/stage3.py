"""ZeRO stage 3: ``DeepSpeedZeroOptimizer_Stage3``.

Parameters, gradients and optimizer state are all partitioned. Each parameter keeps only its
slice (``param.ds_tensor``, see ``_gather``); module hooks gather parameters for forward and
backward (``_fetch``). Gradients are reduce-scattered in buckets from post-accumulate-grad hooks
straight into each rank's fp32 gradient slices. The wrapped optimizer steps the fp32 master
slices; the updated values are copied into the ``ds_tensor`` slices, to be gathered on next use.
"""

from __future__ import annotations

import math

import functools
import weakref
from collections import OrderedDict

import torch

import deepspeed.comm as ds_comm
from deepspeed.protocols.optimizer import Fragment
from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler
from deepspeed.runtime.grad_buckets import bucket_numel
from deepspeed.runtime.zero import _ranks
from deepspeed.runtime.zero._fetch import ParameterFetcher
from deepspeed.runtime.zero._grad_collectives import RowReduceScatter
from deepspeed.runtime.zero._nvme import attach_optimizer_swapper
from deepspeed.runtime.zero._memory import (  # noqa: F401 - DeepSpeed's import path
    estimate_zero3_model_states_mem_needs, estimate_zero3_model_states_mem_needs_all_cold,
    estimate_zero3_model_states_mem_needs_all_live)
from deepspeed.runtime.zero._optimizer_base import ZeroOptimizerBase, cfg_get, offload_device, zero_version
from deepspeed.runtime.zero._partitioned_param import (ZeroParamStatus, gather, is_zero_param, partition_param, release,
                                                    wait_inflight)


def _persistent_buffers(module: torch.nn.Module):
    """``named_buffers()`` less those registered with ``persistent=False``."""
    for prefix, mod in module.named_modules():
        for name, buf in mod.named_buffers(recurse=False):
            if buf is not None and name not in mod._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buf


class DeepSpeedZeroOptimizer_Stage3(ZeroOptimizerBase):
    """Wraps a torch optimizer for ZeRO stage 3 on ``module``.

    Parameters not yet partitioned (the model was not built under ``deepspeed.zero.Init``) are
    partitioned here. Attributes DeepSpeed users read: ``fp32_partitioned_groups_flat``,
    ``optimizer``, ``loss_scale``, ``overflow``.
    """

    def __init__(self, module: torch.nn.Module, init_optimizer: torch.optim.Optimizer, param_names=None,
                 timers=None, ds_config=None, static_loss_scale: float = 1.0, dynamic_loss_scale: bool = False,
                 dynamic_loss_args=None, verbose: bool = False, contiguous_gradients: bool = True,
                 reduce_bucket_size: int | None = None, prefetch_bucket_size: int = int(5e7),
                 max_reuse_distance: int = int(1e9), max_live_parameters: int = int(1e9),
                 param_persistence_threshold: int = int(1e5), model_persistence_threshold: int = 2**63 - 1,
                 dp_process_group=None, reduce_scatter: bool = True, overlap_comm: bool = True,
                 offload_optimizer_config=None, offload_param_config=None, sub_group_size: int = int(1e9),
                 mpu=None, clip_grad: float = 0.0, gradient_accumulation_dtype=torch.float32,
                 communication_data_type=None, postscale_gradients: bool = True,
                 gradient_predivide_factor: float = 1.0, gradient_accumulation_steps: int = 1,
                 elastic_checkpoint: bool = False, **unused):
        if not isinstance(init_optimizer, torch.optim.Optimizer):
            raise ValueError(f"DeepSpeedZeroOptimizer_Stage3 wraps a torch.optim.Optimizer; got "
                             f"{type(init_optimizer).__name__}.")
        if offload_device(offload_param_config) == "nvme":
            raise NotImplementedError("zero_optimization.offload_param.device='nvme' (parameters on NVMe) is not "
                                      "implemented by ds-zero yet; use offload_param.device='cpu' (optimizer state "
                                      "can go to NVMe: offload_optimizer.device='nvme').")
        self.module = module
        self.optimizer = init_optimizer
        self.zero_stage = 3
        self.dp_process_group = dp_process_group
        self.partition_count = _ranks.world_size(dp_process_group)
        self.dp_rank = _ranks.rank(dp_process_group)
        self.clip_grad = float(clip_grad or 0.0)
        self.param_names = dict(param_names or {})
        self.overflow = False
        self._global_grad_norm = 0.0
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.is_gradient_accumulation_boundary = True
        # Note: nvme (ZeRO-Infinity) keeps the masters on the host too; their states go to NVMe (_nvme.py).
        self.cpu_offload = offload_device(offload_optimizer_config) in ("cpu", "nvme")
        self.offload_param = offload_device(offload_param_config) == "cpu"
        remote = torch.device("cpu") if self.offload_param else None
        pin = bool(cfg_get(offload_optimizer_config, "pin_memory", False))

        self.fp16_groups: list[list[torch.nn.Parameter]] = []
        self.fp32_partitioned_groups_flat: list[torch.Tensor] = []
        self._lp_flat: list[torch.Tensor] = []
        self._grad_partitions: list[torch.Tensor] = []
        self._grad_slices: dict[int, torch.Tensor] = {}
        self._offsets: list[list[int]] = []
        self._master_is_view: list[bool] = []
        model_dtype = None
        # Note: as in DeepSpeed, each param group is cut into sub-groups of whole parameters holding
        # at least sub_group_size partition elements (the last one less); every sub-group has its
        # own flat buffers, and with offload_optimizer.ratio < 1 the last ratio share of the
        # sub-groups is offloaded while the others stay on the device with a torch Adam/AdamW.
        self.sub_group_size = max(1, int(sub_group_size))
        specs: list[tuple[int, list]] = []
        for gi, group in enumerate(self.optimizer.param_groups):
            params = [p for p in group["params"] if p.requires_grad]
            if not params:
                raise ValueError("DeepSpeedZeroOptimizer_Stage3: a param group has no trainable parameters; drop "
                                 "the group or leave requires_grad=True on its parameters.")
            for p in params:
                partition_param(p, dp_process_group, param_persistence_threshold, remote, src_rank=None)
                p.ds_persist = p.ds_numel <= param_persistence_threshold
                # Note: the engine casts the module (fp16/bf16) after zero.Init partitioned it.
                if p.ds_tensor.dtype != p.dtype:
                    p.ds_tensor = p.ds_tensor.to(p.dtype)
            run, acc = [], 0
            for p in params:
                run.append(p)
                acc += p.ds_tensor.numel()
                if acc >= self.sub_group_size:
                    specs.append((gi, run))
                    run, acc = [], 0
            if run:
                specs.append((gi, run))
        ratio = float(cfg_get(offload_optimizer_config, "ratio", 1.0))
        first_offloaded = int((1.0 - ratio) * len(specs)) if self.cpu_offload else len(specs)
        self.partial_offload = self.cpu_offload and first_offloaded > 0
        if self.partial_offload and type(self.optimizer).__name__ != "DeepSpeedCPUAdam":
            raise NotImplementedError(
                f"zero_optimization.offload_optimizer.ratio={ratio} (partial offload) steps the offloaded sub-groups "
                f"with DeepSpeedCPUAdam and the others with torch's Adam/AdamW, as DeepSpeed does; the optimizer is "
                f"{type(self.optimizer).__name__}. Use an Adam/AdamW optimizer or ratio=1.0.")
        self.subgroup_to_device: dict[int, str] = {}
        self._subgroup_param_group: list[int] = []
        for sg, (gi, params) in enumerate(specs):
            model_dtype = params[0].dtype
            offsets, total = [], 0
            for p in params:
                offsets.append(total)
                total += p.ds_tensor.numel()
            device = params[0].ds_tensor.device
            lp = torch.empty(total, dtype=model_dtype, device=device)
            for p, off in zip(params, offsets):
                lp.narrow(0, off, p.ds_tensor.numel()).copy_(p.ds_tensor)
                p.ds_tensor = lp.narrow(0, off, p.ds_tensor.numel())
            offloaded = self.cpu_offload and sg >= first_offloaded
            master_device = torch.device("cpu") if offloaded else device
            self.subgroup_to_device[sg] = master_device.type
            self._subgroup_param_group.append(gi)
            is_view = lp.dtype == torch.float32 and master_device == device
            master = lp if is_view else lp.detach().to(master_device, torch.float32, copy=True)
            if pin and not is_view and master.device.type == "cpu" and torch.accelerator.is_available():
                master = master.pin_memory()
            grads = torch.zeros(total, dtype=torch.float32, device=master_device)
            for i, (p, off) in enumerate(zip(params, offsets)):
                self._grad_slices[p.ds_id] = grads.narrow(0, off, p.ds_tensor.numel())
                p._zero_optimizer = weakref.ref(self)
                p._zero_index = (len(self.fp16_groups), i)
            self.fp16_groups.append(params)
            self.fp32_partitioned_groups_flat.append(master)
            self._lp_flat.append(lp)
            self._grad_partitions.append(grads)
            self._offsets.append(offsets)
            self._master_is_view.append(is_view)
        # the wrapped optimizer steps the offloaded (or, without partial offload, all) sub-groups
        for gi, group in enumerate(self.optimizer.param_groups):
            group["params"] = [m for sg, m in enumerate(self.fp32_partitioned_groups_flat)
                               if self._subgroup_param_group[sg] == gi
                               and (not self.partial_offload or sg >= first_offloaded)]
        self.optimizer.state.clear()
        self.optimizer_swapper = attach_optimizer_swapper(self.optimizer, offload_optimizer_config,
                                                          unused.get("aio_config", ds_config), self.dp_rank)
        self.backup_optimizer = None
        if self.partial_offload:
            keys = ("lr", "betas", "eps", "weight_decay", "amsgrad")
            cls = torch.optim.AdamW if getattr(self.optimizer, "adamw_mode", True) else torch.optim.Adam
            self.backup_optimizer = cls([
                {**{k: group[k] for k in keys if k in group},
                 "params": [m for sg, m in enumerate(self.fp32_partitioned_groups_flat)
                            if self._subgroup_param_group[sg] == gi and sg < first_offloaded]}
                for gi, group in enumerate(self.optimizer.param_groups)])
        # frozen parameters are partitioned too (their slices are gathered like the others)
        for p in module.parameters():
            if not p.requires_grad:
                partition_param(p, dp_process_group, param_persistence_threshold, remote, src_rank=None)
                p.ds_persist = p.ds_numel <= param_persistence_threshold
        # Note: collectives run on the compute device (NCCL needs device tensors), even when the
        # slices and optimizer state are offloaded to the host.
        self._comm_device = self.fp16_groups[0][0].device
        self.loss_scaler = CreateLossScaler(model_dtype, static_loss_scale, dynamic_loss_scale, dynamic_loss_args)
        self.dynamic_loss_scale = bool(getattr(self.loss_scaler, "dynamic", False))
        self.fetcher = ParameterFetcher(module, prefetch_bucket_size, max_live_parameters, max_reuse_distance)
        self._buckets = RowReduceScatter.reducer(self._grad_slices, bucket_numel(reduce_bucket_size),
                                                 communication_data_type, dp_process_group, self._after_reduce)
        self._hooks = [p.register_post_accumulate_grad_hook(self._grad_ready) for group in self.fp16_groups for p in group]
        # Note: autograd accumulates a gradient by the parameter's current shape and strides. A
        # released parameter (shape [0]) whose value backward never needed (first layer's weight)
        # gets a zero-stride placeholder of its full shape just before its gradient is accumulated.
        self._acc_nodes = []
        for group in self.fp16_groups:
            for p in group:
                # Note: the node records the shape it expects when created; give it the full one.
                saved = p.data
                p.data = torch.empty(1, dtype=p.dtype, device=p.device).expand(p.ds_shape)
                node = p.view_as(p).grad_fn.next_functions[0][0]
                p.data = saved
                self._hooks.append(node.register_prehook(functools.partial(self._before_accumulate, p)))
                self._acc_nodes.append(node)
        release(list(module.parameters()))
        gather([p for p in module.parameters() if is_zero_param(p) and p.ds_persist])

    # Note: param_groups, state, defaults, loss_scale, cur_scale and the global norm come from
    # ZeroOptimizerBase (the torch.optim.Optimizer look-alike integrations rely on).

    # -- backward --------------------------------------------------------------------------------
    def _grad_ready(self, p) -> None:
        grad, p.grad = p.grad, None
        self._buckets.ready(p, grad)

    @staticmethod
    def _before_accumulate(p, grad_outputs):
        if p.ds_status == ZeroParamStatus.INFLIGHT:
            # Note: a prefetch (of a parameter whose value backward never needed, e.g. under TRL's
            # fused LM-head loss) still in flight: finish it, the gradient then accumulates at full
            # shape and the parameter is released once reduced.
            wait_inflight([p])
        if p.ds_status == ZeroParamStatus.NOT_AVAILABLE:
            p.data = torch.empty(1, dtype=p.dtype, device=p.device).expand(p.ds_shape)
            p._zero_placeholder = True
        return None

    def _after_reduce(self, params) -> None:
        for p in params:
            self.fetcher.backward_gathered.pop(p.ds_id, None)
            if getattr(p, "_zero_placeholder", False):
                p._zero_placeholder = False
                p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        release(params)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        (loss.float() * self.loss_scaler.loss_scale).backward(retain_graph=retain_graph)
        self._epilogue()

    def _epilogue(self) -> None:
        self._buckets.flush()
        self.fetcher.release_backward_gathered()

    # -- step ------------------------------------------------------------------------------------
    def step(self, closure=None) -> bool:
        if closure is not None:
            raise ValueError("DeepSpeedZeroOptimizer_Stage3.step(closure=...) is not supported: gradients come "
                             "from the engine's backward; call step() without a closure.")
        self._epilogue()
        scale = self.loss_scaler.loss_scale
        self.overflow = bool(self.dynamic_loss_scale) and self._any_overflow(self._grad_partitions)
        if self.overflow:
            self.loss_scaler.update_scale(True)
            for g in self._grad_partitions:
                g.zero_()
            self._global_grad_norm = float("inf")
            return False
        norm = self._partition_norm(self._grad_partitions) / scale
        self._global_grad_norm = norm
        if not math.isfinite(norm):  # bf16/fp32: skip the step (the engine warns or raises)
            self.overflow = True
            for g in self._grad_partitions:
                g.zero_()
            return False
        self._unscale_clip_step(self.fp32_partitioned_groups_flat, self._grad_partitions, norm, scale)
        if self.backup_optimizer is not None:
            for mine, backup in zip(self.optimizer.param_groups, self.backup_optimizer.param_groups):
                for k in ("lr", "betas", "eps", "weight_decay"):
                    if k in mine and k in backup:
                        backup[k] = mine[k]  # schedules change the wrapped optimizer's groups
            self.backup_optimizer.step()
        for master, lp, is_view, g in zip(self.fp32_partitioned_groups_flat, self._lp_flat, self._master_is_view,
                                          self._grad_partitions):
            master.grad = None
            if not is_view:
                lp.copy_(master)
            g.zero_()
        self._refresh_available()
        self.loss_scaler.update_scale(False)
        return True

    def _refresh_available(self) -> None:
        """Parameters held gathered (persistent ones) get their updated values."""
        live = [p for group in self.fp16_groups for p in group if p.ds_status == ZeroParamStatus.AVAILABLE]
        for p in live:
            # Note: a forward cut short (activation-checkpoint recomputation stops once it has what
            # backward needs) never runs its modules' post-hooks; nothing is active at the step.
            p.ds_active_sub_modules.clear()
        release(live, force=True)
        gather([p for p in live if p.ds_persist])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.fp16_groups:
            for p in group:
                p.grad = None
        self._buckets.flush()
        for g in self._grad_partitions:
            g.zero_()

    def _sync_master_from_param(self, p) -> None:
        """After ``p.ds_tensor`` was rewritten (GatheredParameters), refresh its fp32 master slice."""
        if not p.requires_grad or not hasattr(p, "_zero_index"):
            return
        self._slice(p, self.fp32_partitioned_groups_flat).copy_(p.ds_tensor)


    # -- fragments for deepspeed.utils.safe_get_full_* / safe_get_local_* ----------------------
    def _sources(self, kind: Fragment, key: str | None = None) -> list[torch.Tensor]:
        if kind is Fragment.FP32_PARAM:
            return self.fp32_partitioned_groups_flat
        if kind is Fragment.GRAD:
            self._epilogue()
            return self._grad_partitions
        return self._state_sources(self.fp32_partitioned_groups_flat, key, self.optimizer, self.backup_optimizer)

    def _slice(self, param, flats) -> torch.Tensor:
        g, i = param._zero_index
        return flats[g].narrow(0, self._offsets[g][i], param.ds_tensor.numel())

    def _get_local(self, param, kind: Fragment, key: str | None = None) -> torch.Tensor:
        """This rank's slice of ``param``'s ``kind`` (``ceil(numel / world)`` elements, zero padded)."""
        return self._slice(param, self._sources(kind, key))

    def _get_full(self, param, kind: Fragment, key: str | None = None) -> torch.Tensor:
        local = self._get_local(param, kind, key).detach().to(self._comm_device, torch.float32).contiguous()
        out = torch.empty(local.numel() * self.partition_count, dtype=torch.float32, device=self._comm_device)
        if self.partition_count > 1:
            ds_comm.all_gather_into_tensor(out, local, group=self.dp_process_group)
        else:
            out.copy_(local)
        out = out[: param.ds_numel].view(param.ds_shape)
        return out / self.loss_scaler.loss_scale if kind is Fragment.GRAD else out

    def _set_full(self, param, value: torch.Tensor, kind: Fragment, key: str | None = None) -> None:
        part = param.ds_tensor.numel()
        flat = value.detach().reshape(-1).float()
        lo, hi = min(param.ds_numel, self.dp_rank * part), min(param.ds_numel, (self.dp_rank + 1) * part)
        piece = torch.zeros(part, dtype=torch.float32, device=flat.device)
        piece[: hi - lo] = flat[lo:hi]
        self._set_local(param, piece * (self.loss_scaler.loss_scale if kind is Fragment.GRAD else 1.0), kind, key)

    def _set_local(self, param, value: torch.Tensor, kind: Fragment, key: str | None = None) -> None:
        self._get_local(param, kind, key).copy_(value.reshape(-1))
        if kind is Fragment.FP32_PARAM:
            param.ds_tensor.copy_(value.reshape(-1))
            if param.ds_status == ZeroParamStatus.AVAILABLE:
                self._refresh_available()

    # -- checkpoints -----------------------------------------------------------------------------
    def zero_param_shapes(self) -> list[OrderedDict]:
        shapes = []
        for g, group in enumerate(self.fp16_groups):
            shapes.append(OrderedDict((self.param_names.get(p, f"param_{g}_{k}"), list(p.ds_shape))
                                      for k, p in enumerate(group)))
        return shapes

    def zero_model_states(self, engine) -> dict:
        """This rank's ``zero_pp_rank_<r>_mp_rank_00_model_states.pt`` content."""
        from deepspeed.runtime.zero._checkpoint import shared_params

        frozen = [(n, p) for n, p in self.module.named_parameters() if not p.requires_grad]
        # Note: persistent buffers only, as in state_dict() (and DeepSpeed's checkpoints): a
        # non-persistent one would come back from zero_to_fp32 as a key from_pretrained rejects.
        buffers = OrderedDict((n, b.detach().clone()) for n, b in _persistent_buffers(self.module))
        return {
            "module": buffers, "buffer_names": list(buffers),
            "param_shapes": self.zero_param_shapes(),
            "frozen_param_shapes": OrderedDict((n, list(p.ds_shape)) for n, p in frozen),
            "frozen_param_fragments": OrderedDict((n, p.ds_tensor.detach().clone()) for n, p in frozen),
            "shared_params": shared_params(self.module),
            "ds_feature_zero": {"zero_stage": 3, "param_shapes": self.zero_param_shapes(),
                                "shared_params": shared_params(self.module)},
            "dp_world_size": self.partition_count, "ds_version": zero_version(),
            "ds_config": getattr(engine, "config", None),
        }

    def state_dict(self) -> dict:
        return {
            "zero_stage": 3,
            "loss_scaler": self.loss_scaler.state_dict(),
            "dynamic_loss_scale": self.dynamic_loss_scale,
            "overflow": self.overflow,
            "partition_count": self.partition_count,
            "optimizer_state_dict": self.optimizer.state_dict(),
            "fp32_flat_groups": [m.detach().clone() for m in self.fp32_partitioned_groups_flat],
            "ds_version": zero_version(),
            **({"backup_optimizer_state_dict": self.backup_optimizer.state_dict()}
               if self.backup_optimizer is not None else {}),
        }

    def load_state_dict(self, state_dict_list, load_optimizer_states: bool = True,
                        load_from_fp32_weights: bool = False, checkpoint_folder=None, load_serial=None) -> None:
        if isinstance(state_dict_list, dict):
            state_dict_list = [state_dict_list] * self.partition_count
        saved = int(state_dict_list[0].get("partition_count", len(state_dict_list)))
        if len(state_dict_list) != saved:
            raise ValueError(f"load_state_dict got {len(state_dict_list)} ZeRO-3 shards but they were saved by {saved} "
                             "ranks; pass every zero_pp_rank_* shard of the checkpoint.")
        if saved == self.partition_count:
            own = state_dict_list[self.dp_rank]
            flats = own["fp32_flat_groups"]
            base = own["optimizer_state_dict"]
        else:
            if self.backup_optimizer is not None or "backup_optimizer_state_dict" in state_dict_list[0]:
                raise NotImplementedError(
                    f"loading a ZeRO-3 partial-offload checkpoint (offload_optimizer.ratio < 1) saved by {saved} ranks "
                    f"into {self.partition_count} is not supported; load it with {saved} ranks, or save it with "
                    "ratio=1.0 (then any world size can load it).")
            own = state_dict_list[0]
            flats = [self._reshard([sd["fp32_flat_groups"][g] for sd in state_dict_list], g, saved)
                     for g in range(len(self.fp16_groups))]
            base = self._reshard_base(state_dict_list, saved)
        self.loss_scaler.load_state_dict(own["loss_scaler"])
        self.overflow = own.get("overflow", False)
        if load_optimizer_states:
            self.optimizer.load_state_dict(base)
            if (self.backup_optimizer is not None) != ("backup_optimizer_state_dict" in own):
                raise ValueError("this ZeRO-3 checkpoint was saved with a different offload_optimizer.ratio split "
                                 "(partial offload on one side only); load it with the ratio it was saved with")
            if self.backup_optimizer is not None:
                self.backup_optimizer.load_state_dict(own["backup_optimizer_state_dict"])
        for master, lp, src in zip(self.fp32_partitioned_groups_flat, self._lp_flat, flats):
            master.data.copy_(src.to(master.device, master.dtype))
            if lp.data_ptr() != master.data_ptr():
                lp.copy_(master)
        self._refresh_available()

    def _reshard(self, old_flats: list[torch.Tensor], g: int, old_world: int) -> torch.Tensor:
        """This rank's flat group ``g`` rebuilt from the flats of ``old_world`` ranks.

        Each parameter had ``ceil(numel / old_world)`` elements per old rank; its full value is
        re-split into this world size's slices.
        """
        pieces, off_old = [], 0
        rank = self.dp_rank
        for p in self.fp16_groups[g]:
            n = p.ds_numel
            old_part = -(-n // old_world)
            full = torch.cat([f.reshape(-1).narrow(0, off_old, old_part).float().cpu() for f in old_flats])[:n]
            part = p.ds_tensor.numel()
            mine = torch.zeros(part)
            lo, hi = min(n, rank * part), min(n, (rank + 1) * part)
            mine[: hi - lo] = full[lo:hi]
            pieces.append(mine)
            off_old += old_part
        return torch.cat(pieces)

    def _reshard_base(self, state_dict_list: list[dict], old_world: int) -> dict:
        # Note: elementwise optimizer state (exp_avg, ...) has the flat group's layout; scalars come from shard 0.
        bases = [sd["optimizer_state_dict"] for sd in state_dict_list]
        merged = {"param_groups": bases[0]["param_groups"], "state": {}}
        for idx, st in bases[0]["state"].items():
            old_numel = state_dict_list[0]["fp32_flat_groups"][idx].numel()
            merged["state"][idx] = {
                k: self._reshard([b["state"][idx][k] for b in bases], idx, old_world)
                if torch.is_tensor(v) and v.dim() > 0 and v.numel() == old_numel else v
                for k, v in st.items()}
        return merged

    def weights_partitioned(self) -> bool:
        return True

    def full_state_dict(self, exclude_frozen_parameters: bool = False) -> OrderedDict | None:
        """The full model state dict on rank 0 (None elsewhere), gathered one module at a time."""
        out = OrderedDict()
        for name, module in self.module.named_modules():
            own = list(module.named_parameters(recurse=False))
            params = [p for _, p in own if is_zero_param(p)]
            gather(params)
            if self.dp_rank == 0:
                prefix = f"{name}." if name else ""
                for pname, p in own:
                    if exclude_frozen_parameters and not p.requires_grad:
                        continue
                    out.setdefault(prefix + pname, p.data.detach().clone().cpu())
                for bname, b in module.named_buffers(recurse=False):
                    if b is not None:
                        out[prefix + bname] = b.detach().clone().cpu()
            release(params)
        return out if self.dp_rank == 0 else None

    def destroy(self) -> None:
        self.fetcher.remove()
        for h in self._hooks:
            h.remove()
        self._hooks = []


__all__ = ["DeepSpeedZeroOptimizer_Stage3", "is_zero_param"]
