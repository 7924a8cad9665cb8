"""Shared fixtures: one real embedded PostgreSQL for the whole session, a fresh database
(with the schema applied) per test that asks for one."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from controlroom.sandbox.postgres import EmbeddedPostgres
from controlroom.sandbox.schema import apply_schema

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
async def db_dsn(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of a brand-new database holding the schema and no rows."""
    name = f"test_{next(_database_numbers)}"
    admin = await asyncpg.connect(pg.dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = pg.dsn.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await apply_schema(conn)
    finally:
        await conn.close()
    yield dsn


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()
