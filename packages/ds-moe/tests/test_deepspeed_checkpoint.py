"""Checkpoints in DeepSpeed's MoE layout, both ways.

A checkpoint written by DeepSpeed 0.19.8 itself (tests/data/deepspeed_0.19.8_moe, made by
tests/data/make_deepspeed_checkpoint.py) loads into ds-moe: DeepSpeed's model-states file holds
no expert weights, its ``layer_0_expert_<E>_mp_rank_00_model_states.pt`` files do. After loading,
the model gives DeepSpeed's own eval-mode output (saved beside the checkpoint) to 1e-6. Ours
has DeepSpeed's file names and the top-level ``num_experts`` its loader requires (DeepSpeed
0.19.8 loading one of ours was checked by hand: ``make_deepspeed_checkpoint.py --load``).
"""

import os
import sys

import torch

DATA = os.path.join(os.path.dirname(__file__), "data")
sys.path.insert(0, DATA)
from make_deepspeed_checkpoint import Tiny  # noqa: E402


def test_deepspeed_0_19_8_moe_checkpoint_loads_with_the_same_outputs():
    import deepspeed

    ckpt = os.path.join(DATA, "deepspeed_0.19.8_moe")
    expected = torch.load(os.path.join(ckpt, "expected.pt"), weights_only=True)
    assert expected["deepspeed"] == "0.19.8"
    engine, *_ = deepspeed.initialize(model=Tiny(), config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.5}}})
    engine.eval()
    with torch.no_grad():
        before = engine(expected["input"])[0]
    assert (before - expected["logits"]).abs().max() > 1e-3  # DeepSpeed trained two steps before saving
    path, _ = engine.load_checkpoint(ckpt, load_optimizer_states=False)
    assert path.endswith(os.path.join("global_step2", "mp_rank_00_model_states.pt"))
    with torch.no_grad():
        after = engine(expected["input"])[0]
    torch.testing.assert_close(after, expected["logits"], atol=1e-6, rtol=1e-6)


def test_our_checkpoint_has_deepspeeds_layout(tmp_path):
    import deepspeed

    engine, *_ = deepspeed.initialize(model=Tiny(), config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.5}}})
    engine.save_checkpoint(str(tmp_path), tag="global_step2")
    ours = {f for f in os.listdir(tmp_path / "global_step2") if f.endswith("_model_states.pt")}
    theirs = {f for f in os.listdir(os.path.join(DATA, "deepspeed_0.19.8_moe", "global_step2"))
              if f.endswith("_model_states.pt")}
    assert ours == theirs
    sd = torch.load(tmp_path / "global_step2" / "mp_rank_00_model_states.pt", weights_only=True)
    assert sd["num_experts"] == [4]
    expert = torch.load(tmp_path / "global_step2" / "layer_0_expert_3_mp_rank_00_model_states.pt", weights_only=True)
    ref = torch.load(os.path.join(DATA, "deepspeed_0.19.8_moe", "global_step2",
                                  "layer_0_expert_3_mp_rank_00_model_states.pt"), weights_only=True)
    assert sorted(expert) == sorted(ref)  # same keys: full names with the global expert id


def test_older_expert_file_names_load(tmp_path):
    """DeepSpeed's older layout: ``expert_<E>_mp_rank_00_model_states.pt`` (no layer id)."""
    import deepspeed

    cfg = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.5}}}
    src = os.path.join(DATA, "deepspeed_0.19.8_moe")
    expected = torch.load(os.path.join(src, "expected.pt"), weights_only=True)
    old = tmp_path / "global_step2"
    old.mkdir()
    for name in os.listdir(os.path.join(src, "global_step2")):
        data = open(os.path.join(src, "global_step2", name), "rb").read()
        new = name.replace("layer_0_expert_", "expert_")
        (old / new).write_bytes(data)
    (tmp_path / "latest").write_text("global_step2")
    assert not any(f.startswith("layer_") for f in os.listdir(old))
    engine, *_ = deepspeed.initialize(model=Tiny(), config=cfg)
    engine.load_checkpoint(str(tmp_path), load_optimizer_states=False)
    engine.eval()
    with torch.no_grad():
        torch.testing.assert_close(engine(expected["input"])[0], expected["logits"], atol=1e-6, rtol=1e-6)


def test_missing_expert_file_is_an_error(tmp_path):
    import shutil

    import deepspeed
    import pytest

    shutil.copytree(os.path.join(DATA, "deepspeed_0.19.8_moe"), tmp_path / "ckpt")
    os.remove(tmp_path / "ckpt" / "global_step2" / "layer_0_expert_2_mp_rank_00_model_states.pt")
    engine, *_ = deepspeed.initialize(model=Tiny(), config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.5}}})
    with pytest.raises(FileNotFoundError, match=r"layer_0_expert_2_mp_rank_00_model_states.pt is missing \(MoE layer 0 "
                                                r"'moe', expert 2\); the checkpoint is incomplete"):
        engine.load_checkpoint(str(tmp_path / "ckpt"), load_optimizer_states=False)
