"""SQL probes against the real embedded PostgreSQL: rows listed as evidence, values judged
against thresholds, read-only and bounded, and every failure an `error`, never a raise."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from controlroom.checks import ProbeContext, run_probe
from controlroom.config.loader import LoadedConfig, load_default_runbook

from probe_support import closed_port, make_loaded

pytestmark = pytest.mark.timeout(60)


def sql_item(query: str, **extra: Any) -> dict[str, Any]:
    return {"id": "q", "title": "Query", "kind": "sql", "query": query, **extra}


def default_item(item_id: str) -> dict[str, Any]:
    """An item of the shipped runbook, as a dict, so the tests run its real query."""
    item = next(i for _, i in load_default_runbook().items() if i.id == item_id)
    return item.model_dump(exclude_defaults=False)


async def run(loaded: LoadedConfig):  # noqa: ANN201
    async with ProbeContext(loaded) as ctx:
        return [await run_probe(item, ctx) for _, item in loaded.runbook.items()]


async def one(dsn: str, item: dict[str, Any]):  # noqa: ANN201
    return (await run(make_loaded([item], secrets={"database_dsn": dsn})))[0]


async def add_location(db: asyncpg.Connection, location_id: str, **columns: Any) -> None:
    values = {
        "location_id": location_id,
        "location_name": f"Bodegón {location_id}",
        "provider": "fudo",
        "credential_expires_at": datetime.now(timezone.utc) + timedelta(days=30),
        **columns,
    }
    names = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await db.execute(f"INSERT INTO pos_integrations_location ({names}) VALUES ({params})", *values.values())


async def test_no_rows_passes(db_dsn: str) -> None:
    result = await one(db_dsn, default_item("circuit-breakers"))
    assert result.status == "pass" and result.evidence.startswith("none found: 0 rows of SELECT ")


async def test_failed_locations_are_listed_with_how_long(db: asyncpg.Connection, db_dsn: str) -> None:
    now = datetime.now(timezone.utc)
    for n, hours in enumerate((5.2, 7, 30, 1), start=1):
        await add_location(db, f"fudo-{n:06d}", sync_state="failed", sync_failed_since=now - timedelta(hours=hours))
    item = {**default_item("sync-status"), "list_limit": 2}
    result = await one(db_dsn, item)
    assert result.status == "fail"
    # Three are over 4 h (the 1 h one is not); the oldest first, two named, the rest counted.
    assert result.evidence.startswith("3 found: fudo fudo-000003 Bodegón fudo-000003 1 d 6 h ago;")
    assert "fudo-000002" in result.evidence and "… and 1 more" in result.evidence
    assert "fudo-000004" not in result.evidence
    assert result.measured == {"rows": 3}


async def test_expiring_credentials_are_listed(db: asyncpg.Connection, db_dsn: str) -> None:
    await add_location(db, "maxi-1", provider="maxirest", credential_expires_at=datetime.now(timezone.utc) + timedelta(days=2, hours=3))
    result = await one(db_dsn, default_item("credential-expiry"))
    assert result.status == "fail"
    assert "maxi-1 maxirest in 2 d 2 h" in result.evidence or "maxi-1 maxirest in 2 d 3 h" in result.evidence


async def incidents(db: asyncpg.Connection, minutes: float, count: int = 4) -> None:
    now = datetime.now(timezone.utc)
    await db.execute("DELETE FROM incidents")
    for n in range(count):
        opened = now - timedelta(days=n + 1)
        await db.execute(
            "INSERT INTO incidents (opened_at, resolved_at, summary) VALUES ($1, $2, 'x')",
            opened,
            opened + timedelta(minutes=minutes),
        )


@pytest.mark.parametrize(
    ("minutes", "status", "evidence"),
    [
        (89, "pass", "89.0 min (< 120 min)"),
        (150, "warn", "150.0 min (not < 120 min, fails > 240 min)"),
        (290, "fail", "290.0 min (> 240 min: fails)"),
    ],
)
async def test_mttr_value_against_thresholds(db: asyncpg.Connection, db_dsn: str, minutes: float, status: str, evidence: str) -> None:
    await incidents(db, minutes)
    result = await one(db_dsn, default_item("mttr"))
    assert (result.status, result.evidence) == (status, evidence)
    assert result.measured["value"] == pytest.approx(minutes)


async def test_null_value_uses_when_null(db_dsn: str) -> None:
    assert (await one(db_dsn, default_item("mttr"))).status == "pass"  # no incidents: when_null = pass
    fudo = await one(db_dsn, default_item("fudo-rotation"))  # no rotations: when_null = warn
    assert fudo.status == "warn" and "NULL" in fudo.evidence


async def test_non_numeric_value_is_an_error(db_dsn: str) -> None:
    result = await one(db_dsn, sql_item("SELECT 'abc'", expect="value", pass_when={"op": ">", "value": 1}))
    assert result.status == "error" and "expected a number" in result.evidence


async def test_sql_error_is_an_error(db_dsn: str) -> None:
    result = await one(db_dsn, sql_item("SELECT * FROM no_such_table"))
    assert result.status == "error"
    assert "no_such_table" in result.evidence and "SQL error" in result.evidence


async def test_slow_query_is_cut_by_the_statement_timeout(db_dsn: str) -> None:
    result = await one(db_dsn, sql_item("SELECT pg_sleep(5)", timeout_s=0.5))
    assert result.status == "error"
    assert "timeout" in result.evidence or "timed out" in result.evidence
    assert result.duration_ms < 3000


async def test_queries_are_read_only(db: asyncpg.Connection, db_dsn: str) -> None:
    await add_location(db, "ro-1")
    result = await one(db_dsn, sql_item("DELETE FROM pos_integrations_location RETURNING location_id"))
    assert result.status == "error" and "read-only" in result.evidence
    assert await db.fetchval("SELECT count(*) FROM pos_integrations_location") == 1


async def test_connections_are_named_controlroom(db_dsn: str) -> None:
    result = await one(
        db_dsn,
        sql_item(
            "SELECT application_name, current_setting('statement_timeout') FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid() AND application_name <> 'controlroom/probes'"
        ),
    )
    assert result.status == "pass", result.evidence  # no row: our own session is 'controlroom/probes'


async def test_unreachable_database_errors_only_sql_probes(db_dsn: str) -> None:
    dsn = f"postgresql://controlroom:s3cret-pass-word@127.0.0.1:{closed_port()}/pos"
    loaded = make_loaded(
        [sql_item("SELECT 1", id="a"), sql_item("SELECT 2", id="b"), {"id": "m", "title": "Manual", "kind": "manual"}],
        secrets={"database_dsn": dsn},
    )
    results = await run(loaded)
    assert [r.status for r in results] == ["error", "error", "pending"]
    assert "database 'main' unavailable" in results[0].evidence
    assert all("s3cret-pass-word" not in r.evidence for r in results)


async def test_wrong_password_is_an_error_without_the_password(pg, db_dsn: str) -> None:  # noqa: ANN001
    wrong = db_dsn.replace("@", "x-wrong-password-123@", 1) if "@" in db_dsn else db_dsn
    result = await one(wrong, sql_item("SELECT 1"))
    assert result.status == "error"
    assert "x-wrong-password-123" not in result.evidence


async def test_missing_dsn_secret_is_an_error_naming_the_variable() -> None:
    loaded = make_loaded([sql_item("SELECT 1")], secrets={"database_dsn": ""})
    result = (await run(loaded))[0]
    assert result.status == "error" and "TEST_DATABASE_DSN" in result.evidence


async def test_a_long_lived_context_reconnects_after_the_database_comes_back(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlroom.checks import base

    real_create_pool = asyncpg.create_pool
    calls = 0

    def flaky_create_pool(*args: Any, **kwargs: Any):  # noqa: ANN202
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionRefusedError(111, "Connection refused")
        return real_create_pool(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", flaky_create_pool)
    monkeypatch.setattr(base, "POOL_RETRY_AFTER_S", 0.0)
    loaded = make_loaded([sql_item("SELECT 1 WHERE false")], secrets={"database_dsn": db_dsn})
    item = loaded.runbook.items()[0][1]
    async with ProbeContext(loaded) as ctx:
        first = await run_probe(item, ctx)
        second = await run_probe(item, ctx)
    assert first.status == "error" and "Connection refused" in first.evidence
    assert second.status == "pass" and calls == 2
