"""The compression_training section (deepspeed/compression/config.py) through DeepSpeedConfig."""

import re

import pytest

from deepspeed.runtime.config import DeepSpeedConfig


def comp(section):
    c = DeepSpeedConfig({"train_batch_size": 4, "compression_training": section}, world_size=1)
    return c.model.compression_training


def test_defaults_all_off():
    c = comp({})
    assert c.enabled_techniques == []
    assert c.weight_quantization.shared_parameters.quantization_type == "symmetric"
    assert c.activation_quantization.shared_parameters.range_calibration == "dynamic"


def test_full_structure():
    c = comp({
        "weight_quantization": {
            "shared_parameters": {"enabled": True, "quantizer_kernel": False, "schedule_offset": 0,
                                  "quantize_groups": 48, "quantize_verbose": True, "quantization_type": "symmetric",
                                  "quantize_weight_in_forward": True, "rounding": "nearest",
                                  "fp16_mixed_quantize": {"enabled": False, "quantize_change_ratio": 0.1}},
            "different_groups": {"wq1": {"params": {"start_bits": 8, "target_bits": 4, "quantization_period": 50},
                                         "modules": ["attention.self", "intermediate"]}}},
        "activation_quantization": {
            "shared_parameters": {"enabled": True, "quantization_type": "asymmetric", "range_calibration": "static",
                                  "schedule_offset": 10},
            "different_groups": {"aq1": {"params": {"bits": 8}, "modules": ["attention.output"]}}},
        "sparse_pruning": {"shared_parameters": {"enabled": True, "method": "snip_momentum", "dense_ratio": 0.4}},
        "head_pruning": {"shared_parameters": {"enabled": True, "num_heads": 12, "method": "topk"},
                         "different_groups": {"hp1": {"params": {"dense_ratio": 0.5}, "modules": ["attention.output.dense"],
                                                      "related_modules": [["self.query", "self.key", "self.value"]]}}},
        "layer_reduction": {"enabled": True, "keep_number_layer": 5, "module_name_prefix": "bert.encoder.layer",
                            "teacher_layer": [2, 4, 6, 8, 10], "other_module_name": ["bert.pooler"]},
    })
    assert c.enabled_techniques == ["weight_quantization", "activation_quantization", "sparse_pruning",
                                    "head_pruning", "layer_reduction"]
    group = c.weight_quantization.different_groups["wq1"]
    assert (group.params.start_bits, group.params.target_bits, group.params.quantization_period) == (8, 4, 50)
    assert c.weight_quantization.shared_parameters.fp16_mixed_quantize.quantize_change_ratio == 0.1
    assert c.head_pruning.different_groups["hp1"].related_modules == [["self.query", "self.key", "self.value"]]


def test_extras_forbidden_at_every_level():
    msg = ("ds_config: unknown key 'compression_training.weight_quantization.different_groups.wq1.params.start_bit'; "
           "did you mean 'compression_training.weight_quantization.different_groups.wq1.params.start_bits'?")
    with pytest.raises(ValueError, match=re.escape(msg)):
        comp({"weight_quantization": {"different_groups": {"wq1": {"params": {"start_bit": 8, "target_bits": 8}}}}})
    msg = "ds_config: unknown key 'compression_training.row_prunning'; did you mean 'compression_training.row_pruning'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        comp({"row_prunning": {}})


def test_enabled_without_groups_and_missing_required():
    with pytest.raises(ValueError, match="row_pruning is enabled but has no different_groups"):
        comp({"row_pruning": {"shared_parameters": {"enabled": True}}})
    with pytest.raises(ValueError, match=r"different_groups\.aq\.params\.bits: required key is missing"):
        comp({"activation_quantization": {"different_groups": {"aq": {"params": {}}}}})
