"""Keeping S3 credentials out of log records and displayed URLs.

botocore logs, at DEBUG, every request it sends: the headers (``Authorization`` with the
access key id, ``X-Amz-Security-Token`` with the session token), the canonical request it
signs (the token again) and presigned URLs (``X-Amz-Credential``, ``X-Amz-Security-Token``).
A user who turns DEBUG on to diagnose a slow read must not find a token in their log files.

`install_log_redaction` adds one process-wide `logging.Filter` (`REDACTOR`) to every logger
of the libraries an `S3Storage` drives (botocore, aiobotocore, boto3, s3fs, fsspec,
aiohttp, urllib3, asyncio) and to butler-s3's own. A filter attached to a logger sees the
records *created* by that logger (not those of its children), so it is attached to each
existing logger under those names; the libraries create their loggers when imported, and
`S3Storage` imports them before installing. The filter rewrites a record's formatted
message (and traceback text) with:

* every credential value a live storage was given (``secret``, ``token``, ``key``, their
  URL-encoded forms) and the ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` values of
  the environment, replaced by ``***``;
* the values of the ``Authorization`` and ``X-Amz-Security-Token`` headers, and the
  ``X-Amz-Credential`` / ``X-Amz-Security-Token`` / ``X-Amz-Signature`` query parameters,
  whatever credential chain produced them;
* anything shaped like an AWS access key id (``AKIA...``, ``ASIA...``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["LOGGER_PREFIXES", "REDACTOR", "install_log_redaction", "redact"]

#: Loggers (and their children) that can see request headers, URLs or credentials.
LOGGER_PREFIXES = (
    "aiobotocore",
    "aiohttp",
    "asyncio",
    "boto3",
    "botocore",
    "butler_s3",
    "fsspec",
    "s3fs",
    "s3transfer",
    "urllib3",
)

MASK = "***"

_HEADER_NAMES = r"authorization|x-amz-security-token|x-amz-credential"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A header in a dict repr: 'Authorization': b'AWS4-HMAC-SHA256 Credential=...'
    (
        re.compile(rf"""((?:['"])(?:{_HEADER_NAMES})['"]\s*:\s*b?)(['"])(?:(?!\2).)*\2""", re.I),
        rf"\1\2{MASK}\2",
    ),
    # A header line of a canonical request or a raw dump: x-amz-security-token:VALUE
    (re.compile(rf"(?im)^((?:{_HEADER_NAMES})\s*[:=]\s*)\S.*$"), rf"\1{MASK}"),
    # Query parameters of presigned URLs, SigV4 and SigV2 (and Credential= inside an
    # Authorization value).
    (
        re.compile(
            r"((?:X-Amz-)?(?:Security-Token|Credential|Signature)=|AWSAccessKeyId=)"
            r"[^&\s'\",]+",
            re.I,
        ),
        rf"\1{MASK}",
    ),
    # Access key ids wherever they appear (long-term AKIA..., temporary ASIA...).
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{12,}\b"), MASK),
)


def _variants(value: str) -> set[str]:
    """A credential and the encoded forms it takes in URLs and headers."""
    return {value, quote(value, safe=""), quote(value, safe="/")}


def redact(text: str, values: Iterable[str] = ()) -> str:
    """``text`` with credential values, credential headers and access key ids masked."""
    # Longest first, so a value containing another is replaced whole.
    for value in sorted({v for s in values if s for v in _variants(s)}, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class _Redactor(logging.Filter):
    """Rewrites log records so that no credential of a live storage appears in them."""

    def __init__(self) -> None:
        super().__init__()
        self._owners: weakref.WeakKeyDictionary[object, tuple[str, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def add(self, owner: object, values: Iterable[str | None]) -> None:
        """Redact ``values`` for as long as ``owner`` (a storage) lives."""
        kept = tuple(v for v in values if isinstance(v, str) and v)
        with self._lock:
            self._owners[owner] = kept

    def values(self) -> set[str]:
        with self._lock:
            found = {v for kept in self._owners.values() for v in kept}
        for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            if os.environ.get(name):
                found.add(os.environ[name])
        return found

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: let logging report it as it always does
            return True
        values = self.values()
        clean = redact(message, values)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, values)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, values)
        return True


#: The one filter installed on every logger named by `LOGGER_PREFIXES`.
REDACTOR = _Redactor()


def install_log_redaction(owner: object, values: Iterable[str | None]) -> None:
    """Redact ``values`` (while ``owner`` lives) and credential headers from the records
    of every logger under `LOGGER_PREFIXES` that exists now (idempotent)."""
    REDACTOR.add(owner, values)
    names = list(logging.Logger.manager.loggerDict)
    for name in (*LOGGER_PREFIXES, *names):
        if name.split(".", 1)[0] not in LOGGER_PREFIXES:
            continue
        logger = logging.getLogger(name)
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)
