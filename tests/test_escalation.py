"""The escalation ladder: the seed's L1-L4 by elapsed minutes, with an injected `now`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlroom.release.escalation import escalation_status, incident_window
from controlroom.release.journal import Journal
from controlroom.config.loader import load_default_runbook

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
ESCALATION = load_default_runbook().escalation

# minutes into the incident -> (level, title, next level, seconds to the next level)
LADDER = [
    (0, 1, "On-call engineer", 2, 15 * 60),
    (14 + 59 / 60, 1, "On-call engineer", 2, 1),
    (15, 2, "SRE team lead", 3, 15 * 60),
    (29, 2, "SRE team lead", 3, 60),
    (30, 3, "Engineering manager", 4, 30 * 60),
    (59, 3, "Engineering manager", 4, 60),
    (60, 4, "CTO / VP Engineering", None, None),
    (120, 4, "CTO / VP Engineering", None, None),
]


@pytest.mark.parametrize(("minutes", "level", "title", "next_level", "to_next"), LADDER)
def test_the_seed_ladder(minutes: float, level: int, title: str, next_level: int | None, to_next: float | None) -> None:
    now = T0 + timedelta(minutes=minutes)
    status = escalation_status(ESCALATION, T0, now)
    assert (status.level, status.title, status.next_level) == (level, title, next_level)
    assert status.elapsed_s == pytest.approx(minutes * 60)
    if to_next is None:
        assert status.next_at is None and status.seconds_to_next is None
        assert "top of the ladder" in status.describe()
    else:
        assert status.seconds_to_next == pytest.approx(to_next)
        assert status.next_at == T0 + timedelta(minutes=ESCALATION.levels[next_level - 1].from_minutes)
    assert status.contacts  # who to call is always named
    assert status.channels == tuple(ESCALATION.channels)


def test_contacts_and_description() -> None:
    status = escalation_status(ESCALATION, T0, T0 + timedelta(minutes=20))
    assert any("@sre-lead" in contact for contact in status.contacts)
    assert status.describe() == "L2 SRE team lead (20:00 into the incident) — L3 Engineering manager in 10:00"


def test_a_clock_behind_the_incident_counts_as_zero() -> None:
    status = escalation_status(ESCALATION, T0, T0 - timedelta(seconds=30))
    assert status.level == 1 and status.elapsed_s == 0 and status.seconds_to_next == 15 * 60


def test_incident_window_from_the_journal(tmp_path) -> None:
    clock = iter(T0 + timedelta(minutes=m) for m in range(100))
    journal = Journal.open(tmp_path / "j.jsonl", clock=lambda: next(clock), operator={"user": "ana"})
    journal.append("verdict", {"verdict": "NO-GO", "reasons": []})  # before the deploy: not an incident
    assert incident_window(journal.records) == (None, None)
    journal.append("deploy_started", {"version": "v2"})
    journal.append("step_outcome", {"step_id": "smoke-tests", "phase_id": "deploy", "status": "failed"})  # 03:02
    journal.append("rollback_started", {"plan_id": "emergency"})
    journal.append("rollback_finished", {"plan_id": "emergency", "verified": True})  # 03:04
    assert incident_window(journal.records) == (T0 + timedelta(minutes=2), T0 + timedelta(minutes=4))
