"""The sandbox HTTP server, over a real socket, in its own process."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import psutil
import pytest

from controlroom.sandbox.http.app import create_app, fingerprint
from controlroom.sandbox.http.middleware import FixedWindowRateLimiter, RequestMetrics
from controlroom.sandbox.http.server import HttpServerProcess, HttpServerStartError, HttpSettings, sign_jwt
from controlroom.sandbox.http.sinks import SINKS
from controlroom.sandbox.pg.postgres import EmbeddedPostgres, free_port

from http_fixtures import ORIGIN, bearer, create_database, issue_token, make_zombie, server, shared_dsn, start_server  # noqa: F401 - fixtures

ROTATE = "/functions/v1/pos-credentials-rotation"

pytestmark = pytest.mark.timeout(60)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def zombie_server(shared_dsn: str) -> AsyncIterator[HttpServerProcess]:
    process = await start_server(HttpSettings(dsn=shared_dsn, scenario="zombie-token", rate_limit=10_000))
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def loose_server(shared_dsn: str) -> AsyncIterator[HttpServerProcess]:
    """Misconfigured on purpose: wildcard CORS, a tiny rate limit; scenario 'degraded'."""
    settings = HttpSettings(dsn=shared_dsn, scenario="degraded", cors_allow_any=True, rate_limit=5, rate_window_s=1.0)
    process = await start_server(settings)
    yield process
    process.stop()


@pytest.fixture
async def client(server: HttpServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        yield http


@pytest.fixture
async def db(shared_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(shared_dsn, timeout=10)
    yield conn
    await conn.close()


def admin(server: HttpServerProcess) -> dict[str, str]:
    return bearer(server.settings.admin_token)


# -- health, REST, auth --------------------------------------------------------------------


async def test_healthz_needs_no_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"ok": True}


async def test_rest_root_needs_a_valid_api_key(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    settings = server.settings
    assert (await client.get("/rest/v1/")).json() == {"message": "Invalid API key"}
    assert (await client.get("/rest/v1/", headers={"apikey": "nope"})).status_code == 401
    # As the platform: the schema root is for privileged keys; anon gets 403; no slash, 401.
    anon = await client.get("/rest/v1/", headers={"apikey": settings.anon_key})
    assert anon.status_code == 403 and "service_role" in anon.json()["message"]
    assert (await client.get("/rest/v1", headers={"apikey": settings.anon_key})).status_code == 401
    ok = await client.get("/rest/v1/", headers=bearer(settings.service_key))
    assert ok.status_code == 200 and "paths" in ok.json()
    # A readable table answers the anon key: what the default runbook's health item asks for.
    table = await client.get("/rest/v1/pos_integrations_location?select=location_id&limit=1",
                             headers={"apikey": settings.anon_key})
    assert table.status_code == 200 and len(table.json()) == 1 and set(table.json()[0]) == {"location_id"}
    assert (await client.get("/rest/v1/sandbox.api_tokens", headers={"apikey": settings.anon_key})).status_code == 404
    bad = await client.get("/rest/v1/pos_integrations_location?select=location_id;drop", headers={"apikey": settings.anon_key})
    assert bad.status_code == 400


async def test_token_issue_records_an_active_token(
    client: httpx.AsyncClient, server: HttpServerProcess, db: asyncpg.Connection
) -> None:
    key = {"apikey": server.settings.anon_key}
    response = await client.post("/auth/v1/token", json={"location_id": "loc-maxi-1"}, headers=key)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["location_id"] == "loc-maxi-1"
    row = await db.fetchrow("SELECT * FROM sandbox.api_tokens WHERE fingerprint = $1", fingerprint(body["access_token"]))
    assert row["status"] == "active" and row["location_id"] == "loc-maxi-1"
    assert (await client.post("/auth/v1/token", json={"location_id": "loc-maxi-1"})).status_code == 401
    assert (await client.post("/auth/v1/token", json={}, headers=key)).status_code == 400
    assert (await client.post("/auth/v1/token", json={"location_id": "nowhere"}, headers=key)).status_code == 404


# -- rotation and zombie tokens ------------------------------------------------------------


async def test_rotation_test_call_writes_nothing(client: httpx.AsyncClient, server: HttpServerProcess,
                                                 db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT count(*) FROM pos_rotation_metrics")
    # The seed's curl, without credentials: the functions' gateway refuses it.
    refused = await client.post(ROTATE, json={"test": True})
    assert refused.status_code == 401 and refused.json() == {"code": 401, "message": "Missing authorization header"}
    response = await client.post(ROTATE, json={"test": True}, headers=bearer(server.settings.anon_key))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "test": True, "rotation_capable": True}
    assert await db.fetchval("SELECT count(*) FROM pos_rotation_metrics") == before


async def test_rotation_replaces_the_token_and_records_a_metric(
    client: httpx.AsyncClient, server: HttpServerProcess, db: asyncpg.Connection
) -> None:
    old, new = await make_zombie(client, server.settings, "loc-fudo-1")
    tokens = {r["fingerprint"]: r for r in await db.fetch("SELECT * FROM sandbox.api_tokens")}
    assert tokens[fingerprint(old)]["status"] == "rotated" and tokens[fingerprint(old)]["rotated_at"] is not None
    assert tokens[fingerprint(new)]["status"] == "active" and tokens[fingerprint(new)]["location_id"] == "loc-fudo-1"
    metric = await db.fetchrow("SELECT * FROM pos_rotation_metrics WHERE token_fingerprint = $1", fingerprint(old))
    assert metric["success"] and metric["provider"] == "fudo" and metric["location_id"] == "loc-fudo-1"
    assert metric["latency_ms"] >= 0


async def test_zombie_token_gets_401_fast_and_changes_nothing(
    client: httpx.AsyncClient, server: HttpServerProcess, db: asyncpg.Connection
) -> None:
    zombie, _ = await make_zombie(client, server.settings, "loc-fudo-2")
    tokens_before = await db.fetch("SELECT * FROM sandbox.api_tokens ORDER BY fingerprint")
    metrics_before = await db.fetchval("SELECT count(*) FROM pos_rotation_metrics")

    started = time.perf_counter()
    response = await client.post(ROTATE, headers=bearer(zombie), json={})
    elapsed_ms = (time.perf_counter() - started) * 1000

    assert response.status_code == 401 and response.json() == {"error": "token_revoked"}
    assert elapsed_ms < 100, f"zombie answered in {elapsed_ms:.0f} ms"
    assert await db.fetchval("SELECT count(*) FROM pos_rotation_metrics") == metrics_before
    assert await db.fetch("SELECT * FROM sandbox.api_tokens ORDER BY fingerprint") == tokens_before
    # The same gate wherever a location token is presented.
    validate = await client.get("/functions/v1/pos-fudo/validate", headers=bearer(zombie))
    assert validate.status_code == 401 and validate.json() == {"error": "token_revoked"}
    rest = await client.get("/rest/v1/", headers={"apikey": server.settings.anon_key, **bearer(zombie)})
    assert rest.status_code == 401 and rest.json() == {"error": "token_revoked"}


async def test_unknown_or_missing_token_is_invalid(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    # Not a JWT: the gateway refuses it. A validly signed one the platform never issued: the
    # function does.
    unknown = sign_jwt(server.settings.jwt_secret, "authenticated", sub="loc-x")
    for path in (ROTATE, "/functions/v1/pos-maxirest/validate"):
        response = await client.post(path, headers=bearer("made-up"), json={})
        assert response.status_code == 401 and response.json() == {"code": 401, "message": "Invalid JWT"}
        response = await client.post(path, headers=bearer(unknown), json={})
        assert response.status_code == 401 and response.json() == {"error": "invalid_token"}
    assert (await client.post(ROTATE, json={})).status_code == 401


async def test_zombie_scenario_accepts_old_tokens_slowly_and_rotates(
    zombie_server: HttpServerProcess, db: asyncpg.Connection
) -> None:
    async with httpx.AsyncClient(base_url=zombie_server.base_url, timeout=5) as http:
        zombie, _ = await make_zombie(http, zombie_server.settings, "loc-maxi-1")
        started = time.perf_counter()
        response = await http.post(ROTATE, headers=bearer(zombie), json={})
        elapsed_ms = (time.perf_counter() - started) * 1000
        assert response.status_code == 200 and response.json()["rotated"] is True
        assert elapsed_ms >= 180
        rows = await db.fetch("SELECT * FROM pos_rotation_metrics WHERE token_fingerprint = $1", fingerprint(zombie))
        assert len(rows) == 2  # the legitimate rotation, then the zombie's
        assert (await http.get("/functions/v1/pos-maxirest/validate", headers=bearer(zombie))).status_code == 200


# -- validate functions --------------------------------------------------------------------


async def test_validate_functions(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    anon = bearer(server.settings.anon_key)
    for provider, count in (("fudo", 2), ("maxirest", 1), ("bistrsoft", 1)):
        response = await client.get(f"/functions/v1/pos-{provider}/validate", headers=anon)
        assert response.status_code == 200
        assert response.json() == {"provider": provider, "status": "ok", "locations": count}
        assert response.headers["x-pos-function"] == f"pos-{provider}"
    assert (await client.post("/functions/v1/pos-fudo/validate", headers=anon)).status_code == 200
    assert (await client.get("/functions/v1/pos-toast/validate", headers=anon)).status_code == 404


async def test_degraded_provider_is_slow_and_says_so(loose_server: HttpServerProcess) -> None:
    async with httpx.AsyncClient(base_url=loose_server.base_url, timeout=5) as http:
        started = time.perf_counter()
        response = await http.get("/functions/v1/pos-bistrsoft/validate", headers=bearer(loose_server.settings.anon_key))
        assert time.perf_counter() - started >= 0.65
        assert response.status_code == 200 and response.json()["status"] == "degraded"


# -- CORS ----------------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "apikey"}


async def test_cors_allows_production_origin_only(client: httpx.AsyncClient) -> None:
    allowed = await client.options("/rest/v1/", headers=preflight(ORIGIN))
    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert {"apikey", "authorization", "content-type"} <= {
        h.strip() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    foreign = await client.options(ROTATE, headers=preflight("https://evil.example"))
    assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    simple = await client.get("/healthz", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-origin" not in (await client.get("/healthz", headers={"Origin": "https://evil.example"})).headers


async def test_cors_wildcard_misconfiguration(loose_server: HttpServerProcess) -> None:
    async with httpx.AsyncClient(base_url=loose_server.base_url, timeout=5) as http:
        response = await http.options("/healthz", headers=preflight("https://evil.example"))
        assert response.status_code in (200, 204) and response.headers["access-control-allow-origin"] == "*"


# -- rate limiting -------------------------------------------------------------------------


async def test_burst_gets_429_with_retry_after(loose_server: HttpServerProcess) -> None:
    key = {"apikey": loose_server.settings.service_key}
    async with httpx.AsyncClient(base_url=loose_server.base_url, timeout=5) as http:
        responses = await asyncio.gather(*(http.get("/rest/v1/", headers=key) for _ in range(12)))
        limited = [r for r in responses if r.status_code == 429]
        assert len(limited) >= 2  # 12 > 2 windows' worth even if the burst straddles a boundary
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        assert all(r.headers["x-ratelimit-limit"] == "5" for r in responses)
        health = await asyncio.gather(*(http.get("/healthz") for _ in range(12)))
        assert all(r.status_code == 200 for r in health)  # /healthz is never limited


def test_limiter_counts_per_key_and_window() -> None:
    limiter = FixedWindowRateLimiter(limit=2, window_s=1.0)
    assert [limiter.hit("a", 10.1).allowed for _ in range(3)] == [True, True, False]
    refused = limiter.hit("a", 10.6)
    assert not refused.allowed and refused.retry_after_s == 1 and refused.remaining == 0
    assert limiter.hit("b", 10.7).allowed  # another client has its own budget
    assert limiter.hit("a", 11.0).allowed  # a new window
    assert FixedWindowRateLimiter(1, 5.0).hit("x", 0.5).remaining == 0
    slow = FixedWindowRateLimiter(1, 5.0)
    slow.hit("x", 0.5)
    assert slow.hit("x", 0.5).retry_after_s == 5


async def test_limiter_in_process() -> None:
    app = create_app(HttpSettings(dsn="postgresql://unused", rate_limit=3, anon_key="k"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        statuses = [(await http.get("/rest/v1/", headers={"apikey": "k"})).status_code for _ in range(5)]
        other = await http.get("/rest/v1/", headers={"apikey": "someone-else"})
    assert statuses[:3] == [403, 403, 403] and 429 in statuses[3:]  # anon on the schema root: 403, counted
    assert other.status_code == 401  # its own bucket; just a wrong key


def test_request_metrics_p95_and_error_rate() -> None:
    metrics = RequestMetrics(window_s=300)
    assert math.isnan(metrics.p95_ms(now=0.0))
    for i in range(1, 101):
        metrics.record(float(i), 503 if i <= 5 else 200, now=1.0)
    assert metrics.p95_ms(now=2.0) == 95.0 and metrics.error_rate_percent(now=2.0) == 5.0
    assert math.isnan(metrics.p95_ms(now=400.0)) and metrics.total == 100  # the window slid past


# -- notification sinks --------------------------------------------------------------------


async def test_slack_sink_records_posts(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    await client.delete("/_sandbox/sinks", headers=admin(server))
    shaped = await client.post("/sinks/slack/T000/B000/XXX", json={"text": "a real webhook's path shape"})
    assert shaped.status_code == 200
    ok = await client.post("/sinks/slack/hook-1", json={"text": "deploying v2"}, headers={"Authorization": "Bearer s3"})
    assert ok.status_code == 200 and ok.text == "ok"
    bad = await client.post("/sinks/slack/hook-1", json={"username": "x"})
    assert bad.status_code == 400 and bad.text == "invalid_payload"
    records = (await client.get("/_sandbox/sinks", headers=admin(server))).json()["slack"]
    assert [r["status"] for r in records] == [200, 200, 400]
    assert records[1]["body"] == {"text": "deploying v2"} and records[1]["path"] == "/sinks/slack/hook-1"
    assert records[1]["hook_id"] == "hook-1" and records[0]["hook_id"] == "T000/B000/XXX"
    assert "authorization" not in records[1]["headers"] and records[1]["received_at"] > 0


async def test_pagerduty_sink_validates_events(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    await client.delete("/_sandbox/sinks", headers=admin(server))
    key = server.settings.pagerduty_routing_key
    url = "/sinks/pagerduty/v2/enqueue"
    payload = {"summary": "fudo failing", "source": "controlroom", "severity": "critical"}
    trigger = await client.post(url, json={"routing_key": key, "event_action": "trigger", "payload": payload})
    assert trigger.status_code == 202
    body = trigger.json()
    assert body["status"] == "success" and body["message"] == "Event processed" and body["dedup_key"]
    resolve = await client.post(url, json={"routing_key": key, "event_action": "resolve", "dedup_key": body["dedup_key"]})
    assert resolve.status_code == 202 and resolve.json()["dedup_key"] == body["dedup_key"]
    invalid = [
        {"routing_key": "wrong", "event_action": "trigger", "payload": payload},
        {"routing_key": key, "event_action": "acknowledge"},
        {"routing_key": key, "event_action": "trigger", "payload": {**payload, "severity": "sev1"}},
        {"routing_key": key, "event_action": "explode"},
    ]
    for event in invalid:
        response = await client.post(url, json=event)
        assert response.status_code == 400 and response.json()["status"] == "invalid event", event
        assert response.json()["errors"]
    records = (await client.get("/_sandbox/sinks", headers=admin(server))).json()["pagerduty"]
    assert [r["status"] for r in records] == [202, 202, 400, 400, 400, 400]
    assert all(key not in str(r) for r in records)  # the routing key is never kept


async def test_sink_faults(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    await client.delete("/_sandbox/sinks", headers=admin(server))
    fault = {"sink": "slack", "status": 429, "retry_after": 3, "count": 2}
    assert (await client.post("/_sandbox/sinks/faults", json=fault, headers=admin(server))).status_code == 200
    first, second, third = [await client.post("/sinks/slack/h", json={"text": "hi"}) for _ in range(3)]
    assert first.status_code == second.status_code == 429 and first.headers["retry-after"] == "3"
    assert third.status_code == 200
    fault = {"sink": "pagerduty", "status": 500, "count": 1}
    await client.post("/_sandbox/sinks/faults", json=fault, headers=admin(server))
    event = {"routing_key": server.settings.pagerduty_routing_key, "event_action": "resolve", "dedup_key": "d"}
    failed = await client.post("/sinks/pagerduty/v2/enqueue", json=event)
    assert failed.status_code == 500 and "retry-after" not in failed.headers
    assert (await client.post("/sinks/pagerduty/v2/enqueue", json=event)).status_code == 202
    records = (await client.get("/_sandbox/sinks", headers=admin(server))).json()
    assert [r["accepted"] for r in records["slack"]] == [False, False, True]
    assert [r["status"] for r in records["pagerduty"]] == [500, 202]
    bad = await client.post("/_sandbox/sinks/faults", json={"sink": "email", "status": 500}, headers=admin(server))
    assert bad.status_code == 400
    await client.delete("/_sandbox/sinks", headers=admin(server))
    assert (await client.get("/_sandbox/sinks", headers=admin(server))).json() == {sink: [] for sink in SINKS}


# -- sandbox control -----------------------------------------------------------------------


async def test_sandbox_endpoints_need_the_admin_token(client: httpx.AsyncClient) -> None:
    calls = [
        ("GET", "/_sandbox/state"),
        ("GET", "/_sandbox/sinks"),
        ("DELETE", "/_sandbox/sinks"),
        ("POST", "/_sandbox/sinks/faults"),
        ("POST", "/_sandbox/deploy"),
        ("POST", "/_sandbox/rollback"),
        ("POST", "/_sandbox/fail"),
    ]
    for method, path in calls:
        for headers in ({}, bearer("not-the-admin-token")):
            response = await client.request(method, path, headers=headers, json={"version": "v9"})
            assert response.status_code == 401, (method, path)


async def test_deploy_in_healthy_scenario_breaks_nothing(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    deploy = await client.post("/_sandbox/deploy", json={"version": "v2.4.0"}, headers=admin(server))
    assert deploy.status_code == 200 and deploy.json() == {"deployed_version": "v2.4.0", "failing_providers": []}
    state = (await client.get("/_sandbox/state", headers=admin(server))).json()
    assert state["deployed_version"] == "v2.4.0" and state["scenario"] == "healthy"
    assert (await client.post("/_sandbox/deploy", json={}, headers=admin(server))).status_code == 400


async def test_fudo_outage_deploy_and_rollback(pg: EmbeddedPostgres) -> None:
    dsn = await create_database(pg)
    server = await start_server(HttpSettings(dsn=dsn, scenario="fudo-outage", rate_limit=10_000))
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5, headers=bearer(server.settings.anon_key)) as http:
            await _outage_story(http, server, dsn)
    finally:
        server.stop()


async def _outage_story(http: httpx.AsyncClient, server: HttpServerProcess, dsn: str) -> None:
    # Before any request of ours: the other clients' traffic (the scenario's background).
    assert 120 < float(await prom_value(http, "api_latency_p95_ms")) < 160
    assert float(await prom_value(http, "api_error_rate_percent")) == 0
    assert (await http.get("/functions/v1/pos-fudo/validate")).status_code == 200
    deploy = await http.post("/_sandbox/deploy", json={"version": "v2.5.0"}, headers=admin(server))
    assert deploy.json() == {"deployed_version": "v2.5.0", "failing_providers": ["fudo"]}
    started = time.monotonic()
    failing = await http.get("/functions/v1/pos-fudo/validate")
    assert failing.status_code == 503 and time.monotonic() - started < 1.0
    assert failing.json() == {"provider": "fudo", "status": "failing"}
    assert (await http.get("/functions/v1/pos-maxirest/validate")).status_code == 200

    token = await issue_token(http, server.settings, "loc-fudo-1")
    assert (await http.post(ROTATE, headers=bearer(token), json={})).status_code == 503
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow("SELECT * FROM pos_rotation_metrics WHERE token_fingerprint = $1", fingerprint(token))
        assert row is not None and row["success"] is False and row["provider"] == "fudo"
    finally:
        await conn.close()
    assert float(await prom_value(http, "api_error_rate_percent")) > 0

    rollback = await http.post("/_sandbox/rollback", json={"version": "v2.4.0"}, headers=admin(server))
    assert rollback.json() == {"deployed_version": "v2.4.0", "failing_providers": []}
    assert (await http.get("/functions/v1/pos-fudo/validate")).status_code == 200
    assert (await http.post(ROTATE, headers=bearer(token), json={})).status_code == 200


# -- metrics -------------------------------------------------------------------------------


async def prom_value(http: httpx.AsyncClient, name: str) -> str:
    response = await http.get("/api/v1/query", params={"query": name})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    (sample,) = body["data"]["result"]
    assert sample["metric"] == {"__name__": name}
    timestamp, value = sample["value"]
    assert abs(timestamp - time.time()) < 60 and isinstance(value, str)
    return value


async def test_metrics_shape(client: httpx.AsyncClient, server: HttpServerProcess) -> None:
    await client.get("/functions/v1/pos-fudo/validate", headers=bearer(server.settings.anon_key))
    assert float(await prom_value(client, "api_latency_p95_ms")) > 0
    assert 0 <= float(await prom_value(client, "api_error_rate_percent")) <= 100
    assert float(await prom_value(client, "api_requests_total")) >= 1
    unknown = await client.get("/api/v1/query", params={"query": "up"})
    assert unknown.status_code == 400
    assert unknown.json()["status"] == "error" and unknown.json()["errorType"] == "bad_data"


DEFAULT_RULES = ["PosApiLatencyHigh", "PosErrorRateHigh", "CircuitBreakerOpen", "PosRotationFailing"]


async def alert_states(http: httpx.AsyncClient) -> dict[str, tuple[str, str]]:
    response = await http.get("/api/v1/rules", params={"type": "alert"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert all(rule["type"] == "alerting" and rule["lastError"] == "" for rule in rules)
    return {rule["name"]: (rule["state"], rule["health"]) for rule in rules}


async def test_rules_the_default_runbook_names_are_loaded_and_quiet_when_healthy(client: httpx.AsyncClient) -> None:
    states = await alert_states(client)
    assert sorted(states) == sorted(DEFAULT_RULES)
    assert set(states.values()) == {("inactive", "ok")}
    recording = await client.get("/api/v1/rules", params={"type": "record"})
    assert recording.json()["data"]["groups"] == []


async def test_a_degraded_scenario_fires_the_latency_alert(loose_server: HttpServerProcess) -> None:
    async with httpx.AsyncClient(base_url=loose_server.base_url, timeout=5) as http:
        states = await alert_states(http)
        p95 = float(await prom_value(http, "api_latency_p95_ms"))
    assert states["PosApiLatencyHigh"] == ("firing", "ok") and 500 < p95 < 1000  # a warning, not a failure
    assert [name for name, (state, _) in states.items() if state == "firing"] == ["PosApiLatencyHigh"]


async def test_query_range_is_a_matrix_over_start_to_end_every_step(client: httpx.AsyncClient) -> None:
    end = time.time()
    start = end - 600
    response = await client.get("/api/v1/query_range", params={"query": "api_latency_p95_ms", "start": start,
                                                                "end": end, "step": "30s"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["resultType"] == "matrix"
    (series,) = data["result"]
    assert series["metric"] == {"__name__": "api_latency_p95_ms"}
    times = [t for t, _ in series["values"]]
    assert len(times) == 21 and times[0] == pytest.approx(start, abs=0.01)
    assert all(b - a == pytest.approx(30, abs=0.01) for a, b in zip(times, times[1:]))
    values = [float(v) for _, v in series["values"]]
    assert all(100 < v < 500 for v in values)  # the healthy background, as history
    again = await client.get("/api/v1/query_range", params={"query": "api_latency_p95_ms", "start": start,
                                                             "end": end - 300, "step": 30})
    assert [float(v) for _, v in again.json()["data"]["result"][0]["values"]] == values[:11]  # the past stays put

    for params, error in (({"start": start, "end": end, "step": 0}, "zero or negative"),
                          ({"start": end, "end": start, "step": 15}, "end timestamp"),
                          ({"start": start, "end": end, "step": 0.01}, "11,000 points"),
                          ({"start": start, "end": end}, "required")):
        refused = await client.get("/api/v1/query_range", params={"query": "api_latency_p95_ms", **params})
        assert refused.status_code == 400 and error in refused.json()["error"], refused.text


# -- the process ---------------------------------------------------------------------------


async def test_secrets_stay_out_of_argv(server: HttpServerProcess) -> None:
    cmdline = " ".join(psutil.Process(server.pid).cmdline())
    for secret in server.settings.secret_values():
        assert secret not in cmdline


def test_settings_round_trip_through_env() -> None:
    settings = HttpSettings(dsn="postgresql://x", scenario="degraded", allowed_origins=("https://a", "https://b"),
                            cors_allow_any=True, rate_limit=7, rate_window_s=2.5, watch_failure_delay_s=0.25)
    assert HttpSettings.from_env(settings.to_env()) == settings
    assert HttpSettings.from_env(HttpSettings(dsn="x").to_env()).watch_failure_delay_s is None
    assert settings.anon_key not in repr(settings) and "postgresql://x" not in repr(settings)


async def test_stop_leaves_no_process(shared_dsn: str) -> None:
    server = await start_server(HttpSettings(dsn=shared_dsn))
    pid = server.pid
    assert pid is not None and psutil.pid_exists(pid)
    server.stop()
    assert not psutil.pid_exists(pid)
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url + "/healthz", timeout=1)


def test_start_failure_reports_stderr() -> None:
    settings = HttpSettings(dsn=f"postgresql://u:topsecret@127.0.0.1:{free_port()}/none")
    server = HttpServerProcess(settings)
    with pytest.raises(HttpServerStartError) as error:
        server.start()
    assert "exited" in str(error.value) and "topsecret" not in str(error.value)
    assert not server.is_running()


async def test_server_exits_when_its_parent_dies(shared_dsn: str) -> None:
    """A control room killed with SIGKILL must not leave the server behind."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from controlroom.sandbox.http.server import HttpServerProcess, HttpSettings
        server = HttpServerProcess(HttpSettings(dsn=os.environ["TEST_DSN"])).start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ, "TEST_DSN": shared_dsn}
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), timeout=20)  # type: ignore[union-attr]
        child = int(line)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(child):
            await asyncio.sleep(0.1)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
