"""Schedules as data (deepspeed.runtime.pipe.schedule), checked without a model: step counts and
buffers (DeepSpeed's), where each pass lands, and every stage's stream executed against the others
by the simulator (deepspeed.runtime.pipe._verify): forward before backward on every stage, buffers
never overwritten in use, every message received, no deadlock."""

import pytest

from deepspeed.runtime.pipe import schedule as S
from deepspeed.runtime.pipe._verify import ScheduleError, simulate

SHAPES = [(2, 1), (2, 2), (2, 4), (2, 8), (3, 5), (4, 4), (4, 8)]


def _kinds(cmds):
    return [type(c) for c in cmds]


def test_train_schedule_step_counts_and_pass_positions():
    for p, m in SHAPES:
        for s in range(p):
            sched = S.TrainSchedule(micro_batches=m, stages=p, stage_id=s)
            steps = list(sched)
            assert len(steps) == 2 * (m + p - 1)
            assert sched.num_pipe_buffers() == max(2, min(p - s, m))
            fwd = [i for i, c in enumerate(steps) if S.ForwardPass in _kinds(c)]
            bwd = [i for i, c in enumerate(steps) if S.BackwardPass in _kinds(c)]
            # micro-batch j: forward at step 2j + s, backward at step 2j + 2p - 1 - s
            assert fwd == [2 * j + s for j in range(m)]
            assert bwd == [2 * j + 2 * p - 1 - s for j in range(m)]
            assert _kinds(steps[-1])[-3:] == [S.ReduceTiedGrads, S.ReduceGrads, S.OptimizerStep]
            assert all(S.OptimizerStep not in _kinds(c) for c in steps[:-1])
            for c in steps:
                for instr in c:
                    if isinstance(instr, S.BufferOpInstruction):
                        assert 0 <= instr.buffer_id < sched.num_pipe_buffers()
            if s == 0:
                assert all(not isinstance(i, (S.SendGrad, S.RecvActivation)) for c in steps for i in c)
            if s == p - 1:
                assert all(not isinstance(i, (S.SendActivation, S.RecvGrad)) for c in steps for i in c)


def test_single_stage_schedules():
    train = list(S.TrainSchedule(micro_batches=4, stages=1, stage_id=0))
    assert len(train) == 8
    for i, cmds in enumerate(train):
        if i % 2:
            assert _kinds(cmds)[0] is S.BackwardPass and len(cmds) in (1, 4)
        else:
            assert _kinds(cmds) == [S.LoadMicroBatch, S.ForwardPass] and cmds[0].buffer_id == cmds[1].buffer_id
    infer = list(S.InferenceSchedule(micro_batches=4, stages=1, stage_id=0))
    assert [_kinds(c) for c in infer] == [[S.LoadMicroBatch, S.ForwardPass]] * 4
    dp = S.DataParallelSchedule(micro_batches=3, stages=1, stage_id=0)
    steps = list(dp)
    assert dp.num_pipe_buffers() == 1 and len(steps) == 3
    assert _kinds(steps[-1]) == [S.LoadMicroBatch, S.ForwardPass, S.BackwardPass, S.ReduceGrads, S.OptimizerStep]


@pytest.mark.parametrize("m", [1, 3, 8])
def test_inference_schedule_first_and_middle_stage(m):
    first = S.InferenceSchedule(micro_batches=m, stages=3, stage_id=0)
    steps = list(first)
    assert len(steps) == m + 2 and first.num_pipe_buffers() == 2
    assert _kinds(steps[0]) == [S.LoadMicroBatch, S.ForwardPass]
    for i in range(1, m):
        assert _kinds(steps[i]) == [S.LoadMicroBatch, S.SendActivation, S.ForwardPass]
        assert steps[i][0].buffer_id == steps[i][2].buffer_id != steps[i][1].buffer_id
    assert _kinds(steps[m]) == [S.SendActivation]
    assert all(c == [] for c in steps[m + 1:])
    mid = list(S.InferenceSchedule(micro_batches=m, stages=3, stage_id=1))
    assert mid[0] == []
    assert _kinds(mid[1]) == [S.RecvActivation, S.ForwardPass]
    assert _kinds(mid[m + 1]) == [S.SendActivation]


def test_instructions_are_data():
    f = S.ForwardPass(buffer_id=1)
    assert f.buffer_id == 1 and repr(f) == "ForwardPass(buffer_id=1)" and f == S.ForwardPass(1)
    assert S.ForwardPass(1) != S.BackwardPass(1)
    assert repr(S.SendActivation(0, micro_batch_id=2, chunk_id=1)) == \
        "SendActivation(buffer_id=0, micro_batch_id=2, chunk_id=1)"


def _all(cls, m, p, **kw):
    return [cls(m, p, s, **kw) for s in range(p)]


@pytest.mark.parametrize("p,m", SHAPES)
def test_every_schedule_runs_against_itself(p, m):
    """Every stream pairs its sends and receives without deadlock; the bubble of the idealised
    timeline (F = 1, B = 2 or I = W = 1) is 1F1B's (p-1)/(m+p-1), and zero-bubble's is lower."""
    one = simulate(_all(S.TrainSchedule, m, p), mode="rendezvous")  # DeepSpeed's blocking pairing too
    one = simulate(_all(S.TrainSchedule, m, p))
    assert one.bubble == pytest.approx((p - 1) / (m + p - 1))
    for s, sched in enumerate(_all(S.TrainSchedule, m, p)):
        assert one.peak_buffers[s] <= sched.num_pipe_buffers()
    simulate(_all(S.InferenceSchedule, m, p), mode="rendezvous")
    zb = simulate(_all(S.ZeroBubbleSchedule, m, p))
    # ZB-H1 with F = I = W: the bubble is (p-1)(F+I-W) over m(F+I+W) + that, when m >= p
    if m >= p:
        assert zb.bubble == pytest.approx((p - 1) / (3 * m + p - 1))
    assert zb.bubble < one.bubble
    for s, sched in enumerate(_all(S.ZeroBubbleSchedule, m, p)):
        assert zb.peak_buffers[s] <= sched.num_pipe_buffers() <= min(p, m)  # 1F1B's first-stage memory
    if m % p == 0:
        for v in (2, 3):
            inter = simulate(_all(S.InterleavedSchedule, m, p, chunks=v), costs={"F": 1 / v, "B": 2 / v})
            assert inter.bubble == pytest.approx((p - 1) / (v * m + p - 1))
            assert inter.bubble < one.bubble


def test_zero_bubble_stream_definition():
    """B of micro-batch j on stage s precedes its W, which waits for s further B passes (or the end)."""
    p, m = 4, 6
    res = simulate(_all(S.ZeroBubbleSchedule, m, p))
    for s, passes in enumerate(res.passes):
        order = [(k, mb) for k, mb, _ in passes]
        for j in range(m):
            f, i, w = order.index(("F", j)), order.index(("I", j)), order.index(("W", j))
            assert f < i < w
            later_b = [mb for k, mb in order[i + 1:w] if k == "I"]
            assert len(later_b) == min(s, m - 1 - j)
        warm = next(n for n, (k, _) in enumerate(order) if k != "F")
        assert warm == min(p - s, m)  # 1F1B's warm-up, then its first steady forward


def test_interleaved_stream_definition():
    """Rank r's forwards go chunk by chunk in groups of p micro-batches; backwards in reverse chunk order."""
    p, m, v = 2, 4, 2
    res = simulate(_all(S.InterleavedSchedule, m, p, chunks=v))
    for passes in res.passes:
        fwd = [(mb, c) for k, mb, c in passes if k == "F"]
        bwd = [(mb, c) for k, mb, c in passes if k == "B"]
        assert fwd == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 0), (2, 1), (3, 1)]
        assert bwd == [(0, 1), (1, 1), (0, 0), (1, 0), (2, 1), (3, 1), (2, 0), (3, 0)]
    with pytest.raises(ValueError, match=r"divisible by the number of stages \(gradient_accumulation_steps=3, "
                                         r"stages=2\); use a multiple of 2 micro-batches"):
        S.InterleavedSchedule(3, 2, 0)


class _Swapped(S.TrainSchedule):
    """Stage 1 waits for a gradient before it has sent the activation that produces it."""

    def steps(self):
        cmds = [c for step in super().steps() for c in step]
        recv = next(i for i, c in enumerate(cmds) if isinstance(c, S.RecvGrad))
        send = next(i for i, c in enumerate(cmds) if isinstance(c, S.SendActivation))
        cmds[recv], cmds[send] = cmds[send], cmds[recv]
        yield cmds


def test_simulator_finds_a_deadlock_and_a_broken_stream():
    scheds = [S.TrainSchedule(4, 3, 0), _Swapped(4, 3, 1), S.TrainSchedule(4, 3, 2)]
    with pytest.raises(ScheduleError, match=r"deadlock \(eager sends\): stage 0 waits at RecvGrad"):
        simulate(scheds)

    class NoBackward(S.TrainSchedule):
        def steps(self):
            for step in super().steps():
                yield [c for c in step if not isinstance(c, S.BackwardPass)]

    with pytest.raises(ScheduleError, match="sends a gradient before the backward pass"):
        simulate([S.TrainSchedule(2, 2, 0), NoBackward(2, 2, 1)])


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match=r"TrainSchedule: micro_batches=0 must be a positive integer"):
        S.TrainSchedule(0, 2, 0)
    with pytest.raises(ValueError, match=r"stage_id=2 must be in \[0, 2\)"):
        S.TrainSchedule(4, 2, 2)
