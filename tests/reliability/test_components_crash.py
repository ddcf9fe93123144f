"""Disassembled composites under crashes: a writer killed mid-put (between its parts, or at
any moment by SIGKILL) leaves readers the old composite or the new one, never a mix; what
it leaves behind is only unreferenced parts, which verify names and purge_debris removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from butler import Butler

WRITER = textwrap.dedent(
    """
    import os, sys
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
    b = Butler(root)
    if mode == "die-after-first-part":
        real = b.storage.atomic_write
        def dying(key, **kw):
            if key.startswith("@parts/") and key.endswith("/b.npy"):
                os._exit(137)  # part 'a' is committed, part 'b' and the record are not
            return real(key, **kw)
        b.storage.atomic_write = dying
    gen = first
    print("ready", flush=True)
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


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Butler, Path]:
    Pair = _pair_class()
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("pair", Pair, "npy", dimensions={"visit": int}, disassemble=True)
    value = np.full(50_000, -1, dtype=np.int64)
    b.put(Pair(value, value.copy()), "pair", visit=1)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return b, script


def _writer(script: Path, root: str, mode: str, first: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), root, mode, str(first)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_writer_killed_between_parts_leaves_the_old_composite(
    repo: tuple[Butler, Path],
) -> None:
    b, script = repo
    proc = _writer(script, b.storage.uri(), "die-after-first-part", 7)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 137, out
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


def test_readers_never_see_a_mix_while_writers_are_killed(repo: tuple[Butler, Path]) -> None:
    b, script = repo
    seen: set[int] = set()
    first = 0
    for _round in range(4):
        proc = _writer(script, b.storage.uri(), "loop", first)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 0.6 + 0.37 * _round
        while time.monotonic() < deadline:
            got = b.get("pair", visit=1)
            # Both parts from one put: every element of both equal to one generation.
            assert got.a[0] == got.b[0] == got.a[-1] == got.b[-1], (got.a[0], got.b[0])
            seen.add(int(got.a[0]))
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.communicate(timeout=30)[0]
        first += 10_000
        got = b.get("pair", visit=1)
        assert got.a[0] == got.b[0]
        committed = [
            int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")
        ]
        if committed:  # the last committed put (or a later one that committed unreported)
            assert int(got.a[0]) >= committed[-1]
    assert len(seen) > 2, seen  # readers did see writers' puts come and go
    b.purge_debris(older_than=0)
    report = b.verify()
    assert report.healthy and report.unreferenced == [], report
    assert list(b.datasets("pair")) == [{"visit": 1}]
    # What is left: the two parts of the one committed composite.
    parts = sorted(k.rsplit("/", 1)[1] for k in b.storage.list("@parts/"))
    assert parts == ["a.npy", "b.npy"]
