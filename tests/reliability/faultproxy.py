"""A small fault-injecting HTTP proxy (threads + sockets) for the S3 fault suite.

It listens on loopback, forwards each request to the upstream server (moto), and on the
requests its schedule picks answers 500 or 503 itself, or resets the connection while the
request body is still arriving or while the response body is being sent.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FaultProxy"]

#: ``schedule(n, method, path) -> action`` for the n-th request (from 0). Actions:
#: ``"pass"``, ``500``, ``503``, ``"reset-request"``, ``"reset-response"``.
Schedule = Callable[[int, str, str], Any]

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "te"}
_CODES = {500: "InternalError", 503: "ServiceUnavailable"}


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0) instead of an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """Proxy on ``127.0.0.1:<port>`` in front of ``upstream`` (``http://127.0.0.1:NNNN``)."""

    def __init__(self, upstream: str, schedule: Schedule | None = None) -> None:
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.schedule: Schedule = schedule or (lambda n, m, p: "pass")
        self.log: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                with proxy._lock:
                    n = len(proxy.log)
                    action = proxy.schedule(n, self.command, self.path)
                    proxy.log.append((self.command, self.path, action))
                length = int(self.headers.get("Content-Length") or 0)
                if action == "reset-request":
                    self.rfile.read(length // 2)
                    self.close_connection = True
                    _reset(self.connection)
                    return
                body = self.rfile.read(length) if length else b""
                if action in _CODES:
                    xml = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{_CODES[action]}"
                        f"</Code><Message>injected fault</Message></Error>"
                    ).encode()
                    self.send_response(action)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    head = self.command == "HEAD"  # keeps the upstream Content-Length
                    lines = [f"HTTP/1.1 {response.status} {response.reason}"]
                    for k, v in response.getheaders():
                        if k.lower() not in _HOP and (head or k.lower() != "content-length"):
                            lines.append(f"{k}: {v}")
                    if not head:
                        lines.append(f"Content-Length: {len(data)}")
                    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
                    if action == "reset-response":  # cut mid-response: headers or body
                        cut = len(raw) - (len(data) + 1) // 2 if data else len(raw) // 2
                        self.wfile.write(raw[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        _reset(self.connection)
                        return
                    self.wfile.write(raw)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, action: Any = None, method: str | None = None) -> int:
        """Requests seen (with a given action / method)."""
        return sum(
            1
            for m, _, a in self.log
            if (action is None or a == action) and (method is None or m == method)
        )
