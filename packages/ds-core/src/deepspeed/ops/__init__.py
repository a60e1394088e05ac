"""``deepspeed.ops``: optimizers and ops backed by native kernels from the ops packages.

``__compatible_ops__`` (DeepSpeed's name): op name -> whether it can be built and run here, from
the builders of the installed ops packages (computed on first access)."""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)


def __getattr__(name):
    if name == "__compatible_ops__":
        from deepspeed.ops.op_builder._compat_names import compatible_ops

        value = compatible_ops()
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepspeed.ops' has no attribute '{name}'")
