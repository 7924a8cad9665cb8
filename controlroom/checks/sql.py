"""SQL probes, read-only: every query runs in a READ ONLY transaction with a local
statement_timeout, on a pool named application_name=controlroom/probes, so a probe can
never hurt the database it watches.

- expect = "no_rows": every row returned is a problem; the first list_limit are named.
- expect = "value": the first column of the first row is judged: fail_when → fail,
  pass_when → pass, otherwise warn; NULL (or no row) → when_null.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any

import asyncpg

from controlroom.checks.base import Outcome, ProbeContext, ProbeError, describe_exception, format_value, time_left
from controlroom.checks.thresholds import judge_number
from controlroom.config.models import SqlItem


async def fetch(ctx: ProbeContext, database: str, query: str, *args: Any, timeout_s: float) -> list[asyncpg.Record]:
    """Run a read-only query, connecting included, by the probe's deadline; ProbeError with
    the reason (and which part ran out of time) on any failure."""
    began = time.perf_counter()
    try:
        pool = await asyncio.wait_for(ctx.pool(database), time_left(timeout_s))
    except TimeoutError:
        raise ProbeError(f"database {database!r}: connecting timed out after {time.perf_counter() - began:.1f} s "
                         "(the server accepted no session)") from None
    try:
        # The server's statement_timeout stays the item's; what is left of the deadline ends
        # the wait here (asyncpg then cancels the query on the server).
        async with asyncio.timeout(min(timeout_s, time_left(timeout_s))):
            async with pool.acquire() as conn:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
                    return await conn.fetch(query, *args)
    except TimeoutError:
        raise ProbeError(f"query timed out after {timeout_s:g} s") from None
    except asyncpg.PostgresError as error:
        raise ProbeError(f"SQL error: {describe_exception(error)}") from None
    except (OSError, asyncpg.InterfaceError) as error:
        raise ProbeError(f"database {database!r}: {describe_exception(error)}") from None


async def probe(item: SqlItem, ctx: ProbeContext) -> Outcome:
    rows = await fetch(ctx, ctx.loaded.runbook.database(item.database), item.query, timeout_s=item.timeout_s)
    if item.expect == "no_rows":
        return judge_rows(item, rows)
    return judge_value(item, rows[0][0] if rows and len(rows[0]) else None)


def judge_rows(item: SqlItem, rows: list[Any], now: datetime | None = None) -> Outcome:
    if not rows:
        # Say what was looked for: "none found" beside a title alone does not.
        looked_for = " ".join(item.query.split())
        looked_for = looked_for if len(looked_for) <= 70 else looked_for[:69] + "…"
        return Outcome("pass", f"none found: 0 rows of {looked_for}", {"rows": 0})
    now = now or datetime.now(timezone.utc)
    shown = [" ".join(format_value(value, now) for value in tuple(row)) for row in rows[: item.list_limit]]
    more = len(rows) - len(shown)
    text = f"{len(rows)} found: " + "; ".join(shown) + (f"; … and {more} more" if more else "")
    return Outcome("fail", text, {"rows": len(rows)})


def judge_value(item: SqlItem, raw: Any) -> Outcome:
    return judge_number(item, raw, what="the first column")
