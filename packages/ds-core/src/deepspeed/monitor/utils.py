"""``deepspeed.monitor.utils``: DeepSpeed's checks that a monitor's package is importable. Each
returns None when it is, else raises ImportError naming the ``pip install`` that fixes it."""

from __future__ import annotations

import importlib


def _check(module: str, requirement: str, section: str, min_version: tuple[int, ...] | None = None) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{section} logging needs the {module} package ({exc}). Fix: pip install "
                          f"'{requirement}', or disable {section} in the ds_config") from None
    if min_version is not None:
        found = getattr(mod, "__version__", "0")
        parts = tuple(int(p) for p in found.split("+")[0].split(".")[:len(min_version)] if p.isdigit())
        if parts < min_version:
            raise ImportError(f"{section} logging needs {requirement}, found {module} {found}. "
                              f"Fix: pip install -U '{requirement}'")


def check_tb_availability() -> None:
    _check("tensorboard", "tensorboard", "tensorboard")


def check_wandb_availability() -> None:
    _check("wandb", "wandb", "wandb")


def check_comet_availability() -> None:
    _check("comet_ml", "comet_ml>=3.41.0", "comet", (3, 41, 0))
