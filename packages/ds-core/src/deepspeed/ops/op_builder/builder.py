"""The op-builder base class.

A builder describes one native op: where its sources are, how to compile them, whether this
machine can run it (:meth:`is_compatible`), whether a prebuilt module shipped with the wheel
(:meth:`is_built`), and :meth:`load`, which returns the loaded module. Builders are registered by
ops packages under the ``deepspeed.op_builders`` entry-point group as ``<accelerator>.<NAME>``.
"""

from __future__ import annotations

from typing import Any


class OpBuilder:
    """Base of every op builder. Subclasses set ``NAME`` and ``BUILD_VAR`` and implement
    :meth:`absolute_name`, :meth:`sources` and :meth:`load`."""

    DS_PLUGIN_API = "1.0"
    #: Op name, also the entry-point suffix (``cpu.cpu_adam`` -> ``cpu_adam``).
    NAME: str = ""
    #: Environment variable that turns the ahead-of-time build of this op on (``DS_BUILD_CPU_ADAM``).
    BUILD_VAR: str = ""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.NAME
        self.jit_mode = False
        self.error_log: str | None = None

    def absolute_name(self) -> str:
        """Import name of the compiled module."""
        raise NotImplementedError(f"{type(self).__name__} must implement absolute_name()")

    def sources(self) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__} must implement sources()")

    def include_paths(self) -> list[str]:
        return []

    def cxx_args(self) -> list[str]:
        return []

    def extra_ldflags(self) -> list[str]:
        return []

    def is_compatible(self, verbose: bool = False) -> bool:
        """Whether this machine can build and run the op."""
        return True

    def compatibility_notes(self) -> str:
        """Why the op is or is not compatible, for ``ds_report``."""
        return ""

    def is_built(self) -> bool:
        """Whether a prebuilt module for the running torch/ISA is installed (no compile needed)."""
        return False

    def load(self, verbose: bool = True) -> Any:
        """Return the loaded op module, building it just in time if needed."""
        raise NotImplementedError(f"{type(self).__name__} must implement load()")
