"""``deepspeed.accelerator.cuda_accelerator`` (DeepSpeed's path): ``CUDA_Accelerator``, the CUDA
accelerator class of the installed ops package (else the ROCm one: DeepSpeed drives ROCm through
its CUDA accelerator). ImportError naming the package when it is missing."""

from deepspeed.accelerator._vendor import vendor_class

CUDA_Accelerator = vendor_class(__name__, "CUDA_Accelerator", ("cuda", "rocm"))

__all__ = ["CUDA_Accelerator"]
