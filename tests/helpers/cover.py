"""Greedy covering of a set of wanted properties by the first few items that show them."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


def greedy_cover(want: set[Hashable], has: Callable[[int], Iterable[Hashable]], limit: int) -> list[int]:
    """Indices ``i < limit``, in order, each showing something of ``want`` (``has(i)``) that no earlier
    chosen index showed, until every wanted property is shown; raises if ``limit`` is not enough."""
    want = set(want)
    chosen = []
    for i in range(limit):
        have = set(has(i))
        if have & want:
            chosen.append(i)
            want -= have
        if not want:
            return chosen
    raise AssertionError(f"not covered in {limit} items: {want}")
