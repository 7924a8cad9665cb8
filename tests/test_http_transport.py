"""The HTTP transport every client of the control room goes through (the probes, the live feeds,
the notifier): plain http never builds a TLS context (httpx's default read the whole CA bundle
for each client, ~40 ms on the event loop as the pollers started), and https is verified with
one context for the process. Over real sockets: a plain server and a self-signed TLS one."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from controlroom.checks.base import ProbeContext
from controlroom.infra.http_transport import NoRetrySyncTransport, NoRetryTransport, tls_context
from controlroom.live.sources import Feeds
from controlroom.notify.outbox import Outbox
from controlroom.release.journal import Journal
from probe_support import make_loaded


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[str]:
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Hello))


@pytest.fixture
def self_signed(tmp_path: Path) -> Iterator[str]:
    """A TLS server whose certificate no CA signed: a verifying client must refuse it."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


async def test_every_client_speaks_plain_http_without_a_tls_context_and_verifies_https_with_one(
    plain: str, self_signed: str, tmp_path: Path,
) -> None:
    loaded = make_loaded([{"id": "m", "title": "M", "kind": "manual"}])
    journal = Journal.open(tmp_path / "journal.jsonl", operator={"user": "ana"})
    feeds, outbox = Feeds(loaded), Outbox(loaded, journal)
    tls_context.cache_clear()
    try:
        async with ProbeContext(loaded) as probes:
            clients = {"probes": probes.http, "feeds": feeds.client, "notifier": outbox._http()}
            for name, client in clients.items():
                assert isinstance(client._transport, NoRetryTransport), name
                answer = await client.get(f"http://{plain}/")
                assert (answer.status_code, answer.text) == (200, "hello"), name
            assert tls_context.cache_info().currsize == 0  # no CA bundle read for plain http
            with NoRetrySyncTransport() as transport, httpx.Client(transport=transport) as blocking:
                assert blocking.get(f"http://{plain}/").text == "hello"
            assert tls_context.cache_info().currsize == 0

            for name, client in clients.items():
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get(f"https://{self_signed}/")  # verified: a self-signed server is refused
                assert client._transport._tls._pool._ssl_context is tls_context(), name  # one context
            assert tls_context.cache_info().misses == 1  # built once, for all of them
    finally:
        await feeds.close()
        await outbox.aclose()
        journal.close()
