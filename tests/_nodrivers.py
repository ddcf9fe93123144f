"""A pytest plugin that hides the database drivers, as where butler-db is installed without
its ``postgresql``/``mysql`` extras: ``pytest -p tests._nodrivers ...``.

Used by tests/core/test_fixtures.py to prove that every test needing a driver skips then.
"""

from __future__ import annotations

import sys

#: Driver modules to hide; ``None`` in ``sys.modules`` makes their import raise ImportError
#: and ``importlib.util.find_spec`` return None.
HIDDEN = ("psycopg", "psycopg2", "pymysql", "MySQLdb")

for _name in HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]
