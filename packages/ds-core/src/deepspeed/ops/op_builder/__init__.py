"""``deepspeed.ops.op_builder``: the op-builder interface. Concrete builders live in the ops
packages and are registered under ``deepspeed.op_builders`` as ``<accelerator>.<op>``; every
build knob is defined in :mod:`deepspeed.ops.op_builder._knobs`."""

from deepspeed.ops.op_builder.builder import CompileUnit, OpBuilder

__all__ = ["CompileUnit", "OpBuilder"]
