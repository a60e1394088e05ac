"""Point-to-point transfers between pipeline stages, through ``deepspeed.comm``.

A stage's output is a tensor or a tuple of tensors; floating-point tensors that are part of the
autograd graph travel with ``requires_grad`` and get a gradient back, the others (masks, integer
ids) travel as data. The first message of each channel (a sending virtual stage and a direction)
carries the metadata (count, dtypes, shapes, which need gradients); later ones send only the
tensors into buffers the receiver allocates from it, unless ``dynamic_shape`` asks for metadata
with every message. Gradients never carry metadata: their shapes are the receiver's own outputs.

Sends are posted without waiting (``isend``) and collected by :meth:`Transfer.wait_all` when the
batch ends. The engine posts each channel's next receive ahead of need (``prefetch_*``), as soon as
its shapes are known, so a message moves while the stage computes; the receive itself then only
waits for what has not arrived. Messages of one channel are matched in order (gloo matches by tag, and
every channel has its own tag), so a schedule only has to keep each channel's order, which
``deepspeed.runtime.pipe._verify`` checks.
"""

from __future__ import annotations

import torch

import deepspeed.comm as dist

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
           torch.int8, torch.uint8, torch.bool, torch.complex64]
_CODE = {d: i for i, d in enumerate(_DTYPES)}

ACT, GRAD = 0, 1


def _as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def needs_grad(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.requires_grad


def channel_tag(sender_virtual: int, kind: int, meta: bool = False, training: bool = True) -> int:
    return ((sender_virtual * 2 + kind) * 2 + int(meta)) * 2 + int(not training)


class Transfer:
    """Sends and receives of one engine (see the module docstring)."""

    def __init__(self, device: torch.device, dynamic_shape: bool = False):
        self.device = device
        self.dynamic_shape = dynamic_shape
        self._sent_meta: dict[int, list] = {}
        self._recv_meta: dict[int, tuple] = {}
        self._pending: list = []
        self._rank = dist.get_rank() if dist.is_initialized() else 0
        # Note: with virtual stages on one rank, a chunk may feed the next chunk of the same rank:
        # those messages stay in this process (a FIFO per channel), with no collective.
        self._local: dict[int, list] = {}
        # receives posted ahead of need: tag -> FIFO of (works, tensors)
        self._posted: dict[int, list] = {}

    # -- metadata ------------------------------------------------------------------------------------

    @staticmethod
    def _describe(tensors) -> list:
        out = []
        for t in tensors:
            out.append((t.dtype, needs_grad(t), tuple(t.shape)))
        return out

    def _send_meta(self, desc, dst, tag) -> None:
        flat = [len(desc)]
        for dtype, grad, shape in desc:
            flat += [_CODE[dtype], int(grad), len(shape), *shape]
        payload = torch.tensor(flat, dtype=torch.int64)
        self._isend(torch.tensor([payload.numel()], dtype=torch.int64), dst, tag)
        self._isend(payload, dst, tag)

    def _recv_meta_msg(self, src, tag) -> tuple:
        n = torch.empty(1, dtype=torch.int64)
        dist.recv(n, src=src, tag=tag)
        payload = torch.empty(int(n.item()), dtype=torch.int64)
        dist.recv(payload, src=src, tag=tag)
        vals = payload.tolist()
        count, i, desc = vals[0], 1, []
        for _ in range(count):
            code, grad, ndim = vals[i:i + 3]
            shape = tuple(vals[i + 3:i + 3 + ndim])
            desc.append((_DTYPES[code], bool(grad), shape))
            i += 3 + ndim
        return tuple(desc)

    # -- messages --------------------------------------------------------------------------------------

    def _isend(self, t: torch.Tensor, dst: int, tag: int) -> None:
        t = t.contiguous()
        self._pending.append((dist.isend(t, dst, tag=tag), t))

    def send_activations(self, outputs, dst: int, sender_virtual: int, training: bool) -> None:
        tensors = _as_tuple(outputs)
        if dst == self._rank:
            tag = channel_tag(sender_virtual, ACT, training=training)
            self._local.setdefault(tag, []).append(tuple((t.detach(), needs_grad(t)) for t in tensors))
            return
        for t in tensors:
            if not torch.is_tensor(t):
                raise TypeError(f"a pipeline stage must output a tensor or a tuple of tensors; got an item of type "
                                f"{type(t).__name__}; return only tensors from the stage's last layer")
        desc = self._describe(tensors)
        tag = channel_tag(sender_virtual, ACT, training=training)
        meta_tag = channel_tag(sender_virtual, ACT, meta=True, training=training)
        if self.dynamic_shape:
            self._send_meta(desc, dst, meta_tag)
        elif tag not in self._sent_meta:
            self._send_meta(desc, dst, meta_tag)
            self._sent_meta[tag] = desc
        elif self._sent_meta[tag] != desc:
            raise RuntimeError(f"the activations sent by virtual stage {sender_virtual} changed from "
                               f"{self._sent_meta[tag]} to {desc} (dtype, needs grad, shape); pass "
                               "PipelineModule(..., dynamic_shape=True) when shapes vary between micro-batches")
        for t in tensors:
            self._isend(t.detach(), dst, tag)

    def _post(self, shapes, src, tag) -> None:
        tensors = [torch.empty(shape, dtype=dtype, device=self.device) for dtype, shape in shapes]
        works = [dist.irecv(t, src=src, tag=tag) for t in tensors]
        self._posted.setdefault(tag, []).append((works, tensors))

    def _take_posted(self, tag):
        queue = self._posted.get(tag)
        if not queue:
            return None
        works, tensors = queue.pop(0)
        for w in works:
            w.wait()
        return tensors

    def prefetch_activations(self, src: int, sender_virtual: int, training: bool) -> bool:
        """Post the next activation receive now (so the data moves while this stage computes);
        False when its shapes are not known yet (first message, or ``dynamic_shape``)."""
        tag = channel_tag(sender_virtual, ACT, training=training)
        if src == self._rank or self.dynamic_shape or tag not in self._recv_meta:
            return False
        self._post([(dtype, shape) for dtype, _, shape in self._recv_meta[tag]], src, tag)
        return True

    def prefetch_grads(self, like, src: int, sender_virtual: int) -> bool:
        tag = channel_tag(sender_virtual, GRAD)
        if src == self._rank:
            return False
        self._post([(t.dtype, tuple(t.shape)) for t in like], src, tag)
        return True

    def recv_activations(self, src: int, sender_virtual: int, training: bool) -> tuple:
        tag = channel_tag(sender_virtual, ACT, training=training)
        posted = self._take_posted(tag)
        if posted is not None:
            return tuple(t.requires_grad_(grad and training) for t, (_, grad, _) in zip(posted, self._recv_meta[tag]))
        if src == self._rank:
            return tuple(t.requires_grad_(grad and training) for t, grad in self._local[tag].pop(0))
        meta_tag = channel_tag(sender_virtual, ACT, meta=True, training=training)
        if self.dynamic_shape or tag not in self._recv_meta:
            self._recv_meta[tag] = self._recv_meta_msg(src, meta_tag)
        out = []
        for dtype, grad, shape in self._recv_meta[tag]:
            t = torch.empty(shape, dtype=dtype, device=self.device)
            dist.recv(t, src=src, tag=tag)
            if grad and training:
                t.requires_grad_(True)
            out.append(t)
        return tuple(out)

    def send_grads(self, grads, dst: int, sender_virtual: int) -> None:
        tag = channel_tag(sender_virtual, GRAD)
        if dst == self._rank:
            self._local.setdefault(tag, []).append(tuple(g.detach() for g in grads))
            return
        for g in grads:
            self._isend(g.detach(), dst, tag)

    def recv_grads(self, like, src: int, sender_virtual: int) -> tuple:
        """Gradients of the tensors ``like`` (this stage's outputs that need one)."""
        tag = channel_tag(sender_virtual, GRAD)
        posted = self._take_posted(tag)
        if posted is not None:
            return tuple(posted)
        if src == self._rank:
            return self._local[tag].pop(0)
        out = []
        for t in like:
            g = torch.empty_like(t, memory_format=torch.contiguous_format)
            dist.recv(g, src=src, tag=tag)
            out.append(g)
        return tuple(out)

    def wait_all(self) -> None:
        for work, _ in self._pending:
            work.wait()
        self._pending = []

    def reset_meta(self) -> None:
        """Forget the exchanged shapes (DeepSpeed's ``reset_activation_shape``); both sides must call it."""
        self._sent_meta.clear()
        self._recv_meta.clear()


# -- DeepSpeed's module-level helpers ----------------------------------------------------------------

_grid = None


def init_process_groups(grid) -> None:
    """Remember the grid whose stages :func:`send` / :func:`recv` address."""
    global _grid
    _grid = grid


def _stage_rank(stage_id: int) -> int:
    if _grid is None:
        raise RuntimeError("p2p.init_process_groups(grid) must be called before send/recv")
    return _grid.stage_to_global(stage_id)


def send(tensor, dest_stage, async_op=False):
    """Send ``tensor`` to the rank of ``dest_stage`` with this rank's other coordinates."""
    dst = _stage_rank(dest_stage)
    if async_op:
        return dist.isend(tensor, dst)
    return dist.send(tensor, dst)


def recv(tensor, src_stage, async_op=False):
    src = _stage_rank(src_stage)
    if async_op:
        return dist.irecv(tensor, src)
    return dist.recv(tensor, src)
