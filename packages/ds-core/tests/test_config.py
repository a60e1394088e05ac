"""ds_config parsing: DeepSpeedConfig (deepspeed/runtime/config.py) and its helpers.

These tests need only ds-core: where a feature's section matters, the feature list is
monkeypatched (installed or not) rather than relying on what the dev venv holds.
"""

import base64
import json
import logging
import math
import re

import pytest
import torch

from deepspeed import _plugins
from deepspeed.runtime.config import DeepSpeedConfig
from deepspeed.protocols import DeepSpeedFeature
from deepspeed.runtime.config_utils import DeepSpeedConfigModel
from deepspeed.utils.logging import logger


@pytest.fixture
def ds_log(caplog):
    """Records of the DeepSpeed logger (it does not propagate to the root logger)."""
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old)


@pytest.fixture
def no_features(monkeypatch):
    """Simulate an install of ds-core alone (no feature package)."""
    monkeypatch.setattr(_plugins, "features", lambda: {})


def cfg(extra=None, **kw):
    return DeepSpeedConfig({"train_batch_size": 8, **(extra or {})}, world_size=kw.pop("world_size", 1), **kw)


# -- unknown keys -----------------------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_closest(no_features):
    msg = "ds_config: unknown key 'zero_optimizaton'; did you mean 'zero_optimization'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        cfg({"zero_optimizaton": {"stage": 2}})


def test_unknown_nested_key_has_dotted_path_and_suggestion():
    msg = "ds_config: unknown key 'fp16.loss_scal'; did you mean 'fp16.loss_scale'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        cfg({"fp16": {"enabled": True, "loss_scal": 128}})


def test_unknown_key_two_levels_down():
    msg = "ds_config: unknown key 'timers.throughput.enable'; did you mean 'timers.throughput.enabled'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        cfg({"timers": {"throughput": {"enable": False}}})


def test_all_errors_are_reported_together():
    with pytest.raises(ValueError) as info:
        cfg({"fp16": {"loss_scal": 1}, "optimizer": {"type": "Adam", "parms": {}}, "gradient_clipping": -1})
    lines = str(info.value).splitlines()
    assert "ds_config: unknown key 'fp16.loss_scal'; did you mean 'fp16.loss_scale'?" in lines
    assert "ds_config: unknown key 'optimizer.parms'; did you mean 'optimizer.params'?" in lines
    assert any(line.startswith("ds_config.gradient_clipping:") and "-1" in line for line in lines)
    assert len(lines) == 3


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown key 'fp16\.xyz' \(valid keys at 'fp16': .*initial_scale_power"):
        cfg({"fp16": {"xyz": 1}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ValueError, match=r"ds_config\.fp16\.initial_scale_power: .*\(got 'big'\)"):
        cfg({"fp16": {"initial_scale_power": "big"}})


# -- feature sections -------------------------------------------------------------------------


def test_section_of_uninstalled_feature_names_the_package(no_features):
    with pytest.raises(ValueError, match=re.escape("ds_config.zero_optimization needs ds-zero: pip install ds-zero")):
        cfg({"zero_optimization": {"stage": 2}})


def test_uninstalled_feature_errors_are_aggregated_with_others(no_features):
    with pytest.raises(ValueError) as info:
        cfg({"pipeline": {"stages": 2}, "compression_training": {"weight_quantization": {
            "shared_parameters": {"enabled": True}}}, "fp16": {"enabld": True}})
    lines = str(info.value).splitlines()
    assert "ds_config.pipeline needs ds-pipe: pip install ds-pipe" in lines
    assert "ds_config.compression_training needs ds-compression: pip install ds-compression" in lines
    assert "ds_config: unknown key 'fp16.enabld'; did you mean 'fp16.enabled'?" in lines


def test_disabled_section_of_uninstalled_feature_only_logs(no_features, ds_log):
    c = cfg({"zero_optimization": {"stage": 0}, "aio": {"block_size": 1048576}})
    assert c.zero_config is None and c.zero_optimization_stage == 0 and not c.zero_enabled
    assert c.aio_config is None
    text = ds_log.text
    assert "ds_config.zero_optimization is ignored" in text and "ds-zero" in text
    assert "ds_config.aio is ignored" in text


def test_aio_without_ds_aio_is_needed_for_nvme_offload(monkeypatch):
    from deepspeed.runtime import config as config_mod

    # only the zero feature is "installed"; aio matters because an offload device is nvme
    class _ZeroCfg(DeepSpeedConfigModel):
        stage: int = 0
        offload_param: dict = {}

    class _Zero(DeepSpeedFeature):
        name = "zero"

        def config_sections(self):
            return {"zero_optimization": _ZeroCfg}

        def config_attributes(self, config):
            stage = config.model.zero_optimization.stage
            return {"zero_optimization_stage": stage, "zero_enabled": stage > 0}

    class _Plugin:
        distribution, version = "ds-zero", "0"

        def load(self):
            return _Zero()

    monkeypatch.setattr(_plugins, "features", lambda: {"zero": _Plugin()})
    config_mod._root_cache.clear()
    with pytest.raises(ValueError, match=re.escape("ds_config.aio needs ds-aio: pip install ds-aio")):
        cfg({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}, "aio": {"queue_depth": 4}})
    c = cfg({"zero_optimization": {"stage": 3}})
    assert c.zero_optimization_stage == 3 and c.zero_enabled
    config_mod._root_cache.clear()


def test_installed_feature_without_schema_refuses_its_enabled_section(monkeypatch, ds_log):
    """A section the provider table assigns to an installed package that does not implement it yet
    is refused when enabled (it would do nothing) and ignored, with a log line, when disabled.
    (Until the feature contract 2.0 such sections were passed on unchecked.)"""
    class _Feature(DeepSpeedFeature):
        name = "moe"

    class _Plugin:
        distribution, version = "ds-moe", "0"

        def load(self):
            return _Feature()

    monkeypatch.setattr(_plugins, "features", lambda: {"moe": _Plugin()})
    with pytest.raises(ValueError, match=re.escape(
            "ds_config.expert_parallel is not implemented by the installed ds-moe yet; remove the section")):
        cfg({"expert_parallel": {"enabled": True, "ep_size": 2}})
    c = cfg({"expert_parallel": {"enabled": False, "ep_size": 2}})
    assert c.expert_parallel_config is None
    assert "ds_config.expert_parallel is ignored: it is disabled, and ds-moe (which provides it) does not implement it yet" in ds_log.text


# -- "auto" -----------------------------------------------------------------------------------


def test_auto_takes_the_default_and_is_logged(ds_log):
    c = DeepSpeedConfig({"train_batch_size": 16, "train_micro_batch_size_per_gpu": "auto",
                         "gradient_clipping": "auto", "fp16": {"enabled": "auto", "loss_scale": 0}},
                        world_size=2)
    assert c.gradient_clipping == 0.0
    assert c.fp16_enabled is False
    assert (c.train_micro_batch_size_per_gpu, c.gradient_accumulation_steps) == (8, 1)
    for key in ("train_micro_batch_size_per_gpu", "gradient_clipping", "fp16.enabled"):
        assert f"'{key}' is \"auto\"" in ds_log.text
    assert "gradient_clipping" not in c._param_dict and "enabled" not in c._param_dict["fp16"]


def test_hf_style_config_with_many_autos_parses(ds_log):
    hf = {
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                  "weight_decay": "auto"}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                     "warmup_num_steps": "auto"}},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "steps_per_print": 2000,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "wall_clock_breakdown": False,
    }
    c = DeepSpeedConfig(hf, world_size=4)
    assert c.optimizer_name == "adamw" and c.optimizer_params == {}
    assert c.scheduler_name == "WarmupLR" and c.scheduler_params == {}
    assert (c.train_micro_batch_size_per_gpu, c.gradient_accumulation_steps, c.train_batch_size) == (1, 1, 4)
    assert c.steps_per_print == 2000
    assert "'optimizer.params.lr' is \"auto\"" in ds_log.text
    assert hf["optimizer"]["params"]["lr"] == "auto"  # the caller's dict is left alone


# -- batch triangle ---------------------------------------------------------------------------


@pytest.mark.parametrize("given,world", [
    ({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4}, 2),
    ({"train_batch_size": 32, "gradient_accumulation_steps": 2}, 4),
    ({"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 5}, 2),
    ({"train_batch_size": 12}, 3),
    ({"train_micro_batch_size_per_gpu": 6}, 2),
    ({"train_batch_size": 24, "train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 4}, 2),
])
def test_batch_triangle_derives_the_missing_values(given, world):
    c = DeepSpeedConfig(dict(given), world_size=world)
    got = {"train_batch_size": c.train_batch_size, "train_micro_batch_size_per_gpu": c.train_micro_batch_size_per_gpu,
           "gradient_accumulation_steps": c.gradient_accumulation_steps}
    for key, value in given.items():
        assert got[key] == value
    assert c.world_size == world
    assert c.train_batch_size == c.train_micro_batch_size_per_gpu * c.gradient_accumulation_steps * world
    if "gradient_accumulation_steps" not in given and len(given) == 1:
        assert c.gradient_accumulation_steps == 1


def test_batch_mismatch_prints_all_numbers():
    msg = ("train_batch_size 32 != train_micro_batch_size_per_gpu 4 * gradient_accumulation_steps 2 "
           "* dp world size 2 (=16)")
    with pytest.raises(ValueError, match=re.escape(msg)):
        DeepSpeedConfig({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4,
                         "gradient_accumulation_steps": 2}, world_size=2)


def test_batch_not_divisible_and_missing():
    with pytest.raises(ValueError, match=r"train_batch_size 10 is not divisible by train_micro_batch_size_per_gpu 3"):
        DeepSpeedConfig({"train_batch_size": 10, "train_micro_batch_size_per_gpu": 3}, world_size=1)
    with pytest.raises(ValueError, match="set train_batch_size or train_micro_batch_size_per_gpu"):
        DeepSpeedConfig({"gradient_accumulation_steps": 2}, world_size=1)
    with pytest.raises(ValueError, match=r"train_micro_batch_size_per_gpu must be a positive integer \(got 0\)"):
        DeepSpeedConfig({"train_micro_batch_size_per_gpu": 0}, world_size=1)


def test_dp_world_size_sources(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert DeepSpeedConfig({"train_micro_batch_size_per_gpu": 2}).world_size == 4

    class MP:  # Megatron-style mpu that only knows its model-parallel size
        def get_model_parallel_world_size(self):
            return 2

    c = DeepSpeedConfig({"train_micro_batch_size_per_gpu": 2}, mpu=MP())
    assert (c.world_size, c.train_batch_size) == (2, 4)

    class DP:
        def get_data_parallel_world_size(self):
            return 3

    assert DeepSpeedConfig({"train_micro_batch_size_per_gpu": 2}, mpu=DP()).world_size == 3
    assert DeepSpeedConfig({"train_micro_batch_size_per_gpu": 2}, world_size=8, mpu=MP()).world_size == 4
    monkeypatch.delenv("WORLD_SIZE")
    assert DeepSpeedConfig({"train_micro_batch_size_per_gpu": 2}).world_size == 1


# -- inputs -----------------------------------------------------------------------------------


def test_dict_path_and_base64_give_the_same_config(tmp_path):
    d = {"train_batch_size": 8, "fp16": {"enabled": True, "initial_scale_power": 12}, "steps_per_print": 5}
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(d))
    b64 = base64.urlsafe_b64encode(json.dumps(d).encode()).decode()
    configs = [DeepSpeedConfig(d, world_size=1), DeepSpeedConfig(str(path), world_size=1),
               DeepSpeedConfig(path, world_size=1), DeepSpeedConfig(b64, world_size=1)]
    for c in configs:
        assert (c.train_batch_size, c.fp16_enabled, c.initial_dynamic_scale, c.steps_per_print) == (8, True, 2**12, 5)
        assert c._param_dict == d


def test_duplicate_json_keys_are_rejected(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"train_batch_size": 8, "fp16": {"enabled": true, "enabled": false}}')
    with pytest.raises(ValueError, match=r"duplicate key 'enabled'"):
        DeepSpeedConfig(str(path))


def test_string_that_is_neither_file_nor_base64():
    with pytest.raises(ValueError, match="neither an existing file nor base64-encoded JSON"):
        DeepSpeedConfig("/no/such/ds_config.json")


# -- scalar keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), "inf", "Infinity"])
def test_steps_per_print_accepts_inf(value):
    assert math.isinf(cfg({"steps_per_print": value}).steps_per_print)


def test_steps_per_print_json_infinity_and_default(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{"train_batch_size": 2, "steps_per_print": Infinity}')
    assert math.isinf(DeepSpeedConfig(str(path), world_size=1).steps_per_print)
    assert cfg().steps_per_print == 10
    with pytest.raises(ValueError, match=r"ds_config\.steps_per_print: steps_per_print must be a positive integer or inf"):
        cfg({"steps_per_print": 0})


def test_fp16_and_bf16_together_is_an_error():
    with pytest.raises(ValueError, match="fp16.enabled and bf16.enabled are both true"):
        cfg({"fp16": {"enabled": True}, "bf16": {"enabled": True}})


def test_legacy_bfloat16_key():
    c = cfg({"bfloat16": {"enabled": True}})
    assert c.bfloat16_enabled and c.bf16_enabled and not c.fp16_enabled
    with pytest.raises(ValueError, match="both 'bfloat16' and 'bf16' are set") as err:
        cfg({"bfloat16": {"enabled": True}, "bf16": {"enabled": True}})
    # One line: the legacy key is not reported a second time as unknown ("did you mean 'bfloat16'?").
    assert str(err.value) == ("ds_config: both 'bfloat16' and 'bf16' are set; 'bfloat16' is the legacy name "
                              "of 'bf16', keep only 'bf16'")


def test_precision_attributes():
    c = cfg({"fp16": {"enabled": True, "auto_cast": True, "loss_scale": 128, "initial_scale_power": 10,
                      "loss_scale_window": 500, "hysteresis": 3, "min_loss_scale": 2}})
    assert (c.fp16_enabled, c.fp16_auto_cast, c.loss_scale, c.initial_dynamic_scale) == (True, True, 128.0, 1024)
    assert c.dynamic_loss_scale_args == {"init_scale": 1024, "scale_window": 500, "delayed_shift": 3,
                                         "consecutive_hysteresis": False, "min_scale": 2}
    with pytest.raises(ValueError, match="loss_scale must be a finite number >= 0"):
        cfg({"fp16": {"loss_scale": -1}})
    c = cfg({"torch_autocast": {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": ["torch.nn.Linear"]},
             "data_types": {"grad_accum_dtype": "float32"}})
    assert (c.torch_autocast_enabled, c.torch_autocast_dtype) == (True, torch.bfloat16)
    assert c.torch_autocast_lower_precision_safe_modules == ["torch.nn.Linear"]
    assert c.grad_accum_dtype == "fp32"


@pytest.mark.parametrize("value,dtype", [("fp16", torch.float16), ("float16", torch.float16), ("half", torch.float16),
                                         ("bfloat16", torch.bfloat16), ("FP32", torch.float32), (None, None)])
def test_communication_data_type_aliases(value, dtype):
    assert cfg({"communication_data_type": value}).communication_data_type == dtype


def test_bad_enumerations_name_the_key():
    with pytest.raises(ValueError, match=r"ds_config\.communication_data_type: communication_data_type must be one of fp32, fp16, bf16"):
        cfg({"communication_data_type": "int8"})
    assert cfg({"gradient_allreduce_op": "SUM"}).gradient_allreduce_op == "sum"
    with pytest.raises(ValueError, match=r"ds_config\.gradient_allreduce_op: .*'mean' or 'sum'"):
        cfg({"gradient_allreduce_op": "max"})


def test_optimizer_and_scheduler_attributes():
    c = cfg({"optimizer": {"type": "Adam", "params": {"lr": 1e-3, "betas": [0.9, 0.99]}},
             "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}})
    assert c.optimizer_name == "adam" and c.optimizer_params == {"lr": 1e-3, "betas": [0.9, 0.99]}
    assert c.optimizer_legacy_fusion is False
    assert c.scheduler_name == "WarmupLR" and c.scheduler_params == {"warmup_num_steps": 10}
    c = cfg({"optimizer": {"type": "SGD", "params": {"lr": 0.1}}})
    assert c.optimizer_name == "SGD"  # not a DeepSpeed optimizer: left for torch.optim, case kept
    c = cfg()
    assert (c.optimizer_name, c.optimizer_params, c.scheduler_name, c.scheduler_params) == (None, None, None, None)


def test_core_defaults():
    c = cfg()
    assert (c.gradient_clipping, c.prescale_gradients, c.gradient_predivide_factor) == (0.0, False, 1.0)
    assert (c.zero_allow_untested_optimizer, c.zero_force_ds_cpu_optimizer) == (False, True)
    assert (c.wall_clock_breakdown, c.memory_breakdown, c.dump_state, c.sparse_gradients_enabled) == (False,) * 4
    assert c.checkpoint_tag_validation_enabled and not c.checkpoint_tag_validation_fail
    assert c.load_universal_checkpoint is False and c.dataloader_drop_last is False
    assert c.comms_config.comms_logger.prof_all is True and not c.comms_config.comms_logger_enabled
    assert not c.monitor_config.enabled and c.monitor_config.wandb.project == "deepspeed"
    assert c.activation_checkpointing_config.number_checkpoints is None
    assert c.flops_profiler_config.profile_step == 1
    assert c.gradient_allreduce_op == "mean" and c.communication_data_type is None


def test_sections_read_through():
    c = cfg({"checkpoint": {"tag_validation": "fail", "load_universal": True},
             "comms_logger": {"enabled": True, "prof_ops": ["all_reduce"]},
             "csv_monitor": {"enabled": True, "output_path": "/tmp/x"},
             "flops_profiler": {"enabled": True},
             "activation_checkpointing": {"partition_activations": True, "number_checkpoints": 4}})
    assert c.checkpoint_tag_validation_fail and c.load_universal_checkpoint
    assert c.comms_config.comms_logger_enabled and c.comms_config.comms_logger.prof_ops == ["all_reduce"]
    assert c.monitor_config.enabled and c.monitor_config.csv_monitor.output_path == "/tmp/x"
    assert c.wall_clock_breakdown  # turned on by the flops profiler, as in DeepSpeed
    assert c.activation_checkpointing_config.number_checkpoints == 4


def test_elasticity_enabled_is_not_implemented():
    assert cfg({"elasticity": {"enabled": False, "max_train_batch_size": 64}}).elasticity_enabled is False
    with pytest.raises(NotImplementedError, match="elasticity.enabled=true"):
        cfg({"elasticity": {"enabled": True, "max_train_batch_size": 64}})


def test_unimplemented_options_warn(ds_log):
    cfg({"amp": {"enabled": True, "opt_level": "O1"}, "compile": {"deepcompile": True}})
    assert "'amp.enabled' is set but NVIDIA apex AMP is not supported" in ds_log.text
    assert "'compile.deepcompile' is set but DeepCompile is not implemented" in ds_log.text


def test_print_logs_attributes_and_json(ds_log):
    c = cfg({"fp16": {"enabled": True}})
    c.print("DeepSpeedEngine configuration")
    assert "DeepSpeedEngine configuration:" in ds_log.text
    assert re.search(r"train_batch_size \.+ 8", ds_log.text)
    assert '"train_batch_size":8' in ds_log.text


def test_config_model_base_drops_auto_and_forbids_extras():
    class Section(DeepSpeedConfigModel):
        size: int = 5

    assert Section(size="auto").size == 5
    with pytest.raises(ValueError):
        Section(sise=3)


def test_config_survives_pickle():
    import pickle

    c = cfg({"fp16": {"enabled": True, "loss_scale": 64}, "optimizer": {"type": "AdamW", "params": {"lr": 0.01}}})
    back = pickle.loads(pickle.dumps(c))
    assert back.model == c.model
    assert (back.fp16_enabled, back.loss_scale, back.optimizer_params) == (True, 64.0, {"lr": 0.01})


@pytest.mark.parametrize("section,expected", [
    ({"checkpoint": {"use_node_local_storage": True}}, "'checkpoint.use_node_local_storage' is set but it has no effect"),
    ({"checkpoint": {"writer": {"type": "fast"}}}, "'checkpoint.writer' is set but it has no effect"),
    ({"checkpoint": {"parallel_write": {"pipeline_stage": True}}},
     "'checkpoint.parallel_write.pipeline_stage' is set but it has no effect without pipeline parallelism"),
    ({"comms_logger": {"verbose": True, "prof_all": False}},
     "comms_logger.prof_all, comms_logger.verbose set but comms_logger.enabled is false, so nothing is logged"),
])
def test_keys_without_effect_warn(section, expected, ds_log):
    cfg(section)
    assert expected in ds_log.text


def test_load_universal_without_a_loading_feature_is_refused(tmp_path, monkeypatch):
    import deepspeed
    from deepspeed import _features

    # Note: the installed ds-checkpoint would answer; without any feature core must refuse by name.
    monkeypatch.setattr(_features, "installed", lambda: _features.FeatureSet.from_features())
    engine, *_ = deepspeed.initialize(model=torch.nn.Linear(2, 2), config={
        "train_micro_batch_size_per_gpu": 1, "checkpoint": {"load_universal": True}})
    with pytest.raises(NotImplementedError, match="checkpoint.load_universal=true: no installed feature loads "
                                                  "universal checkpoints"):
        engine.load_checkpoint(str(tmp_path))
