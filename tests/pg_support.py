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


FLEET_QUERY = """
SELECT provider, count(*) FILTER (WHERE connected) AS connected, count(*) FILTER (WHERE NOT connected) AS disconnected,
       count(*) AS total
FROM pos_integrations_location GROUP BY provider
"""


async def fleet_in_postgres(dsn: str) -> dict[str, tuple[int, int, int]]:
    """provider -> (connected, disconnected, total), straight from pos_integrations_location."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return {r["provider"]: (r["connected"], r["disconnected"], r["total"]) for r in await conn.fetch(FLEET_QUERY)}
    finally:
        await conn.close()


def fleet_line_parts(fleet: dict[str, tuple[int, int, int]]) -> list[str]:
    """What the report's POS Integration Health line must say of each provider, in its order
    (the known providers first, then the others by name)."""
    known = ("fudo", "maxirest", "bistrsoft")
    order = [p for p in known if p in fleet] + sorted(set(fleet) - set(known))
    return [f"{p} {fleet[p][0]}/{fleet[p][2]} connected ({fleet[p][1]} disconnected)" for p in order]
