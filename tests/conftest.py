"""Shared fixtures: one real embedded PostgreSQL for the whole session, a fresh database
(with the schema applied) per test that asks for one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from pg_support import new_database


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
async def db_dsn(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of a brand-new database holding the schema and no rows."""
    dsn = await new_database(pg)
    yield dsn


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()
