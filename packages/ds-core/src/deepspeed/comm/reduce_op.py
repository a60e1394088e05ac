"""``ReduceOp``: DeepSpeed's reduction names, mapped to ``torch.distributed.ReduceOp``."""

from __future__ import annotations

from enum import Enum

import torch.distributed as dist


class ReduceOp(Enum):
    """The reductions ``deepspeed.comm`` collectives accept (torch's ``ReduceOp`` works too)."""

    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3
    BAND = 4
    BOR = 5
    BXOR = 6
    AVG = 7
    UNUSED = 8


_TORCH_OP = {
    ReduceOp.SUM: dist.ReduceOp.SUM,
    ReduceOp.PRODUCT: dist.ReduceOp.PRODUCT,
    ReduceOp.MIN: dist.ReduceOp.MIN,
    ReduceOp.MAX: dist.ReduceOp.MAX,
    ReduceOp.BAND: dist.ReduceOp.BAND,
    ReduceOp.BOR: dist.ReduceOp.BOR,
    ReduceOp.BXOR: dist.ReduceOp.BXOR,
    ReduceOp.AVG: dist.ReduceOp.AVG,
}


def _to_torch(op):
    """torch's op for ``op`` (a :class:`ReduceOp`, or a torch op passed through unchanged)."""
    if isinstance(op, ReduceOp):
        try:
            return _TORCH_OP[op]
        except KeyError:
            raise ValueError(
                f"op={op} is a placeholder, not a reduction; use one of "
                f"{', '.join(o.name for o in _TORCH_OP)}"
            ) from None
    return op


def _is_avg(op) -> bool:
    return op is ReduceOp.AVG or op == dist.ReduceOp.AVG
