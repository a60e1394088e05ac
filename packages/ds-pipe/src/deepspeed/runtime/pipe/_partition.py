"""Splitting a list of layers into contiguous parts (DeepSpeed's ``partition_uniform`` and
``partition_balanced`` semantics): ``parts`` has one more entry than there are parts and part
``i`` holds layers ``parts[i]:parts[i + 1]``."""

from __future__ import annotations

import bisect
import itertools


def partition_uniform(num_items: int, num_parts: int) -> list[int]:
    """Equal counts; the first ``num_items % num_parts`` parts get one item more."""
    if num_items <= num_parts:
        return [min(p, num_items) for p in range(num_parts + 1)]
    base, extra = divmod(num_items, num_parts)
    parts = [0]
    for p in range(num_parts):
        parts.append(parts[-1] + base + (1 if p < extra else 0))
    return parts


def _greedy(prefix: list[int], num_parts: int, limit: int) -> list[int] | None:
    """Fill parts left to right, each as far as its weight stays <= ``limit``; None if more parts
    would be needed."""
    n = len(prefix) - 1
    parts = [0]
    for _ in range(num_parts):
        start = parts[-1]
        # furthest end with prefix[end] - prefix[start] <= limit
        end = bisect.bisect_right(prefix, prefix[start] + limit, lo=start) - 1
        parts.append(max(end, start))
    return parts if parts[-1] == n else None


def partition_balanced(weights: list[int], num_parts: int) -> list[int]:
    """Contiguous parts minimising the heaviest part's weight (ties: earlier parts take more)."""
    num_items = len(weights)
    if num_items <= num_parts:
        return partition_uniform(num_items, num_parts)
    prefix = [0, *itertools.accumulate(int(w) for w in weights)]
    lo, hi = max(int(w) for w in weights), prefix[-1]
    while lo < hi:
        mid = (lo + hi) // 2
        if _greedy(prefix, num_parts, mid) is None:
            lo = mid + 1
        else:
            hi = mid
    return _greedy(prefix, num_parts, lo)
