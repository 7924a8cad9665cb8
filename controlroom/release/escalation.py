"""The escalation ladder, driven by the incident's elapsed time.

The seed's ladder (the default runbook's [escalation]): L1 on-call engineer 0-15 min, L2 SRE
team lead 15-30, L3 engineering manager 30-60, L4 CTO / VP Engineering after 60. A level is
reached at its `from_minutes` exactly (15:00 is L2). Nothing here reads a clock: `now` is
passed in, and the incident's start comes from the journal, so a reopened control room shows
the same level and countdown as the one that was killed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from controlroom.release.state import format_duration
from controlroom.release.journal import Record
from controlroom.config.models import Escalation


@dataclass(frozen=True)
class EscalationStatus:
    level: int
    title: str
    contacts: tuple[str, ...]
    elapsed_s: float
    next_level: int | None
    next_title: str | None
    next_at: datetime | None
    seconds_to_next: float | None
    channels: tuple[str, ...] = ()

    def describe(self) -> str:
        """`L2 SRE team lead (0:12:30 into the incident) — L3 Engineering manager in 2:30`."""
        text = f"L{self.level} {self.title} ({format_duration(self.elapsed_s)} into the incident)"
        if self.next_level is not None and self.seconds_to_next is not None:
            text += f" — L{self.next_level} {self.next_title} in {format_duration(self.seconds_to_next)}"
        else:
            text += " — top of the ladder"
        return text


def escalation_status(escalation: Escalation, incident_started_at: datetime, now: datetime) -> EscalationStatus:
    """The level reached `now` for an incident that started at `incident_started_at`."""
    elapsed_s = max(0.0, (now - incident_started_at).total_seconds())
    levels = escalation.levels  # validated: strictly increasing from_minutes, first at 0
    index = 0
    for position, level in enumerate(levels):
        if elapsed_s >= level.from_minutes * 60:
            index = position
    current = levels[index]
    following = levels[index + 1] if index + 1 < len(levels) else None
    next_at = incident_started_at + timedelta(minutes=following.from_minutes) if following else None
    return EscalationStatus(
        level=current.level,
        title=current.title,
        contacts=tuple(current.contacts),
        elapsed_s=elapsed_s,
        next_level=following.level if following else None,
        next_title=following.title if following else None,
        next_at=next_at,
        seconds_to_next=following.from_minutes * 60 - elapsed_s if following else None,
        channels=tuple(escalation.channels),
    )


def incident_window(records: Sequence[Record]) -> tuple[datetime | None, datetime | None]:
    """When the journal's incident started and (if it did) ended.

    Started: the first of an `incident_opened` record, a NO-GO `verdict` after the deploy
    started, a failed `step_outcome` after the deploy started, a `rollback_started`, or the
    watch's alarm (`watch_breach`).
    Ended: the first `rollback_finished` with verified = true, or an `incident_resolved`
    record, after the start. Both None when there was no incident.
    """
    deploying = False
    started: datetime | None = None
    for record in records:
        kind, data = record.kind, record.data
        if kind == "deploy_started":
            deploying = True
        if started is None:
            if (
                kind in ("incident_opened", "rollback_started", "watch_breach")
                or (deploying and kind == "verdict" and data.get("verdict") == "NO-GO")
                or (deploying and kind == "step_outcome" and data.get("status") == "failed")
            ):
                started = record.at
            continue
        if kind == "incident_resolved" or (kind == "rollback_finished" and data.get("verified") is True):
            return started, record.at
    return started, None
