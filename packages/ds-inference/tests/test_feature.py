"""ds-inference installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.inference

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.inference.__version__ == importlib.metadata.version("ds-inference")
    assert deepspeed.__file__ != deepspeed.inference.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "inference" in feats
    assert feats["inference"].distribution == "ds-inference"
