"""Red-team of the dataset index, queries and runs: defects found by attacking them, each
with its failing-first test, and behaviour that held under attack.

Real SQLite files, real repositories on disk, real processes; nothing under test is mocked.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from butler import Butler, DatasetNotFoundError


@pytest.fixture
def root(tmp_path: Path) -> str:
    """A posix repository with the embedded SQLite index and one int dimension."""
    path = str(tmp_path / "repo")
    b = Butler.create(path)
    b.register_dataset_type("c", dict, "json", dimensions={"visit": int})
    b.close()
    return path


def _answers(root: str, **kw: Any) -> tuple[list[Any], list[Any]]:
    """(through the index, by listing) of the same query."""
    with Butler(root) as b, Butler(root, index=False) as listed:
        return list(b.datasets("c", **kw)), list(listed.datasets("c", **kw))


# -- a file whose name parses as a data ID but is not that data ID's key -----------------


@pytest.mark.parametrize("name", ["01.json", "+1.json", "\u0661.json", "0001.json"])
def test_a_key_that_is_not_the_data_ids_key_is_not_that_dataset(root: str, name: str) -> None:
    """``c/01.json``, ``c/+1.json`` or ``c/\u0661.json`` (an Arabic-Indic one) parse as
    visit=1 with the template ``c/{visit:d}.json``, but visit=1 is stored under
    ``c/1.json``: queries (listed or reindexed) must not answer a data ID that `get` cannot
    read, and ``remove_run`` must not delete a file that is no dataset."""
    with Butler(root) as b:
        b.put({"v": 2}, "c", visit=2)
    shutil.copy(f"{root}/c/2.json", f"{root}/c/{name}")
    listed = Butler(root, index=False)
    assert list(listed.datasets("c")) == [{"visit": 2}]
    with pytest.raises(DatasetNotFoundError):
        listed.get("c", visit=1)
    with Butler(root) as b:
        b.reindex()
        assert list(b.datasets("c")) == [{"visit": 2}]
        assert b.history("c", visit=1) == []
        assert b.remove_run("default") == 1
    assert os.path.exists(f"{root}/c/{name}")  # not butler's: left alone
