"""One TLS context for every HTTP client of the process, and the probes' transport.

httpx builds a TLS context for every client it makes, reading the whole CA bundle each time
(~30–40 ms of CPU on the event loop). `tls_context()` is built once and shared: the live feeds
and the notifier pass it as `verify` (their clients keep httpx's handling of the environment:
HTTP(S)_PROXY, NO_PROXY), and the probes' no-retry transport builds it on their first https
request only. A module of its own so that importing the checks (the engine, the TUI) does not
import httpx, httpcore and certifi (~90 ms): a client's first use imports it."""

from __future__ import annotations

import functools
import ssl
from typing import Generic, TypeVar

import httpcore  # noqa: F401 - httpx imports it on the first client (~30 ms); here, with the transport
import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of the process: httpx's default one (SSL_CERT_FILE or
    SSL_CERT_DIR when set, a company CA on a bastion host; else certifi's roots). Building one
    reads the whole CA bundle, so it is built once."""
    return httpx.create_ssl_context()


Inner = TypeVar("Inner", httpx.AsyncHTTPTransport, httpx.HTTPTransport)


class _ByScheme(Generic[Inner]):
    """Plain http:// goes through a transport that never needs certificates; https:// through
    one verifying with tls_context(), made on the first https request. Retries: none (httpx's
    default, made explicit): a probe measures one attempt."""

    kind: type[Inner]

    def __init__(self) -> None:
        self._plain: Inner = self.kind(retries=0, verify=False)  # only ever sees http://
        self._tls: Inner | None = None

    def _for(self, request: httpx.Request) -> Inner:
        if request.url.scheme != "https":
            return self._plain
        if self._tls is None:
            self._tls = self.kind(retries=0, verify=tls_context())
        return self._tls

    def _inner(self) -> list[Inner]:
        return [self._plain] + ([self._tls] if self._tls is not None else [])


class NoRetryTransport(_ByScheme[httpx.AsyncHTTPTransport], httpx.AsyncBaseTransport):
    kind = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._for(request).handle_async_request(request)

    async def aclose(self) -> None:
        for transport in self._inner():
            await transport.aclose()


class NoRetrySyncTransport(_ByScheme[httpx.HTTPTransport], httpx.BaseTransport):
    """NoRetryTransport for a blocking client: a request timed on a thread of its own, where
    the control room's event loop (a frame being laid out, a garbage collection) cannot add
    its own delays to the latency measured."""

    kind = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._for(request).handle_request(request)

    def close(self) -> None:
        for transport in self._inner():
            transport.close()
