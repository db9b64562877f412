"""A tiny real HTTP server in a thread that answers POSTs from a script of status codes."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """`with Receiver([500, 500, 200]) as rx:` answers each POST with the next status (the last
    one repeats) and records `(headers, body)` in `rx.requests`."""

    def __init__(self, statuses: list[int], body: bytes = b"", headers: dict | None = None):
        self.statuses, self.body, self.extra = list(statuses), body, headers or {}
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers.items()), data))
                i = min(len(receiver.requests), len(receiver.statuses)) - 1
                self.send_response(receiver.statuses[i])
                for k, v in receiver.extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
