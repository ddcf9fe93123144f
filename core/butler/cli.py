"""The ``butler`` command line as a public entry point: ``butler.cli.main`` is the click
group behind the ``butler`` console script (for ``click.testing.CliRunner`` and embedding).
"""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]
