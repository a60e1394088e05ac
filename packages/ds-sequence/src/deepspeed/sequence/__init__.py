"""``deepspeed.sequence`` (from ds-sequence): DeepSpeed-Ulysses sequence parallelism.

Public modules, with DeepSpeed's import paths: :mod:`deepspeed.sequence.layer`
(``DistributedAttention``, ``_SeqAllToAll``, ``single_all_to_all``) and :mod:`deepspeed.sequence.loss`
(``sequence_parallel_mean_loss``, beyond DeepSpeed). ALST (Ulysses for Hugging Face models, tiled
compute) is at DeepSpeed's path :mod:`deepspeed.runtime.sequence_parallel.ulysses_sp`.
"""

from deepspeed.sequence._version import __version__

__all__ = ["__version__"]
