"""The warehouse team's own small HTTP API (stdlib, not the sandbox's app), for the second,
independent test environment (tests/other_team/): a health endpoint and robot keys that are
issued, swapped, and — once swapped out — refused with 401 by the key service itself.

Swaps are recorded in the team's `credential_swaps` table with the fingerprint of the key
that asked, as its runbook's `rotations_query` expects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

API_KEY = "robots-api-key-7f3a9c"
# What marks an answer as the key service's own (not a proxy's in front of it).
MARKER_HEADER = "x-robots-keys"


def fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Behaviour:
    health_delay_s: float = 0.0
    accept_swapped_keys: bool = False  # the defect the Token Zombie test is there to catch
    keys: dict[str, str] = field(default_factory=dict)  # key -> "active" | "swapped"
    # A proxy in front of the key service refuses swapped-out keys itself, with a 401 that
    # does not carry the service's MARKER_HEADER: the service is never asked.
    gateway_refuses_swapped: bool = False


class OtherTeamServer:
    """Serve on 127.0.0.1 (a real socket) in a thread; `with OtherTeamServer(dsn) as server:`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.behaviour = Behaviour()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def __enter__(self) -> OtherTeamServer:
        self._loop_thread.start()
        self._http_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(5)

    def record_swap(self, key: str, site: str) -> None:
        async def insert() -> None:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            try:
                await conn.execute("INSERT INTO credential_swaps (old_key_fp, site_code) VALUES ($1, $2)",
                                   fingerprint(key), site)
            finally:
                await conn.close()

        asyncio.run_coroutine_threadsafe(insert(), self._loop).result(10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], *, marked: bool = True) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if marked:
                    self.send_header(MARKER_HEADER, "1")
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return {}
                return body if isinstance(body, dict) else {}

            def do_OPTIONS(self) -> None:  # noqa: N802 - the probe's warm-up
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                if url.path != "/health":
                    self._send(404, {"error": "not found"})
                    return
                time.sleep(server.behaviour.health_delay_s)
                self._send(200, {"ok": True, "env": parse_qs(url.query).get("env", [""])[0]})

            def do_POST(self) -> None:  # noqa: N802
                path, body, keys = urlsplit(self.path).path, self._body(), server.behaviour.keys
                site = str(body.get("location_id", ""))
                if path == "/keys/issue":
                    if self.headers.get("apikey") != API_KEY:
                        self._send(401, {"error": "bad api key"})
                        return
                    key = "rk_" + secrets.token_hex(16)
                    keys[key] = "active"
                    self._send(200, {"access_token": key})
                    return
                if path != "/keys/swap":
                    self._send(404, {"error": "not found"})
                    return
                key = (self.headers.get("authorization") or "").removeprefix("Bearer ")
                state = keys.get(key)
                if state == "swapped" and server.behaviour.gateway_refuses_swapped:
                    self._send(401, {"message": "Unauthorized"}, marked=False)
                    return
                if state == "active" or (state == "swapped" and server.behaviour.accept_swapped_keys):
                    keys[key] = "swapped"
                    server.record_swap(key, site)
                    fresh = "rk_" + secrets.token_hex(16)
                    keys[fresh] = "active"
                    self._send(200, {"access_token": fresh})
                    return
                self._send(401, {"error": "key swapped out" if state == "swapped" else "unknown key"})

        return Handler
