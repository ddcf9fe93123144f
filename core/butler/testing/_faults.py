"""Fault injection: corrupt stored bytes, and make a storage's writes fail half way."""

from __future__ import annotations

import contextlib
import errno
import io
import random
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from .._storage import Storage

__all__ = ["CORRUPTIONS", "FaultCounter", "InjectedFault", "corrupt", "failing_writes"]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _garbage(data: bytes) -> bytes:
    # Not valid UTF-8, no known magic number, deterministic.
    return b"\xff\xfe\x00garbage\x80" + random.Random(8).randbytes(max(64, len(data)))


def _empty(data: bytes) -> bytes:
    return b""


#: Corruptions applied to stored bytes by the conformance kit, by name.
CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "truncated": _truncated,
    "garbage": _garbage,
    "empty": _empty,
}


def corrupt(storage: Storage, key: str, how: str | Callable[[bytes], bytes]) -> bytes:
    """Replace the bytes stored under ``key`` by a corrupted version; return the new bytes.

    The stored metadata (format, recorded type) is kept, so a read goes to the same
    serializer as before and has to notice the damage itself.

    Parameters
    ----------
    how
        A name from `CORRUPTIONS` or a ``bytes -> bytes`` function.
    """
    damage = CORRUPTIONS[how] if isinstance(how, str) else how
    original = storage.read_bytes(key)
    metadata = {k: v for k, v in storage.metadata(key).items() if k not in ("size", "sha256")}
    damaged = damage(original)
    with storage.atomic_write(key, metadata=metadata, overwrite=True) as f:
        f.write(damaged)
    return damaged


class InjectedFault(OSError):
    """The failure injected by `failing_writes` (an ``ENOSPC`` `OSError`)."""

    def __init__(self, where: str) -> None:
        message = f"No space left on device (injected by butler.testing {where})"
        super().__init__(errno.ENOSPC, message)


class FaultCounter:
    """How often `failing_writes` fired."""

    def __init__(self) -> None:
        self.fired = 0
        self.bytes_before_failure: list[int] = []


class _FailingFile(io.RawIOBase):
    """Passes writes through until ``limit`` bytes, writes part of the next one, then fails."""

    def __init__(self, raw: BinaryIO, limit: int, counter: FaultCounter) -> None:
        super().__init__()
        self.raw = raw
        self.limit = limit
        self.done = 0
        self.counter = counter

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        room = self.limit - self.done
        if len(view) >= room:
            if room > 0:
                self.raw.write(view[:room])
                self.done += room
            self.counter.fired += 1
            self.counter.bytes_before_failure.append(self.done)
            raise InjectedFault(f"after {self.done} bytes")
        self.raw.write(view)
        self.done += len(view)
        return len(view)

    def tell(self) -> int:
        return self.done

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:  # the storage closes the real file
        super().close()

    def __getattr__(self, name: str) -> Any:  # name, mode... of the real file
        return getattr(self.raw, name)


@contextlib.contextmanager
def failing_writes(storage: Storage, limit: int) -> Iterator[FaultCounter]:
    """Make every write to ``storage`` fail inside this block.

    `Storage.atomic_write` files raise `InjectedFault` once ``limit`` bytes were written
    (after writing part of the failing chunk), or when the serializer's block ends without
    reaching the limit, before the commit. `Storage.atomic_local_path` lets the serializer
    write its local file completely, then fails before the commit. The storage instance is
    patched (so ``isinstance`` and storage-specific attributes still work) and restored on
    exit.

    Yields
    ------
    FaultCounter
        How many injected failures fired: a serializer that never wrote through its
        `ButlerLocation` helpers leaves it at zero.
    """
    counter = FaultCounter()
    real_write = storage.atomic_write
    real_local = storage.atomic_local_path

    @contextlib.contextmanager
    def atomic_write(key: str, **kwargs: Any) -> Iterator[BinaryIO]:
        with real_write(key, **kwargs) as f:
            wrapper = _FailingFile(f, limit, counter)
            yield wrapper  # type: ignore[misc]
            counter.fired += 1
            counter.bytes_before_failure.append(wrapper.done)
            raise InjectedFault(f"before committing {wrapper.done} bytes")

    @contextlib.contextmanager
    def atomic_local_path(key: str, **kwargs: Any) -> Iterator[str]:
        with real_local(key, **kwargs) as path:
            yield path
            counter.fired += 1
            raise InjectedFault("before committing a local file")

    storage.atomic_write = atomic_write  # type: ignore[method-assign]
    storage.atomic_local_path = atomic_local_path  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        del storage.atomic_write
        del storage.atomic_local_path
