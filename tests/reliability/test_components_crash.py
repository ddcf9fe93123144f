"""Disassembled composites under crashes, on posix and on S3 (moto's server on loopback):
a writer killed mid-put (between its parts, or at any moment by SIGKILL) leaves readers the
old composite or the new one, never a mix; what it leaves behind is only unreferenced
parts, which verify names and purge_debris removes.

On S3 a reader may open a part that an overwrite removes while it reads it (an S3 object,
unlike an open posix file, goes away with its key): it must read the new composite then,
not fail. The RNG seed of the kill delays is printed (``BUTLER_CRASH_SEED`` replays it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler

from .conftest import make_repo
from .helpers import Repo, s3_objects, s3_pending_uploads, s3_settle

pytestmark = pytest.mark.reliability

WRITER = textwrap.dedent(
    """
    import json, os, sys
    from dataclasses import dataclass
    import numpy as np
    from butler import Butler

    @dataclass
    class Pair:
        a: np.ndarray
        b: np.ndarray

    Pair.__module__, Pair.__qualname__ = "pairs", "Pair"
    sys.modules["pairs"] = type(sys)("pairs")
    sys.modules["pairs"].Pair = Pair
    root, mode, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    b = Butler(root, **json.loads(sys.argv[4]))
    if mode == "die-after-first-part":
        real = b.storage.atomic_write
        def dying(key, **kw):
            if key.startswith("@parts/") and key.endswith("/b.npy"):
                os._exit(137)  # part 'a' is committed, part 'b' and the record are not
            return real(key, **kw)
        b.storage.atomic_write = dying
    gen = first
    print("ready", flush=True)
    if mode == "loop":
        sys.stdin.readline()  # started ahead of time: begin when told
    while True:
        value = np.full(50_000, gen, dtype=np.int64)
        b.put(Pair(value, value.copy()), "pair", visit=1, overwrite=True)
        print(f"committed {gen}", flush=True)
        gen += 1
    """
)


def _pair_class() -> type:
    """The same dataclass the writer writes (its module name: ``pairs``)."""
    from dataclasses import dataclass

    module = sys.modules.get("pairs")
    if module is None:

        @dataclass
        class Pair:
            a: np.ndarray
            b: np.ndarray

        Pair.__module__, Pair.__qualname__ = "pairs", "Pair"
        module = type(sys)("pairs")
        module.Pair = Pair  # type: ignore[attr-defined]
        sys.modules["pairs"] = module
    return module.Pair  # type: ignore[no-any-return]


@pytest.fixture(params=["posix", "s3"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Butler, Path, Repo]]:
    Pair = _pair_class()
    for where in make_repo(request, request.param, tmp_path):
        b = where.create()
        b.register_dataset_type("pair", Pair, "npy", dimensions={"visit": int}, disassemble=True)
        value = np.full(50_000, -1, dtype=np.int64)
        b.put(Pair(value, value.copy()), "pair", visit=1)
        script = tmp_path / "writer.py"
        script.write_text(WRITER)
        yield b, script, where
        b.close()


def _writer(script: Path, where: Repo, mode: str, first: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), where.root, mode, str(first), json.dumps(where.options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _settle(where: Repo) -> None:
    """On S3, let a request the killed writer had fully sent land first."""
    if where.kind == "s3":
        s3_settle(where)


def _part_names(b: Butler) -> list[str]:
    return sorted(k.rsplit("/", 1)[1] for k in b.storage.list("@parts/"))


def _no_stray_objects(b: Butler, where: Repo) -> None:
    """On S3: the record, its two parts and the policy; no incomplete upload."""
    if where.kind != "s3":
        return
    objects = sorted(k.rsplit("/", 1)[1] for k in s3_objects(where))
    assert objects == ["1.composite.json", "a.npy", "b.npy", "butler.yaml"], objects
    assert s3_pending_uploads(where) == 0


def test_a_writer_killed_between_parts_leaves_the_old_composite(
    repo: tuple[Butler, Path, Repo],
) -> None:
    b, script, where = repo
    proc = _writer(script, where, "die-after-first-part", 7)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 137, out
    _settle(where)
    assert "committed" not in out
    old = b.get("pair", visit=1)
    assert old.a[0] == old.b[0] == -1
    report = b.verify()
    assert report.ok and not report.missing and not report.corrupted
    assert len(report.unreferenced) == 1 and report.unreferenced[0].endswith(
        "a.npy: part of no composite (purge_debris removes it)"
    )
    assert b.purge_debris(older_than=3600) == []  # too young to be debris yet
    removed = b.purge_debris(older_than=0)
    assert len(removed) == 1 and removed[0].endswith("/a.npy")
    assert b.verify().unreferenced == []
    assert b.get("pair", visit=1).a[0] == -1
    _no_stray_objects(b, where)


def test_readers_never_see_a_mix_while_writers_are_killed(
    repo: tuple[Butler, Path, Repo],
) -> None:
    b, script, where = repo
    seed = int(os.environ.get("BUTLER_CRASH_SEED", random.randrange(2**32)))
    print(f"BUTLER_CRASH_SEED={seed}")
    rng = random.Random(seed)
    seen: set[int] = set()
    first = 0
    # Each writer is started while the previous one runs (importing butler and opening the
    # repository take longer than a round), and told to begin through its stdin.
    following = _writer(script, where, "loop", first)
    for _round in range(4):
        proc, first = following, first + 10_000
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda p=proc, out=lines: out.extend(iter(p.stdout.readline, ""))
        )
        reader.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        if _round < 3:
            following = _writer(script, where, "loop", first)
        # Killed at a random moment after its first commit (a loaded machine may take a
        # second or more for that one), while this process reads.
        deadline = None
        give_up = time.monotonic() + 20.0
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and lines:
                deadline = time.monotonic() + rng.uniform(0.0, 0.6)
            assert time.monotonic() < give_up, "the writer committed nothing in 20 s"
            got = b.get("pair", visit=1)
            # Both parts from one put: every element of both equal to one generation.
            assert got.a[0] == got.b[0] == got.a[-1] == got.b[-1], (got.a[0], got.b[0])
            seen.add(int(got.a[0]))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        _settle(where)
        got = b.get("pair", visit=1)
        assert got.a[0] == got.b[0]
        committed = [int(line.split()[1]) for line in lines if line.startswith("committed")]
        assert committed
        # The last committed put, or a later one that committed unreported.
        assert int(got.a[0]) >= committed[-1]
        seen.add(int(got.a[0]))
    assert len(seen) > 2, seen  # readers did see writers' puts come and go
    named = {line.split(": part of no composite")[0] for line in b.verify().unreferenced}
    removed = set(b.purge_debris(older_than=0))
    assert named <= removed, (named, removed)  # verify named parts purge removes...
    # ...and the storage's own debris (a killed writer's temporary file or upload).
    assert all("butler-tmp" in r or "incomplete upload" in r for r in removed - named), removed
    report = b.verify()
    assert report.healthy and report.unreferenced == [], report
    assert list(b.datasets("pair")) == [{"visit": 1}]
    # What is left: the two parts of the one committed composite.
    assert _part_names(b) == ["a.npy", "b.npy"]
    _no_stray_objects(b, where)


def test_a_part_removed_while_it_is_read_sends_the_reader_to_the_new_composite(
    repo: tuple[Butler, Path, Repo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader has opened a part; an overwrite commits and removes that part before
    the reader has read its bytes (on S3 the object is gone; on posix the open file stays
    readable). Either way the reader returns one whole put, never a mix nor an error."""
    b, _, where = repo
    Pair = _pair_class()
    big = 300_000  # parts larger than what the metadata request brings along on S3
    b.put(Pair(np.zeros(big), np.zeros(big)), "pair", visit=1, overwrite=True)
    real = b.storage.open
    for name in ("pair", "pair.a"):
        done: list[str] = []

        def racing(key: str, *args: Any, done: list[str] = done, **kwargs: Any) -> Any:
            f = real(key, *args, **kwargs)
            if key.startswith("@parts/") and not done:
                done.append(key)
                b.put(Pair(np.ones(big), np.ones(big)), "pair", visit=1, overwrite=True)
            return f

        monkeypatch.setattr(b.storage, "open", racing)
        got = b.get(name, visit=1)
        monkeypatch.setattr(b.storage, "open", real)
        assert done, "the race did not happen"
        whole = got if name == "pair" else Pair(got, got)
        assert whole.a[0] == whole.b[0] == whole.a[-1] == whole.b[-1]
        if where.kind == "s3":  # the old object is gone: only the new put can be read
            assert whole.a[0] == 1.0
        b.put(Pair(np.zeros(big), np.zeros(big)), "pair", visit=1, overwrite=True)
