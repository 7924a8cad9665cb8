"""When the control room rings the terminal bell: what the operator must look up for, decided
here from the release's state, so the app only rings (and a watcher's window rings with the
driver's).

A ring is due when, since the last look, a step failed, a notification failed or was given
up, the verdict turned NO-GO, or the incident's escalation level rose (L1 → L2: the incident
opening at L1 is the operator's own doing, a rollback, and rings nothing)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controlroom.release.journal import Record


@dataclass(frozen=True)
class Alerts:
    failed_steps: int = 0  # step outcomes journaled as failed, deployment and rollback
    failed_notifications: int = 0  # notification ends that failed (given up included)
    no_go: bool = False
    escalation_level: int = 0  # 0: no incident open

    def rings_after(self, before: Alerts) -> list[str]:
        """Why the bell rings now, having looked at `before` last (empty: it does not)."""
        reasons = []
        if self.failed_steps > before.failed_steps:
            reasons.append("a step failed")
        if self.failed_notifications > before.failed_notifications:
            reasons.append("a notification failed")
        if self.no_go and not before.no_go:
            reasons.append("the verdict turned NO-GO")
        if self.escalation_level > before.escalation_level > 0:
            reasons.append(f"the escalation reached L{self.escalation_level}")
        return reasons


def failures(records: Iterable[Record]) -> tuple[int, int]:
    """(failed step outcomes, failed notifications) in the journal."""
    steps = notifications = 0
    for record in records:
        if record.kind == "step_outcome" and record.data.get("status") == "failed":
            steps += 1
        elif record.kind == "notification" and record.data.get("status") == "failed":
            notifications += 1
    return steps, notifications
