"""deepspeed.comm.shm on real gloo ranks: every collective against gloo's own result (bit for bit on
2 ranks, identical on every rank and within rounding on 4), pieces larger than a slot, uneven
reduce-scatter, subgroups, the opt-out, the missing-rank timeout, and no file left in /dev/shm."""

from __future__ import annotations

import hashlib
import os
import platform

import pytest
import torch
import torch.distributed as tdist

from deepspeed.comm import shm
from deepspeed.testing.distributed import run_distributed

X86 = platform.machine().lower() in ("x86_64", "amd64")
pytestmark = pytest.mark.skipif(not X86 or not os.path.isdir("/dev/shm"),
                                reason=f"shared-memory collectives need Linux x86-64 (this is {platform.machine()})")

SLOT_KB = 4  # 1024 fp32 elements per slot: every size below crosses slot boundaries
SIZES = [1, 17, 1023, 1024, 1025, 3 * 1024 + 5, 40_000]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _data(seed: int, n: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g).to(dtype)


def _same(got: torch.Tensor, ref: torch.Tensor, exact: bool, what) -> None:
    assert got.dtype == ref.dtype and got.shape == ref.shape, what
    if exact:
        assert torch.equal(got, ref), (what, (got.float() - ref.float()).abs().max().item())
    else:
        tol = 1e-6 if got.dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol * tdist.get_world_size(),
                                   msg=lambda m: f"{what}: {m}")


def _collectives_body():
    """Each collective against gloo's result, in the rank; returns digests of the all-reduce results
    so the parent can check that every rank holds the same bytes (tensors do not travel back)."""
    r, world = tdist.get_rank(), tdist.get_world_size()
    exact = world == 2  # Note: with more ranks the summation order differs from gloo's ring
    sg = shm.for_group(None)
    assert sg is not None and shm.for_group(None) is sg
    digests = {}
    for dtype in DTYPES:
        for n in SIZES:
            mine = _data(1000 * r + n, n, dtype)
            for op, top in (("sum", tdist.ReduceOp.SUM), ("max", tdist.ReduceOp.MAX), ("min", tdist.ReduceOp.MIN)):
                ref = mine.clone()
                tdist.all_reduce(ref, op=top)
                got = mine.clone()
                sg.all_reduce_(got, op)
                _same(got, ref, exact or op != "sum", ("all_reduce", dtype, n, op))
                digests[(str(dtype), n, op)] = hashlib.sha1(got.view(torch.uint8).numpy().tobytes()).hexdigest()
            got = mine.clone()
            sg.all_reduce_(got, "avg")
            ref = mine.clone()
            tdist.all_reduce(ref)
            _same(got, ref / world, exact, ("all_reduce", dtype, n, "avg"))
            got = mine.clone()
            sg.all_reduce_(got, "sum", scale=0.25)
            ref = mine.clone()
            tdist.all_reduce(ref)
            _same(got, ref.mul_(0.25), exact, ("all_reduce", dtype, n, "sum*0.25"))
            digests[(str(dtype), n, "sum*0.25")] = hashlib.sha1(got.view(torch.uint8).numpy().tobytes()).hexdigest()

            # reduce-scatter of a chunked flat tensor (the contiguous path) and of uneven pieces
            flat = _data(7 * r + n, n * world, dtype)
            got = torch.empty(n, dtype=dtype)
            sg.reduce_scatter_(got, list(flat.chunk(world)))
            ref = flat.clone()
            tdist.all_reduce(ref)
            _same(got, ref[r * n:(r + 1) * n], exact, ("reduce_scatter even", dtype, n))
            sizes = [n + 3 * s for s in range(world)]
            pieces = [_data(31 * r + s + n, sizes[s], dtype) for s in range(world)]
            got = torch.empty(sizes[r], dtype=dtype)
            sg.reduce_scatter_(got, pieces)
            ref = pieces[r].clone()
            for s, p in enumerate(pieces):
                q = p.clone()
                tdist.all_reduce(q)
                if s == r:
                    ref = q
            _same(got, ref, exact, ("reduce_scatter uneven", dtype, n))

            got = torch.empty(world * n, dtype=dtype)
            sg.all_gather_(got, mine)
            parts = [torch.empty(n, dtype=dtype) for _ in range(world)]
            tdist.all_gather(parts, mine)
            _same(got, torch.cat(parts), True, ("all_gather", dtype, n))

    # reduce-scatter straight from the sources of a virtual concatenation (ZeRO's gradient buckets),
    # converted bf16 -> fp32 while copied, pieces that do not line up with the sources
    sizes = [2500 + 700 * s for s in range(world)]
    flat = _data(99 + r, sum(sizes), torch.bfloat16)
    sources = list(torch.split(flat, [5, 1000, 1, sum(sizes) - 1006]))
    got = torch.empty(sizes[r], dtype=torch.float32)
    sg.reduce_scatter_from_(got, sources, sizes)
    ref = flat.float()
    tdist.all_reduce(ref)
    _same(got, ref[sum(sizes[:r]):sum(sizes[:r + 1])], exact, "reduce_scatter_from_")
    with pytest.raises(ValueError, match="do not tile"):
        sg.reduce_scatter_from_(got, sources, [1] * world)

    # non-contiguous tensors are reduced through a contiguous copy and written back
    m = _data(r, 64 * 8, torch.float32).view(64, 8).t()
    ref = m.contiguous()
    tdist.all_reduce(ref)
    sg.all_reduce_(m)
    _same(m.contiguous(), ref, exact, "non-contiguous all_reduce")
    tdist.barrier()
    return {"path": sg.path, "left": os.path.exists(sg.path), "digests": digests}


def _check(results) -> None:
    # every rank holds the same all-reduce result, whatever the rounding
    for r in range(1, len(results)):
        assert results[r]["digests"] == results[0]["digests"]


def test_collectives_match_gloo_bit_for_bit_on_2_ranks():
    results = run_distributed(_collectives_body, world_size=2, env={"DS_SHM_COMM_SLOT_KB": str(SLOT_KB)})
    _check(results)
    # the shared file is unlinked once every rank has mapped it
    assert results[0]["path"].startswith("/dev/shm/deepspeed_shm_") and results[1]["path"] == results[0]["path"]
    assert not results[0]["left"] and not results[1]["left"]


def test_collectives_agree_on_4_ranks():
    results = run_distributed(_collectives_body, world_size=4, env={"DS_SHM_COMM_SLOT_KB": str(SLOT_KB)})
    _check(results)


def _shared_buffer_body():
    r, world = tdist.get_rank(), tdist.get_world_size()
    sg = shm.for_group(None)
    out = {}
    for dtype in DTYPES:
        for n in (1, 17, 40_000):
            sb = sg.shared_buffer(n, dtype)
            assert sb.local.shape == (n,) and sb.local.dtype == dtype and not sb.local.any()
            for scale in (1.0, 0.5):
                mine = _data(1000 * r + n, n, dtype)
                sb.local.copy_(mine)
                sb.all_reduce_(scale=scale)
                ref = mine.clone()
                tdist.all_reduce(ref)
                ref.mul_(scale)
                _same(sb.local, ref, world == 2, ("shared buffer", dtype, n, scale))
                out[(str(dtype), n, scale)] = hashlib.sha1(sb.local.view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


@pytest.mark.parametrize("world_size", [2, 4])
def test_shared_buffer_all_reduce_in_place(world_size):
    results = run_distributed(_shared_buffer_body, world_size=world_size)
    assert all(res == results[0] for res in results)


def _subgroup_body():
    r = tdist.get_rank()
    low = tdist.new_group([0, 1])
    high = tdist.new_group([2, 3])
    mine = low if r < 2 else high
    sg = shm.for_group(mine)
    t = torch.full((5000,), float(r + 1))
    sg.all_reduce_(t)
    world_sg = shm.for_group(None)
    w = torch.full((10,), float(r + 1))
    world_sg.all_reduce_(w)
    return sg.world, sg.rank, t[0].item(), w[0].item(), world_sg is not sg


def test_subgroups_reduce_among_their_members():
    results = run_distributed(_subgroup_body, world_size=4)
    assert results == [(2, 0, 3.0, 10.0, True), (2, 1, 3.0, 10.0, True),
                       (2, 0, 7.0, 10.0, True), (2, 1, 7.0, 10.0, True)]


def _disabled_body():
    return shm.for_group(None) is None


def test_ds_shm_comm_0_means_gloo():
    assert run_distributed(_disabled_body, world_size=2, env={"DS_SHM_COMM": "0"}) == [True, True]


def _missing_rank_body():
    sg = shm.for_group(None)
    if tdist.get_rank() == 1:
        return None  # never reaches the collective
    sg.timeout_s = 0.5
    with pytest.raises(RuntimeError) as err:
        sg.all_reduce_(torch.ones(10))
    return str(err.value)


def test_a_rank_that_never_arrives_is_named_after_the_timeout():
    msg = run_distributed(_missing_rank_body, world_size=2)[0]
    assert "rank(s) [1] of this 2-rank group did not reach shared-memory barrier" in msg
    assert "DS_SHM_COMM=0" in msg


def test_bad_slot_size_names_the_variable_and_the_fix(monkeypatch):
    monkeypatch.setenv("DS_SHM_COMM_SLOT_KB", "lots")
    with pytest.raises(ValueError, match=r"DS_SHM_COMM_SLOT_KB='lots': expected an integer number of KiB >= 4"):
        shm._slot_bytes_from_env()


def test_single_process_and_uninitialised_need_no_shared_memory():
    assert not tdist.is_initialized()
    assert shm.for_group(None) is None
    assert shm.op_name(None) == "sum" and shm.op_name(tdist.ReduceOp.AVG) == "avg"
    assert shm.op_name(tdist.ReduceOp.PRODUCT) is None
