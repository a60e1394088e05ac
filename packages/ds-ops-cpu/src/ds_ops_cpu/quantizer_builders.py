"""Op builders of the CPU quantizers, registered as ``cpu.quantizer`` (int8/int4 group
quantization) and ``cpu.fp_quantizer`` (FP8 e4m3/e5m2, FP6 e3m2, FP4 e2m1 with group scales)
in the ``deepspeed.op_builders`` entry-point group.

Built like the CPU optimizers (one pybind11 module, no libtorch linkage, one kernel variant per
ISA, prebuilt in the wheel or JIT-built). The Python API over them is ds-compression's
``deepspeed.ops.quantizer`` and ``deepspeed.ops.fp_quantizer``, which also hold the pure-PyTorch
references the kernels are tested against.
"""

from __future__ import annotations

from ds_ops_cpu.op_builders import _CPUOptimizerBuilder


class CPUQuantizerBuilder(_CPUOptimizerBuilder):
    DS_PLUGIN_API = "1.0"
    NAME = "quantizer"
    BUILD_VAR = "DS_BUILD_QUANTIZER"


class CPUFPQuantizerBuilder(_CPUOptimizerBuilder):
    DS_PLUGIN_API = "1.0"
    NAME = "fp_quantizer"
    BUILD_VAR = "DS_BUILD_FP_QUANTIZER"
