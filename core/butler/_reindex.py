"""Rebuilding the dataset index from storage alone (`Butler.reindex`).

The bytes and the metadata committed with them are the truth: reindexing lists the
storage, reads each dataset's metadata, upserts rows in batches and checkpoints the last
key done, so that a killed run resumes where it stopped. Rows whose bytes are gone are
dropped last, after checking again that the bytes are still absent (a put may land while
the reindex runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import DatasetNotFoundError
from ._index import BATCH, INT_RANGE, Index, IndexEntry, entry_id, iter_batches
from ._policy import DatasetType, RepositoryPolicy

if TYPE_CHECKING:
    from ._butler import Butler, ReindexReport

__all__ = ["configure_index", "reindex_type"]


def configure_index(butler: Butler, index: str | None) -> None:
    """Give a repository without an index one (recorded in its policy), as `Butler.create`
    would, and make ``butler`` use it."""
    import secrets

    from ._butler import _index_setting

    policy = butler.policy
    repo_id = policy.id or secrets.token_hex(16)
    setting = _index_setting(butler.storage, repo_id, index, butler.registry)
    if setting is None:
        from ._errors import StorageError

        raise StorageError(
            f"the {butler.storage.type_name} storage has no embedded dataset index; pass a "
            f"database URL (index='postgresql+psycopg://...')"
        )

    def change(data: dict[str, Any] | None) -> dict[str, Any] | None:
        current = butler._parse_policy(data)
        if current.index:  # another process configured one meanwhile: keep it
            return None
        current.id = current.id or repo_id
        current.index = setting
        return current.to_dict()

    with butler._lock:
        stored = butler.storage.update_policy(change)
        butler._policy = RepositoryPolicy.from_dict(stored or {})
        if isinstance(index, str) and index not in ("none", "embedded"):
            butler._index_choice = index  # the URL with its credentials, for this session
        butler._index_opened = False


def reindex_type(
    butler: Butler,
    index: Index,
    dt: DatasetType,
    report: ReindexReport,
    progress: Callable[[str, int, int], None] | None,
) -> list[str]:
    """Reindex one dataset type (see the module docstring). Returns the datasets the index
    cannot hold (an integer beyond 64 bits: a file no put with an index writes), left out
    so that one of them never stops the others from being indexed."""
    refused: list[str] = []
    listed = sorted((key, run, data_id) for key, run, data_id in butler._stored_all(dt))
    report.listed += len(listed)
    done_until = index.checkpoint(dt)
    todo = [item for item in listed if item[0] > done_until] if done_until else listed
    report.resumed += len(listed) - len(todo)
    done = len(listed) - len(todo)
    if progress is not None:
        progress(dt.name, done, len(listed))
    for batch in iter_batches(todo, BATCH):
        entries = []
        for key, run, data_id in batch:
            beyond = [
                f"{d}={v}"
                for d, v in data_id.items()
                if dt.dimensions[d] == "int" and not INT_RANGE[0] <= v <= INT_RANGE[1]
            ]
            if beyond:
                refused.append(f"{butler.storage.uri(key)} ({', '.join(beyond)})")
                continue
            entry = _entry(butler, dt, key, data_id, run)
            if entry is not None:
                entries.append(entry)
        index.add(dt, entries)
        report.indexed += len(entries)
        index.checkpoint(dt, batch[-1][0])
        done += len(batch)
        if progress is not None:
            progress(dt.name, done, len(listed))
    present = {entry_id(d, run) for _, run, d in listed}
    corrupt: list[str] = []
    # The row's key is untrusted; the key the mapper gives for its data ID is what counts
    # (checked again now: a put may have landed since the listing).
    gone = [
        entry_id(e.data_id, e.run)
        for e in index.entries(dt, corrupt=corrupt)
        if entry_id(e.data_id, e.run) not in present
        and not butler._exists_now(dt, e.data_id, e.run)
    ]
    index.discard_ids(dt, gone + corrupt)
    report.dropped += len(gone) + len(corrupt)
    index.checkpoint(dt, clear=True)
    return refused


def _entry(
    butler: Butler, dt: DatasetType, key: str, data_id: dict[str, Any], run: str
) -> IndexEntry | None:
    """The entry of one listed dataset from its stored metadata; ``None`` if it vanished."""
    try:
        meta = butler.storage.metadata(key)
        if not isinstance(meta.get("size"), int):  # foreign files: no recorded size
            meta = {**meta, "size": butler.storage.size(key)}
    except DatasetNotFoundError:
        return None
    return IndexEntry.from_metadata(dt, key, data_id, meta, run)
