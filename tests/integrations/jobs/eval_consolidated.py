"""Consolidate a ZeRO checkpoint with its copied ``zero_to_fp32.py``, load it with
``from_pretrained`` in a plain process (no DeepSpeed, no process group) and print its eval loss.

    python eval_consolidated.py CHECKPOINT_DIR OUT_DIR --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common as c  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=pathlib.Path, help="the Trainer's checkpoint-N folder")
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), required=True)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    # The user's command: the script DeepSpeed copies next to every checkpoint.
    subprocess.run([sys.executable, str(args.checkpoint / "zero_to_fp32.py"), str(args.checkpoint), str(args.out)],
                   check=True)
    c.tiny_config().save_pretrained(args.out)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(args.out, dtype=torch.float32).to(dtype).eval()
    data = c.TokenDataset(c.EVAL_ROWS, seed=c.EVAL_SEED)
    losses = []
    with torch.no_grad():
        for i in range(0, len(data), c.MICRO):
            rows = [data[j] for j in range(i, min(i + c.MICRO, len(data)))]
            batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
            losses.append(model(**batch).loss.float().item())
    print(json.dumps({"eval_loss": sum(losses) / len(losses), "files": sorted(p.name for p in args.out.iterdir())}))


if __name__ == "__main__":
    main()
