"""``deepspeed.testing``: test kits for this project and for vendors' plugins.

* :mod:`deepspeed.testing.conformance`: ``AcceleratorConformance``, the checks any accelerator
  plugin must pass (subclass it in the plugin's tests);
* :mod:`deepspeed.testing.distributed`: run a test body in N real processes on gloo.
"""
