"""samples/s of the integration jobs (tests/integrations), this repo vs deepspeed==0.19.8.

Reads the results files that ``nox -s integrations`` and ``nox -s integrations_deepspeed`` write
(one JSON per run: job -> samples/s, ZeRO stage, first and last loss), prints them side by side
and writes bench/results/integrations.json. A job missing on one side (it failed there) shows as
"-". Note: each number is the Trainer's / loop's own samples/s over 30 steps of a tiny model on 2
CPU ranks, one run each: noisy on a busy machine; the ratio column is ours / DeepSpeed.
"""

from __future__ import annotations

import argparse
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", type=pathlib.Path, required=True)
    ap.add_argument("--deepspeed", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results" / "integrations.json")
    args = ap.parse_args()
    sides = {}
    for name, path in (("ours", args.ours), ("deepspeed", args.deepspeed)):
        sides[name] = json.loads(path.read_text()) if path.exists() else {}
        if not path.exists():
            print(f"note: {path} not found (run the nox session that writes it)")
    rows = []
    print(f"{'job':32s} {'ours s/s':>9s} {'DS s/s':>9s} {'ratio':>6s}  {'ours loss':>15s}  {'DS loss':>15s}")
    for job in sorted(sides["ours"].keys() | sides["deepspeed"].keys()):
        a, b = sides["ours"].get(job), sides["deepspeed"].get(job)
        ratio = a["samples_per_second"] / b["samples_per_second"] if a and b else None

        def cell(r, key):
            return f"{r[key]:9.1f}" if r else f"{'-':>9s}"

        def loss(r):
            return f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}" if r else f"{'-':>15s}"

        print(f"{job:32s} {cell(a, 'samples_per_second')} {cell(b, 'samples_per_second')} "
              f"{(f'{ratio:6.2f}' if ratio else '     -')}  {loss(a)}  {loss(b)}")
        rows.append({"job": job, "ours": a, "deepspeed": b, "ratio": ratio})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
