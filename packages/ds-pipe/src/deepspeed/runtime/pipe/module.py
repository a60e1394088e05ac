"""``PipelineModule``, ``LayerSpec`` and ``TiedLayerSpec`` (DeepSpeed's ``deepspeed.runtime.pipe.module``).

A pipeline model is a list of layers (specs, modules or plain callables). The module splits the
list into contiguous parts, one per stage (``virtual_stages`` parts per rank for the interleaved
schedule: rank ``r`` owns parts ``r, r + p, r + 2p, ...``), and builds only the layers of its own
parts, so each rank holds about its share of the weights. Built layers are registered under their
index in the full list (``"3.weight"``), tied modules under ``tied_modules.<key>``: the state-dict
names are the same for every number of stages.
"""

from __future__ import annotations

import os
import random
import re
from functools import partial

import torch
from torch import nn

import deepspeed.comm as dist
from deepspeed.runtime.activation_checkpointing import checkpointing
from deepspeed.runtime.pipe import _partition
from deepspeed.runtime.pipe.topology import PipeDataParallelTopology, PipelineParallelGrid, ProcessTopology
from deepspeed.utils.logging import logger


def _call_to_str(base, *args, **kwargs) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{base}({', '.join(parts)})"


class LayerSpec:
    """Builds ``typename(*module_args, **module_kwargs)`` when (and where) it is needed."""

    def __init__(self, typename, *module_args, **module_kwargs):
        if not (isinstance(typename, type) and issubclass(typename, nn.Module)):
            raise RuntimeError(f"LayerSpec only supports torch.nn.Module types, got {typename!r}; wrap a function "
                               "in a Module or pass the callable itself as a layer")
        self.typename = typename
        self.module_args = module_args
        self.module_kwargs = module_kwargs
        self.global_rank = dist.get_rank() if dist.is_initialized() else -1

    def __repr__(self) -> str:
        return _call_to_str(self.typename.__name__, *self.module_args, **self.module_kwargs)

    def build(self, log=False) -> nn.Module:
        if log:
            logger.info(f"RANK={self.global_rank} building {repr(self)}")
        return self.typename(*self.module_args, **self.module_kwargs)


class TiedLayerSpec(LayerSpec):
    """A layer whose module (and so the attributes in ``tied_weight_attr``) is shared by every
    occurrence of ``key``; ``forward_fn(module, inputs)`` replaces the module's own forward."""

    def __init__(self, key, typename, *module_args, forward_fn=None, tied_weight_attr=["weight"],  # noqa: B006
                 **module_kwargs):
        super().__init__(typename, *module_args, **module_kwargs)
        self.key = key
        self.forward_fn = forward_fn
        self.tied_weight_attr = [tied_weight_attr] if isinstance(tied_weight_attr, str) else list(tied_weight_attr)


def _layer_name(layer) -> str:
    if isinstance(layer, LayerSpec):
        return layer.typename.__name__
    if isinstance(layer, nn.Module):
        return type(layer).__name__
    return getattr(layer, "__name__", type(layer).__name__)


class PipelineModule(nn.Module):
    """A sequence of layers split over pipeline stages (DeepSpeed's signature and behaviour).

    ``partition_method``: ``"parameters"`` (balance trainable parameter counts, counted on the
    meta device so no rank materialises another stage's layers), ``"uniform"`` (balance layer
    counts), ``"type:<regex>"`` (balance the layers whose class name matches, case-insensitive).
    ``virtual_stages`` (beyond DeepSpeed): model chunks per rank, for ``pipeline.schedule:
    "interleaved"``.
    """

    def __init__(self, layers, num_stages=None, topology=None, loss_fn=None, seed_layers=False, seed_fn=None,
                 base_seed=1234, partition_method="parameters", activation_checkpoint_interval=0,
                 activation_checkpoint_func=checkpointing.checkpoint, checkpointable_layers=None,
                 dynamic_shape=False, virtual_stages=1):
        super().__init__()
        if num_stages is None and topology is None:
            raise ValueError("PipelineModule: pass num_stages=<stages> or topology=<ProcessTopology>")
        self.global_rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        if topology is not None:
            if not isinstance(topology, ProcessTopology):
                raise ValueError(f"PipelineModule: topology={topology!r} is not a ProcessTopology")
            pipe = topology.get_dim("pipe")
            if num_stages is not None and num_stages != pipe:
                raise ValueError(f"PipelineModule: num_stages={num_stages} but the topology has pipe={pipe}; "
                                 "pass one of them")
            num_stages = pipe
        else:
            if not isinstance(num_stages, int) or num_stages < 1:
                raise ValueError(f"PipelineModule: num_stages={num_stages!r} must be a positive integer")
            if self.world_size % num_stages:
                raise ValueError(f"PipelineModule: num_stages={num_stages} does not divide the world size "
                                 f"{self.world_size}; launch a multiple of {num_stages} ranks or change num_stages")
            topology = PipeDataParallelTopology(num_pp=num_stages, num_dp=self.world_size // num_stages)
        if not isinstance(virtual_stages, int) or virtual_stages < 1:
            raise ValueError(f"PipelineModule: virtual_stages={virtual_stages!r} must be a positive integer")
        if activation_checkpoint_interval < 0:
            raise ValueError(f"PipelineModule: activation_checkpoint_interval={activation_checkpoint_interval} "
                             "must be >= 0 (0 disables activation checkpointing)")
        self.num_stages = num_stages
        self.virtual_stages = virtual_stages
        self.loss_fn = loss_fn
        self.seed_layers = seed_layers
        self.seed_fn = seed_fn
        self.base_seed = base_seed
        self.partition_method = partition_method
        self.activation_checkpoint_interval = activation_checkpoint_interval
        self.activation_checkpoint_func = activation_checkpoint_func
        self.checkpointable_layers = checkpointable_layers
        self.dynamic_shape = dynamic_shape
        self.micro_offset = 0

        self._topo = topology
        self._grid = PipelineParallelGrid(topology=topology)
        self.stage_id = self._grid.get_stage_id()
        self._layer_specs = list(layers)
        self._num_layers = len(self._layer_specs)
        if self._num_layers == 0:
            raise ValueError("PipelineModule: layers is empty; pass the list of layers of the model")
        self.parts = self._partition_layers(partition_method)
        self._chunk_ranges = [(self.parts[c * num_stages + self.stage_id], self.parts[c * num_stages + self.stage_id + 1])
                              for c in range(virtual_stages)]
        self._local_start, self._local_stop = self._chunk_ranges[0]
        self.forward_funcs: list = []
        self._chunk_funcs: list[list] = []
        self.tied_modules = nn.ModuleDict()
        self.tied_weight_attrs: dict[str, list] = {}
        self._build()
        self.tied_comms = self._index_tied_modules()
        for key, comm in self.tied_comms.items():
            # DeepSpeed's mark: copies of a tied weight past its first stage do not count twice in norms
            for w in self._tied_weights(key):
                w.ds_pipe_replicated = self.global_rank != min(comm["ranks"])
        self._synchronize_tied_weights()

    # -- partitioning ----------------------------------------------------------------------------

    def _count_layer_params(self) -> list[int]:
        counts = []
        for layer in self._layer_specs:
            if isinstance(layer, LayerSpec):
                with torch.device("meta"):
                    built = layer.build()
                counts.append(sum(p.numel() for p in built.parameters() if p.requires_grad))
            elif isinstance(layer, nn.Module):
                counts.append(sum(p.numel() for p in layer.parameters() if p.requires_grad))
            else:
                counts.append(0)
        return counts

    def _find_layer_type(self, layername: str) -> list[int]:
        regex = re.compile(layername, re.IGNORECASE)
        return [i for i, layer in enumerate(self._layer_specs) if regex.search(_layer_name(layer))]

    def _partition_layers(self, method) -> list[int]:
        parts_count = self.num_stages * self.virtual_stages
        m = str(method).lower()
        if m == "uniform":
            parts = _partition.partition_uniform(self._num_layers, parts_count)
        elif m == "parameters":
            parts = _partition.partition_balanced(self._count_layer_params(), parts_count)
        elif m.startswith("type:"):
            layertype = str(method).split(":", 1)[1]
            matched = set(self._find_layer_type(layertype))
            if not matched:
                raise ValueError(f"PipelineModule: partition_method={method!r} matches no layer (layer types: "
                                 f"{sorted({_layer_name(x) for x in self._layer_specs})}); fix the regular expression")
            parts = _partition.partition_balanced([1 if i in matched else 0 for i in range(self._num_layers)],
                                                  parts_count)
        elif m == "profile":
            raise NotImplementedError("PipelineModule: partition_method='profile' is not implemented (nor in "
                                      "DeepSpeed); use 'parameters', 'uniform' or 'type:<regex>'")
        else:
            raise ValueError(f"PipelineModule: partition_method={method!r} is not one of 'parameters', 'uniform', "
                             "'type:<regex>'")
        empty = [i for i in range(parts_count) if parts[i] == parts[i + 1]]
        if empty:
            what = f"{parts_count} parts ({self.num_stages} stages x {self.virtual_stages} virtual stages)" \
                if self.virtual_stages > 1 else f"{self.num_stages} stages"
            raise ValueError(f"PipelineModule: partition_method={method!r} splits {self._num_layers} layers into "
                             f"{what} as {parts}, which leaves part(s) {empty} without layers; use fewer stages, "
                             "more layers, or partition_method='uniform'")
        return parts

    # -- building --------------------------------------------------------------------------------

    def _seed(self, layer_idx: int) -> None:
        if not self.seed_layers:
            return
        seed = self.base_seed + layer_idx
        if self.seed_fn is not None:
            self.seed_fn(seed)
        else:
            random.seed(seed)
            torch.manual_seed(seed)

    def _build(self) -> None:
        for start, stop in self._chunk_ranges:
            funcs = []
            for idx in range(start, stop):
                layer = self._layer_specs[idx]
                if isinstance(layer, TiedLayerSpec):
                    if layer.key not in self.tied_modules:
                        self._seed(idx)
                        self.tied_modules[layer.key] = layer.build()
                        self.tied_weight_attrs[layer.key] = layer.tied_weight_attr
                    module = self.tied_modules[layer.key]
                    funcs.append(module if layer.forward_fn is None else partial(layer.forward_fn, module))
                elif isinstance(layer, LayerSpec):
                    self._seed(idx)
                    module = layer.build()
                    self.add_module(str(idx), module)
                    funcs.append(module)
                elif isinstance(layer, nn.Module):
                    self.add_module(str(idx), layer)
                    funcs.append(layer)
                elif callable(layer):
                    funcs.append(layer)
                else:
                    raise ValueError(f"PipelineModule: layer {idx} ({layer!r}) is not a LayerSpec, Module or callable")
            self._chunk_funcs.append(funcs)
            self.forward_funcs.extend(funcs)

    # -- tied weights ----------------------------------------------------------------------------

    def _stages_of_key(self, key) -> list[int]:
        owners = set()
        p = self.num_stages
        for v in range(p * self.virtual_stages):
            for idx in range(self.parts[v], self.parts[v + 1]):
                layer = self._layer_specs[idx]
                if isinstance(layer, TiedLayerSpec) and layer.key == key:
                    owners.add(v % p)
        return sorted(owners)

    def _index_tied_modules(self) -> dict:
        """For every tied key held by more than one stage, the group of the ranks holding it (one per
        data/model coordinate; created collectively by every rank, in key order)."""
        keys = sorted({layer.key for layer in self._layer_specs if isinstance(layer, TiedLayerSpec)})
        comms = {}
        topo = self._topo
        others = [a for a in topo.get_axis_names() if a != "pipe"]
        import itertools

        for key in keys:
            stages = self._stages_of_key(key)
            if len(stages) < 2:
                continue
            for point in itertools.product(*(range(topo.get_dim(a)) for a in others)):
                coord = dict(zip(others, point))
                ranks = [topo.get_rank(pipe=s, **coord) for s in stages]
                group = dist.new_group(ranks=ranks) if dist.is_initialized() else None
                if self.global_rank in ranks:
                    comms[key] = {"ranks": ranks, "group": group, "weight_attr": self.tied_weight_attrs[key],
                                  "module": self.tied_modules[key]}
        return comms

    def _tied_weights(self, key) -> list:
        module = self.tied_modules[key]
        out = []
        for attr in self.tied_weight_attrs[key]:
            obj = module
            for part in attr.split("."):
                obj = getattr(obj, part)
            out.append(obj)
        return out

    def _synchronize_tied_weights(self) -> None:
        """Every holder of a tied module takes the first holding stage's weights."""
        for key, comm in self.tied_comms.items():
            for w in self._tied_weights(key):
                with torch.no_grad():
                    dist.broadcast(w.data, src=min(comm["ranks"]), group=comm["group"])

    def allreduce_tied_weight_gradients(self, grad_of=None) -> None:
        """Sum the tied weights' gradients over the stages holding them. ``grad_of(param)`` returns
        the tensor holding a parameter's gradient (default ``param.grad``)."""
        for key, comm in self.tied_comms.items():
            for w in self._tied_weights(key):
                g = grad_of(w) if grad_of is not None else w.grad
                if g is None:
                    g = torch.zeros_like(w)
                    w.grad = g
                dist.all_reduce(g, group=comm["group"])

    def get_tied_weights_and_groups(self) -> list:
        return [(w, comm["group"]) for key, comm in self.tied_comms.items() for w in self._tied_weights(key)]

    # -- forward ---------------------------------------------------------------------------------

    def _is_checkpointable(self, funcs) -> bool:
        if self.checkpointable_layers is not None:
            return all(type(f).__name__ in self.checkpointable_layers for f in funcs)
        params = [f.parameters() for f in funcs if isinstance(f, nn.Module)]
        return any(len(list(p)) > 0 for p in params)

    def forward(self, forward_input, chunk_id: int = 0):
        """Run this rank's layers of chunk ``chunk_id`` (the only chunk unless virtual stages)."""
        funcs = self._chunk_funcs[chunk_id]
        start = self._chunk_ranges[chunk_id][0]
        self.micro_offset += 1

        def exec_range_func(lo, hi):
            def exec_func(*inputs):
                x = inputs[0] if len(inputs) == 1 else inputs
                for f in funcs[lo:hi]:
                    x = f(x)
                return x

            return exec_func

        interval = self.activation_checkpoint_interval
        if interval == 0 or not torch.is_grad_enabled():
            return exec_range_func(0, len(funcs))(forward_input)
        x = forward_input
        for lo in range(0, len(funcs), interval):
            hi = min(lo + interval, len(funcs))
            if self._is_checkpointable(funcs[lo:hi]):
                args = x if isinstance(x, tuple) else (x,)
                x = self.activation_checkpoint_func(exec_range_func(lo, hi), *args)
            else:
                x = exec_range_func(lo, hi)(x)
        del start
        return x

    def chunk_layers(self, chunk_id: int = 0) -> list:
        """``[(global layer index, callable)]`` of chunk ``chunk_id`` on this rank."""
        start, _ = self._chunk_ranges[chunk_id]
        return list(enumerate(self._chunk_funcs[chunk_id], start))

    # -- DeepSpeed's accessors -------------------------------------------------------------------

    def topology(self) -> ProcessTopology:
        return self._topo

    def mpu(self) -> PipelineParallelGrid:
        return self._grid

    def num_pipeline_stages(self) -> int:
        return self.num_stages

    def partitions(self) -> list[int]:
        return list(self.parts)

    def stage_owner(self, layer_idx) -> int:
        if not 0 <= layer_idx < self._num_layers:
            raise ValueError(f"layer_idx={layer_idx} is outside [0, {self._num_layers})")
        for v in range(len(self.parts) - 1):
            if self.parts[v] <= layer_idx < self.parts[v + 1]:
                return v % self.num_stages
        raise RuntimeError(f"layer {layer_idx} is in no partition {self.parts}")

    def _set_bounds(self, start=None, stop=None) -> None:
        self._local_start, self._local_stop = start, stop

    def set_checkpoint_interval(self, interval) -> None:
        if interval < 0:
            raise ValueError(f"activation_checkpoint_interval={interval} must be >= 0")
        self.activation_checkpoint_interval = interval

    # -- checkpoints: one file per layer ---------------------------------------------------------

    def ckpt_prefix(self, checkpoints_path, tag) -> str:
        return os.path.join(checkpoints_path, str(tag))

    def ckpt_layer_path(self, ckpt_dir, local_layer_idx) -> str:
        """``layer_<idx>[-<model coords>]-model_states.pt`` of local layer ``local_layer_idx`` of chunk 0."""
        return self._layer_path(ckpt_dir, local_layer_idx + self._local_start)

    def _layer_path(self, ckpt_dir, layer_idx) -> str:
        rank_repr = self._topo.get_rank_repr(rank=self.global_rank)
        name = f"layer_{layer_idx:02d}" + (f"-{rank_repr}" if rank_repr else "") + "-model_states.pt"
        return os.path.join(ckpt_dir, name)

    def ckpt_layer_path_list(self, ckpt_dir, local_layer_idx) -> list:
        import glob

        idx = local_layer_idx + self._local_start
        return sorted(glob.glob(os.path.join(ckpt_dir, f"layer_{idx:02d}-*model_states.pt")))

    def _saved_layers(self):
        for chunk in range(self.virtual_stages):
            for idx, f in self.chunk_layers(chunk):
                if isinstance(f, nn.Module):
                    yield idx, f

    def save_state_dict(self, save_dir, checkpoint_engine=None, exclude_frozen_params=False) -> None:
        """Write one file per layer of this rank (data-parallel rank 0 only; the others hold copies)."""
        if self._grid.data_parallel_id != 0:
            return
        from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

        ce = checkpoint_engine or TorchCheckpointEngine()
        for idx, layer in self._saved_layers():
            sd = layer.state_dict()
            if exclude_frozen_params:
                frozen = {n for n, p in layer.named_parameters() if not p.requires_grad}
                sd = {k: v for k, v in sd.items() if k not in frozen}
            ce.save({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in sd.items()},
                    self._layer_path(save_dir, idx))

    def load_state_dir(self, load_dir, checkpoint_engine=None, strict=True) -> None:
        """Load every layer of this rank from its file (whatever stage count wrote them), then make
        the tied copies agree."""
        from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

        ce = checkpoint_engine or TorchCheckpointEngine()
        for idx, layer in self._saved_layers():
            path = self._layer_path(load_dir, idx)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"pipeline checkpoint {load_dir} has no file for layer {idx} ({path}); "
                                        "was it saved from a model with the same layers?")
            layer.load_state_dict(ce.load(path, map_location="cpu"), strict=strict)
        self._synchronize_tied_weights()
