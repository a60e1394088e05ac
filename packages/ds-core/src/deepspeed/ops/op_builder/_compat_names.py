"""DeepSpeed's op-builder class names (``CPUAdamBuilder``, ``FusedAdamBuilder``, ...), exported by
:mod:`deepspeed.ops.op_builder`.

``CPUAdamBuilder()`` returns the builder of the ``cpu_adam`` op that an installed ops package
registers for the current accelerator (``<accelerator>.cpu_adam`` in the ``deepspeed.op_builders``
entry-point group), so ``CPUAdamBuilder().load()`` written for DeepSpeed loads our kernel. Host
ops (the CPU optimizers, async I/O) fall back to the ``cpu.<op>`` builder under a device
accelerator, as DeepSpeed's GPU accelerators build them. When no installed package provides the
op, the object is a :class:`MissingOpBuilder`: ``is_compatible()`` is False and ``load()`` raises a
RuntimeError naming the op, the accelerator, what is installed and the ``pip install`` to run.
``isinstance(builder, CPUAdamBuilder)`` holds for any builder of the ``cpu_adam`` op.
"""

from __future__ import annotations

from typing import Any

from deepspeed import _plugins
from deepspeed.ops.op_builder.builder import OpBuilder
from deepspeed.utils.logging import logger

#: DeepSpeed's class name -> (op name, DS_BUILD_* variable, host op: falls back to the cpu builder)
DEEPSPEED_BUILDERS: dict[str, tuple[str, str, bool]] = {
    "AsyncIOBuilder": ("async_io", "DS_BUILD_AIO", True),
    "CCLCommBuilder": ("deepspeed_ccl_comm", "DS_BUILD_CCL_COMM", False),
    "CPUAdagradBuilder": ("cpu_adagrad", "DS_BUILD_CPU_ADAGRAD", True),
    "CPUAdamBuilder": ("cpu_adam", "DS_BUILD_CPU_ADAM", True),
    "CPULionBuilder": ("cpu_lion", "DS_BUILD_CPU_LION", True),
    "DeepCompileBuilder": ("dc", "DS_BUILD_DEEP_COMPILE", False),
    "EvoformerAttnBuilder": ("evoformer_attn", "DS_BUILD_EVOFORMER_ATTN", False),
    "FPQuantizerBuilder": ("fp_quantizer", "DS_BUILD_FP_QUANTIZER", False),
    "FlashAttentionBuilder": ("flash_attn", "DS_BUILD_FLASH_ATTN", False),
    "FusedAdamBuilder": ("fused_adam", "DS_BUILD_FUSED_ADAM", False),
    "FusedLambBuilder": ("fused_lamb", "DS_BUILD_FUSED_LAMB", False),
    "FusedLionBuilder": ("fused_lion", "DS_BUILD_FUSED_LION", False),
    "GDSBuilder": ("gds", "DS_BUILD_GDS", False),
    "InferenceBuilder": ("transformer_inference", "DS_BUILD_TRANSFORMER_INFERENCE", False),
    "InferenceCoreBuilder": ("inference_core_ops", "DS_BUILD_INFERENCE_CORE_OPS", False),
    "InferenceCutlassBuilder": ("cutlass_ops", "DS_BUILD_CUTLASS_OPS", False),
    "PackbitsBuilder": ("packbits", "DS_BUILD_PACK_BITS", False),
    "PinMemoryBuilder": ("pin_memory", "DS_BUILD_PIN_MEMORY", False),
    "QuantizerBuilder": ("quantizer", "DS_BUILD_QUANTIZER", False),
    "RaggedOpsBuilder": ("ragged_device_ops", "DS_BUILD_RAGGED_DEVICE_OPS", False),
    "RaggedUtilsBuilder": ("ragged_ops", "DS_BUILD_RAGGED_OPS", False),
    "RandomLTDBuilder": ("random_ltd", "DS_BUILD_RANDOM_LTD", False),
    "ShareMemCommBuilder": ("deepspeed_shm_comm", "DS_BUILD_SHM_COMM", False),
    "SparseAttnBuilder": ("sparse_attn", "DS_BUILD_SPARSE_ATTN", False),
    "SpatialInferenceBuilder": ("spatial_inference", "DS_BUILD_SPATIAL_INFERENCE", False),
    "StochasticTransformerBuilder": ("stochastic_transformer", "DS_BUILD_STOCHASTIC_TRANSFORMER", False),
    "TransformerBuilder": ("transformer", "DS_BUILD_TRANSFORMER", False),
    "UtilsBuilder": ("utils", "DS_BUILD_UTILS", False),
}


def _accelerator_name() -> str:
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()._name


def provider_class(op_name: str, host_op: bool) -> type | None:
    """The builder class an installed ops package registers for ``op_name`` under the current
    accelerator (host ops: else the cpu one), or None."""
    acc = _accelerator_name()
    candidates = [f"{acc}.{op_name}"] + ([f"cpu.{op_name}"] if host_op and acc != "cpu" else [])
    plugins = _plugins.op_builders()
    for key in candidates:
        if key in plugins:
            return _with_deepspeed_calls(plugins[key].load(), op_name)
    return None


_api_classes: dict[type, type] = {}


def _with_deepspeed_calls(cls: type, op_name: str) -> type:
    """For an op whose DeepSpeed call interface differs from the kernel's (the CPU optimizers'
    ``create_adam``/``adam_update``/...), a subclass of the provider's builder whose ``load()``
    returns the module with DeepSpeed's functions added (:mod:`._kernel_api`)."""
    from deepspeed.ops.op_builder import _kernel_api

    if op_name not in _kernel_api._APIS:
        return cls
    if cls not in _api_classes:
        def load(self, verbose: bool = True):
            # the provider's own builder loads (and caches) the module, as the accelerator's does
            return _kernel_api.with_deepspeed_api(op_name, cls().load(verbose))

        _api_classes[cls] = type(cls.__name__, (cls,), {
            "load": load, "jit_load": load, "__module__": __name__, "__qualname__": cls.__qualname__,
            "__doc__": f"{cls.__module__}.{cls.__qualname__}, whose load() also offers DeepSpeed's call interface."})
    return _api_classes[cls]


def missing_reason(op_name: str, host_op: bool) -> str:
    """Why no builder of ``op_name`` is available, and the fix."""
    acc = _accelerator_name()
    plugins = _plugins.op_builders()
    own = _plugins.provider_hint(_plugins.OP_BUILDERS, f"{acc}.{op_name}")
    installed_accs = _plugins.accelerators()
    elsewhere = sorted(k for k in plugins if k.split(".", 1)[1] == op_name)
    msg = f"no installed ops package provides the '{op_name}' op for the {acc} accelerator"
    if host_op and acc != "cpu":
        msg += " (nor for cpu, which builds host ops)"
    if elsewhere:
        msg += f"; it is registered for: {', '.join(elsewhere)}"
    if own and acc in installed_accs:
        plugin = installed_accs[acc]
        ops = sorted(k.split(".", 1)[1] for k in _plugins.op_builders(acc))
        msg += (f". {plugin.distribution} {plugin.version} (the {acc} accelerator's ops package) is installed but "
                f"does not provide it (it provides: {', '.join(ops) or 'none'}). Fix: upgrade {plugin.distribution} to "
                f"a release with '{op_name}', or use the PyTorch implementation of the op")
    elif own:
        msg += f". Fix: pip install {own}"
    else:
        msg += f". Fix: install the ops package of the {acc} accelerator that provides '{op_name}'"
    return msg


class _BuilderMeta(type):
    """``isinstance(b, CPUAdamBuilder)`` for any builder of the ``cpu_adam`` op."""

    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        name = cls.__dict__.get("NAME")
        return bool(name) and isinstance(obj, OpBuilder) and getattr(obj, "NAME", None) == name


class MissingOpBuilder(OpBuilder, metaclass=_BuilderMeta):
    """An op no installed package provides here: incompatible, and ``load()`` says what to install."""

    _HOST = False

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is not MissingOpBuilder and cls.NAME:
            found = provider_class(cls.NAME, cls._HOST)
            if found is not None:
                return found(*args, **kwargs)
        return super().__new__(cls)

    def reason(self) -> str:
        return missing_reason(self.NAME, self._HOST)

    def absolute_name(self) -> str:
        return f"deepspeed.ops.{self.NAME}_op"

    def sources(self) -> list[str]:
        return []

    def is_compatible(self, verbose: bool = False) -> bool:
        if verbose:
            logger.warning(f"{self.NAME}: {self.reason()}")
        return False

    def compatibility_notes(self) -> str:
        return self.reason()

    def is_built(self) -> bool:
        return False

    def jit_load(self, verbose: bool = True) -> Any:
        return self.load(verbose)

    def load(self, verbose: bool = True) -> Any:
        raise RuntimeError(f"{type(self).__name__}().load(): {self.reason()}")

    def jit_build(self, verbose: bool = False):
        raise RuntimeError(f"{type(self).__name__}().jit_build(): {self.reason()}")


def _make(class_name: str, op_name: str, build_var: str, host_op: bool) -> type:
    doc = (f"DeepSpeed's ``{class_name}``: the builder of the ``{op_name}`` op from the installed ops package "
           f"of the current accelerator" + (" (or the cpu one: a host op)" if host_op else "") + ".")
    return _BuilderMeta(class_name, (MissingOpBuilder,), {
        "NAME": op_name, "BUILD_VAR": build_var, "_HOST": host_op, "__doc__": doc,
        "__module__": "deepspeed.ops.op_builder",
    })


BUILDER_CLASSES: dict[str, type] = {name: _make(name, *spec) for name, spec in DEEPSPEED_BUILDERS.items()}


def all_ops() -> dict[str, OpBuilder]:
    """DeepSpeed's ``ALL_OPS``: op name -> builder instance for the current accelerator."""
    return {cls.NAME: cls() for cls in BUILDER_CLASSES.values()}


def installed_ops() -> dict[str, bool]:
    """Op name -> whether a prebuilt module of it is installed (no compile needed)."""
    return {name: bool(b.is_built()) for name, b in all_ops().items()}


def compatible_ops() -> dict[str, bool]:
    """Op name -> whether it can be built and run here (DeepSpeed's ``compatible_ops``)."""
    out = {}
    for name, b in all_ops().items():
        try:
            out[name] = bool(b.is_compatible())
        except Exception as exc:  # a provider's check must not break the report
            logger.warning(f"{name}: is_compatible() failed: {type(exc).__name__}: {exc}")
            out[name] = False
    out["deepspeed_not_implemented"] = False
    return out
