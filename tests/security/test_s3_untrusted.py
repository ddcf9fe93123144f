"""The S3 storage against a hostile repository or a careless caller (issue 12).

Each test names the hole it closes. Everything runs against moto's real S3 server on
loopback (tests/conftest.py); objects are planted behind butler's back with boto3.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

from butler import (
    Butler,
    ButlerError,
    DatasetNotFoundError,
    FormatError,
    InvalidDataIdError,
    StorageError,
)
from butler._storage import POLICY_KEY
from butler_s3 import S3Storage

SECRET = "s3-secret-must-not-leak-5b7e"
TOKEN = "FwoGZXIvYXdzEJr-session-token-must-not-leak+/9a1c="
KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def client(boto_client: Any) -> Any:
    """The shared boto3 client (tests/conftest.py), to look and plant behind butler's back."""
    return boto_client


def _policy(client: Any, bucket: str) -> bytes:
    return bytes(client.get_object(Bucket=bucket, Key=f"repo/{POLICY_KEY}")["Body"].read())


# -- hole 8: concurrent policy changes --------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from butler import Butler
    root, endpoint, worker, go = sys.argv[1:5]
    b = Butler(root, endpoint_url=endpoint)
    open(f"{go}.ready{worker}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.002)
    for i in range(8):
        b.register_dataset_type(f"w{worker}_t{i}", dict, "json", dimensions={"visit": int})
    b.close()
    """
)


@pytest.mark.slow
def test_hole8_four_processes_define_32_dataset_types(
    s3_repo: Butler, s3_bucket: str, s3_credentials: dict[str, str], tmp_path: Path
) -> None:
    go = str(tmp_path / "go")
    root = f"s3://{s3_bucket}/repo"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, root, s3_credentials["endpoint_url"], str(w), go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for w in range(4)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(Path(f"{go}.ready{w}").exists() for w in range(4)):
            assert all(p.poll() is None for p in workers), [p.communicate() for p in workers]
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.01)
        Path(go).touch()  # all four start defining at the same moment
        outputs = [p.communicate(timeout=120) for p in workers]
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in workers] == [0] * 4, [e.decode()[-2000:] for _, e in outputs]
    with Butler(root, **s3_credentials) as b:
        names = set(b.dataset_types)
    assert names == {f"w{w}_t{i}" for w in range(4) for i in range(8)}


def test_hole8_policy_change_retries_after_a_concurrent_write(
    s3_repo: Butler, s3_bucket: str, client: Any
) -> None:
    """A writer that changed the policy between our read and our write is not overwritten:
    the conditional PUT fails and the change is applied again to the new policy."""
    calls: list[dict[str, Any] | None] = []

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        calls.append(current)
        assert current is not None
        if len(calls) == 1:  # someone else commits first, behind butler's back
            theirs = dict(current, intruder={"from": "another host"})
            client.put_object(
                Bucket=s3_bucket,
                Key=f"repo/{POLICY_KEY}",
                Body=json.dumps(theirs).encode(),  # JSON is YAML
            )
        return dict(current, ours={"from": "this process"})

    stored = s3_repo.storage.update_policy(change)
    assert len(calls) == 2
    assert "intruder" not in calls[0] and "intruder" in calls[1]
    final = s3_repo.storage.read_policy()
    assert final == stored
    assert final["intruder"] == {"from": "another host"}
    assert final["ours"] == {"from": "this process"}


def test_hole8_policy_creation_is_create_if_absent(
    s3_bucket: str, client: Any, s3_credentials: dict[str, str]
) -> None:
    """Two creators of a repository: the second sees the first one's policy."""
    storage = S3Storage(f"s3://{s3_bucket}/repo", **s3_credentials)
    seen: list[Any] = []

    def create(current: dict[str, Any] | None) -> dict[str, Any] | None:
        seen.append(current)
        if len(seen) == 1:
            client.put_object(Bucket=s3_bucket, Key=f"repo/{POLICY_KEY}", Body=b"first: 1\n")
        return {"second": 2} if current is None else None

    assert storage.update_policy(create) == {"first": 1}
    assert seen == [None, {"first": 1}]
    assert _policy(client, s3_bucket) == b"first: 1\n"


def test_hole8_endless_conflicts_end_in_a_storage_error(
    s3_repo: Butler, s3_bucket: str, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from butler_s3 import _cas

    monkeypatch.setattr(_cas, "ATTEMPTS", 3)
    monkeypatch.setattr(_cas, "BACKOFF_BASE", 0.001)
    rounds = []

    def change(current: dict[str, Any] | None) -> dict[str, Any]:
        rounds.append(1)
        client.put_object(
            Bucket=s3_bucket, Key=f"repo/{POLICY_KEY}", Body=f"n: {len(rounds)}\n".encode()
        )
        return {"lost": True}

    with pytest.raises(StorageError, match=r"policy .*butler\.yaml'.*3 attempts in a row lost"):
        s3_repo.storage.update_policy(change)
    assert len(rounds) == 3
    assert _policy(client, s3_bucket) == b"n: 3\n"


def test_hole8_oversized_policy_is_refused_before_reading_it(
    s3_repo: Butler, s3_bucket: str, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from butler_s3 import _cas

    monkeypatch.setattr(_cas, "MAX_POLICY_BYTES", 4096)
    client.put_object(Bucket=s3_bucket, Key=f"repo/{POLICY_KEY}", Body=b"#" * 5000)
    with pytest.raises(FormatError, match=r"5000 bytes, more than the 4096"):
        s3_repo.storage.read_policy()


# -- hole 15: no secret or token in any log record --------------------------------------

_LIBRARY_LOGGERS = ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "aiohttp")


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append((record.name, self.format(record)))


@pytest.fixture
def every_record(caplog: pytest.LogCaptureFixture) -> Iterator[_Everything]:
    """Every log record of the process, at DEBUG, formatted (root logger + libraries)."""
    handler = _Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in _LIBRARY_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_hole15_no_secret_or_token_in_any_log_record(
    s3_bucket: str, s3_endpoint: str, every_record: _Everything, caplog: pytest.LogCaptureFixture
) -> None:
    # moto (without IAM) accepts any key, secret and session token; the token still goes
    # out in every request's X-Amz-Security-Token header and signed canonical request.
    options = {"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET, "token": TOKEN}
    root = f"s3://{s3_bucket}/repo"
    with Butler.create(root, **options) as b:
        b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
        b.put({"gain": 1.5}, "cfg", visit=1)
        assert b.get("cfg", visit=1) == {"gain": 1.5}
        assert list(b.datasets("cfg")) == [{"visit": 1}]
        b.remove("cfg", visit=1)
        with pytest.raises(DatasetNotFoundError):
            b.get("cfg", visit=1)
        # A presigned URL carries the credential and token in its query: logged by hand.
        url = b.storage.fs.sign(b.storage.full_path("cfg/1.json"))
        assert "x-amz-security-token=" in url.lower()
        logging.getLogger("botocore.endpoint").debug("presigned-url %s", url)
        logging.getLogger("s3fs").debug("headers %r", {"Authorization": f"Credential={KEY}/x"})
    names = {name for name, _ in every_record.texts}
    assert {"botocore.endpoint", "botocore.auth"} <= names, names  # DEBUG really was on
    for secret in (SECRET, TOKEN, KEY):
        leaks = [(n, t[:300]) for n, t in every_record.texts if secret in t]
        assert not leaks, leaks
    caplogged = [r.getMessage() for r in caplog.records]
    assert not [m for m in caplogged if SECRET in m or TOKEN in m]
    presigned = [t.lower() for _, t in every_record.texts if "presigned-url" in t]
    assert presigned and all("x-amz-security-token=***" in t for t in presigned)
    assert any("x-amz-security-token:***" in t.lower() for _, t in every_record.texts)


def test_hole15_redaction_of_headers_and_urls() -> None:
    from butler_s3._redact import redact

    text = (
        "headers={'Authorization': b'AWS4-HMAC-SHA256 Credential=ASIAXXXXXXXXXXXXXXXX/2026/"
        "us-east-1/s3/aws4_request, SignedHeaders=host, Signature=abc', "
        "'X-Amz-Security-Token': b'tok+en/1=='}\n"
        "x-amz-security-token:tok+en/1==\n"
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAXXXXXXXXXXXXXXXX%2F2026&"
        "X-Amz-Security-Token=tok%2Ben%2F1%3D%3D&X-Amz-Signature=deadbeef"
    )
    clean = redact(text, ["tok+en/1=="])
    for needle in ("tok+en", "tok%2Ben", "ASIAX", "AKIAX", "deadbeef", "Signature=abc"):
        assert needle not in clean, clean
    assert "'Authorization': b'***'" in clean and "X-Amz-Signature=***" in clean


# -- hole 17: misspelt and mistyped options ---------------------------------------------


def test_hole17_misspelt_option_lists_the_valid_ones(s3_bucket: str, s3_endpoint: str) -> None:
    with pytest.raises(StorageError) as info:
        Butler(f"s3://{s3_bucket}/repo", endpont_url=s3_endpoint)
    message = str(info.value)
    assert "unknown option(s) ['endpont_url']" in message
    assert "'endpoint_url'" in message and "'fs_kwargs'" in message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"block_size": "abc"}, "block_size='abc': expected an integer >= 1"),
        ({"block_size": 0}, "block_size=0: expected an integer >= 1"),
        ({"part_size": -5}, "part_size=-5: expected an integer >= 1"),
        ({"cache_type": "nonsense"}, "cache_type='nonsense': expected one of ["),
        ({"cache_blocks": True}, "cache_blocks=True: expected an integer >= 1"),
        ({"max_concurrency": 0}, "max_concurrency=0: expected an integer >= 1"),
        ({"multipart_threshold": -1}, "multipart_threshold=-1: expected an integer >= 0"),
        ({"spool_size": "64MiB"}, "spool_size='64MiB': expected an integer >= 0"),
        ({"anon": "no"}, "anon='no': expected True or False"),
        ({"region": 5}, "region=5: expected a non-empty string"),
        ({"tmpdir": "/no/such/dir"}, "tmpdir='/no/such/dir': expected an existing directory"),
        ({"endpoint_url": "not a url"}, "endpoint_url='not a url': expected an http://"),
        ({"fs_kwargs": {"nonsense": 1}}, "unknown key(s) ['nonsense'] in S3 storage option fs_k"),
        ({"fs_kwargs": {"anon": True}}, "fs_kwargs may not set ['anon']: pass anon= as"),
        ({"client_kwargs": {"regoin_name": "x"}}, "['regoin_name'] in S3 storage option client_"),
        ({"config_kwargs": {"retires": {}}}, "['retires'] in S3 storage option config_kwargs"),
        ({"config_kwargs": ["retries"]}, "config_kwargs='list': expected a dict"),
    ],
)  # fmt: skip
def test_hole17_bad_option_values_fail_at_construction(
    s3_bucket: str, options: dict[str, Any], expected: str
) -> None:
    """Refused when the storage is built (no request sent), as StorageError naming the value."""
    with pytest.raises(StorageError) as info:
        S3Storage(f"s3://{s3_bucket}/repo", **options)
    assert expected in str(info.value)


def test_hole17_read_settings_from_a_policy_are_checked(s3_repo: Butler) -> None:
    """Per-open read settings (serializer arguments of a repository's policy) are checked."""
    storage = s3_repo.storage
    storage.write_bytes("a/1.bin", b"x" * 10)
    for bad, expected in (
        ({"cache_type": "nonsense"}, "cache_type='nonsense'"),
        ({"block_size": -1}, "block_size=-1"),
        ({"cache_blocks": "many"}, "cache_blocks='many'"),
    ):
        with pytest.raises(StorageError, match=expected):
            storage.open("a/1.bin", **bad)
    with pytest.raises(StorageError, match="only reads"):
        storage.open("a/1.bin", "wb")


def test_hole17_cli_names_the_option(s3_bucket: str, s3_credentials: dict[str, str]) -> None:
    from click.testing import CliRunner

    from butler._cli import main

    result = CliRunner().invoke(
        main,
        ["info", f"s3://{s3_bucket}/repo", "-O", f"endpoint_url={s3_credentials['endpoint_url']}",
         "-O", "block_size=abc"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "block_size='abc': expected an integer >= 1" in result.output + str(result.exception)


# -- hole 4: butler's own keys on S3 ----------------------------------------------------


def test_hole4_list_never_reports_reserved_keys(
    s3_repo: Butler, s3_bucket: str, client: Any
) -> None:
    for key in (".butler/lock", ".butler/index/1", ".butler", "data/1.json"):
        client.put_object(Bucket=s3_bucket, Key=f"repo/{key}", Body=b"{}")
    assert list(s3_repo.storage.list()) == ["data/1.json"]
    assert list(s3_repo.storage.list(".butler")) == []


def test_hole4_a_data_id_cannot_replace_or_remove_the_policy(
    s3_repo: Butler, s3_bucket: str, client: Any
) -> None:
    before = _policy(client, s3_bucket)
    with pytest.raises(ButlerError, match=r"butler\.yaml"):  # refused when defined...
        s3_repo.register_dataset_type("doc", dict, "config", template="{name}.yaml")
    assert _policy(client, s3_bucket) == before
    # ... and when a policy written by someone else holds such a template.
    s3_repo.register_dataset_type("doc", dict, "config", template="docs/{name}.yaml")

    def plant(policy: dict[str, Any] | None) -> dict[str, Any]:
        assert policy is not None
        policy["dataset_types"]["doc"]["template"] = "{name}.yaml"
        return policy

    s3_repo.storage.update_policy(plant)
    before = _policy(client, s3_bucket)
    root = f"s3://{s3_bucket}/repo"
    with Butler(root, **s3_repo.storage.options) as b:
        assert b.dataset_types["doc"].template == "{name}.yaml"
        with pytest.raises(InvalidDataIdError, match=r"'butler\.yaml', which is reserved"):
            b.put({"dataset_types": {}}, "doc", name="butler", overwrite=True)
        with pytest.raises(InvalidDataIdError, match=r"'butler\.yaml', which is reserved"):
            b.remove("doc", name="butler")
        assert list(b.datasets("doc")) == []
    assert _policy(client, s3_bucket) == before
    assert "doc" in Butler(root, **s3_repo.storage.options).dataset_types


# -- hole 14: credentials in URLs -------------------------------------------------------


def test_hole14_credentials_in_the_root_url_are_refused_and_masked(
    s3_bucket: str, s3_endpoint: str
) -> None:
    from click.testing import CliRunner

    from butler._cli import main

    root = f"s3://{KEY}:{SECRET}@{s3_bucket}/repo"
    for call in (
        lambda: Butler.create(root, endpoint_url=s3_endpoint),
        lambda: Butler(root, endpoint_url=s3_endpoint),
        lambda: S3Storage(root),
    ):
        with pytest.raises(StorageError) as info:
            call()
        message = str(info.value)
        assert f"'s3://***@{s3_bucket}/repo'" in message and "pass key=/secret=" in message
        assert SECRET not in message + repr(info.value) and KEY not in message
    result = CliRunner().invoke(main, ["info", root, "-O", f"endpoint_url={s3_endpoint}"])
    shown = result.output + str(result.exception)
    assert result.exit_code != 0 and "s3://***@" in shown and SECRET not in shown


def test_hole14_credentials_in_the_endpoint_url_are_refused_and_masked(
    s3_bucket: str, s3_endpoint: str
) -> None:
    endpoint = s3_endpoint.replace("http://", f"http://user:{SECRET}@")
    with pytest.raises(StorageError) as info:
        Butler(f"s3://{s3_bucket}/repo", endpoint_url=endpoint, key=KEY, secret=SECRET)
    message = str(info.value)
    assert "endpoint_url='http://***@127.0.0.1:" in message
    assert "credentials in the endpoint URL are not used by S3" in message
    assert SECRET not in message and "user" not in message


def test_hole14_repr_uri_and_errors_show_no_token(s3_bucket: str, s3_endpoint: str) -> None:
    options = {"endpoint_url": s3_endpoint, "key": KEY, "secret": SECRET, "token": TOKEN}
    with Butler.create(f"s3://{s3_bucket}/repo", **options) as b:
        shown = [repr(b), repr(b.storage), b.storage.uri(), b.storage.uri("a/b.json"),
                 str(b.storage.options)]  # fmt: skip
        for call in (lambda: b.storage.read_bytes("missing"), lambda: b.storage.open("x", "w")):
            with pytest.raises(ButlerError) as info:
                call()
            shown += [str(info.value), repr(info.value)]
    assert not [t for t in shown if SECRET in t or TOKEN in t]


# -- hole 16: hostile inputs raise butler errors ----------------------------------------


def test_hole16_keys_over_1024_bytes_are_refused_on_every_call(s3_repo: Butler) -> None:
    storage = s3_repo.storage
    for key in ("x" * 1100, "é" * 520, "d/" + "🛰" * 260):
        for call in (
            lambda k: storage.write_bytes(k, b"1"),
            storage.exists,
            storage.read_bytes,
            storage.metadata,
            storage.remove,
            lambda k: list(storage.list(k)),
        ):
            with pytest.raises(InvalidDataIdError, match=r"S3 keys have at most 1024 bytes"):
                call(key)
    # Through a template: six legal 190-character values make a 1,160-byte key.
    s3_repo.register_dataset_type("deep", dict, "json", template="{a}/{b}/{c}/{d}/{e}/{f}.json")
    data_id = {name: "v" * 190 for name in "abcdef"}
    for call in (
        lambda: s3_repo.put({"x": 1}, "deep", **data_id),
        lambda: s3_repo.get("deep", **data_id),
        lambda: s3_repo.exists("deep", **data_id),
    ):
        with pytest.raises(InvalidDataIdError, match=r"makes an S3 key of 1\d\d\d bytes"):
            call()
    assert list(storage.list()) == []


def test_hole16_unencodable_key(s3_repo: Butler) -> None:
    with pytest.raises(InvalidDataIdError, match="not valid UTF-8"):
        s3_repo.storage.write_bytes("a/\udc80.bin", b"1")


@pytest.mark.parametrize("bucket", ["Bad_Bucket!", "ab", "has space", "x" * 300])
def test_hole16_invalid_bucket_names(bucket: str, s3_credentials: dict[str, str]) -> None:
    for call in (
        lambda: Butler.create(f"s3://{bucket}/repo", **s3_credentials),
        lambda: Butler(f"s3://{bucket}/repo", **s3_credentials),
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert f"bucket name {bucket!r} is not valid" in str(info.value)


def test_hole16_object_removed_between_head_and_get(
    s3_repo: Butler, s3_bucket: str, client: Any
) -> None:
    storage = s3_repo.storage
    # A small object: the GET that read the metadata also read the bytes, handed to the
    # next open; they are the bytes of the version whose metadata was returned (one
    # response: no window in which another version can slip in).
    storage.write_bytes("a/0.bin", b"w" * 100)
    storage.metadata("a/0.bin")
    client.delete_object(Bucket=s3_bucket, Key="repo/a/0.bin")
    assert storage.read_bytes("a/0.bin") == b"w" * 100
    # A large one: the rest is read under If-Match of that version; it is gone.
    big = storage.prefetch_size + 1000
    storage.write_bytes("a/1.bin", b"x" * big)
    storage.metadata("a/1.bin")  # Butler.get's metadata read, handed to the next open
    client.delete_object(Bucket=s3_bucket, Key="repo/a/1.bin")
    with pytest.raises(DatasetNotFoundError, match="removed while being read"):
        storage.read_bytes("a/1.bin")
    storage.write_bytes("a/2.bin", b"y" * 100)
    with storage.open("a/2.bin", cache_type="readahead") as f:
        client.delete_object(Bucket=s3_bucket, Key="repo/a/2.bin")
        with pytest.raises(ButlerError):
            f.read()


def test_hole16_hostile_metadata_header(s3_repo: Butler, s3_bucket: str, client: Any) -> None:
    """2 KiB of '[' in x-amz-meta-butler nests deeper than json can parse: ignored, not a
    RecursionError; a lying ``size`` never decides what is allocated."""
    s3_repo.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    for n, header in ((1, "[" * 1900), (2, json.dumps({"size": 10**15}))):
        client.put_object(
            Bucket=s3_bucket, Key=f"repo/cfg/{n}.json", Body=b'{"a": 1}',
            Metadata={"butler": header},
        )  # fmt: skip
        assert s3_repo.get("cfg", visit=n) == {"a": 1}
    assert s3_repo.storage.metadata("cfg/1.json") == {}
