"""deepspeed.testing.distributed: results in rank order, every failing rank reported, no hangs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from deepspeed.testing.distributed import DistributedTestError, distributed_test, run_distributed


def _env_body(scale, offset=0):
    import deepspeed.comm as dist

    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")
    return {"env": {k: os.environ[k] for k in keys}, "value": dist.get_rank() * scale + offset,
            "initialized": dist.is_initialized(), "extra": os.environ.get("DS_HARNESS_EXTRA")}


def _early_exit_body():
    import deepspeed.comm as dist

    if dist.get_rank() == 1:
        os._exit(3)
    dist.barrier()  # rank 0 waits for a peer that is gone
    return "unreachable"


def _raising_body():
    import deepspeed.comm as dist

    if dist.get_rank() == 1:
        raise KeyError("rank one lost its key")
    return "rank 0 fine"


def _sleeping_body():
    import deepspeed.comm as dist

    if dist.get_rank() == 1:
        time.sleep(60)
    return "awake"


def _killed_body():
    import deepspeed.comm as dist

    if dist.get_rank() == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return "alive"


def _unpicklable_result_body():
    return lambda: None


def _noop_body():
    return None


def test_results_come_back_in_rank_order_with_env_set():
    results = run_distributed(_env_body, world_size=3, args=(10,), kwargs={"offset": 1},
                              env={"DS_HARNESS_EXTRA": "yes"})
    assert [r["value"] for r in results] == [1, 11, 21]
    for rank, r in enumerate(results):
        assert r["env"] == {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1"}
        assert r["initialized"] is True and r["extra"] == "yes"


def test_rank_exiting_early_fails_fast_naming_it():
    start = time.monotonic()
    with pytest.raises(DistributedTestError, match=r"failed on rank\(s\) 1\b") as info:
        run_distributed(_early_exit_body, world_size=2, timeout=60)
    assert time.monotonic() - start < 30
    assert "rank 1 exited (exit code 3) before returning a result" in str(info.value)
    assert 0 in info.value.failures  # rank 0's broken barrier is reported too


def test_raising_rank_shows_its_traceback():
    with pytest.raises(DistributedTestError) as info:
        run_distributed(_raising_body, world_size=2)
    message = str(info.value)
    assert "----- rank 1 -----" in message
    assert "KeyError: 'rank one lost its key'" in message
    assert "in _raising_body" in message
    assert info.value.results == {0: "rank 0 fine"}


def test_hung_rank_times_out_with_its_stack():
    start = time.monotonic()
    with pytest.raises(DistributedTestError, match=r"rank 1 did not finish within the 3 s timeout") as info:
        run_distributed(_sleeping_body, world_size=2, timeout=3)
    assert time.monotonic() - start < 15
    assert "_sleeping_body" in info.value.failures[1]  # faulthandler stack of the hung rank
    assert info.value.results == {0: "awake"}


def test_killed_rank_is_reported_with_the_signal():
    with pytest.raises(DistributedTestError, match=r"rank 0 exited \(killed by signal 9\)"):
        run_distributed(_killed_body, world_size=2, timeout=60)


def test_unpicklable_result_is_reported():
    with pytest.raises(DistributedTestError, match=r"return value could not be sent back \(it must be picklable\)"):
        run_distributed(_unpicklable_result_body, world_size=1)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"cannot be pickled .* define the test body at module level"):
        run_distributed(lambda: None, world_size=2)
    with pytest.raises(ValueError, match=r"world_size=0 must be a positive int"):
        run_distributed(_noop_body, world_size=0)


def _initialized_body():
    import torch.distributed

    return torch.distributed.is_initialized()


def test_init_distributed_false_leaves_torch_distributed_alone():
    assert run_distributed(_initialized_body, world_size=2, init_distributed=False) == [False, False]
    assert run_distributed(_initialized_body, world_size=2) == [True, True]


@distributed_test(world_size=2)
def test_decorator_runs_on_every_rank_with_fixtures(tmp_path):
    import deepspeed.comm as dist

    (tmp_path / f"rank{dist.get_rank()}").write_text("x")
    dist.barrier()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]


def _tensor_results_body():
    import os
    import tempfile

    import torch
    import torch.distributed as dist

    rank = dist.get_rank()
    flat = torch.arange(1000, dtype=torch.float32) + rank  # ZeRO keeps parameters as views of a flat buffer
    param = torch.nn.Parameter(flat[10:16].view(2, 3))
    # a tensor in a shared file mapping (the engine's gradient buffers live in /dev/shm)
    path = os.path.join(tempfile.gettempdir(), f"ds_harness_{os.getpid()}")
    mapped = torch.from_file(path, shared=True, size=64, dtype=torch.float32)
    os.unlink(path)
    mapped.fill_(rank)
    return {"view": flat[3:5], "param": param, "nested": [flat[:2], (rank, flat[-1:])], "mapped": mapped[:4]}


def test_ranks_return_tensors_and_views_of_large_buffers():
    import torch

    res = run_distributed(_tensor_results_body, world_size=2)
    for rank, r in enumerate(res):
        assert torch.equal(r["view"], torch.tensor([3.0, 4.0]) + rank)
        assert r["view"].untyped_storage().nbytes() == 2 * 4  # only its own elements travelled
        assert torch.equal(r["param"], (torch.arange(10, 16, dtype=torch.float32) + rank).view(2, 3))
        assert r["nested"][1][0] == rank and torch.equal(r["nested"][1][1], torch.tensor([999.0 + rank]))
        assert torch.equal(r["mapped"], torch.full((4,), float(rank)))
