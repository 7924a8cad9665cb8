"""The simulator: the breaker rule, outages that open and close breakers, a quiet healthy fleet."""

from __future__ import annotations

import asyncio
import json
import statistics
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from controlroom.sandbox.world.fleet import seed_fleet
from controlroom.sandbox.world.scenarios import SCENARIOS
from controlroom.sandbox.world.simulator import (
    APPLICATION_NAME,
    CLOSED,
    HALF_OPEN,
    OPEN,
    Simulator,
    breaker_transition,
)

T0 = datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)
STEP = timedelta(seconds=30)


async def set_failing(db: asyncpg.Connection, providers: list[str]) -> None:
    await db.execute("UPDATE sandbox.state SET value = $1::jsonb WHERE key = 'failing_providers'",
                     json.dumps(providers))


async def breaker_states(db: asyncpg.Connection, provider: str) -> dict[str, int]:
    rows = await db.fetch("SELECT state, count(*) AS n FROM rotation_cb WHERE provider = $1 GROUP BY state",
                          provider)
    return {row["state"]: row["n"] for row in rows}


async def not_closed(db: asyncpg.Connection) -> int:
    return await db.fetchval("SELECT count(*) FROM rotation_cb WHERE state != 'closed'")


# -- the rule --------------------------------------------------------------------------

OPENED = T0 - timedelta(seconds=61)


@pytest.mark.parametrize(
    ("state", "outcome", "failures", "opened_at", "expected"),
    [
        (CLOSED, True, 0, None, CLOSED),
        (CLOSED, True, 12, None, CLOSED),         # a success never opens
        (CLOSED, False, 9, None, CLOSED),         # below the threshold
        (CLOSED, False, 10, None, OPEN),          # the 10th failure in the window
        (CLOSED, False, 14, None, OPEN),
        (CLOSED, None, 10, None, CLOSED),         # no attempt, nothing happens
        (OPEN, None, 10, T0 - timedelta(seconds=59), OPEN),   # cooling down
        (OPEN, None, 10, T0 - timedelta(seconds=60), HALF_OPEN),
        (OPEN, True, 10, T0 - timedelta(seconds=10), OPEN),   # nothing passes an open breaker
        (OPEN, None, 10, None, OPEN),             # no opening time, no cool-down
        (HALF_OPEN, None, 10, OPENED, HALF_OPEN),  # waiting for the trial call
        (HALF_OPEN, True, 10, OPENED, CLOSED),
        (HALF_OPEN, False, 11, OPENED, OPEN),
        (HALF_OPEN, False, 0, OPENED, OPEN),      # one failed trial reopens, whatever the count
    ],
)
def test_breaker_rule(state: str, outcome: bool | None, failures: int, opened_at: datetime | None,
                      expected: str) -> None:
    got = breaker_transition(state, outcome=outcome, failures_in_window=failures, opened_at=opened_at,
                             now=T0, threshold=10, cooldown_s=60.0)
    assert got == expected


def test_breaker_rule_rejects_unknown_states() -> None:
    with pytest.raises(ValueError):
        breaker_transition("ajar", outcome=None, failures_in_window=0, opened_at=None, now=T0)


# -- an outage, end to end -------------------------------------------------------------


async def test_failing_provider_opens_then_recovers(db: asyncpg.Connection, db_dsn: str) -> None:
    await seed_fleet(db, SCENARIOS["healthy"], locations=60, now=T0)
    fudo = await db.fetchval("SELECT count(*) FROM pos_integrations_location WHERE provider = 'fudo'")
    await set_failing(db, ["fudo"])
    start = T0 + timedelta(minutes=20)  # the seeded failures are out of the window by then
    async with Simulator(db_dsn, SCENARIOS["healthy"], cooldown_s=60) as sim:
        at = start
        for _ in range(9):
            at += STEP
            await sim.tick(at)
        assert await breaker_states(db, "fudo") == {CLOSED: fudo}
        assert await db.fetchval("SELECT min(failure_count) FROM rotation_cb WHERE provider = 'fudo'") == 9

        at += STEP
        tenth = await sim.tick(at)                          # 10 failures in 4.5 min: open
        assert tenth.open_breakers == fudo and len(tenth.transitions) == fudo
        assert await breaker_states(db, "fudo") == {OPEN: fudo}
        assert await not_closed(db) == fudo                 # the checklist's query sees them
        backed = await db.fetchval(
            """
            SELECT count(*) FROM rotation_cb c WHERE c.state = 'open' AND c.opened_at = $1
              AND (SELECT count(*) FROM pos_sync_events e WHERE e.location_id = c.location_id
                   AND NOT e.success AND e.at > c.opened_at - interval '15 minutes') >= 10
            """,
            at,
        )
        assert backed == fudo
        assert await db.fetchval(
            "SELECT count(*) FROM pos_integrations_location WHERE provider = 'fudo' "
            "AND sync_state = 'failed' AND sync_failed_since = $1", start + STEP
        ) == fudo

        at += STEP
        assert (await sim.tick(at)).attempts < fudo         # open: no fudo attempts, still cooling
        assert await breaker_states(db, "fudo") == {OPEN: fudo}
        at += STEP
        await sim.tick(at)                                  # 60 s later: half-open
        assert await breaker_states(db, "fudo") == {HALF_OPEN: fudo}
        at += STEP
        await sim.tick(at)                                  # the trial fails: open again
        assert await breaker_states(db, "fudo") == {OPEN: fudo}

        await set_failing(db, [])                           # the provider recovers
        at += STEP
        await sim.tick(at)
        at += STEP
        await sim.tick(at)
        assert await breaker_states(db, "fudo") == {HALF_OPEN: fudo}
        at += STEP
        closing = await sim.tick(at)                        # the trial succeeds: closed
        assert {(t.from_state, t.to_state) for t in closing.transitions} == {(HALF_OPEN, CLOSED)}
        assert await not_closed(db) == 0
        assert await db.fetchval(
            "SELECT count(*) FROM pos_integrations_location WHERE provider = 'fudo' AND sync_state = 'ok' "
            "AND sync_failed_since IS NULL AND last_sync_at = $1", at
        ) == fudo

        # A closed breaker starts a fresh window: one new failure does not reopen it.
        await set_failing(db, ["fudo"])
        at += STEP
        await sim.tick(at)
        assert await breaker_states(db, "fudo") == {CLOSED: fudo}
        assert await db.fetchval("SELECT max(failure_count) FROM rotation_cb WHERE provider = 'fudo'") == 1

    sequences = await db.fetch(
        """
        SELECT location_id, array_agg(from_state || '>' || to_state ORDER BY id) AS steps
        FROM rotation_cb_events WHERE at > $1 GROUP BY location_id
        """,
        start,
    )
    assert len(sequences) == fudo
    expected = ["closed>open", "open>half_open", "half_open>open", "open>half_open", "half_open>closed"]
    assert all(row["steps"] == expected for row in sequences)
    assert await db.fetchval("SELECT count(*) FROM pos_integrations_location WHERE NOT connected") == 0


async def test_disconnected_locations_are_not_synced(db: asyncpg.Connection, db_dsn: str) -> None:
    await seed_fleet(db, SCENARIOS["fudo-outage"], locations=60, now=T0)
    await set_failing(db, ["fudo"])
    await db.execute("UPDATE pos_integrations_location SET connected = false WHERE provider = 'fudo'")
    async with Simulator(db_dsn, SCENARIOS["fudo-outage"], sample_fraction=1.0) as sim:
        for i in range(1, 13):
            await sim.tick(T0 + i * STEP)
    assert await db.fetchval(
        "SELECT count(*) FROM pos_sync_events WHERE provider = 'fudo' AND at > $1", T0
    ) == 0
    assert await db.fetchval(
        "SELECT count(*) FROM pos_sync_events WHERE provider <> 'fudo' AND at > $1", T0
    ) > 0
    assert await not_closed(db) == 0
    assert await db.fetchval(
        "SELECT count(*) FROM pos_integrations_location WHERE provider = 'fudo' AND connected"
    ) == 0  # the simulator never touches connected


# -- scenarios stay what they are -------------------------------------------------------


@pytest.mark.parametrize("failure_rate", [SCENARIOS["healthy"].sync_failure_rate, 0.2])
async def test_healthy_never_opens_a_breaker(db: asyncpg.Connection, db_dsn: str, failure_rate: float) -> None:
    scenario = replace(SCENARIOS["healthy"], sync_failure_rate=failure_rate)
    await seed_fleet(db, scenario, now=T0)
    seeded_events = await db.fetchval("SELECT count(*) FROM rotation_cb_events")
    async with Simulator(db_dsn, scenario, sample_fraction=0.5, rotation_fraction=0.05) as sim:
        ticks = [await sim.tick(T0 + i * timedelta(seconds=10)) for i in range(1, 121)]
    assert sum(t.attempts for t in ticks) > 15_000
    assert sum(t.failures for t in ticks) > 0                 # noise happened ...
    assert not any(t.transitions for t in ticks)               # ... and opened nothing
    assert await not_closed(db) == 0
    assert await db.fetchval("SELECT count(*) FROM rotation_cb_events") == seeded_events
    if failure_rate < 0.01:
        window = (T0, T0 + timedelta(minutes=20))
        assert await db.fetchval(
            "SELECT avg(success::int)::float8 FROM pos_sync_events WHERE at > $1 AND at <= $2", *window
        ) > 0.95
        assert await db.fetchval(
            "SELECT avg(success::int)::float8 FROM pos_rotation_metrics WHERE recorded_at > $1", T0
        ) > 0.98


async def test_seeded_broken_locations_stay_broken(db: asyncpg.Connection, db_dsn: str) -> None:
    scenario = replace(SCENARIOS["breaker-open"], failed_sync_over_4h=2)
    await seed_fleet(db, scenario, locations=100, now=T0)
    async with Simulator(db_dsn, scenario, sample_fraction=0.2) as sim:
        for i in range(1, 31):
            now = T0 + i * timedelta(seconds=10)
            await sim.tick(now)
            assert await not_closed(db) == 4                # open or half-open, never closed
    failures = await db.fetchval(
        "SELECT min(n) FROM (SELECT count(e.id) AS n FROM rotation_cb c LEFT JOIN pos_sync_events e "
        "ON e.location_id = c.location_id AND NOT e.success AND e.at > $1::timestamptz - interval '15 minutes' "
        "WHERE c.state != 'closed' GROUP BY c.location_id) per_breaker",
        now,
    )
    assert failures >= 10
    assert await db.fetchval(
        "SELECT count(*) FROM pos_integrations_location "
        "WHERE sync_state = 'failed' AND sync_failed_since < $1::timestamptz - interval '4 hours'", now
    ) == 2
    assert await db.fetchval(
        "SELECT count(*) FROM rotation_cb_events WHERE at > $1 AND to_state = 'half_open'", T0
    ) >= 4  # the simulator did cycle them through their trial calls


# -- the loop ---------------------------------------------------------------------------


async def test_run_ticks_until_cancelled_and_closes_its_pool(db: asyncpg.Connection, db_dsn: str) -> None:
    summary = await seed_fleet(db, SCENARIOS["healthy"])
    sim = Simulator(db_dsn, SCENARIOS["healthy"], sample_fraction=0.1)
    task = asyncio.create_task(sim.run(interval_s=0.05))
    await asyncio.sleep(0.6)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.fetchval("SELECT count(*) FROM pos_sync_events WHERE at > $1", summary.now) > 0
    for _ in range(50):
        left = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        if left == 0:
            break
        await asyncio.sleep(0.05)
    assert left == 0
    await sim.close()  # idempotent


async def test_tick_at_ten_thousand_locations(db: asyncpg.Connection, db_dsn: str) -> None:
    await seed_fleet(db, SCENARIOS["healthy"], locations=10_000, now=T0)
    async with Simulator(db_dsn, SCENARIOS["healthy"]) as sim:
        await sim.tick(T0 + STEP)  # warms the pool and the fleet list
        quiet = [await sim.tick(T0 + i * STEP) for i in range(2, 7)]
        await set_failing(db, ["fudo"])
        outage = [await sim.tick(T0 + i * STEP) for i in range(7, 12)]
    print(f"\ntick at 10,000 locations: {statistics.median(t.elapsed_ms for t in quiet):.1f} ms "
          f"({quiet[0].attempts} syncs), with Fudo failing "
          f"{statistics.median(t.elapsed_ms for t in outage):.1f} ms ({outage[0].attempts} syncs)")
    assert all(t.failures >= 4_500 for t in outage)  # every Fudo location, every tick
