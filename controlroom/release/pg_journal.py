"""The shared journal store: one release's hash-chained records in Postgres (issue 11, item 1).

Records are chained and hashed exactly as the file journal chains them (journal.new_record),
so the same records verify in both. An append is one transaction: read the release's tail,
insert seq+1; a concurrent appender that took seq+1 first makes the insert a unique
violation, and the append re-reads the tail and re-chains (a bounded number of times). Each
record the store accepts is mirrored, as it is, to the local file journal (Journal.mirror).

The schema lives in its own Postgres schema (`controlroom`) and carries a version: a newer
control room migrates an older schema, an older one refuses a newer schema. Creating or
migrating it takes a transaction-scoped advisory lock, so two processes starting at once
are safe.

Transaction-mode poolers (Supavisor/pgbouncer on port 6543) support neither advisory locks
nor LISTEN/NOTIFY, which the shared store relies on: `refuse_pooler` says so in one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from controlroom.errors import SessionError
from controlroom.infra.pg import PgSettings
from controlroom.release.journal import GENESIS, Journal, Record, new_record, verify_chain

SCHEMA = "controlroom"
SCHEMA_VERSION = 1
APPEND_ATTEMPTS = 20
SCHEMA_LOCK_KEY = 0x636F6E74726F6C  # "control": one advisory lock for creating/migrating

SETTINGS = PgSettings(purpose="journal", connect_timeout_s=5, statement_timeout_s=5)

# version -> the statements that bring the schema from version-1 to it
MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
        f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.releases (
            release_id text PRIMARY KEY,
            environment text NOT NULL,
            version text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())""",
        f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.release_events (
            release_id text NOT NULL REFERENCES {SCHEMA}.releases (release_id),
            seq integer NOT NULL,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            operator jsonb NOT NULL,
            host text NOT NULL,
            kind text NOT NULL,
            data jsonb NOT NULL,
            at text NOT NULL,
            UNIQUE (release_id, seq))""",
    ],
}


class StoreRefused(SessionError):
    """The shared store cannot be used (a newer schema, a transaction pooler)."""


def refuse_pooler(dsn: str, *, transaction_pooler: bool = False, pooler: str | None = None) -> None:
    """One line when the journal's database is behind a transaction-mode pooler."""
    try:
        port = urlsplit(dsn).port
    except ValueError:
        port = None
    if transaction_pooler or pooler == "transaction" or port == 6543:
        raise StoreRefused("the shared journal needs advisory locks and LISTEN/NOTIFY, which a transaction-mode "
                           "pooler does not support: use session mode (port 5432) or a direct connection")


async def ensure_schema(conn: asyncpg.Connection, known: int = SCHEMA_VERSION) -> int:
    """Create or migrate the schema up to `known`; refuse a newer one. Returns its version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL)")
        current = await conn.fetchval(f"SELECT max(version) FROM {SCHEMA}.schema_version") or 0
        if current > known:
            raise StoreRefused(f"the shared journal's schema is version {current}; this controlroom knows up to "
                               f"{known}: upgrade controlroom")
        for version in range(current + 1, known + 1):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES ($1)", version)
        return max(current, known)


def _record(row: asyncpg.Record) -> Record:
    return Record(seq=row["seq"], ts=row["at"], kind=row["kind"], operator=json.loads(row["operator"]),
                  data=json.loads(row["data"]), prev=row["prev_hash"], hash=row["hash"])


class PgJournal:
    """One connection's view of the shared store. Open with `await PgJournal.open(dsn)`."""

    def __init__(self, conn: asyncpg.Connection, operator: dict[str, str],
                 clock: Callable[[], datetime], redact: Callable[[str], str]) -> None:
        self.conn = conn
        self.operator = operator
        self.clock = clock
        self.redact = redact
        self.conflicts = 0  # appends that lost a race and re-chained

    @classmethod
    async def open(cls, dsn: str, *, operator: dict[str, str], clock: Callable[[], datetime] | None = None,
                   redact: Callable[[str], str] | None = None, settings: PgSettings = SETTINGS) -> "PgJournal":
        conn = await settings.connect(dsn)
        try:
            await ensure_schema(conn)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, operator, clock or (lambda: datetime.now(UTC)), redact or (lambda text: text))

    async def close(self) -> None:
        await self.conn.close()

    async def create_release(self, release_id: str, environment: str, version: str) -> None:
        await self.conn.execute(
            f"INSERT INTO {SCHEMA}.releases (release_id, environment, version) VALUES ($1, $2, $3) "
            "ON CONFLICT (release_id) DO NOTHING", release_id, environment, version)

    async def append(self, release_id: str, kind: str, data: dict[str, Any] | None = None, *,
                     mirror: Journal | None = None) -> Record:
        """Chain one record after the release's last and commit it; mirror it to `mirror`."""
        for _ in range(APPEND_ATTEMPTS):
            try:
                async with self.conn.transaction():
                    record = await self._append_locked(release_id, kind, data or {})
            except asyncpg.UniqueViolationError:
                self.conflicts += 1
                continue  # someone appended this seq meanwhile: re-read the tail, re-chain
            if mirror is not None:
                await self.sync_mirror(release_id, mirror)
            return record
        raise SessionError(f"the shared journal's release {release_id}: {APPEND_ATTEMPTS} appends in a row lost "
                           "the race for the next record")

    async def _append_locked(self, release_id: str, kind: str, data: dict[str, Any]) -> Record:
        # Appenders of one release queue on its row, so 50 writers do not starve each other
        # re-chaining; the unique (release_id, seq) still catches any writer that did not.
        if await self.conn.fetchval(f"SELECT 1 FROM {SCHEMA}.releases WHERE release_id = $1 FOR NO KEY UPDATE",
                                    release_id) is None:
            raise SessionError(f"the shared journal has no release {release_id}")
        seq, prev = await self._next(release_id)
        record = new_record(seq, self.clock().isoformat(), kind, self.operator, data, prev, self.redact)
        await self.conn.execute(
            f"INSERT INTO {SCHEMA}.release_events (release_id, seq, prev_hash, hash, operator, host, kind, "
            "data, at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9)",
            release_id, record.seq, record.prev, record.hash, json.dumps(record.operator),
            record.operator.get("host", ""), record.kind, json.dumps(record.data), record.ts)
        return record

    async def _next(self, release_id: str) -> tuple[int, str]:
        """The seq and prev hash the next record of the release takes."""
        tail = await self.conn.fetchrow(
            f"SELECT seq, hash FROM {SCHEMA}.release_events WHERE release_id = $1 ORDER BY seq DESC LIMIT 1",
            release_id)
        return (tail["seq"] + 1, tail["hash"]) if tail else (1, GENESIS)

    async def sync_mirror(self, release_id: str, mirror: Journal) -> int:
        """Write to the file journal every store record it does not have yet; how many."""
        mirror.refresh()
        missing = await self.read_after(release_id, len(mirror.records))
        for record in missing:
            mirror.mirror(record)
        return len(missing)

    async def read(self, release_id: str) -> list[Record]:
        return await self.read_after(release_id, 0)

    async def read_after(self, release_id: str, seq: int) -> list[Record]:
        """The release's records after `seq`, in order (a watcher's catch-up)."""
        rows = await self.conn.fetch(
            f"SELECT seq, prev_hash, hash, operator, kind, data, at FROM {SCHEMA}.release_events "
            "WHERE release_id = $1 AND seq > $2 ORDER BY seq", release_id, seq)
        return [_record(row) for row in rows]

    async def verify(self, release_id: str) -> list[str]:
        return verify_chain(await self.read(release_id))
