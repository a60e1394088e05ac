"""The zero_optimization section (deepspeed/runtime/zero/config.py) through DeepSpeedConfig."""

import logging
import re
import sys

import pytest

from deepspeed.runtime.config import DeepSpeedConfig
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig, ZeroStageEnum, get_zero_config
from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum
from deepspeed.utils.logging import logger


@pytest.fixture
def ds_log(caplog):
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old)


def zero(section):
    return DeepSpeedConfig({"train_batch_size": 4, "zero_optimization": section}, world_size=1)


def test_registered_with_ds_core():
    c = zero({"stage": 2})
    assert isinstance(c.zero_config, DeepSpeedZeroConfig)
    assert (c.zero_optimization_stage, c.zero_enabled) == (2, True)


def test_defaults_match_deepspeed():
    z = zero({}).zero_config
    assert z.stage == ZeroStageEnum.disabled and not zero({}).zero_enabled
    assert (z.contiguous_gradients, z.reduce_scatter, z.allgather_partitions) == (True, True, True)
    assert (z.reduce_bucket_size, z.allgather_bucket_size) == (500_000_000, 500_000_000)
    assert (z.prefetch_bucket_size, z.param_persistence_threshold) == (50_000_000, 100_000)
    assert z.model_persistence_threshold == sys.maxsize
    assert (z.max_live_parameters, z.max_reuse_distance, z.sub_group_size) == (10**9, 10**9, 10**9)
    assert z.offload_param is None and z.offload_optimizer is None
    assert z.gather_16bit_weights_on_model_save is False
    assert (z.zero_hpz_partition_size, z.mics_shard_size) == (1, -1)
    assert z.ignore_unused_parameters and z.load_from_fp32_weights and z.memory_efficient_linear


def test_overlap_comm_default_depends_on_stage():
    assert zero({"stage": 3}).zero_config.overlap_comm is True
    assert zero({"stage": 2}).zero_config.overlap_comm is False
    assert zero({"stage": 2, "overlap_comm": True}).zero_config.overlap_comm is True


def test_stage3_aliases_and_float_sizes():
    z = zero({"stage": 3, "stage3_prefetch_bucket_size": 0.9 * 768 * 768, "reduce_bucket_size": 5e7,
              "stage3_max_live_parameters": 1e8, "stage3_gather_16bit_weights_on_model_save": True}).zero_config
    assert z.prefetch_bucket_size == int(0.9 * 768 * 768)
    assert (z.reduce_bucket_size, z.max_live_parameters) == (50_000_000, 100_000_000)
    assert z.gather_16bit_weights_on_model_save is True


def test_offload_sections():
    z = zero({"stage": 3, "offload_param": {"device": "cpu", "pin_memory": True},
              "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme", "buffer_count": 5}}).zero_config
    assert z.offload_param.device == OffloadDeviceEnum.cpu and z.offload_param.pin_memory
    assert (z.offload_param.buffer_count, z.offload_param.buffer_size, z.offload_param.max_in_cpu) == (5, 10**8, 10**9)
    assert z.offload_optimizer.device == "nvme" and z.offload_optimizer.buffer_count == 5
    assert z.offload_optimizer.ratio == 1.0 and not z.offload_optimizer.pipeline


def test_deprecated_cpu_offload_keys_map_to_offload_sections(ds_log):
    z = zero({"stage": 2, "cpu_offload": True}).zero_config
    assert z.offload_optimizer.device == OffloadDeviceEnum.cpu and z.offload_param is None
    assert "'zero_optimization.cpu_offload' is deprecated; use 'zero_optimization.offload_optimizer' instead" in ds_log.text
    z = zero({"stage": 3, "cpu_offload_param": True, "cpu_offload": True, "cpu_offload_use_pin_memory": True}).zero_config
    assert z.offload_param.device == "cpu" and z.offload_param.pin_memory
    assert z.offload_optimizer.device == "cpu" and z.offload_optimizer.pin_memory
    z = zero({"stage": 3, "stage3_gather_fp16_weights_on_model_save": True}).zero_config
    assert z.gather_16bit_weights_on_model_save is True
    assert zero({"stage": 2, "cpu_offload": False}).zero_config.offload_optimizer is None


def test_deprecated_and_new_key_together_is_an_error():
    with pytest.raises(ValueError, match="'zero_optimization.cpu_offload' is deprecated and "
                                         "'zero_optimization.offload_optimizer' is also set"):
        zero({"stage": 2, "cpu_offload": True, "offload_optimizer": {"device": "cpu"}})


def test_bare_boolean_is_stage_one(ds_log):
    c = DeepSpeedConfig({"train_batch_size": 4, "zero_optimization": True, "allgather_size": 1e6}, world_size=1)
    assert c.zero_optimization_stage == 1 and c.zero_config.allgather_bucket_size == 10**6
    assert "boolean 'zero_optimization' is deprecated" in ds_log.text
    assert DeepSpeedConfig({"train_batch_size": 4, "zero_optimization": False}, world_size=1).zero_optimization_stage == 0
    assert get_zero_config({"zero_optimization": True}).stage == 1


def test_nested_typo_and_bad_values():
    msg = "ds_config: unknown key 'zero_optimization.offload_param.devcie'; did you mean 'zero_optimization.offload_param.device'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        zero({"stage": 3, "offload_param": {"devcie": "cpu"}})
    msg = "ds_config: unknown key 'zero_optimization.stage3_max_live_parameter'; did you mean 'zero_optimization.stage3_max_live_parameters'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        zero({"stage": 3, "stage3_max_live_parameter": 1})
    with pytest.raises(ValueError, match=r"ds_config\.zero_optimization\.stage: .*0, 1, 2 or 3 \(got 4\)"):
        zero({"stage": 4})
    with pytest.raises(ValueError, match=r"offload_optimizer.ratio=0.5 \(partial offload\) needs stage 3"):
        zero({"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.5}})
    with pytest.raises(ValueError, match="gradient_allreduce_op='sum' is not supported with zero_optimization.stage 3"):
        DeepSpeedConfig({"train_batch_size": 4, "gradient_allreduce_op": "sum", "zero_optimization": {"stage": 3}},
                        world_size=1)


def test_hf_zero3_config_with_autos(ds_log):
    hf = {
        "bf16": {"enabled": "auto"},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "weight_decay": "auto"}},
        "zero_optimization": {
            "stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
            "offload_param": {"device": "cpu", "pin_memory": True}, "overlap_comm": True,
            "contiguous_gradients": True, "sub_group_size": 1e9, "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": "auto",
        },
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": False,
    }
    c = DeepSpeedConfig(hf, world_size=2)
    z = c.zero_config
    assert c.zero_optimization_stage == 3
    assert (z.reduce_bucket_size, z.prefetch_bucket_size, z.param_persistence_threshold) == (5 * 10**8, 5 * 10**7, 10**5)
    assert z.gather_16bit_weights_on_model_save is False
    assert "'zero_optimization.reduce_bucket_size' is \"auto\"" in ds_log.text
    assert c.train_batch_size == 2
