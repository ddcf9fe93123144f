"""Registry lookup against `functools.singledispatch`, interleaved in one run.

Both sides resolve the same classes among the same registered types, the way each is
used on a hot path:

* butler: ``registry.find(cls, "posix", fmt)`` on the process-wide registry with every
  installed plugin (discovery done before timing);
* reference: ``dispatcher.dispatch(cls)`` of a ``functools.singledispatch`` function with
  one implementation registered for each class the registry holds a serializer for.

Classes looked up: ``Leaf`` (a user class three levels below ``dict``: MRO depth 5) in
``json``, ``OrderedDict`` in ``config`` (found through its base class ``dict``), and
``Settings`` (a user dataclass) in ``config``, found only through the registered
``DataclassLike`` ABC (not in its MRO); each side's answer is checked to be the same
registered type before timing. *Cached*:
the same lookup repeated; *uncached*: each side's cache cleared before every lookup
(``registry._cache.clear()`` / ``dispatcher._clear_cache()``). Blocks alternate A B A B
in every round; the ratio is butler / singledispatch per round (1.0 = as fast).

Goals (issue 19): cached <= 2x singledispatch, uncached <= 20 us. ``--check`` exits 1 when
the median misses either.

Usage: ``python bench/dispatch.py [--rounds 15] [--check]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

import butler
from butler._types import loaded_type


class Base(dict):  # type: ignore[type-arg]
    pass


class Mid(Base):
    pass


class Leaf(Mid):
    pass


@dataclasses.dataclass
class Settings:
    """A user dataclass: butler's ``config`` format takes it through the DataclassLike ABC."""

    gain: float = 1.5


def block(fn: Callable[[], None], n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def reference_dispatcher(reg: butler.Registry) -> Callable[..., object]:
    """A singledispatch function over the registry's registered (importable) types."""

    @functools.singledispatch
    def dispatcher(obj: object) -> str:
        return "object"

    for name in sorted(reg.type_names):
        cls = loaded_type(name)
        if cls is not None and cls is not object:
            dispatcher.register(cls, lambda obj, _name=name: _name)
    return dispatcher


def summary(values: list[float]) -> str:
    return f"{min(values):6.2f} / {statistics.median(values):6.2f} / {max(values):6.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="A B rounds per measure")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args()
    reg = butler.default_registry()
    dispatcher = reference_dispatcher(reg)
    find, dispatch, clear = reg.find, dispatcher.dispatch, dispatcher._clear_cache  # type: ignore[attr-defined]
    cases = [
        ("Leaf -> json", Leaf, "json"),
        ("OrderedDict -> config", OrderedDict, "config"),
        ("Settings (ABC) -> config", Settings, "config"),
    ]
    load_before = os.getloadavg()
    print(f"registry: {reg!r}")
    print(f"reference: functools.singledispatch over {len(dispatcher.registry)} types")
    print("per lookup, microseconds, min / median / max over rounds; ratio = butler / reference")
    failed = []
    for label, cls, fmt in cases:
        found = find(cls, "posix", fmt)
        assert found is not None and found.python_type == dispatch(cls)(None), (label, found)

        def cached_butler(cls: type = cls, fmt: str = fmt) -> None:
            find(cls, "posix", fmt)

        def cached_ref(cls: type = cls) -> None:
            dispatch(cls)

        def cold_butler(cls: type = cls, fmt: str = fmt) -> None:
            reg._cache.clear()
            find(cls, "posix", fmt)

        def cold_ref(cls: type = cls) -> None:
            clear()
            dispatch(cls)

        for kind, a, b, n, goal in (
            ("cached", cached_butler, cached_ref, 100_000, "ratio <= 2"),
            ("uncached", cold_butler, cold_ref, 2_000, "butler <= 20 us"),
        ):
            ours, theirs, ratios = [], [], []
            for _ in range(args.rounds):
                t_a = block(a, n)
                t_b = block(b, n)
                ours.append(t_a * 1e6)
                theirs.append(t_b * 1e6)
                ratios.append(t_a / t_b)
            print(f"{label:24} {kind:8}  butler {summary(ours)}  singledispatch "
                  f"{summary(theirs)}  ratio {summary(ratios)}  (goal {goal})")  # fmt: skip
            if kind == "cached" and statistics.median(ratios) > 2.0:
                failed.append(f"{label} cached ratio {statistics.median(ratios):.2f} > 2")
            if kind == "uncached" and statistics.median(ours) > 20.0:
                failed.append(f"{label} uncached {statistics.median(ours):.1f} us > 20 us")
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    if args.check and failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
