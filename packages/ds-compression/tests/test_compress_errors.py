"""Bad compression configs: each error names the key, the value and the fix."""

import os
import sys

import pytest
import torch.nn as nn

from deepspeed.compression import init_compression

sys.path.insert(0, os.path.dirname(__file__))
from _models import Net, make  # noqa: E402


def run(section, teacher=None, model=None):
    init_compression(model or make(), {"compression_training": section}, teacher_model=teacher)


def on(groups, **shared):
    return {"shared_parameters": {"enabled": True, **shared}, "different_groups": groups}


def test_pattern_matching_nothing_names_the_group():
    with pytest.raises(ValueError, match=r"compression_training\.sparse_pruning\.different_groups\.sp1\.modules: "
                                         r"pattern 'encoder\.dense' matches no Linear/Conv2d/Embedding module of the "
                                         r"model \(they are: emb, layers\.0\.attn\.q, .*\)\. Fix: use a regular expression"):
        run({"sparse_pruning": on({"sp1": {"params": {"dense_ratio": 0.5}, "modules": ["encoder.dense"]}})})


@pytest.mark.parametrize("params,key,value", [
    ({"start_bits": 9, "target_bits": 4}, "start_bits", "9"),
    ({"start_bits": 8, "target_bits": 0}, "target_bits", "0"),
])
def test_weight_bits_out_of_range(params, key, value):
    with pytest.raises(ValueError, match=rf"compression_training\.weight_quantization\.different_groups\.wq\.params\."
                                         rf"{key}={value}: Input should be"):
        run({"weight_quantization": on({"wq": {"params": params, "modules": ["fc1"]}})})


def test_target_bits_above_start_bits():
    with pytest.raises(ValueError, match=r"weight_quantization\.different_groups\.wq\.params: target_bits=8 is above "
                                         r"start_bits=4"):
        run({"weight_quantization": on({"wq": {"params": {"start_bits": 4, "target_bits": 8}, "modules": ["fc1"]}})})


def test_activation_bits_out_of_range():
    with pytest.raises(ValueError, match=r"activation_quantization\.different_groups\.aq\.params\.bits=1: Input should "
                                         r"be greater than or equal to 2"):
        run({"activation_quantization": on({"aq": {"params": {"bits": 1}, "modules": ["fc1"]}})})


def test_binary_weights_need_symmetric():
    with pytest.raises(ValueError, match=r"target_bits=1 \(binary/ternary\) needs quantization_type 'symmetric'"):
        run({"weight_quantization": on({"wq": {"params": {"start_bits": 1, "target_bits": 1}, "modules": ["fc1"]}},
                                       quantization_type="asymmetric")})


def test_groups_that_do_not_divide_the_weight():
    with pytest.raises(ValueError, match=r"quantize_groups=7: the weight of shape \(32, 16\) \(512 elements\) does not "
                                         r"split into 7 equal groups"):
        run({"weight_quantization": on({"wq": {"params": {"start_bits": 8, "target_bits": 8}, "modules": ["fc1"]}},
                                       quantize_groups=7)})


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
@pytest.mark.parametrize("technique", ["sparse_pruning", "row_pruning", "channel_pruning"])
def test_ratios_outside_zero_one(technique, ratio):
    with pytest.raises(ValueError, match=rf"compression_training\.{technique}\.different_groups\.g\.params\."
                                         rf"dense_ratio={ratio}: Input should be"):
        run({technique: on({"g": {"params": {"dense_ratio": ratio}, "modules": ["fc1"]}})})


def test_teacher_with_fewer_layers_than_asked():
    lr = {"enabled": True, "keep_number_layer": 2, "module_name_prefix": "layers", "teacher_layer": [1, 5]}
    with pytest.raises(ValueError, match=r"compression_training\.layer_reduction\.teacher_layer=\[1, 5\] asks for "
                                         r"layer 5 but the teacher's 'layers' has 4 layers \(0\.\.3\)"):
        run({"layer_reduction": lr}, teacher=make(Net, n_layer=4))


def test_teacher_layer_count_must_equal_keep_number_layer():
    lr = {"enabled": True, "keep_number_layer": 3, "module_name_prefix": "layers", "teacher_layer": [0, 1]}
    with pytest.raises(ValueError, match=r"teacher_layer=\[0, 1\] names 2 layers but keep_number_layer=3"):
        run({"layer_reduction": lr}, teacher=make(Net, n_layer=4))


def test_layer_prefix_that_is_not_a_module():
    lr = {"enabled": True, "keep_number_layer": 1, "module_name_prefix": "encoder.layer", "teacher_layer": [0]}
    with pytest.raises(ValueError, match=r"layer_reduction\.module_name_prefix='encoder\.layer': the teacher has no "
                                         r"such module"):
        run({"layer_reduction": lr})


def test_row_pruning_on_a_conv_is_refused():
    with pytest.raises(ValueError, match=r"row_pruning\.different_groups\.g\.modules matches 'conv1', a Conv2d; "
                                         r"row_pruning applies to Linear only"):
        from _models import ConvNet

        run({"row_pruning": on({"g": {"params": {"dense_ratio": 0.5}, "modules": ["conv1"]}})}, model=make(ConvNet))


def test_related_modules_count_must_pair():
    with pytest.raises(ValueError, match=r"row_pruning\.different_groups\.g\.related_modules: pattern 'head' matches 1 "
                                         r"modules \(head\) but modules matched 2"):
        run({"row_pruning": on({"g": {"params": {"dense_ratio": 0.5}, "modules": ["fc1"],
                                      "related_modules": [["head"]]}})})


def test_snip_momentum_not_implemented():
    with pytest.raises(NotImplementedError, match=r"sparse_pruning\.shared_parameters\.method='snip_momentum' is not "
                                                  r"implemented\. Fix: use 'l1' or 'topk'"):
        run({"sparse_pruning": {"shared_parameters": {"enabled": True, "method": "snip_momentum"}}})


def test_deepspeed_config_of_the_wrong_type():
    with pytest.raises(ValueError, match=r"deepspeed_config must be a ds_config dict or the path of a JSON file, got "
                                         r"list"):
        init_compression(nn.Linear(2, 2), [])
