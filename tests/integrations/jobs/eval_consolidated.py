"""Consolidate a ZeRO checkpoint with its copied ``zero_to_fp32.py``, load it with
``from_pretrained`` in a plain process (no DeepSpeed, no process group) and print its eval loss.

    python eval_consolidated.py CHECKPOINT_DIR OUT_DIR --dtype bf16
    python eval_consolidated.py CHECKPOINT_DIR OUT_DIR --dtype fp32 --lightning

``--lightning``: consolidate with Lightning's ``convert_zero_checkpoint_to_fp32_state_dict``
instead (it reads the checkpoint through ``deepspeed.utils.zero_to_fp32``) and load its state dict.
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
    ap.add_argument("--lightning", action="store_true")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.lightning:
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        args.out.mkdir(parents=True, exist_ok=True)
        saved = convert_zero_checkpoint_to_fp32_state_dict(args.checkpoint, args.out / "lightning_model.pt")
        model = AutoModelForCausalLM.from_config(c.tiny_config())
        # Note: the trained model's non-persistent buffers may ride along in the checkpoint.
        known = set(model.state_dict())
        model.load_state_dict({k: v for k, v in saved["state_dict"].items() if k in known}, strict=True)
        model = model.to(dtype).eval()
    else:
        # The user's command: the script DeepSpeed copies next to every checkpoint.
        subprocess.run([sys.executable, str(args.checkpoint / "zero_to_fp32.py"), str(args.checkpoint),
                        str(args.out)], check=True)
        c.tiny_config().save_pretrained(args.out)
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
