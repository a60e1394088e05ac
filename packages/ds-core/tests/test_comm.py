"""deepspeed.comm on real gloo ranks: every collective with values computed from rank arithmetic,
init_distributed discovery and its errors, DEEPSPEED_TIMEOUT."""

from __future__ import annotations

import inspect
import math
import os
import sys
from datetime import timedelta
from unittest import mock

import pytest
import torch

import deepspeed
import deepspeed.comm as dist
from deepspeed.comm import ReduceOp
from deepspeed.testing.distributed import run_distributed


# ------------------------------------------------------------------ rank bodies (module level)
def _collectives_body():
    r, n = dist.get_rank(), dist.get_world_size()
    out = {}

    t = torch.tensor([r * 10.0, r * 10.0 + 1])
    dist.broadcast(t, src=n - 1)
    out["broadcast"] = t.tolist()
    objs = [{"rank": r}] if r == 1 else [None]
    dist.broadcast_object_list(objs, src=1)
    out["broadcast_object_list"] = objs[0]

    t = torch.tensor([r + 1.0, 2.0 * (r + 1)])
    dist.all_reduce(t)
    out["all_reduce_sum"] = t.tolist()
    t = torch.tensor([r + 1.0])
    dist.all_reduce(t, op=ReduceOp.AVG)
    out["all_reduce_avg"] = t.tolist()
    t = torch.tensor([r + 1.0])
    dist.all_reduce(t, op=ReduceOp.AVG, async_op=True).wait()
    out["all_reduce_avg_async"] = t.tolist()
    t = torch.tensor([float(r), -float(r)])
    dist.all_reduce(t, op=ReduceOp.MAX)
    out["all_reduce_max"] = t.tolist()
    t = torch.tensor([float(r), -float(r)])
    dist.all_reduce(t, op=ReduceOp.MIN)
    out["all_reduce_min"] = t.tolist()
    t = torch.tensor([r + 1.0])
    dist.all_reduce(t, op=ReduceOp.PRODUCT)
    out["all_reduce_product"] = t.tolist()
    for name in ("BAND", "BOR", "BXOR"):
        t = torch.tensor([(1 << r) | 1], dtype=torch.int64)
        dist.all_reduce(t, op=getattr(ReduceOp, name))
        out[f"all_reduce_{name.lower()}"] = t.tolist()
    t = torch.tensor([r + 1.0])
    dist.all_reduce(t, op=torch.distributed.ReduceOp.SUM)  # torch's own op passes through
    out["all_reduce_torch_op"] = t.tolist()
    try:
        dist.all_reduce(torch.ones(1), op=ReduceOp.UNUSED)
        out["unused_error"] = None
    except ValueError as exc:
        out["unused_error"] = str(exc)
    t = torch.tensor([r + 1.0])
    dist.inference_all_reduce(t)
    out["inference_all_reduce"] = t.tolist()

    t = torch.tensor([r + 1.0, 1.0])
    dist.reduce(t, dst=0)
    out["reduce_sum_dst0"] = t.tolist() if r == 0 else None
    t = torch.tensor([r + 1.0])
    dist.reduce(t, dst=n - 1, op=ReduceOp.AVG)
    out["reduce_avg_dstlast"] = t.tolist() if r == n - 1 else None

    parts = [torch.zeros(2) for _ in range(n)]
    dist.all_gather(parts, torch.tensor([float(r), r + 0.5]))
    out["all_gather"] = [p.tolist() for p in parts]
    objs = [None] * n
    dist.all_gather_object(objs, {"r": r})
    out["all_gather_object"] = objs
    flat = torch.zeros(2 * n)
    dist.all_gather_into_tensor(flat, torch.full((2,), float(r)))
    out["all_gather_into_tensor"] = flat.tolist()
    flat = torch.zeros(n)
    dist.allgather_fn(flat, torch.tensor([3.0 * r]))
    out["allgather_fn"] = flat.tolist()
    outs = [torch.zeros(n), torch.zeros(2 * n)]
    dist.all_gather_coalesced(outs, [torch.full((1,), float(r)), torch.full((2,), r + 10.0)])
    out["all_gather_coalesced"] = [o.tolist() for o in outs]

    o = torch.zeros(2)
    dist.reduce_scatter_tensor(o, torch.arange(2.0 * n) + r)
    out["reduce_scatter_tensor"] = o.tolist()
    o = torch.zeros(2)
    dist.reduce_scatter_tensor(o, torch.arange(2.0 * n) + r, op=ReduceOp.AVG)
    out["reduce_scatter_tensor_avg"] = o.tolist()
    o = torch.zeros(2)
    dist.reduce_scatter_fn(o, torch.arange(2.0 * n) + r)
    out["reduce_scatter_fn"] = o.tolist()
    o = torch.zeros(2)
    dist.reduce_scatter(o, [torch.full((2,), (r + 1.0) * (j + 1)) for j in range(n)])
    out["reduce_scatter"] = o.tolist()

    o = torch.zeros(n)
    dist.all_to_all_single(o, torch.tensor([r * 100.0 + j for j in range(n)]))
    out["all_to_all_single"] = o.tolist()
    send = torch.tensor([r * 100.0 + j for j in range(n) for _ in range(j + 1)])
    o = torch.zeros(n * (r + 1))
    dist.all_to_all_single(o, send, output_split_sizes=[r + 1] * n, input_split_sizes=[j + 1 for j in range(n)])
    out["all_to_all_single_uneven"] = o.tolist()
    outs = [torch.zeros(1) for _ in range(n)]
    dist.all_to_all(outs, [torch.full((1,), r * 10.0 + j) for j in range(n)])
    out["all_to_all"] = [x.item() for x in outs]

    nxt, prv = (r + 1) % n, (r - 1) % n
    buf = torch.zeros(2)
    if r % 2 == 0:
        dist.send(torch.full((2,), float(r)), dst=nxt)
        src = dist.recv(buf, src=prv)
    else:
        src = dist.recv(buf, src=prv)
        dist.send(torch.full((2,), float(r)), dst=nxt)
    out["send_recv"] = (buf.tolist(), src)
    buf = torch.zeros(1)
    works = [dist.isend(torch.full((1,), r + 0.25), dst=nxt), dist.irecv(buf, src=prv)]
    for w in works:
        w.wait()
    out["isend_irecv"] = buf.tolist()

    gl = [torch.zeros(1) for _ in range(n)] if r == 0 else None
    dist.gather(torch.tensor([2.0 * r]), gather_list=gl, dst=0)
    out["gather"] = [g.item() for g in gl] if r == 0 else None
    o = torch.zeros(1)
    dist.scatter(o, [torch.full((1,), 7.0 * j) for j in range(n)] if r == n - 1 else None, src=n - 1)
    out["scatter"] = o.tolist()

    out["barrier"] = dist.barrier()
    out["monitored_barrier"] = dist.monitored_barrier(timeout=timedelta(seconds=30))

    ts = [torch.full((2,), float(r)), torch.full((3,), r + 1, dtype=torch.int64), torch.full((1,), 2.0, dtype=torch.float64)]
    dist.all_reduce_coalesced(ts)
    out["all_reduce_coalesced"] = [(t.tolist(), str(t.dtype)) for t in ts]
    ts = [torch.full((2,), float(r)), torch.full((1,), 4.0 * r)]
    dist.all_reduce_coalesced(ts, op=ReduceOp.AVG, async_op=True).wait()
    out["all_reduce_coalesced_avg_async"] = [t.tolist() for t in ts]

    odd = list(range(1, n, 2))
    group = dist.new_group(odd)
    if r in odd:
        t = torch.tensor([float(r)])
        dist.all_reduce(t, op=ReduceOp.AVG, group=group)
        out["subgroup"] = {
            "avg": t.item(), "ranks": dist.get_all_ranks_from_group(group), "size": dist.get_world_size(group),
            "rank": dist.get_rank(group), "global_of_last": dist.get_global_rank(group, len(odd) - 1),
        }
    out["world"] = {
        "ranks": dist.get_all_ranks_from_group(), "local_rank": dist.get_local_rank(),
        "initialized": dist.is_initialized(), "available": dist.is_available(), "backend": dist.get_backend(),
        "world_group_size": dist.get_world_size(dist.get_world_group()), "global_rank": dist.get_global_rank(None, r),
        "has": [dist.has_all_gather_into_tensor(), dist.has_reduce_scatter_tensor(), dist.has_all_reduce_coalesced(),
                dist.has_coalescing_manager()],
        "logged": dist.has_comm_data(),
    }
    return out


def _expected(r: int, n: int) -> dict:
    s = n * (n + 1) / 2  # sum of (rank + 1)
    odd = list(range(1, n, 2))
    return {
        "broadcast": [(n - 1) * 10.0, (n - 1) * 10.0 + 1],
        "broadcast_object_list": {"rank": 1},
        "all_reduce_sum": [s, 2 * s],
        "all_reduce_avg": [s / n],
        "all_reduce_avg_async": [s / n],
        "all_reduce_max": [n - 1.0, 0.0],
        "all_reduce_min": [0.0, -(n - 1.0)],
        "all_reduce_product": [float(math.factorial(n))],
        "all_reduce_band": [1],
        "all_reduce_bor": [(1 << n) - 1],
        "all_reduce_bxor": [((1 << n) - 2) + n % 2],
        "all_reduce_torch_op": [s],
        "inference_all_reduce": [s],
        "reduce_sum_dst0": [s, float(n)] if r == 0 else None,
        "reduce_avg_dstlast": [s / n] if r == n - 1 else None,
        "all_gather": [[float(k), k + 0.5] for k in range(n)],
        "all_gather_object": [{"r": k} for k in range(n)],
        "all_gather_into_tensor": [float(k) for k in range(n) for _ in range(2)],
        "allgather_fn": [3.0 * k for k in range(n)],
        "all_gather_coalesced": [[float(k) for k in range(n)], [k + 10.0 for k in range(n) for _ in range(2)]],
        "reduce_scatter_tensor": [n * (2 * r + i) + n * (n - 1) / 2 for i in range(2)],
        "reduce_scatter_tensor_avg": [(2 * r + i) + (n - 1) / 2 for i in range(2)],
        "reduce_scatter_fn": [n * (2 * r + i) + n * (n - 1) / 2 for i in range(2)],
        "reduce_scatter": [s * (r + 1)] * 2,
        "all_to_all_single": [k * 100.0 + r for k in range(n)],
        "all_to_all_single_uneven": [k * 100.0 + r for k in range(n) for _ in range(r + 1)],
        "all_to_all": [k * 10.0 + r for k in range(n)],
        "send_recv": ([float((r - 1) % n)] * 2, (r - 1) % n),
        "isend_irecv": [(r - 1) % n + 0.25],
        "gather": [2.0 * k for k in range(n)] if r == 0 else None,
        "scatter": [7.0 * r],
        "barrier": None,
        "monitored_barrier": None,
        "all_reduce_coalesced": [([n * (n - 1) / 2] * 2, "torch.float32"), ([int(s)] * 3, "torch.int64"),
                                 ([2.0 * n], "torch.float64")],
        "all_reduce_coalesced_avg_async": [[(n - 1) / 2] * 2, [4.0 * (n - 1) / 2]],
        **({"subgroup": {"avg": sum(odd) / len(odd), "ranks": odd, "size": len(odd), "rank": odd.index(r),
                         "global_of_last": odd[-1]}} if r in odd else {}),
        "world": {"ranks": list(range(n)), "local_rank": r, "initialized": True, "available": True,
                  "backend": "gloo", "world_group_size": n, "global_rank": r, "has": [True] * 4, "logged": False},
    }


@pytest.mark.parametrize("world_size", [2, 4])
def test_every_collective_matches_rank_arithmetic(world_size):
    results = run_distributed(_collectives_body, world_size=world_size)
    for r, got in enumerate(results):
        assert got.pop("unused_error").startswith("op=ReduceOp.UNUSED is a placeholder")
        assert got == _expected(r, world_size), f"rank {r}"


# ------------------------------------------------------------------ init_distributed
_DS_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DEEPSPEED_TIMEOUT",
           "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK", "PMIX_SIZE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in _DS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # behave as if mpi4py were not installed
    return monkeypatch


def test_init_distributed_signature_matches_deepspeed():
    params = inspect.signature(deepspeed.init_distributed).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ("dist_backend", None), ("auto_mpi_discovery", True), ("distributed_port", 29500), ("verbose", True),
        ("timeout", timedelta(minutes=10)), ("init_method", None), ("dist_init_required", None), ("config", None),
        ("rank", -1), ("world_size", -1),
    ]
    # Lightning patches it with autospec and calls it positionally with the backend.
    with mock.patch("deepspeed.init_distributed", autospec=True) as patched:
        deepspeed.init_distributed("gloo", distributed_port=29501, timeout=timedelta(seconds=5))
    patched.assert_called_once()


def test_missing_env_names_the_variables_and_the_fix(clean_env):
    with pytest.raises(RuntimeError, match=r"RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK are not set.*"
                                           r"mpi4py not importable.*Fix: start with a launcher"):
        dist.init_distributed(dist_backend="gloo", verbose=False)
    assert not dist.is_initialized()


def test_missing_master_addr_is_named(clean_env):
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"MASTER_ADDR is not set \(WORLD_SIZE=2\).*init_method='tcp://HOST:PORT'"):
        dist.init_distributed(dist_backend="gloo", verbose=False)


def test_rank_outside_world_is_rejected(clean_env):
    clean_env.setenv("RANK", "3")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"RANK=3 must be in \[0, WORLD_SIZE=2\)"):
        dist.init_distributed(dist_backend="gloo", verbose=False)


def test_bad_deepspeed_timeout_is_rejected(clean_env):
    clean_env.setenv("DEEPSPEED_TIMEOUT", "ten")
    with pytest.raises(ValueError, match=r"DEEPSPEED_TIMEOUT='ten' is not a positive whole number of minutes"):
        dist.init_distributed(dist_backend="gloo", verbose=False)


def test_uninitialized_queries_say_how_to_fix():
    if dist.is_initialized():
        pytest.skip("this pytest process already has a process group")
    with pytest.raises(RuntimeError, match=r"get_rank: the distributed backend is not initialized; call "
                                           r"deepspeed.init_distributed\(\)"):
        dist.get_rank()


def _discovery_body(mode):
    """Runs without the harness's init: sets up the environment a launcher would, then inits."""
    import torch.distributed as tdist

    r, n, port = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["MASTER_PORT"])
    if mode == "ompi":
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
            del os.environ[name]
        os.environ.update(OMPI_COMM_WORLD_RANK=str(r), OMPI_COMM_WORLD_SIZE=str(n), OMPI_COMM_WORLD_LOCAL_RANK=str(r))
        dist.init_distributed(dist_backend="gloo", distributed_port=port, verbose=False)
    elif mode == "mpi4py":
        import types

        class _World:  # the slice of mpi4py.MPI.COMM_WORLD that discovery uses
            def Get_rank(self):
                return r

            def Get_size(self):
                return n

            def bcast(self, value, root=0):
                return "127.0.0.1"  # rank 0's address, as MPI would deliver it

            def Split_type(self, kind):
                return self

        fake = types.ModuleType("mpi4py")
        fake.MPI = types.SimpleNamespace(COMM_WORLD=_World(), COMM_TYPE_SHARED=0)
        sys.modules["mpi4py"] = fake
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            del os.environ[name]
        dist.init_distributed(dist_backend="gloo", distributed_port=port, verbose=False)
    elif mode == "explicit":
        for name in ("RANK", "WORLD_SIZE"):
            del os.environ[name]
        dist.init_distributed(dist_backend="gloo", rank=r, world_size=n, verbose=False)
    elif mode == "adopt":
        tdist.init_process_group("gloo")
        dist.init_distributed(verbose=False)  # wraps the user's group, does not re-init
    elif mode == "default_backend":
        dist.init_distributed(verbose=False)  # the CPU accelerator's backend: gloo
    elif mode == "not_required":
        dist.init_distributed(dist_backend="gloo", dist_init_required=False, verbose=False)
        return dist.is_initialized()
    t = torch.tensor([r + 1.0])
    dist.all_reduce(t)
    timeout = tdist.group.WORLD._get_backend(torch.device("cpu")).options._timeout
    return {"rank": dist.get_rank(), "size": dist.get_world_size(), "local": dist.get_local_rank(),
            "sum": t.item(), "backend": dist.get_backend(), "timeout_min": timeout.total_seconds() / 60,
            "env_rank": os.environ["RANK"]}


@pytest.mark.parametrize("mode", ["ompi", "mpi4py", "explicit", "adopt", "default_backend"])
def test_init_distributed_discovers_ranks(mode):
    env = {"DEEPSPEED_TIMEOUT": "3"} if mode != "adopt" else {}
    results = run_distributed(_discovery_body, world_size=2, args=(mode,), init_distributed=False, env=env)
    # DEEPSPEED_TIMEOUT=3 -> a 3-minute process-group timeout; an adopted group keeps torch's own.
    for r, got in enumerate(results):
        expected_timeout = got["timeout_min"] if mode == "adopt" else 3.0
        assert got == {"rank": r, "size": 2, "local": r, "sum": 3.0, "backend": "gloo",
                       "timeout_min": expected_timeout, "env_rank": str(r)}


def test_dist_init_required_false_leaves_torch_uninitialized():
    assert run_distributed(_discovery_body, world_size=1, args=("not_required",), init_distributed=False) == [False]
