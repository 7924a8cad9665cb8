"""The HTTP clients' TLS: one context for the process (httpx built one per client, reading the
whole CA bundle each time, ~40 ms on the event loop), with the roots httpx would use
(SSL_CERT_FILE when set); the probes build it on their first https request only; https is
verified; and the feeds and the notifier keep the environment's proxies. Over real sockets:
a plain server and a self-signed TLS one."""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from controlroom.checks.base import ProbeContext
from controlroom.config.loader import LoadedConfig
from controlroom.infra.http_transport import NoRetrySyncTransport, NoRetryTransport, tls_context
from controlroom.live.sources import Feeds
from controlroom.notify.outbox import Outbox
from controlroom.release.journal import Journal
from probe_support import make_loaded


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"hello {self.path}".encode()  # through a proxy the path is the whole URL
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return key, cert


@pytest.fixture
def self_signed(certificate: tuple[Path, Path]) -> Iterator[str]:
    """A TLS server whose certificate no CA signed: a verifying client must refuse it."""
    key, cert = certificate
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


Clients = tuple[Callable[[], tuple[Feeds, Outbox]], LoadedConfig]


@pytest.fixture
def clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Clients]:
    """(a maker of the feeds and the notifier, the config), with no TLS or proxy variable set
    and no TLS context built yet."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    tls_context.cache_clear()
    loaded = make_loaded([{"id": "m", "title": "M", "kind": "manual"}])
    journal = Journal.open(tmp_path / "journal.jsonl", operator={"user": "ana"})
    yield lambda: (Feeds(loaded), Outbox(loaded, journal)), loaded
    journal.close()
    tls_context.cache_clear()


async def test_probes_speak_plain_http_without_a_tls_context_and_verify_https(
    plain: str, self_signed: str, clients: Clients,
) -> None:
    _, loaded = clients
    async with ProbeContext(loaded) as probes:
        assert isinstance(probes.http._transport, NoRetryTransport)
        assert (await probes.http.get(f"http://{plain}/")).text == "hello /"
        with NoRetrySyncTransport() as transport, httpx.Client(transport=transport) as blocking:
            assert blocking.get(f"http://{plain}/").text == "hello /"
        assert tls_context.cache_info().currsize == 0  # no CA bundle read for plain http
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await probes.http.get(f"https://{self_signed}/")  # verified: a self-signed server is refused
        assert probes.http._transport._tls._pool._ssl_context is tls_context()


async def test_feeds_and_notifier_share_one_tls_context_and_verify_https(
    self_signed: str, clients: Clients,
) -> None:
    make, _ = clients
    feeds, outbox = make()
    try:
        for client in (feeds.client, outbox._http()):
            assert client._transport._pool._ssl_context is tls_context()
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://{self_signed}/")
        assert tls_context.cache_info().misses == 1  # built once, for both
    finally:
        await feeds.close()
        await outbox.aclose()


async def test_the_roots_come_from_ssl_cert_file_when_it_is_set(
    self_signed: str, certificate: tuple[Path, Path], clients: Clients, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A company CA on a bastion host, as httpx's default honours it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[1]))
    make, loaded = clients
    feeds, outbox = make()
    try:
        async with ProbeContext(loaded) as probes:
            for client in (probes.http, feeds.client, outbox._http()):
                assert (await client.get(f"https://{self_signed}/")).text == "hello /"
    finally:
        await feeds.close()
        await outbox.aclose()


async def test_feeds_and_notifier_go_through_the_environment_s_proxy(
    plain: str, clients: Clients, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY on a bastion host: the request reaches the proxy (here a server that answers
    any path), not the address asked for (TEST-NET-1, never routed)."""
    monkeypatch.setenv("HTTP_PROXY", f"http://{plain}")
    make, _ = clients
    feeds, outbox = make()
    try:
        for client in (feeds.client, outbox._http()):
            answer = await client.get("http://192.0.2.1/metrics", timeout=5)
            assert answer.text == "hello http://192.0.2.1/metrics"
    finally:
        await feeds.close()
        await outbox.aclose()
