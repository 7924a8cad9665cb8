"""The HTTP transport of the probes: no retries of its own, and one TLS context for the
process. A module of its own so that importing the checks (the engine, the TUI) does not import
httpx, httpcore and certifi (~90 ms): `ProbeContext` imports it when a probe run starts."""

from __future__ import annotations

import functools
import ssl

import certifi
import httpcore  # noqa: F401 - httpx imports it on the first client (~30 ms); here, with the transport
import httpx


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context (certifi's roots, as httpx's default) for every probe client of the
    process: building one reads the whole CA bundle (~30 ms), so it is built once, and only
    when a probe first speaks https."""
    return ssl.create_default_context(cafile=certifi.where())


class NoRetryTransport(httpx.AsyncBaseTransport):
    """No retries of its own (retries=0, made explicit). Plain http:// goes through a
    transport that never needs certificates; https:// through one verifying with
    _tls_context(), made on the first https request."""

    def __init__(self) -> None:
        self._plain = httpx.AsyncHTTPTransport(retries=0, verify=False)  # only ever sees http://
        self._tls: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return await self._plain.handle_async_request(request)
        if self._tls is None:
            self._tls = httpx.AsyncHTTPTransport(retries=0, verify=_tls_context())
        return await self._tls.handle_async_request(request)

    async def aclose(self) -> None:
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()


class NoRetrySyncTransport(httpx.BaseTransport):
    """NoRetryTransport for a blocking client: a request timed on a thread of its own, where
    the control room's event loop (a frame being laid out, a garbage collection) cannot add
    its own delays to the latency measured."""

    def __init__(self) -> None:
        self._plain = httpx.HTTPTransport(retries=0, verify=False)  # only ever sees http://
        self._tls: httpx.HTTPTransport | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return self._plain.handle_request(request)
        if self._tls is None:
            self._tls = httpx.HTTPTransport(retries=0, verify=_tls_context())
        return self._tls.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        if self._tls is not None:
            self._tls.close()
