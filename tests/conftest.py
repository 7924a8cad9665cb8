"""Shared fixtures: one real embedded PostgreSQL for the whole session, a fresh database
(with the schema applied) per test that asks for one."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from pg_support import new_database


@pytest.fixture(scope="session", autouse=True)
def sandbox_pointers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The demos and sandboxes the tests start (here and in the commands they run) list
    themselves in a directory of the run's, never in the user's own, where `demo --join` looks."""
    before = os.environ.get("CONTROLROOM_SANDBOX_DIR")
    os.environ["CONTROLROOM_SANDBOX_DIR"] = str(tmp_path_factory.mktemp("sandbox-pointers"))
    yield
    if before is None:
        os.environ.pop("CONTROLROOM_SANDBOX_DIR", None)
    else:
        os.environ["CONTROLROOM_SANDBOX_DIR"] = before


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
