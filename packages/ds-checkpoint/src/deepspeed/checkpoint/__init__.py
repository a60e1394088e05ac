"""``deepspeed.checkpoint`` (from ds-checkpoint): universal checkpoints, resharding, an async checkpoint engine.

Provides now: :mod:`deepspeed.checkpoint.ds_to_universal` (the converter), the
``checkpoint.load_universal`` loader (:mod:`deepspeed.checkpoint.universal_checkpoint`),
:mod:`deepspeed.checkpoint.utils` (``clone_tensors_for_torch_save``, which Accelerate calls on
every ZeRO-1/2 save, and DeepSpeed's checkpoint file names) and
:mod:`deepspeed.checkpoint.constants`. Not implemented yet: the async checkpoint engine and the
exports; the feature is registered with ds-core so configs and ``ds_report`` see it.
"""

from deepspeed.checkpoint._version import __version__

__all__ = ["__version__"]
