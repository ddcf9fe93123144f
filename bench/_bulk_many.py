"""Bulk calls against the serial loop users write today (issue 17): ``get_many`` and
``put_many`` of ``n`` small (1 KiB) datasets on S3 (a moto server) and posix, against
``for ...: b.get(...)`` / ``b.put(...)``, interleaved (serial, bulk, serial, bulk...) on the
same repository and data, best of ``repeat``.

`bench_bulk` is what ``bench/bulk.py`` calls; ``python bench/_bulk_many.py [--n 1000]``
runs it alone. Ratio = serial time / bulk time (the speed-up). Targets: get_many >= 8x on S3,
>= 1.5x on posix (2 cores). Client and S3 server CPU per item say where the time goes.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

KEY, SECRET = "bench-key", "bench-secret"


def _server_cpu(pid: int | None) -> float:
    """CPU seconds the S3 server process used so far (Linux ``/proc``), 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Timing:
    """Wall, client CPU and server CPU seconds of one run, best (by wall) of several."""

    def __init__(self) -> None:
        self.best: tuple[float, float, float] | None = None

    def run(self, fn: Callable[[], Any], server: int | None) -> Any:
        cpu0, srv0, t0 = time.process_time(), _server_cpu(server), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        sample = (wall, time.process_time() - cpu0, _server_cpu(server) - srv0)
        if self.best is None or sample[0] < self.best[0]:
            self.best = sample
        return out


def _compare(
    b: Any, n: int, repeat: int, max_workers: int | None, server: int | None
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{"put"|"get": {"serial"|"bulk": (wall, client CPU, server CPU)}}: best of
    ``repeat``, serial and bulk interleaved. Each put round writes into a fresh run
    (create-only puts), so every round does the same work; gets read the first round's."""
    from butler import Butler

    blob = os.urandom(512).hex()  # 1 KiB of JSON text
    objs = [{"i": i, "blob": blob} for i in range(n)]
    data_ids = [{"visit": i} for i in range(n)]
    pairs = list(zip(objs, data_ids, strict=True))
    options = b._reopen_args["storage_options"]
    timings = {(op, how): _Timing() for op in ("put", "get") for how in ("serial", "bulk")}

    def serial_put(w: Butler) -> None:
        for obj, data_id in pairs:
            w.put(obj, "small", data_id)

    def bulk_put(w: Butler) -> None:
        w.put_many("small", pairs, max_workers=max_workers)

    def serial_get(r: Butler) -> list[Any]:
        return [r.get("small", data_id) for data_id in data_ids]

    def bulk_get(r: Butler) -> list[Any]:
        return r.get_many("small", data_ids, max_workers=max_workers)

    for round_ in range(repeat):
        for how, put in (("serial", serial_put), ("bulk", bulk_put)):
            with Butler(b.storage.uri(), run=f"r{round_}-{how}", **options) as w:
                timings["put", how].run(functools.partial(put, w), server)
        for how, get in (("serial", serial_get), ("bulk", bulk_get)):
            with Butler(b.storage.uri(), run="r0-serial", **options) as r:
                got = timings["get", how].run(functools.partial(get, r), server)
            assert got == objs, f"{how} get returned other objects"
    out: dict[str, dict[str, tuple[float, float, float]]] = {"put": {}, "get": {}}
    for (op, how), timing in timings.items():
        assert timing.best is not None
        out[op][how] = timing.best
    return out


def _report(
    storage: str, n: int, results: dict[str, dict[str, tuple[float, float, float]]], workers: int
) -> None:
    for op, by_how in results.items():
        (serial, s_cpu, s_srv), (bulk, b_cpu, b_srv) = by_how["serial"], by_how["bulk"]
        server = (
            f"; server CPU {s_srv / n * 1e3:.2f} -> {b_srv / n * 1e3:.2f} ms/item"
            if s_srv or b_srv
            else ""
        )
        print(
            f"{storage:6s} {op}_many n={n} workers={workers}: serial {serial / n * 1e3:6.2f} "
            f"ms/item, bulk {bulk / n * 1e3:6.2f} ms/item, ratio {serial / bulk:5.2f}x "
            f"(client CPU {s_cpu / n * 1e3:.2f} -> {b_cpu / n * 1e3:.2f} ms/item{server})"
        )


def bench_bulk(
    n: int = 1000,
    repeat: int = 2,
    *,
    endpoint: str | None = None,
    server_pid: int | None = None,
    max_workers: int | None = None,
    storages: tuple[str, ...] = ("s3", "posix"),
) -> dict[str, dict[str, dict[str, tuple[float, float, float]]]]:
    """Time get_many/put_many of ``n`` small datasets against the serial loop, on each of
    ``storages``; prints one line per (storage, call) and returns ``{storage: {"get"|"put":
    {"serial"|"bulk": (wall s, client CPU s, server CPU s)}}}`` (server CPU: only for a
    server started here).

    ``endpoint``: a running S3 (moto) server whose credentials are ``bench-key`` /
    ``bench-secret`` (bench/bulk.py's), with ``server_pid`` its process (for its CPU time);
    default: one is started here for the run.
    """
    from butler import Butler
    from butler._bulk import default_workers

    out: dict[str, dict[str, dict[str, tuple[float, float, float]]]] = {}
    proc: Any = None
    try:
        for storage in storages:
            with tempfile.TemporaryDirectory() as tmp:
                options: dict[str, Any] = {}
                if storage == "posix":
                    root = os.path.join(tmp, "repo")
                elif storage == "s3":
                    import boto3

                    if endpoint is None:
                        from butler.testing import start_moto

                        env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
                        endpoint, proc = start_moto(env)
                    os.environ.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
                    bucket = f"bulk-{os.getpid()}-{time.monotonic_ns() % 10**9}"
                    boto3.client(
                        "s3", endpoint_url=endpoint, region_name="us-east-1"
                    ).create_bucket(Bucket=bucket)
                    options = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}
                    root = f"s3://{bucket}/repo"
                else:
                    raise ValueError(f"unknown storage {storage!r}; use 's3' or 'posix'")
                b = Butler.create(root, **options)
                try:
                    b.register_dataset_type("small", dict, "json", dimensions={"visit": int})
                    workers = max_workers or default_workers(b.storage)
                    server = (
                        (server_pid or (proc.pid if proc is not None else None))
                        if storage == "s3"
                        else None
                    )
                    out[storage] = _compare(b, n, repeat, max_workers, server)
                    _report(storage, n, out[storage], workers)
                finally:
                    b.close()
    finally:
        if proc is not None:
            from butler.testing import stop_moto

            stop_moto(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--max-workers", type=int, default=None)
    parser.add_argument("--storages", default="s3,posix")
    args = parser.parse_args()
    bench_bulk(
        args.n,
        args.repeat,
        max_workers=args.max_workers,
        storages=tuple(s for s in args.storages.split(",") if s),
    )


if __name__ == "__main__":
    main()
