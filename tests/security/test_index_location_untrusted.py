"""Where a repository keeps its dataset index is the policy's say, and the policy is
untrusted input: anyone who can write ``butler.yaml`` could name a database server of their
own (a reader's ``PGPASSWORD`` or ``~/.pgpass`` password would go there) or any path the
reader can write (butler would create its index tables there). The reader decides: an index
outside the repository is opened only when the reader names it (``Butler(root,
index=URL)``) or lists it in ``BUTLER_TRUSTED_INDEXES``; until then every operation that
needs the index refuses, saying how to trust it, and reads of datasets go on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from butler import Butler, DatasetNotFoundError, StorageError
from butler._storage import POLICY_KEY


def _plant_index(root: Path, where: str) -> None:
    """Rewrite the policy's index line, as anyone who can write the repository could."""
    policy = root / POLICY_KEY
    text = policy.read_text()
    assert "  index: embedded\n" in text
    policy.write_text(text.replace("  index: embedded\n", f"  index: '{where}'\n"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    with Butler.create(str(root)) as b:
        b.register_dataset_type("cfg", dict, "json", dimensions=["visit"])
        b.put({"v": 1}, "cfg", visit=1)
    return root


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP server on loopback that only counts who connects."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.3)
    yield server
    server.close()


def _connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return count
        conn.close()
        count += 1


def test_a_planted_index_path_is_never_created(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUTLER_TRUSTED_INDEXES", raising=False)
    victim = tmp_path / "victim"
    victim.mkdir()
    _plant_index(repo, str(victim))
    with Butler(str(repo)) as b:
        assert b.get("cfg", visit=1) == {"v": 1}  # reads need no index
        for attempt in (
            lambda: b.put({"v": 2}, "cfg", visit=2),
            lambda: list(b.datasets("cfg")),
            lambda: b.count("cfg"),
        ):
            with pytest.raises(StorageError) as info:
                attempt()
            message = str(info.value)
            assert "BUTLER_TRUSTED_INDEXES" in message and "index=URL" in message
            assert str(victim) in message
        with pytest.raises(DatasetNotFoundError):
            b.get("cfg", visit=2)  # the refused put wrote nothing
    assert list(victim.iterdir()) == []
    # The reader's own choice opens it, by argument or by the environment.
    with Butler(str(repo), index=str(victim)) as b:
        b.put({"v": 2}, "cfg", visit=2)
    assert (victim / ".butler").is_dir()
    monkeypatch.setenv("BUTLER_TRUSTED_INDEXES", f"postgresql://x@h/db  {victim}")
    with Butler(str(repo)) as b:
        # That index is new while the repository holds datasets: recorded incomplete, so
        # counts list the storage (both datasets), never its one row.
        assert b.index is not None and b._query_index() is None
        assert b.count("cfg") == 2


def test_a_planted_database_server_gets_no_connection(
    repo: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``PGPASSWORD`` set, a connection to the planted server would hand it over."""
    monkeypatch.setenv("PGPASSWORD", "not-for-them")
    monkeypatch.setenv("BUTLER_TRUSTED_INDEXES", "postgresql+psycopg://victim@127.0.0.1:1/other")
    port = listener.getsockname()[1]
    # (connect_timeout: were it connected to, the test fails instead of waiting forever)
    planted = f"postgresql+psycopg://victim@127.0.0.1:{port}/harvest?connect_timeout=2"
    _plant_index(repo, planted)
    with Butler(str(repo)) as b:
        with pytest.raises(StorageError, match="BUTLER_TRUSTED_INDEXES") as info:
            b.put({"v": 2}, "cfg", visit=2)
        assert "victim" not in str(info.value)  # the URL's user is masked
        assert f"127.0.0.1:{port}/harvest" in str(info.value)
        with pytest.raises(StorageError, match="BUTLER_TRUSTED_INDEXES"):
            b.index  # noqa: B018 - opening it is what is refused
    assert _connections(listener) == 0


def test_the_command_line_names_the_variable_only(repo: Path, tmp_path: Path) -> None:
    """On the command line the way to trust an index is the environment variable: the
    message names it, not Python's ``Butler(root, index=URL)``."""
    from click.testing import CliRunner

    from butler._cli import main

    _plant_index(repo, str(tmp_path / "elsewhere"))
    result = CliRunner().invoke(main, ["ls", str(repo), "cfg"], env={"BUTLER_TRUSTED_INDEXES": ""})
    assert result.exit_code == 1
    assert "BUTLER_TRUSTED_INDEXES" in result.output and "Butler(" not in result.output


def test_a_trusted_index_travels_with_a_pickled_butler(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Dask worker unpickles the Butler in its own environment: an index this process
    trusts through the variable goes with it as the explicit ``index`` argument (as
    before the variable existed), and an untrusted one does not."""
    import pickle

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _plant_index(repo, str(elsewhere))
    monkeypatch.setenv("BUTLER_TRUSTED_INDEXES", str(elsewhere))
    with Butler(str(repo)) as b:
        data = pickle.dumps(b)
    monkeypatch.delenv("BUTLER_TRUSTED_INDEXES")
    with pickle.loads(data) as worker:
        assert worker.count("cfg") == 1
    with Butler(str(repo)) as b:
        untrusted = pickle.dumps(b)
    with pickle.loads(untrusted) as worker, pytest.raises(StorageError, match="TRUSTED"):
        worker.count("cfg")
