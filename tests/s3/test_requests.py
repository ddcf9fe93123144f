"""Requests per call on S3, counted on the wire (a botocore hook on the storage's own clients,
against the moto server): one per small put, one per get, one conditional GET per policy
re-read; and what the savings must not cost (one winner among concurrent creators, the
bytes read are those whose metadata was returned)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from butler import Butler, DatasetExistsError, DatasetNotFoundError, StorageError
from butler.storage import POLICY_KEY

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")


class Requests:
    """Every HTTP request the storage's client sends: ``(method, key, headers)``."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.log: list[tuple[str, str, dict[str, str]]] = []
        self.statuses: list[int] = []
        for client in storage.botocore_clients():
            client.meta.events.register("before-send.s3", self._sent)
            client.meta.events.register("after-call.s3", self._answered)

    def _sent(self, request: Any, **kwargs: Any) -> None:
        key = request.url.split("?")[0].split(f"/{self.storage.bucket}/", 1)[-1]
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else str(v)
            for k, v in request.headers.items()
            if k.lower().startswith(("if-", "range"))
        }
        self.log.append((request.method, key, headers))

    def _answered(self, http_response: Any, **kwargs: Any) -> None:
        self.statuses.append(int(http_response.status_code))

    def clear(self) -> None:
        self.log.clear()
        self.statuses.clear()

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.log]


@pytest.fixture
def repo(s3_repo: Butler) -> Butler:
    s3_repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    s3_repo.register_dataset_type("a", np.ndarray, "npy", dimensions=["n"])
    return s3_repo


@pytest.fixture
def requests(repo: Butler) -> Requests:
    return Requests(repo.storage)


def _key(repo: Butler, dataset_type: str, **data_id: Any) -> str:
    return repo.location(dataset_type, **data_id).key


# -- puts ------------------------------------------------------------------------------


def test_create_only_commit_is_one_conditional_put(repo: Butler, requests: Requests) -> None:
    storage: Any = repo.storage
    storage.write_bytes("x/1.bin", b"a" * 1024, overwrite=False)
    assert requests.log == [("PUT", "repo/x/1.bin", {"if-none-match": "*"})]
    requests.clear()
    with pytest.raises(DatasetExistsError, match=r"x/1\.bin"):
        storage.write_bytes("x/1.bin", b"b" * 1024, overwrite=False)
    assert requests.methods() == ["PUT"]  # refused by the server's condition, no HEAD
    assert storage.read_bytes("x/1.bin") == b"a" * 1024


def test_butler_create_only_put_is_one_request(repo: Butler, requests: Requests) -> None:
    repo.put({"v": 1}, "j", n=1)
    assert requests.log == [("PUT", f"repo/{_key(repo, 'j', n=1)}", {"if-none-match": "*"})]
    requests.clear()
    with pytest.raises(DatasetExistsError, match="already exists"):
        repo.put({"v": 2}, "j", n=1)
    assert requests.methods() == ["PUT"]
    assert repo.get("j", n=1) == {"v": 1}


def test_overwrite_put_is_one_unconditional_put(repo: Butler, requests: Requests) -> None:
    repo.put({"v": 1}, "j", n=1)
    requests.clear()
    repo.put({"v": 2}, "j", n=1, overwrite=True)
    assert requests.log == [("PUT", f"repo/{_key(repo, 'j', n=1)}", {})]
    assert repo.get("j", n=1) == {"v": 2}


def test_concurrent_create_only_puts_have_one_winner(repo: Butler) -> None:
    """The early existence check is gone: the conditional PUT alone picks the winner
    (moto checks and writes without a lock; the storage's per-key commit lock keeps the
    guarantee between threads)."""
    storage: Any = repo.storage
    for round_ in range(3):
        key = f"race/{round_}.bin"
        start = threading.Barrier(8)

        def create(i: int, key: str = key, start: threading.Barrier = start) -> int | None:
            start.wait()
            try:
                storage.write_bytes(key, f"writer {i}".encode() * 64, overwrite=False)
            except DatasetExistsError:
                return None
            return i

        with ThreadPoolExecutor(8) as pool:
            winners = [i for i in pool.map(create, range(8)) if i is not None]
        assert len(winners) == 1, winners
        assert storage.read_bytes(key) == f"writer {winners[0]}".encode() * 64


def test_concurrent_butler_puts_have_one_winner(repo: Butler) -> None:
    start = threading.Barrier(6)

    def put(i: int) -> int | None:
        start.wait()
        try:
            repo.put({"writer": i}, "j", n=7)
        except DatasetExistsError:
            return None
        return i

    with ThreadPoolExecutor(6) as pool:
        winners = [i for i in pool.map(put, range(6)) if i is not None]
    assert len(winners) == 1, winners
    assert repo.get("j", n=7) == {"writer": winners[0]}


# -- gets ------------------------------------------------------------------------------


def test_get_is_one_request(repo: Butler, requests: Requests) -> None:
    data = np.arange(128, dtype="<f8")  # 1 KiB
    repo.put(data, "a", n=1)
    requests.clear()
    np.testing.assert_array_equal(repo.get("a", n=1), data)
    key = f"repo/{_key(repo, 'a', n=1)}"
    assert requests.log == [("GET", key, {"range": "bytes=0-65535"})]


def test_get_of_a_larger_dataset_reads_on_under_the_same_etag(
    repo: Butler, requests: Requests, boto_client: Any
) -> None:
    data = np.arange(25_600, dtype="<f8")  # 200 KiB: more than the 64 KiB read with the metadata
    repo.put(data, "a", n=2)
    key = f"repo/{_key(repo, 'a', n=2)}"
    etag = boto_client.head_object(Bucket=requests.storage.bucket, Key=key)["ETag"]
    requests.clear()
    np.testing.assert_array_equal(repo.get("a", n=2), data)
    assert requests.log == [
        ("GET", key, {"range": "bytes=0-65535"}),
        ("GET", key, {"range": "bytes=65536-", "if-match": etag}),
    ]


def test_get_of_a_missing_dataset_is_one_request(repo: Butler, requests: Requests) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"'j'.*does not exist"):
        repo.get("j", n=404)
    assert requests.methods() == ["GET"]


def test_empty_dataset(repo: Butler, requests: Requests) -> None:
    storage: Any = repo.storage
    storage.write_bytes("e/empty.bin", b"", metadata={"v": 0})
    requests.clear()
    assert storage.metadata("e/empty.bin")["v"] == 0
    with storage.open("e/empty.bin") as f:
        assert f.read() == b""
    # an empty object has no byte 0 (416): one more GET, for this rare case only
    assert requests.methods() == ["GET", "GET"]


def test_prefetch_size_zero_reads_the_metadata_with_a_head(butler_repo: Any) -> None:
    repo = butler_repo("s3", prefetch_size=0)
    repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    repo.put({"y": 1}, "j", n=1)
    requests = Requests(repo.storage)
    assert repo.get("j", n=1) == {"y": 1}
    assert requests.methods() == ["HEAD", "GET"]


def test_invalid_prefetch_size(s3_root: str, s3_credentials: dict[str, Any]) -> None:
    from butler_s3 import S3Storage

    with pytest.raises(StorageError, match=r"prefetch_size=-1: expected an integer >= 0"):
        S3Storage(s3_root, prefetch_size=-1, **s3_credentials)


# -- the hand-off from metadata() to open() ---------------------------------------------


def test_handed_off_bytes_are_those_whose_metadata_was_returned(
    repo: Butler, boto_client: Any
) -> None:
    storage: Any = repo.storage
    storage.write_bytes("h/small.bin", b"old" * 10, metadata={"v": "old"})
    assert storage.metadata("h/small.bin")["v"] == "old"
    # replaced behind butler's back between the metadata and the open
    boto_client.put_object(Bucket=storage.bucket, Key="repo/h/small.bin", Body=b"new")
    with storage.open("h/small.bin") as f:
        assert f.read() == b"old" * 10  # the version whose metadata was returned
    with storage.open("h/small.bin") as f:  # no fresh metadata: asks the server
        assert f.read() == b"new"


def test_a_dataset_replaced_mid_read_is_reported(repo: Butler, boto_client: Any) -> None:
    storage: Any = repo.storage
    storage.write_bytes("h/big.bin", b"o" * 100_000)
    storage.metadata("h/big.bin")
    boto_client.put_object(Bucket=storage.bucket, Key="repo/h/big.bin", Body=b"n" * 100_000)
    with storage.open("h/big.bin") as f, pytest.raises(StorageError, match=r"h/big\.bin"):
        f.read()  # the first 64 KiB are the old version's: the rest must not be the new one


def test_hand_off_is_per_key_per_thread_and_short_lived(
    repo: Butler, requests: Requests, monkeypatch: pytest.MonkeyPatch
) -> None:
    import butler_s3._storage as s3_storage

    storage: Any = repo.storage
    storage.write_bytes("h/a.bin", b"a")
    storage.write_bytes("h/b.bin", b"b")

    def opened(key: str) -> list[str]:
        requests.clear()
        with storage.open(key) as f:
            assert f.read() == key[-5:-4].encode()
        return requests.methods()

    storage.metadata("h/a.bin")
    assert opened("h/b.bin") == ["HEAD", "GET"]  # another key: nothing handed over
    assert opened("h/a.bin") == ["HEAD", "GET"]  # and the kept bytes were dropped
    storage.metadata("h/a.bin")
    assert opened("h/a.bin") == []  # handed over: no request at all
    assert opened("h/a.bin") == ["HEAD", "GET"]  # used once

    storage.metadata("h/a.bin")
    other: list[list[str]] = []
    worker = threading.Thread(target=lambda: other.append(opened("h/a.bin")))
    worker.start()
    worker.join()
    assert other == [["HEAD", "GET"]]  # another thread never takes this thread's bytes

    storage.metadata("h/a.bin")
    storage.write_bytes("h/a.bin", b"A")  # this thread's own write drops them
    requests.clear()
    with storage.open("h/a.bin") as f:
        assert f.read() == b"A"

    monkeypatch.setattr(s3_storage, "HANDOFF_SECONDS", -1.0)
    storage.metadata("h/b.bin")
    assert opened("h/b.bin") == ["HEAD", "GET"]  # too old


def test_block_reads_of_a_large_dataset_after_its_metadata(repo: Butler) -> None:
    storage: Any = repo.storage
    data = bytes(range(251)) * 20_000  # ~5 MiB
    storage.write_bytes("h/large.bin", data)
    storage.metadata("h/large.bin")
    with storage.open("h/large.bin", access="random", block_size=256 * 1024) as f:
        f.seek(3_000_000)
        assert f.read(1000) == data[3_000_000:3_001000]
        f.seek(10)
        assert f.read(100) == data[10:110]  # from the bytes read with the metadata
        assert (f.requests, f.bytes_fetched) == (2, 64 * 1024 + 256 * 1024)


# -- the policy ------------------------------------------------------------------------


def test_policy_reread_is_one_conditional_request(
    repo: Butler, requests: Requests, s3_credentials: dict[str, Any], boto_client: Any
) -> None:
    storage: Any = repo.storage
    first = storage.read_policy()
    assert first is not None
    requests.clear()
    again = storage.read_policy()
    assert again == first
    [(method, key, headers)] = requests.log
    assert (method, key) == ("GET", f"repo/{POLICY_KEY}")
    assert headers["if-none-match"]
    assert requests.statuses == [304]  # no body sent

    again["dataset_types"] = {}  # callers get their own copy
    assert storage.read_policy() == first

    # Another Butler of this process changes it: its new ETag is known here already.
    other = Butler(storage.root, **s3_credentials)
    other.register_dataset_type("new", dict, "json", dimensions=["n"])
    other.close()
    requests.clear()
    assert "new" in storage.read_policy()["dataset_types"]
    assert len(requests.log) == 1

    # Another process changes it (behind this one's back): the next read sees it at once.
    changed = storage.read_policy()
    changed["dataset_types"].pop("new")
    boto_client.put_object(
        Bucket=storage.bucket, Key=f"repo/{POLICY_KEY}", Body=storage.policy_to_bytes(changed)
    )
    requests.clear()
    assert storage.read_policy() == changed
    assert requests.statuses == [200]


def test_opening_a_butler_revalidates_the_policy(
    repo: Butler, s3_credentials: dict[str, Any]
) -> None:
    root = repo.storage.root
    reopened = Butler(root, **s3_credentials)
    try:
        requests = Requests(reopened.storage)
        reopened._load_policy()
        assert requests.statuses == [304]
        assert requests.log[0][2]["if-none-match"]
    finally:
        reopened.close()


# -- the two clients -------------------------------------------------------------------


def test_single_requests_leave_from_the_callers_thread(repo: Butler) -> None:
    """Small puts and gets, HEADs and listings go out on botocore's synchronous client from
    the calling thread (no hand-off to s3fs's event loop); large transfers stay on s3fs."""
    sync_client, async_client = repo.storage.botocore_clients()  # type: ignore[attr-defined]
    threads: dict[str, set[str]] = {"sync": set(), "async": set()}
    for name, client in (("sync", sync_client), ("async", async_client)):
        client.meta.events.register(
            "before-send.s3",
            lambda request, name=name, **kw: threads[name].add(threading.current_thread().name),
        )
    repo.put({"a": 1}, "j", n=1)
    assert repo.get("j", n=1) == {"a": 1}
    assert repo.exists("j", n=1)
    assert len(list(repo.datasets("j"))) == 1
    assert threads == {"sync": {threading.current_thread().name}, "async": set()}
    big = np.arange(3 * 2**20, dtype="f8")  # 24 MiB: a multipart upload, block reads
    repo.storage.part_size = repo.storage.multipart_threshold = 8 * 2**20  # type: ignore[attr-defined]
    repo.put(big, "a", n=2)
    np.testing.assert_array_equal(repo.get("a", n=2), big)
    assert threads["async"] and threading.current_thread().name not in threads["async"]


def test_the_sync_client_has_the_storage_configuration(
    s3_root: str, s3_credentials: dict[str, Any]
) -> None:
    """Same endpoint, credentials, checksum policy and client options as s3fs's client; an
    anonymous storage sends unsigned requests on both."""
    from botocore import UNSIGNED

    with Butler.create(s3_root, **s3_credentials, config_kwargs={"read_timeout": 7}) as b:
        sync_client, async_client = b.storage.botocore_clients()  # type: ignore[attr-defined]
        for attr in (
            "request_checksum_calculation",
            "response_checksum_validation",
            "read_timeout",
        ):
            assert getattr(sync_client.meta.config, attr) == getattr(async_client.meta.config, attr)
        assert sync_client.meta.config.read_timeout == 7
        assert sync_client.meta.endpoint_url == async_client.meta.endpoint_url
        creds = sync_client._request_signer._credentials
        assert (creds.access_key, creds.secret_key) == (
            s3_credentials["key"],
            s3_credentials["secret"],
        )
    from butler_s3 import S3Storage

    anon = S3Storage(s3_root, endpoint_url=s3_credentials["endpoint_url"], anon=True)
    clients = anon.botocore_clients()
    assert len(clients) == 2
    for client in clients:
        assert client.meta.config.signature_version is UNSIGNED
    anon.close()


def test_a_caller_supplied_session_carries_every_request(
    s3_root: str, s3_credentials: dict[str, Any]
) -> None:
    """With ``fs_kwargs={"session": ...}`` butler cannot rebuild the caller's session, so
    every request, the single ones too, goes through s3fs on that session."""
    import aiobotocore.session

    session = aiobotocore.session.AioSession()
    with Butler.create(s3_root, **s3_credentials, fs_kwargs={"session": session}) as b:
        clients = b.storage.botocore_clients()  # type: ignore[attr-defined]
        assert len(clients) == 1
        sent: list[str] = []
        clients[0].meta.events.register(
            "before-send.s3", lambda request, **kw: sent.append(request.method)
        )
        b.register_dataset_type("j", dict, "json", dimensions=["n"])
        sent.clear()
        b.put({"x": 1}, "j", n=1)
        assert b.get("j", n=1) == {"x": 1}
        assert sent == ["PUT", "GET"]


def test_small_puts_send_their_body_without_waiting_for_100_continue(
    repo: Butler, requests: Requests
) -> None:
    """A small body goes with its headers (one round trip); botocore's ``Expect:
    100-continue`` (wait for the server's go-ahead, a second round trip) is kept for
    bodies above 1 MiB."""
    from butler_s3._client import EXPECT_CONTINUE_ABOVE

    expects: list[str | None] = []
    for client in repo.storage.botocore_clients():  # type: ignore[attr-defined]
        client.meta.events.register(
            "before-send.s3",
            lambda request, **kw: expects.append(request.headers.get("Expect")),
        )
    repo.put({"a": 1}, "j", n=1)
    assert expects == [None]
    storage: Any = repo.storage
    expects.clear()
    storage.write_bytes("x/big.bin", b"b" * (EXPECT_CONTINUE_ABOVE + 1), overwrite=False)
    assert expects == [b"100-continue"]
    assert storage.read_bytes("x/big.bin") == b"b" * (EXPECT_CONTINUE_ABOVE + 1)
