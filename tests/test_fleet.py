"""The seeded fleet answers the release checklist's SQL exactly as each scenario promises."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timezone

import asyncpg
import pytest

from controlroom.sandbox.world.fleet import DEPLOYED_VERSION, FAILING_LOCATIONS_KEY, seed_fleet
from controlroom.sandbox.world.scenarios import SCENARIOS, Scenario

# -- the checklist's questions, asked by SQL -------------------------------------------


async def breakers_not_closed(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """Non-closed breakers with their failed syncs in the last 15 minutes."""
    return await db.fetch(
        """
        SELECT c.location_id, c.provider, c.state, c.failure_count, c.opened_at,
               count(e.id) AS failures
        FROM rotation_cb c
        LEFT JOIN pos_sync_events e ON e.location_id = c.location_id AND NOT e.success
                                   AND e.at > now() - interval '15 minutes'
        WHERE c.state != 'closed'
        GROUP BY c.location_id ORDER BY c.location_id
        """
    )


async def failed_over_4h(db: asyncpg.Connection) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM pos_integrations_location "
        "WHERE sync_state = 'failed' AND sync_failed_since < now() - interval '4 hours'"
    )


async def mttr_minutes(db: asyncpg.Connection) -> float:
    return await db.fetchval(
        "SELECT (avg(extract(epoch FROM resolved_at - opened_at)) / 60)::float8 FROM incidents "
        "WHERE opened_at > now() - interval '30 days' AND resolved_at IS NOT NULL"
    )


async def expiring_credentials(db: asyncpg.Connection) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM pos_integrations_location "
        "WHERE credential_expires_at < now() + interval '7 days'"
    )


async def migrations_missing_in_production(db: asyncpg.Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT version FROM schema_migrations WHERE environment = 'staging' "
        "EXCEPT SELECT version FROM schema_migrations WHERE environment = 'production' ORDER BY 1"
    )
    return [row["version"] for row in rows]


async def rotation_success_24h(db: asyncpg.Connection) -> float:
    return await db.fetchval(
        "SELECT avg(success::int)::float8 FROM pos_rotation_metrics WHERE recorded_at > now() - interval '24 hours'"
    )


async def sync_success_1h(db: asyncpg.Connection) -> float:
    return await db.fetchval(
        "SELECT avg(success::int)::float8 FROM pos_sync_events WHERE at > now() - interval '1 hour'"
    )


async def breaker_triggers_24h(db: asyncpg.Connection) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM rotation_cb_events WHERE to_state = 'open' AND at > now() - interval '24 hours'"
    )


async def sandbox_state(db: asyncpg.Connection) -> dict[str, object]:
    rows = await db.fetch("SELECT key, value FROM sandbox.state")
    return {row["key"]: json.loads(row["value"]) for row in rows}


# -- per scenario ----------------------------------------------------------------------


async def assert_scenario_answers(db: asyncpg.Connection, scenario: Scenario) -> None:
    open_rows = await breakers_not_closed(db)
    assert len(open_rows) == scenario.open_breakers
    for row in open_rows:
        assert row["state"] == "open" and row["provider"] == "maxirest"
        assert row["failures"] >= 10 and row["failure_count"] == row["failures"]
        assert row["opened_at"] is not None
        events = await db.fetch(
            "SELECT from_state, to_state FROM rotation_cb_events WHERE location_id = $1 ORDER BY at, id",
            row["location_id"],
        )
        assert (events[0]["from_state"], events[0]["to_state"]) == ("closed", "open")
        assert events[-1]["to_state"] == "open"
        assert all(a["to_state"] == b["from_state"] for a, b in zip(events, events[1:]))

    assert await failed_over_4h(db) == scenario.failed_sync_over_4h
    assert abs(await mttr_minutes(db) - scenario.mttr_minutes) <= 2
    assert await db.fetchval("SELECT count(*) FROM incidents WHERE resolved_at IS NULL OR security") == 0
    assert await expiring_credentials(db) == scenario.expiring_credentials
    assert len(await migrations_missing_in_production(db)) == scenario.migrations_behind
    assert await db.fetchval(
        "SELECT count(*) FROM (SELECT version FROM schema_migrations WHERE environment = 'production' "
        "EXCEPT SELECT version FROM schema_migrations WHERE environment = 'staging') extra"
    ) == 0
    assert await rotation_success_24h(db) > 0.98
    assert await sync_success_1h(db) > 0.95

    state = await sandbox_state(db)
    assert state["scenario"] == scenario.name
    assert state["failing_providers"] == []
    assert state["deployed_version"] == DEPLOYED_VERSION


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_each_scenario_answers_the_checklist(db: asyncpg.Connection, name: str) -> None:
    scenario = SCENARIOS[name]
    await seed_fleet(db, scenario)
    await assert_scenario_answers(db, scenario)


async def test_every_data_knob_at_once(db: asyncpg.Connection) -> None:
    scenario = replace(SCENARIOS["healthy"], name="everything-broken", open_breakers=3,
                       failed_sync_over_4h=4, expiring_credentials=6, migrations_behind=2,
                       mttr_minutes=200.0)
    summary = await seed_fleet(db, scenario)
    await assert_scenario_answers(db, scenario)
    missing = await migrations_missing_in_production(db)
    newest = await db.fetch(
        "SELECT version FROM schema_migrations WHERE environment = 'staging' ORDER BY version DESC LIMIT 2"
    )
    assert missing == sorted(row["version"] for row in newest)  # the newest ones are behind
    # The broken locations are the ones the simulator must keep failing.
    state = await sandbox_state(db)
    assert set(state[FAILING_LOCATIONS_KEY]) == set(summary.open_breakers) | set(summary.failed_over_4h)
    for days in await db.fetch(
        "SELECT extract(epoch FROM credential_expires_at - now()) / 86400 AS d "
        "FROM pos_integrations_location WHERE credential_expires_at >= now() + interval '7 days'"
    ):
        assert 9.99 < days["d"] <= 90


async def test_healthy_is_healthy_beyond_the_gates(db: asyncpg.Connection) -> None:
    await seed_fleet(db, SCENARIOS["healthy"])
    assert await breaker_triggers_24h(db) < 5
    assert await breaker_triggers_24h(db) >= 1  # some history, not an empty table
    impact = await db.fetchval(
        "SELECT avg((sync_state = 'failed' OR NOT connected)::int)::float8 FROM pos_integrations_location"
    )
    assert impact < 0.01
    failed = await db.fetch(
        "SELECT sync_failed_since FROM pos_integrations_location WHERE sync_state = 'failed'"
    )
    assert failed, "a couple of recently failed locations make the fleet realistic"
    assert await db.fetchval(
        "SELECT count(*) FROM pos_rotation_metrics WHERE recorded_at > now() - interval '10 minutes'"
    ) > 0  # the post-deployment query has something to show
    p95 = await db.fetchval(
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM pos_rotation_metrics WHERE success"
    )
    assert 150 < p95 < 500


async def test_data_is_consistent_with_itself(db: asyncpg.Connection) -> None:
    await seed_fleet(db, SCENARIOS["breaker-open"])
    # sync_state agrees with each location's latest sync event.
    disagree = await db.fetchval(
        """
        SELECT count(*) FROM pos_integrations_location l
        JOIN LATERAL (SELECT success FROM pos_sync_events e WHERE e.location_id = l.location_id
                      ORDER BY at DESC LIMIT 1) last ON true
        WHERE (l.sync_state = 'ok') <> last.success
        """
    )
    assert disagree == 0
    # failure_count is the breaker's failures in the last 15 minutes, for every breaker.
    wrong = await db.fetchval(
        """
        SELECT count(*) FROM rotation_cb c
        WHERE failure_count <> (SELECT count(*) FROM pos_sync_events e WHERE e.location_id = c.location_id
                                AND NOT success AND at > now() - interval '15 minutes')
        """
    )
    assert wrong == 0
    assert await db.fetchval("SELECT count(*) FROM rotation_cb") == 300
    assert await db.fetchval(
        "SELECT count(*) FROM pos_integrations_location WHERE last_sync_at IS NULL OR last_sync_at > now()"
    ) == 0


async def test_locations_look_real(db: asyncpg.Connection) -> None:
    summary = await seed_fleet(db, SCENARIOS["healthy"], locations=1000)
    counts = {row["provider"]: row["n"] for row in await db.fetch(
        "SELECT provider, count(*) AS n FROM pos_integrations_location GROUP BY provider"
    )}
    assert counts == {"fudo": 450, "maxirest": 350, "bistrsoft": 200} == summary.by_provider
    rows = await db.fetch("SELECT location_id, location_name, provider FROM pos_integrations_location")
    for row in rows:
        assert re.fullmatch(rf"{row['provider']}-\d{{6}}", row["location_id"])
        assert " — " in row["location_name"] and row["location_name"].isprintable()
    assert len({row["location_name"] for row in rows}) > 900


async def table_digest(db: asyncpg.Connection) -> str:
    parts = []
    for table, order in (("pos_integrations_location", "location_id"), ("rotation_cb", "location_id"),
                         ("rotation_cb_events", "id"), ("pos_sync_events", "id"),
                         ("pos_rotation_metrics", "id"), ("incidents", "id"),
                         ("schema_migrations", "environment, version")):
        parts.append(await db.fetchval(f"SELECT md5(string_agg(t::text, '|' ORDER BY {order})) FROM {table} t"))
    return "".join(parts)


async def test_seeding_is_deterministic_and_repeatable(db: asyncpg.Connection) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    scenario = SCENARIOS["breaker-open"]
    await seed_fleet(db, scenario, now=now)
    first = await table_digest(db)
    await seed_fleet(db, scenario, now=now)  # re-seeding replaces, it does not append
    assert await table_digest(db) == first
    assert await db.fetchval("SELECT count(*) FROM pos_integrations_location") == 300
    await seed_fleet(db, scenario, now=now, seed=8)
    assert await table_digest(db) != first


async def test_too_small_a_fleet_is_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(ValueError, match="MaxiRest"):
        await seed_fleet(db, replace(SCENARIOS["healthy"], open_breakers=5), locations=10)


async def test_ten_thousand_locations(db: asyncpg.Connection) -> None:
    scenario = SCENARIOS["breaker-open"]
    summary = await seed_fleet(db, scenario, locations=10_000)
    print(f"\nseeded 10,000 locations in {summary.elapsed_s:.2f} s "
          f"({summary.sync_events} sync events, {summary.rotations} rotations)")
    assert await db.fetchval("SELECT count(*) FROM pos_integrations_location") == 10_000
    await assert_scenario_answers(db, scenario)
    small = await seed_fleet(db, scenario)
    print(f"seeded 300 locations in {small.elapsed_s:.3f} s")
