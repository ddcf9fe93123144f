"""The shared test fixtures can fail: they skip with a reason when something optional is
missing, and clean up every repository they made (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from butler import Butler, StorageError
from tests.conftest import _server_url, have, repo_factory

ROOT = Path(__file__).resolve().parents[2]
#: Suites with tests that connect through a driver without a server fixture.
SUITES = ["tests/db/test_storage.py", "tests/security/test_db_untrusted.py"]


def test_repo_factory_closes_and_forgets_what_it_made(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with repo_factory(request, tmp_path) as create:
        first = create()
        second = create("posix", checksum=True)
        memory = create("memory")
        memory.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
        memory.put({"a": 1}, "cfg", visit=1)
        root = memory.storage.uri()
    assert first.storage.root == str(tmp_path / "repo")
    assert second.storage.root == str(tmp_path / "repo-1")
    with pytest.raises(StorageError, match="no butler repository"):
        Butler(root)  # dropped from the process-wide store, not left for later tests


def test_repo_factory_refuses_unknown_kinds(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with repo_factory(request, tmp_path) as create, pytest.raises(ValueError, match="'nfs'"):
        create("nfs")


@pytest.mark.parametrize(
    ("variable", "url", "driver"),
    [
        ("BUTLER_TEST_POSTGRES_URL", "postgresql+psycopg://u@127.0.0.1:5432/t", "psycopg"),
        ("BUTLER_TEST_POSTGRES_URL", "postgresql://u@127.0.0.1:5432/t", "psycopg"),
        ("BUTLER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/t", "pymysql"),
        ("BUTLER_TEST_MYSQL_URL", "mariadb://root@127.0.0.1:3306/t", "pymysql"),
    ],
)
def test_server_urls_skip_without_their_driver(
    monkeypatch: pytest.MonkeyPatch, variable: str, url: str, driver: str
) -> None:
    monkeypatch.setenv(variable, url)
    monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(pytest.skip.Exception, match=f"needs the '{driver}' driver"):
        _server_url(variable)
    monkeypatch.delenv(variable)
    with pytest.raises(pytest.skip.Exception, match=f"{variable} is not set"):
        _server_url(variable)


@pytest.mark.skipif(not have("butler_db"), reason="butler-db is not installed")
def test_database_tests_skip_without_drivers() -> None:
    """butler-db without its extras, servers configured: driver tests skip, none errors."""
    env = {
        **os.environ,
        "BUTLER_TEST_POSTGRES_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "BUTLER_TEST_MYSQL_URL": "mysql+pymysql://root@127.0.0.1:3306/test",
    }
    selection = "postgresql or mysql or password or refused or connect"
    args = ["-p", "tests._nodrivers", "-p", "no:cacheprovider", "-q", "-rs", "-k", selection]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *args, *SUITES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "error" not in summary and "failed" not in summary, summary
    assert "driver, which is not installed" in run.stdout or "could not import" in run.stdout
