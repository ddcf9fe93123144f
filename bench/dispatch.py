"""Registry lookup cost: cached and uncached (goal: <= 1 us cached, <= 20 us uncached).

Usage: ``python bench/dispatch.py``. Uses the process-wide registry with every installed
plugin, and a user class three levels below a registered base.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import butler


class Base(dict):  # type: ignore[type-arg]
    pass


class Mid(Base):
    pass


class Leaf(Mid):
    pass


def per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    reg = butler.default_registry()
    n = 200_000
    cached = per_call(lambda: reg.find(Leaf, "posix", "json"), n)
    cached_abc = per_call(lambda: reg.find(OrderedDict, "posix", "config"), n)

    def uncached() -> None:
        reg._cache.clear()
        reg.find(Leaf, "posix", "json")

    cold = per_call(uncached, 5_000)
    print(f"registry: {reg!r}")
    print(f"cached lookup (MRO depth 4)     : {cached * 1e6:6.2f} us (goal <= 1 us)")
    print(f"cached lookup (ABC, OrderedDict): {cached_abc * 1e6:6.2f} us")
    print(f"uncached lookup                 : {cold * 1e6:6.2f} us (goal <= 20 us)")


if __name__ == "__main__":
    main()
