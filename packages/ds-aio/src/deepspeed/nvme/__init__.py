"""``deepspeed.nvme`` (DeepSpeed's path, from ds-aio): the ``ds_io`` NVMe I/O benchmark
(:func:`ds_io_main`) and ``ds_nvme_tune`` (:func:`ds_nvme_tune_main`), which sweeps aio settings
and prints the best ``aio`` ds_config block."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

__all__ = ["ds_io_main", "ds_nvme_tune_main", "parse_size", "run_io"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``"400M"``, ``"1G"``, ``"4096"`` -> bytes."""
    t = str(text).strip().upper().removesuffix("B")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    try:
        value = int(float(t[: len(t) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected a number with an optional K/M/G suffix, "
                                         "e.g. 400M") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r} must be > 0")
    return value


def run_io(folder: str, io_size: int, read: bool, block_size: int, queue_depth: int, single_submit: bool,
           io_parallel: int, loops: int = 1, validate: bool = False) -> dict:
    """Write (and for ``read``, read back) ``io_size`` bytes in ``folder``; returns GB/s and the
    settings. The file is removed afterwards."""
    import torch

    from deepspeed.io.swap import aio_module

    mod = aio_module()
    h = mod.aio_handle(block_size, queue_depth, single_submit, True, io_parallel)
    buf = h.new_cpu_locked_tensor(io_size, torch.empty(0, dtype=torch.uint8))
    buf.copy_(torch.randint(0, 256, (io_size,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    path = os.path.join(folder, f"ds_io_{os.getpid()}.bin")
    try:
        h.sync_pwrite(buf, path)
        times = []
        for _ in range(loops):
            if read:
                out = h.new_cpu_locked_tensor(io_size, buf)
                t0 = time.perf_counter()
                h.sync_pread(out, path)
                times.append(time.perf_counter() - t0)
                if validate and not torch.equal(out, buf):
                    raise RuntimeError(f"ds_io: data read back from {path} differs from what was written")
                h.free_cpu_locked_tensor(out)
            else:
                t0 = time.perf_counter()
                h.sync_pwrite(buf, path)
                times.append(time.perf_counter() - t0)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    best = min(times)
    return {"op": "read" if read else "write", "GB/s": io_size / best / 1e9, "seconds": best,
            "block_size": block_size, "queue_depth": queue_depth, "single_submit": single_submit,
            "intra_op_parallelism": io_parallel, "io_size": io_size, "engine": mod.ENGINE,
            "direct": h.io_bytes()["direct"] > 0}


def _check_folder(folder: str, flag: str) -> str:
    if not os.path.isdir(folder):
        raise SystemExit(f"{flag} {folder!r} is not an existing folder. Fix: create it or pass another folder.")
    if not os.access(folder, os.W_OK):
        raise SystemExit(f"{flag} {folder!r} is not writable. Fix: pass a writable folder.")
    return folder


def ds_io_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ds_io", description="NVMe I/O benchmark of the aio handle (GB/s).")
    p.add_argument("--folder", required=True, help="folder on the disk to test")
    p.add_argument("--io_size", type=parse_size, default=parse_size("400M"), help="bytes per transfer (e.g. 1G)")
    p.add_argument("--read", action="store_true", help="measure reads (default: writes)")
    p.add_argument("--block_size", type=parse_size, default=parse_size("1M"))
    p.add_argument("--queue_depth", type=int, default=8)
    p.add_argument("--single_submit", action="store_true")
    p.add_argument("--io_parallel", type=int, default=1, help="intra_op_parallelism")
    p.add_argument("--loops", type=int, default=3)
    p.add_argument("--validate", action="store_true", help="compare what is read with what was written")
    p.add_argument("--gpu", action="store_true", help="device buffers (needs an accelerator)")
    p.add_argument("--use_gds", action="store_true", help="GPU Direct Storage")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    if a.gpu or a.use_gds:
        raise SystemExit("ds_io: --gpu/--use_gds need a device accelerator with a GDS-capable ops package; this "
                         "install measures host buffers only. Fix: drop --gpu/--use_gds.")
    r = run_io(_check_folder(a.folder, "--folder"), a.io_size, a.read, a.block_size, a.queue_depth,
               a.single_submit, a.io_parallel, max(1, a.loops), a.validate)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['op']} {r['io_size'] / 2**20:.0f} MiB: {r['GB/s']:.2f} GB/s (block_size={r['block_size']}, "
              f"queue_depth={r['queue_depth']}, intra_op_parallelism={r['intra_op_parallelism']}, "
              f"single_submit={r['single_submit']}, engine={r['engine']}, O_DIRECT={r['direct']})")
    return 0


_DEFAULT_SWEEP = {"block_size": [262144, 1048576, 4194304], "queue_depth": [4, 8, 32], "io_parallel": [1, 2],
                  "single_submit": [False]}


def ds_nvme_tune_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ds_nvme_tune", description="Sweep aio settings on a folder and print the "
                                "best `aio` ds_config block.")
    p.add_argument("--nvme_dir", required=True)
    p.add_argument("--sweep_config", help="JSON file: lists for block_size, queue_depth, io_parallel, single_submit")
    p.add_argument("--no_read", action="store_true")
    p.add_argument("--no_write", action="store_true")
    p.add_argument("--io_size", type=parse_size, default=parse_size("64M"))
    p.add_argument("--loops", type=int, default=2)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--gds", action="store_true")
    p.add_argument("--log_dir", help="write every measurement here as JSON lines")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    if a.gpu or a.gds:
        raise SystemExit("ds_nvme_tune: --gpu/--gds need a GDS-capable device ops package. Fix: drop them.")
    if a.no_read and a.no_write:
        raise SystemExit("ds_nvme_tune: --no_read and --no_write leave nothing to measure. Fix: drop one.")
    sweep = dict(_DEFAULT_SWEEP)
    if a.sweep_config:
        with open(a.sweep_config) as f:
            user = json.load(f)
        unknown = sorted(set(user) - set(sweep))
        if unknown:
            raise SystemExit(f"--sweep_config {a.sweep_config}: unknown keys {unknown}; known: {sorted(sweep)}")
        sweep.update({k: list(v) for k, v in user.items()})
    folder = _check_folder(a.nvme_dir, "--nvme_dir")
    ops = [op for op, skip in (("read", a.no_read), ("write", a.no_write)) if not skip]
    results = []
    best = None
    for bs, qd, par, ss in itertools.product(sweep["block_size"], sweep["queue_depth"], sweep["io_parallel"],
                                             sweep["single_submit"]):
        score = 0.0
        for op in ops:
            r = run_io(folder, a.io_size, op == "read", int(bs), int(qd), bool(ss), int(par), max(1, a.loops))
            results.append(r)
            score += r["GB/s"]
            if a.verbose:
                print(f"{op:5s} bs={bs} qd={qd} par={par} ss={ss}: {r['GB/s']:.2f} GB/s", file=sys.stderr)
        results[-1]["score"] = score
        if best is None or score > best[0]:
            best = (score, {"block_size": int(bs), "queue_depth": int(qd), "intra_op_parallelism": int(par),
                            "single_submit": bool(ss), "overlap_events": True})
    if a.log_dir:
        os.makedirs(a.log_dir, exist_ok=True)
        with open(os.path.join(a.log_dir, "ds_nvme_tune.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
    print(json.dumps({"aio": best[1]}, indent=2))
    return 0
