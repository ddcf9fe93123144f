"""botocore's synchronous client for the calls that are one request.

s3fs runs every request on its event loop in another thread: a call from the caller's
thread is handed to the loop (a socket write to wake it), runs through aiobotocore and
aiohttp, and its result is handed back. For one small request that hand-off and the async
stack cost about as much CPU as the request itself (measured with ``bench/bulk.py``: a
1 KiB get took 1.2 ms more than one boto3 ``get_object``). The calls that are one request
(a ranged GET of a dataset's first bytes, a small PUT, HEAD, DELETE, a listing page) go
through botocore's own synchronous client instead, built from the same configuration s3fs
builds its client from; the calls that gain from concurrency (multipart uploads, the large
ranged reads of `S3ReadFile`, the policy's conditional requests) stay on s3fs.

Both clients send the same requests with the same credentials: the sync client is made
only when s3fs owns its botocore session (a caller who hands s3fs a session of its own,
through ``fs_kwargs={"session": ...}``, keeps every request on it).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from s3fs import S3FileSystem

__all__ = ["SyncCalls", "commit_lock"]

#: botocore's default pool holds 10 connections; `get_many` runs more threads than that.
POOL_CONNECTIONS = 64

#: Bodies up to this size are sent with their headers. botocore asks for ``Expect:
#: 100-continue`` on every PUT body and waits for the server's ``100 Continue`` before
#: sending it: a second round trip, there to spare sending a large body a server refuses.
#: For a small body that wait costs more than sending it (on a 20 ms link, 40 ms per put
#: instead of 20 ms).
EXPECT_CONTINUE_ABOVE = 1 << 20

# Striped per-key locks serialising conditional commits made by this process. S3 itself
# makes If-None-Match atomic, but some S3-compatible servers (moto among them) check and
# then write without a lock: between threads of one process this guarantees one winner
# whatever the server does. Threading locks, so that the synchronous PUT and the
# multipart completion on s3fs's event loop (`butler_s3._upload`) share them.
_N_STRIPES = 64
_STRIPES = [threading.Lock() for _ in range(_N_STRIPES)]


def commit_lock(bucket: str, key: str) -> threading.Lock:
    """The lock every conditional commit of ``bucket/key`` in this process holds."""
    return _STRIPES[hash((bucket, key)) % _N_STRIPES]


class SyncCalls:
    """One-request S3 calls on botocore's synchronous client (made on first use).

    Parameters
    ----------
    fs : s3fs.S3FileSystem
        The storage's file system: its credentials, endpoint, client and config options,
        request-wide parameters (``requester_pays``, ``s3_additional_kwargs``) are used.
    """

    def __init__(self, fs: S3FileSystem) -> None:
        self._fs = fs
        self._client: BaseClient | None = None
        self._helper: Any = None
        self._lock = threading.Lock()
        #: False when s3fs was handed a session: every call then goes through s3fs.
        self.available = bool(getattr(fs, "_session_is_owned", False))

    @property
    def client(self) -> BaseClient:
        """The botocore client (created, thread-safely, on first use)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    from botocore.exceptions import ClientError
                    from s3fs.errors import translate_boto_error
                    from s3fs.utils import ParamKwargsHelper

                    # Kept, not imported on every call: a call is a hot path.
                    self._client_error: type[Exception] = ClientError
                    self._translate = translate_boto_error
                    self._client = _make_client(self._fs)
                    self._helper = ParamKwargsHelper(self._client)
                client = self._client
        return client

    def call(self, method: str, **kwargs: Any) -> Any:
        """``client.<method>(**kwargs)`` with s3fs's request-wide parameters, errors
        translated as s3fs translates them (`FileNotFoundError`, `FileExistsError` for a
        refused ``If-None-Match``, `PermissionError`, `OSError` with the S3 code...)."""
        client = self.client  # first: makes the client, keeps the error types
        fs = self._fs
        params = dict(fs.s3_additional_kwargs)
        params.update(fs.req_kw)
        params.update(kwargs)
        params = self._helper.filter_dict(method, params)
        try:
            return getattr(client, method)(**params)
        except self._client_error as exc:
            raise self._translate(exc) from exc

    def close(self) -> None:
        """Close the client's connections (a later call reconnects)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _make_client(fs: S3FileSystem) -> BaseClient:
    """A botocore S3 client configured exactly as `s3fs.S3FileSystem.set_session`
    configures its aiobotocore one (keys, token, endpoint, ``use_ssl``, ``anon``,
    ``client_kwargs``, ``config_kwargs``, session kwargs such as ``profile``)."""
    import botocore.config
    import botocore.session

    client_kwargs = dict(fs.client_kwargs)
    init_kwargs = {
        "aws_access_key_id": fs.key,
        "aws_secret_access_key": fs.secret,
        "aws_session_token": fs.token,
        "endpoint_url": fs.endpoint_url,
    }
    init_kwargs = {
        k: v for k, v in init_kwargs.items() if v is not None and v != client_kwargs.get(k)
    }
    if "use_ssl" not in client_kwargs:
        init_kwargs["use_ssl"] = fs.use_ssl
    config_kwargs = fs._prepare_config_kwargs()
    config_kwargs.setdefault("max_pool_connections", POOL_CONNECTIONS)
    if fs.anon:
        from botocore import UNSIGNED

        secret_names = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
        init_kwargs = {k: v for k, v in init_kwargs.items() if k not in secret_names}
        client_kwargs = {k: v for k, v in client_kwargs.items() if k not in secret_names}
        config_kwargs["signature_version"] = UNSIGNED
    session = botocore.session.Session(**fs.kwargs)
    client = session.create_client(
        "s3", config=botocore.config.Config(**config_kwargs), **init_kwargs, **client_kwargs
    )
    # On the signed request: SigV4 never signs Expect, so dropping it keeps the signature.
    client.meta.events.register("before-send.s3.PutObject", _small_bodies_at_once)
    return client


def _small_bodies_at_once(request: Any, **_: Any) -> None:
    """Drop ``Expect: 100-continue`` from a PUT whose body is at most
    `EXPECT_CONTINUE_ABOVE` bytes: one round trip instead of two."""
    from botocore.utils import determine_content_length

    if "Expect" in request.headers:
        size = determine_content_length(request.body)
        if size is not None and size <= EXPECT_CONTINUE_ABOVE:
            del request.headers["Expect"]
