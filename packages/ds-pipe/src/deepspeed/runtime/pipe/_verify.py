"""Checking instruction streams without a model: every rank's schedule is executed symbolically,
messages travel over FIFO channels between neighbouring (virtual) stages, and what each
instruction needs is checked (a forward has its input, a backward its forward and gradient, no
buffer is overwritten while in use, each micro-batch goes forward before backward on every stage).

``mode="eager"`` is how the pipeline engine runs (sends posted without waiting, receives block);
``mode="rendezvous"`` makes each send wait for the matching receive (what DeepSpeed's blocking
engine needs). Unit costs give the idealised timeline used for the bubble of a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deepspeed.runtime.pipe import schedule as S

_COMPUTE = (S.ForwardPass, S.BackwardPass, S.BackwardInputPass, S.BackwardWeightPass)


class ScheduleError(AssertionError):
    """A stream breaks a pipeline rule (or deadlocks); the message names the rank and instruction."""


@dataclass
class _Rank:
    stage: int
    chunks: int
    cmds: list
    pc: int = 0
    clock: float = 0.0
    busy: float = 0.0
    buffers: dict = field(default_factory=dict)   # buffer -> state dict
    loads: int = 0
    labels: dict = field(default_factory=dict)     # buffer -> micro-batch whose labels it holds
    forwards: dict = field(default_factory=dict)   # chunk -> count
    done: set = field(default_factory=set)         # (kind, mb, chunk)


@dataclass
class Result:
    """``makespan``: idealised time of the batch; ``busy``: compute time per rank;
    ``bubble``: ``1 - sum(busy) / (ranks * makespan)``; ``passes``: per rank, its compute passes
    ``(kind, micro_batch, chunk)`` in execution order; ``peak_buffers`` per rank."""

    makespan: float
    busy: list
    bubble: float
    passes: list
    peak_buffers: list


def simulate(schedules: list, mode: str = "eager", costs: dict | None = None) -> Result:
    """Run the streams of ``schedules`` (one per stage, rank order) against each other."""
    if mode not in ("eager", "rendezvous"):
        raise ValueError(f"mode={mode!r}: use 'eager' or 'rendezvous'")
    costs = {"F": 1.0, "B": 2.0, "I": 1.0, "W": 1.0, **(costs or {})}
    p = len(schedules)
    ranks = []
    for s, sched in enumerate(schedules):
        if sched.stage_id != s or sched.stages != p:
            raise ValueError(f"schedule {s} is for stage {sched.stage_id} of {sched.stages}; pass one per stage, in order")
        ranks.append(_Rank(stage=s, chunks=getattr(sched, "chunks", 1), cmds=[c for step in sched for c in step]))
    m = schedules[0].micro_batches
    chunks = ranks[0].chunks
    last_virtual = chunks * p - 1
    channels: dict = {}  # (kind, src, dst) -> [(mb, chunk, time)]
    training = any(isinstance(c, (S.BackwardPass, S.BackwardInputPass)) for r in ranks for c in r.cmds)
    passes = [[] for _ in range(p)]
    peaks = [0] * p

    def err(r, cmd, msg):
        raise ScheduleError(f"stage {r.stage}, instruction {r.pc} {cmd!r}: {msg}")

    def virtual(r, chunk):
        return chunk * p + r.stage

    def state(r, cmd):
        if cmd.buffer_id not in r.buffers:
            err(r, cmd, "buffer holds no micro-batch")
        return r.buffers[cmd.buffer_id]

    def check_ids(r, cmd, mb, chunk):
        if getattr(cmd, "micro_batch_id", mb) != mb or getattr(cmd, "chunk_id", chunk) != chunk:
            err(r, cmd, f"the buffer holds micro-batch {mb} of chunk {chunk}")

    def claim(r, cmd, mb, chunk):
        if cmd.buffer_id in r.buffers:
            old = r.buffers[cmd.buffer_id]
            if not old.get("free"):
                err(r, cmd, f"overwrites micro-batch {old['mb']} (chunk {old['chunk']}) still in use")
        r.buffers[cmd.buffer_id] = {"mb": mb, "chunk": chunk}
        peaks[r.stage] = max(peaks[r.stage], sum(1 for b in r.buffers.values() if not b.get("free")))

    def release(st, v):
        # a training buffer is reusable once its backward (or weight pass) ran and its input
        # gradient left (the first stage sends none)
        if training and (st.get("B") or st.get("W")) and (v == 0 or st.get("grad_sent")):
            st["free"] = True

    def peer(r, chunk, step):
        v = virtual(r, chunk) + step
        return v % p, v // p

    def try_step(r) -> bool:
        cmd = r.cmds[r.pc]
        if isinstance(cmd, (S.SendActivation, S.SendGrad)):
            st = state(r, cmd)
            check_ids(r, cmd, st["mb"], st["chunk"])
            fwd = isinstance(cmd, S.SendActivation)
            if fwd and not st.get("F"):
                err(r, cmd, "sends an activation before the forward pass")
            if not fwd and not (st.get("B") or st.get("I")):
                err(r, cmd, "sends a gradient before the backward pass")
            dst, dchunk = peer(r, st["chunk"], 1 if fwd else -1)
            if not 0 <= virtual(r, st["chunk"]) + (1 if fwd else -1) <= last_virtual:
                err(r, cmd, "sends past the end of the pipeline")
            key = ("act" if fwd else "grad", r.stage, dst)
            if mode == "rendezvous":
                other = ranks[dst]
                want = S.RecvActivation if fwd else S.RecvGrad
                if other.pc >= len(other.cmds) or not isinstance(other.cmds[other.pc], want):
                    return False
            channels.setdefault(key, []).append((st["mb"], dchunk, r.clock))
            if not fwd:
                st["grad_sent"] = True
                release(st, virtual(r, st["chunk"]))
            if not training:
                st["free"] = True  # inference: the activation is gone once sent
            if mode == "rendezvous":
                try_step(ranks[dst])  # the receiver takes it now
            r.pc += 1
            return True
        if isinstance(cmd, (S.RecvActivation, S.RecvGrad)):
            fwd = isinstance(cmd, S.RecvActivation)
            if fwd:
                src = (r.stage - 1) % p
            else:
                src = (r.stage + 1) % p
            queue = channels.get(("act" if fwd else "grad", src, r.stage), [])
            if not queue:
                return False
            mb, chunk, t = queue.pop(0)
            check_ids(r, cmd, mb, chunk)
            if fwd:
                claim(r, cmd, mb, chunk)
                r.buffers[cmd.buffer_id]["input"] = True
            else:
                st = state(r, cmd)
                if (st["mb"], st["chunk"]) != (mb, chunk):
                    err(r, cmd, f"receives the gradient of micro-batch {mb} (chunk {chunk}) into the buffer of "
                                f"micro-batch {st['mb']} (chunk {st['chunk']})")
                st["grad"] = True
            r.clock = max(r.clock, t)
            r.pc += 1
            return True
        if isinstance(cmd, S.LoadMicroBatch):
            chunk = getattr(cmd, "chunk_id", 0 if r.stage == 0 else r.chunks - 1)
            v = virtual(r, chunk)
            if v == 0:
                mb = r.loads
                check_ids(r, cmd, mb, chunk)
                claim(r, cmd, mb, chunk)
                r.buffers[cmd.buffer_id]["input"] = True
            if v == last_virtual:
                r.labels[cmd.buffer_id] = r.loads
            if v not in (0, last_virtual):
                err(r, cmd, "loads data on a stage that is neither first nor last")
            r.loads += 1
            r.pc += 1
            return True
        if isinstance(cmd, _COMPUTE):
            st = state(r, cmd)
            mb, chunk = st["mb"], st["chunk"]
            check_ids(r, cmd, mb, chunk)
            v = virtual(r, chunk)
            kind = {S.ForwardPass: "F", S.BackwardPass: "B", S.BackwardInputPass: "I",
                    S.BackwardWeightPass: "W"}[type(cmd)]
            if kind == "F":
                if not st.get("input"):
                    err(r, cmd, "forward without an input")
                if v == last_virtual and r.labels.get(cmd.buffer_id) != mb:
                    err(r, cmd, f"forward of micro-batch {mb} on the last stage with the labels of micro-batch "
                                f"{r.labels.get(cmd.buffer_id)}")
                if st.get("F"):
                    err(r, cmd, f"second forward of micro-batch {mb}")
                want = r.forwards.get(chunk, 0)
                if mb != want:
                    err(r, cmd, f"forward of micro-batch {mb} of chunk {chunk} out of order (expected {want})")
                r.forwards[chunk] = want + 1
            elif kind in ("B", "I"):
                if not st.get("F"):
                    err(r, cmd, f"backward of micro-batch {mb} before its forward")
                if v < last_virtual and not st.get("grad"):
                    err(r, cmd, "backward without the gradient of the next stage")
            else:
                if not st.get("I"):
                    err(r, cmd, "weight gradient before the input gradient")
            st[kind] = True
            if not training and v == last_virtual:
                st["free"] = True
            release(st, v)
            r.done.add((kind, mb, chunk))
            passes[r.stage].append((kind, mb, chunk))
            r.clock += costs[kind]
            r.busy += costs[kind]
            r.pc += 1
            return True
        r.pc += 1  # reductions and the optimizer step: no data dependencies within the stage
        return True

    progress = True
    while progress:
        progress = False
        for r in ranks:
            while r.pc < len(r.cmds) and try_step(r):
                progress = True
    stuck = [r for r in ranks if r.pc < len(r.cmds)]
    if stuck:
        where = "; ".join(f"stage {r.stage} waits at {r.cmds[r.pc]!r}" for r in stuck)
        raise ScheduleError(f"deadlock ({mode} sends): {where}")
    left = {k: v for k, v in channels.items() if v}
    if left:
        raise ScheduleError(f"messages never received: {left}")
    for r in ranks:
        backward = "B" if any(k == "B" for k, _, _ in passes[r.stage]) else "I"
        for chunk in range(r.chunks):
            for mb in range(m):
                need = [("F", mb, chunk), (backward, mb, chunk)] + ([("W", mb, chunk)] if backward == "I" else [])
                missing = [n for n in need if n not in r.done]
                if missing and any(k != "F" for k, _, _ in passes[r.stage]):
                    raise ScheduleError(f"stage {r.stage} never runs {missing}")
    makespan = max(r.clock for r in ranks)
    busy = [r.busy for r in ranks]
    bubble = 1.0 - sum(busy) / (p * makespan) if makespan else 0.0
    return Result(makespan=makespan, busy=busy, bubble=bubble, passes=passes, peak_buffers=peaks)
