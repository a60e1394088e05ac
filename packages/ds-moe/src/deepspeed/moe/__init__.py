"""``deepspeed.moe`` (from ds-moe): DeepSpeed's Mixture-of-Experts layer, gating and expert parallelism.

Public modules, with DeepSpeed's import paths: :mod:`deepspeed.moe.layer` (``MoE``),
:mod:`deepspeed.moe.sharded_moe` (``TopKGate``, ``MOELayer``, ``top1gating``, ``top2gating``,
``topkgating``), :mod:`deepspeed.moe.experts` (``Experts``) and :mod:`deepspeed.moe.utils`.
"""

from deepspeed.moe._version import __version__

__all__ = ["__version__"]
