"""``deepspeed.checkpoint.utils`` used as Accelerate uses it on every ZeRO-1/2 save, and its file
names checked against a checkpoint the engine writes."""

import collections
import os

import torch

import deepspeed
from deepspeed.checkpoint.utils import (clone_tensors_for_torch_save, get_layer_ckpt_name_for_rank,
                                        get_model_ckpt_name_for_rank, get_zero_ckpt_name_for_rank)


def test_clone_keeps_structure_and_owns_storage(tmp_path):
    flat = torch.arange(100_000, dtype=torch.float32)
    sd = collections.OrderedDict(small=flat[:10].view(2, 5), nested={"t": (flat[10:12], 3, "x")}, lst=[flat[12:13]])
    out = clone_tensors_for_torch_save(sd)
    assert type(out) is collections.OrderedDict and type(out["nested"]["t"]) is tuple
    assert out["nested"]["t"][1:] == (3, "x")
    assert torch.equal(out["small"], sd["small"]) and out["small"].data_ptr() != sd["small"].data_ptr()
    assert out["small"].untyped_storage().nbytes() == 10 * 4  # only its own elements
    torch.save(sd, tmp_path / "views.pt")
    torch.save(out, tmp_path / "clones.pt")
    # a view writes the whole 400 kB buffer; the clones write 13 floats plus the archive's overhead
    assert os.path.getsize(tmp_path / "views.pt") > 400_000 > 20_000 > os.path.getsize(tmp_path / "clones.pt")
    back = torch.load(tmp_path / "clones.pt", weights_only=True)
    assert torch.equal(back["lst"][0], flat[12:13])
    meta = clone_tensors_for_torch_save(torch.ones(2, requires_grad=True) * 2, device="meta")
    assert meta.device.type == "meta" and not meta.requires_grad


def test_engine_state_dict_clone_and_file_names(tmp_path):
    # Accelerate: clone_tensors_for_torch_save(unwrapped_model.state_dict()) then torch.save
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 2))
    engine, *_ = deepspeed.initialize(model=model, config={"train_batch_size": 2, "bf16": {"enabled": True},
                                                           "optimizer": {"type": "SGD", "params": {"lr": 0.1}}})
    sd = clone_tensors_for_torch_save(engine.module.state_dict())
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in sd.values())
    torch.save({"w": sd["1.weight"]}, tmp_path / "one.pt")
    assert os.path.getsize(tmp_path / "one.pt") < 64 * 64 * 2  # not the whole flat buffer
    engine.save_checkpoint(str(tmp_path), tag="global_step0")
    folder = str(tmp_path / "global_step0")
    assert os.path.isfile(get_model_ckpt_name_for_rank(folder, "00"))
    assert get_zero_ckpt_name_for_rank(folder, 1, 0) == os.path.join(folder, "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert get_layer_ckpt_name_for_rank(folder, "layer_03", 1) == os.path.join(folder, "layer_03-model_01_model_states.pt")
    # the bf16 engine's optimizer file, spelled with DeepSpeed's constants
    from deepspeed.checkpoint.constants import BF16_ZERO_FILE_PREFIX, MODEL_FILE_PREFIX, OPTIM_FILE_SUFFIX

    assert os.path.isfile(os.path.join(folder, f"{BF16_ZERO_FILE_PREFIX}0_{MODEL_FILE_PREFIX}00{OPTIM_FILE_SUFFIX}"))
    from deepspeed.checkpoint.constants import BUFFER_NAMES, DS_VERSION, FROZEN_PARAM_SHAPES, PARAM_SHAPES

    states = torch.load(get_model_ckpt_name_for_rank(folder, "00"), weights_only=True)
    assert {PARAM_SHAPES, BUFFER_NAMES, FROZEN_PARAM_SHAPES, DS_VERSION} <= set(states)
