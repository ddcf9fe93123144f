"""The posix storage against a hostile repository writer (issue 12, holes 3, 7, 8, 9, 16, 17).

A repository directory is shared: whoever can write into it can plant symbolic links,
FIFOs and sockets, or name datasets like temporary files. Every test here fails on
butler 0.1's posix storage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from butler import (
    Butler,
    ButlerError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidDataIdError,
    StorageError,
)
from butler.storages.posix import PosixStorage

from .._mounts import mounted

SECRET = b"the outside file's bytes"


@pytest.fixture(autouse=True, params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the one-call ``openat2`` resolution (Linux) and with the
    portable walk segment by segment: both must refuse the same things."""
    from butler.storages import _linux

    if request.param == "walk":
        monkeypatch.setattr(_linux, "enabled", False)
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the repository, with a file butler must never read or touch."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "x.json").write_bytes(SECRET)
    return directory


@pytest.fixture
def repo(butler_repo: Callable[..., Butler]) -> Butler:
    b = butler_repo("posix")
    b.register_dataset_type("j", dict, "json", "j/{name}.json", dimensions={"name": str})
    return b


def _root(b: Butler) -> Path:
    return Path(b.storage.root)


def _untouched(outside: Path) -> None:
    assert (outside / "x.json").read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["x.json"]


# -- hole 3: links and special files are refused, never followed ---------------------------

STORAGE_OPS: dict[str, Callable[[PosixStorage, str], Any]] = {
    "exists": lambda s, k: s.exists(k),
    "open": lambda s, k: s.read_bytes(k),
    "metadata": lambda s, k: s.metadata(k),
    "size": lambda s, k: s.size(k),
    "local_path": lambda s, k: s.local_path(k).__enter__(),
    "remove": lambda s, k: s.remove(k),
    "atomic_write": lambda s, k: s.write_bytes(k, b"{}", overwrite=True),
    "atomic_write-create": lambda s, k: s.write_bytes(k, b"{}", overwrite=False),
    "atomic_local_path": lambda s, k: _write_local(s, k),
}


def _write_local(storage: PosixStorage, key: str) -> None:
    with storage.atomic_local_path(key) as path:
        Path(path).write_bytes(b"{}")


@pytest.mark.parametrize("op", sorted(STORAGE_OPS))
@pytest.mark.parametrize("planted", ["file-link", "dir-link"])
def test_planted_links_are_refused_by_every_operation(
    repo: Butler, outside: Path, op: str, planted: str
) -> None:
    """Hole 3: a link as the dataset (to a file outside) or as a directory on its way (to a
    directory outside) is refused with an error naming it; the outside is never touched."""
    root = _root(repo)
    if planted == "file-link":
        (root / "j").mkdir()
        (root / "j" / "x.json").symlink_to(outside / "x.json")
    else:
        (root / "j").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match=r"refused .*j.* is a symbolic link") as info:
        STORAGE_OPS[op](repo.storage, "j/x.json")  # type: ignore[arg-type]
    assert "repo/j" in str(info.value)
    _untouched(outside)
    assert (root / "j").is_symlink() or (root / "j" / "x.json").is_symlink()


def test_butler_calls_refuse_links(repo: Butler, outside: Path) -> None:
    """Hole 3 through the public API: get, put, remove, exists and datasets."""
    (_root(repo) / "j").symlink_to(outside, target_is_directory=True)
    for call in (
        lambda: repo.get("j", name="x"),
        lambda: repo.put({"evil": 1}, "j", name="x", overwrite=True),
        lambda: repo.put({"evil": 1}, "j", name="new"),
        lambda: repo.remove("j", name="x"),
        lambda: repo.exists("j", name="x"),
    ):
        with pytest.raises(StorageError, match="symbolic link"):
            call()
    assert list(repo.datasets("j")) == []  # never listed, never descended into
    _untouched(outside)


def test_planted_fifo_and_socket_are_refused_without_blocking(repo: Butler) -> None:
    """Hole 3: ``get`` of a planted FIFO blocked forever; a socket gave a raw OSError."""
    directory = _root(repo) / "j"
    directory.mkdir()
    os.mkfifo(directory / "fifo.json")
    outcome: list[BaseException | None] = []

    def get() -> None:
        try:
            repo.get("j", name="fifo")
            outcome.append(None)
        except BaseException as exc:  # handed to the main thread
            outcome.append(exc)

    reader = threading.Thread(target=get, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader before failing
        os.close(os.open(directory / "fifo.json", os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("get() of a planted FIFO blocked")
    assert isinstance(outcome[0], StorageError) and "is a FIFO" in str(outcome[0])

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(directory / "sock.json"))
        for call in (lambda: repo.get("j", name="sock"), lambda: repo.exists("j", name="sock")):
            with pytest.raises(StorageError, match="is a socket"):
                call()
    assert list(repo.datasets("j")) == []


def test_links_and_specials_are_never_listed(repo: Butler, outside: Path) -> None:
    repo.put({"real": 1}, "j", name="real")
    directory = _root(repo) / "j"
    (directory / "link.json").symlink_to(outside / "x.json")
    os.mkfifo(directory / "fifo.json")
    (_root(repo) / "other").symlink_to(outside, target_is_directory=True)
    assert list(repo.datasets("j")) == [{"name": "real"}]
    assert list(repo.storage.list()) == ["j/real.json"]
    assert list(repo.storage.list("other/")) == []


def test_planted_sidecar_link_is_refused(tmp_path: Path, outside: Path) -> None:
    """Hole 3, metadata: a sidecar replaced by a link is refused, not read."""
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.use_xattr = False
    storage.write_bytes("d/x.json", b"{}", metadata={"format": "json"})
    (sidecar,) = (tmp_path / "repo" / "d").glob("..butler-meta.*")
    sidecar.unlink()
    sidecar.symlink_to(outside / "x.json")
    with pytest.raises(StorageError, match="symbolic link"):
        storage.metadata("d/x.json")


def test_policy_link_is_refused(tmp_path: Path, outside: Path) -> None:
    """Hole 3, policy: a ``butler.yaml`` link is neither read nor written through."""
    root = tmp_path / "repo"
    Butler.create(str(root))
    (root / "butler.yaml").unlink()
    (root / "butler.yaml").symlink_to(outside / "x.json")
    with pytest.raises(StorageError, match=r"butler\.yaml.*symbolic link"):
        Butler(str(root))
    with pytest.raises(StorageError, match="symbolic link"):
        PosixStorage(str(root)).write_policy({"butler": {}})
    _untouched(outside)


def test_reserved_area_link_is_refused(tmp_path: Path, outside: Path) -> None:
    """Hole 3, policy lock: ``.butler`` planted as a link is refused, nothing is created."""
    root = tmp_path / "repo"
    b = Butler.create(str(root))
    (root / ".butler").rename(tmp_path / "moved")
    (root / ".butler").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match=r"\.butler.*symbolic link"):
        b.register_dataset_type("j", dict, "json", dimensions=["n"])
    _untouched(outside)


def test_purge_never_follows_links(repo: Butler, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    debris = victim / "..butler-tmp.0123456789ab.x.json"
    debris.write_bytes(b"someone else's")
    os.utime(debris, (0, 0))
    (_root(repo) / "j").symlink_to(victim, target_is_directory=True)
    assert repo.purge_debris(older_than=0) == []
    assert debris.exists()


def test_root_may_be_a_link_the_user_chose(tmp_path: Path) -> None:
    Butler.create(str(tmp_path / "real"))
    (tmp_path / "chosen").symlink_to(tmp_path / "real", target_is_directory=True)
    b = Butler(str(tmp_path / "chosen"))
    b.register_dataset_type("j", dict, "json", dimensions=["n"])
    b.put({"ok": 1}, "j", n="a")
    assert b.get("j", n="a") == {"ok": 1}
    assert b.storage.root == str(tmp_path / "real")


def test_local_path_is_the_checked_descriptor(repo: Butler) -> None:
    """Libraries get a path to the descriptor that was checked: a link swapped in after
    the check cannot redirect them."""
    repo.put({"v": 1}, "j", name="x")
    with repo.storage.local_path("j/x.json") as path:
        if os.path.isdir("/proc/self/fd"):
            assert path.startswith("/proc/self/fd/")
        assert json.loads(Path(path).read_bytes()) == {"v": 1}


# -- hole 7: purge never deletes datasets, whatever their names ------------------------------

TRICKY_NAMES = ["x.butler-tmp", "a.butler-tmp.fits", "a.0123456789ab.butler-tmp", "b.butler-meta"]

KILLED_WRITER = textwrap.dedent(
    """
    import os, sys
    from butler.storages.posix import PosixStorage
    storage = PosixStorage(sys.argv[1])
    storage.use_xattr = sys.argv[2] == "xattr"
    where = sys.argv[3]
    if where == "writing":
        with storage.atomic_write("j/victim.json") as f:
            f.write(b"partial")
            os._exit(9)
    real_replace = os.replace
    def replace(*args, **kwargs):
        if where == "after-commit":
            real_replace(*args, **kwargs)
        os._exit(9)  # killed exactly between the sidecar and the data commit (or after)
    os.replace = replace
    storage.write_bytes("j/victim.json", b'{"v": 2}', metadata={"version": 2})
    """
)


def _kill_writer(root: str, xattr: bool, where: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, root, "xattr" if xattr else "sidecar", where],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 9, done.stderr


@pytest.mark.parametrize("xattr", [True, False], ids=["xattr", "sidecar"])
def test_purge_keeps_datasets_named_like_debris(tmp_path: Path, xattr: bool) -> None:
    """Hole 7: datasets whose legal names contain ``.butler-tmp`` survive ``purge``; real
    debris of killed writers does not."""
    b = Butler.create(str(tmp_path / "repo"))
    b.storage.use_xattr = xattr  # type: ignore[attr-defined]
    b.register_dataset_type("t", dict, "json", "j/{name}", dimensions={"name": str})
    for name in TRICKY_NAMES:
        b.put({"name": name}, "t", name=name)
    b.put({"v": 1}, "t", name="victim.json")
    _kill_writer(b.storage.root, xattr, "writing")
    _kill_writer(b.storage.root, xattr, "before-commit")
    directory = tmp_path / "repo" / "j"
    debris = sorted(p.name for p in directory.iterdir() if p.name.startswith("..butler-tmp."))
    assert len(debris) == 2  # what the killed writers left
    legacy = directory / ".victim.json.0123456789ab.butler-tmp"  # a 0.1 writer's
    legacy.write_bytes(b"partial")
    (directory / ".victim.json.butler-meta").write_text("{}")  # a 0.1 sidecar: not debris

    removed = b.purge_debris(older_than=0)

    assert {r.split("/")[-1] for r in removed} >= {*debris, legacy.name}
    assert all(
        "..butler-tmp." in r or r.endswith(legacy.name) or "..butler-meta." in r for r in removed
    )
    for name in TRICKY_NAMES:
        assert b.get("t", name=name) == {"name": name}
        assert b.storage.metadata(f"j/{name}")["data_id"] == {"name": name}
    assert b.get("t", name="victim.json") == {"v": 1}
    assert (directory / ".victim.json.butler-meta").exists()
    assert sorted(d["name"] for d in b.datasets("t")) == sorted([*TRICKY_NAMES, "victim.json"])
    assert b.verify().healthy
    assert b.purge_debris(older_than=0) == []


# -- hole 9: without xattrs, bytes and metadata commit together -----------------------------


@pytest.fixture(params=["forced", "ramfs"])
def no_xattr_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, bool]]:
    """(root, force): a root where metadata goes to sidecars, either forced on this file
    system or on a ramfs, which has no user extended attributes at all."""
    if request.param == "forced":
        yield str(tmp_path / "repo"), True
        return
    with mounted(tmp_path / "ramfs", "ramfs", None) as mountpoint:
        assert PosixStorage(str(mountpoint)).use_xattr is False  # really no xattrs
        yield str(mountpoint / "repo"), False


def _sidecar_storage(root: str, force: bool) -> PosixStorage:
    storage = PosixStorage(root)
    storage.initialize()
    if force:
        storage.use_xattr = False
    assert storage.use_xattr is False
    return storage


def test_refused_create_keeps_the_metadata(no_xattr_root: tuple[str, bool]) -> None:
    """Hole 9: a create refused at commit (another writer won the race, or a ``mode``
    parameter skipped Butler's pre-check) used to replace the existing dataset's sidecar."""
    root, force = no_xattr_root
    storage = _sidecar_storage(root, force)
    storage.write_bytes("j/1.json", b'{"v": 1}', metadata={"version": 1}, checksum=True)
    before = storage.metadata("j/1.json")
    with pytest.raises(DatasetExistsError, match="already exists"):
        storage.write_bytes("j/1.json", b'{"v": 22222}', metadata={"version": 2}, overwrite=False)
    assert storage.read_bytes("j/1.json") == b'{"v": 1}'
    assert storage.metadata("j/1.json") == before
    assert before["version"] == 1 and before["size"] == 8
    hidden = [n for n in os.listdir(Path(root) / "j") if n.startswith(".")]
    assert len(hidden) == 1  # the refused write's sidecar is gone too


@pytest.mark.parametrize("where", ["before-commit", "after-commit"])
def test_kill_between_sidecar_and_data_keeps_a_matching_pair(
    no_xattr_root: tuple[str, bool], where: str
) -> None:
    """Hole 9: a writer killed between writing the sidecar and committing the bytes leaves
    old bytes with old metadata; killed just after the commit, new with new."""
    root, force = no_xattr_root
    storage = _sidecar_storage(root, force)
    storage.write_bytes("j/victim.json", b'{"v": 1}', metadata={"version": 1})
    _kill_writer(root, False, where)
    data = storage.read_bytes("j/victim.json")
    meta = storage.metadata("j/victim.json")
    if where == "before-commit":
        assert (data, meta["version"], meta["size"]) == (b'{"v": 1}', 1, 8)
    else:
        assert (data, meta["version"], meta["size"]) == (b'{"v": 2}', 2, 8)
    storage.purge_debris(older_than=0)  # the orphan sidecar or the stale one goes
    assert storage.metadata("j/victim.json") == meta
    hidden = [n for n in os.listdir(Path(root) / "j") if n.startswith(".")]
    assert len(hidden) == 1 and hidden[0].startswith("..butler-meta.")


def test_sidecar_of_another_file_never_applies(tmp_path: Path) -> None:
    """A file put in place behind butler's back (another inode) does not inherit metadata."""
    storage = _sidecar_storage(str(tmp_path / "repo"), True)
    storage.write_bytes("x.json", b"{}", metadata={"format": "json"})
    replacement = tmp_path / "repo" / "tmp-copy"
    replacement.write_bytes(b"[1]")
    os.replace(replacement, tmp_path / "repo" / "x.json")
    assert storage.metadata("x.json") == {}


# -- hole 8: policy changes from several processes are all kept ----------------------------

DEFINER = textwrap.dedent(
    """
    import os, sys, time
    from butler import Butler
    root, worker, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    b = Butler(root)
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(8):
        b.register_dataset_type(f"t{worker}_{i}", dict, "json", dimensions={"n": int})
    """
)


def test_four_processes_defining_types_lose_nothing(tmp_path: Path) -> None:
    """Hole 8 (posix): the policy read-modify-write holds an ``flock`` across processes."""
    root = str(tmp_path / "repo")
    Butler.create(root)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DEFINER, root, str(w), str(go)], stderr=subprocess.PIPE
        )
        for w in range(4)
    ]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    names = set(Butler(root).dataset_types)
    assert {f"t{w}_{i}" for w in range(4) for i in range(8)} <= names
    assert (Path(root) / ".butler" / "policy.lock").is_file()


def test_policy_lock_is_reentrant_and_exclusive(tmp_path: Path) -> None:
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.initialize()
    probe = textwrap.dedent(
        """
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free")
        except BlockingIOError:
            print("held")
        """
    )
    lock = str(tmp_path / "repo" / ".butler" / "policy.lock")

    def other_process_sees() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe, lock], capture_output=True, text=True
        ).stdout.strip()

    with storage.policy_lock(), storage.policy_lock():
        assert other_process_sees() == "held"
    assert other_process_sees() == "free"


# -- holes 16 and 17: butler errors, never raw OSErrors; options are checked -----------------


def test_over_long_names_are_invalid_data_ids(repo: Butler) -> None:
    """Hole 16: a 600-byte file name (200 characters of 3 bytes) was a raw ENAMETOOLONG."""
    name = "€" * 200
    for call in (
        lambda: repo.put({}, "j", name=name),
        lambda: repo.get("j", name=name),
        lambda: repo.exists("j", name=name),
        lambda: repo.remove("j", name=name),
    ):
        with pytest.raises(InvalidDataIdError, match="255-byte file name limit"):
            call()


def test_key_under_a_file_is_a_butler_error(repo: Butler) -> None:
    """Hole 16: ``{a}/{b}`` where ``{a}`` is already a file was a raw NotADirectoryError."""
    repo.register_dataset_type("flat", dict, "json", "d/{a}", dimensions={"a": str})
    repo.register_dataset_type("deep", dict, "json", "d/{a}/{b}", dimensions=["a", "b"])
    repo.put({"flat": 1}, "flat", a="x")
    with pytest.raises(StorageError, match=r"cannot write .*d/x/y.*'.*/d/x' is a regular file"):
        repo.put({"deep": 1}, "deep", a="x", b="y")
    assert repo.exists("deep", a="x", b="y") is False
    for call in (lambda: repo.get("deep", a="x", b="y"), lambda: repo.remove("deep", a="x", b="y")):
        with pytest.raises(DatasetNotFoundError, match="does not exist"):
            call()
    assert repo.get("flat", a="x") == {"flat": 1}


def test_misspelt_options_list_the_valid_ones(tmp_path: Path) -> None:
    """Hole 17: ``durabel=False`` and ``chunksize=10`` were silently accepted."""
    root = str(tmp_path / "repo")
    with pytest.raises(StorageError, match=r"\['chunksize'\].*durable.*sync_directories"):
        Butler.create(root, chunksize=10)
    Butler.create(root)
    with pytest.raises(StorageError, match=r"\['durabel'\].*durable.*sync_directories"):
        Butler(root, durabel=False)
    with pytest.raises(TypeError):
        PosixStorage(root, durabel=False)  # type: ignore[call-arg]
    assert isinstance(StorageError("x"), ButlerError)


def test_repository_deleted_and_created_again_under_the_same_storage(tmp_path: Path) -> None:
    """The kept root descriptor never points into a deleted repository."""
    import shutil

    storage = PosixStorage(str(tmp_path / "repo"))
    storage.write_bytes("a.json", b"1")
    storage.write_bytes("d/b.json", b"2")
    shutil.rmtree(tmp_path / "repo")
    assert not storage.exists("a.json")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "a.json").write_bytes(b"new")
    assert storage.read_bytes("a.json") == b"new"
    shutil.rmtree(tmp_path / "repo")
    storage.write_bytes("c.json", b"3")  # recreates the root, as before
    assert (tmp_path / "repo" / "c.json").read_bytes() == b"3"
    assert list(storage.list()) == ["c.json"]


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("d/.x.json.butler-meta", "starts with '.'"),  # a 0.1 sidecar
        ("d/..butler-tmp.0123456789ab.x", "starts with '.'"),  # a temporary file
        ("a/../../etc/passwd", "would leave the repository root"),
        ("a\ud800", "not encodable as a file name"),
        ("a//b", "empty or '.' segment"),
    ],
)
def test_storage_keys_never_name_butler_files(tmp_path: Path, key: str, match: str) -> None:
    """Whatever a mapper produces, the storage refuses keys naming butler's hidden files."""
    storage = PosixStorage(str(tmp_path / "repo"))
    for call in (lambda: storage.exists(key), lambda: storage.write_bytes(key, b"x")):
        with pytest.raises(InvalidDataIdError, match=match):
            call()


def test_a_file_as_root_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    storage = PosixStorage(str(tmp_path / "file"))
    for call in (lambda: storage.exists("a"), lambda: storage.read_bytes("a")):
        with pytest.raises(StorageError, match=r"cannot open the repository .*Not a directory"):
            call()
