"""The async_io op: DeepSpeed's aio_handle over the native thread-pool engine and the pure-Python
one. Every test writes real files and reads them back byte for byte."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from deepspeed.ops.op_builder import AsyncIOBuilder
from ds_ops_cpu.aio_builder import CPUAsyncIOBuilder
from ds_ops_cpu.aio_handle import AsyncIOModule

BLOCK = 1 << 16  # small blocks so even small tensors are cut into several in-flight pieces


@pytest.fixture(scope="module")
def native():
    return AsyncIOBuilder().load()


@pytest.fixture(params=["native", "python"])
def aio(request, native):
    return native if request.param == "native" else AsyncIOModule(None)


def _sizes():
    rng = random.Random(16)
    aligned = [4096, 1 << 16, 3 * (1 << 16), 1 << 20]
    unaligned = [1, 4095, 4097, (1 << 16) + 3, rng.randrange(1, 3 << 20)]
    return aligned + unaligned


def test_builder_is_registered_and_native_engine_loads(native):
    assert isinstance(AsyncIOBuilder(), CPUAsyncIOBuilder)
    assert native.ENGINE == "threadpool"
    assert "io_uring not used" in AsyncIOBuilder().compatibility_notes()
    h = native.aio_handle(1 << 20, 8, False, True, 2)
    assert (h.get_block_size(), h.get_queue_depth(), h.get_single_submit(), h.get_overlap_events(),
            h.get_intra_op_parallelism(), h.get_thread_count()) == (1 << 20, 8, False, True, 2, 2)
    assert h.get_num_threads() == 16
    assert native.aio_handle(1 << 20, 8, True, False, 3).get_num_threads() == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_random_sizes_round_trip_byte_identical(aio, tmp_path, mode):
    h = aio.aio_handle(BLOCK, 4, False, True, 2)
    g = torch.Generator().manual_seed(0)
    written = []
    for i, n in enumerate(_sizes()):
        src = h.new_cpu_locked_tensor(n, torch.empty(0, dtype=torch.uint8))
        src.copy_(torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g))
        path = tmp_path / f"t{i}.bin"
        if mode == "sync":
            assert h.sync_pwrite(src, str(path)) == 0
        else:
            assert h.async_pwrite(src, str(path)) == 0
        written.append((src, path))
    if mode == "async":
        assert h.wait() == len(written)
    for src, path in written:
        assert path.read_bytes() == src.numpy().tobytes()  # the file itself, read by Python
        # aligned destination (O_DIRECT for the aligned part) and an unaligned one (buffered)
        for dst in (h.new_cpu_locked_tensor(src.numel(), src), torch.empty(src.numel() + 1, dtype=torch.uint8)[1:]):
            dst.fill_(0)
            if mode == "sync":
                h.sync_pread(dst, str(path))
            else:
                h.async_pread(dst, str(path))
                assert h.wait() == 1
            assert torch.equal(dst, src)


def test_native_engine_uses_o_direct_for_aligned_parts_only(native, tmp_path):
    h = native.aio_handle(BLOCK, 4, False, True, 1)
    n = 5 * BLOCK + 100  # five aligned blocks and a 100-byte tail
    src = h.new_cpu_locked_tensor(n, torch.empty(0, dtype=torch.uint8))
    assert src.data_ptr() % h.get_alignment() == 0
    src.copy_(torch.arange(n, dtype=torch.int64).remainder(251).to(torch.uint8))
    h.sync_pwrite(src, tmp_path / "f.bin")
    assert h.io_bytes() == {"direct": 5 * BLOCK, "buffered": 100}
    dst = h.new_cpu_locked_tensor(n, src)
    h.sync_pread(dst, tmp_path / "f.bin")
    assert h.io_bytes() == {"direct": 10 * BLOCK, "buffered": 200}
    assert torch.equal(dst, src)
    assert h.free_cpu_locked_tensor(dst) and not h.free_cpu_locked_tensor(dst)


def test_offsets_and_several_handles_at_once(aio, tmp_path):
    handles = [aio.aio_handle(BLOCK, qd, ss, True, par) for qd, ss, par in ((2, False, 1), (8, True, 3), (4, False, 2))]
    path = tmp_path / "shared.bin"
    chunk = 3 * BLOCK + 17
    parts = []
    for i, h in enumerate(handles):  # each handle writes its slice of one file, all in flight together
        t = torch.full((chunk,), i + 1, dtype=torch.uint8)
        t[::7] = 200 + i
        parts.append(t)
        h.async_pwrite(t, str(path), file_offset=i * chunk)
    assert [h.wait() for h in handles] == [1, 1, 1]
    assert path.read_bytes() == b"".join(t.numpy().tobytes() for t in parts)
    outs = [torch.empty(chunk, dtype=torch.uint8) for _ in handles]
    for i, h in enumerate(handles):
        h.pread(outs[i], str(path), False, True, i * chunk)  # DeepSpeed's positional (validate, async, offset)
    assert [h.wait() for h in handles] == [1, 1, 1]
    for t, o in zip(parts, outs):
        assert torch.equal(t, o)


def test_dtypes_and_read_write_aliases(aio, tmp_path):
    h = aio.aio_handle()
    x = torch.randn(1000, 33).to(torch.bfloat16)
    h.write(x, tmp_path / "x.bin")
    y = torch.empty_like(x)
    h.read(y, tmp_path / "x.bin", True)
    assert torch.equal(x, y)


def test_errors_name_the_file(aio, tmp_path):
    h = aio.aio_handle(BLOCK, 2, False, True, 1)
    missing = tmp_path / "nope" / "x.bin"
    with pytest.raises(RuntimeError, match=f"cannot open '{missing}' for reading: No such file"):
        h.sync_pread(torch.empty(10, dtype=torch.uint8), missing)
    short = tmp_path / "short.bin"
    short.write_bytes(b"x" * 100)
    with pytest.raises(RuntimeError, match=f"read from '{short}': the file ends at offset 100"):
        h.sync_pread(torch.empty(200, dtype=torch.uint8), short)
    with pytest.raises(RuntimeError, match="holds 100 bytes, fewer than the 200"):
        h.read(torch.empty(200, dtype=torch.uint8), short, True)
    with pytest.raises(ValueError, match="must be contiguous"):
        h.sync_pwrite(torch.zeros(4, 4).t(), short)
    with pytest.raises(ValueError, match="block_size must be > 0, got 0"):
        aio.aio_handle(0, 1, False, False, 1)


def test_disk_full_is_an_error_naming_the_file(aio):
    # /dev/full answers every write with ENOSPC, as a full disk does
    h = aio.aio_handle(BLOCK, 2, False, True, 1)
    t = torch.ones(3 * BLOCK, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="write to '/dev/full' failed at file offset 0: No space left on device"):
        h.sync_pwrite(t, "/dev/full")
    h.async_pwrite(t, "/dev/full")
    with pytest.raises(RuntimeError, match="No space left on device"):
        h.wait()
    assert h.wait() == 0  # the failed request is not kept around


def test_direct_io_probe(aio, tmp_path):
    assert aio.direct_io_supported(tmp_path) is True  # this repo's tests run on a disk filesystem
    with pytest.raises(RuntimeError, match="cannot create a file in '/proc'"):
        aio.direct_io_supported("/proc")


def test_python_engine_when_native_cannot_build(monkeypatch):
    monkeypatch.setattr(CPUAsyncIOBuilder, "native_load", lambda self, verbose=True: (_ for _ in ()).throw(
        RuntimeError("op 'async_io' could not be built: no C++ compiler found")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = CPUAsyncIOBuilder().load()
    assert mod.ENGINE == "python"
    assert any("pure-Python engine" in str(w.message) and "no C++ compiler" in str(w.message) for w in caught)
