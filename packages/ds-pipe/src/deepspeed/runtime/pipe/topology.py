"""Process topologies of pipeline training (DeepSpeed's ``deepspeed.runtime.pipe.topology``).

:class:`ProcessTopology` is a pure grid: named axes, their sizes, ranks laid out with the last axis
varying fastest. :class:`PipelineParallelGrid` turns one into process groups; it does not create
groups of its own but builds ds-core's :class:`~deepspeed.comm.topology.ParallelTopology` (the
groups every engine and ``deepspeed.utils.groups`` use), mapping DeepSpeed's axes ``pipe``,
``data`` and ``model`` onto core's ``pipe``, ``data`` and ``tensor`` dimensions.
"""

from __future__ import annotations

import itertools
import math
from collections import namedtuple
from typing import Any

import deepspeed.comm as dist
from deepspeed.comm import topology as _core_topology

#: DeepSpeed's axis names -> ds-core's dimension names.
_AXIS_TO_DIM = {"pipe": "pipe", "data": "data", "model": "tensor", "tensor": "tensor", "sequence": "sequence"}


class ProcessTopology:
    """Ranks on a grid of ``axes`` with sizes ``dims`` (last axis varies fastest).

    ``ProcessTopology(axes=["pipe", "data"], dims=[2, 4])`` places 8 ranks; rank 5 is
    ``ProcessCoord(pipe=1, data=1)``.
    """

    def __init__(self, axes, dims):
        axes, dims = list(axes), [int(d) for d in dims]
        if len(axes) != len(dims):
            raise ValueError(f"ProcessTopology: axes={axes} and dims={dims} must have the same length")
        if len(set(axes)) != len(axes):
            raise ValueError(f"ProcessTopology: axes={axes} repeat a name; each axis appears once")
        bad = [d for d in dims if d < 1]
        if bad:
            raise ValueError(f"ProcessTopology: dims={dims} must all be >= 1")
        self.axes = axes
        self.dims = dims
        self.ProcessCoord = namedtuple("ProcessCoord", axes)
        self.mapping = {}
        for rank, point in enumerate(itertools.product(*(range(d) for d in dims))):
            self.mapping[self.ProcessCoord(*point)] = rank
        self._coord_of = {r: c for c, r in self.mapping.items()}

    def get_rank(self, **coord_kwargs) -> int:
        """The rank at the given coordinate of every axis."""
        if sorted(coord_kwargs) != sorted(self.axes):
            raise ValueError(f"get_rank needs one coordinate per axis {self.axes}, got {sorted(coord_kwargs)}")
        key = self.ProcessCoord(**coord_kwargs)
        if key not in self.mapping:
            raise ValueError(f"coordinate {coord_kwargs} is outside the topology {dict(zip(self.axes, self.dims))}")
        return self.mapping[key]

    def get_axis_names(self) -> list:
        return list(self.axes)

    def get_rank_repr(self, rank, omit_axes=("data", "pipe"), inner_sep="_", outer_sep="-") -> str:
        """``rank``'s coordinates on the axes not omitted, e.g. ``model_01`` (checkpoint file names)."""
        omit = frozenset(omit_axes)
        coord = self.get_coord(rank)
        return outer_sep.join(f"{ax}{inner_sep}{getattr(coord, ax):02d}" for ax in self.axes if ax not in omit)

    def get_dim(self, axis) -> int:
        """Size of ``axis`` (0 when the topology has no such axis, as in DeepSpeed)."""
        return self.dims[self.axes.index(axis)] if axis in self.axes else 0

    def get_coord(self, rank):
        if rank not in self._coord_of:
            raise ValueError(f"rank {rank} is not in the topology (world size {self.world_size()})")
        return self._coord_of[rank]

    def get_axis_comm_lists(self, axis) -> list:
        """The lists of ranks that differ only along ``axis`` (one per point of the other axes)."""
        if axis not in self.axes:
            return []
        others = [a for a in self.axes if a != axis]
        out = []
        for point in itertools.product(*(range(self.get_dim(a)) for a in others)):
            fixed = dict(zip(others, point))
            out.append([self.get_rank(**fixed, **{axis: i}) for i in range(self.get_dim(axis))])
        return out

    def filter_match(self, **filter_kwargs) -> list:
        """The ranks whose coordinates equal every given one, in rank order."""
        return [r for c, r in sorted(self.mapping.items(), key=lambda kv: kv[1])
                if all(getattr(c, k) == v for k, v in filter_kwargs.items())]

    def get_axis_list(self, axis, idx) -> list:
        """The ranks whose coordinate on ``axis`` is ``idx``."""
        if axis not in self.axes:
            return []
        return self.filter_match(**{axis: idx})

    def world_size(self) -> int:
        return math.prod(self.dims)

    def __str__(self) -> str:
        return str(self.mapping)


class PipeDataParallelTopology(ProcessTopology):
    """Pipeline x data parallelism: axes ``["pipe", "data"]``."""

    def __init__(self, num_pp, num_dp):
        super().__init__(axes=["pipe", "data"], dims=[num_pp, num_dp])


class PipeModelDataParallelTopology(ProcessTopology):
    """Pipeline x data x model (tensor) parallelism: axes ``["pipe", "data", "model"]``."""

    def __init__(self, num_pp, num_mp, num_dp):
        super().__init__(axes=["pipe", "data", "model"], dims=[num_pp, num_dp, num_mp])


def core_sizes(topology: ProcessTopology) -> dict[str, int]:
    """``topology``'s sizes as ds-core dimensions; refuses axes core cannot lay out the same way."""
    unknown = [a for a in topology.axes if a not in _AXIS_TO_DIM]
    if unknown:
        raise NotImplementedError(f"topology axes {unknown} are not pipeline dimensions; the axes are "
                                  f"{sorted(set(_AXIS_TO_DIM))}")
    dims = [_AXIS_TO_DIM[a] for a in topology.axes]
    order = [d for d in _core_topology.DIMS if d in dims]
    if dims != order:
        raise NotImplementedError(f"topology axes {topology.axes} are ordered differently from the process grid "
                                  f"(slowest to fastest: pipe, data, sequence, model); build it as "
                                  f"ProcessTopology(axes={[a for d in order for a in topology.axes if _AXIS_TO_DIM[a] == d]}, ...)")
    return {d: topology.get_dim(a) for a, d in zip(topology.axes, dims)}


class PipelineParallelGrid:
    """The process groups of a pipeline topology (DeepSpeed's names), from ds-core's topology.

    ``grid.get_stage_id()`` is this rank's pipeline stage; data-parallel groups hold the ranks of
    one stage that have the same model-parallel coordinate; the model-parallel group of a rank is
    every rank with its data coordinate (pipe x model). It also serves as the ``mpu`` of the
    pipeline engine.
    """

    def __init__(self, topology: ProcessTopology | None = None, process_group: Any = None):
        self.global_rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        if topology is None:
            # DeepSpeed's default: as many stages as ranks, no data parallelism
            topology = PipeDataParallelTopology(num_pp=self.world_size, num_dp=1)
        if topology.world_size() != self.world_size:
            raise ValueError(f"the pipeline topology {dict(zip(topology.axes, topology.dims))} has "
                             f"{topology.world_size()} ranks but the job has {self.world_size}; launch "
                             f"{topology.world_size()} ranks or change the topology's sizes")
        self._topo = topology
        sizes = core_sizes(topology)
        self.core = _core_topology.ParallelTopology(sizes)
        self.data_parallel_size = max(topology.get_dim("data"), 1)
        self.pipe_parallel_size = max(topology.get_dim("pipe"), 1)
        self.slice_parallel_size = max(topology.get_dim("model"), topology.get_dim("tensor"), 1)
        self.model_parallel_size = self.pipe_parallel_size * self.slice_parallel_size
        coord = topology.get_coord(self.global_rank)
        self.stage_id = getattr(coord, "pipe", 0)
        self.data_parallel_id = getattr(coord, "data", 0)
        self.is_first_stage = self.stage_id == 0
        self.is_last_stage = self.stage_id == self.pipe_parallel_size - 1
        # model parallel = pipe x tensor (ranks sharing the data coordinate)
        if self.slice_parallel_size == 1:
            self._mp_group, self._mp_ranks = self.core.group("pipe"), self.core.group_ranks("pipe")
        else:
            self._mp_group, self._mp_ranks = self.core._new_groups(self.core._all_groups_along("pipe", "tensor"))
        self.ds_model_proc_group = self._mp_group
        self.ds_model_rank = self._mp_ranks.index(self.global_rank)
        self.ds_model_world_size = len(self._mp_ranks)

    # -- DeepSpeed's accessors ---------------------------------------------------------------------

    def topology(self) -> ProcessTopology:
        return self._topo

    def get_stage_id(self) -> int:
        return self.stage_id

    def get_data_parallel_id(self) -> int:
        return self.data_parallel_id

    def stage_to_global(self, stage_id, **kwargs) -> int:
        """The global rank of ``stage_id`` with this rank's other coordinates (``kwargs`` override them)."""
        coord = self._topo.get_coord(self.global_rank)._asdict()
        coord.update(pipe=stage_id, **kwargs)
        return self._topo.get_rank(**coord)

    def get_pipe_parallel_rank(self) -> int:
        return self.stage_id

    def get_pipe_parallel_world_size(self) -> int:
        return self.pipe_parallel_size

    def get_pipe_parallel_group(self):
        return self.core.group("pipe")

    def get_data_parallel_rank(self) -> int:
        return self.data_parallel_id

    def get_data_parallel_world_size(self) -> int:
        return self.data_parallel_size

    def get_data_parallel_group(self):
        return self.core.group("data")

    def get_data_parallel_group_ranks(self) -> list:
        return self.core.group_ranks("data")

    def get_model_parallel_rank(self) -> int:
        return self.ds_model_rank

    def get_model_parallel_world_size(self) -> int:
        return self.ds_model_world_size

    def get_model_parallel_group(self):
        return self._mp_group

    def get_slice_parallel_rank(self) -> int:
        return self.core.rank_in("tensor")

    def get_slice_parallel_world_size(self) -> int:
        return self.slice_parallel_size

    def get_slice_parallel_group(self):
        return self.core.group("tensor")

    # Megatron-style names some integrations call
    get_tensor_model_parallel_rank = get_slice_parallel_rank
    get_tensor_model_parallel_world_size = get_slice_parallel_world_size
    get_tensor_model_parallel_group = get_slice_parallel_group
    get_pipeline_model_parallel_rank = get_pipe_parallel_rank
    get_pipeline_model_parallel_world_size = get_pipe_parallel_world_size
