"""``deepspeed.profiling``: the flops profiler (:mod:`.flops_profiler`); its ds_config section
``flops_profiler`` is in :mod:`.config`."""
