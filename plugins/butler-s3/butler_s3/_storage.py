"""`S3Storage`: datasets as objects under ``s3://bucket/prefix``.

Writes are spooled (memory, then a local temporary file) until the serializer has finished,
then committed by one request that carries the bytes' metadata (see `_upload`): an
exception, or a killed writer, leaves the previous object untouched and nothing partial.
``overwrite=False`` is a conditional PUT (``If-None-Match: *``), so of two concurrent
creators exactly one wins.

Reads go through `S3ReadFile` (block cache for small reads, one streamed GET for large or
sequential ones). Listings and existence checks always ask the server: nothing is cached
between calls, so other processes' writes are seen at once.

Requests per call, in the common case:

* a create-only put of a small dataset: one conditional PUT (no HEAD first: the server's
  ``If-None-Match`` answers whether the dataset exists; ``cheap_exists`` tells `Butler` not
  to ask beforehand);
* a get: one GET. `metadata` reads the headers (``x-amz-meta-butler``, ``ETag``, the size)
  from a GET of the object's first ``prefetch_size`` bytes and hands those bytes to the
  next `open` of the same key in the same thread (within `HANDOFF_SECONDS`); a larger
  object is read on from there under ``If-Match`` of that ETag;
* re-reading the policy: one conditional GET (``If-None-Match``), answered ``304`` with no
  body while the policy is unchanged (the copy is kept per process, keyed by endpoint,
  bucket and key).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from butler import (
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidDataIdError,
    StorageError,
    mask_url,
)
from butler.storage import (
    POLICY_KEY,
    CountingWriter,
    ProgressReader,
    ReadHints,
    Storage,
    file_sha256,
    is_reserved_key,
    key_suffix,
)

from . import _cas
from ._client import SyncCalls
from ._options import check_bucket, check_cache, check_options, credential_values
from ._plugin import butler_storages
from ._reader import S3ReadFile, TranslatedFile, fill
from ._redact import install_log_redaction
from ._upload import put_small, upload
from .s3fs_ import error_code, make_filesystem, translate_error, translated

if TYPE_CHECKING:
    from s3fs import S3FileSystem

    from butler.storage import ProgressCallback

__all__ = ["METADATA_HEADER", "S3Storage"]

#: User-metadata key holding butler's metadata as JSON (sent as ``x-amz-meta-butler``).
METADATA_HEADER = "butler"
#: S3 caps all user metadata of an object at 2 KiB.
MAX_METADATA_BYTES = 2048
#: S3 caps object keys at 1,024 bytes of UTF-8.
MAX_KEY_BYTES = 1024

_MIB = 2**20

#: Largest block for ``access="random"`` reads given no ``block_size``: small pieces of a
#: big object (cutouts, HDF5 chunks) then fetch little more than they need.
RANDOM_BLOCK_SIZE = 256 * 1024

#: Default ``prefetch_size``: bytes of a dataset fetched by the GET that reads its metadata.
PREFETCH_SIZE = 64 * 1024
#: Longest time the bytes of a `metadata` GET wait for the `open` they were fetched for.
HANDOFF_SECONDS = 2.0
#: Policies kept (per process) for conditional re-reads.
_POLICY_CACHE_SIZE = 64
_policies: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
_policies_lock = threading.Lock()


class _Kept:
    """The GET `S3Storage.metadata` made for ``key``: its response headers and the first
    bytes of the object (those of exactly the version whose metadata was returned), kept
    for the next `~S3Storage.open` of ``key`` in the same thread, once, for a short time."""

    __slots__ = ("data", "head", "key", "until")

    def __init__(self, key: str, head: dict[str, Any], data: bytes | None) -> None:
        self.key = key
        self.head = head
        self.data = data
        self.until = time.monotonic() + HANDOFF_SECONDS

    def fresh_for(self, key: str) -> bool:
        return self.key == key and time.monotonic() <= self.until


def _as_progress(progress: Any) -> ProgressCallback | None:
    """Accept ``progress(done, total)`` callables and `fsspec.callbacks.Callback` objects."""
    if progress is None or not hasattr(progress, "absolute_update"):
        return progress
    callback = progress

    def adapter(done: int, total: int | None) -> None:
        if total is not None and callback.size != total:
            callback.set_size(total)
        callback.absolute_update(done)

    return adapter


class S3Storage(Storage, declared_by=butler_storages):
    """Datasets as objects in an S3 (or S3-compatible) bucket, under a key prefix.

    Parameters
    ----------
    root
        ``s3://bucket`` or ``s3://bucket/prefix``.
    endpoint_url
        Endpoint of an S3-compatible server (MinIO, Ceph, moto...). Default: AWS, or the
        ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` environment variables.
    key, secret, token
        Explicit credentials. Default: botocore's chain (``AWS_ACCESS_KEY_ID`` ...,
        ``AWS_PROFILE``, shared config files, instance roles). Never stored or displayed.
    anon
        Unsigned requests (public buckets).
    profile
        Named profile of the shared AWS config files.
    region
        Region name (shortcut for ``client_kwargs={"region_name": ...}``).
    client_kwargs, config_kwargs
        Passed to botocore's client and ``Config`` as with s3fs. ``config_kwargs`` defaults
        to ``request_checksum_calculation="when_required"`` and
        ``response_checksum_validation="when_required"``, which S3-compatible servers need
        with botocore >= 1.36.
    s3_additional_kwargs
        Extra parameters for every request (``{"ServerSideEncryption": "aws:kms"}``).
    requester_pays
        Bill requests to the requester.
    block_size, cache_blocks
        Read cache: block size in bytes (default 4 MiB) and number of blocks kept.
    prefetch_size
        Bytes of a dataset fetched with its metadata (default 64 KiB): reading the metadata
        is then one GET of the object's first bytes instead of a HEAD, and a dataset up to
        this size is read entirely by that request. ``0``: a HEAD (no bytes).
    cache_type
        ``"blocks"`` (default, `S3ReadFile`) or any fsspec cache name (``"readahead"``,
        ``"bytes"``, ``"none"``...) to read through s3fs's own file object instead.
    part_size, multipart_threshold, max_concurrency
        Uploads: part size (default 16 MiB), size above which multipart is used (default
        twice the part size), parts in flight (default 8).
    spool_size
        Bytes of a write kept in memory before spilling to a temporary file (default 64 MiB).
    tmpdir
        Directory for spooled writes and downloaded local copies (default: system temp).
    fs_kwargs
        Any other `s3fs.S3FileSystem` arguments.

    Attributes
    ----------
    fs : s3fs.S3FileSystem
        The file system used for every request, for code that wants to talk fsspec
        directly (combine it with `full_path`). Serializers need not: `open` takes read
        hints (`butler.storage.ReadHints`).
    bucket, prefix : str
        Where the repository lives.
    """

    has_local_paths = False
    #: An existence check is a request of its own; a create-only put needs none (the
    #: conditional PUT refuses an existing dataset), so `Butler` does not ask first.
    cheap_exists: ClassVar[bool] = False

    def __init__(
        self,
        root: str,
        *,
        endpoint_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        token: str | None = None,
        anon: bool = False,
        profile: str | None = None,
        region: str | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        config_kwargs: Mapping[str, Any] | None = None,
        s3_additional_kwargs: Mapping[str, Any] | None = None,
        requester_pays: bool = False,
        block_size: int = 4 * _MIB,
        cache_blocks: int = 16,
        cache_type: str = "blocks",
        prefetch_size: int = PREFETCH_SIZE,
        part_size: int = 16 * _MIB,
        multipart_threshold: int | None = None,
        max_concurrency: int = 8,
        spool_size: int = 64 * _MIB,
        tmpdir: str | None = None,
        fs_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        options = {
            "endpoint_url": endpoint_url, "key": key, "secret": secret, "token": token,
            "anon": anon, "profile": profile, "region": region, "client_kwargs": client_kwargs,
            "config_kwargs": config_kwargs, "s3_additional_kwargs": s3_additional_kwargs,
            "requester_pays": requester_pays, "block_size": block_size,
            "cache_blocks": cache_blocks, "cache_type": cache_type,
            "prefetch_size": prefetch_size, "part_size": part_size,
            "multipart_threshold": multipart_threshold, "max_concurrency": max_concurrency,
            "spool_size": spool_size, "tmpdir": tmpdir, "fs_kwargs": fs_kwargs,
        }  # fmt: skip
        bucket, prefix = _parse_root(root)
        check_bucket(bucket, root)
        check_options(options)
        self.bucket = bucket
        self.prefix = prefix
        super().__init__(
            f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            endpoint_url=endpoint_url,
            anon=anon,
            profile=profile,
            region=region,
        )
        self.endpoint_url = endpoint_url
        self.block_size = block_size
        self.cache_blocks = cache_blocks
        self.cache_type = cache_type
        self.prefetch_size = prefetch_size
        self.part_size = part_size
        self.multipart_threshold = (
            2 * part_size if multipart_threshold is None else multipart_threshold
        )
        self.max_concurrency = max_concurrency
        self.spool_size = spool_size
        self.tmpdir = tmpdir
        #: Kept out of error messages (`scrub`) and, with the key ids, out of log records.
        self._secrets = credential_values(options)
        self._kept = threading.local()  # the last metadata GET of this thread, see _take
        self.fs: S3FileSystem = make_filesystem(
            endpoint_url=endpoint_url,
            key=key,
            secret=secret,
            token=token,
            anon=anon,
            profile=profile,
            region=region,
            client_kwargs=client_kwargs,
            config_kwargs=config_kwargs,
            s3_additional_kwargs=s3_additional_kwargs,
            requester_pays=requester_pays,
            max_concurrency=max_concurrency,
            fs_kwargs=fs_kwargs,
        )
        self._calls = SyncCalls(self.fs)
        # After make_filesystem: botocore, aiobotocore and s3fs (and their loggers) exist.
        install_log_redaction(self, (*self._secrets, *credential_values(options, ids=True)))

    # -- names -------------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        """The S3 object key (without the bucket) of a storage key, checked: the rule of
        every storage (`~butler.storage.Storage.check_key`), then S3's own (valid UTF-8,
        at most 1,024 bytes with the prefix)."""
        self.check_key(key)
        return self._s3_key(key)

    def _s3_key(self, key: str) -> str:
        """``prefix/key``, refused unless it is valid UTF-8 of at most 1,024 bytes (for
        keys, and for listing prefixes, which `check_key` does not apply to)."""
        full = f"{self.prefix}/{key}" if self.prefix else key
        try:
            size = len(full.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates: no S3 key can hold them
            raise InvalidDataIdError(f"storage key {key!r} is not valid UTF-8") from None
        if size > MAX_KEY_BYTES:
            # Refused here, on every server alike: S3 answers KeyTooLongError, moto accepts.
            raise InvalidDataIdError(
                f"storage key {_abridged(key)!r} makes an S3 key of {size} bytes "
                f"(s3://{self.bucket}/{_abridged(full)}); S3 keys have at most {MAX_KEY_BYTES} "
                f"bytes of UTF-8: use shorter data ID values or a shorter template"
            )
        return full

    def full_path(self, key: str) -> str:
        """``bucket/prefix/key``: the path of a dataset for `fs` (s3fs, fsspec).

        Examples
        --------
        >>> storage.full_path("calexp/1.fits")  # doctest: +SKIP
        'my-bucket/repo/calexp/1.fits'
        >>> with storage.fs.open(storage.full_path("calexp/1.fits"), "rb") as f:  # doctest: +SKIP
        ...     header = f.read(2880)
        """
        return f"{self.bucket}/{self.object_key(key)}"

    def uri(self, key: str = "") -> str:
        # For display only (a listing prefix "a/" too): never a request, so not checked.
        if not key:
            return self.root
        return f"s3://{self.bucket}/{self.prefix}/{key}" if self.prefix else f"{self.root}/{key}"

    # -- plumbing ----------------------------------------------------------------------

    def _call(self, method: str, **kwargs: Any) -> Any:
        """One request, from this thread (`butler_s3._client`), else through s3fs."""
        if self._calls.available:
            return self._calls.call(method, **kwargs)
        return self.fs.call_s3(method, **kwargs)

    def botocore_clients(self) -> tuple[Any, ...]:
        """The botocore clients this storage sends requests with (connecting them): the
        synchronous one of the single-request calls and s3fs's. Register event handlers
        on each to observe every request (``client.meta.events.register``)."""
        self.fs.connect()
        clients = [self.fs.s3]
        if self._calls.available:
            clients.insert(0, self._calls.client)
        return tuple(clients)

    def _sync(self, coro_func: Any, *args: Any, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_func, *args, **kwargs)

    def _translated(self, action: str, key: str = "") -> contextlib.AbstractContextManager[None]:
        return translated(action, self.uri(key), self._secrets)

    def _head(self, key: str, action: str = "read") -> dict[str, Any]:
        with self._translated(action, key):
            try:
                return self._call("head_object", Bucket=self.bucket, Key=self.object_key(key))
            except FileNotFoundError:
                raise self.not_found(key) from None

    # -- lifecycle ---------------------------------------------------------------------

    def initialize(self) -> None:
        """Check that the bucket exists and the credentials may use it.

        Raises
        ------
        StorageError
            Naming the bucket and the problem (missing bucket, access denied, no
            credentials, unreachable endpoint). Buckets are never created by butler.
        """
        where = f"s3://{self.bucket}"
        try:
            self._call("head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            endpoint = f" at {self.endpoint_url}" if self.endpoint_url else ""
            raise StorageError(
                f"bucket {self.bucket!r} does not exist{endpoint}; create it first "
                f"(butler never creates buckets)"
            ) from None
        except PermissionError as exc:
            # HEAD responses have no body: ask again with a GET to learn why (bad key id,
            # bad secret, or a policy denying access).
            detailed: BaseException = exc
            try:
                self._call("list_objects_v2", Bucket=self.bucket, MaxKeys=1)
            except Exception as again:
                detailed = again
            raise translate_error(detailed, "reach bucket", where, self._secrets) from None
        except Exception as exc:
            if isinstance(exc, StorageError):
                raise
            raise translate_error(exc, "reach bucket", where, self._secrets) from exc

    # -- policy ------------------------------------------------------------------------

    def _policy_name(self) -> str:
        return f"{self.endpoint_url or 'aws'}|{self.bucket}|{self.object_key(POLICY_KEY)}"

    def _read_policy_versioned(self) -> tuple[dict[str, Any] | None, str | None]:
        """The policy and its ETag, in one bounded GET, conditional (``If-None-Match``) when
        this process holds a copy: ``304`` costs no body and no parsing."""
        uri = self.uri(POLICY_KEY)
        name = self._policy_name()
        with _policies_lock:
            cached = _policies.get(name)
        with self._translated("read", POLICY_KEY):
            try:
                found = self._sync(
                    _cas.get_versioned,
                    self.fs,
                    self.bucket,
                    self.object_key(POLICY_KEY),
                    uri,
                    cached[0] if cached else None,
                )
            except _cas.Unchanged:
                assert cached is not None
                return copy.deepcopy(cached[1]), cached[0]
        if found is None:
            self._forget_policy(name)
            return None, None
        policy = self.policy_from_bytes(found[0], where=uri)
        self._remember_policy(name, found[1], policy)
        return policy, found[1]

    @staticmethod
    def _remember_policy(name: str, etag: str, policy: dict[str, Any]) -> None:
        if not etag:
            return
        with _policies_lock:
            _policies[name] = (etag, copy.deepcopy(policy))
            _policies.move_to_end(name)
            while len(_policies) > _POLICY_CACHE_SIZE:
                _policies.popitem(last=False)

    @staticmethod
    def _forget_policy(name: str) -> None:
        with _policies_lock:
            _policies.pop(name, None)

    def read_policy(self) -> dict[str, Any] | None:
        """The stored policy, or ``None``: one GET of at most `_cas.MAX_POLICY_BYTES`."""
        return self._read_policy_versioned()[0]

    def update_policy(
        self, change: Callable[[dict[str, Any] | None], Mapping[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read-modify-write the policy by compare-and-swap (conditional PUT), retried.

        See `butler_s3._cas` for what S3 and moto guarantee. ``change`` is called once per
        round with a fresh copy of the policy read in that round.

        Raises
        ------
        StorageError
            If `_cas.ATTEMPTS` rounds all lost to concurrent writers.
        """
        okey = self.object_key(POLICY_KEY)
        lock_name = self._policy_name()
        for attempt in range(_cas.ATTEMPTS):
            with _cas.host_lock(lock_name):
                current, etag = self._read_policy_versioned()
                new = change(current)
                if new is None:
                    return current
                data = self.policy_to_bytes(new)
                header = json.dumps({"size": len(data)}, separators=(",", ":"))
                extra = {"Metadata": {METADATA_HEADER: header}}
                try:
                    with self._translated("write", POLICY_KEY):
                        new_etag = self._sync(
                            _cas.put_if, self.fs, self.bucket, okey, data, etag, extra
                        )
                except _cas.Conflict:
                    self._forget_policy(lock_name)
                else:
                    stored = self.policy_from_bytes(data, where=self.uri(POLICY_KEY))
                    self._remember_policy(lock_name, new_etag, stored)
                    return dict(new)
            time.sleep(_cas.backoff(attempt))
        raise StorageError(
            f"cannot update the repository policy {self.uri(POLICY_KEY)!r}: "
            f"{_cas.ATTEMPTS} attempts in a row lost to concurrent writers; try again"
        )

    def close(self) -> None:
        from s3fs import S3FileSystem

        self._calls.close()
        s3creator = getattr(self.fs, "_s3creator", None)
        if s3creator is not None:
            with contextlib.suppress(Exception):
                S3FileSystem.close_session(self.fs.loop, s3creator)
            self.fs._s3 = None
            self.fs._s3creator = None

    # -- reading -----------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        try:
            self._head(key, "check")
        except DatasetNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def _first_bytes(self, key: str, limit: int) -> tuple[dict[str, Any], bytes | None]:
        """The object's response headers and its first ``limit`` bytes, in one GET (a HEAD,
        and no bytes, when ``limit`` is 0). ``ContentLength`` is the whole object's size."""
        if limit <= 0:
            return self._head(key), None
        okey = self.object_key(key)
        with self._translated("read", key):
            try:
                if self._calls.available:
                    return _get_first_sync(self._calls, self.bucket, okey, limit)
                return self._sync(_get_first, self.fs, self.bucket, okey, limit)
            except FileNotFoundError:
                raise self.not_found(key) from None

    def _take(self, key: str) -> _Kept | None:
        """What this thread's last `metadata` call fetched, if it was for ``key`` and is
        recent; used once. The reader's later GETs carry its ETag (``If-Match``), so an
        object replaced in between is reported, never mixed with the other version."""
        kept = getattr(self._kept, "slot", None)
        self._kept.slot = None
        return kept if kept is not None and kept.fresh_for(key) else None

    def metadata(self, key: str) -> dict[str, Any]:
        """butler's metadata of a dataset (``{}`` if it has none): one GET of its first
        ``prefetch_size`` bytes, handed to the next `open` of ``key`` in this thread."""
        self._kept.slot = None
        head, data = self._first_bytes(key, self.prefetch_size)
        self._kept.slot = _Kept(key, head, data)
        raw = (head.get("Metadata") or {}).get(METADATA_HEADER)
        if not raw:
            return {}
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError):  # written by anyone: 2 KiB of '[' nests deep
            return {}
        return meta if isinstance(meta, dict) else {}

    def _open(self, key: str, hints: ReadHints, progress: Any) -> BinaryIO:
        """Open a dataset for reading: a seekable binary file.

        ``progress`` may also be an `fsspec.callbacks.Callback`. The hints override the
        storage's read settings for this file: ``cache_type`` (``"blocks"``, `S3ReadFile`,
        or an fsspec cache name), ``block_size`` and ``cache_blocks``; ``access="random"``
        without a ``block_size`` reads blocks of at most `RANDOM_BLOCK_SIZE`.
        """
        cache_type = hints.cache_type or self.cache_type
        block_size = hints.block_size or (
            min(self.block_size, RANDOM_BLOCK_SIZE) if hints.access == "random" else self.block_size
        )
        cache_blocks = hints.cache_blocks or self.cache_blocks
        # Per-open settings may come from a repository's policy (serializer_args): checked.
        check_cache(cache_type, block_size, cache_blocks)
        progress = _as_progress(progress)
        kept = self._take(key)
        head, prefix = (kept.head, kept.data) if kept is not None else (self._head(key), None)
        # The size of what the server holds, not anything the object's writer declared:
        # readers allocate from it only for what they are asked to read.
        size = int(head["ContentLength"])
        if cache_type != "blocks":
            with self._translated("open", key), _missing_as(self.not_found(key)):
                f = self.fs.open(
                    self.full_path(key),
                    "rb",
                    block_size=block_size,
                    cache_type=cache_type,
                    size=size,
                )
            f = TranslatedFile(f, self.uri(key), self._secrets)
            if progress is None:
                return f  # type: ignore[return-value]
            return ProgressReader(f, size, progress)  # type: ignore[arg-type,return-value]
        return S3ReadFile(  # type: ignore[return-value]
            self.fs,
            self.bucket,
            self.object_key(key),
            size,
            head.get("ETag"),
            uri=self.uri(key),
            block_size=block_size,
            cache_blocks=cache_blocks,
            progress=progress,
            secrets=self._secrets,
            prefix=prefix or b"",
        )

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield stored keys under ``prefix`` in lexicographic order, page by page."""
        base = f"{self.prefix}/" if self.prefix else ""
        if prefix:
            self._s3_key(prefix)  # no object has a longer key: say so, as every call does
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base + prefix}
        while True:
            with self._translated("list", prefix):
                page = self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", ()):
                name = item["Key"][len(base) :]
                # butler's own keys (the policy, anything under .butler/) are never datasets
                if name and not is_reserved_key(name) and not name.endswith("/"):
                    yield name
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    # -- writing -----------------------------------------------------------------------

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
        """Yield a file to write; its bytes and metadata become one S3 object on success.

        The bytes are spooled (memory up to ``spool_size``, then a temporary file), then
        committed by one PUT or one completed multipart upload carrying the metadata.
        ``progress(bytes_sent, size)`` follows the upload.

        Raises
        ------
        DatasetExistsError
            If ``overwrite`` is false and the key exists at commit time.
        """
        self.object_key(key)  # validate before the serializer does any work
        with tempfile.SpooledTemporaryFile(max_size=self.spool_size, dir=self.tmpdir) as spool:
            writer = CountingWriter(spool, checksum=checksum)
            yield writer  # type: ignore[misc]
            meta = self.full_metadata(metadata, writer.size, writer.sha256)
            self._commit(key, spool, writer.size, meta, overwrite, progress)

    @contextlib.contextmanager
    def atomic_local_path(
        self,
        key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Iterator[str]:
        """Yield a local temporary path to write; on success it is uploaded atomically:
        one PUT (or multipart upload) straight from the file, never a second local copy."""
        self.object_key(key)
        fd, path = tempfile.mkstemp(prefix="butler-", suffix=key_suffix(key), dir=self.tmpdir)
        os.close(fd)
        try:
            yield path
            try:
                size = os.path.getsize(path)
                digest = file_sha256(path) if checksum else None
                meta = self.full_metadata(metadata, size, digest)
                with open(path, "rb") as source:
                    self._commit(key, source, size, meta, overwrite, progress)
            except FileNotFoundError as exc:
                raise StorageError(f"the serializer wrote nothing for {self.uri(key)!r}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _commit(
        self,
        key: str,
        source: Any,
        size: int,
        meta: Mapping[str, Any],
        overwrite: bool,
        progress: Any,
    ) -> None:
        header = json.dumps(dict(meta), separators=(",", ":"), ensure_ascii=True, default=str)
        if len(header) > MAX_METADATA_BYTES:
            raise StorageError(
                f"cannot write {self.uri(key)!r}: its metadata ({len(header)} bytes of JSON) "
                f"exceeds S3's {MAX_METADATA_BYTES}-byte user-metadata limit"
            )
        self._kept.slot = None  # bytes read before this write must not be handed out after it
        with self._translated("write", key):
            try:
                if self._calls.available and size <= self.multipart_threshold:
                    put_small(
                        self._calls,
                        self.bucket,
                        self.object_key(key),
                        source,
                        size,
                        extra={"Metadata": {METADATA_HEADER: header}},
                        create=not overwrite,
                    )
                    if progress is not None:
                        progress(size, size)
                    return
                self._sync(
                    upload,
                    self.fs,
                    self.bucket,
                    self.object_key(key),
                    source,
                    size,
                    extra={"Metadata": {METADATA_HEADER: header}},
                    create=not overwrite,
                    part_size=self.part_size,
                    multipart_threshold=self.multipart_threshold,
                    max_concurrency=self.max_concurrency,
                    progress=_as_progress(progress),
                )
            except FileExistsError:
                raise DatasetExistsError(f"a dataset already exists at {self.uri(key)!r}") from None

    def purge_debris(self, older_than: float = 3600.0) -> Sequence[str]:
        """Abort incomplete multipart uploads under the prefix started more than
        ``older_than`` seconds ago (left by killed writers; invisible to readers)."""
        import datetime

        limit = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=older_than)
        base = f"{self.prefix}/" if self.prefix else ""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
        removed = []
        while True:
            with self._translated("list uploads in"):
                page = self._call("list_multipart_uploads", **kwargs)
            for pending in page.get("Uploads", ()):
                if pending["Initiated"] < limit:
                    with self._translated("abort an upload in"):
                        self._call(
                            "abort_multipart_upload",
                            Bucket=self.bucket,
                            Key=pending["Key"],
                            UploadId=pending["UploadId"],
                        )
                    removed.append(f"incomplete upload of {pending['Key'][len(base) :]}")
            if not page.get("IsTruncated"):
                return removed
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def remove(self, key: str) -> None:
        self._kept.slot = None  # bytes read before the removal must not be handed out
        self._head(key, "remove")
        with self._translated("remove", key):
            self._call("delete_object", Bucket=self.bucket, Key=self.object_key(key))


def _parse_root(root: str) -> tuple[str, str]:
    text = str(root)
    if text.lower().startswith("s3://"):
        text = text[5:]
    bucket, _, prefix = text.partition("/")
    if "@" in bucket:
        # Credentials in a URL end up in shell histories, process lists and logs.
        shown = mask_url(f"s3://{text}", hide_user=True)
        raise StorageError(
            f"invalid S3 root {shown!r}: credentials in the root URL are not accepted; "
            f"pass key=/secret= (and token=), or set AWS_PROFILE or the AWS_* environment "
            f"variables"
        )
    prefix = prefix.strip("/")
    if not bucket or "//" in prefix or any(p in (".", "..") for p in prefix.split("/")):
        raise StorageError(
            f"invalid S3 root {root!r}: expected 's3://bucket' or 's3://bucket/prefix'"
        )
    return bucket, prefix


def _abridged(text: str, keep: int = 60) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]}"


@contextlib.contextmanager
def _missing_as(error: Exception) -> Iterator[None]:
    """Raise ``error`` for a `FileNotFoundError` (an object removed since its HEAD)."""
    try:
        yield
    except FileNotFoundError:
        raise error from None


def _get_first_sync(
    calls: SyncCalls, bucket: str, key: str, limit: int
) -> tuple[dict[str, Any], bytes]:
    """`_get_first` on botocore's synchronous client, from the caller's thread."""
    try:
        response = calls.call("get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
    except OSError as exc:
        if error_code(exc) != "InvalidRange":
            raise
        response = calls.call("get_object", Bucket=bucket, Key=key)
    body = response.pop("Body")
    try:
        data = body.read(_wanted(response, limit))
    finally:
        body.close()
    return _first_read(response, data, limit, f"s3://{bucket}/{key}")


async def _get_first(fs: S3FileSystem, bucket: str, key: str, limit: int) -> tuple[Any, bytes]:
    """GET the first ``limit`` bytes of an object: its headers (with ``ContentLength`` set to
    the whole object's size) and those bytes."""
    try:
        response = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}"
        )
    except OSError as exc:
        if error_code(exc) != "InvalidRange":
            raise
        # An empty object has no byte 0 (416): ask for all of it.
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    body = response.pop("Body")
    try:
        buffer = bytearray(_wanted(response, limit))
        got = await fill(body, memoryview(buffer))
    finally:
        body.close()
    return _first_read(response, bytes(buffer[:got]), limit, f"s3://{bucket}/{key}")


def _wanted(response: dict[str, Any], limit: int) -> int:
    """Bytes to read from a first-bytes GET's body: a server ignoring the range sends
    everything (200), so no more than asked for."""
    return min(int(response.get("ContentLength") or 0), limit)


def _first_read(
    response: dict[str, Any], data: bytes, limit: int, where: str
) -> tuple[dict[str, Any], bytes]:
    """Check a first-bytes GET got all it was sent (up to ``limit``) and set the response's
    ``ContentLength`` to the whole object's size (from ``Content-Range``)."""
    sent = int(response.get("ContentLength") or 0)
    if len(data) != min(sent, limit):
        raise OSError(5, f"short read: {len(data)} of {min(sent, limit)} bytes of {where}")
    total = str(response.get("ContentRange") or "").rpartition("/")[2]
    response["ContentLength"] = int(total) if total.isdigit() else sent
    return response, data
