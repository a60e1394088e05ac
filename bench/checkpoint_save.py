"""What the checkpoint manifest's CRC-32 costs on save.

The engine's TorchCheckpointEngine.save (torch.save through a writer that CRCs the bytes as they
are written, then fsync and rename) against the same atomic save without the CRC, on a ~200 MB
state (24 Linear(1024, 1024) layers and one moment per parameter). Rounds alternate the order;
prints wall and CPU medians and writes JSON.

    python bench/checkpoint_save.py --rounds 9 --out bench/results/checkpoint_save.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import zlib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--dir", default=None, help="folder to write in (default: a temporary one here)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()

    import torch

    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(24)])
    state = {"module": model.state_dict(), "optimizer": {"exp_avg": [p.detach().clone() for p in model.parameters()]}}
    folder = tempfile.mkdtemp(dir=args.dir or os.getcwd())

    def plain(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    engine = TorchCheckpointEngine()
    fns = {"atomic save": plain, "atomic save + CRC-32": lambda p: engine.save(state, p)}
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    try:
        for r in range(args.rounds):
            for name in (list(fns) if r % 2 else list(fns)[::-1]):
                path = os.path.join(folder, "f.pt")
                t, c = time.perf_counter(), time.process_time()
                fns[name](path)
                wall[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        size = os.path.getsize(os.path.join(folder, "f.pt"))
        with open(os.path.join(folder, "f.pt"), "rb") as f:
            data = f.read()
        c = time.process_time()
        zlib.crc32(data)
        crc_s = time.process_time() - c
    finally:
        shutil.rmtree(folder)
    rows = {k: {"wall_ms": 1e3 * statistics.median(wall[k]), "cpu_ms": 1e3 * statistics.median(cpu[k])} for k in fns}
    print(f"{'':24s} {'wall ms':>9s} {'cpu ms':>9s}   ({size / 1e6:.0f} MB file, {args.rounds} rounds, medians)")
    for k, v in rows.items():
        print(f"{k:24s} {v['wall_ms']:9.1f} {v['cpu_ms']:9.1f}")
    print(f"CRC-32 alone: {crc_s * 1e3:.1f} ms CPU ({size / crc_s / 1e9:.2f} GB/s)")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"bytes": size, "rounds": args.rounds, "results": rows, "crc_only_ms": crc_s * 1e3,
                       "load_average": os.getloadavg(), "cpu_count": os.cpu_count(),
                       "python": platform.python_version(), "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
