"""A ZeRO-3 checkpoint holds the model's persistent buffers only: zero_to_fp32 gives back exactly
the keys of ``model.state_dict()`` (a non-persistent buffer, such as a rotary embedding's
``inv_freq``, would be an unexpected key for ``from_pretrained``)."""

import torch


class WithBuffers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)
        self.register_buffer("kept", torch.arange(6.0))
        self.rot = torch.nn.Module()
        self.rot.register_buffer("inv_freq", torch.ones(3), persistent=False)

    def forward(self, x):
        return self.lin(x * self.kept) + self.rot.inv_freq.sum()


def test_zero3_checkpoint_has_the_state_dict_keys(tmp_path):
    import deepspeed
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    cfg = {"train_batch_size": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}},
           "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    model = WithBuffers()
    keys = set(model.state_dict())
    assert keys == {"lin.weight", "lin.bias", "kept"}
    engine, _, _, _ = deepspeed.initialize(model=model, config=cfg)
    engine.backward(engine(torch.randn(2, 6)).sum())
    engine.step()
    engine.save_checkpoint(str(tmp_path))
    sd = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path))
    assert set(sd) == keys
    assert torch.equal(sd["kept"], torch.arange(6.0))
