"""Keeps the sandbox fleet moving: syncs, rotations and circuit breakers, one tick at a time.

Each tick, in one transaction:
  * sync attempts for a random sample of locations, plus every location of a provider listed
    in sandbox.state 'failing_providers' (so an outage trips breakers within ~10 ticks), plus
    the trial call of every half-open breaker. An open breaker lets no attempt through, and a
    disconnected location (the rollback's `connected = false`) is never attempted. A failed
    location is retried at most every RETRY_BACKOFF (at most 8 tries in a 15-minute window),
    so only a failing provider, never one broken location, trips its breaker.
  * outcomes: failing providers and sandbox.state 'failing_locations' (the scenario's broken
    locations, see fleet.py) always fail; others fail at scenario.sync_failure_rate, but only
    while their breaker window holds no failure, so random noise can never open a breaker.
  * the breaker rule (`breaker_transition`) applied, transitions written to rotation_cb_events.
  * credential rotations for a random sample, written to pos_rotation_metrics.

Injecting `now` into tick() makes a run deterministic for a given seed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg

from controlroom.sandbox.world.fleet import (
    FAILING_LOCATIONS_KEY,
    ROTATION_ERRORS,
    ROTATION_FAILURE_RATE,
    SYNC_ERRORS,
    fingerprint,
    rotation_latency_ms,
)
from controlroom.sandbox.world.scenarios import PROVIDER_TITLES, Scenario

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
COMMAND_TIMEOUT_S = 5.0
RETRY_BACKOFF = timedelta(minutes=2)
APPLICATION_NAME = "controlroom-sandbox-simulator"


def breaker_transition(
    state: str,
    *,
    outcome: bool | None,
    failures_in_window: int,
    opened_at: datetime | None,
    now: datetime,
    threshold: int = 10,
    cooldown_s: float = 60.0,
) -> str:
    """The breaker's next state.

    outcome: True/False for a sync attempt made now, None when no attempt was made (only
    time passed). failures_in_window counts the failures in the window including this one.
    """
    if state == CLOSED:
        return OPEN if outcome is False and failures_in_window >= threshold else CLOSED
    if state == HALF_OPEN:
        if outcome is None:
            return HALF_OPEN
        return CLOSED if outcome else OPEN
    if state == OPEN:
        # Nothing passes an open breaker; only the cool-down moves it on.
        cooled = opened_at is not None and (now - opened_at).total_seconds() >= cooldown_s
        return HALF_OPEN if cooled else OPEN
    raise ValueError(f"unknown breaker state {state!r}")


@dataclass(frozen=True)
class Transition:
    location_id: str
    provider: str
    from_state: str
    to_state: str


@dataclass(frozen=True)
class TickSummary:
    at: datetime
    attempts: int
    failures: int
    rotations: int
    rotation_failures: int
    transitions: tuple[Transition, ...]
    open_breakers: int
    half_open_breakers: int
    elapsed_ms: float


@dataclass(frozen=True)
class _Attempt:
    row: asyncpg.Record
    error: str | None


class Simulator:
    """One simulated platform clock; tick() by hand (tests) or run() in a task (sandbox)."""

    def __init__(
        self,
        dsn: str,
        scenario: Scenario,
        *,
        seed: int = 11,
        cooldown_s: float = 60.0,
        sample_fraction: float = 0.01,
        rotation_fraction: float = 0.002,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.dsn = dsn
        self.scenario = scenario
        self.cooldown_s = cooldown_s
        self.sample_fraction = sample_fraction      # share of the fleet synced per tick
        self.rotation_fraction = rotation_fraction  # share of the fleet rotated per tick
        self.command_timeout_s = command_timeout_s
        self._rng = random.Random(seed)
        self._pool: asyncpg.Pool | None = None
        self._fleet: list[str] | None = None  # sorted location ids, loaded on the first tick

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def run(self, interval_s: float = 2.0) -> None:
        """Tick every interval_s until cancelled; a failed tick is logged, not fatal."""
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.tick()
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                    log.warning("simulator tick failed: %s", exc)
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
        finally:
            await self.close()

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self.command_timeout_s)
        except TimeoutError:
            pool.terminate()
        except BaseException:
            pool.terminate()
            raise

    async def tick(self, now: datetime | None = None) -> TickSummary:
        now = now or datetime.now(timezone.utc)
        started = time.perf_counter()
        pool = await self._ensure_pool()
        async with pool.acquire() as conn, conn.transaction():
            failing_providers, failing_locations = await self._read_state(conn)
            fleet = await self._fleet_ids(conn)
            sampled = self._sample(fleet, self.sample_fraction)
            rotating = self._sample(fleet, self.rotation_fraction)
            rows = await self._fetch(conn, sampled | rotating, failing_providers)
            attempts = [
                _Attempt(row, self._sync_error(row, failing_providers, failing_locations))
                for row in rows
                if _wants_sync(row, sampled, failing_providers, now)
            ]
            await self._record_syncs(conn, attempts, now)
            counts = await self._failures_in_window(conn, rows, attempts, now)
            transitions, final = await self._apply_breakers(conn, rows, attempts, counts, now)
            rotations = self._rotations(rows, rotating, failing_providers, failing_locations, now)
            await _copy(conn, "pos_rotation_metrics", rotations,
                        ("recorded_at", "location_id", "provider", "success", "latency_ms",
                         "token_fingerprint", "error"), self.command_timeout_s)
        return TickSummary(
            at=now,
            attempts=len(attempts),
            failures=sum(a.error is not None for a in attempts),
            rotations=len(rotations),
            rotation_failures=sum(not r[3] for r in rotations),
            transitions=tuple(transitions),
            open_breakers=sum(s == OPEN for s in final.values()),
            half_open_breakers=sum(s == HALF_OPEN for s in final.values()),
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    # -- reading -----------------------------------------------------------------------

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            timeout_ms = str(int(self.command_timeout_s * 1000))
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=2,
                timeout=self.command_timeout_s,
                command_timeout=self.command_timeout_s,
                server_settings={"application_name": APPLICATION_NAME, "statement_timeout": timeout_ms},
            )
        return self._pool

    async def _read_state(self, conn: asyncpg.Connection) -> tuple[set[str], set[str]]:
        rows = await conn.fetch(
            "SELECT key, value FROM sandbox.state WHERE key = ANY($1::text[])",
            ["failing_providers", FAILING_LOCATIONS_KEY],
        )
        state = {row["key"]: _as_list(json.loads(row["value"])) for row in rows}
        return set(state.get("failing_providers", [])), set(state.get(FAILING_LOCATIONS_KEY, []))

    async def _fleet_ids(self, conn: asyncpg.Connection) -> list[str]:
        """The fleet does not change under a running sandbox; a re-seed needs a new Simulator."""
        if self._fleet is None:
            rows = await conn.fetch("SELECT location_id FROM pos_integrations_location ORDER BY 1")
            self._fleet = [row["location_id"] for row in rows]
        return self._fleet

    def _sample(self, fleet: Sequence[str], fraction: float) -> set[str]:
        expected = len(fleet) * fraction
        k = int(expected) + (self._rng.random() < expected - int(expected))  # unbiased rounding
        return set(self._rng.sample(fleet, min(k, len(fleet))))

    async def _fetch(self, conn: asyncpg.Connection, sampled: set[str], failing: set[str]) -> list:
        """Breakers that may move this tick, oldest id first so the rng is used in order."""
        return await conn.fetch(
            """
            SELECT c.location_id, c.provider, l.connected, l.sync_state, l.updated_at,
                   c.state, c.failure_count,
                   c.failure_threshold, c.window_minutes, c.opened_at, c.changed_at
            FROM rotation_cb c JOIN pos_integrations_location l USING (location_id)
            WHERE c.location_id = ANY($1::text[]) OR c.state <> 'closed'
               OR c.failure_count > 0 OR c.provider = ANY($2::text[])
            ORDER BY c.location_id
            """,
            sorted(sampled),
            sorted(failing),
        )

    # -- syncs -------------------------------------------------------------------------

    def _sync_error(self, row: asyncpg.Record, failing_providers: set[str],
                    failing_locations: set[str]) -> str | None:
        if row["provider"] in failing_providers:
            return f"HTTP 503 Service Unavailable from {PROVIDER_TITLES.get(row['provider'], row['provider'])}"
        if row["location_id"] in failing_locations:
            return "timeout after 10000 ms"
        # Random noise only while the window is clean: at most one stray failure per window.
        if row["failure_count"] == 0 and self._rng.random() < self.scenario.sync_failure_rate:
            return self._rng.choice(SYNC_ERRORS)
        return None

    async def _record_syncs(self, conn: asyncpg.Connection, attempts: list[_Attempt], now: datetime) -> None:
        if not attempts:
            return
        await _copy(conn, "pos_sync_events",
                    [(now, a.row["location_id"], a.row["provider"], a.error is None, a.error) for a in attempts],
                    ("at", "location_id", "provider", "success", "error"), self.command_timeout_s)
        await conn.execute(
            """
            UPDATE pos_integrations_location l
            SET sync_state = CASE WHEN u.ok THEN 'ok' ELSE 'failed' END,
                sync_failed_since = CASE WHEN u.ok THEN NULL ELSE coalesce(l.sync_failed_since, $3) END,
                last_sync_at = CASE WHEN u.ok THEN $3 ELSE l.last_sync_at END,
                updated_at = $3
            FROM unnest($1::text[], $2::bool[]) AS u(location_id, ok)
            WHERE l.location_id = u.location_id
            """,
            [a.row["location_id"] for a in attempts],
            [a.error is None for a in attempts],
            now,
        )

    async def _failures_in_window(self, conn: asyncpg.Connection, rows: list, attempts: list[_Attempt],
                                  now: datetime) -> dict[str, int]:
        """Failures in each breaker's window; a closed breaker's window starts when it closed."""
        ids = {a.row["location_id"] for a in attempts if a.error} | {
            r["location_id"] for r in rows if r["failure_count"] > 0
        }
        if not ids:
            return {}
        found = await conn.fetch(
            """
            SELECT c.location_id, count(e.id) AS failures
            FROM rotation_cb c
            LEFT JOIN pos_sync_events e
              ON e.location_id = c.location_id AND NOT e.success
             AND e.at > $2::timestamptz - make_interval(mins => c.window_minutes) AND e.at <= $2
             AND (c.state <> 'closed' OR e.at >= c.changed_at)
            WHERE c.location_id = ANY($1::text[])
            GROUP BY c.location_id
            """,
            sorted(ids),
            now,
        )
        return {row["location_id"]: row["failures"] for row in found}

    # -- breakers ----------------------------------------------------------------------

    async def _apply_breakers(self, conn: asyncpg.Connection, rows: list, attempts: list[_Attempt],
                              counts: dict[str, int], now: datetime) -> tuple[list[Transition], dict[str, str]]:
        outcomes = {a.row["location_id"]: a.error is None for a in attempts}
        changed, transitions, final = [], [], {}
        for row in rows:
            location = row["location_id"]
            count = counts.get(location, row["failure_count"])
            state = breaker_transition(
                row["state"],
                outcome=outcomes.get(location),
                failures_in_window=count,
                opened_at=row["opened_at"] or row["changed_at"],
                now=now,
                threshold=row["failure_threshold"],
                cooldown_s=self.cooldown_s,
            )
            final[location] = state
            if state == CLOSED and row["state"] != CLOSED:
                count = 0  # a closed breaker starts a fresh window
            if state != row["state"]:
                transitions.append(Transition(location, row["provider"], row["state"], state))
            if state != row["state"] or count != row["failure_count"]:
                opened_at = now if state == OPEN and row["state"] != OPEN else row["opened_at"]
                changed.append((location, state, count, None if state == CLOSED else opened_at))
        await self._write_breakers(conn, changed, transitions, now)
        return transitions, final

    async def _write_breakers(self, conn: asyncpg.Connection, changed: list[tuple],
                              transitions: list[Transition], now: datetime) -> None:
        if changed:
            ids, states, counts, opened = (list(column) for column in zip(*changed))
            await conn.execute(
                """
                UPDATE rotation_cb c
                SET changed_at = CASE WHEN u.state <> c.state THEN $5 ELSE c.changed_at END,
                    state = u.state, failure_count = u.failure_count, opened_at = u.opened_at
                FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[])
                     AS u(location_id, state, failure_count, opened_at)
                WHERE c.location_id = u.location_id
                """,
                ids, states, counts, opened, now,
            )
        await _copy(conn, "rotation_cb_events",
                    [(t.location_id, t.provider, t.from_state, t.to_state, now) for t in transitions],
                    ("location_id", "provider", "from_state", "to_state", "at"), self.command_timeout_s)

    # -- rotations ---------------------------------------------------------------------

    def _rotations(self, rows: list, rotating: set[str], failing_providers: set[str],
                   failing_locations: set[str], now: datetime) -> list[tuple]:
        """Rotations of sampled locations whose breaker lets calls through."""
        records = []
        for row in rows:
            if row["location_id"] not in rotating or row["state"] != CLOSED or not row["connected"]:
                continue
            broken = row["provider"] in failing_providers or row["location_id"] in failing_locations
            ok = not broken and self._rng.random() >= ROTATION_FAILURE_RATE
            extra = self.scenario.extra_latency_ms.get(row["provider"], 0)
            records.append((now, row["location_id"], row["provider"], ok,
                            rotation_latency_ms(self._rng, row["provider"], ok, extra),
                            fingerprint(self._rng), None if ok else self._rng.choice(ROTATION_ERRORS)))
        return records


def _as_list(value: object) -> list[str]:
    """A state value as a list of ids; tolerate a bare string or null written by hand."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]  # type: ignore[union-attr]


def _wants_sync(row: asyncpg.Record, sampled: set[str], failing_providers: set[str], now: datetime) -> bool:
    if not row["connected"] or row["state"] == OPEN:
        return False
    if row["state"] == HALF_OPEN:
        return True  # the trial call
    if row["provider"] in failing_providers:
        return True  # an outage is retried every tick: that is what trips breakers
    # updated_at is the last sync attempt (the simulator and the seeder set it).
    backing_off = row["sync_state"] == "failed" and now - row["updated_at"] < RETRY_BACKOFF
    return row["location_id"] in sampled and not backing_off


async def _copy(conn: asyncpg.Connection, table: str, rows: Iterable[tuple], columns: Sequence[str],
                timeout: float) -> None:
    rows = list(rows)
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=list(columns), timeout=timeout)
