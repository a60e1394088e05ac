"""init_compression / compression_scheduler / redundancy_clean, each technique on a tiny trained
model: the configured bit width / sparsity holds exactly (counted in the weights), training under
it continues (loss falls), and redundancy_clean gives the stated parameter count with outputs
equal to the masked model's.

Tolerance of "outputs equal": 1e-5 absolute; removing rows/columns changes only which zero
products are summed, so the differences are float32 summation-order rounding."""

import copy
import os
import sys

import pytest
import torch
import torch.nn as nn

from deepspeed.compression import compression_scheduler, init_compression, redundancy_clean
from deepspeed.compression.basic_layer import LinearLayer_Compress
from deepspeed.compression.scheduler import bits_at

sys.path.insert(0, os.path.dirname(__file__))
from _models import HEADS, HIDDEN, ConvNet, D, Net, data, make, n_params, train  # noqa: E402


def cfg(**techniques):
    return {"train_batch_size": 16, "compression_training": techniques}


def technique(groups, **shared):
    return {"shared_parameters": {"enabled": True, "schedule_offset": 0, **shared}, "different_groups": groups}


def pretrained(cls=Net, steps=30):
    model = make(cls)
    x, y = data(cls)
    train(model, x, y, steps)
    return model, x, y


def compress_and_train(config, cls=Net, steps=40, teacher=None):
    model, x, y = pretrained(cls)
    init_compression(model, config, teacher_model=teacher)
    sched = compression_scheduler(model, config)
    losses = train(model, x, y, steps, sched)
    return model, x, y, losses


def falls(losses, k=5):
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


def distinct_per_group(w, groups):
    return max(int(torch.unique(g).numel()) for g in w.detach().reshape(groups, -1))


def clean_matches(model, config, x):
    """redundancy_clean, returning (outputs before, outputs after, model)."""
    model.eval()
    with torch.no_grad():
        before = model(x)
    redundancy_clean(model, config)
    with torch.no_grad():
        after = model(x)
    return before, after, model


# -- weight quantization --------------------------------------------------------------------


@pytest.mark.parametrize("qtype,bits,groups,levels", [
    ("symmetric", 4, 2, 2 ** 4 - 1),  # symmetric: -7..7
    ("asymmetric", 3, 4, 2 ** 3),
    ("symmetric", 2, 1, 3),  # ternary (XTC)
    ("symmetric", 1, 1, 2),  # binary (XTC)
])
def test_weight_quantization_in_forward(qtype, bits, groups, levels):
    config = cfg(weight_quantization=technique(
        {"wq": {"params": {"start_bits": 8, "target_bits": bits}, "modules": ["fc1", "fc2", "attn"]}},
        quantize_weight_in_forward=True, quantization_type=qtype, quantize_groups=groups))
    model, x, y, losses = compress_and_train(config)
    assert falls(losses)
    layers = [m for m in model.modules() if isinstance(m, LinearLayer_Compress)]
    assert len(layers) == 2 * 6  # q k v o fc1 fc2 per block
    for m in layers:
        w, _ = m.effective_weight()
        assert distinct_per_group(w, groups) <= levels
        assert distinct_per_group(m.weight, groups) > levels  # the stored fp32 weight trains freely
    count = n_params(model)
    before, after, model = clean_matches(model, config, x)
    assert n_params(model) == count
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    fc1 = model.layers[0].fc1
    assert type(fc1) is nn.Linear and distinct_per_group(fc1.weight, groups) <= levels


def test_bit_schedule_start_to_target_in_the_stored_weights():
    # 8 bits, one bit dropped after 2 steps, then after 4 more, 8 more ... until 5 bits.
    assert [bits_at(8, 5, 2, s) for s in (0, 1, 2, 5, 6, 13, 14, 100)] == [8, 8, 7, 7, 6, 6, 5, 5]
    assert bits_at(8, 4, 0, 0) == 4
    config = cfg(weight_quantization=technique(
        {"wq": {"params": {"start_bits": 8, "target_bits": 5, "quantization_period": 2}, "modules": ["fc1"]}},
        schedule_offset=3))
    model, x, y = pretrained()
    init_compression(model, config)
    sched = compression_scheduler(model, config)
    fc1 = model.layers[0].fc1
    seen = []
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(20):
        loss = nn.functional.mse_loss(model(x[:16]), y[:16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        seen.append((fc1.wq["bits"] if fc1.weight_quantization_enabled else None,
                     int(torch.unique(fc1.weight.detach()).numel())))
    assert [b for b, _ in seen[:2]] == [None, None]  # offset 3: off for the first two steps
    for bits, distinct in seen[2:]:
        assert distinct <= 2 ** bits - 1
    assert seen[-1][0] == 5 and seen[2][0] == 8


# -- activation quantization ----------------------------------------------------------------


@pytest.mark.parametrize("calibration", ["dynamic", "static"])
def test_activation_quantization_levels_in_the_layer_input(calibration):
    config = cfg(activation_quantization=technique(
        {"aq": {"params": {"bits": 4}, "modules": ["fc2"]}}, range_calibration=calibration,
        quantization_type="asymmetric"))
    model, x, y, losses = compress_and_train(config)
    assert falls(losses)
    fc2 = model.layers[0].fc2
    seen = {}
    fc2.register_forward_hook(lambda m, inp, out: seen.update(x=m._act(inp[0])) and None)
    model.eval()
    with torch.no_grad():
        model(x[:4])
    assert int(torch.unique(seen["x"]).numel()) <= 2 ** 4
    if calibration == "static":
        lo, hi = fc2.act_range.tolist()
        assert seen["x"].min().item() >= lo - 1e-6 and seen["x"].max().item() <= hi + 1e-6
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert isinstance(model.layers[0].fc2, LinearLayer_Compress)  # keeps its activation quantizer


# -- pruning ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["l1", "topk"])
def test_sparse_pruning_exact_density(method):
    config = cfg(sparse_pruning=technique({"sp": {"params": {"dense_ratio": 0.3}, "modules": ["fc1", "fc2"]}},
                                          method=method))
    model, x, y, losses = compress_and_train(config)
    assert falls(losses)
    base = n_params(make())
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert n_params(model) == base  # sparse weights are zeroed, not removed
    for layer in model.layers:
        for m in (layer.fc1, layer.fc2):
            assert type(m) is nn.Linear
            assert int((m.weight != 0).sum()) == round(0.3 * m.weight.numel())


@pytest.mark.parametrize("method", ["l1", "topk"])
def test_row_pruning_removes_rows_and_related_columns(method):
    config = cfg(row_pruning=technique({"rp": {"params": {"dense_ratio": 0.25}, "modules": ["fc1"],
                                               "related_modules": [["fc2"]]}}, method=method))
    model, x, y, losses = compress_and_train(config)
    assert falls(losses)
    base = n_params(make())
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    kept = HIDDEN // 4
    assert all(layer.fc1.out_features == kept and layer.fc2.in_features == kept for layer in model.layers)
    # per block: fc1 loses (HIDDEN - kept) rows of D weights + bias, fc2 loses as many columns of D
    assert n_params(model) == base - 2 * (HIDDEN - kept) * (D + 1 + D)


@pytest.mark.parametrize("method", ["l1", "topk"])
def test_head_pruning_removes_heads(method):
    config = cfg(head_pruning=technique({"hp": {"params": {"dense_ratio": 0.5}, "modules": ["attn.o"],
                                               "related_modules": [["attn.q", "attn.k", "attn.v"]]}},
                                        method=method, num_heads=HEADS))
    model, x, y, losses = compress_and_train(config)
    assert falls(losses)
    base = n_params(make())
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    width = D // 2  # 2 of 4 heads
    for layer in model.layers:
        a = layer.attn
        assert a.o.in_features == width and a.q.out_features == a.k.out_features == a.v.out_features == width
    # per block: o loses D * D/2 weights; q, k, v each lose D/2 rows of D weights + bias
    assert n_params(model) == base - 2 * (D * (D - width) + 3 * (D - width) * (D + 1))


def test_channel_pruning_removes_channels_of_conv_and_batchnorm():
    config = cfg(channel_pruning=technique({"cp": {"params": {"dense_ratio": 0.5}, "modules": ["conv1"],
                                                   "related_modules": [["bn1", "conv2"]]}}))
    model, x, y, losses = compress_and_train(config, cls=ConvNet)
    assert falls(losses)
    base = n_params(make(ConvNet))
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert model.conv1.out_channels == 4 and model.bn1.num_features == 4 and model.conv2.in_channels == 4
    # conv1 loses 4 filters of 3*3*3 + bias, bn1 4 (weight, bias), conv2 4 input channels of 8 filters 3x3
    assert n_params(model) == base - (4 * 27 + 4) - 2 * 4 - 8 * 4 * 9


def test_techniques_combine_and_pruned_weights_stay_zero_under_asymmetric_quantization():
    config = cfg(sparse_pruning=technique({"sp": {"params": {"dense_ratio": 0.5}, "modules": ["fc2"]}}),
                 weight_quantization=technique({"wq": {"params": {"start_bits": 4, "target_bits": 4},
                                                       "modules": ["fc2"]}},
                                               quantize_weight_in_forward=True, quantization_type="asymmetric"))
    model, x, y, losses = compress_and_train(config)
    assert falls(losses)
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    w = model.layers[0].fc2.weight
    assert int((w != 0).sum()) == w.numel() // 2 and int(torch.unique(w).numel()) <= 2 ** 4 + 1


def test_schedule_offset_switches_pruning_on_at_that_step():
    config = cfg(sparse_pruning=technique({"sp": {"params": {"dense_ratio": 0.5}, "modules": ["fc1"]}},
                                          schedule_offset=5))
    model, x, y = pretrained()
    init_compression(model, config)
    sched = compression_scheduler(model, config)
    fc1 = model.layers[0].fc1
    states = []
    for _ in range(6):
        states.append(fc1.sparse_pruning_enabled)
        sched.step()
    assert states == [False] * 5 + [True]


# -- layer reduction and distillation --------------------------------------------------------


def test_layer_reduction_student_from_teacher_layers():
    teacher, x, y = pretrained(Net)
    teacher4 = make(Net, n_layer=4)
    teacher4.load_state_dict({**teacher4.state_dict(), **{k: v for k, v in teacher.state_dict().items()}},
                             strict=False)
    config = cfg(layer_reduction={"enabled": True, "keep_number_layer": 2, "module_name_prefix": "layers",
                                  "teacher_layer": [1, 3], "other_module_name": ["emb", "head"]})
    student = make(Net, seed=7, n_layer=2)
    init_compression(student, config, teacher_model=teacher4)
    expected = copy.deepcopy(teacher4)
    expected.layers = nn.ModuleList([expected.layers[1], expected.layers[3]])
    with torch.no_grad():
        torch.testing.assert_close(student(x), expected(x), atol=0, rtol=0)
    # without a teacher the model is cut to the chosen layers of itself
    own = copy.deepcopy(teacher4)
    init_compression(own, config)
    assert len(own.layers) == 2 and n_params(own) == n_params(student)
    with torch.no_grad():
        torch.testing.assert_close(own(x), expected(x), atol=0, rtol=0)
    # distillation from the 4-layer teacher continues training the 2-layer student
    from deepspeed.compression.helper import distillation_loss

    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for i in range(30):
        with torch.no_grad():
            t = teacher4(x[:16])
        loss = distillation_loss(student(x[:16]), t, temperature=2.0) + nn.functional.mse_loss(student(x[:16]), y[:16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert falls(losses)


# -- the engine drives the scheduler ------------------------------------------------------------


def test_engine_applies_compression_and_steps_the_scheduler():
    import deepspeed

    model, x, y = pretrained()
    config = {"train_micro_batch_size_per_gpu": 16, "optimizer": {"type": "Adam", "params": {"lr": 3e-3}},
              "compression_training": {"sparse_pruning": technique(
                  {"sp": {"params": {"dense_ratio": 0.4}, "modules": ["fc1"]}}, schedule_offset=3)}}
    engine, *_ = deepspeed.initialize(model=model, config=config)
    fc1 = engine.module.layers[0].fc1
    assert isinstance(fc1, LinearLayer_Compress)
    states, losses = [], []
    for i in range(25):
        idx = torch.arange(i * 16, i * 16 + 16) % x.shape[0]
        loss = nn.functional.mse_loss(engine(x[idx]), y[idx])
        engine.backward(loss)
        engine.step()
        states.append(fc1.sparse_pruning_enabled)
        losses.append(loss.item())
    assert states[:2] == [False, False] and all(states[2:])
    assert falls(losses[3:])
    w, _ = fc1.effective_weight()
    assert int((w != 0).sum()) == round(0.4 * w.numel())


def test_checkpoint_restores_the_schedule_and_masks(tmp_path):
    import deepspeed

    config = {"train_micro_batch_size_per_gpu": 16, "optimizer": {"type": "Adam", "params": {"lr": 3e-3}},
              "compression_training": {
                  "sparse_pruning": technique({"sp": {"params": {"dense_ratio": 0.4}, "modules": ["fc1"]}},
                                              schedule_offset=2),
                  "weight_quantization": technique({"wq": {"params": {"start_bits": 8, "target_bits": 4,
                                                                      "quantization_period": 2},
                                                           "modules": ["fc2"]}})}}
    model, x, y = pretrained()
    engine, *_ = deepspeed.initialize(model=model, config=config)
    for i in range(5):
        engine.backward(nn.functional.mse_loss(engine(x[:16]), y[:16]))
        engine.step()
    engine.save_checkpoint(str(tmp_path), tag="t")
    other, *_ = deepspeed.initialize(model=make(), config=config)
    assert not other.module.layers[0].fc1.sparse_pruning_enabled
    other.load_checkpoint(str(tmp_path), tag="t")
    a, b = engine.module.layers[0], other.module.layers[0]
    assert b.fc1.sparse_pruning_enabled and torch.equal(a.fc1.sparse_pruning_mask, b.fc1.sparse_pruning_mask)
    assert b.fc2.wq["bits"] == a.fc2.wq["bits"] == 7 and b.fc2.wq["steps"] == a.fc2.wq["steps"]
    engine.eval()
    other.eval()
    with torch.no_grad():
        assert torch.equal(engine(x), other(x))


def test_weight_quantization_of_embedding_and_conv_layers():
    torch.manual_seed(0)
    emb = nn.Sequential(nn.Embedding(50, 16), nn.Flatten(), nn.Linear(16 * 3, 4))
    config = cfg(weight_quantization=technique({"wq": {"params": {"start_bits": 8, "target_bits": 3},
                                                       "modules": ["^0$"]}},
                                               quantize_weight_in_forward=True, quantize_groups=50))
    init_compression(emb, config)
    compression_scheduler(emb, config)
    ids = torch.randint(0, 50, (8, 3))
    before, after, emb = clean_matches(emb, config, ids)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    assert type(emb[0]) is nn.Embedding and distinct_per_group(emb[0].weight, 50) <= 7  # one group per row
    config = cfg(weight_quantization=technique({"wq": {"params": {"start_bits": 4, "target_bits": 4},
                                                       "modules": ["conv"]}},
                                               quantize_weight_in_forward=True, quantize_groups=8))
    model, x, y, losses = compress_and_train(config, cls=ConvNet, steps=30)
    assert falls(losses)
    before, after, model = clean_matches(model, config, x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert type(model.conv2) is nn.Conv2d and distinct_per_group(model.conv2.weight, 8) <= 15
