"""Crash suite: a writer SIGKILLed at random moments during large overwrites loses nothing.

One long-running writer process loops ``put(..., overwrite=True)`` of 16-18 MiB int32
arrays whose every element is the generation number, printing a line after each commit.
The test kills it after a random delay, checks the repository, releases the next writer
(pre-started while the previous one ran, told its first generation through its stdin), and
repeats ``KILLS`` times.
After every kill:

* every dataset is one complete generation (size and every element), of the right parity,
  and no newer than the last generation started;
* the last committed generation of each data ID is never lost (a later one may replace it);
* ``datasets()`` lists exactly the expected data IDs (no debris); every fifth kill (and the
  last), ``verify()`` is healthy (size and sha256 of every dataset);
* the storage holds no partial state behind butler's back (no orphan chunk rows in the
  database, no stray objects in the bucket).

At the end the repository is still usable (put / get / remove). The RNG seed is printed
(``BUTLER_CRASH_SEED`` replays a run).
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

from .helpers import (
    BASE_ELEMENTS,
    Repo,
    check_array,
    db_counts,
    posix_debris,
    s3_objects,
    s3_pending_uploads,
    s3_settle,
)

pytestmark = pytest.mark.reliability

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_crash_writer.py")
#: Kills per storage (at least 50).
KILLS = int(os.environ.get("BUTLER_CRASH_KILLS", "50"))
#: verify() (size and sha256 of every dataset) after every VERIFY_EVERY-th kill (and the
#: last); the content of every dataset is checked after every kill.
VERIFY_EVERY = 5
#: Data IDs the writer cycles through.
N_IDS = 2
#: Wall-clock budget per storage; the loop fails if it cannot reach KILLS in time.
BUDGET_S = 240.0


class Writer:
    """A pre-started writer process, released by `go`, killed by `kill`."""

    def __init__(self, repo: Repo, options: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                WRITER,
                repo.root,
                json.dumps(options),
                str(N_IDS),
                str(BASE_ELEMENTS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started: list[int] = []
        self.committed: list[int] = []

    def _readline(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else b""

    def wait_ready(self, timeout: float = 60.0) -> None:
        line = self._readline(timeout)
        if line.strip() != b"ready":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"writer did not start: {line!r} {err.decode()[-2000:]}")

    def go(self, first_gen: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{first_gen}\n".encode())
        self.proc.stdin.flush()

    def wait_first_start(self, timeout: float = 60.0) -> None:
        line = self._readline(timeout)
        assert line.startswith(b"started"), line
        self.started.append(int(line.split()[1]))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        out, err = self.proc.communicate()
        assert self.proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        for line in out.decode().splitlines(keepends=True):
            # A writer killed mid-print can leave a partial last line: only whole ones count.
            if not line.endswith("\n") or len(line.split()) != 2:
                continue
            what, gen = line.split()
            (self.started if what == "started" else self.committed).append(int(gen))


def _expected_kinds(repo: Repo) -> dict[str, Any]:
    options: dict[str, Any] = dict(repo.options)
    if repo.kind == "s3":
        # Parts of 8 MiB: every put is a multipart upload (create, 3 parts, complete).
        options.update(part_size=8 * 2**20, multipart_threshold=8 * 2**20)
    return options


def _check(repo: Repo, butler: Any, latest: dict[int, int], last_started: int, verify: bool) -> int:
    """Assert the repository invariants; return the number of datasets checked.

    The storage is the truth: listing it finds every committed dataset. The index may miss
    one whose writer was killed between its bytes and its row (never the other way round),
    and `reindex` repairs that."""
    with repo.open(index=False) as listing:
        ids = sorted(d["visit"] for d in listing.datasets("big"))
    assert ids == sorted(latest), f"datasets() lists {ids}, expected {sorted(latest)}"
    indexed = sorted(d["visit"] for d in butler.datasets("big"))
    assert set(indexed) <= set(ids), f"the index lists {indexed}, the storage holds {ids}"
    if indexed != ids:
        unindexed = butler.verify().unindexed
        assert len(unindexed) == len(ids) - len(indexed), unindexed
        butler.reindex()
        assert sorted(d["visit"] for d in butler.datasets("big")) == ids
    for visit, committed in latest.items():
        gen = check_array(butler.get("big", visit=visit))
        assert gen % N_IDS == visit, f"visit {visit} holds generation {gen}"
        assert committed <= gen <= last_started, (
            f"visit {visit} holds generation {gen}; last committed {committed}, "
            f"last started {last_started}"
        )
        latest[visit] = gen
    if verify:
        report = butler.verify()
        assert report.healthy and report.checked == len(latest), report
    if repo.kind in ("sqlite", "postgresql", "mysql"):
        counts = db_counts(repo)
        assert counts["datasets"] == len(latest) and counts["orphans"] == 0, counts
    elif repo.kind == "s3":
        objects = s3_objects(repo)
        expected = {"repo/butler.yaml"} | {f"repo/big/{v}.npy" for v in latest}
        assert set(objects) == expected, sorted(objects)
    return len(latest)


@pytest.mark.parametrize("kind", ["posix", "sqlite", "s3", "postgresql"])
def test_killed_writer_loses_nothing(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    from .conftest import make_repo

    gen_repo = make_repo(request, kind, tmp_path)
    repo = next(gen_repo)
    try:
        _run_kills(repo)
    finally:
        gen_repo.close()


def _run_kills(repo: Repo) -> None:
    seed = int(os.environ.get("BUTLER_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash suite on {repo.kind}: seed {seed} (BUTLER_CRASH_SEED replays it)")
    rng = random.Random(seed)
    options = _expected_kinds(repo)
    with repo.create(checksum=True) as b:
        b.register_dataset_type("big", np.ndarray, "npy", dimensions={"visit": int})

    butler = repo.open()
    latest: dict[int, int] = {}  # visit -> newest generation known to be stored
    gen = 0
    writer = Writer(repo, options)
    writer.wait_ready()
    # Calibrate: time one uninterrupted put to spread kill delays over ~2.5 puts.
    writer.go(gen)
    nxt = Writer(repo, options)
    writer.wait_first_start()
    t0 = time.monotonic()
    line = writer._readline(60.0)
    put_s = time.monotonic() - t0
    assert line.startswith(b"committed"), line
    writer.committed.append(int(line.split()[1]))
    max_delay = max(0.05, 2.5 * put_s)
    print(f"one put takes {put_s:.3f} s; kill delays uniform in [0, {max_delay:.3f}] s")

    deadline = time.monotonic() + BUDGET_S
    kills = with_commits = checked = debris = late_commits = 0
    t_check = t_wait = 0.0
    while kills < KILLS:
        assert time.monotonic() < deadline, f"only {kills} kills within {BUDGET_S} s"
        time.sleep(rng.uniform(0, max_delay))
        writer.kill()
        kills += 1
        with_commits += bool(writer.committed)
        for g in writer.committed:
            latest[g % N_IDS] = max(latest.get(g % N_IDS, -1), g)
        last_started = max(writer.started)
        gen = last_started + 1
        if repo.kind == "s3":  # let requests sent before the kill land first
            late_commits += s3_settle(repo)
        # A dataset whose put was started may also have been committed just before the kill.
        for visit in range(N_IDS):
            if visit not in latest and butler.exists("big", visit=visit):
                latest[visit] = -1
        tc = time.monotonic()
        checked += _check(repo, butler, latest, last_started, verify=kills % VERIFY_EVERY == 0)
        t_check += time.monotonic() - tc
        if repo.kind == "posix":
            leftovers = posix_debris(repo.root)
            debris += len(leftovers)
            for path in leftovers:  # hidden, never listed; removed to bound disk use
                os.unlink(path)
        writer = nxt
        tw = time.monotonic()
        writer.wait_ready()
        t_wait += time.monotonic() - tw
        writer.go(gen)
        nxt = Writer(repo, options)  # starts up while this one writes
        writer.wait_first_start()
    writer.kill()
    nxt.kill()

    pending = s3_pending_uploads(repo) if repo.kind == "s3" else 0
    print(
        f"{repo.kind}: {kills} kills ({with_commits} after at least one commit), "
        f"{checked} datasets checked, last generation {gen}, {debris} hidden temporary "
        f"files left by killed writers, {pending} incomplete multipart uploads, "
        f"{late_commits} uploads completed by the server after the kill; "
        f"{t_check:.1f} s checking, {t_wait:.1f} s waiting for writers"
    )
    # Still usable: a new dataset, an overwrite, a removal.
    butler.put(np.arange(10), "big", visit=100)
    assert np.array_equal(butler.get("big", visit=100), np.arange(10))
    butler.put(np.arange(5), "big", visit=0, overwrite=True)
    assert np.array_equal(butler.get("big", visit=0), np.arange(5))
    butler.remove("big", visit=100)
    assert butler.verify().healthy
    butler.close()
