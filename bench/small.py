"""Small JSON datasets on local disk: butler against the raw file operations, in one run.

What each side does, per dataset (``{"visit": i, "gain": ..., "name": ..., "flags": [...]}``,
about 70 bytes of JSON, 10 directories of 100 files):

* raw put: ``json.dumps``; ``os.makedirs(exist_ok=True)``; write a temporary file in the
  destination directory; ``fsync`` it; ``os.replace`` it over the final name.
* butler put: ``Butler.put`` on a repository created with the defaults: validates the data
  ID and the class, writes a temporary file, attaches the metadata (format, type, data
  ID, provenance) as an extended attribute, ``fsync`` s it, commits with
  ``renameat2(RENAME_NOREPLACE)`` (a create-only put; ``link`` where the system has no
  such rename), then records the dataset in the repository's SQLite index (WAL,
  ``synchronous=NORMAL``: no fsync).
  Both sides ``fsync`` the file once and neither ``fsync`` s the directory (butler's
  default durability: a power loss can revert a put to the previous version, never
  expose a partial file; ``sync_directories=True`` adds the directory fsync).
* raw get: ``open(path, "rb")``, ``read``, ``json.loads``.
* butler get: ``Butler.get``: maps the data ID to the key, opens the file under the root
  refusing links (one ``openat2`` on Linux), reads the metadata (``fgetxattr``) and parses
  it, reads the bytes from the same descriptor (one ``read`` of the recorded size; a file
  of another size goes the general way), checks the recorded format and class against
  the resolution kept for that (format, class) pair (the same for every dataset of a
  type: the first get of a type resolves it through the general path, which also keeps
  the validated segments of the last 4,096 keys) and parses the bytes with the JSON
  serializer's ``decode``. No ``fstat``: the kernel allows user extended attributes on
  regular files and directories only, and a directory fails the read.
* JSON writer (``--writer``): butler's ``json`` serializer encoding a 10,000-key dict
  into an in-memory file, against ``json.dumps(obj, ensure_ascii=False).encode()``.

Blocks alternate A B, B A... (``--rounds`` blocks per side: a put block writes ``n /
rounds`` datasets, a get block reads all ``n``); each round gives one ratio
raw time / butler time (1.0 = as fast as raw), printed as min / median / max, with the
load average before and after. Goals (issue 19): get >= 0.5, put >= 0.8.

``--peers`` also times, in the same rotation and on the same objects, the peers that are
installed (a message names those that are not):

* ``pins``: ``board_folder(dir).pin_write(obj, name, type="json", versioned=False)`` and
  ``pin_read(name)`` (a JSON file plus a ``data.txt`` YAML description; no fsync);
* LSST's ``lsst.daf.butler``: a repository made by ``Butler.makeRepo`` with its defaults
  (SQLite registry, file datastore), dataset type ``cfg`` with dimensions instrument +
  detector and storage class ``StructuredDataDict``; ``put(obj, "cfg", instrument=...,
  detector=i)`` and ``get`` of the same.

``--floor`` also times, in the same rotation, the system calls and the SQLite statement
butler's put and get must make, written directly in Python without butler (a lower bound for
any implementation that keeps its guarantees):

* put floor: ``json.dumps``; ``os.makedirs(exist_ok=True)``; open the directory; create the
  temporary file (``O_EXCL``) in it; write; ``fsetxattr`` of the metadata bytes of a real
  butler dataset (format, type, data ID, provenance: ~330 bytes, encoded once, not per
  put); ``fsync``; ``renameat2(RENAME_NOREPLACE)`` (butler's ctypes wrapper; ``link``
  where the system has none); then the upsert of the index row, the same SQL on a copy of
  butler's SQLite index schema (WAL, ``synchronous=NORMAL``) with the row's values
  computed by butler's own ``data_id_digest``.
* put floor-no-index: the same without the row (a repository made with ``index="none"``).
* get floor, on the datasets butler's put wrote: ``openat2`` of the key under the
  repository's root refusing links (butler's ctypes wrapper); ``fgetxattr`` of the
  metadata (butler's ctypes wrapper, a reused buffer) and ``json.loads`` of it; the
  recorded format compared; one ``read`` of the recorded size plus one; ``close``;
  ``json.loads`` of the bytes. It leaves out what butler also does per get: map the data
  ID to the key, check the recorded class against the dataset type, pick the serializer.

``--profile`` prints a cProfile summary of 300 butler puts and gets (``--n`` of each when
``--n`` is smaller).

Usage: ``python bench/small.py [--n 1000] [--rounds 10] [--peers] [--floor] [--profile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from butler import Butler
from butler._index import data_id_digest
from butler.storages._linux import fgetxattr, openat2_beneath, rename_noreplace
from butler.storages._resolve import READ_FLAGS

Side = Callable[[int], Any]


def raw_put(root: str, i: int, obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    directory = os.path.join(root, "cfg", str(i % 10))
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"{i}.json")
    tmp = os.path.join(directory, f".{i}.json.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def raw_get(root: str, i: int) -> Any:
    with open(os.path.join(root, "cfg", str(i % 10), f"{i}.json"), "rb") as f:
        return json.loads(f.read())


def timed(fn: Side, items: Sequence[int]) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def peers(base: str, objs: list[dict[str, Any]]) -> dict[str, tuple[Side, Side]]:
    """(put, get) of each installed peer; a message for each missing one."""
    found: dict[str, tuple[Side, Side]] = {}
    try:
        import pins  # type: ignore[import-not-found]
    except ImportError:
        print("peer pins: not installed (pip install pins), skipped")
    else:
        from pins.config import pins_options  # type: ignore[import-not-found]

        pins_options.quiet = True  # no "Writing pin" message per write
        board = pins.board_folder(os.path.join(base, "pins"))
        found["pins"] = (
            lambda i: board.pin_write(objs[i], name=f"cfg{i}", type="json", versioned=False),
            lambda i: board.pin_read(f"cfg{i}"),
        )
    try:
        from lsst.daf.butler import Butler as LsstButler  # type: ignore[import-not-found]
        from lsst.daf.butler import DatasetType
    except ImportError:
        print("peer lsst.daf.butler: not installed (pip install lsst-daf-butler), skipped")
    else:
        root = os.path.join(base, "lsst")
        LsstButler.makeRepo(root)
        lsst = LsstButler.from_config(root, writeable=True, run="bench")
        lsst.registry.insertDimensionData(
            "instrument", {"name": "Bench", "detector_max": len(objs) + 1, "visit_max": 1}
        )
        lsst.registry.insertDimensionData(
            "detector",
            *({"instrument": "Bench", "id": i, "full_name": f"d{i}"} for i in range(len(objs))),
        )
        dt = DatasetType(
            "cfg", ["instrument", "detector"], "StructuredDataDict", universe=lsst.dimensions
        )
        lsst.registry.registerDatasetType(dt)
        found["lsst.daf.butler"] = (
            lambda i: lsst.put(objs[i], "cfg", instrument="Bench", detector=i),
            lambda i: lsst.get("cfg", instrument="Bench", detector=i),
        )
    return found


class Floor:
    """The put's unavoidable work (module text: ``--floor``), on butler's own bytes and
    index schema, copied from ``repo`` after one butler put of ``sample``."""

    def __init__(self, base: str, repo: str, sample: str, objs: list[dict[str, Any]]) -> None:
        self.root = os.path.join(base, "floor")
        self.objs = objs
        self.repo_fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
        self.meta = os.getxattr(os.path.join(repo, sample), "user.butler")
        self.provenance = json.dumps(
            json.loads(self.meta)["provenance"], separators=(",", ":"), sort_keys=True
        )
        source = sqlite3.connect(os.path.join(repo, ".butler", "index.sqlite3"))
        schema = source.execute(
            "SELECT name, sql FROM sqlite_master WHERE name LIKE 'bidx_%' AND sql IS NOT NULL"
        ).fetchall()
        table = next(name for name, sql in schema if sql.startswith("CREATE TABLE"))
        self.columns = [row[1] for row in source.execute(f'PRAGMA table_info("{table}")')]
        source.close()
        os.makedirs(self.root)
        self.db = sqlite3.connect(os.path.join(base, "floor.sqlite3"), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for _, sql in schema:
            self.db.execute(sql)
        names = ", ".join(f'"{c}"' for c in self.columns)
        values = ", ".join(f":{c}" for c in self.columns)
        updates = ", ".join(f'"{c}" = excluded."{c}"' for c in self.columns if c != "_id")
        self.upsert = (
            f'INSERT INTO "{table}" ({names}) VALUES ({values}) '
            f'ON CONFLICT ("_id") DO UPDATE SET {updates}'
        )

    def get(self, i: int) -> Any:
        """The get's floor, on the dataset butler wrote: ``openat2`` under the root (no
        links), ``fgetxattr`` and ``json.loads`` of the metadata, the recorded format
        checked, one ``read`` of the recorded size, ``close``, ``json.loads`` of the bytes."""
        fd = openat2_beneath(self.repo_fd, f"cfg/{i % 10}/{i}.json", READ_FLAGS)
        if fd is None:
            raise SystemExit("--floor needs openat2 (Linux 5.6 or later)")
        try:
            meta = json.loads(fgetxattr(fd, b"user.butler") or b"")
            if meta["format"] != "json":
                raise SystemExit(f"unexpected metadata {meta}")
            data = os.read(fd, meta["size"] + 1)
        finally:
            os.close(fd)
        return json.loads(data)

    def put(self, i: int, index: bool = True) -> None:
        data = json.dumps(self.objs[i]).encode()
        directory = os.path.join(self.root, "idx" if index else "plain", str(i % 10))
        os.makedirs(directory, exist_ok=True)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            tmp = f"..tmp.{i}.json"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dfd)
            try:
                os.write(fd, data)
                os.setxattr(fd, "user.butler", self.meta)
                os.fsync(fd)
            finally:
                os.close(fd)
            if not rename_noreplace(dfd, tmp, f"{i}.json"):
                os.link(tmp, f"{i}.json", src_dir_fd=dfd, dst_dir_fd=dfd)
                os.unlink(tmp, dir_fd=dfd)
        finally:
            os.close(dfd)
        if index:
            digest = data_id_digest({"bucket": i % 10, "i": i})
            row = {
                "_id": digest, "_key": f"cfg/{i % 10}/{i}.json", "_format": "json",
                "_python_type": "builtins.dict", "_size": len(data), "_checksum": None,
                "_created": time.time(), "_run": "default", "_did": digest,
                "_provenance": self.provenance, "d_bucket": i % 10, "d_i": i,
            }  # fmt: skip
            self.db.execute(self.upsert, row)


def rotate(sides: dict[str, Side], blocks: list[range]) -> dict[str, list[float]]:
    """Seconds per block of each side, the order rotating every block."""
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r, block in enumerate(blocks):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(timed(sides[name], block))
    return times


def report(what: str, times: dict[str, list[float]], per_block: int, goal: float) -> None:
    raw = times["raw"]
    for name, values in times.items():
        rate = statistics.median(per_block / t for t in values)
        line = f"  {name:16} {rate:9.0f} /s (median block)"
        if name != "raw":
            ratios = [r / t for r, t in zip(raw, values, strict=True)]
            line += (
                f"   raw/{name}: {min(ratios):.2f} / {statistics.median(ratios):.2f} / "
                f"{max(ratios):.2f}"
            )
            if name == "butler":
                line += f" (goal >= {goal})"
        print(line)


def floor_summary(what: str, times: dict[str, list[float]], goal: float) -> None:
    """What butler's code adds over the floor, and whether ``goal`` is above the floor."""
    floor_ratio = statistics.median(
        r / f for r, f in zip(times["raw"], times["floor"], strict=True)
    )
    over = [f / t for f, t in zip(times["floor"], times["butler"], strict=True)]
    print(
        f"  floor/butler (what butler's code adds): {spread(over)}; the floor itself is "
        f"{floor_ratio:.2f} x raw: the {what} goal of {goal} is "
        + ("within reach" if floor_ratio >= goal else "below the floor on this machine")
    )


def writer_bench(rounds: int) -> None:
    from butler.formats.json_ import write

    obj = {f"key{i}": i * 1.5 for i in range(10_000)}

    class Sink:  # what the serializer needs of a location: an in-memory file
        def open_write(self) -> contextlib.nullcontext[io.BytesIO]:
            return contextlib.nullcontext(io.BytesIO())

    sink = Sink()
    ratios, ours, theirs = [], [], []
    for r in range(rounds):
        sides = [
            ("raw", lambda: json.dumps(obj, ensure_ascii=False).encode()),
            ("butler", lambda: write(obj, sink)),  # type: ignore[arg-type]
        ]
        if r % 2:
            sides.reverse()
        got = {}
        for name, fn in sides:
            start = time.perf_counter()
            for _ in range(10):
                fn()
            got[name] = (time.perf_counter() - start) / 10
        ours.append(got["butler"] * 1e3)
        theirs.append(got["raw"] * 1e3)
        ratios.append(got["butler"] / got["raw"])
    print("JSON writer, 10,000-key dict of floats, per encode (ms) min / median / max:")
    print(f"  json.dumps       {spread(theirs)}")
    print(f"  butler json      {spread(ours)}   butler/json.dumps: {spread(ratios)}")


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def profile(b: Butler, objs: list[dict[str, Any]]) -> None:
    calls = min(300, len(objs))  # the datasets the timed blocks put
    for action in ("put", "get"):
        prof = cProfile.Profile()
        prof.enable()
        for i in range(calls):
            if action == "put":  # create-only, as the timed puts: new keys in bucket 11
                b.put(objs[i], "cfg", bucket=11, i=i)
            else:
                b.get("cfg", bucket=i % 10, i=i)
        prof.disable()
        print(f"--- cProfile, {calls} butler {action}s, top 12 by own time ---")
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved blocks per side")
    parser.add_argument("--peers", action="store_true", help="also time lsst.daf.butler, pins")
    parser.add_argument("--writer", action="store_true", help="also time the JSON writer")
    parser.add_argument("--floor", action="store_true", help="also time the floors")
    parser.add_argument("--profile", action="store_true", help="cProfile of butler put/get")
    args = parser.parse_args()
    n = args.n
    objs = [{"visit": i, "gain": 1.5 + i, "name": f"dataset {i}", "flags": [1, 2, 3]}
            for i in range(n)]  # fmt: skip
    base = tempfile.mkdtemp(prefix="butler-bench-")
    load_before = os.getloadavg()
    try:
        raw_root = os.path.join(base, "raw")
        b = Butler.create(os.path.join(base, "repo"))
        b.register_dataset_type("cfg", dict, "json", template="cfg/{bucket:d}/{i:d}.json")
        others = peers(base, objs) if args.peers else {}
        blocks = [range(r, n, args.rounds) for r in range(args.rounds)]
        puts: dict[str, Side] = {
            "raw": lambda i: raw_put(raw_root, i, objs[i]),
            "butler": lambda i: b.put(objs[i], "cfg", bucket=i % 10, i=i),
        }
        gets: dict[str, Side] = {
            "raw": lambda i: raw_get(raw_root, i),
            "butler": lambda i: b.get("cfg", bucket=i % 10, i=i),
        }
        for name, (put, get) in others.items():
            puts[name], gets[name] = put, get
        if args.floor:
            sample = b.put(objs[0], "cfg", bucket=10, i=n).key  # the bytes the floor copies
            floor = Floor(base, os.path.join(base, "repo"), sample, objs)
            puts["floor"] = floor.put
            puts["floor-no-index"] = lambda i: floor.put(i, index=False)
            gets["floor"] = floor.get
        put_times = rotate(puts, blocks)
        # Gets are 100 times shorter than puts: each block reads every dataset once.
        get_times = rotate(gets, [range(n)] * args.rounds)
        assert b.get("cfg", bucket=1, i=1) == raw_get(raw_root, 1) == objs[1]
        print(f"{n} small JSON datasets on local disk, {args.rounds} blocks per side, "
              f"rotating order; ratio raw/side per block: min / median / max")  # fmt: skip
        print("put (each side: one file fsync, no directory fsync):")
        report("put", put_times, len(blocks[0]), 0.8)
        if args.floor:
            floor_summary("put", put_times, 0.8)
        print(f"get (each block reads all {n} datasets):")
        report("get", get_times, n, 0.5)
        if args.floor:
            floor_summary("get", get_times, 0.5)
        if args.writer:
            writer_bench(args.rounds)
        if args.profile:
            profile(b, objs)
    finally:
        shutil.rmtree(base)
    load_after = os.getloadavg()
    before = " ".join(f"{x:.2f}" for x in load_before)
    after = " ".join(f"{x:.2f}" for x in load_after)
    print(f"load average (1/5/15 min) before {before}, after {after} on {os.cpu_count()} "
          f"cores; Python {sys.version.split()[0]}")  # fmt: skip


if __name__ == "__main__":
    main()
