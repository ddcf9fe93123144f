"""What every bench prints beside its figures: the machine's load, and ratios per round.

A ratio is raw time / butler time of the *same* round (1.0: butler costs nothing extra;
above 1: butler is faster), so that load that comes and goes hits both sides of it alike;
`ratios` prints their min / median / max over the rounds.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence

__all__ = ["load", "ratios"]


def load() -> str:
    """``load average 1.02 0.87 0.55 on 2 cores`` (1, 5 and 15 minutes)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def ratios(raw: Sequence[float], butler: Sequence[float]) -> str:
    """``min / median / max`` of raw[i] / butler[i] over the rounds."""
    per_round = sorted(r / b for r, b in zip(raw, butler, strict=True))
    return (
        f"{per_round[0]:.2f} / {statistics.median(per_round):.2f} / {per_round[-1]:.2f}"
        f" (min / median / max of {len(per_round)} rounds)"
    )
