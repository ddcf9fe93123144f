"""Repositories on every storage the kit knows, created fresh for each test.

``posix`` and ``memory`` come with butler-core. ``s3`` needs butler-s3 and moto's server
(``pip install "moto[server]"``): the kit starts one moto process on a free loopback port
the first time it is needed and stops it when the interpreter exits. Set
``BUTLER_TEST_S3_ENDPOINT`` (plus ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) to use
another S3-compatible server instead. ``database`` needs butler-db and uses a SQLite file.
"""

from __future__ import annotations

import atexit
import os
import threading
import uuid
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .._butler import Butler
from .._registry import Registry
from ._moto import start_moto, stop_moto

__all__ = ["STORAGES", "RepositoryFactory", "moto_endpoint", "unavailable_reason"]

#: Storage types the kit can create repositories on, in test order.
STORAGES = ("posix", "memory", "s3", "database")

#: Credentials of the kit's own moto server (moto accepts any).
MOTO_KEY = "butler-testing-key"
MOTO_SECRET = "butler-testing-secret"

_moto_lock = threading.Lock()
_moto: dict[str, Any] = {}
_buckets: dict[str, str] = {}


def _have(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def unavailable_reason(storage: str) -> str | None:
    """Why the kit cannot test on ``storage`` here, or ``None`` when it can."""
    if storage in ("posix", "memory"):
        return None
    if storage == "s3":
        if not _have("butler_s3"):
            return "butler-s3 is not installed"
        if os.environ.get("BUTLER_TEST_S3_ENDPOINT"):
            return None
        if not (_have("moto") and _have("flask")):
            return 'moto\'s server is not installed (pip install "moto[server]")'
        return None
    if storage == "database":
        return None if _have("butler_db") else "butler-db is not installed"
    return f"the kit does not know storage {storage!r}; it knows {list(STORAGES)}"


def _stop_moto() -> None:
    proc = _moto.pop("proc", None)
    if proc is not None:
        stop_moto(proc)


def moto_endpoint(timeout: float = 30.0) -> tuple[str, dict[str, str]]:
    """URL and storage options of an S3 server for tests.

    ``BUTLER_TEST_S3_ENDPOINT`` when set; otherwise a moto server started (once per
    process) on a free loopback port and stopped at interpreter exit.

    Returns
    -------
    tuple
        ``(endpoint_url, {"endpoint_url": ..., "key": ..., "secret": ...})``.
    """
    external = os.environ.get("BUTLER_TEST_S3_ENDPOINT")
    if external:
        return external, {
            "endpoint_url": external,
            "key": os.environ.get("AWS_ACCESS_KEY_ID", MOTO_KEY),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY", MOTO_SECRET),
        }
    with _moto_lock:
        if "url" not in _moto:
            env = {"AWS_ACCESS_KEY_ID": MOTO_KEY, "AWS_SECRET_ACCESS_KEY": MOTO_SECRET}
            _moto["url"], _moto["proc"] = start_moto(env, timeout)
            atexit.register(_stop_moto)
        url = str(_moto["url"])
    return url, {"endpoint_url": url, "key": MOTO_KEY, "secret": MOTO_SECRET}


def _bucket(options: dict[str, str]) -> str:
    """A bucket on the endpoint, created once per process (repositories get prefixes)."""
    endpoint = options["endpoint_url"]
    with _moto_lock:
        if endpoint not in _buckets:
            _buckets[endpoint] = _create_bucket(options)
        return _buckets[endpoint]


def _create_bucket(options: dict[str, str]) -> str:
    import botocore.session  # s3fs depends on botocore: always there with butler-s3

    name = f"butler-kit-{uuid.uuid4().hex[:12]}"
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


@dataclass
class RepositoryFactory:
    """Creates fresh repositories on one storage type.

    Parameters
    ----------
    storage
        One of `STORAGES`.
    workdir
        A scratch directory (pytest's ``tmp_path``) for posix and SQLite repositories.
    registry
        Registry handed to every `Butler` (default: the process-wide one).
    """

    storage: str
    workdir: Path
    registry: Registry | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def root(self) -> str:
        """A new, empty repository root for this storage."""
        name = uuid.uuid4().hex[:10]
        if self.storage == "posix":
            return str(self.workdir / f"repo-{name}")
        if self.storage == "memory":
            return f"memory://butler-testing-{name}"
        if self.storage == "database":
            return f"sqlite:///{self.workdir / f'repo-{name}.db'}"
        if self.storage == "s3":
            _, self.options = moto_endpoint()
            return f"s3://{_bucket(self.options)}/repo-{name}"
        raise ValueError(unavailable_reason(self.storage))

    def create(self, **kwargs: Any) -> Butler:
        """`Butler.create` on a new root (keyword arguments as `Butler.create`)."""
        root = self.root()
        return Butler.create(root, registry=self.registry, **kwargs, **self.options)

    def files(self, butler: Butler) -> set[str]:
        """Every file under a posix repository (temporary ones included); empty otherwise."""
        if self.storage != "posix":
            return set()
        found: set[str] = set()
        for directory, _, names in os.walk(butler.storage.root):
            found.update(os.path.join(directory, n) for n in names)
        return found
