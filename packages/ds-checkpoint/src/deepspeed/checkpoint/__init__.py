"""``deepspeed.checkpoint`` (from ds-checkpoint): universal checkpoints, resharding, an async checkpoint engine.

Provides now: :mod:`deepspeed.checkpoint.utils` (``clone_tensors_for_torch_save``, which
Accelerate calls on every ZeRO-1/2 save, and DeepSpeed's checkpoint file names) and
:mod:`deepspeed.checkpoint.constants`. Not implemented yet: universal checkpoints, resharding and
the async checkpoint engine; the feature is registered with ds-core so configs and ``ds_report``
see it.
"""

from deepspeed.checkpoint._version import __version__

__all__ = ["__version__"]
