"""``deepspeed.git_version_info`` (DeepSpeed's module): the version, the git commit and branch this
ds-core was built from, and the state of the ops.

* ``version``: ds-core's version (``deepspeed.__version__``).
* ``git_hash`` / ``git_branch``: read with git when ds-core runs from a git checkout (an editable
  install), else ``"[none]"`` as in DeepSpeed's uninstalled case.
* ``installed_ops``: op name -> a prebuilt module of it is installed (no JIT build needed);
  ``compatible_ops``: op name -> it can be built and run here; ``accelerator_name``: the current
  accelerator; ``torch_info``: ``{"version", "cuda_version", "hip_version"}`` as ``"major.minor"``.

The op tables depend on the installed ops packages and the accelerator, so they are computed on
first access (DeepSpeed computes them when the module is imported).
"""

from __future__ import annotations

import functools
import pathlib
import subprocess

from deepspeed.version import __version__ as version

_NONE = "[none]"


def _checkout() -> pathlib.Path | None:
    """The root of this repository when ds-core runs from its source tree (an installed copy
    inside some other git work tree must not report that tree's commit)."""
    here = pathlib.Path(__file__).resolve().parent
    for folder in here.parents:
        if (folder / ".git").exists():
            return folder if (folder / "packages" / "ds-core" / "pyproject.toml").is_file() else None
    return None


@functools.cache
def _git(*args: str) -> str:
    root = _checkout()
    if root is None:
        return _NONE
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return _NONE
    return out.stdout.strip() or _NONE


def _major_minor(v: str | None) -> str:
    if not v:
        return "0.0"
    return ".".join(v.split("+")[0].split(".")[:2])


def _torch_info() -> dict[str, str]:
    import torch

    return {"version": _major_minor(torch.__version__), "cuda_version": _major_minor(torch.version.cuda),
            "hip_version": _major_minor(getattr(torch.version, "hip", None))}


def __getattr__(name):
    if name == "git_hash":
        return _git("rev-parse", "--short", "HEAD")
    if name == "git_branch":
        return _git("rev-parse", "--abbrev-ref", "HEAD")
    if name == "torch_info":
        return _torch_info()
    if name == "accelerator_name":
        from deepspeed.accelerator import get_accelerator

        return get_accelerator()._name
    if name in ("installed_ops", "compatible_ops"):
        from deepspeed.ops.op_builder import _compat_names

        return getattr(_compat_names, name)()
    raise AttributeError(f"module 'deepspeed.git_version_info' has no attribute '{name}'")


__all__ = ["version", "git_hash", "git_branch", "installed_ops", "compatible_ops",  # noqa: F822
           "accelerator_name", "torch_info"]
