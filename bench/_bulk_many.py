"""Bulk calls against the serial loop users write today (issue 17): ``get_many`` and
``put_many`` of ``n`` small (1 KiB) datasets on S3 (a moto server) and posix, against
``for ...: b.get(...)`` / ``b.put(...)``, interleaved (serial, bulk, serial, bulk...) on the
same repository and data, best of ``repeat``.

`bench_bulk` is what ``bench/bulk.py`` calls; ``python bench/_bulk_many.py [--n 1000]``
runs it alone. Ratio = serial time / bulk time (the speed-up). Targets: get_many >= 8x on S3,
>= 1.5x on posix (2 cores). Client and S3 server CPU per item say where the time goes.

Storage ``s3-rtt`` is the same moto server behind a proxy on loopback (a process of its
own) that holds each response for ``--rtt-ms`` (default 20 ms: a small GET's first-byte
latency on AWS S3 from the same region is typically 10-30 ms). On bare loopback a request
costs ~0.1 ms of network and several ms of CPU split between moto and the client (botocore)
on the same 2 cores, so concurrency can only overlap CPU (at most ~2x); with a round trip,
as on a real object store, the waits overlap. Both are printed; neither is presented as the
other. Each line also prints the most the machine's CPU allows: the serial time over the
client + server (moto and proxy) CPU the bulk call used, spread over the cores. moto's
server (werkzeug's) closes the connection after every response, so every request, on both
sides, opens a new TCP connection, as neither would on AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

KEY, SECRET = "bench-key", "bench-secret"


def _server_cpu(pids: tuple[int, ...]) -> float:
    """CPU seconds the server-side processes (the S3 server, the latency proxy) used so far
    (Linux ``/proc``); 0 for those not known."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _Timing:
    """Wall, client CPU and server CPU seconds of one run, best (by wall) of several."""

    def __init__(self) -> None:
        self.best: tuple[float, float, float] | None = None

    def run(self, fn: Callable[[], Any], server: tuple[int, ...]) -> Any:
        cpu0, srv0, t0 = time.process_time(), _server_cpu(server), time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t0
        sample = (wall, time.process_time() - cpu0, _server_cpu(server) - srv0)
        if self.best is None or sample[0] < self.best[0]:
            self.best = sample
        return out


class _Proxy:
    """The proxy's event loop side (runs in the proxy's own process)."""

    def __init__(self, upstream: tuple[str, int], rtt: float) -> None:
        self.upstream, self.rtt = upstream, rtt

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        asked: list[float] = []  # when each request not yet answered was sent

        async def requests() -> None:
            while data := await reader.read(1 << 16):
                asked.append(time.monotonic())
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def responses() -> None:
            while data := await up_reader.read(1 << 16):
                if asked:
                    await asyncio.sleep(max(0.0, asked[0] + self.rtt - time.monotonic()))
                    asked.clear()
                writer.write(data)
                await writer.drain()
            writer.close()

        await asyncio.gather(requests(), responses(), return_exceptions=True)


def _serve_proxy(upstream: tuple[str, int], rtt: float, conn: Any) -> None:
    """The proxy process: listen on a free loopback port, send it through ``conn``, serve."""

    async def main() -> None:
        server = await asyncio.start_server(_Proxy(upstream, rtt).client, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``) that delays
    the first bytes of every response by ``rtt`` seconds after the request that asked for
    them: a network round trip, added to loopback. It runs in a process of its own (its
    CPU, like the server's, is not the client's: `pid` lets the bench count it)."""

    def __init__(self, upstream: str, rtt: float) -> None:
        import multiprocessing

        host, _, port = upstream.rpartition("//")[2].partition(":")
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve_proxy, args=((host, int(port)), rtt, child), daemon=True
        )
        self._process.start()
        if not parent.poll(30):
            self.close()
            raise RuntimeError("the latency proxy did not start in 30 s")
        self.port = parent.recv()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def close(self) -> None:
        self._process.terminate()
        self._process.join(5)


def _compare(
    b: Any, n: int, repeat: int, max_workers: int | None, server: tuple[int, ...]
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
    cores = os.cpu_count() or 1
    for op, by_how in results.items():
        (serial, s_cpu, s_srv), (bulk, b_cpu, b_srv) = by_how["serial"], by_how["bulk"]
        server = (
            f"; server CPU {s_srv / n * 1e3:.2f} -> {b_srv / n * 1e3:.2f} ms/item"
            if s_srv or b_srv
            else ""
        )
        # Client and server share this machine's cores: however many requests overlap, the
        # bulk call cannot finish before their CPU time, spread over every core, is spent.
        bound = serial / max((b_cpu + b_srv) / cores, 1e-9)
        print(
            f"{storage:6s} {op}_many n={n} workers={workers}: serial {serial / n * 1e3:6.2f} "
            f"ms/item, bulk {bulk / n * 1e3:6.2f} ms/item, ratio {serial / bulk:5.2f}x "
            f"(client CPU {s_cpu / n * 1e3:.2f} -> {b_cpu / n * 1e3:.2f} ms/item{server}; "
            f"the CPU the bulk call used, over {cores} cores, allows at most {bound:.1f}x)"
        )


def bench_bulk(
    n: int = 1000,
    repeat: int = 2,
    *,
    endpoint: str | None = None,
    server_pid: int | None = None,
    max_workers: int | None = None,
    storages: tuple[str, ...] = ("s3", "s3-rtt", "posix"),
    rtt_ms: float = 20.0,
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
    proxy: LatencyProxy | None = None
    try:
        for storage in storages:
            with tempfile.TemporaryDirectory() as tmp:
                options: dict[str, Any] = {}
                if storage == "posix":
                    root = os.path.join(tmp, "repo")
                elif storage in ("s3", "s3-rtt"):
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
                    url = endpoint
                    if storage == "s3-rtt":
                        proxy = LatencyProxy(endpoint, rtt_ms / 1000)
                        url = proxy.url
                    options = {"endpoint_url": url, "key": KEY, "secret": SECRET}
                    root = f"s3://{bucket}/repo"
                else:
                    raise ValueError(f"unknown storage {storage!r}; use 's3', 's3-rtt' or 'posix'")
                b = Butler.create(root, **options)
                try:
                    b.register_dataset_type("small", dict, "json", dimensions={"visit": int})
                    workers = max_workers or default_workers(b.storage)
                    server: tuple[int, ...] = ()
                    if storage.startswith("s3"):
                        moto_pid = server_pid or (proc.pid if proc is not None else None)
                        proxy_pid = proxy.pid if proxy is not None else None
                        server = tuple(p for p in (moto_pid, proxy_pid) if p is not None)
                    out[storage] = _compare(b, n, repeat, max_workers, server)
                    label = f"s3+{rtt_ms:g}ms" if storage == "s3-rtt" else storage
                    _report(label, n, out[storage], workers)
                finally:
                    b.close()
                    if proxy is not None:
                        proxy.close()
                        proxy = None
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
    parser.add_argument("--storages", default="s3,s3-rtt,posix")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    bench_bulk(
        args.n,
        args.repeat,
        max_workers=args.max_workers,
        storages=tuple(s for s in args.storages.split(",") if s),
        rtt_ms=args.rtt_ms,
    )


if __name__ == "__main__":
    main()
