"""Crash-test writer: overwrite large arrays in a loop until SIGKILLed.

Usage: ``python _crash_writer.py ROOT OPTIONS_JSON N_IDS BASE_ELEMENTS``.
Opens the repository, prints ``ready``, waits for the first generation number on stdin (so
the parent can start it while the previous writer still runs), then puts generation after
generation
(``visit = gen % N_IDS``, every element equal to ``gen``) with ``overwrite=True``, printing
``started GEN`` before and ``committed GEN`` after each put.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from butler import Butler


def main() -> None:
    from reliability.helpers import make_array

    root, options, n_ids, base = sys.argv[1:5]
    butler = Butler(root, **json.loads(options))
    print("ready", flush=True)
    first = sys.stdin.readline()
    if not first:
        return
    gen = int(first)
    array = make_array(gen, int(base))
    while True:
        print(f"started {gen}", flush=True)
        butler.put(array, "big", visit=gen % int(n_ids), overwrite=True)
        print(f"committed {gen}", flush=True)
        gen += 1
        array = make_array(gen, int(base))


if __name__ == "__main__":
    main()
