"""``deepspeed.ops.quantizer`` (from ds-compression): int8 / int4 group quantization
(``ds_quantizer``, ``quantize``, ``dequantize``); native kernels from the accelerator's ops
package (``quantizer`` op), pure-PyTorch reference in ``.reference``."""

from deepspeed.ops.quantizer.quantizer import QuantizedTensor, dequantize, ds_quantizer, quantize

__all__ = ["QuantizedTensor", "ds_quantizer", "quantize", "dequantize"]
