"""``deepspeed.runtime.sequence_parallel`` (from ds-sequence): Arctic long-sequence training.

:mod:`.ulysses_sp` (``UlyssesSPAttentionHF``, ``UlyssesSPDataLoaderAdapter``, ``TiledMLP``,
``TiledFusedLogitsLoss``, ``sequence_tiled_compute``) and :mod:`.parallel_state_sp` (the mpu).
"""
