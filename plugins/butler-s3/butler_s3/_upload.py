"""Committing a fully written dataset to S3 in one atomic step.

The bytes are complete (in a spooled buffer or a local file) before anything is sent, so the
metadata — including the size and the sha256 computed while writing — goes in the same
request that makes the object visible:

* up to ``multipart_threshold`` bytes: one ``PutObject``;
* above it: ``CreateMultipartUpload`` (carrying the metadata), ``max_concurrency`` parts
  in flight, then ``CompleteMultipartUpload``. Nothing is visible before the completion; on
  any failure (or a refused completion) the upload is aborted so no parts are left billed.
  A writer killed mid-upload leaves only an incomplete multipart upload, invisible to
  readers and removed by a bucket lifecycle rule (``AbortIncompleteMultipartUpload``).

With ``create=True`` the visible step (PUT or completion) is conditional
(``If-None-Match: *``): of two concurrent creators exactly one wins, the other gets
`FileExistsError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from ._client import commit_lock

if TYPE_CHECKING:
    from s3fs import S3FileSystem

    from ._client import SyncCalls

__all__ = ["MAX_PARTS", "MIN_PART_SIZE", "put_small", "upload"]

#: S3 limits on multipart uploads.
MIN_PART_SIZE = 5 * 2**20
MAX_PARTS = 10_000


@contextlib.asynccontextmanager
async def _held(bucket: str, key: str) -> AsyncIterator[None]:
    """Hold `commit_lock` of ``bucket/key`` from the event loop: polled, never a blocking
    acquire (that would stall the loop), so a cancelled commit never leaves it held."""
    lock = commit_lock(bucket, key)
    while not lock.acquire(blocking=False):
        await asyncio.sleep(0.001)
    try:
        yield
    finally:
        lock.release()


def put_small(
    calls: SyncCalls,
    bucket: str,
    key: str,
    source: IO[bytes],
    size: int,
    *,
    extra: Mapping[str, Any],
    create: bool,
) -> None:
    """`upload` of at most ``multipart_threshold`` bytes from the caller's thread: one PUT
    on botocore's synchronous client (`butler_s3._client`), conditional when ``create``."""
    source.seek(0)
    body = source.read(size)
    match = {"IfNoneMatch": "*"} if create else {}
    with commit_lock(bucket, key) if create else contextlib.nullcontext():
        calls.call("put_object", Bucket=bucket, Key=key, Body=body, **extra, **match)


def part_size_for(size: int, part_size: int) -> int:
    """A part size of at least ``part_size`` (and 5 MiB) keeping ``size`` under 10,000 parts."""
    part = max(part_size, MIN_PART_SIZE)
    while -(-size // part) > MAX_PARTS:
        part *= 2
    return part


async def upload(
    fs: S3FileSystem,
    bucket: str,
    key: str,
    source: IO[bytes],
    size: int,
    *,
    extra: Mapping[str, Any],
    create: bool,
    part_size: int,
    multipart_threshold: int,
    max_concurrency: int,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Upload ``size`` bytes read from ``source`` (from its start) as ``bucket/key``.

    ``extra`` holds request parameters such as ``Metadata``; ``create`` makes the commit
    conditional on the key being absent.
    """
    match = {"IfNoneMatch": "*"} if create else {}
    source.seek(0)
    if size <= multipart_threshold:
        body = await asyncio.to_thread(source.read, size)
        async with _held(bucket, key) if create else contextlib.nullcontext():
            await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=body, **extra, **match)
        if progress is not None:
            progress(size, size)
        return

    part = part_size_for(size, part_size)
    mpu = await fs._call_s3("create_multipart_upload", Bucket=bucket, Key=key, **extra)
    upload_id = mpu["UploadId"]
    try:
        parts = await _upload_parts(
            fs, bucket, key, upload_id, source, size, part, max_concurrency, progress
        )
        async with _held(bucket, key) if create else contextlib.nullcontext():
            await fs._call_s3(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **match,
            )
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.shield(
                fs._call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
            )
        raise


async def _upload_parts(
    fs: S3FileSystem,
    bucket: str,
    key: str,
    upload_id: str,
    source: IO[bytes],
    size: int,
    part: int,
    max_concurrency: int,
    progress: Callable[[int, int | None], None] | None,
) -> list[dict[str, Any]]:
    slots = asyncio.Semaphore(max(1, max_concurrency))
    sent = 0

    async def one(number: int, data: bytes) -> dict[str, Any]:
        nonlocal sent
        try:
            out = await fs._call_s3(
                "upload_part",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
        finally:
            slots.release()
        sent += len(data)
        if progress is not None:
            progress(sent, size)
        return {"PartNumber": number, "ETag": out["ETag"]}

    tasks: list[asyncio.Task[dict[str, Any]]] = []
    try:
        number = 0
        while True:
            await slots.acquire()
            failed = next((t for t in tasks if t.done() and t.exception()), None)
            if failed is not None:
                slots.release()
                raise failed.exception()  # type: ignore[misc]
            data = await asyncio.to_thread(source.read, part)
            if not data:
                slots.release()
                break
            number += 1
            tasks.append(asyncio.ensure_future(one(number, data)))
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
