"""`controlroom status`: where the release stands, from its journal, for people and for CI.

    controlroom status --config prod.toml --json
    controlroom status --config prod.toml --watch --timeout 1800   # wait for it to finish

Exit codes: 0 finished succeeded, 3 in progress, 4 failed / rolled back / aborted, 5 no
deployment, 2 usage or configuration error. With --watch it waits (polling the journal)
until the deployment finishes or --timeout passes, as `kubectl argo rollouts status --watch`
does, so a pipeline can wait on it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controlroom.release.state import DeploymentState, format_duration, replay, stage_of
from controlroom.release.journal import (JournalClaim, JournalReadError, Record, journal_directory, read_records,
                                         verify_chain)
from controlroom.config.loader import LoadedConfig
from controlroom.errors import ControlRoomError
from controlroom.config.models import Deployment

EXIT_SUCCEEDED, EXIT_IN_PROGRESS, EXIT_FAILED, EXIT_NO_DEPLOYMENT = 0, 3, 4, 5
LAST_EVENTS = 10
# A notice's intent says nothing its end does not say better: the last events show ends only.
NOT_EVENTS = frozenset({"notification_queued"})
WATCH_POLL_S = 1.0


class StatusError(ControlRoomError):
    """The journal given cannot be read as one: one line, exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class SharedCrew:
    """Who is on a shared release, as the store says (for status)."""

    release_id: str
    driver: str  # the label of the control room holding the driver's lock, "" when none
    driving_since: datetime | None
    watchers: list[str]
    last_driver: str  # who drove last, as the journal says

    def to_json(self) -> dict[str, Any]:
        return {"release_id": self.release_id,
                "driver": ({"label": self.driver, "since": self.driving_since.isoformat() if self.driving_since else None}
                           if self.driver else None),
                "watchers": self.watchers, "last_driver": self.last_driver or None}


@dataclass(frozen=True)
class ReleaseStatus:
    journal: Path | None
    state: DeploymentState
    records: list[Record]
    deployment: Deployment | None
    problems: list[str]
    open_in: str  # the live control room that has the journal open, "" when none
    crew: SharedCrew | None = None  # the shared store's release: who drives, who watches

    @property
    def phase(self) -> str | None:
        if self.deployment is not None:
            return self.state.current_phase(self.deployment)
        started = [r.data.get("phase_id") for r in self.records if r.kind == "phase_started"]
        return str(started[-1]) if started and self.state.in_progress else None

    @property
    def stage(self) -> str:
        """The release engine's state (controlroom.release.state.Stage), from the journal."""
        return stage_of(self.state).value

    @property
    def exit_code(self) -> int:
        state = self.state
        if state.started_at is None:
            return EXIT_NO_DEPLOYMENT
        if state.unfinished:  # a rollback after a success too: the pipeline waits for it
            return EXIT_IN_PROGRESS
        return EXIT_SUCCEEDED if state.outcome == "success" else EXIT_FAILED

    def to_json(self, now: datetime) -> dict[str, Any]:
        state = self.state
        elapsed = (((state.ended_at or now) - state.started_at).total_seconds() if state.started_at else None)
        return {
            "stage": self.stage,
            "exit_code": self.exit_code,
            "journal": str(self.journal) if self.journal else None,
            "version": state.version or None,
            "outcome": state.outcome or None,
            "phase": self.phase,
            "started_at": state.started_at.isoformat() if state.started_at else None,
            "ended_at": state.ended_at.isoformat() if state.ended_at else None,
            "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
            "target_s": self.deployment.target_minutes * 60 if self.deployment else None,
            "verdict": state.verdict or None,
            "rollback": ({"plan": state.rollback.plan_id, "verified": state.rollback.verified}
                         if state.rollback is not None else None),
            "open_in": self.open_in or None,
            **({"shared": self.crew.to_json()} if self.crew is not None else {}),
            "problems": self.problems,
            "last_events": [_event(record) for record in last_events(self.records)],
        }


def last_events(records: list[Record]) -> list[Record]:
    return [r for r in records if r.kind not in NOT_EVENTS][-LAST_EVENTS:]


def _event(record: Record) -> dict[str, Any]:
    data = record.data
    detail = next((str(data[key]) for key in ("step_id", "phase_id", "version", "outcome", "verdict", "item_id",
                                              "driver") if data.get(key)), "")
    return {"seq": record.seq, "at": record.ts, "kind": record.kind, "by": record.operator.get("user", ""),
            "host": record.operator.get("host", ""), "detail": detail}


def newest_journal(loaded: LoadedConfig | None, directory: Path | None = None) -> Path | None:
    """The newest journal in the journal directory; with a config, of its environment only."""
    directory = directory or journal_directory()
    if not directory.is_dir():
        return None
    candidates = sorted(directory.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)
    for path in candidates:
        if loaded is None:
            return path
        try:
            records, _, _ = read_records(path)
        except OSError:
            continue
        opened = next((r for r in records if r.kind == "session_opened"), None)
        if opened is not None and opened.data.get("environment") == loaded.environment.name:
            return path
    return None


def release_status(loaded: LoadedConfig | None, journal: Path | None = None) -> ReleaseStatus:
    if journal is None and loaded is not None and loaded.journal.shared:
        return asyncio.run(shared_status(loaded))
    path = journal or newest_journal(loaded)
    deployment = loaded.runbook.deployment if loaded is not None else None
    if path is None:
        return ReleaseStatus(None, DeploymentState(), [], deployment, [], "")
    try:
        records, problems, _ = read_records(path)
    except JournalReadError as error:  # a device, a fifo, too large
        raise StatusError(str(error)) from None
    except OSError as error:  # unreadable
        raise StatusError(f"{path}: cannot read: {error.strerror or error}") from None
    if not records and problems:
        raise StatusError(f"{path}: not a controlroom journal ({problems[0]})")
    holder = JournalClaim.holder_of(path)
    return ReleaseStatus(path, replay(records), records, deployment, [str(p) for p in problems],
                         str(holder) if holder else "")


async def shared_status(loaded: LoadedConfig) -> ReleaseStatus:
    """The environment's newest release in the shared store, with its driver and watchers."""
    from controlroom.release.shared_journal import read_shared_release

    deployment = loaded.runbook.deployment
    stored = await read_shared_release(loaded)
    if stored is None:
        return ReleaseStatus(None, DeploymentState(), [], deployment, [], "")
    problems = verify_chain(stored.records)
    driver = stored.driver
    last = next((r for r in reversed(stored.records) if r.kind == "driver_changed"), None)
    crew = SharedCrew(stored.release_id, driver.label if driver else "", driver.driving_since if driver else None,
                [m.label for m in stored.watchers], str(last.data.get("driver", "")) if last else "")
    return ReleaseStatus(None, replay(stored.records), stored.records, deployment, problems,
                         driver.label if driver else "", crew)


def render(status: ReleaseStatus, now: datetime) -> str:
    state = status.state
    lines = [f"release: {status.stage}" + (f" — {state.version}" if state.version else "")]
    if status.journal is not None:
        lines.append(f"journal: {status.journal}")
    if state.started_at is not None:
        end = state.ended_at or now
        target = f" / {format_duration(status.deployment.target_minutes * 60)}" if status.deployment else ""
        lines.append(f"clock:   {format_duration((end - state.started_at).total_seconds())}{target}"
                     f"  (started {state.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)")
    if status.phase:
        lines.append(f"phase:   {status.phase}")
    if state.verdict:
        lines.append(f"verdict: {state.verdict}")
    if state.rollback is not None:
        verified = {True: "verified", False: "not verified", None: "in progress"}[state.rollback.verified]
        lines.append(f"rollback: {state.rollback.plan_id} ({verified})")
    crew = status.crew
    if crew is not None:
        lines.append(f"shared:  release {crew.release_id}")
        if crew.driver:
            since = f" since {crew.driving_since.astimezone(UTC):%H:%M:%S} UTC" if crew.driving_since else ""
            lines.append(f"driver:  {crew.driver}{since}")
        else:
            lines.append("driver:  nobody" + (f" (last: {crew.last_driver}, gone)" if crew.last_driver else ""))
        lines.append(f"watchers: {len(crew.watchers)}" + (f" ({', '.join(crew.watchers)})" if crew.watchers else ""))
    elif status.open_in:
        lines.append(f"open in: {status.open_in}")
    for problem in status.problems:
        lines.append(f"journal problem: {problem}")
    if status.records:
        lines.append("last events:")
        for event in (_event(r) for r in last_events(status.records)):
            by = f"{event['by']}@{event['host']}" if event["host"] else event["by"]
            lines.append(f"  {event['seq']:>4} {event['at'][11:19]} {event['kind']:<20} {event['detail'][:40]} {by}")
    return "\n".join(lines)


async def watch(loaded: LoadedConfig | None, journal: Path | None, timeout_s: float | None,
                on_change: Any) -> ReleaseStatus:
    """Poll until the deployment has finished (or there is none and nothing appears before
    the timeout); `on_change(status)` for every new state."""
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    seen: int | None = None
    while True:
        status = await asyncio.to_thread(release_status, loaded, journal)
        if len(status.records) != seen:
            seen = len(status.records)
            on_change(status)
        if status.exit_code in (EXIT_SUCCEEDED, EXIT_FAILED):
            return status
        if deadline is not None and time.monotonic() >= deadline:
            return status
        await asyncio.sleep(WATCH_POLL_S)
