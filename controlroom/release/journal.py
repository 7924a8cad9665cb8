"""The deployment journal: append-only JSON Lines, hash-chained, flushed to disk per record.

Every record carries the hash of the one before it, so an edited or removed record is
detected when the journal is opened. A record is written and fsync'ed before append()
returns: an intent record is on disk before the action it announces runs. A crash can leave
a torn last line; opening the journal tolerates it, reports it, and appends a `torn_tail`
record that acknowledges it, so the chain stays verifiable from then on.

Two processes may hold the same journal (an SSH session that dropped while its process
lingers, and the operator's new one): each append takes an exclusive lock on the file and,
if someone else appended since, reads their records first, so the chain never forks. Each
process that opens a journal to write also claims it (`JournalClaim`: a lock on
`<journal>.holder` held while it is open, with who holds it inside), so the second one
knows at once that another live process has it, and which.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs

from controlroom.errors import SessionError
from controlroom.infra.identity import current_operator

GENESIS = "0" * 64
# A journal is a few hundred records; anything this large is not one (or not ours to slurp).
MAX_JOURNAL_BYTES = 64 * 1024 * 1024
HEAD_BYTES = 160  # the head file's fixed size: one small write, rewritten in place


def records_key(records: Sequence[Record]) -> tuple[int, str]:
    """Changes whenever the records do (appended, or rebuilt): what a cache of something derived
    from them is keyed by."""
    return len(records), records[-1].hash if records else ""


class JournalRefused(SessionError):
    """An append refused under the lock: the journal on disk (another window's records
    included) no longer allows it."""


class JournalReadError(OSError):
    """The path is not a journal that can be read (not a regular file, or far too large)."""


def head_path(journal: Path) -> Path:
    """Beside the journal: the seq and hash of its last record, rewritten (and fsync'ed)
    after every append, so a removed tail — which leaves a valid chain — is detected."""
    return journal.with_name(journal.name + ".head")


def read_head(journal: Path) -> tuple[int, str] | None:
    try:
        data = json.loads(head_path(journal).read_bytes().rstrip(b" \n"))
        return int(data["seq"]), str(data["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_head(journal: Path, seq: int, digest: str) -> None:
    body = json.dumps({"seq": seq, "hash": digest}).encode("ascii").ljust(HEAD_BYTES - 1) + b"\n"
    fd = os.open(head_path(journal), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.pwrite(fd, body, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


JOURNAL_DIR_VARIABLE = "CONTROLROOM_JOURNAL_DIR"


def default_journal_dir() -> Path:
    return Path(platformdirs.user_data_dir("controlroom")) / "journals"


def journal_directory() -> Path:
    """Where journals live: $CONTROLROOM_JOURNAL_DIR, else the user's data directory."""
    override = os.environ.get(JOURNAL_DIR_VARIABLE)
    return Path(override).expanduser() if override else default_journal_dir()


def operator_identity() -> dict[str, str]:
    """Who is at the keyboard, as journal records carry it."""
    return current_operator().as_record()


@dataclass(frozen=True)
class Record:
    seq: int
    ts: str
    kind: str
    operator: dict[str, str]
    data: dict[str, Any]
    prev: str
    hash: str

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.ts)


@dataclass(frozen=True)
class JournalProblem:
    line: int  # 1-based
    kind: str  # "torn_tail" | "unreadable" | "tampered" | "broken_chain"
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind.replace('_', ' ')}: {self.detail}"


@dataclass(frozen=True)
class Holder:
    """The live process that has a journal open: where, who, since when."""

    host: str
    pid: int
    user: str
    since: str  # ISO time

    def __str__(self) -> str:
        try:
            since = datetime.fromisoformat(self.since).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            since = "an unknown time"
        return f"pid {self.pid} on {self.host} ({self.user}) since {since}"


CLAIM_ATTEMPTS = 10


class JournalClaim:
    """This process's claim on a journal while it has it open to write.

    An exclusive `flock` on `<journal>.holder`, kept for the claim's life: the kernel drops
    it when the process dies (kill -9 included), so a claim that is held is always a live
    process's. The file says who that is. Releasing it leaves the file; it means nothing
    once unlocked."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @staticmethod
    def path_for(journal: Path) -> Path:
        return journal.with_name(journal.name + ".holder")

    @classmethod
    def take(cls, journal: Path, operator: dict[str, str], clock: Callable[[], datetime]) -> "JournalClaim | Holder":
        """Claim `journal`, or say who holds it."""
        fd = os.open(cls.path_for(journal), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for attempt in range(CLAIM_ATTEMPTS):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # A holder, or only someone asking who holds it (holder_of's brief shared
                    # lock): ask again a few times before believing it is held.
                    if attempt == CLAIM_ATTEMPTS - 1:
                        os.close(fd)
                        return cls._holder(journal)
                    time.sleep(0.01)
        except BaseException:
            os.close(fd)
            raise
        me = {"host": socket.gethostname(), "pid": os.getpid(), "user": operator.get("user", "?"),
              "since": clock().isoformat()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        except BaseException:
            os.close(fd)  # and with it the lock
            raise
        return cls(fd)

    @classmethod
    def holder_of(cls, journal: Path) -> Holder | None:
        """The live process that has `journal` open, or None (asks without claiming it)."""
        try:
            fd = os.open(cls.path_for(journal), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return cls._holder(journal)
        finally:
            os.close(fd)
        return None

    @classmethod
    def _holder(cls, journal: Path) -> Holder:
        # The holder writes its name just after it locks: give it a moment if it is empty.
        for _ in range(20):
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                info = json.loads(cls.path_for(journal).read_text(encoding="utf-8"))
                return Holder(str(info["host"]), int(info["pid"]), str(info["user"]), str(info["since"]))
            time.sleep(0.01)
        return Holder("an unknown host", 0, "unknown", "")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the lock

    def __del__(self) -> None:
        self.release()


@dataclass
class Journal:
    """One deployment's journal. Open with Journal.open(path)."""

    path: Path
    records: list[Record] = field(default_factory=list)
    problems: list[JournalProblem] = field(default_factory=list)
    redact: Callable[[str], str] = lambda text: text
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    operator: dict[str, str] = field(default_factory=operator_identity)
    # Another live process that had this journal open when we opened it (None: nobody).
    other_holder: Holder | None = None
    _claim: JournalClaim | None = None
    _size: int = 0  # bytes of the file that self.records accounts for

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        redact: Callable[[str], str] | None = None,
        clock: Callable[[], datetime] | None = None,
        operator: dict[str, str] | None = None,
        claim: bool = False,
    ) -> "Journal":
        """Open (or create) the journal at `path` and verify what is already in it. With
        `claim`, also claim it for this process (see `other_holder`; call close())."""
        path.parent.mkdir(parents=True, exist_ok=True)
        journal = cls(path)
        if redact is not None:
            journal.redact = redact
        if clock is not None:
            journal.clock = clock
        if operator is not None:
            journal.operator = operator
        if claim:
            taken = JournalClaim.take(path, journal.operator, journal.clock)
            if isinstance(taken, Holder):
                journal.other_holder = taken
            else:
                journal._claim = taken
        # Read (and repair a torn tail) under the lock appends take: nobody appends meanwhile,
        # so the chain we continue is the one on disk.
        created = not path.exists()
        with open(path, "ab+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            journal.records, journal.problems, torn = read_records(path, shared_lock=False)
            journal._size = os.fstat(handle.fileno()).st_size
            if torn is not None:
                journal._repair_torn(handle, torn)
        if created:  # the new directory entry must survive a crash too
            _fsync_directory(path.parent)
        return journal

    # What the engine asks of any journal (the shared one answers differently): a file
    # journal is written by whoever has it open, and decides nobody's right to decide.
    can_append = True

    def decision_refusal(self) -> str | None:
        return None

    def close(self) -> None:
        """Give up this process's claim; records already appended stay where they are."""
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    @property
    def last_hash(self) -> str:
        return self.records[-1].hash if self.records else GENESIS

    def refresh(self) -> bool:
        """Read what other processes appended since (another window on the same journal);
        True when there was something."""
        try:
            if self.path.stat().st_size == self._size:
                return False
        except FileNotFoundError:
            return False
        with open(self.path, "ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            return self._catch_up(handle)

    def append(self, kind: str, data: dict[str, Any] | None = None, *,
               unless: Callable[[list[Record]], str | None] | None = None) -> Record:
        """Write one record and fsync it (and the head file) before returning. `unless` is
        asked under the lock, with every record on disk (another window's too): a reason it
        returns refuses the append (JournalRefused), so a decision and its record are one
        atomic step."""
        created = not self.path.exists()
        with open(self.path, "ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the file is closed
            if unless is not None:
                self._catch_up(handle)
                reason = unless(self.records)
                if reason:
                    raise JournalRefused(reason)
            record = self._append_locked(handle, kind, data)
        if created:  # the new directory entry must survive a crash too
            _fsync_directory(self.path.parent)
        return record

    def mirror(self, record: Record) -> Record:
        """Write a record another store chained (the shared Postgres journal) as it is: same
        seq, same hashes, so this file verifies on its own and equals the store. A record the
        file already has (another control room on this machine mirrored it) is not written
        twice."""
        created = not self.path.exists()
        with open(self.path, "ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._catch_up(handle)
            if record.seq <= len(self.records) and self.records[record.seq - 1].hash == record.hash:
                return record
            if record.seq != len(self.records) + 1 or record.prev != self.last_hash:
                raise JournalRefused(f"record {record.seq} does not follow this file's record {len(self.records)}")
            body = record_body(record)
            line = (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
            self._size += len(line)
            _write_head(self.path, record.seq, record.hash)
            self.records.append(record)
        if created:
            _fsync_directory(self.path.parent)
        return record

    def _catch_up(self, handle: Any, kind: str = "") -> bool:
        """Under the lock: re-read the file when another process appended to it."""
        if os.fstat(handle.fileno()).st_size == self._size:
            return False
        self.records, problems, torn = read_records(self.path, shared_lock=False)
        self.problems.extend(p for p in problems if p not in self.problems)
        self._size = os.fstat(handle.fileno()).st_size
        if torn is not None and kind != "torn_tail":
            self._repair_torn(handle, torn)  # that process died mid-write
        return True

    def _repair_torn(self, handle: Any, torn: tuple[int, str]) -> None:
        """Under the lock, the last line cut short by a crash: never glue a record onto it;
        start the next on a fresh line, and say on a record what was torn (a crash right
        after the newline leaves the torn line last, still torn)."""
        if not _ends_with_newline(handle):
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._size = os.fstat(handle.fileno()).st_size
        self._append_locked(handle, "torn_tail", {"line": torn[0], "sha256": torn[1]})

    def _append_locked(self, handle: Any, kind: str, data: dict[str, Any] | None) -> Record:
        self._catch_up(handle, kind)  # another process appended: continue its chain
        size = self._size
        body = {
            "seq": len(self.records) + 1,
            "ts": self.clock().isoformat(),
            "kind": kind,
            "operator": self.operator,
            "data": _redact_values(data or {}, self.redact),
            "prev": self.last_hash,
        }
        body["hash"] = _digest(body)
        line = (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
        self._size = size + len(line)
        _write_head(self.path, body["seq"], body["hash"])
        record = Record(**body)
        self.records.append(record)
        return record

    def of_kind(self, *kinds: str) -> Iterator[Record]:
        return (record for record in self.records if record.kind in kinds)


class MirrorFile(Journal):
    """This machine's copy of a release in the shared store: the store's records, byte for
    byte (see mirror()), in a file several control rooms on the machine may write. A line torn
    by a control room killed mid-write is cut off, not acknowledged with a record of its own:
    that record is in the store, and the copy must stay the store's."""

    def _repair_torn(self, handle: Any, torn: tuple[int, str]) -> None:
        raw = self.path.read_bytes()  # the handle may be open for appending only
        lines = raw.split(b"\n")
        keep = sum(len(line) + 1 for line in lines[:torn[0] - 1])
        os.ftruncate(handle.fileno(), keep)
        os.fsync(handle.fileno())
        self._size = keep
        self.problems = [p for p in self.problems if p.kind != "torn_tail"]


def read_records(path: Path, *, shared_lock: bool = True) -> tuple[list[Record], list[JournalProblem], tuple[int, str] | None]:
    """Records that verify, the problems found, and (line, sha256) of a torn last line.
    JournalReadError when `path` is not a regular file or is larger than any journal.

    A reader from outside (status, report, the resume offer) takes a shared lock, so it never
    reads an append half-written; a writer already holding the exclusive lock passes
    shared_lock=False (flock would deadlock on its own lock)."""
    if not path.exists():
        return [], [], None
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise JournalReadError(f"{path}: not a regular file, so not a journal")
    if info.st_size > MAX_JOURNAL_BYTES:
        raise JournalReadError(f"{path}: {info.st_size / 1e6:.0f} MB is larger than any journal "
                               f"({MAX_JOURNAL_BYTES // 2**20} MiB at most)")
    with open(path, "rb") as handle:
        if shared_lock:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        # The head first: it is written after its record is on disk, so it never counts more
        # records than the file read after it holds.
        head = read_head(path)
        raw = handle.read(MAX_JOURNAL_BYTES + 1)
    lines = raw.split(b"\n")
    ends_cleanly = raw.endswith(b"\n") or not raw
    if ends_cleanly:
        lines = lines[:-1]
    records: list[Record] = []
    problems: list[JournalProblem] = []
    acknowledged: set[str] = set()  # sha256 of torn lines a later torn_tail record names
    torn: tuple[int, str] | None = None
    parsed: list[tuple[int, bytes, dict[str, Any] | None]] = []
    cut_short: set[int] = set()  # lines that are not JSON at all, as a write cut short leaves
    for number, line in enumerate(lines, start=1):
        try:
            body = json.loads(line)
        except ValueError:
            body = None
            cut_short.add(number)
        if not _well_formed(body):
            body = None
        parsed.append((number, line, body))
        if body and body["kind"] == "torn_tail":
            acknowledged.add(str(body["data"].get("sha256")))
    for number, line, body in parsed:
        if body is None:
            digest = hashlib.sha256(line).hexdigest()
            if digest in acknowledged:
                continue
            is_last = number == len(parsed)
            if is_last and (not ends_cleanly or number in cut_short) and (head is None or head[0] <= len(records)):
                # Cut short by a crash (with or without the newline our repair adds): the head
                # file, written after each record is on disk, does not count it.
                torn = (number, digest)
                problems.append(JournalProblem(number, "torn_tail", "the last record was cut short (crash?) and is ignored"))
            elif is_last and head is not None and head[0] > len(records):
                problems.append(JournalProblem(number, "tampered", f"record {head[0]} was whole on disk (the head "
                                               "file says so) and is now unreadable"))
            else:
                problems.append(JournalProblem(number, "unreadable", "not a JSON record"))
            continue
        expected_prev = records[-1].hash if records else GENESIS
        record = Record(**body)
        claimed = body.pop("hash")
        if _digest(body) != claimed:
            problems.append(JournalProblem(number, "tampered", f"record {record.seq} ({record.kind}) was edited"))
        elif record.prev != expected_prev:
            problems.append(JournalProblem(number, "broken_chain", f"record {record.seq} does not follow the record before it (one was removed or reordered)"))
        records.append(record)
    if head is not None and records and head[0] > records[-1].seq and torn is None and not any(
            p.kind == "tampered" for p in problems):
        problems.append(JournalProblem(len(parsed) + 1, "truncated", f"the journal ends at record {records[-1].seq} "
                                       f"but record {head[0]} was written: its last records were removed"))
    elif head is not None and not records and head[0] > 0:
        problems.append(JournalProblem(1, "truncated", f"the journal is empty but record {head[0]} was written"))
    elif head is not None and 0 < head[0] <= len(records) and records[head[0] - 1].hash != head[1]:
        problems.append(JournalProblem(head[0], "tampered", f"record {head[0]} is not the one that was written "
                                       "(the head file has another hash)"))
    return records, problems, torn


_FIELD_TYPES = {"seq": int, "ts": str, "kind": str, "operator": dict, "data": dict, "prev": str, "hash": str}


def _well_formed(body: Any) -> bool:
    """A JSON object with exactly the record's fields, of the right types, and a valid time."""
    if not isinstance(body, dict) or set(body) != set(_FIELD_TYPES):
        return False
    if not all(isinstance(body[name], kind) for name, kind in _FIELD_TYPES.items()):
        return False
    try:
        stamp = datetime.fromisoformat(body["ts"])
    except ValueError:
        return False
    return stamp.tzinfo is not None


def _ends_with_newline(handle: Any) -> bool:
    size = os.fstat(handle.fileno()).st_size
    return size == 0 or os.pread(handle.fileno(), 1, size - 1) == b"\n"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_body(record: Record) -> dict[str, Any]:
    return {"seq": record.seq, "ts": record.ts, "kind": record.kind, "operator": record.operator,
            "data": record.data, "prev": record.prev, "hash": record.hash}


def new_record(seq: int, ts: str, kind: str, operator: dict[str, str], data: dict[str, Any], prev: str,
               redact: Callable[[str], str] = lambda text: text) -> Record:
    """A record chained after `prev`, hashed exactly as the file journal hashes its own."""
    body: dict[str, Any] = {"seq": seq, "ts": ts, "kind": kind, "operator": operator,
                            "data": _redact_values(data, redact), "prev": prev}
    body["hash"] = _digest(body)
    return Record(**body)


def verify_chain(records: list[Record], *, prev: str = GENESIS, first_seq: int = 1) -> list[str]:
    """Problems of a chain of records (empty: it verifies): from the start of a journal, or
    a run that should follow the record whose hash is `prev` (seq `first_seq` - 1)."""
    problems: list[str] = []
    for index, record in enumerate(records, start=first_seq):
        body = record_body(record)
        claimed = body.pop("hash")
        if record.seq != index:
            problems.append(f"record {record.seq} is at position {index}")
        if _digest(body) != claimed:
            problems.append(f"record {record.seq} ({record.kind}) was edited")
        elif record.prev != prev:
            problems.append(f"record {record.seq} does not follow the record before it")
        prev = record.hash
    return problems


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _redact_values(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_values(item, redact) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_values(item, redact) for item in value]
    return value
