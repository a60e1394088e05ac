"""``init_distributed``: start (or adopt) the torch.distributed process group DeepSpeed drives."""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist

from deepspeed.comm._discovery import _discover, _pg_timeout, default_pg_timeout
from deepspeed.comm._profiling import configure
from deepspeed.utils.logging import logger


class TorchBackend:
    """The process group ``deepspeed.comm`` drives (DeepSpeed's ``cdb``): torch.distributed with
    a backend name (gloo, nccl, xccl, hccl, ...)."""

    def __init__(self, backend: str, adopted: bool) -> None:
        self.name = "torch"
        self.backend = backend
        #: True when the user initialised torch.distributed before init_distributed.
        self.adopted = adopted

    def is_initialized(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def __repr__(self) -> str:
        return f"<TorchBackend backend={self.backend!r} adopted={self.adopted}>"


#: Set by init_distributed; None before and after destroy_process_group().
cdb: TorchBackend | None = None


def init_distributed(dist_backend=None, auto_mpi_discovery=True, distributed_port=29500, verbose=True,
                     timeout=default_pg_timeout, init_method=None, dist_init_required=None, config=None,
                     rank=-1, world_size=-1):
    """Initialise torch.distributed the way DeepSpeed does.

    The backend defaults to ``get_accelerator().communication_backend_name()``; rank and world size
    come from ``rank``/``world_size``, the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT), an MPI launcher's variables, or mpi4py when importable. The timeout
    is 10 minutes or ``DEEPSPEED_TIMEOUT`` minutes. A process group the user already created is
    adopted as is. ``config`` (a ds_config dict or DeepSpeedConfig) configures the comms logger.
    """
    global cdb
    if config is not None:
        configure(deepspeed_config=config)
    if not dist.is_available():
        raise RuntimeError(
            "init_distributed: this torch build has no torch.distributed "
            "(torch.distributed.is_available() is False); install a torch build with distributed support"
        )
    if dist.is_initialized():
        if cdb is None or not cdb.is_initialized():
            cdb = TorchBackend(dist.get_backend(), adopted=True)
        if verbose and dist.get_rank() == 0:
            logger.info(f"Distributed backend already initialized ({dist.get_backend()})")
        return
    if dist_init_required is False:
        return
    if timeout is default_pg_timeout:
        timeout = _pg_timeout()
    if not isinstance(timeout, timedelta):
        raise ValueError(f"init_distributed: timeout={timeout!r} must be a datetime.timedelta")
    rank, world_size = _discover(rank, world_size, distributed_port, auto_mpi_discovery, init_method, verbose)
    if dist_backend is None:
        from deepspeed.accelerator import get_accelerator

        dist_backend = get_accelerator().communication_backend_name()
    if verbose and rank == 0:
        logger.info(f"Initializing TorchBackend in DeepSpeed with backend {dist_backend}")
    dist.init_process_group(backend=dist_backend, init_method=init_method, timeout=timeout, rank=rank,
                            world_size=world_size)
    cdb = TorchBackend(dist_backend, adopted=False)


def _forget() -> None:
    global cdb
    cdb = None


def _local_rank_from_env() -> int:
    raw = os.environ.get("LOCAL_RANK")
    if raw is None:
        raise RuntimeError(
            "get_local_rank: environment variable LOCAL_RANK is not set; start the job with a "
            "launcher (`deepspeed`, torchrun) or set LOCAL_RANK for each process"
        )
    return int(raw)
