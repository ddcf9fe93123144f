"""Discovery of butler-db: cheap (no SQLAlchemy import) and complete."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import butler
from butler import Butler, NoSerializerError


def test_discovery_imports_nothing_heavy() -> None:
    code = (
        "import sys, butler\n"
        "r = butler.default_registry()\n"
        "assert 'database' in r.storages, sorted(r.storages)\n"
        "assert 'sql-table' in r.formats\n"
        "import butler_db, butler_db._plugin\n"
        "heavy = [m for m in ('sqlalchemy', 'numpy', 'astropy', 'pandas', 'psycopg', "
        "'pymysql') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "scheme",
    ["sqlite", "postgresql", "postgresql+psycopg", "mysql", "mysql+pymysql", "mariadb"],
)
def test_schemes_map_to_database_storage(scheme: str) -> None:
    spec = butler.default_registry().storage_spec_for_scheme(scheme, f"{scheme}://x")
    assert spec.type_name == "database"
    assert spec.load().__name__ == "DatabaseStorage"


def test_sql_table_only_on_database_storage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    np = pytest.importorskip("numpy")
    b = Butler.create(str(tmp_path / "posix"))
    b.register_dataset_type("cat", "numpy.ndarray", "sql-table", dimensions={"visit": int})
    arr = np.zeros(2, dtype=[("a", "i4")])
    with pytest.raises(NoSerializerError, match="sql-table"):
        b.put(arr, "cat", visit=1)


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(butler.StorageError, match="in-memory SQLite"):
        Butler.create("sqlite://")
