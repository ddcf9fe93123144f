"""Building the `s3fs.S3FileSystem` from storage options, and translating its errors.

Credentials given as options live only inside the file system object: they are never
written to the repository, shown by ``repr`` or quoted in an error message (`scrub`
removes them from any text taken from a library exception).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from butler import DatasetExistsError, StorageError

if TYPE_CHECKING:
    from s3fs import S3FileSystem

__all__ = ["CHECKSUM_CONFIG", "error_code", "make_filesystem", "translate_error"]

#: botocore >= 1.36 sends CRC checksums on every upload and validates them on download by
#: default; many S3-compatible servers (MinIO releases, Ceph, Garage, moto before 5.0.26...)
#: reject or mangle those requests. Only send them where the API requires them.
CHECKSUM_CONFIG: Mapping[str, str] = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}

_CREDENTIAL_HINT = (
    "pass key=/secret= (and token=) or profile= to Butler, set AWS_ACCESS_KEY_ID/"
    "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or use anon=True for a public bucket"
)


def make_filesystem(
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
    max_concurrency: int = 8,
    fs_kwargs: Mapping[str, Any] | None = None,
) -> S3FileSystem:
    """A private (uncached) `s3fs.S3FileSystem` configured the way fsspec users expect.

    Options left unset fall back to botocore's usual chain: ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared
    config files, ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_DEFAULT_REGION``,
    instance roles.

    The file system is never shared with other users of s3fs (``skip_instance_cache``) and
    keeps no listing cache, so another process's writes are seen at once.
    """
    import s3fs

    config = dict(CHECKSUM_CONFIG)
    config.update(config_kwargs or {})
    client = dict(client_kwargs or {})
    if region:
        client.setdefault("region_name", region)
    extra: dict[str, Any] = dict(fs_kwargs or {})
    if profile:
        extra["profile"] = profile
    return s3fs.S3FileSystem(
        anon=anon,
        key=key,
        secret=secret,
        token=token,
        endpoint_url=endpoint_url,
        client_kwargs=client,
        config_kwargs=config,
        s3_additional_kwargs=dict(s3_additional_kwargs or {}),
        requester_pays=requester_pays,
        max_concurrency=max_concurrency,
        skip_instance_cache=True,
        use_listings_cache=False,
        **extra,
    )


def scrub(text: str, secrets: tuple[str | None, ...]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def translate_error(
    exc: BaseException, action: str, where: str, secrets: tuple[str | None, ...] = ()
) -> Exception:
    """Map an s3fs / botocore / aiohttp exception to a butler error.

    `FileNotFoundError` is *not* translated here (callers know whether a missing key or a
    missing bucket is meant); everything else becomes a `StorageError` (or
    `DatasetExistsError` for a failed create-if-absent) whose message names the action and
    the location and never contains a secret.
    """
    from botocore import exceptions as bex

    detail = scrub(_detail(exc), secrets)
    if isinstance(exc, FileExistsError):
        return DatasetExistsError(f"a dataset already exists at {where!r}")
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return StorageError(
            f"cannot {action} {where!r}: no usable AWS credentials; {_CREDENTIAL_HINT}"
        )
    if isinstance(exc, bex.ProfileNotFound):
        return StorageError(f"cannot {action} {where!r}: {detail}")
    if isinstance(exc, PermissionError) or error_code(exc) in _AUTH_CODES:
        return StorageError(
            f"cannot {action} {where!r}: access denied ({detail}); check the credentials "
            f"and the bucket policy: {_CREDENTIAL_HINT}"
        )
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError) or _is_connect(exc):
        return StorageError(f"cannot {action} {where!r}: cannot reach the S3 endpoint ({detail})")
    if isinstance(exc, OSError) and exc.errno == errno.EINVAL and "re-condition" in detail:
        return StorageError(f"cannot {action} {where!r}: it changed while being read ({detail})")
    return StorageError(f"cannot {action} {where!r}: {detail}")


_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
    }
)


def error_code(exc: BaseException) -> str:
    for candidate in (exc, exc.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def _detail(exc: BaseException) -> str:
    code = error_code(exc)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    if code and code not in text:
        text = f"{code}: {text}"
    return text


def _is_connect(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(
        names & {"ClientConnectorError", "ServerDisconnectedError", "ConnectionRefusedError"}
    ) or isinstance(exc, ConnectionError | TimeoutError)


@contextlib.contextmanager
def translated(action: str, where: str, secrets: tuple[str | None, ...] = ()) -> Iterator[None]:
    """Context manager re-raising library errors through `translate_error`."""
    from aiohttp import ClientError as HTTPClientError
    from botocore.exceptions import BotoCoreError

    try:
        yield
    except (FileNotFoundError, StorageError, DatasetExistsError):
        raise
    # aiohttp errors escape while a response body streams (a connection reset mid-read).
    except (TimeoutError, OSError, BotoCoreError, HTTPClientError) as exc:
        raise translate_error(exc, action, where, secrets) from exc
