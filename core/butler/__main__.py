"""``python -m butler``: the ``butler`` command line."""

from .cli import main

main(prog_name="butler")
