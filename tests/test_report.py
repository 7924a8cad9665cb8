"""The post-deployment report from real journals (Journal.open + appends, injected clock):
a clean GO, the fudo-outage rollback, and journals that were tampered with or torn."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controlroom.errors import ControlRoomError
from controlroom.release.journal import Journal, read_records
from controlroom.report.render import ReportError, latest_journal, render_report, report_command
from controlroom.config.loader import load_default_runbook

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
RUNBOOK = load_default_runbook()
MANUAL = ["secret-scanning", "vulnerabilities", "backups", "emergency-procedures", "on-call"]
ZOMBIE_EVIDENCE = "401 in 67 ms, 0 retries, no rotation, breakers unchanged"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def result(item_id: str, status: str = "pass", evidence: str = "ok", **extra: object) -> dict[str, object]:
    section = next(s.id for s, i in RUNBOOK.items() if i.id == item_id)
    title = next(i.title for _, i in RUNBOOK.items() if i.id == item_id)
    return {"id": item_id, "title": title, "section": section, "status": status, "evidence": evidence, "duration_ms": 12.5, **extra}


def healthy_results() -> list[dict[str, object]]:
    results = []
    for _, item in RUNBOOK.items():
        if item.id == "token-zombie":
            results.append(result(item.id, evidence=ZOMBIE_EVIDENCE))
        elif item.id == "mttr":
            results.append(result(item.id, evidence="89 min (< 120 min)", measured={"value": 89.0}))
        elif item.id == "circuit-breakers":
            results.append(result(item.id, evidence="none found", measured={"rows": 0}))
        elif item.kind == "manual":
            results.append(result(item.id, evidence="attested by ana"))
        else:
            results.append(result(item.id))
    return results


POS_HEALTH = {
    "providers": [
        {"provider": "fudo", "total": 400, "connected": 397, "disconnected": 3, "failed_over_4h": 0, "sync_success_percent": 99.1},
        {"provider": "maxirest", "total": 350, "connected": 348, "disconnected": 2, "failed_over_4h": 0, "sync_success_percent": 99.5},
        {"provider": "bistrsoft", "total": 250, "connected": 247, "disconnected": 3, "failed_over_4h": 0, "sync_success_percent": 98.9},
    ],
    "health_percent": 99.2,
}


def open_journal(path: Path, clock: Clock) -> Journal:
    return Journal.open(path, clock=clock, operator={"user": "ana", "ssh_client": "10.0.0.7"})


def pre_deploy(journal: Journal, clock: Clock) -> None:
    journal.append("session_opened", {"environment": "production", "runbook": "default (built in)", "config": "/etc/controlroom.toml"})
    clock.advance(20)
    journal.append("check", {"results": healthy_results()})
    for item_id in MANUAL:
        clock.advance(5)
        journal.append("attested", {"item_id": item_id, "outcome": "pass", "note": ""})
    journal.append("verdict", {"verdict": "GO", "reasons": ["GO: every required check passed"], "health_percent": 100.0})
    journal.append("pos_health", POS_HEALTH)
    clock.advance(10)
    journal.append("deploy_started", {"version": "v2.15.0", "git_sha": "3f9c2a1", "verdict": "GO", "override_reason": ""})


def run_phase(journal: Journal, clock: Clock, phase_id: str, seconds: float) -> None:
    phase = next(p for p in RUNBOOK.deployment.phases if p.id == phase_id)
    journal.append("phase_started", {"phase_id": phase_id})
    for step in phase.steps:
        journal.append("step_intent", {"step_id": step.id, "phase_id": phase_id, "action": step.action.kind, "detail": ""})
        clock.advance(seconds / len(phase.steps))
        journal.append("step_outcome", {"step_id": step.id, "phase_id": phase_id, "status": "done", "summary": "ok", "reason": ""})
    journal.append("phase_completed", {"phase_id": phase_id})


def clean_go(path: Path) -> Path:
    clock = Clock()
    journal = open_journal(path, clock)
    pre_deploy(journal, clock)
    run_phase(journal, clock, "pre", 240)
    run_phase(journal, clock, "deploy", 270)
    run_phase(journal, clock, "post", 200)
    journal.append("check", {"results": healthy_results()})
    journal.append("pos_health", POS_HEALTH)
    journal.append("deploy_finished", {"outcome": "completed"})
    return path


def fudo_rollback(path: Path) -> Path:
    clock = Clock()
    journal = open_journal(path, clock)
    pre_deploy(journal, clock)
    run_phase(journal, clock, "pre", 200)
    journal.append("phase_started", {"phase_id": "deploy"})
    journal.append("step_intent", {"step_id": "deploy-code", "phase_id": "deploy", "action": "deploy", "detail": "v2.15.0"})
    clock.advance(60)
    journal.append("step_outcome", {"step_id": "deploy-code", "phase_id": "deploy", "status": "done", "summary": "exit 0", "reason": ""})
    journal.append("step_intent", {"step_id": "smoke-tests", "phase_id": "deploy", "action": "probe", "detail": ""})
    clock.advance(5)
    fudo = result("fudo", "fail", "HTTP 503 (expected 200): {\"provider\":\"fudo\",\"status\":\"failing\"}")
    journal.append("check", {"results": [fudo, result("maxirest"), result("bistrsoft"), result("supabase-rest")]})
    journal.append("step_outcome", {"step_id": "smoke-tests", "phase_id": "deploy", "status": "failed", "summary": "fudo: HTTP 503", "reason": ""})
    journal.append("verdict", {"verdict": "NO-GO", "reasons": ["NO-GO: POS integration down: Fudo — fudo: HTTP 503 (expected 200)"], "health_percent": 100.0})
    clock.advance(20)
    journal.append("rollback_started", {"plan_id": "emergency", "reason": "Fudo failing in phase 2 (HTTP 503)", "provider": "fudo", "version": "v2.14.3"})
    for step_id, summary in (
        ("switch-version", "deployed v2.14.3 (exit 0)"),
        ("disable-provider", "7 fudo locations disconnected"),
        ("notify-incident-team", "slack sent, pagerduty sent"),
    ):
        journal.append("step_intent", {"step_id": step_id, "plan_id": "emergency", "action": "x", "detail": ""})
        clock.advance(30)
        if step_id == "notify-incident-team":
            for channel in ("slack", "pagerduty"):
                journal.append("notification", {"channel": channel, "event": "trigger", "status": "sent", "attempts": 1, "http_status": 200, "error": "", "summary": "@channel POS production issue - rolling back to v2.14.3"})
        journal.append("step_outcome", {"step_id": step_id, "plan_id": "emergency", "status": "done", "summary": summary, "reason": ""})
    journal.append("check", {"results": [result("fudo", "pass", "HTTP 200 in 40 ms"), result("circuit-breakers", evidence="none found")]})
    journal.append("verdict", {"verdict": "GO", "reasons": [], "health_percent": 100.0})
    clock.advance(10)
    journal.append("rollback_finished", {"plan_id": "emergency", "verified": True})
    for channel in ("slack", "pagerduty"):
        journal.append("notification", {"channel": channel, "event": "resolve", "status": "sent", "attempts": 2 if channel == "slack" else 1, "http_status": 202, "error": "", "summary": "Rollback to v2.14.3 verified"})
    journal.append("deploy_finished", {"outcome": "rolled_back"})
    return path


def test_a_clean_go_deployment_matches_the_template(tmp_path: Path) -> None:
    path = clean_go(tmp_path / "go.jsonl")
    records, problems, _ = read_records(path)
    text = render_report(records, RUNBOOK)
    assert problems == []
    assert text.startswith("# Deployment Report - 2026-11-29\n")
    lines = text.splitlines()
    assert "## Summary" in lines and "## Metrics" in lines and "## Issues Encountered" in lines
    assert "- **Deployment Time**: 2026-11-29 03:00:55 UTC - 03:12:45 UTC (11:50 of the 15 min target ✅)" in lines
    assert "  - Pre-Deployment: 4:00 of 5 min ✅" in lines
    assert "- **Version**: v2.15.0 (git 3f9c2a1)" in lines
    assert "- **Go/No-Go Decision**: GO ✅" in lines
    assert "- **Rollback Required**: No ✅" in lines
    assert "- **Outcome**: completed ✅" in lines
    assert f"- **Token Zombie Test**: ✅ {ZOMBIE_EVIDENCE}" in lines
    assert "Token Zombie Test**: ✅ 401 in 67 ms, 0 retries" in text
    assert any(line.startswith("- **POS Integration Health**: 99.2% ✅ (connected locations, 992 of 1000") for line in lines)
    assert "- **MTTR**: 89 minutes ✅" in lines
    assert "- **Circuit Breakers**: 0 open ✅" in lines
    issues = lines[lines.index("## Issues Encountered") + 1 :]
    assert issues[0] == "- None"
    actions = lines[lines.index("## Post-Deployment Actions") + 1 :]
    assert actions == ["- [ ] Monitor for 24 hours", "- [ ] Review performance metrics", "- [ ] Update documentation if needed"]
    assert "Rollback:" not in text and "Journal integrity" not in text
    assert "_Environment: **production**_" in lines


def test_the_fudo_outage_rollback_says_why_and_that_it_was_verified(tmp_path: Path) -> None:
    path = fudo_rollback(tmp_path / "fudo.jsonl")
    text = report_command(path, None)
    lines = text.splitlines()
    rollback_line = next(line for line in lines if line.startswith("- **Rollback Required**"))
    assert rollback_line.startswith("- **Rollback Required**: Yes ⚠️ — Emergency Rollback at 03:05:40 because Fudo failing in phase 2 (HTTP 503)")
    assert "verified ✅ at 03:07:20 (1:40 of the 5 min target ✅)" in rollback_line
    assert "- **Go/No-Go Decision**: GO ✅" in lines  # the decision was GO; NO-GO came later
    assert "- **Outcome**: rolled back ⚠️" in lines
    assert "## Rollback: Emergency Rollback" in lines
    assert "- **Why**: Fudo failing in phase 2 (HTTP 503)" in lines
    assert "- **Acting on**: provider fudo, back to version v2.14.3" in lines
    assert any("Disable the failing provider's integrations: done — 7 fudo locations disconnected" in line for line in lines)
    assert "- [ ] Re-enable the fudo integrations the rollback disabled, once the cause is fixed" in lines
    notifications = lines[lines.index("## Notifications") + 1 : lines.index("## Issues Encountered")]
    sent = [line for line in notifications if line.startswith("- ✅")]
    assert len(sent) == 4 and any("pagerduty resolve: sent (1 attempt)" in line for line in sent)
    assert any("slack trigger: sent (1 attempt) — “@channel POS production issue - rolling back to v2.14.3”" in line for line in sent)
    issues = "\n".join(lines[lines.index("## Issues Encountered") + 1 : lines.index("## Post-Deployment Actions")])
    assert "❌ 03:05:20 step Run smoke tests (phase deploy) failed: fudo: HTTP 503" in issues
    assert "check Fudo Integration: connectivity verified (`fudo`): fail — HTTP 503" in issues
    assert "verdict changed to NO-GO during the deployment: NO-GO: POS integration down: Fudo" in issues
    assert "- None" not in issues
    # the deployment phase was never completed
    assert "  - Deployment: started 03:04:15, not completed ⚠️" in lines
    # metrics come from the latest results: fudo passes again, breakers checked after the rollback
    assert "- **Circuit Breakers**: 0 open ✅" in lines


def test_failed_notifications_overrides_and_failed_attestations_are_issues(tmp_path: Path) -> None:
    clock = Clock()
    journal = open_journal(tmp_path / "j.jsonl", clock)
    journal.append("verdict", {"verdict": "DELAYED", "reasons": ["DELAYED: Minor degradation: Fudo rotation success below 98 % — fudo-rotation: 97 %"], "health_percent": 96.0})
    journal.append("attested", {"item_id": "backups", "outcome": "fail", "note": "restore drill took 45 min\x1b[31m"})
    journal.append("deploy_started", {"version": "v2.15.0", "git_sha": "", "verdict": "DELAYED", "override_reason": "hotfix for the card outage"})
    journal.append("rollback_started", {"plan_id": "emergency", "reason": "fudo"})
    journal.append("notification", {"channel": "pagerduty", "event": "trigger", "status": "failed", "attempts": 4, "http_status": 503, "error": "HTTP 503: Injected fault", "summary": "rolling back"})
    text = render_report(journal.records, RUNBOOK, environment_name="staging")
    assert "- **Go/No-Go Decision**: DELAYED ⚠️ — overridden by ana: hotfix for the card outage" in text
    assert "  - DELAYED: Minor degradation: Fudo rotation success below 98 %" in text
    assert "- **Version**: v2.15.0\n" in text
    assert "- **Rollback Required**: Yes ❌ — Emergency Rollback at 00:00:00" not in text  # the real time is shown
    assert "not finished ❌" in text
    assert "❌ Notification pagerduty trigger at 03:00:00 failed (4 attempts): HTTP 503: Injected fault" in text
    assert "Backup Systems: RTO < 30 min, RPO < 5 min verified attested as fail by ana: restore drill took 45 min" in text
    assert "\x1b" not in text
    assert "has no `deploy_finished` record" in text
    assert "- **Token Zombie Test**: ⚠️ not run" in text and "- **MTTR**: not measured ⚠️" in text
    assert "96% ✅ (share of the health checks passing in the verdict" in text


def test_a_tampered_journal_opens_the_report_with_a_warning(tmp_path: Path) -> None:
    path = clean_go(tmp_path / "tampered.jsonl")
    lines = path.read_bytes().split(b"\n")
    index = next(i for i, line in enumerate(lines) if b'"kind":"verdict"' in line)
    lines[index] = lines[index].replace(b'"GO: every required check passed"', b'"GO: all good"')
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    out = tmp_path / "report.md"
    text = report_command(path, out)
    assert out.read_text(encoding="utf-8") == text
    assert path.read_bytes() == before  # the report never writes to the journal
    head = text.split("## Summary")[0]
    assert "> ⚠️ **Journal integrity warning**" in head
    assert f"> - line {index + 1}: tampered: record {index + 1} (verdict) was edited" in head
    assert f"❌ Journal integrity: line {index + 1}: tampered" in text
    assert "- **Rollback Required**: No ✅" in text  # the rest is still reported


def test_a_torn_journal_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = clean_go(tmp_path / "torn.jsonl")
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 999, "kind": "step_int')
    before = path.read_bytes()
    text = report_command(path, None)
    assert path.read_bytes() == before
    assert "torn tail: the last record was cut short" in text.split("## Summary")[0]

    # Once the control room reopened it, the torn line is acknowledged: an issue, not a warning.
    Journal.open(path, clock=Clock(), operator={"user": "ana"})
    text = report_command(path, None)
    assert "Journal integrity warning" not in text
    assert "was cut short (the control room was killed while writing it)" in text


def test_bad_journal_paths_are_errors_with_exit_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for path, message in ((tmp_path / "nope.jsonl", "no such journal"), (tmp_path, "is a directory"), (empty, "holds no journal records")):
        with pytest.raises(ReportError, match=message) as caught:
            report_command(path, None)
        assert isinstance(caught.value, ControlRoomError) and caught.value.exit_code == 2
    monkeypatch.setenv("CONTROLROOM_JOURNAL_DIR", str(tmp_path / "journals"))  # what an operator sets
    with pytest.raises(ReportError, match="no journal found"):
        report_command(None, None)


def test_latest_journal_is_the_newest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "journals"
    assert latest_journal(directory) is None
    old = clean_go(directory / "2026-11-28.jsonl")
    new = fudo_rollback(directory / "2026-11-29.jsonl")
    (directory / "notes.txt").write_text("x")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert latest_journal(directory) == new
    monkeypatch.setenv("CONTROLROOM_JOURNAL_DIR", str(directory))
    assert "Emergency Rollback" in report_command(None, None)
