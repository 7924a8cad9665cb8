"""Helpers for the HTTP sandbox tests: a module's own database, and a few locations in it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import asyncpg
import httpx
import pytest

from controlroom.sandbox.http.server import HttpServerProcess, HttpSettings
from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from pg_support import new_database

LOCATIONS: tuple[tuple[str, str], ...] = (
    ("loc-fudo-1", "fudo"),
    ("loc-fudo-2", "fudo"),
    ("loc-maxi-1", "maxirest"),
    ("loc-bistr-1", "bistrsoft"),
)
ORIGIN = "https://app.posplatform.example"


async def create_database(pg: EmbeddedPostgres) -> str:
    """A new database with the schema and LOCATIONS; returns its DSN."""
    dsn = await new_database(pg, "http")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        expires = datetime.now(timezone.utc) + timedelta(days=30)
        await conn.executemany(
            "INSERT INTO pos_integrations_location (location_id, location_name, provider, credential_expires_at) "
            "VALUES ($1, $1, $2, $3)",
            [(loc, provider, expires) for loc, provider in LOCATIONS],
        )
    finally:
        await conn.close()
    return dsn


async def start_server(settings: HttpSettings) -> HttpServerProcess:
    """start() blocks while it polls /healthz; keep the event loop free meanwhile."""
    return await asyncio.to_thread(HttpServerProcess(settings).start)


async def issue_token(client: httpx.AsyncClient, settings: HttpSettings, location_id: str) -> str:
    response = await client.post("/auth/v1/token", json={"location_id": location_id}, headers={"apikey": settings.anon_key})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


async def make_zombie(client: httpx.AsyncClient, settings: HttpSettings, location_id: str) -> tuple[str, str]:
    """A rotated-out token and the one that replaced it."""
    old = await issue_token(client, settings, location_id)
    response = await client.post("/functions/v1/pos-credentials-rotation", headers=bearer(old), json={})
    assert response.status_code == 200, response.text
    return old, response.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Fixtures a test module takes by importing them (`from http_fixtures import server, shared_dsn`).


@pytest.fixture(scope="module")
async def shared_dsn(pg: EmbeddedPostgres) -> str:
    """The module's own database (create_database)."""
    return await create_database(pg)


@pytest.fixture(scope="module")
async def server(shared_dsn: str) -> AsyncIterator[HttpServerProcess]:
    """A healthy sandbox server on it. A high limit: the tests share one client IP and must
    not throttle each other."""
    process = await start_server(HttpSettings(dsn=shared_dsn, rate_limit=10_000))
    yield process
    process.stop()
