"""Collectives with DeepSpeed's names and signatures, over torch.distributed.

Each public function takes torch's arguments plus DeepSpeed's ``prof``, ``log_name`` and
``debug``. With the comms logger off, a call costs one attribute read more than torch's.

This is the one path every collective of the engine and of the features takes, so the comms
logger sees all traffic. Floating-point CPU tensors of a gloo group whose ranks share a host are
reduced and gathered through shared memory (:mod:`deepspeed.comm.shm`, same results; synchronous,
so an ``async_op`` call returns a completed handle); everything else goes to torch.distributed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from deepspeed.comm import shm as _shm
from deepspeed.comm._profiling import _timed, comms_logger
from deepspeed.comm.reduce_op import ReduceOp, _is_avg, _to_torch

# Note: torch 2.13 renamed the "into tensor" collectives (*_single) and deprecates the old names
# with a FutureWarning; use whichever this torch has.
_torch_all_gather_into_tensor = getattr(dist, "all_gather_single", None) or getattr(dist, "all_gather_into_tensor", None)
_torch_reduce_scatter_tensor = getattr(dist, "reduce_scatter_single", None) or getattr(dist, "reduce_scatter_tensor", None)


def _nbytes(tensor) -> int:
    if isinstance(tensor, (list, tuple)):
        return sum(t.numel() * t.element_size() for t in tensor)
    return tensor.numel() * tensor.element_size()


class _PostWork:
    """An async handle that runs ``after`` once every wrapped handle has completed (used where
    a collective needs a local step after the transfer, e.g. AVG emulated as SUM then divide)."""

    def __init__(self, works, after) -> None:
        self._works = [w for w in works if w is not None]
        self._after = after

    def wait(self, timeout=None) -> bool:
        for w in self._works:
            w.wait() if timeout is None else w.wait(timeout)
        if self._after is not None:
            after, self._after = self._after, None
            after()
        return True

    def is_completed(self) -> bool:
        return self._after is None and all(w.is_completed() for w in self._works)


def _shared(group, tensor, op=None):
    """The group's shared-memory collectives when they can carry ``tensor`` and ``op`` (else None)."""
    if tensor.device.type != "cpu" or not tensor.is_floating_point() or tensor.is_complex():
        return None, None
    name = _shm.op_name(op)
    if name is None:
        return None, None
    return _shm.for_group(group), name


class _Keep:
    """A completed or pending handle that also keeps the buffers an async collective reads alive."""

    def __init__(self, work, *buffers) -> None:
        self._work = work
        self._buffers = buffers

    def wait(self, timeout=None) -> bool:
        if self._work is not None:
            self._work.wait() if timeout is None else self._work.wait(timeout)
        self._buffers = ()
        return True

    def is_completed(self) -> bool:
        return self._work is None or self._work.is_completed()


def _divide(tensor, n: int) -> None:
    if tensor.is_floating_point() or tensor.is_complex():
        tensor.div_(n)
    else:
        tensor.floor_divide_(n)


def _reduction(op, group):
    """(torch op, divisor): AVG on gloo becomes SUM and a division by the group size."""
    # Note: gloo lacks AVG on the torch versions we support (>=2.6), so emulate it everywhere on
    # gloo: the result is the same and the behaviour does not depend on the torch build.
    if _is_avg(op) and dist.get_backend(group) == "gloo":
        return dist.ReduceOp.SUM, dist.get_world_size(group)
    return _to_torch(op), 0


def _finish(work, async_op, after):
    """Run ``after`` now (sync) or when the handle is waited on (async)."""
    if after is None:
        return work
    if async_op:
        return _PostWork([work], after)
    after()
    return work


# ---------------------------------------------------------------- reductions
def _all_reduce(tensor, op, group, async_op):
    sg, name = _shared(group, tensor, op)
    if sg is not None:
        sg.all_reduce_(tensor, name)
        return _shm.DONE
    top, div = _reduction(op, group)
    work = dist.all_reduce(tensor, op=top, group=group, async_op=async_op)
    return _finish(work, async_op, (lambda: _divide(tensor, div)) if div else None)


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False, prof=False, log_name="all_reduce", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("all_reduce", log_name, prof):
        return _timed("all_reduce", log_name, debug, group, _nbytes(tensor), _all_reduce, tensor, op, group, async_op)
    return _all_reduce(tensor, op, group, async_op)


def inference_all_reduce(tensor, op=ReduceOp.SUM, group=None, prof=False, log_name="inference_all_reduce",
                         debug=None):
    """Blocking all-reduce used by tensor-parallel inference (a plain all_reduce here)."""
    if comms_logger.enabled and comms_logger.should_profile("inference_all_reduce", log_name, prof):
        return _timed("inference_all_reduce", log_name, debug, group, _nbytes(tensor), _all_reduce, tensor, op,
                      group, False)
    return _all_reduce(tensor, op, group, False)


def _reduce(tensor, dst, op, group, async_op):
    top, div = _reduction(op, group)
    work = dist.reduce(tensor, dst, op=top, group=group, async_op=async_op)
    owns_result = div and dist.get_rank() == dst
    return _finish(work, async_op, (lambda: _divide(tensor, div)) if owns_result else None)


def reduce(tensor, dst, op=ReduceOp.SUM, group=None, async_op=False, prof=False, log_name="reduce", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("reduce", log_name, prof):
        return _timed("reduce", log_name, debug, group, _nbytes(tensor), _reduce, tensor, dst, op, group, async_op)
    return _reduce(tensor, dst, op, group, async_op)


def _all_reduce_coalesced(tensors, op, group, async_op):
    top, div = _reduction(op, group)
    buckets: dict = {}
    for t in tensors:
        buckets.setdefault((t.dtype, t.device), []).append(t)
    works, flats = [], []
    for bucket in buckets.values():
        flat = _flatten_dense_tensors(bucket)
        flats.append((flat, bucket))
        works.append(dist.all_reduce(flat, op=top, group=group, async_op=async_op))

    def copy_back():
        for flat, bucket in flats:
            if div:
                _divide(flat, div)
            for t, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                t.copy_(synced)

    if async_op:
        return _PostWork(works, copy_back)
    copy_back()
    return None


def all_reduce_coalesced(tensors, op=ReduceOp.SUM, group=None, async_op=False, prof=False,
                         log_name="all_reduce_coalesced", debug=None):
    """All-reduce a list of tensors with one collective per dtype (flatten, reduce, copy back)."""
    tensors = list(tensors)
    if comms_logger.enabled and comms_logger.should_profile("all_reduce_coalesced", log_name, prof):
        return _timed("all_reduce_coalesced", log_name, debug, group, _nbytes(tensors), _all_reduce_coalesced,
                      tensors, op, group, async_op)
    return _all_reduce_coalesced(tensors, op, group, async_op)


def _reduce_scatter_tensor(output_tensor, tensor, op, group, async_op):
    sg, name = _shared(group, tensor, op)
    if sg is not None:
        sg.reduce_scatter_(output_tensor, list(tensor.reshape(-1).chunk(sg.world)), name)
        return _shm.DONE
    top, div = _reduction(op, group)
    work = _torch_reduce_scatter_tensor(output_tensor, tensor, op=top, group=group, async_op=async_op)
    return _finish(work, async_op, (lambda: _divide(output_tensor, div)) if div else None)


def reduce_scatter_tensor(output_tensor, tensor, op=ReduceOp.SUM, group=None, async_op=False, prof=False,
                          log_name="reduce_scatter_tensor", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("reduce_scatter_tensor", log_name, prof):
        return _timed("reduce_scatter_tensor", log_name, debug, group, _nbytes(tensor), _reduce_scatter_tensor,
                      output_tensor, tensor, op, group, async_op)
    return _reduce_scatter_tensor(output_tensor, tensor, op, group, async_op)


def _reduce_scatter(output, input_list, op, group, async_op):
    input_list = list(input_list)
    sg, name = _shared(group, output, op)
    if sg is not None:
        sg.reduce_scatter_(output, input_list, name)
        return _shm.DONE
    top, div = _reduction(op, group)
    work = dist.reduce_scatter(output, list(input_list), op=top, group=group, async_op=async_op)
    return _finish(work, async_op, (lambda: _divide(output, div)) if div else None)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False, prof=False,
                   log_name="reduce_scatter", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("reduce_scatter", log_name, prof):
        return _timed("reduce_scatter", log_name, debug, group, _nbytes(list(input_list)), _reduce_scatter, output,
                      input_list, op, group, async_op)
    return _reduce_scatter(output, input_list, op, group, async_op)


def reduce_scatter_fn(output_tensor, tensor, op=ReduceOp.SUM, group=None, async_op=False, prof=False, debug=None):
    """Reduce-scatter a flat ``tensor`` into ``output_tensor`` (uses the tensor collective when
    torch has it, else a list of views)."""
    if has_reduce_scatter_tensor():
        return reduce_scatter_tensor(output_tensor, tensor, op=op, group=group, async_op=async_op, prof=prof,
                                     debug=debug)
    chunks = list(torch.chunk(tensor.view(-1), dist.get_world_size(group)))
    return reduce_scatter(output_tensor, chunks, op=op, group=group, async_op=async_op, prof=prof, debug=debug)


def _reduce_scatter_from(output, sources, sizes, dtype, group, async_op):
    sg, name = _shared(group, output)
    if sg is not None:
        sg.reduce_scatter_from_(output, sources, sizes, name)
        return _shm.DONE
    staging = torch.cat([s.reshape(-1).to(dtype) for s in sources]) if len(sources) > 1 else \
        sources[0].reshape(-1).to(dtype, copy=True)
    if len(set(sizes)) == 1:
        work = _reduce_scatter_tensor(output, staging, ReduceOp.SUM, group, async_op)
    else:
        work = _reduce_scatter(output, list(staging.split(sizes)), ReduceOp.SUM, group, async_op)
    return _Keep(work, staging)


def reduce_scatter_from(output, sources, sizes, dtype=None, group=None, async_op=False, prof=False,
                        log_name="reduce_scatter", debug=None):
    """Sum-reduce-scatter of the concatenation of ``sources`` (any shapes, read as 1-D and cast to
    ``dtype``, default ``output``'s) cut into per-rank pieces of ``sizes`` (they may differ, even be
    0): rank ``r`` receives the sum of every rank's piece ``r`` in ``output``. Through shared memory
    the sources are read where they are; otherwise they are concatenated first. The returned handle
    keeps the staging buffer alive until waited on. (An extension of DeepSpeed's collectives, used
    by ZeRO's gradient buckets.)"""
    sources = list(sources)
    dtype = dtype or output.dtype
    if comms_logger.enabled and comms_logger.should_profile("reduce_scatter", log_name, prof):
        nbytes = sum(sizes) * torch.empty((), dtype=dtype).element_size()
        return _timed("reduce_scatter", log_name, debug, group, nbytes, _reduce_scatter_from, output, sources,
                      list(sizes), dtype, group, async_op)
    return _reduce_scatter_from(output, sources, list(sizes), dtype, group, async_op)


def _all_reduce_shared(buffer, scale):
    buffer.all_reduce_(scale=scale)
    return _shm.DONE


def all_reduce_shared(buffer, scale=1.0, prof=False, log_name="all_reduce", debug=None):
    """Sum-all-reduce a :class:`deepspeed.comm.shm.SharedBuffer` in place (every rank's tensor is
    readable by the others, so no staging copy), then multiply by ``scale``. Logged as an
    all_reduce of the buffer's size."""
    if comms_logger.enabled and comms_logger.should_profile("all_reduce", log_name, prof):
        return _timed("all_reduce", log_name, debug, buffer.group.group, _nbytes(buffer.local), _all_reduce_shared,
                      buffer, scale)
    return _all_reduce_shared(buffer, scale)


# ---------------------------------------------------------------- gathers and scatters
def _group_size(group) -> int:
    return dist.get_world_size(group)


def broadcast(tensor, src, group=None, async_op=False, prof=False, log_name="broadcast", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("broadcast", log_name, prof):
        return _timed("broadcast", log_name, debug, group, _nbytes(tensor), dist.broadcast, tensor, src, group,
                      async_op)
    return dist.broadcast(tensor, src, group, async_op)


def broadcast_object_list(object_list, src, group=None, device=None):
    """Broadcast picklable objects from ``src`` into ``object_list`` on every rank."""
    return dist.broadcast_object_list(object_list, src, group=group, device=device)


def all_gather_object(object_list, obj, group=None):
    """Gather one picklable object per rank into ``object_list``."""
    return dist.all_gather_object(object_list, obj, group=group)


def all_gather(tensor_list, tensor, group=None, async_op=False, prof=False, log_name="all_gather", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("all_gather", log_name, prof):
        return _timed("all_gather", log_name, debug, group, _nbytes(list(tensor_list)), dist.all_gather,
                      tensor_list, tensor, group, async_op)
    return dist.all_gather(tensor_list, tensor, group, async_op)


def _all_gather_into_tensor(output_tensor, tensor, group, async_op):
    sg, _ = _shared(group, tensor)
    if sg is not None:
        sg.all_gather_(output_tensor, tensor)
        return _shm.DONE
    # Note: ``tensor`` may be this rank's own slice of ``output_tensor`` (ZeRO's layouts); backends
    # that write the output while reading the input need a separate copy.
    if tensor.untyped_storage().data_ptr() == output_tensor.untyped_storage().data_ptr():
        tensor = tensor.clone()
    return _torch_all_gather_into_tensor(output_tensor, tensor, group, async_op)


def all_gather_into_tensor(output_tensor, tensor, group=None, async_op=False, prof=False,
                           log_name="all_gather_into_tensor", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("all_gather_into_tensor", log_name, prof):
        return _timed("all_gather_into_tensor", log_name, debug, group, _nbytes(output_tensor),
                      _all_gather_into_tensor, output_tensor, tensor, group, async_op)
    return _all_gather_into_tensor(output_tensor, tensor, group, async_op)


def allgather_fn(output_tensor, input_tensor, group=None, async_op=False, debug=None):
    """All-gather ``input_tensor`` from every rank into the flat ``output_tensor``."""
    if has_all_gather_into_tensor():
        return all_gather_into_tensor(output_tensor, input_tensor, group=group, async_op=async_op, debug=debug)
    chunks = list(torch.chunk(output_tensor.view(-1), _group_size(group)))
    return all_gather(chunks, input_tensor, group=group, async_op=async_op, debug=debug)


def _all_gather_coalesced(output_tensors, input_tensors, group, async_op):
    works = [_all_gather_into_tensor(out, inp, group, async_op) for out, inp in zip(output_tensors, input_tensors)]
    return _PostWork(works, None) if async_op else None


def all_gather_coalesced(output_tensors, input_tensors, group=None, async_op=False, prof=False,
                         log_name="all_gather_coalesced", debug=None):
    """For each pair, gather ``input_tensors[i]`` from every rank into the flat ``output_tensors[i]``
    (DeepSpeed's semantics, not torch's list-of-lists ``all_gather_coalesced``)."""
    output_tensors, input_tensors = list(output_tensors), list(input_tensors)
    if len(output_tensors) != len(input_tensors):
        raise ValueError(
            f"all_gather_coalesced: got {len(output_tensors)} output tensors for {len(input_tensors)} inputs; "
            f"pass one flat output (world_size x input numel) per input"
        )
    if comms_logger.enabled and comms_logger.should_profile("all_gather_coalesced", log_name, prof):
        return _timed("all_gather_coalesced", log_name, debug, group, _nbytes(output_tensors), _all_gather_coalesced,
                      output_tensors, input_tensors, group, async_op)
    return _all_gather_coalesced(output_tensors, input_tensors, group, async_op)


def all_to_all_single(output, tensor, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False,
                      prof=False, log_name="all_to_all_single", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("all_to_all_single", log_name, prof):
        return _timed("all_to_all_single", log_name, debug, group, _nbytes(tensor), dist.all_to_all_single, output,
                      tensor, output_split_sizes, input_split_sizes, group, async_op)
    return dist.all_to_all_single(output, tensor, output_split_sizes, input_split_sizes, group, async_op)


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False, prof=False, log_name="all_to_all",
               debug=None):
    if comms_logger.enabled and comms_logger.should_profile("all_to_all", log_name, prof):
        return _timed("all_to_all", log_name, debug, group, _nbytes(list(input_tensor_list)), dist.all_to_all,
                      output_tensor_list, input_tensor_list, group, async_op)
    return dist.all_to_all(output_tensor_list, input_tensor_list, group, async_op)


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False, prof=False, log_name="gather", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("gather", log_name, prof):
        return _timed("gather", log_name, debug, group, _nbytes(tensor) * _group_size(group), dist.gather, tensor,
                      gather_list, dst, group, async_op)
    return dist.gather(tensor, gather_list, dst, group, async_op)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False, prof=False, log_name="scatter", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("scatter", log_name, prof):
        return _timed("scatter", log_name, debug, group, _nbytes(tensor) * _group_size(group), dist.scatter, tensor,
                      scatter_list, src, group, async_op)
    return dist.scatter(tensor, scatter_list, src, group, async_op)


# ---------------------------------------------------------------- point to point and barriers
def send(tensor, dst, group=None, tag=0, prof=False, log_name="send", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("send", log_name, prof):
        return _timed("send", log_name, debug, group, _nbytes(tensor), dist.send, tensor, dst, group, tag)
    return dist.send(tensor, dst, group, tag)


def recv(tensor, src=None, group=None, tag=0, prof=False, log_name="recv", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("recv", log_name, prof):
        return _timed("recv", log_name, debug, group, _nbytes(tensor), dist.recv, tensor, src, group, tag)
    return dist.recv(tensor, src, group, tag)


def isend(tensor, dst, group=None, tag=0, prof=False, log_name="isend", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("isend", log_name, prof):
        return _timed("isend", log_name, debug, group, _nbytes(tensor), dist.isend, tensor, dst, group, tag)
    return dist.isend(tensor, dst, group, tag)


def irecv(tensor, src=None, group=None, tag=0, prof=False, log_name="irecv", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("irecv", log_name, prof):
        return _timed("irecv", log_name, debug, group, _nbytes(tensor), dist.irecv, tensor, src, group, tag)
    return dist.irecv(tensor, src, group, tag)


def barrier(group=None, async_op=False, device_ids=None, prof=False, log_name="barrier", debug=None):
    if comms_logger.enabled and comms_logger.should_profile("barrier", log_name, prof):
        return _timed("barrier", log_name, debug, group, 0, dist.barrier, group, async_op, device_ids)
    return dist.barrier(group, async_op, device_ids)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False, prof=False, log_name="monitored_barrier",
                      debug=None):
    """Barrier that names the ranks that failed to arrive within ``timeout`` (gloo only, as in torch)."""
    if comms_logger.enabled and comms_logger.should_profile("monitored_barrier", log_name, prof):
        return _timed("monitored_barrier", log_name, debug, group, 0, dist.monitored_barrier, group, timeout,
                      wait_all_ranks)
    return dist.monitored_barrier(group, timeout, wait_all_ranks)


# ---------------------------------------------------------------- capabilities
def has_all_gather_into_tensor() -> bool:
    return _torch_all_gather_into_tensor is not None


def has_reduce_scatter_tensor() -> bool:
    return _torch_reduce_scatter_tensor is not None


def has_all_reduce_coalesced() -> bool:
    # Implemented here (flatten, one all_reduce per dtype), so always available.
    return True


def has_coalescing_manager() -> bool:
    return hasattr(dist.distributed_c10d, "_coalescing_manager")
