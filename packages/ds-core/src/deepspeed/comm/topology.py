"""``ParallelTopology``: every parallel dimension of a job and its process groups, built once.

Ranks are laid out on a grid of dimensions ``pipe x data x sequence x tensor`` (tensor varying
fastest, then sequence, data, pipe: DeepSpeed's and Megatron's order, so tensor-parallel ranks sit
on one node). Each dimension's group holds the ranks that differ only in that coordinate. Expert
parallelism follows DeepSpeed's layout: within one pipeline stage and tensor-parallel lane (the
sequence dimension counts as data), consecutive ranks form expert-parallel groups of ``ep`` and
the ranks at the same position of those groups form the expert-data-parallel group (``E + D``;
with ``use_data_before_expert_parallelism`` the roles swap: ``D + E``).

Sizes come from the config (``data_parallel_size``, ``sequence_parallel_size``) and the features'
``parallel_dims`` hook (``pipe`` from a pipeline feature, ``tensor`` from tensor parallelism); the
data dimension takes whatever is left of the world. A Megatron-style ``mpu`` supplies its own
groups instead. ``deepspeed.utils.groups`` answers DeepSpeed's names from the current topology.

Groups are created collectively (every rank calls ``new_group`` for every group, in the same
order), when the topology is built, except expert groups, built by :meth:`expert_groups` (which
every rank must call with the same size, as DeepSpeed's MoE layers do).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch.distributed as dist

DIMS = ("pipe", "data", "sequence", "tensor")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def expert_parallel_ranks(world_size: int, tensor_parallel_size: int, expert_parallel_size: int,
                          pipeline_parallel_size: int = 1, use_data_before_expert_parallel: bool = False):
    """``(expert parallel groups, expert data parallel groups)`` as lists of global ranks.

    DeepSpeed's ``_get_expert_parallel_ranks``: data-parallel groups are the ranks of one pipeline
    stage sharing a tensor-parallel position; each is cut into expert-parallel groups of
    ``expert_parallel_size`` (consecutive, or strided with ``use_data_before_expert_parallel``),
    and the ranks at the same position of those groups form an expert-data-parallel group.
    """
    mp = tensor_parallel_size * pipeline_parallel_size
    if world_size % mp:
        raise ValueError(f"world size {world_size} is not divisible by tensor x pipeline parallel size {mp}")
    dp = world_size // mp
    if dp % expert_parallel_size:
        raise ValueError(f"data parallel size {dp} is not divisible by the expert parallel size "
                         f"{expert_parallel_size}; pick an ep_size that divides it")
    stage = world_size // pipeline_parallel_size
    ep_groups, edp_groups = [], []
    for start in range(0, world_size, stage):
        for lane in range(tensor_parallel_size):
            dp_ranks = list(range(start + lane, start + stage, tensor_parallel_size))
            if use_data_before_expert_parallel:
                stride = dp // expert_parallel_size
                parts = [dp_ranks[i::stride] for i in range(stride)]
            else:
                parts = [dp_ranks[i:i + expert_parallel_size] for i in range(0, dp, expert_parallel_size)]
            ep_groups.extend(parts)
            edp_groups.extend(list(col) for col in zip(*parts))
    return ep_groups, edp_groups


class ParallelTopology:
    """The sizes of :data:`DIMS`, this rank's coordinates and the group of each dimension.

    ``sizes``: ``{dim: size}`` for any of :data:`DIMS` except ``data``, which is the world divided
    by the others (or checked against ``sizes["data"]`` when given). Without torch.distributed
    (one process) every size is 1 and every group is None.
    """

    def __init__(self, sizes: dict[str, int] | None = None, world_size: int | None = None, rank: int | None = None,
                 use_data_before_expert_parallel: bool = False, mpu: Any = None):
        sizes = dict(sizes or {})
        unknown = sorted(set(sizes) - set(DIMS))
        if unknown:
            raise ValueError(f"unknown parallel dimension(s) {unknown}; the dimensions are {', '.join(DIMS)}")
        self.distributed = _initialized()
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if self.distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if self.distributed else 0)
        self.use_data_before_expert_parallel = use_data_before_expert_parallel
        self.mpu = mpu
        fixed = {d: int(sizes.get(d, 1)) for d in DIMS if d != "data"}
        for d, s in fixed.items():
            if s < 1:
                raise ValueError(f"parallel dimension '{d}' has size {s}; sizes must be >= 1")
        if mpu is not None:
            fixed["tensor"] = int(mpu.get_model_parallel_world_size())
            if hasattr(mpu, "get_pipeline_model_parallel_world_size"):
                fixed["pipe"] = int(mpu.get_pipeline_model_parallel_world_size())
        others = math.prod(fixed.values())
        if self.world_size % others:
            raise ValueError(
                f"world size {self.world_size} is not divisible by pipe x sequence x tensor = "
                f"{fixed['pipe']} x {fixed['sequence']} x {fixed['tensor']} = {others}")
        data = self.world_size // others
        if "data" in sizes and int(sizes["data"]) != data:
            raise ValueError(f"data_parallel_size={sizes['data']} does not match the world: {self.world_size} ranks "
                             f"/ (pipe x sequence x tensor = {others}) = {data}")
        self.sizes = {"pipe": fixed["pipe"], "data": data, "sequence": fixed["sequence"], "tensor": fixed["tensor"]}
        self.coords = self._coords(self.rank)
        self._groups: dict[str, Any] = {}
        self._ranks: dict[str, list[int]] = {}
        self._expert: dict[str, tuple[Any, list[int], Any, list[int]]] = {}
        self._seq_data = None
        self._seq_data_ranks: list[int] = [self.rank]
        if self.distributed:
            self._build()

    # -- layout ----------------------------------------------------------------------------

    def _coords(self, rank: int) -> dict[str, int]:
        out = {}
        for d in reversed(DIMS):
            out[d] = rank % self.sizes[d]
            rank //= self.sizes[d]
        return out

    def rank_of(self, **coords: int) -> int:
        """The global rank at ``coords`` (missing dimensions: this rank's coordinate)."""
        c = {**self.coords, **coords}
        r = 0
        for d in DIMS:
            r = r * self.sizes[d] + c[d]
        return r

    def ranks_along(self, *dims: str) -> list[int]:
        """The ranks that differ from this one only along ``dims`` (in grid order)."""
        ranges = [range(self.sizes[d]) if d in dims else [self.coords[d]] for d in DIMS]
        return [self.rank_of(**dict(zip(DIMS, point))) for point in itertools.product(*ranges)]

    def _all_groups_along(self, *dims: str) -> list[list[int]]:
        fixed = [d for d in DIMS if d not in dims]
        out = []
        for point in itertools.product(*(range(self.sizes[d]) for d in fixed)):
            base = dict(zip(fixed, point))
            ranges = [range(self.sizes[d]) if d in dims else [base[d]] for d in DIMS]
            out.append([self._flat(dict(zip(DIMS, q))) for q in itertools.product(*ranges)])
        return out

    def _flat(self, c: dict[str, int]) -> int:
        r = 0
        for d in DIMS:
            r = r * self.sizes[d] + c[d]
        return r

    def _new_groups(self, all_ranks: list[list[int]]) -> tuple[Any, list[int]]:
        """Create every group of ``all_ranks`` (collectively); return this rank's and its ranks."""
        if len(all_ranks[0]) == self.world_size:
            return dist.group.WORLD, list(range(self.world_size))
        mine, mine_ranks = None, [self.rank]
        for ranks in all_ranks:
            group = dist.new_group(ranks) if len(ranks) > 1 else None
            if self.rank in ranks:
                mine, mine_ranks = group, ranks
        return mine, mine_ranks

    def _build(self) -> None:
        if self.mpu is not None:
            self._groups["data"] = self.mpu.get_data_parallel_group()
            self._groups["tensor"] = self.mpu.get_model_parallel_group()
            self._ranks["data"] = dist.get_process_group_ranks(self._groups["data"])
            self._ranks["tensor"] = dist.get_process_group_ranks(self._groups["tensor"])
            for name, getter in (("sequence", "get_sequence_parallel_group"), ("pipe", "get_pipe_parallel_group")):
                if hasattr(self.mpu, getter):
                    self._groups[name] = getattr(self.mpu, getter)()
            self._seq_data, self._seq_data_ranks = self._groups["data"], self._ranks["data"]
            return
        for d in DIMS:
            if self.sizes[d] == 1:
                self._groups[d], self._ranks[d] = None, [self.rank]
                continue
            self._groups[d], self._ranks[d] = self._new_groups(self._all_groups_along(d))
        if self.sizes["sequence"] == 1:
            self._seq_data, self._seq_data_ranks = self._groups["data"], self._ranks["data"]
        else:
            self._seq_data, self._seq_data_ranks = self._new_groups(self._all_groups_along("data", "sequence"))

    # -- groups ----------------------------------------------------------------------------

    def group(self, dim: str) -> Any:
        """The process group of ``dim`` this rank belongs to (None when the dimension is 1 wide or
        torch.distributed is not initialised)."""
        if dim not in DIMS:
            raise ValueError(f"unknown parallel dimension {dim!r}; the dimensions are {', '.join(DIMS)}")
        return self._groups.get(dim)

    def group_ranks(self, dim: str) -> list[int]:
        return list(self._ranks.get(dim, [self.rank]))

    def size(self, dim: str) -> int:
        return self.sizes[dim]

    def rank_in(self, dim: str) -> int:
        return self.coords[dim]

    @property
    def data_parallel_group(self) -> Any:
        return self._groups.get("data")

    @property
    def sequence_data_parallel_group(self) -> Any:
        """The ranks that hold copies of the same weights (data x sequence): gradients are reduced here."""
        return self._seq_data

    def sequence_data_parallel_ranks(self) -> list[int]:
        return list(self._seq_data_ranks)

    @property
    def sequence_data_parallel_size(self) -> int:
        return self.sizes["data"] * self.sizes["sequence"]

    def expert_groups(self, ep_size: int) -> tuple[Any, Any]:
        """``(expert parallel group, expert data parallel group)`` for ``ep_size``, created on the
        first call (collectively) and named ``ep_size_<N>`` as in DeepSpeed."""
        name = f"ep_size_{ep_size}"
        if name not in self._expert:
            ep_all, edp_all = expert_parallel_ranks(self.world_size, self.sizes["tensor"], ep_size, self.sizes["pipe"],
                                                    self.use_data_before_expert_parallel)
            if self.distributed:
                ep, ep_ranks = self._new_groups(ep_all)
                edp, edp_ranks = self._new_groups(edp_all)
            else:
                ep, ep_ranks, edp, edp_ranks = None, [0], None, [0]
            self._expert[name] = (ep, ep_ranks, edp, edp_ranks)
        ep, _, edp, _ = self._expert[name]
        return ep, edp

    def expert_group_names(self) -> list[str]:
        return list(self._expert)

    def expert_group_ranks(self, name: str) -> tuple[list[int], list[int]]:
        if name not in self._expert:
            raise KeyError(f"expert parallel group {name!r} is not initialized (known: {self.expert_group_names()})")
        _, ep_ranks, _, edp_ranks = self._expert[name]
        return list(ep_ranks), list(edp_ranks)

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}={self.sizes[d]}" for d in DIMS)
        return f"ParallelTopology({dims}, world_size={self.world_size}, rank={self.rank})"


_current: ParallelTopology | None = None


def set_current(topology: ParallelTopology | None) -> None:
    """Make ``topology`` the one ``deepspeed.utils.groups`` answers from (``initialize`` does)."""
    global _current
    _current = topology


def current() -> ParallelTopology:
    """The engine's topology, or (before ``initialize``) one over the whole world."""
    global _current
    if _current is None or (_initialized() and not _current.distributed):
        _current = ParallelTopology()
    return _current
