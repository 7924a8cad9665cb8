"""The shared journal store on the real embedded Postgres: schema, chain, conflicts, mirror."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from controlroom.release.journal import GENESIS, Journal, new_record, read_records, verify_chain
from controlroom.config.loader import load_config
from controlroom.errors import ConfigError
from controlroom.release.pg_journal import SCHEMA_VERSION, PgJournal, StoreRefused, ensure_schema

ALICE = {"user": "alice", "host": "bastion-1"}
BOB = {"user": "bob", "host": "bastion-2"}


async def test_schema_created_once_under_concurrency(db_dsn: str) -> None:
    conns = [await asyncpg.connect(db_dsn, timeout=10) for _ in range(5)]
    try:
        versions = await asyncio.gather(*(ensure_schema(c) for c in conns))
        assert versions == [SCHEMA_VERSION] * 5
        # one row per migration, each applied once whatever the number of control rooms starting
        assert await conns[0].fetchval("SELECT count(*) FROM controlroom.schema_version") == SCHEMA_VERSION
    finally:
        for c in conns:
            await c.close()


async def test_a_newer_controlroom_upgrades_an_older_schema_keeping_its_releases(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn, timeout=10)
    try:
        assert await ensure_schema(conn, known=1) == 1  # as the controlroom of schema 1 left it
        first = new_record(1, "2026-12-06T10:00:00+00:00", "session_opened", ALICE, {"n": 1}, GENESIS)
        await conn.execute("INSERT INTO controlroom.releases (release_id, environment, version) VALUES ('r0', 's', '1')")
        await conn.execute(  # what a controlroom of schema 1 wrote: no body column yet
            "INSERT INTO controlroom.release_events (release_id, seq, prev_hash, hash, operator, host, kind, data, at) "
            "VALUES ('r0', 1, $1, $2, $3::jsonb, 'h', 'session_opened', $4::jsonb, $5)",
            first.prev, first.hash, json.dumps(ALICE), json.dumps(first.data), first.ts)
        assert await ensure_schema(conn) == SCHEMA_VERSION
        assert [v for v in await conn.fetchval("SELECT array_agg(version ORDER BY version) FROM controlroom.schema_version")] \
            == list(range(1, SCHEMA_VERSION + 1))
        newer = PgJournal(conn, BOB, lambda: datetime.now(UTC), lambda text: text)
        assert await newer.read("r0") == [first]  # read back from its columns, and it verifies
        second = await newer.append("r0", "attested", {"item_id": "on-call"})
        assert verify_chain(await newer.read("r0")) == [] and second.prev == first.hash
        assert await newer.members("r0") == []  # the sessions table a version-2 store adds
    finally:
        await conn.close()


async def test_older_controlroom_refuses_newer_schema(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn, timeout=10)
    try:
        await ensure_schema(conn)
        await conn.execute("INSERT INTO controlroom.schema_version VALUES (7)")
        with pytest.raises(StoreRefused, match=f"schema is version 7; this controlroom knows up to {SCHEMA_VERSION}: upgrade"):
            await ensure_schema(conn)
    finally:
        await conn.close()


async def test_append_read_verify_and_mirror(db_dsn: str, tmp_path: Path) -> None:
    store = await PgJournal.open(db_dsn, operator=ALICE)
    try:
        await store.create_release("r1", "staging", "1.2.3")
        mirror = Journal.open(tmp_path / "r1.jsonl", operator=ALICE)
        for n in range(5):
            await store.append("r1", "step_done", {"n": n, "note": "ñ"}, mirror=mirror)
        records = await store.read("r1")
        assert [r.seq for r in records] == [1, 2, 3, 4, 5]
        assert await store.verify("r1") == []
        assert [r.seq for r in await store.read_after("r1", 3)] == [4, 5]
        on_disk, problems, torn = read_records(tmp_path / "r1.jsonl")
        assert problems == [] and torn is None
        assert on_disk == records
    finally:
        await store.close()


async def test_conflicting_append_rechains(db_dsn: str) -> None:
    b = await PgJournal.open(db_dsn, operator=BOB)
    prev_ts = "2026-12-06T10:00:00+00:00"

    class Racing(PgJournal):
        async def _next(self, release_id: str) -> tuple[int, str]:
            seq, prev = await super()._next(release_id)
            if self.conflicts == 0 and seq == 2:
                # bob (a writer that does not queue on the release row) takes seq 2 between
                # alice's read of the tail and her insert
                bob = new_record(2, prev_ts, "bob_first", BOB, {}, prev)
                await b.conn.execute(
                    "INSERT INTO controlroom.release_events VALUES ($1, 2, $2, $3, $4::jsonb, 'b', $5, '{}', $6)",
                    release_id, bob.prev, bob.hash, json.dumps(BOB), bob.kind, bob.ts)
            return seq, prev

    plain = await PgJournal.open(db_dsn, operator=ALICE)
    a = Racing(plain.conn, ALICE, plain.clock, plain.redact)
    try:
        await a.create_release("r2", "staging", "1")
        await a.append("r2", "started")
        record = await a.append("r2", "alice_second")
        assert a.conflicts == 1 and record.seq == 3
        records = await a.read("r2")
        assert [r.kind for r in records] == ["started", "bob_first", "alice_second"]
        assert verify_chain(records) == []
    finally:
        await a.close()
        await b.close()


POOLER_CONFIG = """\
runbook = "default"
[environment]
name = "staging"
{pooler}
[environment.urls]
supabase = "https://example.supabase.co"
metrics = "https://prometheus.example"
pagerduty = "https://events.pagerduty.com"
slack_api = "https://slack.com/api"
statuspage_page = "https://api.statuspage.io/v1/pages/p1"
[environment.secrets]
database_dsn = "CR_DSN"
supabase_api_key = "K"
burst_api_key = "K"
slack_webhook_url = "K"
pagerduty_routing_key = "K"
statuspage_api_key = "K"
[journal]
store = "postgres"
"""


def test_pooler_refused_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "controlroom.toml"
    for pooler in ("transaction_pooler = true", 'pooler = "transaction"'):
        config.write_text(POOLER_CONFIG.format(pooler=pooler))
        with pytest.raises(ConfigError, match="use session mode \\(port 5432\\) or a direct connection"):
            load_config(config, environ={"CR_DSN": "postgresql://u@h:5432/db", "K": "x"})
    config.write_text(POOLER_CONFIG.format(pooler=""))
    with pytest.raises(ConfigError, match="port 6543, Supabase's transaction pooler"):
        load_config(config, environ={"CR_DSN": "postgresql://u@pooler.supabase.com:6543/postgres", "K": "x"})
    assert load_config(config, environ={"CR_DSN": "postgresql://u@h:5432/db", "K": "x"}).journal.shared


def _appender(dsn: str, worker: int, count: int) -> None:
    async def run() -> None:
        store = await PgJournal.open(dsn, operator={"user": f"w{worker}", "host": "h"})
        try:
            for n in range(count):
                await store.append("many", "tick", {"worker": worker, "n": n})
        finally:
            await store.close()
    asyncio.run(run())


async def test_fifty_appender_processes_one_linear_chain(db_dsn: str) -> None:
    store = await PgJournal.open(db_dsn, operator=ALICE)
    try:
        await store.create_release("many", "staging", "1")
        ctx = multiprocessing.get_context("spawn")
        workers, count = 50, 100
        procs = [ctx.Process(target=_appender, args=(db_dsn, w, count)) for w in range(workers)]
        for p in procs:
            p.start()
        loop = asyncio.get_running_loop()
        for p in procs:
            await loop.run_in_executor(None, p.join, 600)
        assert all(p.exitcode == 0 for p in procs)
        records = await store.read("many")
        assert len(records) == workers * count
        assert verify_chain(records) == []
        assert {(r.data["worker"], r.data["n"]) for r in records} == {(w, n) for w in range(workers) for n in range(count)}
    finally:
        await store.close()


async def test_values_jsonb_would_change_come_back_exact_and_the_chain_verifies(db_dsn: str, tmp_path: Path) -> None:
    """jsonb gives -0.0 back as 0, rounds floats past 2**53, and refuses NaN and NUL: the store
    keeps each record's text as it was hashed, so what is read back is what was written."""
    store = await PgJournal.open(db_dsn, operator=ALICE)
    try:
        await store.create_release("odd", "staging", "1")
        awkward = {"minus_zero": -0.0, "big": 1e16, "huge": 2.0**60 + 0.5, "nan": float("nan"),
                   "inf": float("inf"), "nul": "a\x00b", "nested": [{"k\x00": -0.0}]}
        written = await store.append("odd", "check", awkward)
        read = (await store.read("odd"))[0]
        assert read.hash == written.hash and verify_chain([read]) == []
        assert str(read.data["minus_zero"]) == "-0.0" and read.data["nul"] == "a\x00b"
        assert read.data["nan"] != read.data["nan"]  # NaN, as written
        mirror = Journal.open(tmp_path / "odd.jsonl", operator=ALICE)
        mirror.mirror(read)
        on_disk, problems, _ = read_records(tmp_path / "odd.jsonl")
        assert problems == [] and on_disk[0].hash == written.hash
        # the queryable copy stays queryable
        assert await store.conn.fetchval("SELECT data->>'nan' FROM controlroom.release_events "
                                         "WHERE release_id = 'odd'") == "nan"
    finally:
        await store.close()
