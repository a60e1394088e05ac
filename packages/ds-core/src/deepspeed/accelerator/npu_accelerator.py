"""``deepspeed.accelerator.npu_accelerator`` (DeepSpeed's path): ``NPU_Accelerator``, the Ascend NPU
accelerator class of the installed ops package. ImportError naming the package when it is missing."""

from deepspeed.accelerator._vendor import vendor_class

NPU_Accelerator = vendor_class(__name__, "NPU_Accelerator", ("npu",))

__all__ = ["NPU_Accelerator"]
