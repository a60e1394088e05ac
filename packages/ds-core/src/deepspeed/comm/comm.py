"""``deepspeed.comm.comm`` (DeepSpeed's module, where DeepSpeed defines its collectives):
every public name of :mod:`deepspeed.comm`, re-exported (``from deepspeed.comm.comm import
init_distributed``)."""

from deepspeed import comm as _comm

globals().update({name: getattr(_comm, name) for name in _comm.__all__})

__all__ = list(_comm.__all__)
