"""ZeRO's optimizer allow-list (moved here from ds-core with the rule itself): ZeRO runs only with
optimizers it is tested with unless ``zero_allow_untested_optimizer`` is set."""

import types

import pytest
import torch

from deepspeed.runtime.zero._build import check_zero_optimizer


def model():
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))


def test_zero_allow_untested_optimizer():
    rms = torch.optim.RMSprop(model().parameters(), lr=0.1)
    cfg = types.SimpleNamespace(zero_optimization_stage=1, zero_allow_untested_optimizer=False)
    with pytest.raises(NotImplementedError, match='"zero_allow_untested_optimizer": true'):
        check_zero_optimizer(rms, cfg)
    cfg.zero_allow_untested_optimizer = True
    check_zero_optimizer(rms, cfg)  # allowed: only a warning
    check_zero_optimizer(torch.optim.AdamW(model().parameters()), types.SimpleNamespace(
        zero_optimization_stage=2, zero_allow_untested_optimizer=False))
    check_zero_optimizer(rms, types.SimpleNamespace(zero_optimization_stage=0, zero_allow_untested_optimizer=False))
