"""All packages installed together, editable: one `deepspeed` namespace spans every src/ folder."""

import importlib
import pathlib

import pytest

from deepspeed import _plugins

ROOT = pathlib.Path(__file__).resolve().parents[1]
FEATURES = {"zero": "ds-zero", "pipe": "ds-pipe", "moe": "ds-moe", "inference": "ds-inference",
            "compression": "ds-compression", "checkpoint": "ds-checkpoint", "io": "ds-aio",
            "sequence": "ds-sequence"}
ACCELERATORS = {"cpu", "cuda", "rocm", "xpu", "hpu", "npu"}


@pytest.mark.parametrize("feature,dist", sorted(FEATURES.items()))
def test_feature_subpackage_comes_from_its_own_folder(feature, dist):
    import deepspeed

    module = importlib.import_module(f"deepspeed.{feature}")
    assert pathlib.Path(module.__file__).is_relative_to(ROOT / "packages" / dist / "src" / "deepspeed")
    assert pathlib.Path(deepspeed.__file__).is_relative_to(ROOT / "packages" / "ds-core" / "src")
    assert _plugins.features()[feature].distribution == dist


def test_every_accelerator_registered_and_cpu_selected():
    from deepspeed.accelerator import get_accelerator

    assert set(_plugins.accelerators()) == ACCELERATORS
    assert get_accelerator()._name == "cpu"
    assert type(get_accelerator()).__module__ == "ds_ops_cpu.accelerator"


def test_ops_packages_are_not_imported_by_deepspeed():
    import subprocess
    import sys

    code = ("import sys, deepspeed, deepspeed.zero, deepspeed.runtime; "
            "print(sorted(m for m in sys.modules if m.startswith('ds_ops_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
