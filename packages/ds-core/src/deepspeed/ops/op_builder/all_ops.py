"""``deepspeed.ops.op_builder.all_ops`` (DeepSpeed's path): ``ALL_OPS``, op name -> builder of that
op for the current accelerator (a :class:`~deepspeed.ops.op_builder._compat_names.MissingOpBuilder`
where no installed ops package provides it), and ``accelerator_name``. Both are computed on first
access, since they depend on the accelerator chosen."""

from deepspeed.ops.op_builder import _compat_names


def __getattr__(name):
    if name == "ALL_OPS":
        return _compat_names.all_ops()
    if name == "accelerator_name":
        from deepspeed.accelerator import get_accelerator

        return get_accelerator()._name
    raise AttributeError(f"module 'deepspeed.ops.op_builder.all_ops' has no attribute '{name}'")


__all__ = ["ALL_OPS", "accelerator_name"]  # noqa: F822 (module __getattr__)
