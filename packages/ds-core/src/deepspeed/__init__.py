"""DeepSpeed-compatible training and inference for PyTorch (ds-core).

Feature packages (ds-zero, ds-pipe, ...) add subpackages to this namespace; ops packages are
plugins found through entry points and never imported from here.
"""

import importlib
import pkgutil

# Note: feature packages ship deepspeed/<feature>/ without a deepspeed/__init__.py; extend_path
# makes their folders part of this package in editable installs, where each lives in its own src/.
__path__ = pkgutil.extend_path(__path__, __name__)

from deepspeed.version import __version__  # noqa: E402

__version_major__, __version_minor__, __version_patch__ = (int(p) for p in __version__.split(".")[:3])

# Public names, imported on first use so `import deepspeed` stays cheap (no engine, no comm setup).
_LAZY = {
    "initialize": "deepspeed._initialize",
    "add_config_arguments": "deepspeed._initialize",
    "init_distributed": "deepspeed.comm",
    "DeepSpeedEngine": "deepspeed.runtime.engine",
    "DeepSpeedConfig": "deepspeed.runtime.config",
    "get_accelerator": "deepspeed.accelerator",
    "logger": "deepspeed.utils",
    "log_dist": "deepspeed.utils",
    "OnDevice": "deepspeed.utils.init_on_device",
    "DeepSpeedConfigError": "deepspeed.runtime.config",
    "DeepSpeedDataLoader": "deepspeed.runtime.dataloader",
    "DeepSpeedOptimizer": "deepspeed.runtime.base_optimizer",
    "TORCH_DISTRIBUTED_DEFAULT_PORT": "deepspeed.constants",
    "git_hash": "deepspeed.git_version_info",
    "git_branch": "deepspeed.git_version_info",
    # from feature packages (a missing one is named with its pip install)
    "PipelineModule": "deepspeed.pipe",
    "PipelineEngine": "deepspeed.runtime.pipe.engine",
}
# ds-core's own subpackages, and those of the feature packages (from the generated provider table).
_CORE_SUBMODULES = {
    "accelerator", "comm", "config", "runtime", "ops", "utils", "checkpointing", "launcher", "profiling",
    "monitor", "protocols", "testing", "git_version_info",
}


def _submodules() -> set:
    _providers = importlib.import_module("deepspeed._providers")
    return _CORE_SUBMODULES | {m.split(".")[1] for m in _providers.MODULES if m.count(".") == 1}


def __getattr__(name):
    if name in ("__git_hash__", "__git_branch__"):  # DeepSpeed's names; git runs on first access
        from deepspeed import git_version_info

        value = getattr(git_version_info, name.strip("_"))
        globals()[name] = value
        return value
    if name.startswith("_"):  # private submodules are imported, never resolved here
        raise AttributeError(f"module 'deepspeed' has no attribute '{name}'")
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            from deepspeed import _plugins

            dist = _plugins.feature_for_module(_LAZY[name])
            if dist is None or not (exc.name and _LAZY[name].startswith(exc.name)):
                raise
            raise AttributeError(f"deepspeed.{name} is provided by {dist}, which is not installed. "
                                 f"Fix: pip install {dist}") from exc
        value = getattr(module, name)
        globals()[name] = value
        return value
    if name in _submodules():
        try:
            module = importlib.import_module(f"deepspeed.{name}")
        except ModuleNotFoundError as exc:
            from deepspeed import _plugins

            dist = _plugins.feature_for_module(f"deepspeed.{name}")
            if dist is None or exc.name != f"deepspeed.{name}":
                raise
            raise AttributeError(
                f"module 'deepspeed' has no attribute '{name}': deepspeed.{name} is provided by "
                f"{dist}, which is not installed. Fix: pip install {dist}"
            ) from exc
        globals()[name] = module
        return module
    raise AttributeError(f"module 'deepspeed' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _submodules())
