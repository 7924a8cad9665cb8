"""The sandbox's HTTP face of the POS platform: a Starlette app served by uvicorn.

It answers the endpoints the release checklist calls (Supabase REST health, the
`pos-credentials-rotation` edge function, per-provider `validate` functions, token issue
with zombie-token semantics), a Prometheus-style `/api/v1/query`, `/query_range` and `/rules` for KPIs and alerts, Slack and
PagerDuty (alert and change events), Slack Web API and Statuspage sinks that record what the
control room sends, and `/_sandbox/*` controls (deploy, rollback, fail, sink faults) for the
demo and the tests. The middleware (rate limiting, CORS, request timing) lives in
`middleware.py`, the sink recording in `sinks.py`, Slack's Web API in `slack_web.py`,
Statuspage in `statuspage.py`.

Behaviour per scenario comes from `scenarios.py`; the runtime state shared with the
simulator (failing providers, deployed version) lives in the `sandbox.state` table.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import jwt
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from controlroom.sandbox.http.middleware import (
    Background,
    CorsMiddleware,
    FixedWindowRateLimiter,
    MetricsMiddleware,
    RateLimitMiddleware,
    RequestMetrics,
)
from controlroom.sandbox.world.scenarios import PROVIDERS, Scenario, get_scenario
from controlroom.sandbox.http.sinks import (
    SINKS,
    SinkRecorder,
    fault_response,
    redact_pd,
    validate_pd_change,
    validate_pd_event,
)
from controlroom.sandbox.http.slack_web import SlackWebApi
from controlroom.sandbox.http.statuspage import StatuspageApi
from controlroom.sandbox.http.pagerduty_api import PagerDutyApi
from controlroom.infra.tokens import token_fingerprint
from controlroom.sandbox.http.server import sign_jwt

if TYPE_CHECKING:
    from controlroom.sandbox.http.server import HttpSettings

LOCATION_TOKEN_LIFETIME_S = 3600.0
QUERY_TIMEOUT_S = 3.0          # every query; the sandbox must never hang on its database
STATE_CACHE_TTL_S = 0.4        # a deploy by the simulator shows up within this


# How tokens are stored and recorded; the Token Zombie probe looks rows up by the same one.
fingerprint = token_fingerprint

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


# What an anon key may read over REST, and the columns it may select.
READABLE_TABLES: dict[str, tuple[str, ...]] = {
    "pos_integrations_location": ("location_id", "provider", "connected", "sync_state"),
}


def _one_of(presented: str, keys: tuple[str, ...]) -> bool:
    return bool(presented) and any(hmac.compare_digest(presented.encode(), key.encode()) for key in keys)


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


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
        self.metrics = RequestMetrics(background=Background(scenario.api_p95_ms, scenario.api_error_percent))
        self.sinks = SinkRecorder()
        self.slack_api = SlackWebApi(self.sinks, settings.slack_bot_token)
        self.statuspage = StatuspageApi(self.sinks, settings.statuspage_api_key)
        # The failure a scenario's fail_during_watch has scheduled, and when it strikes.
        self._pending_failure: asyncio.Task[None] | None = None
        self._pending_failure_at: float | None = None

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
            self._cancel_pending_failure()
            await self.pool.close()
            self.pool = None

    # -- keys and tokens --

    def _api_keys(self) -> tuple[str, ...]:
        """Every key the project accepts in `apikey`: the legacy JWTs and the new keys."""
        s = self.settings
        return tuple(k for k in (s.anon_key, s.service_key, s.publishable_key, s.secret_key, s.burst_key) if k)

    def _api_key_ok(self, request: Request) -> bool:
        presented = request.headers.get("apikey") or _bearer(request) or ""
        return _one_of(presented, self._api_keys())

    def _privileged(self, request: Request) -> bool:
        """The service_role JWT or the secret key, in apikey (or the JWT as the bearer)."""
        keys = tuple(k for k in (self.settings.service_key, self.settings.secret_key) if k)
        return any(_one_of(p, keys) for p in (request.headers.get("apikey") or "", _bearer(request) or "") if p)

    def _is_api_key(self, token: str) -> bool:
        return _one_of(token, self._api_keys())

    def verified_jwt(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT signed with the project's secret and not expired, else None."""
        try:
            return jwt.decode(token, self.settings.jwt_secret, algorithms=["HS256"], options={"require": ["exp", "role"]})
        except jwt.PyJWTError:
            return None

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
        # A signed JWT, as the platform's auth issues: a rotated-out one still passes the
        # functions' gateway, and only the function itself can refuse it.
        token = sign_jwt(self.settings.jwt_secret, "authenticated", lifetime_s=LOCATION_TOKEN_LIFETIME_S,
                         sub=location_id, jti=secrets.token_urlsafe(12))
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
        """As the platform answers it (supabase/supabase#45462): the OpenAPI root is for
        privileged keys only; a publishable or anon key gets 403."""
        if not self._api_key_ok(request):
            return _error(401, message="Invalid API key")
        refused = await self._check_bearer(request)
        if refused is not None:
            return refused
        if not self._privileged(request):
            return _error(403, message="Access to the schema root requires a secret or service_role key",
                          hint="Query a table (/rest/v1/<table>?select=…) with this key")
        return JSONResponse(
            {
                "swagger": "2.0",
                "info": {"title": "POS platform (sandbox)", "version": "sandbox"},
                "host": request.url.netloc,
                "basePath": "/rest/v1/",
                "paths": {"/pos_integrations_location": {}, "/pos_rotation_metrics": {}, "/rotation_cb": {}},
            }
        )

    async def rest_without_slash(self, request: Request) -> Response:
        return _error(401, message="Invalid path specified in request URL")

    async def rest_table(self, request: Request) -> Response:
        """GET /rest/v1/<table>?select=a,b&limit=N on the tables an anon key may read."""
        if not self._api_key_ok(request):
            return _error(401, message="Invalid API key")
        refused = await self._check_bearer(request)
        if refused is not None:
            return refused
        table = request.path_params["table"]
        columns = READABLE_TABLES.get(table)
        if columns is None:
            return _error(404, code="PGRST205", message=f"Could not find the table 'public.{table}' in the schema cache")
        wanted = [c.strip() for c in request.query_params.get("select", ",".join(columns)).split(",") if c.strip()]
        unknown = [c for c in wanted if c not in columns]
        if unknown or not wanted:
            return _error(400, code="42703", message=f"column {table}.{(unknown or [''])[0]} does not exist")
        try:
            limit = min(1000, max(0, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return _error(400, code="PGRST102", message="limit must be a number")
        rows = await self.db.fetch(  # columns checked against READABLE_TABLES: never text from the request
            f"SELECT {', '.join(wanted)} FROM {table} ORDER BY 1 LIMIT $1", limit, timeout=QUERY_TIMEOUT_S)
        return JSONResponse([{key: _jsonable(value) for key, value in row.items()} for row in rows])

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
            return fault_response("slack", fault)
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            self.sinks.record("slack", request, body, 400, "invalid_payload")
            return PlainTextResponse("invalid_payload", status_code=400)
        self.sinks.record("slack", request, body, 200, None)
        return PlainTextResponse("ok")

    async def pagerduty(self, request: Request) -> Response:
        """An alert event (Events API v2, POST /v2/enqueue)."""
        accepted = await self._pd_event(request, "pagerduty", validate_pd_event)
        if isinstance(accepted, Response):
            return accepted
        dedup_key = accepted.get("dedup_key") or uuid.uuid4().hex
        self.sinks.record("pagerduty", request, {**redact_pd(accepted), "dedup_key": dedup_key}, 202, None)
        return JSONResponse({"status": "success", "message": "Event processed", "dedup_key": dedup_key}, status_code=202)

    async def pagerduty_change(self, request: Request) -> Response:
        """A change event (Events API v2, POST /v2/change/enqueue): a deploy marker. The
        deployment's finish, succeeded, starts a scenario's failure during the watch."""
        accepted = await self._pd_event(request, "pagerduty_change", validate_pd_change)
        if isinstance(accepted, Response):
            return accepted
        self.sinks.record("pagerduty_change", request, redact_pd(accepted), 202, None)
        details = accepted["payload"].get("custom_details") or {}
        if details.get("event") == "deploy_finished" and details.get("outcome") in ("success", "succeeded"):
            self._schedule_watch_failure()
        return JSONResponse({"status": "success", "message": "Change event processed"}, status_code=202)

    async def _pd_event(self, request: Request, sink: str,
                        validate: Callable[[Any, str], list[str]]) -> dict[str, Any] | Response:
        """The event when PagerDuty would accept it; else the answer (an injected fault, 400)."""
        body = await _json_body(request)  # recorded as redact_pd shows it: the routing key is never kept
        fault = self.sinks.take_fault(sink)
        if fault is not None:
            self.sinks.record(sink, request, redact_pd(body), fault.status, "injected fault")
            return fault_response(sink, fault)
        errors = validate(body, self.settings.pagerduty_routing_key)
        if errors:
            self.sinks.record(sink, request, redact_pd(body), 400, "; ".join(errors))
            return _error(400, status="invalid event", message="Event object is invalid", errors=errors)
        return body

    # -- endpoints: sandbox control --

    def _admin_ok(self, request: Request) -> bool:
        token = _bearer(request) or ""
        return bool(self.settings.admin_token) and hmac.compare_digest(token.encode(), self.settings.admin_token.encode())

    async def sink_faults(self, request: Request) -> Response:
        """The next `count` requests to `sink` (default 1), or every request for `for_s`
        seconds, are answered `status` (with Retry-After when `retry_after` is given)."""
        body = await _json_body(request)
        if not isinstance(body, dict) or body.get("sink") not in SINKS:
            return _error(400, error=f"sink must be one of {', '.join(SINKS)}")
        status, count, for_s, retry_after = body.get("status"), body.get("count"), body.get("for_s"), body.get("retry_after")
        if not isinstance(status, int) or not 400 <= status <= 599:
            return _error(400, error="status must be 400-599")
        if count is not None and for_s is not None:
            return _error(400, error="give count (requests) or for_s (seconds), not both")
        if for_s is not None and (isinstance(for_s, bool) or not isinstance(for_s, (int, float)) or not 0 < for_s <= 86400):
            return _error(400, error="for_s must be seconds, more than 0 and at most 86400")
        count = 1 if count is None and for_s is None else count
        if count is not None and (not isinstance(count, int) or count < 1):
            return _error(400, error="count must be >= 1")
        if retry_after is not None and not isinstance(retry_after, int):
            return _error(400, error="retry_after must be whole seconds")
        self.sinks.add_fault(body["sink"], status, retry_after, count=count, for_s=for_s)
        return JSONResponse({"sink": body["sink"], "status": status, "count": count, "for_s": for_s, "retry_after": retry_after})

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
        self._cancel_pending_failure()  # the version that was to fail is gone
        async with self.db.acquire() as conn, conn.transaction():
            await _set_state(conn, "deployed_version", version)
            await _set_state(conn, "failing_providers", [])
        self.state.invalidate()
        return JSONResponse({"deployed_version": version, "failing_providers": []})

    async def sandbox_state(self, request: Request) -> Response:
        rows = await self.db.fetch("SELECT key, value FROM sandbox.state", timeout=QUERY_TIMEOUT_S)
        state: dict[str, Any] = {"scenario": self.scenario.name, "failing_providers": []}
        state.update({row["key"]: json.loads(row["value"]) for row in rows})
        pending = self._pending_failure is not None and not self._pending_failure.done()
        state["pending_failure"] = ({"providers": list(self.scenario.fail_during_watch), "at": self._pending_failure_at}
                                    if pending else None)
        return JSONResponse(state)

    async def fail(self, request: Request) -> Response:
        """POST /_sandbox/fail {"providers": [...]}: these providers fail now, as a deployment
        makes them fail in fudo-outage (a rollback clears them)."""
        body = await _json_body(request)
        providers = body.get("providers") if isinstance(body, dict) else None
        if not isinstance(providers, list) or not providers or any(p not in PROVIDERS for p in providers):
            return _error(400, error=f"providers must be a non-empty list of {', '.join(PROVIDERS)}")
        return JSONResponse({"failing_providers": await self._fail_providers(providers)})

    async def _fail_providers(self, providers: list[str] | tuple[str, ...]) -> list[str]:
        async with self.db.acquire() as conn, conn.transaction():
            raw = await conn.fetchval("SELECT value FROM sandbox.state WHERE key = 'failing_providers' FOR UPDATE",
                                      timeout=QUERY_TIMEOUT_S)
            failing = sorted(set(_json_list(raw)) | set(providers))
            await _set_state(conn, "failing_providers", failing)
        self.state.invalidate()
        return failing

    def _schedule_watch_failure(self) -> None:
        """The scenario's fail_during_watch providers fail after its delay (once: a resent
        change event schedules nothing more)."""
        providers = self.scenario.fail_during_watch
        if not providers or (self._pending_failure is not None and not self._pending_failure.done()):
            return
        delay = self.settings.watch_failure_delay_s
        delay = self.scenario.watch_failure_delay_s if delay is None else delay
        self._pending_failure_at = time.time() + delay
        self._pending_failure = asyncio.create_task(self._fail_later(providers, delay), name="sandbox-watch-failure")

    async def _fail_later(self, providers: tuple[str, ...], delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._fail_providers(providers)

    def _cancel_pending_failure(self) -> None:
        pending, self._pending_failure = self._pending_failure, None
        if pending is not None:
            pending.cancel()

    @staticmethod
    async def _version(request: Request) -> str | None:
        body = await _json_body(request)
        version = body.get("version") if isinstance(body, dict) else None
        return version if isinstance(version, str) and version else None

    # -- endpoints: Prometheus-style KPIs --

    def _series(self) -> dict[str, Callable[[float], float]]:
        """metric name -> its value at a wall-clock time."""
        return {
            "api_latency_p95_ms": self.metrics.p95_ms,
            "api_error_rate_percent": self.metrics.error_rate_percent,
            "api_requests_total": lambda now: float(self.metrics.total),
        }

    def _metric(self, request: Request) -> tuple[str, Callable[[float], float]] | Response:
        name = request.query_params.get("query", "").strip()
        series = self._series()
        if name not in series:
            known = ", ".join(series)
            return _error(400, status="error", errorType="bad_data", error=f"unknown metric {name!r}; known: {known}")
        return name, series[name]

    async def prom_query(self, request: Request) -> Response:
        found = self._metric(request)
        if isinstance(found, Response):
            return found
        name, value_at = found
        now = time.time()
        sample = {"metric": {"__name__": name}, "value": [round(now, 3), _prom_number(value_at(now))]}
        return JSONResponse({"status": "success", "data": {"resultType": "vector", "result": [sample]}})

    async def prom_query_range(self, request: Request) -> Response:
        """A matrix over start..end every step (Prometheus's query_range; at most 11 000
        points), each point the metric over the window that ends there."""
        found = self._metric(request)
        if isinstance(found, Response):
            return found
        name, value_at = found
        params = request.query_params
        try:
            start, end = float(params["start"]), float(params["end"])
            step = _duration_s(params["step"])
        except (KeyError, ValueError) as error:
            return _error(400, status="error", errorType="bad_data", error=f"start, end and step are required numbers: {error}")
        if step <= 0 or end < start:
            return _error(400, status="error", errorType="bad_data",
                          error="zero or negative query resolution step widths are not accepted" if step <= 0
                          else "end timestamp must not be before start time")
        if (end - start) / step > 11000:
            return _error(400, status="error", errorType="bad_data",
                          error="exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
        points, at = [], start
        while at <= end + 1e-9:
            value = value_at(at)
            if not math.isnan(value):  # Prometheus leaves out the steps without a sample
                points.append([round(at, 3), _prom_number(value)])
            at += step
        result = [{"metric": {"__name__": name}, "values": points}] if points else []
        return JSONResponse({"status": "success", "data": {"resultType": "matrix", "result": result}})

    async def prom_rules(self, request: Request) -> Response:
        """The alerting rules the default runbook names (GET /api/v1/rules, Prometheus's
        format), each firing when what it watches is wrong right now."""
        kind = request.query_params.get("type", "")
        if kind not in ("", "alert", "record"):
            return _error(400, status="error", errorType="bad_data", error=f"unsupported type {kind!r}")
        now = time.time()
        open_breakers = await self.db.fetchval("SELECT count(*) FROM rotation_cb WHERE state = 'open'", timeout=QUERY_TIMEOUT_S)
        failing = await self.state.failing_providers(self.db)
        p95, errors = self.metrics.p95_ms(now), self.metrics.error_rate_percent(now)
        watching = [
            ("PosApiLatencyHigh", "api_latency_p95_ms > 500", p95 > 500, f"p95 {p95:.0f} ms"),
            ("PosErrorRateHigh", "api_error_rate_percent > 1", errors > 1, f"{errors:.2f} % errors"),
            ("CircuitBreakerOpen", "count(rotation_cb{state=\"open\"}) > 0", open_breakers > 0, f"{open_breakers} open"),
            ("PosRotationFailing", "pos_rotation_failing_providers > 0", bool(failing), ", ".join(sorted(failing))),
        ]
        rules = [_alerting_rule(name, query, firing, summary, now) for name, query, firing, summary in watching]
        groups = [] if kind == "record" else [
            {"name": "pos-platform", "file": "/etc/prometheus/rules/pos.yml", "interval": 15,
             "rules": rules, "evaluationTime": 0.001, "lastEvaluation": _rfc3339(now)}
        ]
        return JSONResponse({"status": "success", "data": {"groups": groups}})


def _alerting_rule(name: str, query: str, firing: bool, summary: str, now: float) -> dict[str, Any]:
    alerts = [{"labels": {"alertname": name, "severity": "page"}, "annotations": {"summary": summary},
               "state": "firing", "activeAt": _rfc3339(now - 60), "value": "1e+00"}] if firing else []
    return {"state": "firing" if firing else "inactive", "name": name, "query": query, "duration": 60,
            "labels": {"severity": "page"}, "annotations": {"summary": f"{name}: {summary}" if firing else name},
            "alerts": alerts, "health": "ok", "lastError": "", "evaluationTime": 0.0005,
            "lastEvaluation": _rfc3339(now), "type": "alerting"}


def _rfc3339(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _duration_s(text: str) -> float:
    """A step: seconds ("15", "0.5") or a Prometheus duration ("15s", "1m", "1h")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for suffix in ("ms", "s", "m", "h", "d"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


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


STATUSPAGE = "/sinks/statuspage/v1/pages/{page_id}"
FUNCTION_HEADER = "x-pos-function"  # on every answer a function itself gives, never the gateway's


def _edge_function(platform: Platform, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """An edge function as the platform runs it. Its gateway first verifies a JWT (Supabase's
    default, verify_jwt): no Authorization → 401 "Missing authorization header", one that is
    not a JWT signed with the project's secret (or has expired) → 401 "Invalid JWT"; those
    answers are the gateway's and carry no mark. Everything the function itself answers, its
    own 401 for a rotated-out token included, carries its name in FUNCTION_HEADER."""

    async def function(request: Request) -> Response:
        if "authorization" not in request.headers:
            return _error(401, code=401, message="Missing authorization header")
        token = _bearer(request)
        if token is None or platform.verified_jwt(token) is None:
            return _error(401, code=401, message="Invalid JWT")
        response = await handler(request)
        response.headers[FUNCTION_HEADER] = request.url.path.split("/")[3]
        return response

    return function


def create_app(settings: HttpSettings) -> Starlette:
    """The sandbox app for `settings`; the asyncpg pool opens in the app's lifespan."""
    platform = Platform(settings, get_scenario(settings.scenario))
    admin = lambda handler: _admin_only(platform, handler)  # noqa: E731
    pagerduty_api = PagerDutyApi(settings.pagerduty_api_token, platform.scenario)  # who is on call (GET /oncalls)
    routes = [
        Route("/healthz", platform.healthz, methods=["GET"]),
        Route("/rest/v1/", platform.rest_root, methods=["GET"]),
        Route("/rest/v1", platform.rest_without_slash, methods=["GET"]),
        Route("/rest/v1/{table}", platform.rest_table, methods=["GET"]),
        Route("/auth/v1/token", platform.issue_token, methods=["POST"]),
        Route("/functions/v1/pos-credentials-rotation", _edge_function(platform, platform.rotate), methods=["POST"]),
        Route("/functions/v1/pos-{provider}/validate", _edge_function(platform, platform.validate), methods=["GET", "POST"]),
        Route("/sinks/slack/{hook_id:path}", platform.slack, methods=["POST"]),
        Route("/sinks/pagerduty/v2/enqueue", platform.pagerduty, methods=["POST"]),
        Route("/sinks/pagerduty/v2/change/enqueue", platform.pagerduty_change, methods=["POST"]),
        Route("/sinks/slack-api/{method}", platform.slack_api.method, methods=["POST"]),
        Route(f"{STATUSPAGE}/components", platform.statuspage.components_list, methods=["GET"]),
        Route(f"{STATUSPAGE}/incidents", platform.statuspage.incidents_list, methods=["GET"]),
        Route(f"{STATUSPAGE}/incidents", platform.statuspage.incident_create, methods=["POST"]),
        Route(f"{STATUSPAGE}/incidents/{{incident_id}}", platform.statuspage.incident, methods=["GET", "PATCH", "PUT"]),
        Route("/sinks/pagerduty-api/oncalls", pagerduty_api.list_oncalls, methods=["GET"]),
        Route("/_sandbox/sinks/faults", admin(platform.sink_faults), methods=["POST"]),
        Route("/_sandbox/sinks", admin(platform.sink_records), methods=["GET", "DELETE"]),
        Route("/_sandbox/deploy", admin(platform.deploy), methods=["POST"]),
        Route("/_sandbox/rollback", admin(platform.rollback), methods=["POST"]),
        Route("/_sandbox/fail", admin(platform.fail), methods=["POST"]),
        Route("/_sandbox/state", admin(platform.sandbox_state), methods=["GET"]),
        Route("/api/v1/query", platform.prom_query, methods=["GET"]),
        Route("/api/v1/query_range", platform.prom_query_range, methods=["GET"]),
        Route("/api/v1/rules", platform.prom_rules, methods=["GET"]),
    ]
    middleware = [  # outermost first: CORS answers preflights before they count or are timed
        Middleware(CorsMiddleware, allowed_origins=tuple(settings.allowed_origins), allow_any=settings.cors_allow_any),
        Middleware(RateLimitMiddleware, limiter=FixedWindowRateLimiter(settings.rate_limit, settings.rate_window_s)),
        Middleware(MetricsMiddleware, metrics=platform.metrics),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=platform.lifespan)
    app.state.platform = platform  # for in-process tests
    return app
