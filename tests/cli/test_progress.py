"""Progress bars: attached only on a terminal and for big transfers; fed by put/get."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from butler import _cli

pytest.importorskip("numpy")
import numpy as np


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with _cli._progress("put x", 1 << 30) as progress:
        assert progress is None


def test_no_bar_for_small_transfers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", FakeTTY())
    with _cli._progress("put x", _cli.PROGRESS_THRESHOLD - 1) as progress:
        assert progress is None


@pytest.mark.parametrize("total", [_cli.PROGRESS_THRESHOLD, None])
def test_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch, total: int | None) -> None:
    pytest.importorskip("rich", reason="progress bars need rich (butler-core[progress])")
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    stdout = io.StringIO()
    monkeypatch.setattr("sys.stdout", stdout)
    with _cli._progress("put x", total) as progress:
        assert callable(progress)
        for done in range(0, 5 * 2**20, 2**20):
            progress(done, None)
        progress(5 * 2**20, 5 * 2**20)
    assert stdout.getvalue() == ""  # the bar never touches stdout (--json output)


def test_bar_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", FakeTTY())
    monkeypatch.setitem(__import__("sys").modules, "rich.progress", None)
    with _cli._progress("put x", 1 << 30) as progress:
        assert progress is None


def _recording(calls: list[tuple[str, Any, list[tuple[int, Any]]]]) -> Any:
    @contextlib.contextmanager
    def fake(label: str, total: int | None) -> Iterator[Callable[[int, Any], None]]:
        seen: list[tuple[int, Any]] = []
        calls.append((label, total, seen))
        yield lambda done, size: seen.append((done, size))

    return fake


def test_put_and_get_feed_the_bar(
    cli: Callable[..., Result], repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any, list[tuple[int, Any]]]] = []
    monkeypatch.setattr(_cli, "_progress", _recording(calls))
    source = tmp_path / "big.npy"
    np.save(source, np.zeros(300_000))  # 2.4 MB, written in one or more chunks
    assert cli("put", repo, "img", source, "--id", "visit=1").exit_code == 0
    assert cli("get", repo, "img", "--id", "visit=1", "-o", tmp_path / "o.npy").exit_code == 0
    (put_label, put_total, put_seen), (get_label, get_total, get_seen) = calls
    size = source.stat().st_size
    assert (put_label, put_total) == ("put img", size)
    assert put_seen and put_seen[-1][0] == size
    assert (get_label, get_total) == ("get img", size)
    assert get_seen and get_seen[-1] == (size, size)
