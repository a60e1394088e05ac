"""``deepspeed.ops.op_builder``: the op-builder interface. Concrete builders live in the ops
packages and are registered under ``deepspeed.op_builders`` as ``<accelerator>.<op>``."""

from deepspeed.ops.op_builder.builder import OpBuilder

__all__ = ["OpBuilder"]
