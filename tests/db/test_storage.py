"""The database storage on SQLite, PostgreSQL and MariaDB: blobs of every format, chunks,
streaming, atomic overwrite, policy table, hostile names, secrets, error mapping."""

from __future__ import annotations

import dataclasses
import io
import json
import tracemalloc

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import numpy as np
import sqlalchemy as sa

from butler import (
    Butler,
    Config,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    FormatError,
    StorageError,
)
from butler_db import DatabaseStorage

from ._helpers import count_rows, raw_engine, table_names

MiB = 1024 * 1024


@dataclasses.dataclass
class Calib:
    gain: float
    name: str


class MyConfig(Config):
    pass


def test_repository_tables_and_policy(db_root: str) -> None:
    b = Butler.create(db_root, checksum=True)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    assert {"butler_repository", "butler_datasets", "butler_chunks"} <= set(table_names(db_root))
    engine = raw_engine(db_root)
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT name, value FROM butler_repository")).all())
    engine.dispose()
    assert rows["schema_version"] == "1"
    policy = json.loads(rows["policy"])
    assert policy["butler"]["storage"] == "database" and policy["butler"]["checksum"] is True
    assert "cfg" in policy["dataset_types"]
    b.close()
    again = Butler(db_root)  # policy read back from the table by a new Butler
    assert again.dataset_type("cfg").format == "json"
    assert not again.storage.exists("butler.yaml")
    again.close()


def test_opening_a_missing_repository_fails_cleanly(sqlite_root: str) -> None:
    with pytest.raises(StorageError, match="no butler repository"):
        Butler(sqlite_root)


def test_core_formats_round_trip(db_root: str) -> None:
    b = Butler.create(db_root, checksum=True)
    b.register_dataset_type("js", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("dc", Calib, "json", dimensions={"visit": int})
    b.register_dataset_type("cfg", Config, "config", dimensions={"visit": int})
    b.register_dataset_type("pk", object, "pickle", dimensions={"visit": int})
    b.register_dataset_type("arr", "numpy.ndarray", "npy", dimensions={"visit": int})
    data = {"gain": 1.5, "name": "é日本", "nested": [1, None, True]}
    b.put(data, "js", visit=1)
    b.put(Calib(2.5, "x"), "dc", visit=1)
    cfg = MyConfig({"a": 1, "b": {"c": [1, 2]}})
    b.put(cfg, "cfg", visit=1)
    b.put({"set": {1, 2}, "t": (1, 2)}, "pk", visit=1)
    arr = np.arange(3 * 5 * 7, dtype=">f4").reshape(3, 5, 7)
    b.put(arr, "arr", visit=1)
    assert b.get("js", visit=1) == data
    assert b.get("dc", visit=1) == Calib(2.5, "x")
    got = b.get("cfg", visit=1)
    assert type(got) is MyConfig and dict(got) == dict(cfg)
    assert b.get("pk", visit=1, allow_pickle=True) == {"set": {1, 2}, "t": (1, 2)}
    out = b.get("arr", visit=1)
    assert out.dtype == arr.dtype and np.array_equal(out, arr)
    sliced = b.get("arr", visit=1, parameters={"slice": (slice(1, 2), slice(None), 3)})
    assert np.array_equal(sliced, arr[1:2, :, 3])
    meta = b.storage.metadata("js/1.json")
    assert meta["format"] == "json" and meta["dataset_type"] == "js"
    assert meta["data_id"] == {"visit": 1} and len(meta["sha256"]) == 64
    assert b.verify().healthy and b.verify().checked == 5
    b.close()


def test_exists_list_remove_metadata(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "det": str})
    b.register_dataset_type("cfg_x", dict, "json", dimensions={"visit": int})
    for v in (1, 2):
        for d in ("a", "b%_"):
            b.put({"v": v, "d": d}, "cfg", visit=v, det=d)
    b.put({}, "cfg_x", visit=1)
    assert sorted((d["visit"], d["det"]) for d in b.datasets("cfg")) == [
        (1, "a"),
        (1, "b%_"),
        (2, "a"),
        (2, "b%_"),
    ]
    assert sorted(d["det"] for d in b.datasets("cfg", visit=2)) == ["a", "b%_"]
    assert list(b.storage.list("cfg/1/b%")) == ["cfg/1/b%_.json"]  # LIKE wildcards escaped
    assert list(b.datasets("cfg_x")) == [{"visit": 1}]
    assert b.exists("cfg", visit=1, det="a")
    key = "cfg/1/a.json"
    assert b.storage.size(key) == len(json.dumps({"v": 1, "d": "a"}).encode())
    b.remove("cfg", visit=1, det="a")
    assert not b.exists("cfg", visit=1, det="a")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        b.remove("cfg", visit=1, det="a")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        b.get("cfg", visit=1, det="a")
    with pytest.raises(DatasetNotFoundError, match=r"no dataset at .*#cfg/1/a\.json"):
        b.storage.open(key)
    b.close()


def test_put_conflict_and_overwrite(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"v": 1}, "cfg", visit=1)
    with pytest.raises(DatasetExistsError, match="already exists; pass overwrite=True"):
        b.put({"v": 2}, "cfg", visit=1)
    with pytest.raises(DatasetExistsError, match="already exists"):
        b.storage.write_bytes("cfg/1.json", b"{}", overwrite=False)
    b.put({"v": 3}, "cfg", visit=1, overwrite=True)
    assert b.get("cfg", visit=1) == {"v": 3}
    assert count_rows(db_root, "butler_datasets") == 1
    assert count_rows(db_root, "butler_chunks") == 1  # the old chunk is gone
    b.close()


def test_failed_write_leaves_nothing(db_root: str) -> None:
    storage = DatabaseStorage(db_root, chunk_size=1000)
    storage.initialize()
    storage.write_bytes("k", b"old")
    with pytest.raises(RuntimeError, match="boom"), storage.atomic_write("k") as f:
        f.write(b"x" * 5000)  # five chunks already inserted...
        raise RuntimeError("boom")  # ...and rolled back
    assert storage.read_bytes("k") == b"old"
    with pytest.raises(RuntimeError), storage.atomic_write("new") as f:
        f.write(b"y" * 2500)
        raise RuntimeError("boom")
    assert not storage.exists("new")
    assert count_rows(db_root, "butler_chunks") == 1
    storage.close()


def test_reader_is_seekable_across_chunks(db_root: str) -> None:
    storage = DatabaseStorage(db_root, chunk_size=1000)
    storage.initialize()
    data = np.random.default_rng(1).integers(0, 256, 10_500, dtype=np.uint8).tobytes()
    storage.write_bytes("blob", data)
    assert count_rows(db_root, "butler_chunks") == 11
    with storage.open("blob") as f:
        assert f.seekable() and f.readable()
        assert f.read(10) == data[:10]
        f.seek(995)
        assert f.read(10) == data[995:1005]  # spans two chunks
        f.seek(-7, io.SEEK_END)
        assert f.read() == data[-7:]
        assert f.read(5) == b""
        f.seek(2000)
        buf = bytearray(3001)
        assert f.readinto(buf) == 3001 and bytes(buf) == data[2000:5001]
        assert f.tell() == 5001
        f.seek(0)
        assert f.read() == data
    with storage.open("blob") as f:  # buffered wrappers work too
        assert io.BufferedReader(f, 4096).read() == data  # type: ignore[arg-type]
    storage.write_bytes("empty", b"")
    assert storage.read_bytes("empty") == b""
    assert storage.size("empty") == 0
    storage.close()


def test_progress_reported(sqlite_root: str) -> None:
    b = Butler.create(sqlite_root)
    b.register_dataset_type("arr", "numpy.ndarray", "npy", dimensions={"visit": int})
    seen: list[tuple[int, int | None]] = []
    arr = np.zeros(300_000)
    b.put(arr, "arr", visit=1, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == b.storage.size("arr/1.npy")
    seen.clear()
    b.get("arr", visit=1, progress=lambda d, t: seen.append((d, t)))
    size = b.storage.size("arr/1.npy")
    assert seen[-1][1] == size and seen[-1][0] >= size  # np.load re-reads its magic
    b.close()


def test_64mib_dataset_streams_in_chunks(db_root: str) -> None:
    storage = DatabaseStorage(db_root)
    storage.initialize()
    piece = np.random.default_rng(2).integers(0, 256, MiB, dtype=np.uint8).tobytes()
    tracemalloc.start()
    try:
        with storage.atomic_write("big.bin", checksum=True) as f:
            for i in range(64):
                f.write(piece[i:] + piece[:i])
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert count_rows(db_root, "butler_chunks") == 64
        assert storage.size("big.bin") == 64 * MiB
        with storage.open("big.bin") as f:
            for i in range(64):
                assert f.read(MiB) == piece[i:] + piece[:i]
            assert f.read(1) == b""
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert write_peak < 12 * MiB, write_peak
    assert read_peak < 12 * MiB, read_peak
    meta = storage.metadata("big.bin")
    assert meta["size"] == 64 * MiB and len(meta["sha256"]) == 64
    storage.remove("big.bin")
    assert count_rows(db_root, "butler_chunks") == 0
    storage.close()


def test_large_array_through_butler(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("arr", "numpy.ndarray", "npy", dimensions={"visit": int})
    arr = np.random.default_rng(3).random(3 * MiB // 8)  # 3 MiB + npy header: 4 chunks
    b.put(arr, "arr", visit=1)
    assert count_rows(db_root, "butler_chunks") == 4
    assert np.array_equal(b.get("arr", visit=1), arr)
    b.close()


def test_fits_on_database_storage(db_root: str) -> None:
    pytest.importorskip("butler_fits", reason="butler-fits is not installed")
    from astropy.io import fits

    b = Butler.create(db_root)
    b.register_dataset_type("img", "numpy.ndarray", "fits", dimensions={"visit": int})
    img = np.random.default_rng(4).random((600, 700)).astype(np.float32)  # > 1 chunk
    b.put(img, "img", visit=1)
    assert np.array_equal(b.get("img", visit=1), img)
    with b.storage.open(b.location("img", visit=1).key) as f, fits.open(f) as hdul:
        assert np.array_equal(hdul[0].data, img)
    b.close()


def test_hdf5_on_database_storage(db_root: str) -> None:
    pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
    import h5py

    b = Butler.create(db_root)
    b.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"visit": int})
    arr = np.random.default_rng(5).random((400, 500))
    b.put(arr, "arr", visit=1)
    assert np.array_equal(b.get("arr", visit=1), arr)
    with b.storage.open(b.location("arr", visit=1).key) as f, h5py.File(f, "r") as h5:
        names: list[str] = []
        h5.visit(names.append)
        assert names
    b.close()


HOSTILE = 'x"; DROP TABLE butler_datasets; --'


def test_hostile_dataset_type_rejected_database_intact(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"a": 1}, "cfg", visit=1)
    with pytest.raises(DatasetTypeError, match="invalid dataset type name"):
        b.register_dataset_type(HOSTILE, dict, "json", dimensions={"visit": int})
    # hostile data ID values and keys go through bound parameters only
    b.register_dataset_type("tag", dict, "json", dimensions={"name": str})
    evil = "x'); DELETE FROM butler_datasets; --"
    b.put({"ok": True}, "tag", name=evil)
    assert b.get("tag", name=evil) == {"ok": True}
    assert sorted(d["name"] for d in b.datasets("tag")) == [evil]
    assert b.get("cfg", visit=1) == {"a": 1}
    assert {"butler_repository", "butler_datasets", "butler_chunks"} <= set(table_names(db_root))
    assert count_rows(db_root, "butler_datasets") == 2
    b.close()


def test_password_never_shown(postgresql_root: str) -> None:
    # The server trusts loopback, so the password is ignored by it, yet sent by the driver.
    url = sa.engine.make_url(postgresql_root).set(password="s3cr3t-Pa55")
    root = url.render_as_string(hide_password=False)
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"a": 1}, "cfg", visit=1)
    shown = [
        repr(b),
        repr(b.storage),
        b.storage.uri(),
        b.storage.uri("cfg/1.json"),
        b.location("cfg", visit=1).describe(),
        str(b.storage.engine.url),
    ]
    with pytest.raises(DatasetExistsError) as exists:
        b.put({"a": 2}, "cfg", visit=1)
    shown.append(str(exists.value))
    engine = raw_engine(root)
    with engine.connect() as conn:
        stored = " ".join(
            str(v) for v in conn.execute(sa.text("SELECT value FROM butler_repository")).scalars()
        )
        stored += " ".join(
            str(r) for r in conn.execute(sa.text("SELECT * FROM butler_datasets")).all()
        )
    engine.dispose()
    for text in [*shown, stored]:
        assert "s3cr3t-Pa55" not in text, text
    assert "***" in b.storage.uri()
    assert b.storage.engine.url.password == "s3cr3t-Pa55"  # the real connection uses it
    b.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_connection_refused_is_storage_error_without_password(scheme: str) -> None:
    pytest.importorskip("psycopg" if "postgresql" in scheme else "pymysql")
    root = f"{scheme}://alice:hunter2-secret@127.0.0.1:{_closed_port()}/db"
    with pytest.raises(StorageError) as info:
        Butler.create(root)
    message = str(info.value)
    assert "hunter2-secret" not in message
    assert "alice:***@127.0.0.1" in message
    assert "refused" in message.lower() or "can't connect" in message.lower()
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_password_message_is_masked(mysql_root: str) -> None:
    url = sa.engine.make_url(mysql_root).set(password="wrong-pw-123")
    with pytest.raises(StorageError) as info:
        Butler.create(url.render_as_string(hide_password=False))
    assert "wrong-pw-123" not in str(info.value)
    assert "Access denied" in str(info.value)


def test_password_option_and_unparsable_url() -> None:
    pytest.importorskip("psycopg", reason="psycopg (butler-db[postgresql]) is not installed")
    storage = DatabaseStorage(f"postgresql://bob@127.0.0.1:{_closed_port()}/x", password="pw-xyz")
    assert "pw-xyz" not in repr(storage) and storage.engine.url.password == "pw-xyz"
    assert storage.url.drivername == "postgresql+psycopg"
    with pytest.raises(StorageError) as info:
        storage.exists("k")
    assert "pw-xyz" not in str(info.value)
    storage.close()
    with pytest.raises(StorageError) as bad:
        DatabaseStorage("postgresql://bob:topsecret@host:notaport/db")
    assert "topsecret" not in str(bad.value)


def test_open_sql_table_dataset_as_bytes_fails(sqlite_root: str) -> None:
    b = Butler.create(sqlite_root)
    b.register_dataset_type("cat", "numpy.ndarray", "sql-table", dimensions={"visit": int})
    b.put(np.zeros(2, dtype=[("a", "i4")]), "cat", visit=1)
    with pytest.raises(FormatError, match="is a SQL table"):
        b.storage.open("cat/1")
    b.close()
