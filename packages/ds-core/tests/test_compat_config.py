"""DeepSpeed behaviours of the config and of ``initialize`` that scripts rely on: HJSON config
files, ``DeepSpeedConfig``'s helper methods with DeepSpeed's signatures, and the exception types
DeepSpeed raises (AssertionError) alongside ours (ValueError)."""

import pytest
import torch
from pydantic import Field

import deepspeed
from deepspeed.config import DeepSpeedConfigModel
from deepspeed.runtime.config import DeepSpeedConfig, DeepSpeedConfigError

HJSON = """
# a DeepSpeed config written in HJSON: comments, unquoted keys and strings, trailing commas
{
  train_batch_size: 8
  gradient_accumulation_steps: 2,
  optimizer: {
    // an unquoted string runs to the end of its line
    type: AdamW
    params: { lr: 1e-3, betas: [0.9, 0.99], },
  },
  fp16: { enabled: true, initial_scale_power: 8 }
}
"""


def test_hjson_config_file(tmp_path):
    path = tmp_path / "ds_config.hjson"
    path.write_text(HJSON)
    cfg = DeepSpeedConfig(str(path), world_size=2)
    assert (cfg.train_batch_size, cfg.gradient_accumulation_steps, cfg.train_micro_batch_size_per_gpu) == (8, 2, 2)
    assert cfg.optimizer_name == "adamw"
    assert cfg.optimizer_params == {"lr": 1e-3, "betas": [0.9, 0.99]}
    assert cfg.fp16_enabled is True and cfg.initial_dynamic_scale == 2**8


def test_hjson_config_without_root_braces_and_duplicate_keys(tmp_path):
    path = tmp_path / "ds.hjson"
    path.write_text("train_batch_size: 4\nsteps_per_print: 7\n")
    cfg = DeepSpeedConfig(str(path), world_size=1)
    assert (cfg.train_batch_size, cfg.steps_per_print) == (4, 7)
    path.write_text("{train_batch_size: 4\ntrain_batch_size: 8}")
    with pytest.raises(ValueError, match="duplicate key 'train_batch_size'"):
        DeepSpeedConfig(str(path), world_size=1)


def test_config_file_neither_json_nor_hjson(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"train_batch_size": 4, "fp16": {"enabled": true}')
    with pytest.raises(ValueError, match=r"is not valid JSON \(.*\) nor HJSON"):
        DeepSpeedConfig(str(path), world_size=1)


def test_initialize_without_model_raises_deepspeeds_assertion_and_our_value_error():
    cfg = {"train_batch_size": 1}
    for exc_type in (AssertionError, ValueError):
        with pytest.raises(exc_type, match="deepspeed.initialize requires a model: model is None"):
            deepspeed.initialize(config=cfg)


class _Legacy(DeepSpeedConfigModel):
    new_size: int = 0
    old_size: int = Field(None, json_schema_extra={"deprecated": True, "new_param": "new_size"})


def test_deprecated_key_with_its_new_name_is_an_assertion_error_and_a_value_error():
    assert _Legacy(old_size=3).new_size == 3
    for exc_type in (AssertionError, ValueError):
        with pytest.raises(exc_type, match="Cannot provide deprecated parameter 'old_size' and replacing "
                                           "parameter 'new_size' together: 'old_size' is deprecated"):
            _Legacy(old_size=3, new_size=4)


def test_config_errors_are_assertion_errors_too():
    bad = {"train_batch_size": 10, "train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 1}
    for exc_type in (AssertionError, ValueError, DeepSpeedConfigError):
        with pytest.raises(exc_type, match="train_batch_size 10 != train_micro_batch_size_per_gpu 3"):
            DeepSpeedConfig(bad, world_size=1)
    with pytest.raises(AssertionError, match="Fp16_master_weights_and_grads is only supported with ZeRO Stage 1, 2, or 3"):
        DeepSpeedConfig({"train_batch_size": 2, "fp16": {"enabled": True, "fp16_master_weights_and_grads": True}},
                        world_size=1)
    with pytest.raises(AssertionError, match="bf16_optimizer_states requires bf16_master_weights_and_grads to be enabled"):
        DeepSpeedConfig({"train_batch_size": 2, "bf16": {"enabled": True, "bf16_optimizer_states": True}}, world_size=1)


def test_configure_train_batch_size_after_changing_an_attribute():
    # DeepSpeed's pattern: change one corner of the triangle, then recompute the rest.
    cfg = DeepSpeedConfig({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 2}, world_size=2)
    assert cfg.gradient_accumulation_steps == 2
    cfg.train_batch_size, cfg.gradient_accumulation_steps = 32, None
    cfg._configure_train_batch_size()
    assert (cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu, cfg.gradient_accumulation_steps) == (32, 2, 8)
    cfg._batch_assertion()
    cfg.gradient_accumulation_steps = 3
    with pytest.raises(AssertionError, match=r"Check batch related parameters\. train_batch_size is not equal to "
                                             r"micro_batch_per_gpu \* gradient_acc_step \* world_size 32 != 2 \* 3 \* 2"):
        cfg._batch_assertion()
    cfg.train_micro_batch_size_per_gpu = 0
    with pytest.raises(AssertionError, match="Micro batch size per gpu: 0 has to be greater than 0"):
        cfg._do_sanity_check()


def test_initialize_params_rereads_a_whole_config(caplog):
    cfg = DeepSpeedConfig({"train_batch_size": 4, "steps_per_print": 5}, world_size=1)
    cfg._initialize_params({"train_batch_size": 6, "gradient_clipping": 1.5, "bf16": {"enabled": True}})
    assert (cfg.train_batch_size, cfg.gradient_clipping, cfg.bfloat16_enabled, cfg.steps_per_print) == (6, 1.5, True, 10)
    assert cfg._param_dict["train_batch_size"] == 6
    with pytest.raises(ValueError, match="unknown key 'gradient_clippin'"):
        cfg._initialize_params({"train_batch_size": 6, "gradient_clippin": 1.0})
    assert cfg.gradient_clipping == 1.5  # unchanged by the rejected dict
    cfg._param_dict["vocabulary_size"] = 1001
    cfg.model = cfg.model.model_copy(update={"vocabulary_size": 1001})
    with caplog.at_level("WARNING", logger="DeepSpeed"):
        cfg._do_warning_check()
    assert "vocabulary_size 1001 is not a multiple of 8" in caplog.text


def test_fp16_config_path_is_a_torch_dtype_free_dict():
    # print() and print_user_config() keep working after the helpers ran (DeepSpeed's log format)
    cfg = DeepSpeedConfig({"train_batch_size": 2, "fp16": {"enabled": True}}, world_size=1)
    cfg._do_sanity_check()
    cfg.print("DeepSpeedEngine configuration")
    assert cfg.float16_config.enabled and torch.float16 is not None
