"""Red-team tests of the posix put path (create-only commit without a look first, no
unlink of a renamed temporary name, `exists`/`size` from one ``openat2(O_PATH)``), the
provenance time, the index's cached table names and the composite remove.

Each test names what it attacks; most compare the fast path with the portable one
(``_linux.enabled = False``), which is what the code before the shortcut did.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from butler import Butler, DatasetExistsError, StorageError
from butler import _provenance as provenance
from butler.storages import _linux
from butler.storages.posix import PosixStorage

from ._outcomes import outcome

LINUX = sys.platform.startswith("linux")


def _temporaries(root: Path) -> list[str]:
    """Temporary names left anywhere under ``root``."""
    return sorted(
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if "butler-tmp" in f
    )


# -- the temporary name after a commit ---------------------------------------------------


@pytest.mark.parametrize("xattrs", [None, False])
def test_overwrite_onto_a_hard_link_of_the_temporary_leaves_no_temporary(
    tmp_path: Path, xattrs: bool | None
) -> None:
    """Attacks ``gone``: rename(2) onto another link of the same file succeeds and does
    nothing, so the temporary name is still there after an overwrite commit."""
    storage = PosixStorage(str(tmp_path / "repo"), xattrs=xattrs)
    storage.write_bytes("a/b.bin", b"old")
    final = storage.path("a/b.bin")
    with storage.atomic_local_path("a/b.bin", overwrite=True) as path:
        Path(path).write_bytes(b"new")
        os.unlink(final)
        os.link(path, final)  # a serializer (or a neighbour) links it into place
    assert storage.read_bytes("a/b.bin") == b"new"
    assert storage.metadata("a/b.bin")["size"] == 3
    assert _temporaries(tmp_path / "repo") == []
    storage.close()


# -- exists, size and put: the one-openat2 answers against the walk ----------------------


def _hostile(kind: str) -> Callable[[Path], None]:
    """A setup putting ``kind`` where the key ``a/c/b.json`` resolves."""

    def setup(root: Path) -> None:
        (root / "a").mkdir(exist_ok=True)
        if kind == "mid file":
            (root / "a" / "c").write_bytes(b"x")
        elif kind == "mid fifo":
            os.mkfifo(root / "a" / "c")
        elif kind == "mid link":
            (root / "a" / "real").mkdir()
            (root / "a" / "c").symlink_to("real")
        elif kind == "mid dangling link":
            (root / "a" / "c").symlink_to("/nonexistent")
        else:
            (root / "a" / "c").mkdir()
            final = root / "a" / "c" / "b.json"
            if kind == "file":
                final.write_bytes(b"12345")
            elif kind == "dir":
                final.mkdir()
            elif kind == "fifo":
                os.mkfifo(final)
            elif kind == "socket":
                socket.socket(socket.AF_UNIX).bind(str(final))
            elif kind == "link":
                final.symlink_to("/etc/passwd")
            elif kind == "root replaced":
                final.write_bytes(b"12345")
                moved = root.with_name("moved")
                shutil.copytree(root, moved, symlinks=True)
                shutil.rmtree(root)
                moved.rename(root)

    return setup


KINDS = [
    "absent",
    "file",
    "dir",
    "fifo",
    "socket",
    "link",
    "mid file",
    "mid fifo",
    "mid link",
    "mid dangling link",
    "root replaced",
]


@pytest.mark.parametrize("xattrs", [None, False])
@pytest.mark.parametrize("kind", KINDS)
def test_exists_size_and_puts_answer_alike_fast_and_portable(
    tmp_path: Path, kind: str, xattrs: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attacks `_lstat`'s openat2 answer and the create-only commit that no longer looks
    first: exists, size, a create-only and an overwrite put of ``a/c/b.json`` over
    links, special files, a file in the way and a replaced root (the storage opened
    before) answer as the walk and link path do, and leave no temporary name."""

    def answers(root: Path) -> list[tuple[str, str]]:
        root.mkdir()
        storage = PosixStorage(str(root), xattrs=xattrs)
        assert not storage.exists("warm")  # the root descriptor is kept from here on
        _hostile(kind)(root)
        key = "a/c/b.json"
        got = [
            outcome(lambda: storage.exists(key)),
            outcome(lambda: storage.size(key)),
            outcome(lambda: storage.write_bytes(key, b"new", overwrite=False)),
            outcome(lambda: storage.write_bytes(key, b"newer", overwrite=True)),
            outcome(lambda: storage.read_bytes(key)),
        ]
        assert _temporaries(root) == []
        storage.close()
        return [(name, text.replace(str(root), "<root>")) for name, text in got]

    fast = answers(tmp_path / "fast")
    monkeypatch.setattr(_linux, "enabled", False)
    assert answers(tmp_path / "walk") == fast
    if kind in ("file", "root replaced"):
        assert fast[:3] == [("ok", "True"), ("ok", "5"), ("DatasetExistsError", fast[2][1])]


@pytest.mark.parametrize("xattrs", [None, False])
@pytest.mark.parametrize("commit", ["renameat2", "link"])
def test_concurrent_create_only_puts_one_wins_and_no_temporary_is_left(
    tmp_path: Path, commit: str, xattrs: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attacks the create-only commit without a look first: four threads putting one
    key create-only, 20 times: exactly one wins (its bytes and metadata are stored),
    the others get DatasetExistsError, and no temporary name is left."""
    if commit == "link":
        monkeypatch.setattr("butler.storages.posix.rename_noreplace", lambda *a: False)
    storage = PosixStorage(str(tmp_path / "repo"), xattrs=xattrs)
    for round_ in range(20):
        key = f"k/{round_}.json"
        outcomes: list[str] = [""] * 4
        barrier = threading.Barrier(4)

        def put(
            i: int,
            key: str = key,
            outcomes: list[str] = outcomes,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            try:
                storage.write_bytes(key, str(i).encode(), metadata={"w": i}, overwrite=False)
                outcomes[i] = "ok"
            except DatasetExistsError:
                outcomes[i] = "exists"

        threads = [threading.Thread(target=put, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["exists", "exists", "exists", "ok"], outcomes
        winner = outcomes.index("ok")
        assert storage.read_bytes(key) == str(winner).encode()
        assert storage.metadata(key)["w"] == winner
    assert _temporaries(tmp_path / "repo") == []
    storage.close()


# -- provenance time ------------------------------------------------------------------


def test_created_text_is_the_datetime_text_across_second_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Attacks the per-second cache of `new_created`: at and around second boundaries,
    and with the clock going back, the text is datetime's formatting of the returned
    time, and both stay strictly increasing."""
    clock = iter(
        [
            1_796_000_000_999_999_000,
            1_796_000_001_000_000_000,
            1_796_000_000_500_000_000,  # the clock stepped back: still later
            1_796_000_001_000_000_999,
            1_796_000_002_000_000_000,
            1_796_000_001_999_999_000,
            4_102_444_799_999_999_000,
            4_102_444_800_000_000_000,
        ]
    )
    monkeypatch.setattr(provenance.time, "time_ns", lambda: next(clock))
    monkeypatch.setattr(provenance, "_last_created", 0)
    created = [provenance.new_created() for _ in range(8)]
    for seconds, text in created:
        utc = dt.datetime.fromtimestamp(seconds, dt.UTC)
        assert text == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(created))


# -- the index ------------------------------------------------------------------------


@pytest.fixture
def indexed(butler_repo: Callable[..., Butler]) -> Iterator[Butler]:
    """A posix repository with a SQLite index and a dataset type ``cal`` (visit)."""
    b = butler_repo("posix")
    if b.index is None:
        pytest.skip("no index")
    b.register_dataset_type("cal", dict, "json", dimensions={"visit": int})
    yield b


def test_a_closed_index_raises_instead_of_reopening(indexed: Butler) -> None:
    """Attacks `_run`'s shortcut past `_conn`: after ``close()`` every use raises
    "is closed", and no connection is opened again."""
    indexed.put({"a": 1}, "cal", visit=1)
    index = indexed.index
    assert index is not None
    index.close()
    with pytest.raises(StorageError, match="is closed"):
        list(indexed.datasets("cal"))
    with pytest.raises(StorageError, match="is closed"):
        indexed.remove("cal", visit=1)
    assert indexed.storage.exists("cal/1.json")  # the failed remove changed nothing
    assert getattr(index, "_connections", []) == []


def test_a_redefined_dataset_type_is_indexed_in_its_new_table(indexed: Butler) -> None:
    """Attacks the table names cached by dataset type identity: after a redefinition
    with other dimensions, in this Butler and in one opened before, rows go to the new
    table and queries through the index agree with listing the files."""
    other = Butler(indexed.storage.root)
    indexed.put({"a": 1}, "cal", visit=1)
    assert list(other.datasets("cal")) == [{"visit": 1}]
    indexed.remove("cal", visit=1)
    indexed.register_dataset_type(
        "cal", dict, "json", template="cal/{visit}/{ccd}.json",
        dimensions={"visit": int, "ccd": int}, overwrite=True,
    )  # fmt: skip
    indexed.put({"a": 2}, "cal", visit=1, ccd=2)
    fresh = Butler(indexed.storage.root)
    listed = list(Butler(indexed.storage.root, index=False).datasets("cal"))
    assert listed == [{"visit": 1, "ccd": 2}]
    assert list(indexed.datasets("cal")) == listed
    assert list(fresh.datasets("cal")) == listed
