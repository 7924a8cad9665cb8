"""The sandbox schema (schema.sql), read from the package and applied to a database."""

from __future__ import annotations

from importlib import resources

import asyncpg


def schema_sql() -> str:
    return resources.files("controlroom.sandbox.pg").joinpath("schema.sql").read_text(encoding="utf-8")


async def apply_schema(conn: asyncpg.Connection) -> None:
    await conn.execute(schema_sql(), timeout=30)
