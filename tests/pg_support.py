"""A fresh database (schema applied, no rows) on the session's embedded Postgres."""

from __future__ import annotations

import itertools

import asyncpg

from controlroom.sandbox.pg.postgres import EmbeddedPostgres
from controlroom.sandbox.pg.schema import apply_schema

_numbers = itertools.count(1)


async def new_database(pg: EmbeddedPostgres, prefix: str = "test") -> str:
    """Create a database holding the schema and return its DSN."""
    name = f"{prefix}_{next(_numbers)}"
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
    return dsn
