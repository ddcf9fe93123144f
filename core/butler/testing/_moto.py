"""Starting moto's S3 server as a separate process on a free loopback port.

One launcher for the kit, butler's own test-suite and plugin authors: a real HTTP server
(as s3fs's own tests use), never moto's in-process mocks.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping

__all__ = ["moto_server", "start_moto", "stop_moto"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_moto(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server started by `start_moto` (killing it if it does not stop)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_moto(
    env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``python -m moto.server`` on a free loopback port and wait until it accepts.

    Parameters
    ----------
    env
        Extra environment variables for the server (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT``).
    timeout
        Seconds to wait for the port to open.

    Returns
    -------
    tuple
        ``(endpoint_url, process)``; stop it with `stop_moto`.

    Raises
    ------
    RuntimeError
        If the server exits or does not listen in time.
    """
    deadline = time.monotonic() + timeout
    for _attempt in range(5):
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, **(env or {})),
        )
        while proc.poll() is None:
            # Another process (a parallel test run) may have taken the same free port: the
            # port only counts once *this* server is the one listening on it.
            if _listening(proc.pid, port):
                return f"http://127.0.0.1:{port}", proc
            if time.monotonic() > deadline:
                stop_moto(proc)
                raise RuntimeError("moto server did not start in time")
            time.sleep(0.05)
        # It exited (the port was taken meanwhile): try another port.
    raise RuntimeError(f"moto server exited with status {proc.returncode}")


def _listening(pid: int, port: int) -> bool:
    """True when process ``pid`` listens on TCP ``port`` of 127.0.0.1.

    Read from ``/proc`` (the listening socket's inode among the process's descriptors);
    where ``/proc`` is missing, a successful connection is taken as the answer.
    """
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/tcp") as table:
            next(table)
            for line in table:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.split(":")[1], 16) == port and inode in inodes:
                    return True
        return False
    except OSError:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False


@contextlib.contextmanager
def moto_server(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Context manager form of `start_moto`: yields the endpoint URL, stops the server after."""
    url, proc = start_moto(env, timeout)
    try:
        yield url
    finally:
        stop_moto(proc)
