"""Checking `S3Storage` options when the storage is built, not at the first request.

Without these checks a wrong option fails late and raw: ``block_size="abc"`` as a
`TypeError` in the middle of a read, ``cache_type="nonsense"`` as a `KeyError` at the first
open, a misspelt ``fs_kwargs`` / ``client_kwargs`` / ``config_kwargs`` key as a `TypeError`
from inside aiobotocore. Every check here raises `StorageError` naming the option, the value
(never a credential), what is accepted and what to do.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from butler import StorageError, mask_url

__all__ = [
    "check_bucket",
    "check_cache",
    "check_endpoint",
    "check_kwargs",
    "check_options",
    "credential_values",
]

#: botocore's own bucket-name rule (legacy buckets may have capitals and underscores).
_BUCKET = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")

#: `S3FileSystem` arguments butler sets itself: given in ``fs_kwargs`` they would clash.
_OWN_FS_ARGS = {
    "anon": "anon",
    "endpoint_url": "endpoint_url",
    "key": "key",
    "username": "key",
    "secret": "secret",
    "password": "secret",
    "token": "token",
    "client_kwargs": "client_kwargs",
    "config_kwargs": "config_kwargs",
    "s3_additional_kwargs": "s3_additional_kwargs",
    "requester_pays": "requester_pays",
    "max_concurrency": "max_concurrency",
    "profile": "profile",
    "skip_instance_cache": "",
    "use_listings_cache": "",
    "asynchronous": "",
    "loop": "",
}


def _fail(name: str, value: Any, expected: str) -> StorageError:
    return StorageError(f"invalid S3 storage option {name}={value!r}: expected {expected}")


def check_bucket(bucket: str, root: str) -> None:
    """Refuse bucket names S3 (and botocore) would refuse at the first request."""
    if not _BUCKET.match(bucket) or len(bucket) < 3:
        raise StorageError(
            f"invalid S3 root {root!r}: bucket name {bucket!r} is not valid (3 to 63 "
            f"characters, 255 for legacy buckets: letters, digits, '.', '-', '_')"
        )


def check_endpoint(endpoint_url: Any) -> None:
    """An ``http(s)://host[:port][/path]`` URL without credentials in it."""
    if endpoint_url is None:
        return
    if not isinstance(endpoint_url, str):
        raise _fail("endpoint_url", endpoint_url, "a URL string such as 'http://127.0.0.1:9000'")
    shown = mask_url(endpoint_url, hide_user=True)
    try:
        parts = re.match(r"^(https?)://([^/?#]+)", endpoint_url)
        netloc = parts.group(2) if parts else ""
    except (TypeError, ValueError):
        netloc = ""
    if not netloc or not netloc.rpartition("@")[2]:
        raise StorageError(
            f"invalid S3 storage option endpoint_url={shown!r}: expected an http:// or "
            f"https:// URL such as 'http://127.0.0.1:9000'"
        )
    if "@" in netloc:
        # S3 signs every request itself: a user:password in the URL can never work (the
        # HTTP client refuses to combine it with the signature) and would be displayed.
        raise StorageError(
            f"invalid S3 storage option endpoint_url={shown!r}: credentials in the endpoint "
            f"URL are not used by S3; pass key=/secret= (and token=), or set AWS_PROFILE or "
            f"the AWS_* environment variables"
        )


def _int(name: str, value: Any, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = f"an integer >= {minimum}" + (" or None" if optional else "")
        raise _fail(name, value, what)


def check_cache(cache_type: Any, block_size: Any, cache_blocks: Any) -> None:
    """Read-cache settings (storage defaults, or per-open overrides from a policy)."""
    from fsspec.caching import caches

    valid = sorted({"blocks", *(name for name in caches if isinstance(name, str))})
    if not isinstance(cache_type, str) or cache_type not in valid:
        raise _fail("cache_type", cache_type, f"one of {valid}")
    _int("block_size", block_size, 1)
    _int("cache_blocks", cache_blocks, 1)


def check_kwargs(name: str, value: Any, valid: set[str], own: Mapping[str, str] = {}) -> None:
    """``value`` is None or a mapping whose keys are among ``valid``."""
    if value is None:
        return
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _fail(name, type(value).__name__, "a dict of keyword arguments")
    clash = sorted(k for k in value if k in own)
    if clash:
        hints = sorted({f"{own[k]}=" for k in clash if own[k]})
        how = f"pass {', '.join(hints)} as butler options" if hints else "butler sets them"
        raise StorageError(f"S3 storage option {name} may not set {clash}: {how}")
    unknown = sorted(set(value) - valid)
    if unknown:
        raise StorageError(
            f"unknown key(s) {unknown} in S3 storage option {name}; valid keys: {sorted(valid)}"
        )


def _params(func: Callable[..., Any], skip: int = 1) -> set[str]:
    params = list(inspect.signature(func).parameters.values())[skip:]
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_options(options: Mapping[str, Any]) -> None:
    """Check every `S3Storage` option (types, ranges, and the keys of the dict options)."""
    check_endpoint(options["endpoint_url"])
    for name in ("key", "secret", "token", "profile", "region"):
        value = options[name]
        if value is not None and (not isinstance(value, str) or not value):
            shown = type(value).__name__ if name in ("key", "secret", "token") else value
            raise _fail(name, shown, "a non-empty string or None")
    for name in ("anon", "requester_pays"):
        if not isinstance(options[name], bool):
            raise _fail(name, options[name], "True or False")
    check_cache(options["cache_type"], options["block_size"], options["cache_blocks"])
    _int("prefetch_size", options["prefetch_size"], 0)
    _int("part_size", options["part_size"], 1)
    _int("multipart_threshold", options["multipart_threshold"], 0, optional=True)
    _int("max_concurrency", options["max_concurrency"], 1)
    _int("spool_size", options["spool_size"], 0)
    tmpdir = options["tmpdir"]
    if tmpdir is not None and (
        not isinstance(tmpdir, str | os.PathLike) or not os.path.isdir(tmpdir)
    ):
        raise _fail("tmpdir", tmpdir, "an existing directory")
    _check_library_kwargs(options)


def _check_library_kwargs(options: Mapping[str, Any]) -> None:
    extra = options["s3_additional_kwargs"]
    if extra is not None and not isinstance(extra, Mapping):
        # Any request parameter name is accepted: s3fs keeps, per call, those it applies to.
        raise _fail("s3_additional_kwargs", type(extra).__name__, "a dict of request parameters")
    given = {n: options[n] for n in ("client_kwargs", "config_kwargs", "fs_kwargs")}
    if not any(given.values()):
        for name, value in given.items():
            check_kwargs(name, value, set())
        return
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from botocore.config import Config
    from s3fs import S3FileSystem

    client = _params(AioSession._create_client, skip=2) - {"config"}
    check_kwargs("client_kwargs", given["client_kwargs"], client)
    config = set(Config.OPTION_DEFAULTS) | _params(AioConfig.__init__)
    check_kwargs("config_kwargs", given["config_kwargs"], config)
    fs = (
        _params(S3FileSystem.__init__)
        | _params(AioSession.__init__)
        | {"listings_expiry_time", "max_paths"}
    )
    check_kwargs("fs_kwargs", given["fs_kwargs"], fs - set(_OWN_FS_ARGS), _OWN_FS_ARGS)


def credential_values(options: Mapping[str, Any], *, ids: bool = False) -> tuple[str, ...]:
    """The secrets among the options (``secret``, ``token`` and their ``client_kwargs`` /
    ``fs_kwargs`` spellings), or with ``ids`` the access key ids."""
    own, library = (
        (("key",), ("aws_access_key_id", "username"))
        if ids
        else (("secret", "token"), ("aws_secret_access_key", "aws_session_token", "password"))
    )
    found = [options.get(n) for n in own]
    for extra in (options.get("client_kwargs"), options.get("fs_kwargs")):
        if isinstance(extra, Mapping):
            found += [extra.get(n) for n in library]
    return tuple(v for v in found if isinstance(v, str) and v)
