"""The shared journal, as the release engine uses it: one release's journal in Postgres for
every control room open on an environment, from any machine. One of them drives (it holds
the release's driver lock); the others watch live; every record is mirrored to the local
file journal, so each bastion keeps its own copy.

    journal = SharedJournal.open(loaded, write=True, journal_dir=..., opened={...})
    journal.crew()            # who drives, who watches, whether the store is reachable
    journal.append("attested", {...}, unless=guard)   # as the file journal's
    journal.take_over("the driver's laptop died")     # when the driver's control room is gone
    await journal.changed()   # on the app's loop: a record, a member or the link changed

The engine calls a journal synchronously, as it calls the file journal. The store's one
connection (its locks, its LISTEN, its queries) lives on an event loop in a thread of its
own (`StoreThread`): an append blocks the caller only for the store's round trip, and a
notification reaches a watcher while its app is busy drawing.

Who may write: only the driver appends (decisions, and the observations a window journals:
checks, verdicts); a watcher's commands are refused before they reach the journal, with
who drives. A record is built here, seq and hashes included, and inserted only if it follows
the store's last record; the same record is what the mirror gets, so the store and every
mirror hold identical bytes.

When the store goes away (a restart, the network): the driver keeps journaling here, in its
file, and decisions are refused until the operator types that they continue offline
(`continue_offline`, journaled). When the store is back, what was journaled offline goes to
it as it is, if nobody else journaled meanwhile; otherwise it is kept as a branch: an
`offline_branch` record in the store carries the records, the local file is set aside
(renamed, its chain intact, with a last record saying where the branch went) and a new
mirror is made from the store. This control room then watches. Nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from controlroom.errors import ControlRoomError, SessionError
from controlroom.infra.identity import operator_label
from controlroom.infra.logs import logger
from controlroom.release.journal import (GENESIS, Journal, JournalProblem, JournalRefused, MirrorFile, Record,
                                         head_path, new_record, read_records, record_body, verify_chain)
from controlroom.release.pg_journal import (DRIVER_LOCKS, SESSION_LOCKS, SETTINGS, Member, NotDriving, PgJournal,
                                            StoredRelease, channel_of, probe_session_mode, read_release, release_key)

if TYPE_CHECKING:
    from controlroom.config.loader import LoadedConfig

T = TypeVar("T")

APPEND_DEADLINE_S = 2.0  # one append's round trip; past it the store counts as unreachable
OPEN_DEADLINE_S = 15.0
PRESENCE_POLL_S = 0.5  # who is on the release, and whether the store still answers (a takeover waits on it)
PRESENCE_DEADLINE_S = 1.5
RECONNECT_S = 1.0
CLOSE_DEADLINE_S = 3.0
TAKE_OVER_WORDS = "take over"
OFFLINE_WORDS = "offline"


class StoreUnavailable(ControlRoomError):
    """The shared store cannot be read: its DSN is not set, or it does not answer (exit 2)."""

    exit_code = 2


def store_dsn(loaded: "LoadedConfig") -> str:
    """The shared journal store's DSN, from the secret the config names."""
    secret = loaded.journal_dsn_secret()
    if not loaded.secrets.has(secret):
        raise StoreUnavailable(f"the shared journal's DSN is not set: ${loaded.secrets.variable(secret)} ({secret})")
    return loaded.secrets.get(secret)


async def read_shared_release(loaded: "LoadedConfig", release_id: str | None = None) -> StoredRelease | None:
    """The environment's newest release in the shared store (or `release_id`), with who is
    on it; StoreUnavailable, in one line, when the store cannot be read."""
    try:
        return await read_release(store_dsn(loaded), loaded.environment.name, release_id)
    except Exception as error:
        if is_unreachable(error):
            raise StoreUnavailable(f"cannot reach the shared journal: {loaded.secrets.redact(describe(error))}") from None
        raise


def is_unreachable(error: BaseException) -> bool:
    """The store did not answer (refused, reset, restarted, timed out), as opposed to an
    answer that says no."""
    import asyncpg  # loaded by the store's connection by then; not at start-up (~20 ms)

    return isinstance(error, (OSError, TimeoutError, ConnectionError, asyncpg.InterfaceError,
                              asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
                              asyncpg.exceptions.QueryCanceledError))


def describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer in time"
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:160]


class StaleSession(ConnectionError):
    """Our previous server session (our network went, the server has not noticed yet) still
    holds our locks: not back yet, try again shortly."""


class StoreThread:
    """An event loop in a thread of its own, where the store's connection lives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="controlroom-journal-store", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Run `coro` there and wait for its answer, at most `timeout_s`."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"the shared journal did not answer within {timeout_s:g} s") from None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if not self.loop.is_running():
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(CLOSE_DEADLINE_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CLOSE_DEADLINE_S)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True)
class Crew:
    """Who is on the release, as this control room sees it now."""

    me: str  # alice@bastion-2
    write: bool
    driving: bool  # this control room drives (or drove when the store went away)
    driver: Member | None  # the driver the store knows (None: nobody drives now)
    members: tuple[Member, ...]  # every control room open on the release, this one included
    online: bool
    offline_since: datetime | None = None
    offline_error: str = ""
    offline_continued: bool = False
    last_driver: str = ""  # who drove last, as the journal says (the driver's label when it is gone)

    @property
    def watchers(self) -> int:
        """The control rooms on the release that do not drive (this one included)."""
        return sum(1 for member in self.members if not member.drives)

    def headline(self) -> tuple[str, str]:
        """For the header: ('YOU DRIVE +2 watch', 'driving'), ('WATCHING alice@bastion-2 · 3 watch',
        'watching'), ('NO DRIVER · 2 watch', 'nobody') or ('JOURNAL OFFLINE', 'offline')."""
        if not self.online:
            return "JOURNAL OFFLINE" + (" · DRIVING HERE" if self.driving and self.offline_continued else ""), "offline"
        if self.driving:
            return "YOU DRIVE" + (f" +{self.watchers} watch" if self.watchers else ""), "driving"
        if self.driver is not None:
            return f"WATCHING {self.driver.label} · {self.watchers} watch", "watching"
        return f"NO DRIVER · {self.watchers} watch", "nobody"

    def banner(self) -> tuple[str, str]:
        """The loud line the operator must read, with its level, or ('', '')."""
        since = f"{self.offline_since.astimezone(UTC):%H:%M:%S} UTC" if self.offline_since else "now"
        if not self.online:
            if self.driving and not self.offline_continued:
                return (f"SHARED JOURNAL UNREACHABLE since {since} ({self.offline_error}): decisions are refused — "
                        "T continues offline (journaled), or wait for it to come back", "offline")
            if self.driving:
                return (f"OFFLINE since {since}: journaling on this machine only; it goes to the shared journal "
                        "when that is back", "offline")
            return (f"SHARED JOURNAL UNREACHABLE since {since} ({self.offline_error}): showing what was journaled "
                    "until then; reconnecting", "offline")
        if self.driver is None and not self.driving and self.last_driver:  # a driver went: someone must act
            return (f"Nobody drives this release ({self.last_driver}'s control room is gone) — "
                    + ("T takes over" if self.write else "a --write control room can take over (T)"), "nobody")
        return "", ""


class SharedJournal:
    """One release's journal in the shared store, as one control room sees it. Use open()."""

    other_holder = None  # the file journal's "open in another window": here, the crew says it

    def __init__(self, *, dsn: str, environment: str, write: bool, journal_dir: Path, operator: dict[str, str],
                 clock: Callable[[], datetime], redact: Callable[[str], str]) -> None:
        self._dsn = dsn
        self.environment = environment
        self.write = write
        self.journal_dir = journal_dir
        self.operator = operator
        self.clock = clock
        self.redact = redact
        self.label = operator_label(operator)
        self.channel = channel_of(environment)
        self.release_id = ""
        self.records: list[Record] = []  # the engine's view: a prefix of the mirror's records
        self.problems: list[JournalProblem] = []
        self._thread = StoreThread()
        self._pg: PgJournal | None = None
        self._conn_lock: asyncio.Lock | None = None  # one statement at a time on the connection
        # One writer at a time: an append, a takeover, or a reconnection making file and store one.
        self._write_lock = asyncio.Lock()
        # The release's records this control room knows, in order: the store's, then any
        # journaled here while the store was away (the first `_synced` are in the store). The
        # engine's view comes from here; the mirror file is this machine's copy of them, which
        # other control rooms on the machine write too.
        self._known: list[Record] = []
        self._mirror: MirrorFile | None = None
        self._copy_failed = False
        self._session_key = 0
        self._backend_pid = 0  # our server session's pid: ours to end if it outlives our network
        self._synced = 0  # records known to be in the store (the rest were journaled offline)
        self._driving = False
        self._members: tuple[Member, ...] = ()
        self._offline_since: datetime | None = None
        self._offline_error = ""
        self._offline_continued = False
        self._opened_offline = False  # opened from the local copy, the store being away
        self._closing = False
        self._catching_up = False
        self._catch_up_again = False
        self._changed = threading.Event()  # something the engine does not see in `records`
        self._notices: deque[str] = deque()
        self._state = threading.Lock()
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._main_event: asyncio.Event | None = None
        self._supervisor: Future[Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, dsn: str, *, environment: str, write: bool, journal_dir: Path, operator: dict[str, str],
             opened: dict[str, Any], new_release_id: Callable[[], str],
             joinable: Callable[[list[Record], int], bool],
             clock: Callable[[], datetime] | None = None,
             redact: Callable[[str], str] | None = None) -> "SharedJournal":
        """Join the environment's release (or create it, its first record `opened`), as its
        driver when `write` and nobody drives it, else as a watcher."""
        journal = cls(dsn=dsn, environment=environment, write=write, journal_dir=journal_dir, operator=operator,
                      clock=clock or (lambda: datetime.now(UTC)), redact=redact or (lambda text: text))
        try:
            journal._thread.call(journal._open(opened, new_release_id, joinable), OPEN_DEADLINE_S)
        except BaseException as error:
            # The store is away: an unfinished release this machine has a copy of opens from
            # that copy, offline (the driver's control room died during the outage, say).
            local = journal._local_release(joinable) if is_unreachable(error) else None
            if local is None:
                journal._thread.stop()
                if is_unreachable(error):
                    raise SessionError(f"cannot reach the shared journal ({journal.redact(describe(error))}), and no "
                                       f"unfinished release of {environment!r} has a copy in {journal_dir}") from None
                raise
            journal._open_offline(local, error)
        journal.records = list(journal._known)
        journal._supervisor = journal._thread.spawn(journal._supervise())
        return journal

    async def _open(self, opened: dict[str, Any], new_release_id: Callable[[], str],
                    joinable: Callable[[list[Record], int], bool]) -> None:
        self._conn_lock = asyncio.Lock()
        pg = await PgJournal.open(self._dsn, operator=self.operator, clock=self.clock, redact=self.redact,
                                  settings=SETTINGS)
        try:
            await probe_session_mode(pg.conn)
            self.release_id, _ = await pg.find_or_create(self.environment, new_release_id, opened,
                                                                    joinable)
            await self._join(pg)
            await self._attach(pg, returning=False)
        except BaseException:
            with contextlib.suppress(Exception):
                pg.conn.terminate()
            raise
        try:
            await self._catch_up_now()  # a NOTIFY that came while syncing found no connection yet
        except Exception as error:
            if not is_unreachable(error):
                raise
            await self._go_offline(error)  # opened, then lost: offline on the release we have
        if self._driving:
            await self._append_online("driver_changed", {"driver": self.label, "how": "opened",
                                                         "from": self._last_driver()}, None)

    def _local_release(self, joinable: Callable[[list[Record], int], bool]) -> Path | None:
        """This machine's copy of the environment's newest unfinished release, if any."""
        try:
            copies = sorted((p for p in self.journal_dir.glob("*.jsonl")
                             if ".offline-branch-" not in p.name and ".damaged-" not in p.name),
                            key=lambda p: p.stat().st_mtime_ns, reverse=True)[:200]
        except OSError:
            return None
        for path in copies:
            try:
                records, _, _ = read_records(path)
            except OSError:
                continue
            first = records[0] if records else None
            if first is not None and first.kind == "session_opened" and first.data.get("environment") == self.environment:
                return path if joinable(records, 0) else None
        return None

    def _open_offline(self, path: Path, error: BaseException) -> None:
        """Open the release from this machine's copy while the store is away: a --write window
        may decide once its operator types that it continues offline; when the store is back
        the copy and the store are made one (`_sync`)."""
        self._mirror = MirrorFile.open(path, redact=self.redact, clock=self.clock, operator=self.operator)
        self._known = list(self._mirror.records)
        self._synced = len(self._known)  # until the store says otherwise (`_sync`)
        self.release_id = path.stem
        self._conn_lock = asyncio.Lock()
        # Only the control room that drove last may continue offline: another may be driving
        # it now, and two drivers would run the same steps.
        self._driving = self.write and self._last_driver() == self.label
        self._opened_offline = True
        self._offline_since = self.clock()
        self._offline_error = self.redact(describe(error))
        what = ("you drove it last: T continues offline" if self._driving
                else f"{self._last_driver() or 'another control room'} drove it last: you watch until the store is back")
        self._notice(f"the shared journal is unreachable ({self._offline_error}): opened release {self.release_id} "
                     f"from this machine's copy; {what}")

    async def _join(self, pg: PgJournal) -> None:
        """Be on the release through `pg`: the session of ours (the same key when coming back,
        our old server session ended if it outlived our network), our LISTEN."""
        if self._backend_pid and self._session_key:
            holder = await pg.lock_holder(SESSION_LOCKS, self._session_key)
            if holder == self._backend_pid and not await pg.end_backend(holder):
                raise StaleSession("this control room's previous connection is still open on the server")
        self._session_key = await pg.join(self.release_id, self.label, self.write, key=self._session_key or None)
        self._backend_pid = await pg.conn.fetchval("SELECT pg_backend_pid()")
        pg.operator = self._record_operator()
        await pg.conn.add_listener(self.channel, self._on_notify)
        pg.conn.add_termination_listener(self._on_terminated)

    async def _attach(self, pg: PgJournal, *, returning: bool) -> None:
        """Make the copy and the store one (and with it decide whether we drive); then `pg`
        is the connection. Under the write lock when coming back: no append meanwhile."""
        await self._sync(pg, returning=returning)
        self._members = tuple(await pg.members(self.release_id))
        self._pg = pg

    def _record_operator(self) -> dict[str, Any]:
        """Who journals, as records carry it: the operator, and this control room's session
        (so a record of ours that reached the store late is known as ours)."""
        return {**self.operator, "session": self._session_key} if self._session_key else dict(self.operator)

    def close(self) -> None:
        """Leave the release: the driver's lock and this control room's session end with the
        connection; the mirror stays on disk."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            self._thread.call(self._close(), CLOSE_DEADLINE_S)
        self._thread.stop()

    async def _close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(Exception):
                assert self._conn_lock is not None
                await asyncio.wait_for(self._conn_lock.acquire(), 1.0)  # an append or a poll finishes first
                try:
                    await pg.conn.execute("DELETE FROM controlroom.sessions WHERE session_key = $1", self._session_key)
                finally:
                    self._conn_lock.release()
            with contextlib.suppress(Exception):
                await pg.conn.close(timeout=2)

    # -- what the engine reads -----------------------------------------------------------

    @property
    def path(self) -> Path:
        """The local mirror of the release's journal."""
        assert self._mirror is not None
        return self._mirror.path

    @property
    def last_hash(self) -> str:
        return self.records[-1].hash if self.records else GENESIS

    def of_kind(self, *kinds: str) -> Iterator[Record]:
        return (record for record in self.records if record.kind in kinds)

    @property
    def session_key(self) -> int:
        return self._session_key

    def crew(self) -> Crew:
        members = self._members
        driver = next((m for m in members if m.drives), None)
        return Crew(self.label, self.write, self._driving, driver, members, self._pg is not None,
                    self._offline_since, self._offline_error, self._offline_continued, self._last_driver())

    def live_driver_session(self) -> int | None:
        """The session key of the control room that drives now, when it is not this one."""
        driver = next((m for m in self._members if m.drives), None)
        return driver.session_key if driver is not None and driver.session_key != self._session_key else None

    @property
    def can_append(self) -> bool:
        """Whether this control room journals: the driver does (offline too, in its file)."""
        return self._driving

    def decision_refusal(self) -> str | None:
        """Why this control room may not decide now (it watches; the store is unreachable),
        or None."""
        if self._pg is None:
            since = f"{self._offline_since.astimezone(UTC):%H:%M:%S} UTC" if self._offline_since else "now"
            if not self._driving:
                return (f"the shared journal is unreachable since {since} ({self._offline_error}): "
                        "reconnecting; you watch")
            if not self._offline_continued:
                return (f"the shared journal is unreachable since {since} ({self._offline_error}): decisions are "
                        f"refused until it is back, or until you type that you continue offline (T)")
            return None
        if self._driving:
            return None
        driver = next((m for m in self._members if m.drives), None)
        if driver is not None:
            since = f" since {driver.driving_since.astimezone(UTC):%H:%M} UTC" if driver.driving_since else ""
            return f"driven by {driver.label}{since} — T takes over when its control room is gone"
        last = self._last_driver()
        gone = f" ({last}'s control room is gone)" if last else ""
        return f"nobody drives this release{gone} — T takes over"

    def take_over_refusal(self) -> str | None:
        """Why T would be refused now (before asking anything), or None."""
        if not self.write:
            return "READ-ONLY: taking over is a decision; open the control room with --write"
        if self._pg is None:
            if not self._driving:
                return f"the shared journal is unreachable ({self._offline_error}): nobody can take over until it is back"
            if self._offline_continued:
                return "you already continue offline; the journal is synchronised when the store is back"
            return None  # T: continue offline
        if self._driving:
            return "you drive this release already"
        driver = next((m for m in self._members if m.drives), None)
        if driver is not None:
            return (f"{driver.label} still drives: its control room is connected. A takeover needs it gone — they quit "
                    "(q), or it is killed, or it loses its connection (then T works within seconds)")
        return None

    def take_notices(self) -> list[str]:
        """What happened to the crew or the link since the last call, for the operator."""
        with self._state:
            notices, self._notices = list(self._notices), deque()
        return notices

    def refresh(self) -> bool:
        """Take in what the store thread learned (records, members, the link); True when
        something changed."""
        changed = self._changed.is_set()
        self._changed.clear()
        with self._state:
            known = list(self._known)
        mine = self.records
        if len(known) < len(mine) or (mine and known[len(mine) - 1].hash != mine[-1].hash):
            self.records = known  # made anew from the store (a branch set aside)
            return True
        if len(known) > len(mine):
            self.records = mine + known[len(mine):]
            return True
        return changed

    async def changed(self) -> None:
        """On the app's event loop: wait until a record, a member or the link changes."""
        if self._main_event is None:
            self._main_loop = asyncio.get_running_loop()
            self._main_event = asyncio.Event()
            if self._changed.is_set():
                self._main_event.set()
        await self._main_event.wait()
        self._main_event.clear()

    def _wake(self) -> None:
        self._changed.set()
        loop, event = self._main_loop, self._main_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the app's loop has closed
                loop.call_soon_threadsafe(event.set)

    def _notice(self, text: str) -> None:
        with self._state:
            self._notices.append(text)
        self._wake()

    def _last_driver(self) -> str:
        """Who drove last, as the journal says (the latest driver_changed record)."""
        records = self._known or self.records
        last = next((r for r in reversed(records) if r.kind == "driver_changed"), None)
        return str(last.data.get("driver", "")) if last is not None else ""

    # -- what the engine writes ----------------------------------------------------------

    def append(self, kind: str, data: dict[str, Any] | None = None, *,
               unless: Callable[[list[Record]], str | None] | None = None) -> Record:
        """Journal one record, as the file journal does: `unless` is asked with every record
        of the release, in the same transaction as the insert."""
        # A decision waits for one append at most; an outcome or an observation is never
        # dropped, so it may also wait out a reconnection in progress (it then lands here or there).
        deadline = APPEND_DEADLINE_S + 2 if unless is not None else OPEN_DEADLINE_S + APPEND_DEADLINE_S + 2
        try:
            record = self._thread.call(self._append(kind, dict(data or {}), unless), deadline)
        except TimeoutError:
            logger.error("shared journal: no answer to an append of %s within %s s", kind, deadline)
            raise JournalRefused(f"the shared journal did not answer within {deadline:g} s: nothing was decided") from None
        self.refresh()
        return record

    async def _append(self, kind: str, data: dict[str, Any],
                      unless: Callable[[list[Record]], str | None] | None) -> Record:
        async with self._write_lock:  # never in the middle of a reconnection's sync, or a takeover
            return await self._append_now(kind, data, unless)

    async def _append_now(self, kind: str, data: dict[str, Any],
                          unless: Callable[[list[Record]], str | None] | None) -> Record:
        if self._pg is not None and self._driving:
            return await self._append_online(kind, data, unless)
        if self._pg is None and self._driving:  # the store is away: the driver journals here
            return self._append_here(kind, data, unless)
        raise JournalRefused(self.decision_refusal() or "this control room does not drive the release")

    def _append_here(self, kind: str, data: dict[str, Any],
                     unless: Callable[[list[Record]], str | None] | None) -> Record:
        """Journal a record in this machine's file only (the store is away), chained after
        what this control room knows; the file must hold exactly that."""
        assert self._mirror is not None
        self._mirror.refresh()
        if [r.hash for r in self._mirror.records] != [r.hash for r in self._known]:
            raise JournalRefused(f"this machine's copy of the release ({self._mirror.path.name}) does not hold what "
                                 "this control room knows, so nothing can be journaled offline: wait for the shared "
                                 "journal")
        self._mirror.operator = self._record_operator()
        record = self._mirror.append(kind, data, unless=unless)
        with self._state:
            self._known.append(record)
        return record

    def _copy(self) -> None:
        """Bring this machine's copy up to the records the store holds (another control room
        on the machine may have written some already). A copy that cannot be written is said
        once (and logged); the control room goes on with the store."""
        assert self._mirror is not None
        try:
            self._mirror.refresh()
            for record in self._known[len(self._mirror.records):self._synced]:
                self._mirror.mirror(record)
        except (OSError, JournalRefused) as error:
            logger.error("the local copy of release %s: %s", self.release_id, error)
            if not self._copy_failed:
                self._copy_failed = True
                self._notice(f"this machine's copy of the release ({self._mirror.path.name}) could not be written "
                             f"({describe(error)}); the shared journal holds every record")

    async def _append_online(self, kind: str, data: dict[str, Any],
                             unless: Callable[[list[Record]], str | None] | None) -> Record:
        assert self._mirror is not None and self._conn_lock is not None
        for _ in range(5):
            pg = self._pg
            if pg is None:
                return await self._append_now(kind, data, unless)
            record: Record | None = None
            try:
                async with self._conn_lock:
                    # Built under the lock: no catch-up extends what it follows meanwhile.
                    known = self._known
                    record = new_record(len(known) + 1, self.clock().isoformat(), kind, self._record_operator(), data,
                                        known[-1].hash if known else GENESIS, self.redact)
                    inserted = await asyncio.wait_for(pg.insert_next(
                        self.release_id, record, self.channel, unless=unless, known=known,
                        fence=release_key(self.release_id)), APPEND_DEADLINE_S)
            except NotDriving:
                self._driving = False
                self._notice("you no longer hold this release's driver lock: you watch now")
                raise JournalRefused("you no longer drive this release: another control room does") from None
            except JournalRefused:
                raise
            except Exception as error:
                if not is_unreachable(error):
                    raise
                await self._go_offline(error)
                assert record is not None
                if unless is not None:
                    # A decision the store may or may not have taken: nothing acts on it. It
                    # shows when the store is back if it was taken.
                    raise JournalRefused(f"the shared journal did not answer ({self.redact(describe(error))}): nothing was "
                                         "decided; decisions now need you to continue offline (T)") from None
                # An outcome or an observation is never lost: the same record, in this machine's
                # file (the store may have it too: the same bytes, so the two agree when it is back).
                with self._state:
                    self._known.append(record)
                try:
                    self._mirror.mirror(record)
                except (OSError, JournalRefused) as failure:
                    logger.error("the local copy of release %s: %s", self.release_id, failure)
                    self._notice(f"the shared journal did not answer and this machine's copy could not be written "
                                 f"({describe(failure)}): record {record.seq} ({kind}) is only in this control room "
                                 "until the store is back")
                return record
            if inserted:
                with self._state:
                    self._known.append(record)
                self._synced = record.seq
                self._copy()
                return record
            try:
                await self._catch_up_now()  # someone appended meanwhile (a branch kept): follow it
            except Exception as error:
                if not is_unreachable(error):
                    raise
                await self._go_offline(error)  # the next round journals it here
        raise SessionError(f"the shared journal's release {self.release_id} kept moving under this append")

    def take_over(self, reason: str) -> Record:
        """Become the driver of a release whose driver's control room is gone (journaled,
        shown to all); or, the store being away, continue offline (journaled here)."""
        refusal = self.take_over_refusal()
        if refusal:
            raise SessionError(refusal)
        try:
            record = self._thread.call(self._take_over(reason.strip()), APPEND_DEADLINE_S + 3)
        except TimeoutError as error:
            raise SessionError(f"the shared journal did not answer ({describe(error)}): nothing was taken over") from None
        self.refresh()
        return record

    async def _take_over(self, reason: str) -> Record:
        async with self._write_lock:
            try:
                return await self._take_over_now(reason)
            except Exception as error:
                if not is_unreachable(error):
                    raise
                await self._go_offline(error)
                raise SessionError(f"the shared journal did not answer ({self.redact(describe(error))}): "
                                   "nothing was taken over") from None

    async def _take_over_now(self, reason: str) -> Record:
        if self._pg is None:  # the driver, offline: continue here
            record = self._append_here("offline_continued", {
                "reason": reason, "since": self._offline_since.isoformat() if self._offline_since else "",
                "error": self._offline_error}, None)
            self._offline_continued = True
            return record
        refusal = self.take_over_refusal()
        if refusal:
            raise SessionError(refusal)
        pg = self._pg
        assert self._conn_lock is not None
        async with self._conn_lock:
            got = await pg.try_drive(self.release_id, self._session_key)
        if not got:
            await self._poll_members()
            raise SessionError(self.take_over_refusal() or "another control room took the release first")
        try:
            await self._catch_up_now()
        except BaseException:
            with contextlib.suppress(Exception):  # not driving: nobody may hold the lock in our name
                async with self._conn_lock:
                    await pg.stop_driving(self.release_id, self._session_key)
            raise
        self._driving = True
        record = await self._append_online("driver_changed", {"driver": self.label, "how": "took over",
                                                              "from": self._last_driver(), "reason": reason}, None)
        await self._poll_members()
        return record

    # -- the store thread: presence, notifications, the link -------------------------------

    async def _supervise(self) -> None:
        while not self._closing:
            try:
                if self._pg is not None:
                    await self._poll_members()
                    await asyncio.sleep(PRESENCE_POLL_S)
                    continue
                await asyncio.wait_for(self._reconnect(), OPEN_DEADLINE_S)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - still away (or a bug): said, and tried again
                if self._pg is None:
                    self._offline_error = self.redact(describe(error))
                else:
                    logger.error("shared journal supervisor", exc_info=error)
                await asyncio.sleep(RECONNECT_S)

    async def _poll_members(self) -> None:
        pg = self._pg
        if pg is None or self._conn_lock is None:
            return
        try:
            async with self._conn_lock:
                members = tuple(await asyncio.wait_for(pg.members(self.release_id), PRESENCE_DEADLINE_S))
        except Exception as error:
            if is_unreachable(error):
                await self._go_offline(error)
                return
            raise
        self._set_members(members)

    def _set_members(self, members: tuple[Member, ...]) -> None:
        before = self._members
        if [(m.session_key, m.drives) for m in before] == [(m.session_key, m.drives) for m in members]:
            return
        old_driver = next((m for m in before if m.drives), None)
        new_driver = next((m for m in members if m.drives), None)
        self._members = members
        if before and old_driver is not None and new_driver is None and old_driver.session_key != self._session_key:
            self._notice(f"{old_driver.label}'s control room is gone: nobody drives"
                         + (" — T takes over" if self.write else ""))
        self._wake()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if note.get("release") != self.release_id:
            return
        if isinstance(note.get("seq"), int) and note["seq"] <= self._synced:
            return  # our own append, or one we have
        self._spawn(self._catch_up())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a task nobody references may be collected before it runs
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self) -> None:
        """Fetch the records after the last we have (coalesced: one fetch at a time, again if
        more arrived meanwhile)."""
        if self._catching_up:
            self._catch_up_again = True
            return
        self._catching_up = True
        try:
            while True:
                self._catch_up_again = False
                try:
                    await self._catch_up_now()
                except Exception as error:  # noqa: BLE001 - said, never silent
                    if is_unreachable(error):
                        await self._go_offline(error)
                    else:
                        logger.error("shared journal: following release %s", self.release_id, exc_info=error)
                        self._notice(f"this control room could not take in the shared journal's records "
                                     f"({describe(error)}): what it shows may be behind; reopen it")
                    return
                if not self._catch_up_again:
                    return
        finally:
            self._catching_up = False

    async def _catch_up_now(self) -> None:
        pg = self._pg
        if pg is None or self._conn_lock is None or self._mirror is None:
            return
        if len(self._known) > self._synced:
            return  # records journaled offline: the reconnection decides about them
        async with self._conn_lock:
            new = await asyncio.wait_for(pg.read_after(self.release_id, len(self._known)), PRESENCE_DEADLINE_S)
        if not new:
            return
        problems = verify_chain(new, prev=self._known[-1].hash if self._known else GENESIS, first_seq=len(self._known) + 1)
        if problems:  # cannot happen with one chain per release; never show a broken one
            raise SessionError(f"the shared journal's records do not follow this control room's: {problems[0]}")
        with self._state:
            self._known.extend(new)
        self._synced = len(self._known)
        self._wake()
        self._copy()

    def _on_terminated(self, conn: object) -> None:
        pg = self._pg
        if self._closing or pg is None or pg.conn is not conn:
            return
        self._spawn(self._go_offline(ConnectionError("the connection was closed")))

    async def _go_offline(self, error: BaseException) -> None:
        pg, self._pg = self._pg, None
        if pg is None:
            return
        self._offline_since = self.clock()
        self._offline_error = self.redact(describe(error))
        self._offline_continued = False
        with contextlib.suppress(Exception):
            pg.conn.terminate()
        what = ("decisions are refused until it is back, or until you continue offline (T)" if self._driving
                else "showing what was journaled until now; reconnecting")
        self._notice(f"the shared journal is unreachable ({self._offline_error}): {what}")

    async def _reconnect(self) -> None:
        pg = await PgJournal.open(self._dsn, operator=self.operator, clock=self.clock, redact=self.redact,
                                  settings=SETTINGS)
        try:
            await self._join(pg)
            async with self._write_lock:  # no append lands in the file while it is made one with the store
                await self._attach(pg, returning=True)
            await self._catch_up_now()
        except BaseException:
            self._pg = None
            with contextlib.suppress(Exception):
                pg.conn.terminate()
            raise
        self._offline_since = None
        self._offline_error = ""
        self._offline_continued = False
        self._wake()

    # -- the mirror and the store, made one ---------------------------------------------

    async def _sync(self, pg: PgJournal, *, returning: bool) -> None:
        """Make the mirror and the store agree, and decide whether this control room drives.
        The store's records the mirror lacks are mirrored. Records the mirror has beyond the
        store (journaled offline, by this control room or by one killed before it could send
        them) go to the store as they are when nobody journaled meanwhile and this one drives;
        otherwise they are kept as a branch. Opening, a --write window drives when nobody does;
        coming back, the driver drives on only if nobody journaled meanwhile."""
        store = await pg.read(self.release_id)
        problems = verify_chain(store)
        if problems:  # never build on, or show, a chain that does not verify
            raise SessionError(f"the shared journal's release {self.release_id} does not verify: {problems[0]}")
        if self._mirror is None:
            self._mirror = self._open_mirror(store)
            self._known = list(self._mirror.records)
        local = list(self._known)
        common = 0
        while common < min(len(local), len(store)) and local[common].hash == store[common].hash:
            common += 1
        extra, missing = local[common:], store[common:]
        # Records of ours that reached the store after we stopped hearing from it are not
        # "someone else journaled meanwhile".
        others = [r for r in missing if r.operator.get("session") != self._session_key]
        was_driving = self._driving
        if not self.write:
            may_drive = False
        elif returning and not (self._opened_offline and not extra):
            may_drive = was_driving and not others  # back: only if nobody else journaled meanwhile
        else:  # opening (or opened offline and journaled nothing): drive if nobody does
            may_drive = not (extra and others)
        self._driving = may_drive and await pg.try_drive(self.release_id, self._session_key)
        if may_drive and not self._driving and returning:
            holder = await pg.lock_holder(DRIVER_LOCKS, release_key(self.release_id))
            if holder == self._backend_pid:  # unreachable: `_join` ended that session or refused
                raise StaleSession("this control room's previous connection still holds the driver's lock")
        self._opened_offline = False
        if returning and was_driving and not self._driving:
            self._notice("someone else drove this release while the shared journal was unreachable: you watch now")
        if extra and self._driving and not missing and await pg.insert_records(
                self.release_id, extra, self.channel, fence=release_key(self.release_id)):
            back = await pg.append(self.release_id, "store_back", {
                "offline_records": len(extra), "from_seq": extra[0].seq, "to_seq": extra[-1].seq},
                channel=self.channel, fence=release_key(self.release_id))
            with self._state:
                self._known = [*local, back]
            self._synced = back.seq
            self._copy()
            self._notice(f"the shared journal is back: the {len(extra)} record(s) journaled here meanwhile are in it")
            return
        if extra:
            await self._keep_branch(pg, extra, drove_meanwhile=bool(others) or not self._driving)
            return
        with self._state:
            self._known = list(store)
        self._synced = len(store)
        self._copy()
        if returning:
            self._notice("the shared journal is back" + ("; you drive" if self._driving else ""))

    def _open_mirror(self, store: list[Record]) -> MirrorFile:
        """This release's file here; one that is damaged, or is another chain, is set aside
        (kept, renamed) and a new one made from the store."""
        path = self.journal_dir / f"{self.release_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            local, problems, _ = read_records(path)
        except OSError as error:
            local, problems = [], [JournalProblem(1, "unreadable", str(error))]
        problems = [p for p in problems if p.kind != "torn_tail"]  # cut off when it opens (MirrorFile)
        diverges = bool(local) and bool(store) and local[0].hash != store[0].hash
        if problems or diverges:
            aside = self._set_aside(path, "damaged")
            self.problems.append(JournalProblem(1, "set_aside", f"the local copy {path.name} did not match the shared "
                                                f"journal ({problems[0] if problems else 'another chain'}); kept as "
                                                f"{aside.name}, and a new copy made from the store"))
        return MirrorFile.open(path, redact=self.redact, clock=self.clock, operator=self.operator)

    def _set_aside(self, path: Path, why: str) -> Path:
        stamp = self.clock().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.stem}.{why}-{stamp}.jsonl")
        suffix = 1
        while aside.exists():
            suffix += 1
            aside = path.with_name(f"{path.stem}.{why}-{stamp}-{suffix}.jsonl")
        if path.exists():
            os.replace(path, aside)
        if head_path(path).exists():
            os.replace(head_path(path), head_path(aside))
        return aside

    async def _keep_branch(self, pg: PgJournal, extra: list[Record], *, drove_meanwhile: bool = True) -> None:
        """Records journaled here that the store cannot take (someone else journaled
        meanwhile): kept, whole, in the store as an `offline_branch` record and in the set-aside
        local file, which ends with a record saying where they went; the mirror starts again
        from the store. This control room watches from now on."""
        assert self._mirror is not None
        why = ("someone else journaled this release while these records were journaled offline" if drove_meanwhile
               else "a record of this control room's reached the shared journal after it stopped answering, and "
                    "these records, journaled offline after it, cannot follow it")
        data = {"records": [record_body(r) for r in extra], "from_seq": extra[0].seq, "to_seq": extra[-1].seq,
                "journaled_by": self.label, "first_at": extra[0].ts, "last_at": extra[-1].ts, "why": why}
        record = await pg.append(self.release_id, "offline_branch", data, channel=self.channel)
        if self._driving and drove_meanwhile:
            await pg.stop_driving(self.release_id, self._session_key)
            self._driving = False
        stored = await pg.read(self.release_id)
        path = self._mirror.path
        aside = self._set_aside(path, "offline-branch")
        branch = Journal.open(aside, redact=self.redact, clock=self.clock, operator=self.operator)
        branch.append("offline_branch_kept", {"release": self.release_id, "store_seq": record.seq,
                                              "why": why})
        mirror = MirrorFile.open(path, redact=self.redact, clock=self.clock, operator=self.operator)
        with self._state:
            self._mirror = mirror
            self._known = list(stored)
            self._synced = len(stored)
        self._copy()
        head = ("someone else drove this release while the shared journal was unreachable" if drove_meanwhile
                else "a record of yours reached the shared journal late")
        self._notice(f"{head}: the {len(extra)} record(s) journaled here are kept as a branch (record {record.seq} of the "
                     f"shared journal, and {aside.name}); " + ("you watch now" if not self._driving else "you drive on"))
