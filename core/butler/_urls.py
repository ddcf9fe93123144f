"""Showing URLs without their secrets: the one masker every message, repr and URI uses.

A repository root may carry credentials in its userinfo (``postgresql://u:PASS@h/db``) or
in its query string (``?password=``, ``?token=``, ``?sslpassword=``...). Anything that
shows a root — errors, reprs, ``uri()``, ``butler info`` — passes it through `mask_url`.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "SECRET_QUERY_KEYS",
    "is_secret_key",
    "mask_url",
    "scheme_of",
    "split_file_uri",
    "strip_credentials",
]

#: URL query parameters known to carry a credential (libpq, PyMySQL, cloud IAM tokens).
SECRET_QUERY_KEYS = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "auth_token",
        "client_secret",
        "pass",
        "passphrase",
        "passwd",
        "password",
        "pwd",
        "secret",
        "sslpassword",
        "token",
    }
)

#: Anything else *named* like a secret is treated as one too (``db_password``, ``iam_token``).
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|credential|api_?key|private|auth", re.I)
_QUERY_ITEM = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def is_secret_key(name: str) -> bool:
    """True when a URL query parameter named ``name`` carries (or may carry) a credential."""
    return name.lower() in SECRET_QUERY_KEYS or bool(_SECRET_NAME.search(name))


def mask_url(text: str, *, hide_user: bool = False) -> str:
    """``text`` (a URL, parsed or not) with its userinfo password and the values of its
    secret query parameters replaced by ``***``; with ``hide_user`` the whole userinfo.

    Examples
    --------
    >>> mask_url("postgresql://u:pw@h/db?sslmode=require&password=pw2")
    'postgresql://u:***@h/db?sslmode=require&password=***'
    """
    text = _QUERY_ITEM.sub(
        lambda m: f"{m[1]}{m[2]}=***" if is_secret_key(m[2]) else m[0], str(text)
    )
    scheme, sep, rest = text.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if not sep or "@" not in authority:
        return text
    creds, _, after = authority.rpartition("@")
    tail = rest[len(authority) :]
    if hide_user:  # the user part is itself a credential (an S3 access key id)
        return f"{scheme}://***@{after}{tail}"
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{after}{tail}" if ":" in creds else text


def strip_credentials(url: str) -> str:
    """``url`` without its userinfo password and without secret query parameters (the
    user name stays): what a repository may record, for readers to add their own
    credentials to (``PGPASSWORD``, ``~/.pgpass``).

    Examples
    --------
    >>> strip_credentials("postgresql://u:pw@h/db?sslmode=require&password=pw2")
    'postgresql://u@h/db?sslmode=require'
    """
    base, sep, query = str(url).partition("?")
    if sep:
        kept = [
            item
            for item in re.split(r"[&;]", query)
            if item and not is_secret_key(item.split("=", 1)[0])
        ]
        base = f"{base}?{'&'.join(kept)}" if kept else base
    scheme, sep, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    if not sep or "@" not in authority:
        return base
    creds, _, after = authority.rpartition("@")
    return f"{scheme}://{creds.split(':', 1)[0]}@{after}{rest[len(authority) :]}"


#: Environment variable listing the dataset index URLs this reader connects to when a
#: repository's policy names them (whitespace-separated; credentials are ignored).
TRUSTED_INDEXES_VARIABLE = "BUTLER_TRUSTED_INDEXES"


def index_trusted(url: str) -> bool:
    """True when this reader's environment lists ``url`` (compared without credentials)
    in `TRUSTED_INDEXES_VARIABLE`: the reader, never the repository, decides which
    servers a Butler connects to."""
    listed = os.environ.get(TRUSTED_INDEXES_VARIABLE, "").split()
    wanted = strip_credentials(url)
    return any(strip_credentials(item) == wanted for item in listed)


def scheme_of(uri: str) -> str:
    """The lower-cased URI scheme of a root or file (``"file"`` for plain paths)."""
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def split_file_uri(uri: str) -> tuple[str, str]:
    """A file's URI or path split into (storage root, key): ``s3://b/d/x.fits`` →
    (``s3://b/d``, ``x.fits``); local paths are made absolute first."""
    import os

    uri = str(uri)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        root, _, key = rest.rpartition("/")
        return f"{scheme}://{root}", key
    path = os.path.abspath(os.path.expanduser(uri))
    return os.path.dirname(path), os.path.basename(path)
