"""The journal: append-only, fsync'ed, hash-chained; torn tails tolerated, edits detected;
the deployment's state and clocks replay from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlroom.release.state import Level, format_duration, replay
from controlroom.release.journal import Journal, read_records
from controlroom.config.loader import load_default_runbook

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def open_journal(path: Path, clock: FakeClock | None = None) -> Journal:
    return Journal.open(path, clock=clock or FakeClock(), operator={"user": "ana", "ssh_client": "10.0.0.7"})


def test_records_chain_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = open_journal(path)
    first = journal.append("verdict", {"verdict": "PENDING", "reasons": []})
    second = journal.append("attested", {"item_id": "on-call"})
    assert second.prev == first.hash and first.prev == "0" * 64
    reopened = open_journal(path)
    assert reopened.problems == []
    assert [r.kind for r in reopened.records] == ["verdict", "attested"]
    assert reopened.records[1].operator == {"user": "ana", "ssh_client": "10.0.0.7"}


def test_secrets_are_redacted_before_they_reach_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal.open(path, redact=lambda text: text.replace("s3cr3t-token", "[redacted]"))
    journal.append("step_outcome", {"step_id": "x", "summary": "curl -H 'apikey: s3cr3t-token' failed", "lines": ["s3cr3t-token"]})
    text = path.read_text()
    assert "s3cr3t-token" not in text and "[redacted]" in text


def test_a_torn_last_line_is_tolerated_reported_and_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = open_journal(path)
    journal.append("deploy_started", {"version": "v2.15.0"})
    with open(path, "ab") as handle:  # what a crash in the middle of a write leaves
        handle.write(b'{"seq": 2, "ts": "2026-11-29T03:0')
    reopened = open_journal(path)
    assert [p.kind for p in reopened.problems] == ["torn_tail"]
    assert "cut short" in str(reopened.problems[0])
    assert reopened.records[-1].kind == "torn_tail"
    reopened.append("phase_started", {"phase_id": "pre"})
    # From then on the journal verifies cleanly: the torn line is acknowledged on the record.
    again = open_journal(path)
    assert again.problems == []
    assert [r.kind for r in again.records] == ["deploy_started", "torn_tail", "phase_started"]


def test_an_edited_middle_record_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = open_journal(path)
    journal.append("verdict", {"verdict": "NO-GO", "reasons": ["breakers open"]})
    journal.append("deploy_started", {"version": "v2.15.0", "override_reason": "CTO approved"})
    journal.append("phase_started", {"phase_id": "pre"})
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("NO-GO", "GO")
    path.write_text("\n".join(lines) + "\n")
    problems = open_journal(path).problems
    assert [(p.line, p.kind) for p in problems] == [(1, "tampered")]


def test_a_removed_record_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = open_journal(path)
    for phase in ("pre", "deploy", "post"):
        journal.append("phase_started", {"phase_id": phase})
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    problems = open_journal(path).problems
    assert [(p.line, p.kind) for p in problems] == [(2, "broken_chain")]


def test_replay_gives_phase_clocks_that_move_with_the_clock(tmp_path: Path) -> None:
    runbook = load_default_runbook()
    clock = FakeClock()
    journal = open_journal(tmp_path / "j.jsonl", clock)
    journal.append("attested", {"item_id": "on-call"})
    journal.append("deploy_started", {"version": "v2.15.0"})
    journal.append("phase_started", {"phase_id": "pre"})
    clock.advance(minutes=4)
    journal.append("phase_completed", {"phase_id": "pre"})
    journal.append("phase_started", {"phase_id": "deploy"})
    clock.advance(minutes=6)  # one minute over the 5-minute phase

    state = replay(journal.records)
    deployment = runbook.deployment
    assert state.current_phase(deployment) == "deploy"
    assert state.attestations["on-call"].user == "ana"
    pre = state.phase_clock(deployment, "pre", clock.now)
    assert (pre.elapsed_s, pre.running, pre.level) == (240, False, Level.OK)
    phase = state.phase_clock(deployment, "deploy", clock.now)
    assert phase.level is Level.AMBER and format_duration(phase.remaining_s) == "-1:00"
    clock.advance(minutes=2)  # 3 minutes over: beyond half the phase's 5 minutes
    assert state.phase_clock(deployment, "deploy", clock.now).level is Level.RED
    whole = state.deploy_clock(deployment, clock.now)
    assert whole.elapsed_s == 12 * 60 and whole.level is Level.OK


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from controlroom.release.journal import Journal
    journal = Journal.open(Path(sys.argv[1]))
    journal.append("deploy_started", {"version": "v2.15.0"})
    journal.append("phase_started", {"phase_id": "pre"})
    journal.append("phase_completed", {"phase_id": "pre"})
    journal.append("phase_started", {"phase_id": "deploy"})
    journal.append("step_intent", {"step_id": "deploy-code", "phase_id": "deploy"})
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_a_journal_written_by_a_killed_process_resumes(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    journal = Journal.open(path)
    assert journal.problems == []
    state = replay(journal.records)
    deployment = load_default_runbook().deployment
    assert state.in_progress and state.version == "v2.15.0"
    assert state.current_phase(deployment) == "deploy"
    assert state.steps["deploy-code"].status == "unknown"  # intent on disk, outcome never came
    started = json.loads(path.read_text().splitlines()[3])["ts"]
    assert state.phases["deploy"].started_at == datetime.fromisoformat(started)


def test_two_writers_on_one_journal_keep_one_chain(tmp_path: Path) -> None:
    """A dropped SSH session's lingering process and the operator's new one."""
    path = tmp_path / "j.jsonl"
    old = open_journal(path)
    old.append("deploy_started", {"version": "v2.15.0"})
    new = open_journal(path)
    new.append("phase_started", {"phase_id": "pre"})
    old.append("step_intent", {"step_id": "env-health", "phase_id": "pre"})  # old has not seen new's record
    reopened = open_journal(path)
    assert reopened.problems == []
    assert [r.seq for r in reopened.records] == [1, 2, 3]
    assert [r.kind for r in reopened.records] == ["deploy_started", "phase_started", "step_intent"]


def test_records_of_the_wrong_shape_are_unreadable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = open_journal(path)
    journal.append("deploy_started", {"version": "v2.15.0"})
    good = path.read_text()
    bad_lines = [
        '{"seq": "2", "ts": "x", "kind": "torn_tail", "operator": {}, "data": "nope", "prev": "", "hash": ""}',
        "[1, 2, 3]",
        '{"kind": "torn_tail", "data": 5}',
    ]
    path.write_text(good + "\n".join(bad_lines) + "\n")
    reopened = open_journal(path)
    assert [(p.line, p.kind) for p in reopened.problems] == [(2, "unreadable"), (3, "unreadable"), (4, "unreadable")]
    assert [r.kind for r in reopened.records] == ["deploy_started"]
    assert replay(reopened.records).version == "v2.15.0"


def test_a_journal_open_in_another_live_process_is_named_at_once(tmp_path: Path) -> None:
    """A second window, or an orphaned control room whose terminal went away: opening the
    journal says who has it (host, pid, since when). The kernel drops the claim when that
    process dies, kill -9 included."""
    import socket

    path = tmp_path / "j.jsonl"
    open_journal(path).append("session_opened", {})
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from pathlib import Path
            from controlroom.release.journal import Journal
            journal = Journal.open(Path(sys.argv[1]), claim=True)
            print("holding" if journal.other_holder is None else "not first", flush=True)
            time.sleep(60)
        """), str(path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        second = Journal.open(path, claim=True)
        other = second.other_holder
        assert other is not None and other.pid == holder.pid and other.host == socket.gethostname()
        assert datetime.fromisoformat(other.since) <= datetime.now(UTC)
        assert f"pid {holder.pid} on {socket.gethostname()}" in str(other)
        second.close()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        third = Journal.open(path, claim=True)
        assert third.other_holder is None
        # ... and now this process holds it: the next one is told so.
        fourth = Journal.open(path, claim=True)
        assert fourth.other_holder is not None and fourth.other_holder.pid == os.getpid()
        third.close()
        assert Journal.open(path, claim=True).other_holder is None
    finally:
        holder.kill()
        holder.wait()


# -- rule 5: a removed tail, concurrent opens, a crash during recovery, what is not a journal --

def _journal_of(path: Path, count: int) -> Journal:
    journal = open_journal(path)
    for index in range(count):
        journal.append("verdict", {"verdict": "PENDING", "reasons": [str(index)]})
    return journal


def test_a_removed_tail_is_detected(tmp_path: Path) -> None:
    """Deleting the last record, or cutting the journal to two records, leaves a valid chain:
    the head file beside it still says how far it went."""
    path = tmp_path / "j.jsonl"
    _journal_of(path, 5)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    problems = Journal.open(path).problems
    assert [p.kind for p in problems] == ["truncated"] and "ends at record 4 but record 5" in problems[0].detail
    path.write_text("".join(lines[:2]))
    assert [p.kind for p in Journal.open(path).problems] == ["truncated"]
    from controlroom.report.render import report_command

    assert "Journal integrity warning" in report_command(path, None)


def test_a_whole_last_record_made_unreadable_is_tampering_not_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    _journal_of(path, 3)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:40])  # as if torn, but the head counted it
    assert "tampered" in [p.kind for p in Journal.open(path).problems]


def test_two_processes_opening_at_once_never_fork_the_chain(tmp_path: Path) -> None:
    """Open and append are under the lock: 10 processes, each opening the same journal and
    appending, leave one linear chain."""
    path = tmp_path / "j.jsonl"
    _journal_of(path, 1)
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from controlroom.release.journal import Journal
        journal = Journal.open(Path(sys.argv[1]))
        for n in range(5):
            journal.append("verdict", {"verdict": "GO", "reasons": [sys.argv[2]]})
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path), str(n)]) for n in range(10)]
    assert all(w.wait(timeout=60) == 0 for w in writers)
    reopened = Journal.open(path)
    assert reopened.problems == []
    assert [r.seq for r in reopened.records] == list(range(1, 52))


def test_a_crash_during_torn_tail_recovery_is_recovered_next_time(tmp_path: Path) -> None:
    """The repair adds a newline, then the torn_tail record; killed between the two, the
    torn line is still the torn tail on the next open, never 'unreadable' for ever."""
    path = tmp_path / "j.jsonl"
    _journal_of(path, 2)
    torn = '{"seq":3,"ts":"2026-11-29T03:00:00+00:00","kind":"verd'
    path.write_text(path.read_text() + torn + "\n")  # the newline written, the record not
    reopened = Journal.open(path)
    assert [p.kind for p in reopened.problems] == ["torn_tail"]
    assert reopened.records[-1].kind == "torn_tail"
    assert Journal.open(path).problems == []  # acknowledged, and the chain verifies


def test_what_is_not_a_journal_is_refused_with_one_line(tmp_path: Path) -> None:
    from controlroom.report.render import ReportError, report_command

    with pytest.raises(ReportError, match="not a regular file"):
        report_command(Path("/dev/zero"), None)
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as handle:
        handle.truncate(65 * 1024 * 1024)
    with pytest.raises(ReportError, match="larger than any journal"):
        report_command(big, None)


def test_an_unexpected_record_is_reported_as_such(tmp_path: Path) -> None:
    """A well-chained record the engine never writes (a step_outcome without its step_id) is
    named in the report, not an internal error."""
    from controlroom.report.render import report_command

    path = tmp_path / "j.jsonl"
    journal = open_journal(path)
    journal.append("session_opened", {"environment": "staging"})
    journal.append("step_outcome", {"status": "done"})
    report = report_command(path, None)
    assert "record 2 (step\\_outcome) is not what the engine writes" in report


def test_a_reader_never_sees_an_append_half_done(tmp_path: Path) -> None:
    """status, report and the resume offer read without writing: while another process
    appends, they see whole records only — never a torn line, never "truncated"."""
    import threading

    path = tmp_path / "busy.jsonl"
    writer = Journal.open(path)
    done = threading.Event()

    def append_many() -> None:
        for number in range(300):
            writer.append("note", {"n": number, "padding": "x" * 2000})
        done.set()

    thread = threading.Thread(target=append_many)
    thread.start()
    seen: list[str] = []
    reads = 0
    while not done.is_set() or reads < 20:
        records, problems, torn = read_records(path)
        reads += 1
        seen += [str(problem) for problem in problems]
        assert torn is None
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
    thread.join()
    assert not seen, seen[:3]
    assert len(read_records(path)[0]) == 300
