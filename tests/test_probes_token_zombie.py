"""The Token Zombie probe: against a scriptable local platform (every way a zombie can slip
through) and against the real sandbox HTTP server in its own process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from controlroom.config.loader import load_default_runbook
from controlroom.checks import ProbeContext, run_probe
from controlroom.infra.tokens import token_fingerprint
from controlroom.sandbox.http.server import HttpServerProcess, HttpSettings
from controlroom.sandbox.pg.postgres import EmbeddedPostgres

from http_fixtures import create_database, make_zombie, start_server
from probe_support import closed_port, make_loaded, serve

pytestmark = pytest.mark.timeout(60)

API_KEY = "zk-test-0123456789abcdef"
LOCATION = "fudo-000001"


class Platform:
    """A fake platform whose zombie handling is set per test."""

    def __init__(self) -> None:
        self.reset("revoke", "")

    def reset(self, mode: str, dsn: str) -> None:
        self.mode, self.dsn = mode, dsn
        self.tokens: dict[str, str] = {}  # token -> 'active' | 'rotated'
        self.zombie_requests = 0
        self.issued = 0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, client port) in order
        self.zombie_port: int | None = None

    async def execute(self, query: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            await conn.execute(query, *args)
        finally:
            await conn.close()

    def saw(self, request: Request) -> None:
        assert request.client is not None
        self.requests.append((request.method, request.url.path, request.client.port))

    async def issue(self, request: Request) -> Response:
        self.saw(request)
        if request.headers.get("apikey") != API_KEY:
            return JSONResponse({"message": "Invalid API key"}, status_code=401)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = "active"
        self.issued += 1
        return JSONResponse({"access_token": token})

    async def rotate(self, request: Request) -> Response:
        self.saw(request)
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        state = self.tokens.get(token)
        if state is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        if state == "active":
            self.tokens[token] = "rotated"
            await self.record_rotation(token)
            new = secrets.token_urlsafe(24)
            self.tokens[new] = "active"
            return JSONResponse({"access_token": new})
        assert request.client is not None
        self.zombie_port = request.client.port
        return await self.zombie(token)

    async def record_rotation(self, token: str) -> None:
        await self.execute(
            "INSERT INTO pos_rotation_metrics (location_id, provider, success, latency_ms, token_fingerprint) "
            "VALUES ($1, 'fudo', true, 5, $2)",
            LOCATION,
            token_fingerprint(token),
        )

    async def zombie(self, token: str) -> Response:
        self.zombie_requests += 1
        revoked = JSONResponse({"error": "token_revoked"}, status_code=401)
        match self.mode:
            case "revoke":
                return revoked
            case "marked401":  # the function's own refusal, with its mark
                return JSONResponse({"error": "token_revoked", "function": "rotation"}, status_code=401,
                                    headers={"x-pos-function": "pos-credentials-rotation"})
            case "accept":
                return JSONResponse({"ok": True})
            case "slow401":
                await asyncio.sleep(0.15)
                return revoked
            case "503first":
                if self.zombie_requests == 1:
                    return JSONResponse({"error": "busy"}, status_code=503)
                return revoked
            case "always503":
                return JSONResponse({"error": "busy"}, status_code=503)
            case "rotate401":  # says no, but rotated anyway
                await self.record_rotation(token)
                return revoked
            case "breaker401":  # says no, but counted a failure against the breaker
                await self.execute(
                    "UPDATE rotation_cb SET state = 'open', failure_count = failure_count + 1 WHERE location_id = $1",
                    LOCATION,
                )
                return revoked
            case "redirect":
                return RedirectResponse("/elsewhere", status_code=307)
            case "hang":
                await asyncio.sleep(30)
                return revoked
        raise AssertionError(self.mode)


PLATFORM = Platform()


@pytest.fixture(scope="module")
async def fake_url() -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/auth/v1/token", PLATFORM.issue, methods=["POST"]),
            Route("/functions/v1/pos-credentials-rotation", PLATFORM.rotate, methods=["POST", "OPTIONS"]),
        ]
    )
    async with serve(app) as url:
        yield url


@pytest.fixture
async def platform_db(db: asyncpg.Connection, db_dsn: str) -> str:
    await db.execute(
        "INSERT INTO pos_integrations_location (location_id, location_name, provider, credential_expires_at) "
        "VALUES ($1, 'Parrilla Don Ernesto', 'fudo', $2), ('fudo-000002', 'El Fogón', 'fudo', $2)",
        LOCATION,
        datetime.now(timezone.utc) + timedelta(days=30),
    )
    await db.execute(
        "INSERT INTO rotation_cb (location_id, provider, state) VALUES ($1, 'fudo', 'closed'), ('fudo-000002', 'fudo', 'closed')",
        LOCATION,
    )
    return db_dsn


def default_queries() -> dict[str, str]:
    """The default runbook's measurement queries (this test's database has the POS schema)."""
    item = next(i for _, i in load_default_runbook().items() if i.kind == "token_zombie")
    return {key: getattr(item, key) for key in ("location_query", "rotations_query", "breakers_query")}


def zombie_item(**extra: Any) -> dict[str, Any]:
    return {
        **default_queries(),
        "id": "token-zombie",
        "title": "Token Zombie Test",
        "kind": "token_zombie",
        "issue_url": "{urls.supabase}/auth/v1/token",
        "rotate_url": "{urls.supabase}/functions/v1/pos-credentials-rotation",
        "api_key_secret": "supabase_api_key",
        **extra,
    }


async def probe(  # noqa: ANN201
    url: str,
    dsn: str,
    *,
    api_key: str = API_KEY,
    extra_secrets: dict[str, str] | None = None,
    production: bool = False,
    **extra: Any,
):
    loaded = make_loaded(
        [zombie_item(**extra)],
        urls={"supabase": url},
        secrets={"supabase_api_key": api_key, "database_dsn": dsn, **(extra_secrets or {})},
        production=production,
    )
    async with ProbeContext(loaded) as ctx:
        return await run_probe(loaded.runbook.items()[0][1], ctx)


async def with_mode(mode: str, url: str, dsn: str, **extra: Any):  # noqa: ANN201
    PLATFORM.reset(mode, dsn)
    return await probe(url, dsn, **extra)


def from_the_vault(dsn: str, zombie: str) -> dict[str, Any]:
    """A fresh platform that knows `zombie` as rotated out, and the probe's keys to take it
    from a secret instead of minting one."""
    PLATFORM.reset("revoke", dsn)
    PLATFORM.tokens[zombie] = "rotated"
    return {"zombie_token_secret": "old_token", "extra_secrets": {"old_token": zombie}}


# -- against the scriptable platform ---------------------------------------------------------


async def test_revoked_zombie_passes(fake_url: str, platform_db: str) -> None:
    result = await with_mode("revoke", fake_url, platform_db)
    assert result.status == "pass", result.evidence
    assert result.evidence.startswith("401 in ")
    assert result.evidence.endswith("0 retries, no rotation, breakers unchanged")
    assert result.measured["attempts"] == 1 and result.measured["location_id"] == LOCATION
    assert PLATFORM.zombie_requests == 1


MARKER = {"header": "x-pos-function", "value": "pos-credentials-rotation"}


async def test_a_marked_401_passes_and_an_unmarked_one_is_the_gateways(fake_url: str, platform_db: str) -> None:
    marked = await with_mode("marked401", fake_url, platform_db, function_marker=MARKER)
    assert marked.status == "pass", marked.evidence
    assert marked.measured["function_reached"] is True
    # The same 401 without the header: nothing says the function gave it.
    gateway = await with_mode("revoke", fake_url, platform_db, function_marker=MARKER)
    assert gateway.status == "error", gateway.evidence
    assert "the gateway refused the request; the function was never reached" in gateway.evidence
    assert "header x-pos-function: pos-credentials-rotation" in gateway.evidence
    assert gateway.measured["function_reached"] is False
    # A marker in the JSON body works the same way.
    by_json = await with_mode("marked401", fake_url, platform_db, function_marker={"json": "function", "value": "rotation"})
    assert by_json.status == "pass", by_json.evidence
    wrong = await with_mode("marked401", fake_url, platform_db, function_marker={"json": "function", "value": "other"})
    assert wrong.status == "error"


async def test_accepted_zombie_fails(fake_url: str, platform_db: str) -> None:
    result = await with_mode("accept", fake_url, platform_db)
    assert result.status == "fail"
    assert result.evidence.startswith("200 (accepted!) in ")


async def test_slow_401_fails(fake_url: str, platform_db: str) -> None:
    result = await with_mode("slow401", fake_url, platform_db)
    assert result.status == "fail"
    assert result.evidence.startswith("401 in ") and "(limit 100 ms)" in result.evidence


async def test_401_only_after_a_retry_fails(fake_url: str, platform_db: str) -> None:
    # The platform answers 503 first and 401 to a second try: a client that retries would
    # report "401"; ours presents the zombie exactly once.
    result = await with_mode("503first", fake_url, platform_db)
    assert result.status == "fail"
    assert result.evidence.startswith("503 (expected 401)")
    assert "0 retries" in result.evidence
    assert PLATFORM.zombie_requests == 1


async def test_max_attempts_counts_the_requests_on_the_wire(fake_url: str, platform_db: str) -> None:
    result = await with_mode("503first", fake_url, platform_db, max_attempts=2)
    assert result.status == "pass", result.evidence
    assert "2 attempts (1 retry)" in result.evidence
    assert result.measured["attempts"] == 2 and PLATFORM.zombie_requests == 2
    three = await with_mode("always503", fake_url, platform_db, max_attempts=3)
    assert three.status == "fail" and "3 attempts (2 retries)" in three.evidence
    assert PLATFORM.zombie_requests == 3


async def test_rotation_recorded_with_the_zombie_fails_even_with_401(fake_url: str, platform_db: str) -> None:
    result = await with_mode("rotate401", fake_url, platform_db)
    assert result.status == "fail"
    assert result.evidence.startswith("401 in ")
    assert "rotation recorded with the zombie token" in result.evidence


async def test_breaker_moved_by_the_zombie_fails(fake_url: str, platform_db: str) -> None:
    result = await with_mode("breaker401", fake_url, platform_db)
    assert result.status == "fail"
    assert f"breaker of {LOCATION} changed closed → open, failures 0 → 1" in result.evidence


async def test_other_breakers_moving_meanwhile_are_noted_not_blamed(fake_url: str, platform_db: str, db: asyncpg.Connection) -> None:
    PLATFORM.reset("revoke", platform_db)
    original = PLATFORM.zombie

    async def zombie_while_fleet_moves(token: str) -> Response:
        await db.execute("UPDATE rotation_cb SET state = 'open' WHERE location_id = 'fudo-000002'")
        return await original(token)

    PLATFORM.zombie = zombie_while_fleet_moves  # type: ignore[method-assign]
    try:
        result = await probe(fake_url, platform_db)
    finally:
        del PLATFORM.zombie
    assert result.status == "pass", result.evidence
    assert "1 other breaker change meanwhile" in result.evidence


async def test_redirect_is_not_followed(fake_url: str, platform_db: str) -> None:
    result = await with_mode("redirect", fake_url, platform_db)
    assert result.status == "fail"
    assert "307 (redirect, not followed" in result.evidence
    assert result.measured["attempts"] == 1


async def test_hanging_zombie_fails_within_the_timeout(fake_url: str, platform_db: str) -> None:
    result = await with_mode("hang", fake_url, platform_db, timeout_s=0.5)
    assert result.status == "fail"
    assert "no answer" in result.evidence
    assert result.duration_ms < 3000


async def test_setup_failures_are_errors(fake_url: str, platform_db: str) -> None:
    bad_key = await with_mode("revoke", fake_url, platform_db, api_key="not-the-key-42")
    assert bad_key.status == "error" and "could not issue a token" in bad_key.evidence
    assert "not-the-key-42" not in bad_key.evidence
    refused = await with_mode("revoke", f"http://127.0.0.1:{closed_port()}", platform_db)
    assert refused.status == "error" and "cannot connect" in refused.evidence
    no_db = await with_mode("revoke", fake_url, f"postgresql://x:pw-secret-9@127.0.0.1:{closed_port()}/pos")
    assert no_db.status == "error" and "unavailable" in no_db.evidence and "pw-secret-9" not in no_db.evidence


async def test_no_location_is_an_error(fake_url: str, db_dsn: str) -> None:
    result = await with_mode("revoke", fake_url, db_dsn)
    assert result.status == "error" and "no location" in result.evidence


async def test_zombie_from_a_secret_skips_issue_and_rotation(fake_url: str, platform_db: str) -> None:
    zombie = "zombie-token-from-the-vault-123456"
    result = await probe(fake_url, platform_db, **from_the_vault(platform_db, zombie))
    assert result.status == "pass", result.evidence
    assert PLATFORM.issued == 0 and PLATFORM.zombie_requests == 1
    assert zombie not in result.evidence


async def test_a_zombie_secret_that_is_not_set_is_an_error_naming_the_variable(fake_url: str, platform_db: str) -> None:
    PLATFORM.reset("revoke", platform_db)
    result = await probe(fake_url, platform_db, zombie_token_secret="old_token", extra_secrets={"old_token": ""})
    assert result.status == "error"
    assert result.evidence == "secret 'old_token' is not set: export TEST_OLD_TOKEN=..."
    assert PLATFORM.requests == []


async def test_the_zombie_is_timed_on_an_open_connection(fake_url: str, platform_db: str) -> None:
    # From a secret, the zombie request would otherwise be the client's first: TCP (and TLS)
    # setup would count against the 100 ms.
    result = await probe(fake_url, platform_db, **from_the_vault(platform_db, "zombie-token-from-the-vault-654321"))
    assert result.status == "pass", result.evidence
    assert result.measured["attempts"] == 1 and PLATFORM.zombie_requests == 1
    before_zombie = PLATFORM.requests[:-1]
    assert PLATFORM.requests[-1][0] == "POST" and before_zombie, PLATFORM.requests
    assert PLATFORM.zombie_port in {port for _, _, port in before_zombie}, "the zombie request opened its own connection"


async def test_production_does_not_mint_unless_allowed(fake_url: str, platform_db: str) -> None:
    PLATFORM.reset("revoke", platform_db)
    refused = await probe(fake_url, platform_db, production=True)
    assert refused.status == "skipped"
    assert "production" in refused.evidence and "allow_mint_in_production" in refused.evidence
    assert "--attest token-zombie" in refused.evidence
    assert PLATFORM.requests == [] and PLATFORM.issued == 0  # nothing minted, nothing rotated

    allowed = await probe(fake_url, platform_db, production=True, allow_mint_in_production=True)
    assert allowed.status == "pass", allowed.evidence
    assert PLATFORM.issued == 1

    kept = await probe(fake_url, platform_db, production=True, **from_the_vault(platform_db, "zombie-token-from-the-vault-777777"))
    assert kept.status == "pass", kept.evidence
    assert PLATFORM.issued == 0


async def test_a_refused_zombie_test_can_be_attested_in_production(fake_url: str, platform_db: str) -> None:
    from controlroom.checks.run import AttestationError, attestable_ids, run_checklist
    from controlroom.checks import Attestation

    operator = Attestation(who="ci-operator", at=datetime.now(timezone.utc))
    secrets_ = {"supabase_api_key": API_KEY, "database_dsn": platform_db}
    production = make_loaded([zombie_item()], urls={"supabase": fake_url}, secrets=secrets_, production=True)
    assert attestable_ids(production) == ["token-zombie"]
    pending = await run_checklist(production)
    assert pending.verdict.verdict == "PENDING" and pending.results["token-zombie"].status == "skipped"
    vouched = await run_checklist(production, {"token-zombie": operator})
    assert vouched.verdict.verdict == "GO", vouched.verdict.reasons
    assert vouched.results["token-zombie"].status == "skipped" and vouched.results["token-zombie"].attested

    staging = make_loaded([zombie_item()], urls={"supabase": fake_url}, secrets=secrets_)
    assert attestable_ids(staging) == []  # it runs here: nothing to vouch for
    with pytest.raises(AttestationError):
        await run_checklist(staging, {"token-zombie": operator})


# -- against the real sandbox server ----------------------------------------------------------


@pytest.fixture(scope="module")
async def sandbox_dsn(pg: EmbeddedPostgres) -> str:
    return await create_database(pg)


@pytest.fixture(scope="module")
async def healthy_server(sandbox_dsn: str) -> AsyncIterator[HttpServerProcess]:
    process = await start_server(HttpSettings(dsn=sandbox_dsn, rate_limit=10_000))
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def zombie_server(sandbox_dsn: str) -> AsyncIterator[HttpServerProcess]:
    process = await start_server(HttpSettings(dsn=sandbox_dsn, scenario="zombie-token", rate_limit=10_000))
    yield process
    process.stop()


async def test_sandbox_healthy_zombie_gets_401_fast(healthy_server: HttpServerProcess, sandbox_dsn: str) -> None:
    result = await probe(healthy_server.base_url, sandbox_dsn, api_key=healthy_server.settings.anon_key)
    assert result.status == "pass", result.evidence
    assert result.measured["http_status"] == 401 and result.measured["latency_ms"] < 100
    assert healthy_server.settings.anon_key not in result.evidence


async def test_a_busy_event_loop_adds_nothing_to_the_zombies_latency(healthy_server: HttpServerProcess, sandbox_dsn: str) -> None:
    """The control room's loop is held for 25 ms at every turn (a view laid out, 10,000
    breakers decoded, a garbage collection) while the probe runs: the 401 is still timed as the
    platform gave it, not as late as the loop got round to it (a false NO-GO at 3 a.m.)."""
    stop = False

    async def hog() -> None:
        while not stop:
            until = time.perf_counter() + 0.025
            while time.perf_counter() < until:  # CPU, holding the GIL as Python work does
                pass
            await asyncio.sleep(0)

    hogging = asyncio.ensure_future(hog())
    try:
        await asyncio.sleep(0)
        result = await probe(healthy_server.base_url, sandbox_dsn, api_key=healthy_server.settings.anon_key)
    finally:
        stop = True
        await hogging
    assert result.status == "pass", result.evidence
    assert result.measured["latency_ms"] < 100


async def test_sandbox_zombie_scenario_fails_on_every_count(zombie_server: HttpServerProcess, sandbox_dsn: str) -> None:
    result = await probe(zombie_server.base_url, sandbox_dsn, api_key=zombie_server.settings.anon_key)
    assert result.status == "fail"
    assert result.evidence.startswith("200 (accepted!) in ")
    assert "(limit 100 ms)" in result.evidence
    assert "0 retries" in result.evidence
    assert "rotation recorded with the zombie token" in result.evidence


async def test_sandbox_zombie_from_a_secret(healthy_server: HttpServerProcess, sandbox_dsn: str) -> None:
    async with httpx.AsyncClient(base_url=healthy_server.base_url, timeout=5) as client:
        zombie, _ = await make_zombie(client, healthy_server.settings, "loc-fudo-1")
    result = await probe(
        healthy_server.base_url,
        sandbox_dsn,
        api_key=healthy_server.settings.anon_key,
        zombie_token_secret="old_token",
        extra_secrets={"old_token": zombie},
    )
    assert result.status == "pass", result.evidence
    assert zombie not in result.evidence


async def test_a_schema_without_the_measurements_tables_mints_nothing(fake_url: str, platform_db: str,
                                                                      db: asyncpg.Connection) -> None:
    """On a schema where the rotation count's table is missing, the probe says so before it
    mints a token or rotates anything (it used to rotate a real token, then fail on the SQL)."""
    await db.execute("ALTER TABLE pos_rotation_metrics RENAME TO rotation_log")
    try:
        result = await with_mode("revoke", fake_url, platform_db)
    finally:
        await db.execute("ALTER TABLE rotation_log RENAME TO pos_rotation_metrics")
    assert result.status == "error" and "nothing was minted or rotated" in result.evidence, result.evidence
    assert "pos_rotation_metrics" in result.evidence
    assert PLATFORM.issued == 0 and PLATFORM.zombie_requests == 0 and PLATFORM.requests == []
