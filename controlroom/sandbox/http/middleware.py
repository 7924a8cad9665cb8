"""The sandbox's ASGI middleware: per-key rate limiting, strict CORS, and request timing.

`create_app` in `http_app.py` stacks them (CORS outermost); `RequestMetrics` is what the
platform's Prometheus-style `/api/v1/query` reads.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_WINDOW_S = 300.0       # the KPIs look at the last five minutes
RATE_LIMITED_PREFIXES = ("/rest/v1", "/auth/v1", "/functions/v1")
MEASURED_PREFIXES = ("/rest/", "/functions/")
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "apikey, authorization, content-type, x-client-info"


# -- rate limiting ------------------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int  # whole seconds until the window resets (>= 1 when refused)


class FixedWindowRateLimiter:
    """At most `limit` hits per `window_s` per key, windows aligned to multiples of window_s.

    Pure: the caller passes the clock, so tests need no sleeping.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._windows: dict[str, tuple[int, int]] = {}  # key -> (window index, hits)

    def hit(self, key: str, now: float) -> RateDecision:
        index = math.floor(now / self.window_s)
        current, hits = self._windows.get(key, (index, 0))
        if current != index:
            hits = 0
        hits += 1
        self._windows[key] = (index, hits)
        if len(self._windows) > 10_000:  # many clients: forget the ones from older windows
            self._forget_before(index)
        allowed = hits <= self.limit
        reset_in = (index + 1) * self.window_s - now
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=max(self.limit - hits, 0),
            retry_after_s=0 if allowed else max(1, math.ceil(reset_in)),
        )

    def _forget_before(self, index: int) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[0] >= index}


class RateLimitMiddleware:
    """Applies the limiter to the platform's API paths, per client (see _client_key)."""

    def __init__(self, app: ASGIApp, limiter: FixedWindowRateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(RATE_LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        decision = self.limiter.hit(_client_key(scope), time.time())
        headers = {"X-RateLimit-Limit": str(decision.limit), "X-RateLimit-Remaining": str(decision.remaining)}
        if not decision.allowed:
            headers["Retry-After"] = str(decision.retry_after_s)
            response = JSONResponse({"message": "rate limit exceeded"}, status_code=429, headers=headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, _with_headers(send, headers))


def _client_key(scope: Scope) -> str:
    """Who a request counts against: its apikey, else its bearer token, else its address (so
    two clients with keys of their own never share a limit)."""
    headers = dict(scope["headers"])
    if headers.get(b"apikey"):
        return "key:" + headers[b"apikey"].decode("latin-1")
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "bearer:" + token.strip()
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


def _with_headers(send: Send, extra: dict[str, str]) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_encode(extra)]}
        await send(message)

    return wrapped


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


# -- CORS ---------------------------------------------------------------------------------


class CorsMiddleware:
    """Strict CORS: allowed origins are echoed (never "*"), a foreign preflight gets 403.

    Starlette's CORSMiddleware answers a foreign preflight with 400 and can be talked into
    "*"; the checklist wants "production origins only, no wildcards", so this is explicit.
    `allow_any` reproduces the wildcard misconfiguration a probe must catch.
    """

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...], allow_any: bool) -> None:
        self.app = app
        self.allowed = frozenset(allowed_origins)
        self.allow_any = allow_any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allow = self._allow_origin_value(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(allow)(scope, receive, send)
            return
        extra = {"Vary": "Origin"}
        if allow is not None:
            extra["Access-Control-Allow-Origin"] = allow
        await self.app(scope, receive, _with_headers(send, extra))

    def _allow_origin_value(self, origin: str) -> str | None:
        if self.allow_any:
            return "*"
        return origin if origin in self.allowed else None

    @staticmethod
    def _preflight(allow: str | None) -> Response:
        if allow is None:
            return PlainTextResponse("Disallowed CORS origin", status_code=403, headers={"Vary": "Origin"})
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": allow,
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )


# -- the server's own latency / error KPIs -------------------------------------------------


Sample = tuple[float, float, int]  # (wall-clock seconds, handling ms, HTTP status)


@dataclass(frozen=True)
class Background:
    """The traffic of the platform's other clients: `per_s` requests a second whose latencies
    spread evenly up to `p95_ms` at their 95th percentile and of which `error_percent` are
    5xx. Deterministic in time, so any past window (a query_range) is the same every time."""

    p95_ms: float
    error_percent: float = 0.0
    per_s: float = 1.0

    def samples(self, start: float, end: float) -> list[Sample]:
        found: list[Sample] = []
        for k in range(math.floor(start * self.per_s) + 1, math.floor(end * self.per_s) + 1):
            spread = (k * 0.6180339887) % 1.0  # golden-ratio steps: evenly spread, no clumps
            failed = (k * 0.7548776662) % 1.0 < self.error_percent / 100.0
            found.append((k / self.per_s, self.p95_ms * (0.5 + 0.5 * spread / 0.95), 500 if failed else 200))
        return found


class RequestMetrics:
    """Handling time and status of /rest and /functions requests, kept for five minutes, and
    the background traffic of other clients (when there is one) in the same window."""

    def __init__(self, window_s: float = METRICS_WINDOW_S, background: Background | None = None) -> None:
        self.window_s = window_s
        self.background = background
        self.total = 0
        self._samples: deque[Sample] = deque()

    def record(self, duration_ms: float, status: int, now: float | None = None) -> None:
        self.total += 1
        self._samples.append((time.time() if now is None else now, duration_ms, status))

    def _recent(self, now: float) -> list[Sample]:
        """The samples of the window that ends at `now` (measured ones are kept one window)."""
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        measured = [s for s in self._samples if now - self.window_s < s[0] <= now]
        return measured + (self.background.samples(now - self.window_s, now) if self.background else [])

    def p95_ms(self, now: float | None = None) -> float:
        durations = sorted(s[1] for s in self._recent(time.time() if now is None else now))
        if not durations:
            return math.nan
        return durations[max(0, math.ceil(0.95 * len(durations)) - 1)]  # nearest rank

    def error_rate_percent(self, now: float | None = None) -> float:
        recent = self._recent(time.time() if now is None else now)
        if not recent:
            return math.nan  # 0/0, as Prometheus would answer
        return 100.0 * sum(1 for s in recent if s[2] >= 500) / len(recent)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(MEASURED_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response starts is a server error

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.record((time.perf_counter() - started) * 1000.0, status)

