"""``deepspeed.accelerator.xpu_accelerator`` (DeepSpeed's path): ``XPU_Accelerator``, the Intel XPU
accelerator class of the installed ops package. ImportError naming the package when it is missing."""

from deepspeed.accelerator._vendor import vendor_class

XPU_Accelerator = vendor_class(__name__, "XPU_Accelerator", ("xpu",))

__all__ = ["XPU_Accelerator"]
