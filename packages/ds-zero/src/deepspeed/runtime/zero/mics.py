"""MiCS (``zero_optimization.mics_shard_size``): ZeRO-3 with the parameters, gradients and optimizer
state sharded inside groups of ``mics_shard_size`` consecutive ranks and replicated across the
groups, so parameter all-gathers (forward and backward) and gradient reduce-scatters stay inside a
shard group; the gradient shards are then all-reduced over the replica group (the ranks holding
the same shard), which makes every update equal to plain ZeRO-3's.

``MiCS_Init`` is ``zero.Init`` partitioning over the shard group; ``MiCS_Optimizer`` is the stage-3
optimizer over the shard group plus the replica all-reduce. ``mics_hierarchical_params_gather`` is
accepted; the gather is one all-gather over the shard group either way (there is no inter-node
step inside a shard group of this size to split).
"""

from __future__ import annotations

import deepspeed.comm as ds_comm
from deepspeed.config.model import ConfigError
from deepspeed.runtime.zero import _ranks
from deepspeed.runtime.zero.partition_parameters import Init
from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

_GROUPS: dict = {}


class MiCS_CommGroups:  # noqa: N801 - DeepSpeed's name
    """This rank's shard group (``param_shard_group``, consecutive ranks) and replica group
    (``param_repli_group``: the ranks with the same position in every shard group)."""

    def __init__(self, shard_size: int, world: int, rank: int, shard, repli):
        self.param_shard_size = shard_size
        self.param_shard_group = shard
        self.param_shard_rank = rank % shard_size
        self.param_repli_size = world // shard_size
        self.param_repli_group = repli
        self.param_repli_rank = rank // shard_size


def check_shard_size(shard_size: int, world: int) -> None:
    if shard_size <= 0 or world % shard_size != 0:
        raise ConfigError(
            f"zero_optimization.mics_shard_size={shard_size} does not divide the data-parallel world size {world}; "
            f"use a divisor of {world} (e.g. the number of ranks per node) or -1 to turn MiCS off"
        )


def create_mics_comm_groups(shard_size: int) -> MiCS_CommGroups:
    """The groups for ``shard_size`` over the whole world (created once; every rank must call this)."""
    world, rank = _ranks.world_size(), _ranks.rank()
    check_shard_size(shard_size, world)
    key = (shard_size, world)
    if key not in _GROUPS:
        shard = repli = None
        for start in range(0, world, shard_size):
            ranks = list(range(start, start + shard_size))
            g = ds_comm.new_group(ranks)
            if rank in ranks:
                shard = g
        for offset in range(shard_size):
            ranks = list(range(offset, world, shard_size))
            g = ds_comm.new_group(ranks)
            if rank in ranks:
                repli = g
        _GROUPS[key] = MiCS_CommGroups(shard_size, world, rank, shard, repli)
    return _GROUPS[key]


def _shard_size_from(config) -> int:
    zero = getattr(config, "zero_config", None)
    size = int(getattr(zero, "mics_shard_size", -1) or -1) if zero is not None else -1
    if size <= 0:
        raise ConfigError("MiCS_Init: zero_optimization.mics_shard_size is not set (got "
                          f"{size}); give it the shard group size in the config passed as config_dict_or_path")
    return size


class MiCS_Init(Init):  # noqa: N801 - DeepSpeed's name
    """``zero.Init`` whose parameters are partitioned inside the MiCS shard group of the config's
    ``mics_shard_size`` (DeepSpeed's ``deepspeed.zero.MiCS_Init``)."""

    def __init__(self, module=None, data_parallel_group=None, sequence_data_parallel_group=None,
                 mem_efficient_linear=True, remote_device=None, pin_memory=False, config_dict_or_path=None,
                 config=None, enabled=True, dtype=None, mpu=None):
        from deepspeed.runtime.zero.partition_parameters import _ensure_distributed, _parse_config

        if enabled:
            _ensure_distributed()
            cfg = _parse_config(config_dict_or_path if config_dict_or_path is not None else config, mpu)
            self.mics_comm_groups = create_mics_comm_groups(_shard_size_from(cfg))
            data_parallel_group = self.mics_comm_groups.param_shard_group
        super().__init__(module=module, data_parallel_group=data_parallel_group, mem_efficient_linear=mem_efficient_linear,
                         remote_device=remote_device, pin_memory=pin_memory, config_dict_or_path=config_dict_or_path,
                         config=config, enabled=enabled, dtype=dtype, mpu=mpu)


class MiCS_Optimizer(DeepSpeedZeroOptimizer_Stage3):  # noqa: N801 - DeepSpeed's name
    """Stage 3 over the shard group; gradient shards averaged over the replicas before the step."""

    def __init__(self, module, init_optimizer, *args, mics_shard_size: int = -1, dp_process_group=None, **kwargs):
        world = _ranks.world_size(dp_process_group)
        if dp_process_group is not None and world != _ranks.world_size():
            raise NotImplementedError("MiCS with a data-parallel group smaller than the world (model parallelism) "
                                      "is not implemented by ds-zero; remove zero_optimization.mics_shard_size")
        check_shard_size(int(mics_shard_size), world)
        self.mics_comm_groups = create_mics_comm_groups(int(mics_shard_size))
        for p in module.parameters():
            group = getattr(p, "ds_process_group", None)
            if hasattr(p, "ds_id") and group is not self.mics_comm_groups.param_shard_group:
                raise ValueError(
                    "MiCS: a parameter was partitioned by zero.Init over another group; build the model under "
                    "deepspeed.zero.MiCS_Init(config_dict_or_path=<the same ds_config>) instead of zero.Init"
                )
        super().__init__(module, init_optimizer, *args, dp_process_group=self.mics_comm_groups.param_shard_group,
                         **kwargs)

    def _replica_all_reduce(self) -> None:
        groups = self.mics_comm_groups
        if groups.param_repli_size <= 1:
            return
        for g in self._grad_partitions:
            ds_comm.all_reduce(g, group=groups.param_repli_group)
            g.div_(groups.param_repli_size)

    def step(self, closure=None) -> bool:
        self._epilogue()
        self._replica_all_reduce()
        return super().step(closure)

    # -- checkpoints: one zero_pp_rank_<global rank> file per rank (replicas hold equal shards) --
    def state_dict(self) -> dict:
        sd = super().state_dict()
        groups = self.mics_comm_groups
        sd["partition_count"] = groups.param_shard_size * groups.param_repli_size
        sd["mics_shard_size"] = groups.param_shard_size
        return sd

    def load_state_dict(self, state_dict_list, load_optimizer_states: bool = True, load_from_fp32_weights: bool = False,
                        checkpoint_folder=None, load_serial=None) -> None:
        groups = self.mics_comm_groups
        world = groups.param_shard_size * groups.param_repli_size
        if isinstance(state_dict_list, dict):
            state_dict_list = [state_dict_list] * world
        sizes = {sd.get("mics_shard_size") for sd in state_dict_list}
        if sizes != {groups.param_shard_size} or len(state_dict_list) != world:
            raise NotImplementedError(
                f"MiCS load_checkpoint: the checkpoint was saved with mics_shard_size={sorted(map(str, sizes))} on "
                f"{len(state_dict_list)} ranks; ds-zero loads a MiCS checkpoint with the same mics_shard_size "
                f"({groups.param_shard_size}) and world size ({world}) only")
        start = groups.param_repli_rank * groups.param_shard_size
        mine = [dict(sd, partition_count=groups.param_shard_size)
                for sd in state_dict_list[start:start + groups.param_shard_size]]
        super().load_state_dict(mine, load_optimizer_states=load_optimizer_states,
                                load_from_fp32_weights=load_from_fp32_weights, checkpoint_folder=checkpoint_folder)


__all__ = ["MiCS_CommGroups", "MiCS_Init", "MiCS_Optimizer", "create_mics_comm_groups"]
