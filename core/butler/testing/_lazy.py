"""Checking in a fresh interpreter that plugin discovery imports nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["imported_after_discovery"]

_PROBE = """
import json, sys
import butler
from butler._plugins import discovery
registry = butler.default_registry()
found = discovery()
watched = json.loads(sys.argv[1])
print(json.dumps({
    "imported": [m for m in watched if m in sys.modules],
    "formats": sorted(registry.formats),
    "failed": [f"{p.name} ({p.distribution}): {p.error}" for p in found.plugins
               if p.status == "failed"],
}))
"""


def imported_after_discovery(modules: Iterable[str], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``import butler; butler.default_registry()`` in a new interpreter.

    Parameters
    ----------
    modules
        Module names to look for in ``sys.modules`` afterwards.

    Returns
    -------
    dict
        ``imported`` (those of ``modules`` that were imported), ``formats`` (every format
        name registered) and ``failed`` (plugins that failed to load, with their error).
    """
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(modules))],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"'import butler' + discovery failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
