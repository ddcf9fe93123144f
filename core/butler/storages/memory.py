"""In-process storage (``memory://name``): fast, shared by every Butler in the process."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO

from .._builtins import butler_storages
from .._errors import DatasetExistsError
from .._storage import (
    POLICY_KEY,
    CountingWriter,
    ProgressCallback,
    ProgressReader,
    ReadHints,
    Storage,
)

if TYPE_CHECKING:
    from .._index import Index

__all__ = ["MemoryStorage"]

# root name -> key -> (bytes, metadata); one namespace per process so that two Butler
# instances opened on "memory://x" see the same datasets.
_STORES: dict[str, dict[str, tuple[bytes, dict[str, Any]]]] = {}
_LOCK = threading.Lock()


class MemoryStorage(Storage, declared_by=butler_storages):
    """Datasets held in memory under a name (``memory://scratch``). Read hints are
    accepted and ignored: the bytes are already in memory."""

    def __init__(self, root: str, **options: Any) -> None:
        name = root[len("memory://") :] if root.startswith("memory://") else root
        super().__init__(f"memory://{name}", **options)
        with _LOCK:
            self._store = _STORES.setdefault(name, {})

    def uri(self, key: str = "") -> str:
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str) -> bool:
        self.check_key(key)
        return key in self._store

    def _get(self, key: str) -> tuple[bytes, dict[str, Any]]:
        self.check_key(key)
        try:
            return self._store[key]
        except KeyError:
            raise self.not_found(key) from None

    def _open(self, key: str, hints: ReadHints, progress: ProgressCallback | None) -> BinaryIO:
        data = self._get(key)[0]
        f = io.BytesIO(data)  # shares the bytes object until written to: no copy
        if progress is None:
            return f
        return ProgressReader(f, len(data), progress)  # type: ignore[return-value]

    def size(self, key: str) -> int:
        return len(self._get(key)[0])

    def metadata(self, key: str) -> dict[str, Any]:
        return dict(self._get(key)[1])

    @contextlib.contextmanager
    def atomic_write(
        self,
        key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Iterator[BinaryIO]:
        self.check_key(key)
        buffer = io.BytesIO()
        writer = CountingWriter(buffer, checksum=checksum, progress=progress)
        yield writer  # type: ignore[misc]
        meta = self.full_metadata(metadata, writer.size, writer.sha256)
        data = buffer.getvalue()
        with _LOCK:
            if not overwrite and key in self._store:
                raise DatasetExistsError(f"a dataset already exists at {self.uri(key)!r}")
            self._store[key] = (data, meta)

    def remove(self, key: str) -> None:
        self.check_key(key)
        with _LOCK:
            if self._store.pop(key, None) is None:
                raise self.not_found(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        with _LOCK:
            keys = sorted(k for k in self._store if k.startswith(prefix))
        for key in keys:
            if key != POLICY_KEY:
                yield key

    def default_index(self, repository: str) -> Index:
        """An in-process index, shared by every Butler on this repository (like the bytes)."""
        from .._index import memory_index

        return memory_index(repository, self.root)

    @classmethod
    def clear(cls, name: str | None = None) -> None:
        """Forget one named in-memory repository, or all of them."""
        with _LOCK:
            if name is None:
                _STORES.clear()
            else:
                _STORES.pop(name, None)
