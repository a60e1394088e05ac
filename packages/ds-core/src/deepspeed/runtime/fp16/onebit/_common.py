"""What the three 1-bit optimizers share: the engine hand-off, the backend, and one flat buffer per
parameter group compressed in a single call (one scale per tensor), with the error-feedback
buffers kept in the optimizer state so checkpoints carry them."""

from __future__ import annotations

import torch

import deepspeed.comm as ds_comm
from deepspeed.comm.compressed import CompressedBackend, padded_numel
from deepspeed.config.model import ConfigError

_BACKENDS = ("nccl", "mpi", "hccl", "gloo", "compressed", "ccl", "mccl", "xccl")


class OnebitBase(torch.optim.Optimizer):
    """Base of OnebitAdam / ZeroOneAdam / OnebitLamb: ``deepspeed`` is the engine (it reads and
    sets ``enable_backward_allreduce``, DeepSpeed's switch between the engine's fp32 gradient
    all-reduce and the optimizer's compressed one). A feature that partitions the optimizer
    refuses these classes itself (ds-zero does, at every stage)."""

    _type_name = "OneBitAdam"
    #: The error-feedback buffers differ between ranks: the engine saves this optimizer's state in
    #: a file per data-parallel rank.
    per_rank_state = True

    def __init__(self, params, deepspeed, defaults: dict, cuda_aware: bool = False, comm_backend_name: str = "nccl"):
        super().__init__(params, defaults)
        if comm_backend_name not in _BACKENDS:
            raise ConfigError(
                f"ds_config.optimizer.params.comm_backend_name: {comm_backend_name!r} is not a backend "
                f"({', '.join(_BACKENDS)}); every one of them runs the same compressed all-reduce here"
            )
        self.deepspeed = deepspeed
        self.cuda_aware = bool(cuda_aware)
        self.comm_backend_name = comm_backend_name
        group = getattr(deepspeed, "data_parallel_group", None) if deepspeed is not None else None
        self._dist = ds_comm.is_initialized() and ds_comm.get_world_size(group) > 1
        self.comm_backend_handle = CompressedBackend(group=group) if self._dist else None
        self.size = self.comm_backend_handle.size if self._dist else 1

    def _set_backward_allreduce(self, on: bool) -> None:
        if self.deepspeed is not None:
            self.deepspeed.enable_backward_allreduce = bool(on)

    def _compress(self, group: dict, tensors: list[torch.Tensor], key: str = "") -> None:
        """Average ``tensors`` (same order as the group's parameters) over the data-parallel group
        with the 1-bit all-reduce, in place; error buffers live in the first parameter's state."""
        if not self._dist:
            return
        holder = self.state[group["params"][0]]
        numels = [t.numel() for t in tensors]
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        padded = padded_numel(flat.numel(), self.size)
        we, se = f"worker_error{key}", f"server_error{key}"
        if we not in holder:
            holder[we] = torch.zeros(padded, dtype=torch.float32, device=flat.device)
            holder[se] = torch.zeros(padded // self.size, dtype=torch.float32, device=flat.device)
        self.comm_backend_handle.compressed_allreduce(flat, holder[we], holder[se], segments=numels)
        offset = 0
        for t, k in zip(tensors, numels):
            t.copy_(flat[offset:offset + k].view_as(t))
            offset += k


def grad_of(p: torch.Tensor) -> torch.Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)
