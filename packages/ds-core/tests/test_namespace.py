"""`import deepspeed` is ds-core's; feature subpackages come from their own distributions."""

import importlib.metadata
import importlib.util

import pytest

import deepspeed


def test_version_is_the_distribution_version():
    assert deepspeed.__version__ == importlib.metadata.version("ds-core")


def test_public_names_resolve_lazily():
    from deepspeed.accelerator import get_accelerator

    assert deepspeed.get_accelerator is get_accelerator
    assert deepspeed.accelerator.get_accelerator is get_accelerator


@pytest.mark.parametrize("feature,dist", [("zero", "ds-zero"), ("pipe", "ds-pipe"), ("moe", "ds-moe"), ("io", "ds-aio")])
def test_feature_attribute_comes_from_its_package_or_names_it(feature, dist):
    installed = importlib.util.find_spec(f"deepspeed.{feature}") is not None
    if installed:
        module = getattr(deepspeed, feature)
        assert module.__name__ == f"deepspeed.{feature}"
        assert importlib.metadata.version(dist)
    else:
        with pytest.raises(AttributeError, match=rf"deepspeed.{feature} is provided by {dist}, which is not installed\. Fix: pip install {dist}"):
            getattr(deepspeed, feature)


def test_unknown_attribute_is_a_plain_attribute_error():
    with pytest.raises(AttributeError, match="module 'deepspeed' has no attribute 'not_a_thing'"):
        deepspeed.not_a_thing


@pytest.mark.parametrize("name", ["safe_get_full_fp32_param", "set_z3_leaf_modules"])
def test_zero_helpers_at_deepspeed_utils(name):
    import deepspeed.utils

    if importlib.util.find_spec("deepspeed.utils.tensor_fragment") is not None:
        assert callable(getattr(deepspeed.utils, name))
    else:
        with pytest.raises(AttributeError, match=rf"deepspeed.utils.{name} is provided by ds-zero, which is not installed\. Fix: pip install ds-zero"):
            getattr(deepspeed.utils, name)
