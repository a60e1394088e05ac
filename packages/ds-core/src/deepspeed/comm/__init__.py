"""``deepspeed.comm``: torch.distributed with DeepSpeed's names, ``init_distributed`` and the
comms logger. Import it as DeepSpeed users do: ``import deepspeed.comm as dist``."""

from deepspeed.comm._backend import TorchBackend, init_distributed
from deepspeed.comm._collectives import (
    all_gather,
    all_gather_coalesced,
    all_gather_into_tensor,
    all_gather_object,
    all_reduce,
    all_reduce_coalesced,
    all_reduce_shared,
    all_to_all,
    all_to_all_single,
    allgather_fn,
    barrier,
    broadcast,
    broadcast_object_list,
    gather,
    has_all_gather_into_tensor,
    has_all_reduce_coalesced,
    has_coalescing_manager,
    has_reduce_scatter_tensor,
    inference_all_reduce,
    irecv,
    isend,
    monitored_barrier,
    recv,
    reduce,
    reduce_scatter,
    reduce_scatter_fn,
    reduce_scatter_from,
    reduce_scatter_tensor,
    scatter,
    send,
)
from deepspeed.comm._discovery import default_pg_timeout
from deepspeed.comm._groups import (
    ProcessGroup,
    destroy_process_group,
    get_all_ranks_from_group,
    get_backend,
    get_global_rank,
    get_local_rank,
    get_rank,
    get_world_group,
    get_world_size,
    is_available,
    is_initialized,
    new_group,
)
from deepspeed.comm._profiling import (
    comms_logger,
    configure,
    get_comm_operation_count,
    get_logged_comm_ops,
    has_comm_data,
    log_summary,
    reset_log,
)
from deepspeed.comm.reduce_op import ReduceOp

__all__ = [
    "ProcessGroup", "ReduceOp", "TorchBackend", "all_gather", "all_gather_coalesced", "all_gather_into_tensor",
    "all_gather_object", "all_reduce", "all_reduce_coalesced", "all_reduce_shared", "all_to_all", "all_to_all_single", "allgather_fn",
    "barrier", "broadcast", "broadcast_object_list", "comms_logger", "configure", "default_pg_timeout",
    "destroy_process_group", "gather", "get_all_ranks_from_group", "get_backend", "get_comm_operation_count",
    "get_global_rank", "get_local_rank", "get_logged_comm_ops", "get_rank", "get_world_group", "get_world_size",
    "has_all_gather_into_tensor", "has_all_reduce_coalesced", "has_coalescing_manager", "has_comm_data",
    "has_reduce_scatter_tensor", "inference_all_reduce", "init_distributed", "irecv", "is_available",
    "is_initialized", "isend", "log_summary", "monitored_barrier", "new_group", "recv", "reduce", "reduce_scatter",
    "reduce_scatter_fn", "reduce_scatter_from", "reduce_scatter_tensor", "reset_log", "scatter", "send",
]
