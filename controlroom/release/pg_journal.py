"""The shared journal store: releases' hash-chained records in Postgres, and who is on them.

Records are chained and hashed exactly as the file journal chains them (journal.new_record),
so the same records verify in both. An append is one transaction: queue on the release's row,
read its tail, insert seq+1 and `NOTIFY` the environment's channel with the release id and the
seq (delivered at commit, so a watcher never fetches a record that is not there); a concurrent
appender that took seq+1 first makes the insert a unique violation, and the append re-reads
the tail and re-chains. Each record the store accepts is mirrored, as it is, to the local file
journal (Journal.mirror).

Who is on a release, and who drives it, are session-level advisory locks on the one dedicated
connection each control room keeps (a lock is gone the moment its connection is, kill -9 and
a dropped network included):

- every control room open on a release holds (SESSION_LOCKS, its session key) and has a row
  in `sessions` saying who it is; a row whose lock nobody holds is a control room gone;
- the driver holds (DRIVER_LOCKS, the release's key); `pg_locks` says which session that is.

The schema lives in its own Postgres schema (`controlroom`) and carries a version: a newer
control room migrates an older schema, an older one refuses a newer schema. Creating or
migrating it takes a transaction-scoped advisory lock, so two processes starting at once
are safe.

Transaction-mode poolers (Supavisor/pgbouncer on port 6543) support neither advisory locks
nor LISTEN/NOTIFY: the config loader refuses them in one line from the settings and the DSN's
port, and `probe_session_mode` finds a pooler that hands consecutive statements to other
backends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controlroom.errors import SessionError
from controlroom.infra.pg import TRANSACTION_POOLER_REFUSAL, PgSettings
from controlroom.release.journal import (GENESIS, Journal, JournalRefused, Record, new_record, record_body,
                                         verify_chain)

if TYPE_CHECKING:  # annotations; the store's code imports it where it needs it, not at start-up
    import asyncpg

SCHEMA = "controlroom"
SCHEMA_VERSION = 2
APPEND_ATTEMPTS = 20
SCHEMA_LOCK_KEY = 0x636F6E74726F6C  # "control": one advisory lock for creating/migrating
# Two-key advisory locks (pg_locks: classid = namespace, objid = key, objsubid = 2).
SESSION_LOCKS = 0x43520001  # a control room open on a release
DRIVER_LOCKS = 0x43520002  # the driver of a release
RELEASE_LOCKS = 0x43520003  # transaction-scoped: finding or creating an environment's release
MAX_NOTIFY_BYTES = 7999  # NOTIFY's payload must stay under 8000 bytes

SETTINGS = PgSettings(purpose="journal", connect_timeout_s=5, statement_timeout_s=5, keepalive_s=5)

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
    2: [
        f"CREATE INDEX IF NOT EXISTS releases_by_environment ON {SCHEMA}.releases (environment, created_at DESC)",
        # One row per control room open on a release; alive while it holds (SESSION_LOCKS, session_key).
        f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.sessions (
            session_key integer PRIMARY KEY,
            release_id text NOT NULL REFERENCES {SCHEMA}.releases (release_id),
            operator jsonb NOT NULL,
            label text NOT NULL,
            write boolean NOT NULL,
            opened_at timestamptz NOT NULL DEFAULT now(),
            driving_since timestamptz)""",
        f"CREATE INDEX IF NOT EXISTS sessions_by_release ON {SCHEMA}.sessions (release_id)",
        # The record as it was hashed, to the byte: jsonb does not give every value back as it
        # was written (-0.0, floats past 2**53, NaN, "\u0000"), and the hash is of the text.
        # `operator` and `data` stay jsonb, for queries; `body` is what records are read from.
        f"ALTER TABLE {SCHEMA}.release_events ADD COLUMN IF NOT EXISTS body text",
    ],
}


class StoreRefused(SessionError):
    """The shared store cannot be used (a newer schema, a transaction pooler)."""


class NotDriving(JournalRefused):
    """An append by a control room that does not hold the release's driver lock."""


async def probe_session_mode(conn: asyncpg.Connection) -> None:
    """Refuse a connection whose statements do not all reach one server session (a
    transaction-mode pooler): a session-level advisory lock taken by one statement must be
    seen as ours by the next, and LISTEN must be accepted."""
    key = secrets.randbelow(2**31 - 1) + 1
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    got = await conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", RELEASE_LOCKS, key)
    try:
        held = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::int::oid "
            "AND objid = $2::int::oid AND objsubid = 2 AND pid = $3", RELEASE_LOCKS, key, backend)
        same = await conn.fetchval("SELECT pg_backend_pid()") == backend
    finally:
        if got:
            await conn.fetchval("SELECT pg_advisory_unlock($1::int, $2::int)", RELEASE_LOCKS, key)
    if not got or not held or not same:
        raise StoreRefused(TRANSACTION_POOLER_REFUSAL + " (its statements reached different server sessions)")
    import asyncpg  # loaded with the connection by then

    try:
        await conn.execute("LISTEN controlroom_probe; UNLISTEN controlroom_probe")
    except asyncpg.PostgresError as error:
        raise StoreRefused(f"{TRANSACTION_POOLER_REFUSAL} (LISTEN was refused: {error})") from None


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


def release_key(release_id: str) -> int:
    """The release's advisory-lock key: 31 bits of its id's hash (never 0)."""
    return int.from_bytes(hashlib.sha256(release_id.encode("utf-8")).digest()[:4], "big") & 0x7FFFFFFF or 1


def channel_of(environment: str) -> str:
    """The NOTIFY channel of an environment: an identifier Postgres takes as it is."""
    return "controlroom_" + hashlib.sha256(environment.encode("utf-8")).hexdigest()[:24]


def notification_payload(release_id: str, seq: int) -> str:
    """Ids only, never the record: a watcher fetches records by seq."""
    payload = json.dumps({"release": release_id, "seq": seq}, separators=(",", ":"))
    if len(payload.encode("utf-8")) > MAX_NOTIFY_BYTES:
        raise SessionError(f"release id too long for a notification ({len(release_id)} characters)")
    return payload


def _record(row: asyncpg.Record) -> Record:
    if row["body"] is not None:
        return Record(**json.loads(row["body"]))
    # Written by a controlroom of schema 1, which had no body: jsonb as it gives it back.
    return Record(seq=row["seq"], ts=row["at"], kind=row["kind"], operator=json.loads(row["operator"]),
                  data=json.loads(row["data"]), prev=row["prev_hash"], hash=row["hash"])


def record_text(record: Record) -> str:
    """The record as the file journal writes it (and as it is hashed): exact."""
    return json.dumps(record_body(record), ensure_ascii=False, separators=(",", ":"))


def _queryable(value: Any) -> Any:
    """A value jsonb accepts, for the queryable copy of a record's data (NaN, infinities and
    NUL characters become text); the record itself is kept exact in `body`."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {str(key).replace("\x00", "\\u0000"): _queryable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_queryable(item) for item in value]
    return value


@dataclass(frozen=True)
class Member:
    """One control room open on a release, as the others see it."""

    session_key: int
    label: str  # alice@bastion-2
    write: bool
    opened_at: datetime
    drives: bool
    driving_since: datetime | None

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class ReleaseRow:
    release_id: str
    environment: str
    created_at: datetime


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

    # -- releases ----------------------------------------------------------------------

    async def create_release(self, release_id: str, environment: str, version: str) -> None:
        await self.conn.execute(
            f"INSERT INTO {SCHEMA}.releases (release_id, environment, version) VALUES ($1, $2, $3) "
            "ON CONFLICT (release_id) DO NOTHING", release_id, environment, version)

    async def newest_release(self, environment: str) -> ReleaseRow | None:
        row = await self.conn.fetchrow(
            f"SELECT release_id, environment, created_at FROM {SCHEMA}.releases WHERE environment = $1 "
            "ORDER BY created_at DESC, release_id DESC LIMIT 1", environment)
        return ReleaseRow(row["release_id"], row["environment"], row["created_at"]) if row else None

    async def release_exists(self, release_id: str) -> bool:
        return bool(await self.conn.fetchval(f"SELECT 1 FROM {SCHEMA}.releases WHERE release_id = $1", release_id))

    async def find_or_create(self, environment: str, new_id: Callable[[], str], opened: dict[str, Any],
                             joinable: Callable[[list[Record], int], bool]) -> tuple[str, bool]:
        """The environment's release to join (its newest, when `joinable(records, live
        control rooms)` says so), or a new one whose first record is `session_opened` with
        `opened`: one transaction, under a lock of the environment's, so two control rooms
        opening at once join the same release."""
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock($1::int, hashtext($2))", RELEASE_LOCKS, environment)
            newest = await self.newest_release(environment)
            if newest is not None:
                records = await self.read(newest.release_id)
                if joinable(records, len(await self.members(newest.release_id))):
                    return newest.release_id, False
            release_id = new_id()
            while await self.release_exists(release_id):
                release_id = f"{new_id()}-{secrets.token_hex(2)}"
            await self.create_release(release_id, environment, "")
            await self._insert(release_id, new_record(1, self.clock().isoformat(), "session_opened", self.operator,
                                                      opened, GENESIS, self.redact), channel_of(environment))
            return release_id, True

    # -- appending ---------------------------------------------------------------------

    async def append(self, release_id: str, kind: str, data: dict[str, Any] | None = None, *,
                     mirror: Journal | None = None, channel: str | None = None, fence: int | None = None) -> Record:
        """Chain one record after the release's last and commit it (with a NOTIFY on
        `channel`); mirror it to `mirror`. With `fence` (the release's lock key) the append is
        refused unless this connection holds the driver's lock (NotDriving)."""
        import asyncpg  # loaded with the connection by then

        for _ in range(APPEND_ATTEMPTS):
            try:
                async with self.conn.transaction():
                    seq, prev = await self._lock_tail(release_id, fence)
                    record = new_record(seq, self.clock().isoformat(), kind, self.operator, data or {}, prev,
                                        self.redact)
                    await self._insert(release_id, record, channel)
            except asyncpg.UniqueViolationError:
                self.conflicts += 1
                continue  # someone appended this seq meanwhile: re-read the tail, re-chain
            if mirror is not None:
                await self.sync_mirror(release_id, mirror)
            return record
        raise SessionError(f"the shared journal's release {release_id}: {APPEND_ATTEMPTS} appends in a row lost "
                           "the race for the next record")

    async def insert_next(self, release_id: str, record: Record, channel: str | None, *,
                          unless: Callable[[list[Record]], str | None] | None, known: list[Record],
                          fence: int) -> bool:
        """In one transaction: `record` (chained by the caller), if it still follows the
        release's last and `unless`, asked with `known` (the caller's records, the store's up to
        its tail), has no reason against it; NotDriving without the driver's lock. False, nothing
        written, when the store moved on."""
        async with self.conn.transaction():
            if await self._lock_tail(release_id, fence) != (record.seq, record.prev):
                return False
            reason = unless(list(known)) if unless is not None else None
            if reason:
                raise JournalRefused(reason)
            await self._insert(release_id, record, channel)
        return True

    async def _lock_tail(self, release_id: str, fence: int | None) -> tuple[int, str]:
        """In a transaction: queue on the release's row (so 50 writers do not starve each
        other re-chaining; the unique (release_id, seq) still catches any that did not), check
        the fence, and say the seq and prev hash the next record takes."""
        if await self.conn.fetchval(f"SELECT 1 FROM {SCHEMA}.releases WHERE release_id = $1 FOR NO KEY UPDATE",
                                    release_id) is None:
            raise SessionError(f"the shared journal has no release {release_id}")
        if fence is not None and not await self.holds_driver_lock(fence):
            raise NotDriving("this control room no longer holds the release's driver lock")
        return await self._next(release_id)

    async def _insert(self, release_id: str, record: Record, channel: str | None) -> None:
        await self.conn.execute(
            f"INSERT INTO {SCHEMA}.release_events (release_id, seq, prev_hash, hash, operator, host, kind, "
            "data, at, body) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb, $9, $10)",
            release_id, record.seq, record.prev, record.hash, json.dumps(_queryable(record.operator)),
            str(record.operator.get("host", "")).replace("\x00", ""), record.kind,
            json.dumps(_queryable(record.data)), record.ts, record_text(record))
        if channel is not None:
            await self.conn.execute("SELECT pg_notify($1, $2)", channel, notification_payload(release_id, record.seq))

    async def insert_records(self, release_id: str, records: list[Record], channel: str | None, *,
                             fence: int | None = None) -> bool:
        """Add records chained elsewhere (journaled offline), as they are, if they follow the
        release's last record; False (nothing added) when the store moved on meanwhile."""
        if not records:
            return True
        async with self.conn.transaction():
            try:
                seq, prev = await self._lock_tail(release_id, fence)
            except NotDriving:
                return False
            if records[0].seq != seq or records[0].prev != prev or verify_chain(records, prev=prev, first_seq=seq):
                return False
            for record in records:
                await self._insert(release_id, record, None)
            if channel is not None:
                await self.conn.execute("SELECT pg_notify($1, $2)", channel,
                                        notification_payload(release_id, records[-1].seq))
        return True

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
            f"SELECT seq, prev_hash, hash, operator, kind, data, at, body FROM {SCHEMA}.release_events "
            "WHERE release_id = $1 AND seq > $2 ORDER BY seq", release_id, seq)
        return [_record(row) for row in rows]

    async def verify(self, release_id: str) -> list[str]:
        return verify_chain(await self.read(release_id))

    # -- who is on a release -----------------------------------------------------------

    async def join(self, release_id: str, label: str, write: bool, key: int | None = None) -> int:
        """Say this connection's control room is open on the release: take a session lock of
        its own (held until the connection ends; `key` again when it comes back), then its
        row. Returns its session key."""
        if not key or not await self.conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)",
                                                   SESSION_LOCKS, key):
            while True:
                key = secrets.randbelow(2**31 - 1) + 1
                if await self.conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", SESSION_LOCKS, key):
                    break
        # Rows whose lock nobody holds are control rooms gone (and a key of theirs may be ours now).
        await self.conn.execute(
            f"""DELETE FROM {SCHEMA}.sessions s WHERE (s.session_key = $1 OR s.release_id = $2) AND NOT EXISTS (
                    SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $3::int::oid
                    AND l.objid = s.session_key::oid AND l.objsubid = 2 AND l.pid <> pg_backend_pid())""",
            key, release_id, SESSION_LOCKS)
        await self.conn.execute(
            f"INSERT INTO {SCHEMA}.sessions (session_key, release_id, operator, label, write) "
            "VALUES ($1, $2, $3::jsonb, $4, $5)", key, release_id, json.dumps(self.operator), label, write)
        return key

    async def try_drive(self, release_id: str, session_key: int) -> bool:
        """Take the release's driver lock if nobody holds it; True when this connection has it."""
        key = release_key(release_id)
        if await self.holds_driver_lock(key):
            return True
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)", DRIVER_LOCKS, key):
            return False
        await self.conn.execute(f"UPDATE {SCHEMA}.sessions SET driving_since = now() WHERE session_key = $1",
                                session_key)
        return True

    async def stop_driving(self, release_id: str, session_key: int) -> None:
        await self.conn.fetchval("SELECT pg_advisory_unlock($1::int, $2::int)", DRIVER_LOCKS, release_key(release_id))
        await self.conn.execute(f"UPDATE {SCHEMA}.sessions SET driving_since = NULL WHERE session_key = $1",
                                session_key)

    async def lock_holder(self, namespace: int, key: int) -> int | None:
        """The backend pid holding a two-key advisory lock, or None."""
        return await self.conn.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::int::oid "
            "AND objid = $2::int::oid AND objsubid = 2 LIMIT 1", namespace, key)

    async def end_backend(self, pid: int, timeout_s: float = 3.0) -> bool:
        """End a server session of ours left behind (our connection's network went away and
        the server has not noticed yet): its locks go with it. False when not allowed."""
        import asyncpg  # loaded with the connection by then

        try:
            if not await self.conn.fetchval("SELECT pg_terminate_backend($1)", pid):
                return False
        except asyncpg.InsufficientPrivilegeError:
            return False
        for _ in range(int(timeout_s / 0.05)):
            if not await self.conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)", pid):
                return True
            await asyncio.sleep(0.05)
        return False

    async def holds_driver_lock(self, key: int) -> bool:
        return bool(await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::int::oid "
            "AND objid = $2::int::oid AND objsubid = 2 AND pid = pg_backend_pid())", DRIVER_LOCKS, key))

    async def members(self, release_id: str) -> list[Member]:
        """The control rooms open on the release now (their session lock is held), the driver
        first; rows of control rooms gone are left out."""
        rows = await self.conn.fetch(
            f"""SELECT s.session_key, s.label, s.write, s.opened_at, s.driving_since,
                       EXISTS (SELECT 1 FROM pg_locks d WHERE d.locktype = 'advisory' AND d.granted
                               AND d.classid = $2::int::oid AND d.objid = $3::int::oid AND d.objsubid = 2
                               AND d.pid = l.pid) AS drives
                FROM {SCHEMA}.sessions s
                JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.classid = $4::int::oid
                                   AND l.objid = s.session_key::oid AND l.objsubid = 2
                WHERE s.release_id = $1
                ORDER BY drives DESC, s.opened_at""",
            release_id, DRIVER_LOCKS, release_key(release_id), SESSION_LOCKS)
        return [Member(row["session_key"], row["label"], row["write"], row["opened_at"], row["drives"],
                       row["driving_since"] if row["drives"] else None) for row in rows]



READER_SETTINGS = PgSettings(purpose="journal-reader", connect_timeout_s=5, statement_timeout_s=5, read_only=True)


@dataclass(frozen=True)
class StoredRelease:
    """One release as the shared store holds it, for `status` and `report`."""

    release_id: str
    environment: str
    records: list[Record]
    members: list[Member]  # the control rooms open on it now, the driver first

    @property
    def driver(self) -> Member | None:
        return next((m for m in self.members if m.drives), None)

    @property
    def watchers(self) -> list[Member]:
        return [m for m in self.members if not m.drives]


async def read_release(dsn: str, environment: str, release_id: str | None = None, *,
                       settings: PgSettings = READER_SETTINGS) -> StoredRelease | None:
    """The environment's newest release (or `release_id`) with who is on it, read without
    changing anything; None when the store holds none."""
    conn = await settings.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.schema_version") is None:
            return None
        version = await conn.fetchval(f"SELECT max(version) FROM {SCHEMA}.schema_version") or 0
        if version > SCHEMA_VERSION:
            raise StoreRefused(f"the shared journal's schema is version {version}; this controlroom knows up to "
                               f"{SCHEMA_VERSION}: upgrade controlroom")
        reader = PgJournal(conn, {}, lambda: datetime.now(UTC), lambda text: text)
        if release_id is None:
            newest = await reader.newest_release(environment)
            if newest is None:
                return None
            release_id = newest.release_id
        row = await conn.fetchrow(f"SELECT environment FROM {SCHEMA}.releases WHERE release_id = $1", release_id)
        if row is None:
            return None
        members = await reader.members(release_id) if version >= 2 else []
        return StoredRelease(release_id, row["environment"], await reader.read(release_id), members)
    finally:
        await conn.close()
