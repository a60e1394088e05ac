"""``deepspeed.accelerator.hpu_accelerator`` (DeepSpeed's path): ``HPU_Accelerator``, the Gaudi HPU
accelerator class of the installed ops package. ImportError naming the package when it is missing."""

from deepspeed.accelerator._vendor import vendor_class

HPU_Accelerator = vendor_class(__name__, "HPU_Accelerator", ("hpu",))

__all__ = ["HPU_Accelerator"]
