"""``deepspeed.ops.fp_quantizer`` (from ds-compression): FP8 (e4m3, e5m2), FP6 (e3m2) and FP4
(e2m1) group quantization with DeepSpeed's ``FP_Quantize`` API; native kernels from the
accelerator's ops package (``fp_quantizer`` op), pure-PyTorch reference in ``.reference``."""

from deepspeed.ops.fp_quantizer.quantize import (FP_Quantize, Quantizer, format_of, fp_dequantize, fp_quantize,
                                                 fp_selective_dequantize)

__all__ = ["FP_Quantize", "Quantizer", "format_of", "fp_quantize", "fp_dequantize", "fp_selective_dequantize"]
