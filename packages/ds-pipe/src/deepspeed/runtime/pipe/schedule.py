"""Pipeline schedules as data (DeepSpeed's ``deepspeed.runtime.pipe.schedule``).

A schedule is built for one stage (``PipeSchedule(micro_batches, stages, stage_id)``); iterating
it (``steps()``) yields one list of :class:`PipeInstruction` per step, which the pipeline engine
executes in order. Nothing here touches a model or a process group, so streams can be checked
on their own (``deepspeed.runtime.pipe._verify`` simulates the send/receive pairing).

- :class:`TrainSchedule`: DeepSpeed's synchronous 1F1B, ``2 * (micro_batches + stages - 1)``
  steps; stage ``s`` runs the forward of micro-batch ``j`` at step ``2j + s`` and its backward at
  step ``2j + 2 * stages - 1 - s``; activations and gradients move one step after they are
  produced. ``num_pipe_buffers() = max(2, min(stages - stage_id, micro_batches))``.
- :class:`InferenceSchedule`: forwards only, ``micro_batches + stages - 1`` steps, 2 buffers.
- :class:`DataParallelSchedule`: one stage, forward and backward per micro-batch, 1 buffer.
- :class:`InterleavedSchedule` (beyond DeepSpeed): each rank holds ``chunks`` model chunks, chunk
  ``c`` of rank ``r`` being virtual stage ``c * stages + r``; forwards go in groups of ``stages``
  micro-batches per chunk (Megatron-LM's interleaved 1F1B), so the bubble is
  ``(p - 1) / (v * m + p - 1)``. Needs ``micro_batches % stages == 0``.
- :class:`ZeroBubbleSchedule` (beyond DeepSpeed, ZB-H1 of Qi et al. 2023): the backward is split
  into :class:`BackwardInputPass` (B, the input gradient the previous stage waits for) and
  :class:`BackwardWeightPass` (W, the weight gradient nobody waits for); stage ``s`` runs 1F1B with
  B in place of the backward and delays each W by ``s`` backwards, which fills the cool-down
  bubble: ``(p - 1)(F + B - W)`` instead of ``(p - 1)(F + B + W)``.

The schedules of the last two kinds carry ``micro_batch_id`` and ``chunk_id`` in every instruction
that moves or computes a micro-batch; sends are posted without waiting (the engine waits for them
when the batch ends), receives block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


def _call_to_str(name: str, **kwargs) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


# -- instructions ----------------------------------------------------------------------------------


class PipeInstruction:
    """One action of a stage; ``kwargs`` become attributes (``ForwardPass(buffer_id=0).buffer_id``)."""

    def __init__(self, **kwargs):
        self.name = type(self).__name__
        self.kwargs = kwargs
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        return _call_to_str(self.name, **self.kwargs)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.kwargs == other.kwargs

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.kwargs.items()))))


class OptimizerStep(PipeInstruction):
    """Step the optimizer (and LR schedule) once every micro-batch's gradients are reduced."""


class ReduceGrads(PipeInstruction):
    """Reduce the gradients over the data-parallel group of the stage."""


class ReduceTiedGrads(PipeInstruction):
    """Sum the gradients of tied weights over the stages that hold them."""


class BufferOpInstruction(PipeInstruction):
    """An instruction on one pipeline buffer."""

    def __init__(self, buffer_id, **kwargs):
        super().__init__(buffer_id=buffer_id, **kwargs)


class LoadMicroBatch(BufferOpInstruction):
    """First stage: next micro-batch's inputs into the buffer; last stage: its labels."""


class ForwardPass(BufferOpInstruction):
    """Forward of the buffer's inputs (and the loss on the last stage)."""


class BackwardPass(BufferOpInstruction):
    """Backward of the buffer's outputs with the received gradient (the loss on the last stage)."""


class BackwardInputPass(BufferOpInstruction):
    """Zero-bubble B: the gradient of the buffer's inputs only (what the previous stage waits for)."""


class BackwardWeightPass(BufferOpInstruction):
    """Zero-bubble W: the weight gradients of the buffer, from what B kept; frees the buffer."""


class SendActivation(BufferOpInstruction):
    """Send the buffer's outputs to the next stage."""


class RecvActivation(BufferOpInstruction):
    """Receive the previous stage's outputs as the buffer's inputs."""


class SendGrad(BufferOpInstruction):
    """Send the gradient of the buffer's inputs to the previous stage."""


class RecvGrad(BufferOpInstruction):
    """Receive the gradient of the buffer's outputs from the next stage."""


# -- schedules -------------------------------------------------------------------------------------


class PipeSchedule(ABC):
    """The instruction stream of stage ``stage_id`` of ``stages`` for ``micro_batches`` micro-batches."""

    def __init__(self, micro_batches, stages, stage_id):
        for name, value in (("micro_batches", micro_batches), ("stages", stages)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name}={value!r} must be a positive integer")
        if not isinstance(stage_id, int) or not 0 <= stage_id < stages:
            raise ValueError(f"{type(self).__name__}: stage_id={stage_id!r} must be in [0, {stages})")
        self.micro_batches = micro_batches
        self.stages = stages
        self.stage_id = stage_id
        self.prev_stage = stage_id - 1
        self.next_stage = stage_id + 1

    @abstractmethod
    def steps(self):
        """Yield one list of instructions per step."""

    def num_pipe_buffers(self) -> int:
        """How many micro-batches' activations the stage holds at once."""
        return self.micro_batches

    def _valid_micro_batch(self, micro_batch_id) -> bool:
        return 0 <= micro_batch_id < self.micro_batches

    def _valid_stage(self, stage_id) -> bool:
        return 0 <= stage_id < self.stages

    @property
    def stage(self) -> int:
        return self.stage_id

    @property
    def num_stages(self) -> int:
        return self.stages

    @property
    def num_micro_batches(self) -> int:
        return self.micro_batches

    @property
    def is_first_stage(self) -> bool:
        return self.stage_id == 0

    @property
    def is_last_stage(self) -> bool:
        return self.stage_id == self.stages - 1

    def _buffer_idx(self, micro_batch_id) -> int:
        assert self._valid_micro_batch(micro_batch_id)
        return micro_batch_id % self.num_pipe_buffers()

    def __iter__(self):
        self.it = None
        return self

    def __next__(self):
        if self.it is None:
            self.it = self.steps()
        return next(self.it)


class InferenceSchedule(PipeSchedule):
    """Forward passes only; two buffers alternate between receiving and sending."""

    def steps(self):
        s = self.stage_id
        for step in range(self.micro_batches + self.stages - 1):
            mb = step - s
            # Note: even stages receive into buffer step%2 and send the other one; odd stages the
            # opposite, so a sender's send buffer is its neighbour's receive buffer of that step.
            recv_buf, send_buf = (step % 2, (step + 1) % 2) if s % 2 == 0 else ((step + 1) % 2, step % 2)
            cmds = []
            if (self.is_first_stage or self.is_last_stage) and self._valid_micro_batch(mb):
                cmds.append(LoadMicroBatch(recv_buf))
            send = self._valid_stage(self.next_stage) and self._valid_micro_batch(mb - 1)
            recv = self._valid_stage(self.prev_stage) and self._valid_micro_batch(mb)
            # even stages send first, odd ones receive first: the pairs never wait on each other
            order = [("send", send), ("recv", recv)] if s % 2 == 0 else [("recv", recv), ("send", send)]
            for kind, wanted in order:
                if wanted:
                    cmds.append(SendActivation(send_buf) if kind == "send" else RecvActivation(recv_buf))
            if self._valid_micro_batch(mb):
                cmds.append(ForwardPass(recv_buf))
            yield cmds

    def num_pipe_buffers(self) -> int:
        return 2


class TrainSchedule(PipeSchedule):
    """DeepSpeed's synchronous 1F1B (see the module docstring for the step of every pass)."""

    def _step_to_micro_batch(self, step_id):
        """``(micro_batch_id, is_forward)`` of ``step_id`` on this stage (the id may be out of range)."""
        s, p = self.stage_id, self.stages
        if (step_id + s) % 2 == 0:
            return (step_id - s) // 2, True
        return (step_id - (2 * p - 1 - s)) // 2, False

    def steps(self):
        prev_mb = -1
        total = 2 * (self.micro_batches + self.stages - 1)
        for step_id in range(total):
            mb, is_forward = self._step_to_micro_batch(step_id)
            prev_valid, curr_valid = self._valid_micro_batch(prev_mb), self._valid_micro_batch(mb)
            prev_buf = self._buffer_idx(prev_mb) if prev_valid else None
            curr_buf = self._buffer_idx(mb) if curr_valid else None
            cmds = []
            # what the previous step produced leaves now; what this step needs arrives now
            if is_forward:
                if prev_valid and self._valid_stage(self.prev_stage):
                    cmds.append(SendGrad(prev_buf))
                if curr_valid and self._valid_stage(self.prev_stage):
                    cmds.append(RecvActivation(curr_buf))
            else:
                if curr_valid and self._valid_stage(self.next_stage):
                    cmds.append(RecvGrad(curr_buf))
                if prev_valid and self._valid_stage(self.next_stage):
                    cmds.append(SendActivation(prev_buf))
            if (self.is_first_stage or self.is_last_stage) and is_forward and curr_valid:
                cmds.append(LoadMicroBatch(curr_buf))
            if curr_valid:
                cmds.append(ForwardPass(curr_buf) if is_forward else BackwardPass(curr_buf))
            if step_id == total - 1:
                cmds.extend([ReduceTiedGrads(), ReduceGrads(), OptimizerStep()])
            prev_mb = mb
            yield cmds

    def num_pipe_buffers(self) -> int:
        return max(2, min(self.stages - self.stage_id, self.micro_batches))


class DataParallelSchedule(PipeSchedule):
    """One stage: load, forward and backward each micro-batch, then reduce and step."""

    def steps(self):
        for step_id in range(self.micro_batches):
            cmds = [LoadMicroBatch(buffer_id=0), ForwardPass(buffer_id=0), BackwardPass(buffer_id=0)]
            if step_id == self.micro_batches - 1:
                cmds.extend([ReduceGrads(), OptimizerStep()])
            yield cmds

    def num_pipe_buffers(self) -> int:
        return 1


# -- beyond DeepSpeed: streams built from an ordered list of passes ---------------------------------


class _PassSchedule(PipeSchedule):
    """A schedule given as this rank's ordered passes ``(kind, micro_batch, chunk)`` with kind in
    F, B (full backward), I (input gradient), W (weight gradient); each pass becomes one step with
    the receives it needs before it and the sends it enables after it. Buffers are taken at F and
    released after the pass that ends the micro-batch (B, or W)."""

    chunks = 1

    def _passes(self):
        raise NotImplementedError

    def _virtual(self, chunk: int) -> int:
        return chunk * self.stages + self.stage_id

    def _streams(self):
        last_virtual = self.chunks * self.stages - 1
        free, held, peak, steps = [], {}, 0, []
        for kind, mb, chunk in self._passes():
            v = self._virtual(chunk)
            kw = {"micro_batch_id": mb, "chunk_id": chunk}
            cmds = []
            if kind == "F":
                buf = free.pop(0) if free else len(held)
                held[(mb, chunk)] = buf
                peak = max(peak, len(held))
                if v > 0:
                    cmds.append(RecvActivation(buf, **kw))
                if v == 0 or v == last_virtual:
                    cmds.append(LoadMicroBatch(buf, **kw))
                cmds.append(ForwardPass(buf, **kw))
                if v < last_virtual:
                    cmds.append(SendActivation(buf, **kw))
            else:
                buf = held[(mb, chunk)]
                if kind in ("B", "I"):
                    if v < last_virtual:
                        cmds.append(RecvGrad(buf, **kw))
                    cmds.append(BackwardPass(buf, **kw) if kind == "B" else BackwardInputPass(buf, **kw))
                    if v > 0:
                        cmds.append(SendGrad(buf, **kw))
                else:
                    cmds.append(BackwardWeightPass(buf, **kw))
                if kind in ("B", "W"):
                    del held[(mb, chunk)]
                    free.append(buf)
                    free.sort()
            steps.append(cmds)
        if steps:
            steps[-1].extend([ReduceTiedGrads(), ReduceGrads(), OptimizerStep()])
        return steps, peak

    def steps(self):
        yield from self._streams()[0]

    def num_pipe_buffers(self) -> int:
        return self._streams()[1]


class InterleavedSchedule(_PassSchedule):
    """Interleaved 1F1B over ``chunks`` model chunks per rank (see the module docstring)."""

    def __init__(self, micro_batches, stages, stage_id, chunks=2):
        super().__init__(micro_batches, stages, stage_id)
        if not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"InterleavedSchedule: chunks={chunks!r} must be a positive integer")
        if micro_batches % stages:
            raise ValueError(f"the interleaved schedule needs a number of micro-batches divisible by the number of "
                             f"stages (gradient_accumulation_steps={micro_batches}, stages={stages}); use a multiple "
                             f"of {stages} micro-batches, or the 1F1B schedule")
        self.chunks = chunks

    def _forward_item(self, k: int) -> tuple[int, int]:
        """The ``k``-th forward of every rank: groups of ``stages`` micro-batches, chunk by chunk."""
        p, v = self.stages, self.chunks
        group = k // p
        return (group // v) * p + k % p, group % v

    def _backward_item(self, k: int) -> tuple[int, int]:
        mb, chunk = self._forward_item(k)
        return mb, self.chunks - 1 - chunk

    def _passes(self):
        p, v, m, r = self.stages, self.chunks, self.micro_batches, self.stage_id
        total = v * m
        warmup = min(total, (p - r - 1) * 2 + (v - 1) * p) if v > 1 else min(total, p - r - 1)
        out, f, b = [], 0, 0
        for _ in range(warmup):
            out.append(("F", *self._forward_item(f)))
            f += 1
        while f < total:
            out.append(("F", *self._forward_item(f)))
            f += 1
            out.append(("B", *self._backward_item(b)))
            b += 1
        while b < total:
            out.append(("B", *self._backward_item(b)))
            b += 1
        return out


class ZeroBubbleSchedule(_PassSchedule):
    """ZB-H1: 1F1B with the backward split into B and W, W delayed (see the module docstring)."""

    def _passes(self):
        p, m, s = self.stages, self.micro_batches, self.stage_id
        warmup = min(p - s - 1, m)
        order = [("F", j, 0) for j in range(warmup)]
        f, b = warmup, 0
        while f < m:
            order.append(("F", f, 0))
            f += 1
            order.append(("I", b, 0))
            b += 1
        while b < m:
            order.append(("I", b, 0))
            b += 1
        # Note: W of micro-batch j runs after B of micro-batch j + s: the later the stage, the
        # longer it waits, which is what fills the cool-down (the earlier stages wait for B's there).
        out, done_b, w = [], 0, 0
        for item in order:
            out.append(item)
            if item[0] == "I":
                done_b += 1
                while w < done_b - s:
                    out.append(("W", w, 0))
                    w += 1
        out.extend(("W", j, 0) for j in range(w, m))
        return out


#: ``pipeline.schedule`` values -> schedule class for training.
TRAIN_SCHEDULES = {"1f1b": TrainSchedule, "interleaved": InterleavedSchedule, "zero_bubble": ZeroBubbleSchedule}
