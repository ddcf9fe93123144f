"""Changing the repository policy on S3: compare-and-swap by conditional PUT.

``butler.yaml`` is one object; each change (a new dataset type, the first policy of a new
repository) is a read-modify-write. `update_policy`:

1. GETs the policy and its ETag (one request, at most `MAX_POLICY_BYTES`);
2. applies ``change`` to what it read;
3. PUTs the result *conditionally*: ``If-Match: <etag>`` (the object is still the one read)
   or, when there was no policy, ``If-None-Match: *`` (nobody created one meanwhile);
4. on ``412 PreconditionFailed``, ``409 ConditionalRequestConflict`` (two conditional
   writes racing on S3) or a policy deleted meanwhile, sleeps a jittered, growing delay and
   starts again from 1, at most `ATTEMPTS` times, then raises `StorageError`.

What each server guarantees:

* **Amazon S3** evaluates ``If-Match`` / ``If-None-Match`` on PutObject atomically with the
  write (since August/November 2024): of writers that read the same version exactly one
  succeeds, the others get 412 (or 409) and retry on the new version. No change is lost,
  across processes and hosts. ETags are content hashes, so a policy changed and changed
  back counts as unchanged, which is correct: the change is applied to identical content.
* **moto** (5.x, the test server) honours both headers but checks, then writes, without a
  lock, in a threaded server: two writers can both pass the check and the later write
  silently replaces the earlier. Other S3-compatible servers may behave the same way.
  Against them butler also takes a host-wide advisory lock (`host_lock`: ``flock`` on a
  file in a private per-user directory, keyed by endpoint, bucket and key) around steps
  1-3, so processes of one user on one host never race; between hosts only the server's
  conditional PUT protects the policy. On S3 the lock only reduces retries.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from butler import FormatError

from .s3fs_ import error_code

if TYPE_CHECKING:
    from s3fs import S3FileSystem

__all__ = [
    "ATTEMPTS",
    "MAX_POLICY_BYTES",
    "Conflict",
    "Unchanged",
    "get_versioned",
    "host_lock",
    "put_if",
]

#: Most compare-and-swap rounds before giving up.
ATTEMPTS = 50
#: Largest policy read: a policy is untrusted input, and ~1 KiB per dataset type.
MAX_POLICY_BYTES = 16 * 2**20
#: Backoff between rounds: full jitter over an exponential ceiling (seconds).
BACKOFF_BASE = 0.02
BACKOFF_CAP = 1.0
#: Longest wait for the host lock before going on with the compare-and-swap alone.
HOST_LOCK_TIMEOUT = 60.0

_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"})
#: How botocore reports a ``304`` answer to a conditional GET (it has no error body).
_NOT_MODIFIED_CODES = frozenset({"304", "NotModified"})


class Conflict(Exception):
    """The conditional PUT lost: someone else changed (or removed) the policy."""


class Unchanged(Exception):
    """The conditional GET answered ``304 Not Modified``: the cached copy is current."""


def backoff(attempt: int) -> float:
    """Seconds to sleep after ``attempt`` lost rounds (full jitter)."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


async def get_versioned(
    fs: S3FileSystem, bucket: str, key: str, uri: str, etag: str | None = None
) -> tuple[bytes, str] | None:
    """The object's bytes and ETag, or ``None`` if it does not exist.

    With ``etag`` (of a copy the caller holds) the GET is conditional (``If-None-Match``):
    an unchanged object costs one request with an empty body.

    Raises
    ------
    Unchanged
        If the object still has ``etag``.
    FormatError
        If it is larger than `MAX_POLICY_BYTES` (read no further than that).
    """
    condition = {"IfNoneMatch": etag} if etag else {}
    try:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key, **condition)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if etag and error_code(exc) in _NOT_MODIFIED_CODES:
            raise Unchanged(etag) from None
        raise
    body = response["Body"]
    try:
        declared = int(response.get("ContentLength") or 0)
        if declared > MAX_POLICY_BYTES:
            raise _too_large(uri, declared)
        chunks, total = [], 0
        while chunk := await body.read(2**16):
            total += len(chunk)
            if total > MAX_POLICY_BYTES:  # the length header is not what bounds the read
                raise _too_large(uri, total)
            chunks.append(chunk)
    finally:
        body.close()
    return b"".join(chunks), str(response.get("ETag") or "")


def _too_large(uri: str, size: int) -> FormatError:
    return FormatError(
        f"repository policy {uri!r} has {size} bytes, more than the {MAX_POLICY_BYTES} a "
        f"butler policy may have; it is not a policy butler wrote"
    )


async def put_if(
    fs: S3FileSystem, bucket: str, key: str, data: bytes, etag: str | None, extra: Any
) -> str:
    """PUT ``data`` if the object still has ``etag`` (``None``: if there is no object);
    return the new object's ETag (``""`` if the server sent none).

    Raises
    ------
    Conflict
        If the condition failed.
    """
    match = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        response = await fs._call_s3(
            "put_object", Bucket=bucket, Key=key, Body=data, **extra, **match
        )
    except (FileExistsError, FileNotFoundError) as exc:
        raise Conflict(str(exc)) from exc
    except OSError as exc:
        if error_code(exc) in _CONFLICT_CODES:
            raise Conflict(str(exc)) from exc
        raise
    return str(response.get("ETag") or "")


@contextlib.contextmanager
def host_lock(name: str, timeout: float = HOST_LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive advisory lock named ``name`` among this user's processes on this host.

    Best effort: where it cannot be had (no ``fcntl``, a directory not owned by the user,
    a timeout) the body runs without it and the conditional PUT alone decides.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    fd = _open_lock_file(name)
    if fd is None:
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock_file(name: str) -> int | None:
    directory = os.path.join(tempfile.gettempdir(), f"butler-s3-locks-{os.getuid()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        # Someone else's directory (or a symlink) in a shared /tmp: do not use it.
        if not os.path.isdir(directory) or os.path.islink(directory):
            return None
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
        return os.open(os.path.join(directory, digest), flags, 0o600)
    except OSError:
        return None
