"""``deepspeed.utils.groups``: DeepSpeed's process-group accessors, answered from the engine's
:class:`~deepspeed.comm.topology.ParallelTopology` (``deepspeed.initialize`` installs it; before
that, a topology over the whole world is used).

Expert groups are named ``ep_size_<N>`` as in DeepSpeed and created by
:func:`_create_expert_and_data_parallel` (collectively: every rank calls it with the same size, as
MoE layers do when they are built or when the engine sets them up).
"""

from __future__ import annotations

from deepspeed.comm import topology as _topology

#: The Megatron-style model-parallel unit given to ``initialize`` (DeepSpeed keeps it here).
mpu = None


def _topo() -> _topology.ParallelTopology:
    return _topology.current()


def _ensure_divisibility(numerator: int, denominator: int) -> None:
    if numerator % denominator:
        raise ValueError(f"{numerator} is not divisible by {denominator}")


def initialize(ep_size=1, mpu=None):
    """Removed in DeepSpeed: the expert-parallel size is an argument of ``deepspeed.moe.layer.MoE``."""
    raise RuntimeError("deepspeed.utils.groups.initialize() is deprecated and removed, as in DeepSpeed; pass the "
                       "desired ep_size to deepspeed.moe.layer.MoE(..., ep_size=...) instead")


# -- data parallel ---------------------------------------------------------------------------


def _get_data_parallel_group():
    """The data-parallel group of this rank (None in a single process)."""
    return _topo().data_parallel_group


def _get_data_parallel_world_size() -> int:
    return _topo().size("data")


def _get_data_parallel_rank() -> int:
    return _topo().rank_in("data")


def _get_data_parallel_group_ranks() -> list[int]:
    return _topo().group_ranks("data")


def _get_broadcast_src_rank() -> int:
    """Global rank of the first member of this rank's sequence-data-parallel group."""
    return _topo().sequence_data_parallel_ranks()[0]


def _clone_world_group():
    """The world group (DeepSpeed clones it for ``get_global_rank``; torch accepts WORLD here)."""
    import torch.distributed as dist

    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


get_data_parallel_group = _get_data_parallel_group
get_data_parallel_world_size = _get_data_parallel_world_size
get_data_parallel_rank = _get_data_parallel_rank


# -- model (tensor) parallel -------------------------------------------------------------------


def get_tensor_model_parallel_group():
    return _topo().group("tensor")


def get_tensor_model_parallel_world_size() -> int:
    return _topo().size("tensor")


def get_tensor_model_parallel_rank() -> int:
    return _topo().rank_in("tensor")


def get_tensor_model_parallel_src_rank() -> int:
    """Global rank of the first rank of this rank's tensor-parallel group."""
    return _topo().group_ranks("tensor")[0]


get_model_parallel_group = get_tensor_model_parallel_group
get_model_parallel_world_size = get_tensor_model_parallel_world_size
get_model_parallel_rank = get_tensor_model_parallel_rank


def _get_model_parallel_world_size() -> int:
    return _topo().size("tensor")


# -- sequence parallel -----------------------------------------------------------------------


def _get_sequence_parallel_group():
    topo = _topo()
    if topo.size("sequence") == 1 and topo.mpu is None:
        raise KeyError("No sequence parallel group found")
    return topo.group("sequence")


def _get_sequence_parallel_world_size() -> int:
    return _topo().size("sequence")


def _get_sequence_parallel_rank() -> int:
    return _topo().rank_in("sequence")


def _get_sequence_data_parallel_group():
    return _topo().sequence_data_parallel_group


def _get_sequence_data_parallel_world_size() -> int:
    return _topo().sequence_data_parallel_size


def _get_sequence_data_parallel_rank() -> int:
    topo = _topo()
    return topo.rank_in("data") * topo.size("sequence") + topo.rank_in("sequence")


# -- expert parallel ---------------------------------------------------------------------------


def _create_expert_and_data_parallel(expert_parallel_size_, mp_size=None, pp_size=None, mp_mode="tp",
                                     use_data_before_expert_parallel_=False, folding_spec=None):
    """Create the expert-parallel and expert-data-parallel groups of size ``expert_parallel_size_``
    (named ``ep_size_<N>``); a collective, a no-op when they exist."""
    topo = _topo()
    if use_data_before_expert_parallel_ and not topo.use_data_before_expert_parallel:
        topo.use_data_before_expert_parallel = True
    topo.expert_groups(int(expert_parallel_size_))


def _create_expert_data_and_model_parallel(expert_parallel_size_, mpu, use_data_before_expert_parallel_=False):
    """DeepSpeed's variant for a model-parallel ``mpu``; the topology already knows the tensor size."""
    _create_expert_and_data_parallel(expert_parallel_size_,
                                     use_data_before_expert_parallel_=use_data_before_expert_parallel_)


def _get_expert_parallel_ranks(world_size, tensor_parallel_size_, expert_parallel_size_, pipeline_parallel_size_=1,
                               use_data_before_expert_parallel_=False):
    """``(expert parallel groups, expert data parallel groups)`` as lists of ranks (DeepSpeed's layout)."""
    return _topology.expert_parallel_ranks(world_size, tensor_parallel_size_, expert_parallel_size_,
                                           pipeline_parallel_size_, use_data_before_expert_parallel_)


def _check_group(group_name: str) -> None:
    if group_name not in _topo().expert_group_names():
        raise AssertionError(f"expert parallel group {group_name!r} is not initialized; create it with "
                             "_create_expert_and_data_parallel(ep_size) (MoE layers do)")


def _get_expert_parallel_group(group_name):
    _check_group(group_name)
    return _topo().expert_groups(int(group_name.rsplit("_", 1)[1]))[0]


def _get_expert_data_parallel_group(group_name):
    _check_group(group_name)
    return _topo().expert_groups(int(group_name.rsplit("_", 1)[1]))[1]


def _get_expert_parallel_group_ranks(group_name):
    _check_group(group_name)
    return _topo().expert_group_ranks(group_name)[0]


def _get_expert_data_parallel_group_ranks(group_name):
    _check_group(group_name)
    return _topo().expert_group_ranks(group_name)[1]


def _get_expert_parallel_group_dict() -> dict:
    return {name: _get_expert_parallel_group(name) for name in _topo().expert_group_names()}


def _get_expert_data_parallel_group_dict() -> dict:
    return {name: _get_expert_data_parallel_group(name) for name in _topo().expert_group_names()}


def _get_expert_parallel_world_size(group_name) -> int:
    return len(_get_expert_parallel_group_ranks(group_name))


def _get_expert_parallel_rank(group_name) -> int:
    return _get_expert_parallel_group_ranks(group_name).index(_topo().rank)


def _get_expert_data_parallel_world_size(group_name) -> int:
    return len(_get_expert_data_parallel_group_ranks(group_name))


def _get_expert_data_parallel_rank(group_name) -> int:
    return _get_expert_data_parallel_group_ranks(group_name).index(_topo().rank)


def _get_expert_parallel_src_rank(group_name) -> int:
    return _get_expert_parallel_group_ranks(group_name)[0]


def _get_expert_broadcast_src_rank(group_name) -> int:
    return _get_expert_data_parallel_group_ranks(group_name)[0]


def _get_max_expert_size():
    sizes = [int(name.rsplit("_", 1)[1]) for name in _topo().expert_group_names()]
    return max(sizes) if sizes else None


def _get_max_expert_size_name() -> str:
    return f"ep_size_{_get_max_expert_size()}"


def _get_max_expert_parallel_group():
    return _get_expert_parallel_group(_get_max_expert_size_name())
