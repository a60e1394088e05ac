"""A Hugging Face ``Trainer`` job on this repo's DeepSpeed: run under ``torchrun`` or ``deepspeed``.

    torchrun --nproc_per_node 2 hf_trainer.py --stage 3 --dtype bf16 --out DIR
    deepspeed --num_gpus 2 hf_trainer.py --stage 2 --dtype fp32 --out DIR

Trains the tiny model 30 steps with ``TrainingArguments(deepspeed=ds_config)``, saves the engine's
checkpoint through the Trainer (``checkpoint-30/global_step30`` and ``zero_to_fp32.py``) and
evaluates the trained model through the engine. Writes ``DIR/result.json`` for the test to check
(which then consolidates the checkpoint and evaluates it without DeepSpeed: eval_consolidated.py).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common as c  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, required=True)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--local_rank", type=int, default=-1)  # passed by the deepspeed launcher
    ap.add_argument("--resume", type=pathlib.Path, help="a checkpoint-N folder: resume_from_checkpoint")
    ap.add_argument("--steps", type=int, default=c.STEPS)
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed
    from transformers.integrations import is_deepspeed_zero3_enabled

    set_seed(0)
    c.bf16_env(args.dtype)
    c.cpu_deepspeed_state()
    targs = TrainingArguments(
        output_dir=str(args.out), per_device_train_batch_size=c.MICRO, per_device_eval_batch_size=c.MICRO,
        max_steps=args.steps, learning_rate=3e-3, warmup_steps=1, weight_decay=0.0, logging_steps=1,
        save_strategy="steps", save_steps=args.steps, deepspeed=c.ds_config(args.stage, args.dtype),
        report_to="none", dataloader_num_workers=0, disable_tqdm=True, seed=0,
        accelerator_config={"use_configured_state": True},
    )
    # TrainingArguments(deepspeed=...) made an HfDeepSpeedConfig: under ZeRO-3, from_config builds the
    # model inside deepspeed.zero.Init, so every parameter is partitioned from the start.
    assert is_deepspeed_zero3_enabled() == (args.stage == 3)
    model = AutoModelForCausalLM.from_config(c.tiny_config())
    partitioned = all(hasattr(p, "ds_numel") for p in model.parameters())
    assert partitioned == (args.stage == 3), f"zero.Init partitioned={partitioned} at stage {args.stage}"

    train, evald = c.TokenDataset(c.STEPS * c.MICRO * 2, seed=1), c.TokenDataset(c.EVAL_ROWS, seed=c.EVAL_SEED)
    trainer = Trainer(model=model, args=targs, train_dataset=train, eval_dataset=evald)
    out = trainer.train(resume_from_checkpoint=str(args.resume) if args.resume else None)
    engine = trainer.model_wrapped
    import deepspeed

    assert type(engine) is deepspeed.DeepSpeedEngine, type(engine)
    stage = c.engine_stage(engine)
    want = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    dtypes = {p.dtype for p in engine.module.parameters()}
    assert dtypes == {want}, f"engine trains in {dtypes}, asked {want}"
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    eval_engine = trainer.evaluate()["eval_loss"]

    ckpt = args.out / f"checkpoint-{args.steps}"
    result = dict(stage=stage, dtype=args.dtype, losses=losses, eval_loss=eval_engine,
                  samples_per_second=out.metrics["train_samples_per_second"],
                  world_size=int(os.environ["WORLD_SIZE"]), global_steps=engine.global_steps,
                  logged_steps=[h["step"] for h in trainer.state.log_history if "loss" in h], ckpt_files=sorted(p.name for p in ckpt.rglob("*")))
    c.write_result(args.out / "result.json", **result)


if __name__ == "__main__":
    main()
