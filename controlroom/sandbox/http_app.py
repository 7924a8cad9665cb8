"""The sandbox's HTTP face of the POS platform: a Starlette app served by uvicorn.

It answers the endpoints the release checklist calls (Supabase REST health, the
`pos-credentials-rotation` edge function, per-provider `validate` functions, token issue
with zombie-token semantics), a Prometheus-style `/api/v1/query` for KPIs, Slack and
PagerDuty sinks that record what the control room sends, and `/_sandbox/*` controls
(deploy, rollback, sink faults) for the demo and the tests.

Behaviour per scenario comes from `scenarios.py`; the runtime state shared with the
simulator (failing providers, deployed version) lives in the `sandbox.state` table.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlroom.sandbox.scenarios import PROVIDERS, Scenario, get_scenario

if TYPE_CHECKING:
    from controlroom.sandbox.http_server import HttpSettings

QUERY_TIMEOUT_S = 3.0          # every query; the sandbox must never hang on its database
STATE_CACHE_TTL_S = 0.4        # a deploy by the simulator shows up within this
METRICS_WINDOW_S = 300.0       # the KPIs look at the last five minutes
RATE_LIMITED_PREFIXES = ("/rest/v1", "/auth/v1", "/functions/v1")
MEASURED_PREFIXES = ("/rest/", "/functions/")
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_HEADERS = "apikey, authorization, content-type, x-client-info"
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_ACTIONS = ("trigger", "acknowledge", "resolve")
SECRET_HEADERS = frozenset({"authorization", "apikey", "cookie", "x-routing-key", "proxy-authorization"})


def fingerprint(token: str) -> str:
    """How tokens are stored and recorded: first 16 hex digits of SHA-256(token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


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
    """Applies the limiter to the platform's API paths; the key is the apikey, else the IP."""

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
    for name, value in scope["headers"]:
        if name == b"apikey" and value:
            return "key:" + value.decode("latin-1")
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


class RequestMetrics:
    """Handling time and status of /rest and /functions requests, kept for five minutes."""

    def __init__(self, window_s: float = METRICS_WINDOW_S) -> None:
        self.window_s = window_s
        self.total = 0
        self._samples: deque[tuple[float, float, int]] = deque()  # (monotonic, ms, status)

    def record(self, duration_ms: float, status: int, now: float | None = None) -> None:
        self.total += 1
        self._samples.append((time.monotonic() if now is None else now, duration_ms, status))

    def _recent(self, now: float) -> list[tuple[float, float, int]]:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        return list(self._samples)

    def p95_ms(self, now: float | None = None) -> float:
        durations = sorted(s[1] for s in self._recent(time.monotonic() if now is None else now))
        if not durations:
            return math.nan
        return durations[max(0, math.ceil(0.95 * len(durations)) - 1)]  # nearest rank

    def error_rate_percent(self, now: float | None = None) -> float:
        recent = self._recent(time.monotonic() if now is None else now)
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


# -- notification sinks --------------------------------------------------------------------


@dataclass
class SinkFault:
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class SinkRecorder:
    """Everything posted to the sinks, in order, and the faults still to be injected."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"slack": [], "pagerduty": []})
    faults: dict[str, SinkFault] = field(default_factory=dict)

    def take_fault(self, sink: str) -> SinkFault | None:
        fault = self.faults.get(sink)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self.faults[sink]
        return fault

    def record(self, sink: str, request: Request, body: Any, status: int, reason: str | None) -> None:
        self.records[sink].append(
            {
                "received_at": time.time(),
                "path": request.url.path,
                "hook_id": request.path_params.get("hook_id"),
                "headers": {k: v for k, v in request.headers.items() if k not in SECRET_HEADERS},
                "body": body,
                "status": status,
                "accepted": status < 300,
                "reason": reason,
            }
        )

    def clear(self) -> None:
        for records in self.records.values():
            records.clear()
        self.faults.clear()


SLACK_FAULT_BODIES = {400: "invalid_payload", 403: "action_prohibited", 404: "no_service", 410: "channel_is_archived", 429: "rate_limited"}


def _fault_response(sink: str, fault: SinkFault) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if sink == "slack":
        body = SLACK_FAULT_BODIES.get(fault.status, "internal_error")
        return PlainTextResponse(body, status_code=fault.status, headers=headers)
    message = "Rate limit exceeded" if fault.status == 429 else "Injected fault"
    return JSONResponse({"status": "error", "message": message}, status_code=fault.status, headers=headers)


def validate_pd_event(event: Any, routing_key: str) -> list[str]:
    """The PagerDuty Events API v2 rules the control room must respect; [] when valid."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors: list[str] = []
    if not hmac.compare_digest(str(event.get("routing_key", "")), routing_key):
        errors.append("'routing_key' is missing or invalid")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    elif action == "trigger":
        errors.extend(_pd_trigger_errors(event.get("payload")))
    elif not event.get("dedup_key"):
        errors.append(f"'dedup_key' is required for {action}")
    return errors


def _pd_trigger_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger"]
    errors = [f"'payload.{name}' is missing" for name in ("summary", "source") if not payload.get(name)]
    if payload.get("severity") not in PD_SEVERITIES:
        errors.append("'payload.severity' must be one of critical, error, warning, info")
    return errors


def _redact_pd(event: Any) -> Any:
    if isinstance(event, dict) and "routing_key" in event:
        return {**event, "routing_key": "[redacted]"}
    return event


# -- shared runtime state ------------------------------------------------------------------


class StateCache:
    """sandbox.state's failing_providers, read at most every STATE_CACHE_TTL_S seconds."""

    def __init__(self, ttl_s: float = STATE_CACHE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._value: frozenset[str] = frozenset()
        self._read_at = -math.inf
        self._lock = asyncio.Lock()

    async def failing_providers(self, pool: asyncpg.Pool) -> frozenset[str]:
        if time.monotonic() - self._read_at < self.ttl_s:
            return self._value
        async with self._lock:  # one reader refreshes, the others wait for it
            if time.monotonic() - self._read_at >= self.ttl_s:
                raw = await pool.fetchval(
                    "SELECT value FROM sandbox.state WHERE key = 'failing_providers'", timeout=QUERY_TIMEOUT_S
                )
                self._value = frozenset(_json_list(raw))
                self._read_at = time.monotonic()
        return self._value

    def invalidate(self) -> None:
        self._read_at = -math.inf


def _json_list(raw: Any) -> list[str]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return [str(v) for v in value] if isinstance(value, list) else []


async def _set_state(conn: asyncpg.Connection | asyncpg.Pool, key: str, value: Any) -> None:
    await conn.execute(
        "INSERT INTO sandbox.state (key, value) VALUES ($1, $2::jsonb) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        key,
        json.dumps(value),
        timeout=QUERY_TIMEOUT_S,
    )


# -- the platform --------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    fingerprint: str
    location_id: str
    status: str  # 'active' | 'rotated'


def _bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _error(http_status: int, /, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=http_status)


async def _json_body(request: Request) -> Any:
    """The request's JSON, or None when it has no or broken JSON."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class Platform:
    """The simulated platform: request handlers over one asyncpg pool and in-memory state."""

    def __init__(self, settings: HttpSettings, scenario: Scenario) -> None:
        self.settings = settings
        self.scenario = scenario
        self.pool: asyncpg.Pool | None = None
        self.state = StateCache()
        self.metrics = RequestMetrics()
        self.sinks = SinkRecorder()

    @property
    def db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the database pool is not open (lifespan not run)")
        return self.pool

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.pool = await asyncpg.create_pool(
            self.settings.dsn,
            min_size=1,
            max_size=8,
            timeout=10,
            command_timeout=QUERY_TIMEOUT_S,
            server_settings={"application_name": "controlroom-sandbox-http", "statement_timeout": "5000"},
        )
        try:
            yield
        finally:
            await self.pool.close()
            self.pool = None

    # -- keys and tokens --

    def _api_key_ok(self, request: Request) -> bool:
        presented = request.headers.get("apikey") or _bearer(request) or ""
        keys = (self.settings.anon_key, self.settings.service_key)
        return any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys if k)

    def _is_api_key(self, token: str) -> bool:
        keys = (self.settings.anon_key, self.settings.service_key)
        return any(hmac.compare_digest(token.encode(), k.encode()) for k in keys if k)

    async def _lookup(self, token: str) -> TokenRow | None:
        row = await self.db.fetchrow(
            "SELECT fingerprint, location_id, status FROM sandbox.api_tokens WHERE fingerprint = $1",
            fingerprint(token),
            timeout=QUERY_TIMEOUT_S,
        )
        return TokenRow(row["fingerprint"], row["location_id"], row["status"]) if row else None

    async def _gate(self, token: str) -> TokenRow | Response:
        """The one place token semantics live: unknown → 401, zombie → 401 at once (no write),
        unless the scenario accepts zombies, which then answer slowly."""
        row = await self._lookup(token)
        if row is None:
            return _error(401, error="invalid_token")
        if row.status == "rotated":
            if not self.scenario.zombie_accepted:
                return _error(401, error="token_revoked")
            await asyncio.sleep(self.scenario.zombie_delay_ms / 1000.0)
        return row

    async def _check_bearer(self, request: Request) -> Response | None:
        """Where a location token is optional, one that is presented must still pass the gate
        (an API key in Authorization is not a location token)."""
        token = _bearer(request)
        if token is None or self._is_api_key(token):
            return None
        gate = await self._gate(token)
        return gate if isinstance(gate, Response) else None

    async def _issue(self, conn: asyncpg.Connection | asyncpg.Pool, location_id: str) -> str:
        token = secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO sandbox.api_tokens (fingerprint, location_id, status) VALUES ($1, $2, 'active')",
            fingerprint(token),
            location_id,
            timeout=QUERY_TIMEOUT_S,
        )
        return token

    async def _provider_of(self, conn: asyncpg.Connection | asyncpg.Pool, location_id: str) -> str | None:
        return await conn.fetchval(
            "SELECT provider FROM pos_integrations_location WHERE location_id = $1",
            location_id,
            timeout=QUERY_TIMEOUT_S,
        )

    # -- endpoints: health, REST, auth --

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def rest_root(self, request: Request) -> Response:
        if not self._api_key_ok(request):
            return _error(401, message="Invalid API key")
        refused = await self._check_bearer(request)
        if refused is not None:
            return refused
        return JSONResponse(
            {
                "swagger": "2.0",
                "info": {"title": "POS platform (sandbox)", "version": "sandbox"},
                "host": request.url.netloc,
                "basePath": "/rest/v1/",
                "paths": {"/pos_integrations_location": {}, "/pos_rotation_metrics": {}, "/rotation_cb": {}},
            }
        )

    async def issue_token(self, request: Request) -> Response:
        if not self._api_key_ok(request):
            return _error(401, message="Invalid API key")
        refused = await self._check_bearer(request)
        if refused is not None:
            return refused
        body = await _json_body(request)
        location_id = body.get("location_id") if isinstance(body, dict) else None
        if not isinstance(location_id, str) or not location_id:
            return _error(400, error="invalid_request", message="location_id is required")
        if await self._provider_of(self.db, location_id) is None:
            return _error(404, error="unknown_location")
        token = await self._issue(self.db, location_id)
        return JSONResponse({"access_token": token, "token_type": "bearer", "location_id": location_id})

    # -- endpoints: edge functions --

    async def rotate(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await _json_body(request)
        if isinstance(body, dict) and body.get("test") is True:
            return JSONResponse({"ok": True, "test": True, "rotation_capable": True})
        token = _bearer(request)
        if token is None or self._is_api_key(token):
            return _error(401, error="invalid_token", message="a location token is required")
        gate = await self._gate(token)
        if isinstance(gate, Response):
            return gate
        if gate.status == "rotated":  # only reached when the scenario accepts zombies
            return await self._zombie_rotation(gate, started)
        return await self._rotation(gate, started)

    async def _rotation(self, row: TokenRow, started: float) -> Response:
        failing = await self.state.failing_providers(self.db)
        async with self.db.acquire() as conn, conn.transaction():
            provider = await self._provider_of(conn, row.location_id) or "unknown"
            if provider in failing:
                await self._record_rotation(conn, row, provider, started, success=False, error="provider_unavailable")
                return _error(503, error="provider_unavailable", provider=provider)
            rotated = await conn.execute(
                "UPDATE sandbox.api_tokens SET status = 'rotated', rotated_at = now() "
                "WHERE fingerprint = $1 AND status = 'active'",
                row.fingerprint,
                timeout=QUERY_TIMEOUT_S,
            )
            if rotated == "UPDATE 0":  # a concurrent request rotated it first: now a zombie
                return _error(401, error="token_revoked")
            new_token = await self._issue(conn, row.location_id)
            await self._record_rotation(conn, row, provider, started, success=True)
        return JSONResponse({"access_token": new_token, "token_type": "bearer", "rotated": True})

    async def _zombie_rotation(self, row: TokenRow, started: float) -> Response:
        """The zombie-token scenario's bug: the old token is honoured, and may even rotate."""
        if not self.scenario.zombie_triggers_rotation:
            return JSONResponse({"ok": True, "rotated": False})
        async with self.db.acquire() as conn, conn.transaction():
            provider = await self._provider_of(conn, row.location_id) or "unknown"
            new_token = await self._issue(conn, row.location_id)
            await self._record_rotation(conn, row, provider, started, success=True)
        return JSONResponse({"access_token": new_token, "token_type": "bearer", "rotated": True})

    @staticmethod
    async def _record_rotation(
        conn: asyncpg.Connection, row: TokenRow, provider: str, started: float, *, success: bool, error: str | None = None
    ) -> None:
        await conn.execute(
            "INSERT INTO pos_rotation_metrics (location_id, provider, success, latency_ms, token_fingerprint, error) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            row.location_id,
            provider,
            success,
            int((time.perf_counter() - started) * 1000),
            row.fingerprint,
            error,
            timeout=QUERY_TIMEOUT_S,
        )

    async def validate(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            return _error(404, error="unknown_function", message=f"no function pos-{provider}/validate")
        refused = await self._check_bearer(request)
        if refused is not None:
            return refused
        delay_ms = self.scenario.extra_latency_ms.get(provider, 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if provider in await self.state.failing_providers(self.db):
            return _error(503, provider=provider, status="failing")
        count = await self.db.fetchval(
            "SELECT count(*) FROM pos_integrations_location WHERE provider = $1", provider, timeout=QUERY_TIMEOUT_S
        )
        status = "degraded" if provider in self.scenario.degraded_providers else "ok"
        return JSONResponse({"provider": provider, "status": status, "locations": count})

    # -- endpoints: sinks --

    async def slack(self, request: Request) -> Response:
        body = await _json_body(request)
        fault = self.sinks.take_fault("slack")
        if fault is not None:
            self.sinks.record("slack", request, body, fault.status, "injected fault")
            return _fault_response("slack", fault)
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            self.sinks.record("slack", request, body, 400, "invalid_payload")
            return PlainTextResponse("invalid_payload", status_code=400)
        self.sinks.record("slack", request, body, 200, None)
        return PlainTextResponse("ok")

    async def pagerduty(self, request: Request) -> Response:
        body = await _json_body(request)
        shown = _redact_pd(body)  # the routing key is a secret: never kept
        fault = self.sinks.take_fault("pagerduty")
        if fault is not None:
            self.sinks.record("pagerduty", request, shown, fault.status, "injected fault")
            return _fault_response("pagerduty", fault)
        errors = validate_pd_event(body, self.settings.pagerduty_routing_key)
        if errors:
            self.sinks.record("pagerduty", request, shown, 400, "; ".join(errors))
            return _error(400, status="invalid event", message="Event object is invalid", errors=errors)
        dedup_key = body.get("dedup_key") or uuid.uuid4().hex
        self.sinks.record("pagerduty", request, {**shown, "dedup_key": dedup_key}, 202, None)
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": dedup_key}, status_code=202)

    # -- endpoints: sandbox control --

    def _admin_ok(self, request: Request) -> bool:
        token = _bearer(request) or ""
        return bool(self.settings.admin_token) and hmac.compare_digest(token.encode(), self.settings.admin_token.encode())

    async def sink_faults(self, request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or body.get("sink") not in ("slack", "pagerduty"):
            return _error(400, error="sink must be 'slack' or 'pagerduty'")
        status, count, retry_after = body.get("status"), body.get("count", 1), body.get("retry_after")
        if not isinstance(status, int) or not 400 <= status <= 599 or not isinstance(count, int) or count < 1:
            return _error(400, error="status must be 400-599 and count >= 1")
        if retry_after is not None and not isinstance(retry_after, int):
            return _error(400, error="retry_after must be whole seconds")
        self.sinks.faults[body["sink"]] = SinkFault(status, retry_after, count)
        return JSONResponse({"sink": body["sink"], "status": status, "count": count, "retry_after": retry_after})

    async def sink_records(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.sinks.clear()
            return JSONResponse({"cleared": True})
        return JSONResponse(self.sinks.records)

    async def deploy(self, request: Request) -> Response:
        version = await self._version(request)
        if version is None:
            return _error(400, error="version is required")
        async with self.db.acquire() as conn, conn.transaction():
            await _set_state(conn, "deployed_version", version)
            if self.scenario.fail_on_deploy:
                await _set_state(conn, "failing_providers", list(self.scenario.fail_on_deploy))
        self.state.invalidate()
        failing = sorted(await self.state.failing_providers(self.db))
        return JSONResponse({"deployed_version": version, "failing_providers": failing})

    async def rollback(self, request: Request) -> Response:
        version = await self._version(request)
        if version is None:
            return _error(400, error="version is required")
        async with self.db.acquire() as conn, conn.transaction():
            await _set_state(conn, "deployed_version", version)
            await _set_state(conn, "failing_providers", [])
        self.state.invalidate()
        return JSONResponse({"deployed_version": version, "failing_providers": []})

    async def sandbox_state(self, request: Request) -> Response:
        rows = await self.db.fetch("SELECT key, value FROM sandbox.state", timeout=QUERY_TIMEOUT_S)
        state: dict[str, Any] = {"scenario": self.scenario.name, "failing_providers": []}
        state.update({row["key"]: json.loads(row["value"]) for row in rows})
        return JSONResponse(state)

    @staticmethod
    async def _version(request: Request) -> str | None:
        body = await _json_body(request)
        version = body.get("version") if isinstance(body, dict) else None
        return version if isinstance(version, str) and version else None

    # -- endpoints: Prometheus-style KPIs --

    async def prom_query(self, request: Request) -> Response:
        name = request.query_params.get("query", "").strip()
        values: dict[str, Callable[[], float]] = {
            "api_latency_p95_ms": self.metrics.p95_ms,
            "api_error_rate_percent": self.metrics.error_rate_percent,
            "api_requests_total": lambda: float(self.metrics.total),
        }
        if name not in values:
            known = ", ".join(values)
            return _error(400, status="error", errorType="bad_data", error=f"unknown metric {name!r}; known: {known}")
        sample = {"metric": {"__name__": name}, "value": [round(time.time(), 3), _prom_number(values[name]())]}
        return JSONResponse({"status": "success", "data": {"resultType": "vector", "result": [sample]}})


def _prom_number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(round(value, 3))


def _admin_only(platform: Platform, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        if not platform._admin_ok(request):
            return _error(401, error="admin token required")
        return await handler(request)

    return guarded


def create_app(settings: HttpSettings) -> Starlette:
    """The sandbox app for `settings`; the asyncpg pool opens in the app's lifespan."""
    platform = Platform(settings, get_scenario(settings.scenario))
    admin = lambda handler: _admin_only(platform, handler)  # noqa: E731
    routes = [
        Route("/healthz", platform.healthz, methods=["GET"]),
        Route("/rest/v1/", platform.rest_root, methods=["GET"]),
        Route("/auth/v1/token", platform.issue_token, methods=["POST"]),
        Route("/functions/v1/pos-credentials-rotation", platform.rotate, methods=["POST"]),
        Route("/functions/v1/pos-{provider}/validate", platform.validate, methods=["GET", "POST"]),
        Route("/sinks/slack/{hook_id:path}", platform.slack, methods=["POST"]),
        Route("/sinks/pagerduty/v2/enqueue", platform.pagerduty, methods=["POST"]),
        Route("/_sandbox/sinks/faults", admin(platform.sink_faults), methods=["POST"]),
        Route("/_sandbox/sinks", admin(platform.sink_records), methods=["GET", "DELETE"]),
        Route("/_sandbox/deploy", admin(platform.deploy), methods=["POST"]),
        Route("/_sandbox/rollback", admin(platform.rollback), methods=["POST"]),
        Route("/_sandbox/state", admin(platform.sandbox_state), methods=["GET"]),
        Route("/api/v1/query", platform.prom_query, methods=["GET"]),
    ]
    middleware = [  # outermost first: CORS answers preflights before they count or are timed
        Middleware(CorsMiddleware, allowed_origins=tuple(settings.allowed_origins), allow_any=settings.cors_allow_any),
        Middleware(RateLimitMiddleware, limiter=FixedWindowRateLimiter(settings.rate_limit, settings.rate_window_s)),
        Middleware(MetricsMiddleware, metrics=platform.metrics),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=platform.lifespan)
    app.state.platform = platform  # for in-process tests
    return app
