"""The post-deployment report from journals the engine itself wrote: the release engine drives real
releases against the sandbox (injected clock) — a clean GO finished as a success, the
fudo-outage emergency rollback, an overridden release with a failing attestation and a failed
notification — and each journal's report is checked against the template and against
Postgres. Only the tampered, torn and malformed journals are made by hand (from an engine
journal, or from nothing)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from controlroom.config.loader import LoadedConfig, load_config
from controlroom.errors import ControlRoomError
from controlroom.live.sources import kpi_colour
from controlroom.release.engine import ReleaseEngine
from controlroom.release.journal import Journal, read_records
from controlroom.release.steps import StepOutcome
from controlroom.report.render import ReportError, latest_journal, report_command
from controlroom.sandbox.runner import Sandbox
from pg_support import fleet_in_postgres, fleet_line_parts

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
OPERATOR = {"user": "ana", "ssh_client": "10.0.0.7"}
IMPACT_TITLE = "Customer Impact (locations affected)"
ICONS = {"green": "✅", "amber": "⚠️", "red": "❌"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclasses.dataclass(frozen=True)
class Release:
    """A release the engine drove, and what Postgres said when its report was due."""

    session: ReleaseEngine
    fleet: dict[str, tuple[int, int, int]]  # provider -> connected, disconnected, total
    impact: float  # the customer-impact KPI's own query, run on Postgres
    mttr: float  # the MTTR checklist item's query, run on Postgres

    @property
    def path(self) -> Path:
        return self.session.journal.path


@pytest.fixture(scope="module")
async def healthy() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


@pytest.fixture(scope="module")
async def outage() -> AsyncIterator[Sandbox]:
    async with Sandbox("fudo-outage", locations=40, simulate=False) as running:
        yield running


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=ana", "-c", "user.email=ana@example.invalid", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def tagged_repository(path: Path, tag: str) -> str:
    """A real git repository whose second commit carries the annotated tag `tag`; that
    commit's SHA (not the tag object's)."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for text in ("first", "second"):
        (path / "app.txt").write_text(text)
        git(path, "add", "app.txt")
        git(path, "commit", "-q", "-m", text)
    git(path, "tag", "-a", tag, "-m", f"release {tag}")
    (path / "app.txt").write_text("after the tag")
    git(path, "commit", "-q", "-am", "after the tag")  # HEAD is not the tagged commit
    return git(path, "rev-parse", f"{tag}^{{commit}}")


def in_repository(loaded: LoadedConfig, repository: Path) -> LoadedConfig:
    """`loaded` with the runbook's rollback.previous_version.repository set to `repository`."""
    rollback = loaded.runbook.rollback
    previous = rollback.previous_version.model_copy(update={"repository": str(repository)})
    runbook = loaded.runbook.model_copy(update={"rollback": rollback.model_copy(update={"previous_version": previous})})
    return dataclasses.replace(loaded, runbook=runbook)


async def checked_and_attested(loaded: LoadedConfig, journal_dir: Path, clock: Clock, *, fail: dict[str, str] | None = None) -> ReleaseEngine:
    """A write session that ran the checklist and attested every manual item (those in
    `fail` as NOT met, with that reason), five seconds apart."""
    session = ReleaseEngine.open(loaded, write=True, journal_dir=journal_dir, clock=clock, operator=OPERATOR)
    await session.run_checks()
    clock.advance(5)  # reading the results first (on-call, probed, is not attested)
    for item_id in session.attestable():
        clock.advance(5)
        if fail and item_id in fail:
            session.attest_failing(item_id, fail[item_id])
        else:
            session.attest(item_id)
    return session


async def run_phases(session: ReleaseEngine, clock: Clock) -> StepOutcome | None:
    """Every step of every phase, a minute each (a manual step is marked done), the next
    phase ten seconds after the last step; stops at the first failed step and returns it."""
    for phase in session.deployment.phases:
        for step in phase.steps:
            clock.advance(60)
            if step.action.kind == "manual":
                session.mark_done(step.id, "checked by hand")
                continue
            outcome = await session.run_step(step.id)
            assert outcome.status in ("done", "failed"), (step.id, outcome.summary)
            if outcome.status == "failed":
                return outcome
        clock.advance(10)
        session.next_phase()
    return None


async def postgres_facts(sandbox: Sandbox, loaded: LoadedConfig) -> tuple[dict[str, tuple[int, int, int]], float, float]:
    kpi = loaded.runbook.customer_impact_kpi()
    assert kpi is not None
    mttr_item = next(item for _, item in loaded.runbook.items() if item.id == "mttr")
    conn = await asyncpg.connect(sandbox.dsn)
    try:
        impact = float(await conn.fetchval(kpi.source.query))
        mttr = float(await conn.fetchval(mttr_item.query))
    finally:
        await conn.close()
    return await fleet_in_postgres(sandbox.dsn), impact, mttr


def report_lines(release: Release) -> list[str]:
    return report_command(release.path, None).splitlines()


def line(lines: list[str], prefix: str) -> str:
    found = [text for text in lines if text.startswith(prefix)]
    assert len(found) == 1, (prefix, lines)
    return found[0]


def section(lines: list[str], title: str) -> list[str]:
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def pos_health_line(release: Release, percent: str, at: str) -> str:
    """The POS Integration Health line the report must show, from Postgres's own numbers."""
    connected = sum(c for c, _, _ in release.fleet.values())
    total = sum(t for _, _, t in release.fleet.values())
    kpi = release.session.loaded.runbook.customer_impact_kpi()
    icon = ICONS[kpi_colour(kpi, release.impact)]
    return (f"- **POS Integration Health**: {percent} ({connected} of {total} locations connected, at {at}) — "
            + " · ".join(fleet_line_parts(release.fleet))
            + f" · customer impact: {IMPACT_TITLE} {release.impact:g}% {icon} (threshold < 1%)")


# -- the releases, driven once per module -----------------------------------------------------


@pytest.fixture(scope="module")
async def go_release(healthy: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> tuple[Release, str]:
    """v2.15.0, tagged in a real git repository, released GO through all three phases and
    finished as a success; the fleet measured when the report is due."""
    repository = tmp_path_factory.mktemp("repo") / "app"
    sha = tagged_repository(repository, "v2.15.0")
    loaded = in_repository(load_config(healthy.config_path), repository)
    clock = Clock()
    session = await checked_and_attested(loaded, tmp_path_factory.mktemp("go"), clock)
    assert session.verdict_name == "GO", session.verdict.reasons
    clock.advance(10)
    await session.start_deploy("v2.15.0")
    assert await run_phases(session, clock) is None
    await session.measure_pos_health()
    session.finish_deploy()
    fleet, impact, mttr = await postgres_facts(healthy, loaded)
    return Release(session, fleet, impact, mttr), sha


@pytest.fixture(scope="module")
async def fudo_release(outage: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """fudo-outage: GO, deployed, the smoke tests fail on Fudo in phase 2, the emergency
    rollback runs every step (disabling Fudo) and is verified."""
    loaded = load_config(outage.config_path)
    clock = Clock()
    session = await checked_and_attested(loaded, tmp_path_factory.mktemp("fudo"), clock)
    assert session.verdict_name == "GO", session.verdict.reasons
    clock.advance(10)
    await session.start_deploy("v2.15.0")
    failed = await run_phases(session, clock)
    assert failed is not None and session.state.steps["smoke-tests"].status == "failed", failed
    clock.advance(20)
    await session.start_rollback("emergency", session.suggested_reason(), provider="fudo")
    for step_id in ("switch-version", "disable-provider", "notify-incident-team"):
        clock.advance(30)
        outcome = await session.run_rollback_step(step_id)
        assert outcome.status == "done", (step_id, outcome.summary)
    clock.advance(10)
    verified, _, _ = await session.verify_rollback()  # journals the fleet as the rollback left it
    assert verified
    fleet, impact, mttr = await postgres_facts(outage, loaded)
    return Release(session, fleet, impact, mttr)


# -- the reports -------------------------------------------------------------------------------


def test_a_clean_go_release_matches_the_template(go_release: tuple[Release, str]) -> None:
    release, sha = go_release
    text = report_command(release.path, None)
    assert read_records(release.path)[1] == []  # the engine's journal verifies
    assert text.startswith("# Deployment Report - 2026-11-29\n")
    lines = text.splitlines()
    assert f"_Environment: **sandbox (healthy)**; journal `{release.path.name}`_" in lines
    assert section(lines, "## Summary") == [
        # checks at 03:00:00, four attestations 5 s apart from 03:00:10, started 10 s later; 10 steps, a minute each
        "- **Deployment Time**: 2026-11-29 03:00:35 UTC - 03:11:05 UTC (10:30 of the 15 min target ✅)",
        "  - Pre-Deployment: 3:10 of 5 min ✅",
        "  - Deployment: 4:10 of 5 min ✅",
        "  - Post-Deployment: 3:10 of 5 min ✅",
        f"- **Version**: v2.15.0 (git {sha})",  # the tagged commit, not HEAD, not the tag object
        "- **Go/No-Go Decision**: GO ✅",
        "- **Rollback Required**: No ✅",
        "- **Outcome**: success ✅",
        "",
    ]
    metrics = section(lines, "## Metrics")
    assert re.fullmatch(r"- \*\*Token Zombie Test\*\*: ✅ 401 in \d+ ms, 0 retries, no rotation, breakers unchanged",
                        metrics[0]), metrics[0]
    assert metrics[1] == pos_health_line(release, "100% ✅", "03:11:05")
    assert metrics[2] == f"- **MTTR**: {release.mttr:g} minutes ✅"
    assert metrics[3] == "- **Circuit Breakers**: 0 open ✅"
    assert section(lines, "## Issues Encountered") == ["- None", ""]
    assert section(lines, "## Post-Deployment Actions") == [
        "- [ ] Monitor for 24 hours", "- [ ] Review performance metrics", "- [ ] Update documentation if needed"]
    assert "Rollback:" not in text and "Journal integrity" not in text and "## Notifications" not in text


def test_the_fudo_outage_rollback_says_why_and_that_it_was_verified(fudo_release: Release) -> None:
    lines = report_lines(fudo_release)
    fudo_connected, fudo_disconnected, fudo_total = fudo_release.fleet["fudo"]
    assert (fudo_connected, fudo_disconnected) == (0, fudo_total) and fudo_total > 0  # the rollback disabled Fudo
    required = line(lines, "- **Rollback Required**")
    assert required.startswith("- **Rollback Required**: Yes ⚠️ — Emergency Rollback at 03:07:05 because "
                               "Run smoke tests failed: fudo fail: 503 in "), required
    assert required.endswith("; verified ✅ at 03:08:45 (1:40 of the 5 min target ✅)"), required
    assert "- **Go/No-Go Decision**: GO ✅" in lines  # the decision was GO; NO-GO came later
    assert "- **Version**: v2.15.0" in lines  # the sandbox's repository is no git repository: no SHA
    assert "- **Outcome**: rolled back ⚠️" in lines
    assert "  - Deployment: 5:00 of 5 min ✅" in lines  # verifying the rollback completed the phase
    assert not any(text.startswith("  - Post-Deployment") for text in lines)  # never reached
    # The fleet as the verified rollback left it, against Postgres: Fudo all disconnected, red impact.
    connected = sum(c for c, _, _ in fudo_release.fleet.values())
    total = sum(t for _, _, t in fudo_release.fleet.values())
    share = f"{100 * connected / total:.1f}".removesuffix(".0")
    assert line(lines, "- **POS Integration Health**") == pos_health_line(fudo_release, f"{share}% ❌", "03:08:45")
    assert f"fudo 0/{fudo_total} connected ({fudo_total} disconnected)" in line(lines, "- **POS Integration Health**")

    rollback = section(lines, "## Rollback: Emergency Rollback")
    assert rollback[0].startswith("- **Why**: Run smoke tests failed: fudo fail: 503")
    assert rollback[1:4] == [
        "- **Acting on**: provider fudo, back to version v2.14.0",
        "- **Started**: 2026-11-29 03:07:05 UTC (target 5 min)",
        "- **Verified**: yes ✅, at 03:08:45, 1:40 after it started",
    ]
    assert rollback[5].startswith("  - ✅ 03:07:35 Immediate traffic switch to the previous stable version: done — switch to v2.14.0")
    assert rollback[6] == (f"  - ✅ 03:08:05 Disable the failing provider's integrations: done — "
                           f"UPDATE {fudo_total} ({fudo_total} row(s) touched, {fudo_total} counted first)")
    assert rollback[7] == ("  - ✅ 03:08:35 Notify the incident response team: done — "
                           "slack trigger: sent (1 attempt); pagerduty trigger: sent (1 attempt)")
    assert "- [ ] Re-enable the fudo integrations the rollback disabled, once the cause is fixed" in lines

    notifications = section(lines, "## Notifications")[:-1]
    # Slack, PagerDuty and the status page at the start; the notify step (Slack, PagerDuty); the
    # status page identified, monitoring; the resolve on all three.
    assert len(notifications) == 10 and all(text.startswith("- ✅") for text in notifications), notifications
    assert [text.split(" ")[3:5] for text in notifications if "statuspage" in text] == [
        ["statuspage", "trigger:"], ["statuspage", "acknowledge:"], ["statuspage", "monitoring:"], ["statuspage", "resolve:"]]
    assert "- ✅ 03:07:05 pagerduty trigger: sent (1 attempt) — “sandbox (fudo-outage): rollback to v2.14.0 started " \
           "(Emergency Rollback)”" in notifications
    assert "- ✅ 03:08:35 slack trigger: sent (1 attempt) — “@channel POS production issue - rolling back to v2.14.0”" \
           in notifications
    assert "- ✅ 03:08:45 slack resolve: sent (1 attempt) — “Rollback to v2.14.0 verified on sandbox (fudo-outage)”" \
           in notifications
    issues = section(lines, "## Issues Encountered")
    assert issues[0].startswith("- ❌ 03:06:45 step Run smoke tests (phase deploy) failed: fudo fail: 503 in ")
    # what the smoke test measured is journaled as a check: the failing check, then the verdict
    assert issues[1].startswith("- ❌ 03:06:45 check Fudo Integration: connectivity verified (`fudo`): fail — 503 in ")
    assert issues[2].startswith("- ❌ 03:06:45 verdict changed to NO-GO during the deployment: "
                                "NO-GO: POS integration down: Fudo — fudo: 503 in ")
    assert issues[3:] == [""]
    # metrics come from the latest results: breakers checked again when the rollback was verified
    assert "- **Circuit Breakers**: 0 open ✅" in lines


async def test_an_overridden_release_with_a_failed_notification_and_a_failing_attestation(
        healthy: Sandbox, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {healthy.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=healthy.base_url, headers=headers, timeout=5) as admin:
        (await admin.delete("/_sandbox/sinks")).raise_for_status()
        # PagerDuty refuses the incident once with a 400, which is final: one attempt, failed.
        fault = {"sink": "pagerduty", "status": 400, "count": 1, "retry_after": None}
        (await admin.post("/_sandbox/sinks/faults", json=fault)).raise_for_status()
    clock = Clock()
    session = await checked_and_attested(load_config(healthy.config_path), tmp_path, clock,
                                         fail={"backups": "restore drill took 45 min\x1b[31m"})
    assert session.verdict_name == "DELAYED", session.verdict.reasons
    clock.advance(10)
    await session.start_deploy("v2.15.1", override_reason="hotfix for the card outage")
    clock.advance(60)
    # What the operator types is text: the report escapes it for Markdown, never renders it.
    await session.start_rollback("emergency", "fudo answers *slowly* [runbook](http://evil.example) <img src=x>",
                                 provider="fudo", version="v2.14.0")

    text = report_command(session.journal.path, None)
    lines = text.splitlines()
    assert "\x1b" not in text
    decision = section(lines, "## Summary")
    assert "- **Go/No-Go Decision**: DELAYED ⚠️ — overridden by ana: hotfix for the card outage" in decision
    assert any(text.startswith("  - DELAYED: ") and "Backup" in text for text in decision), decision
    assert "- **Version**: v2.15.1" in decision
    assert line(lines, "- **Rollback Required**") == (
        "- **Rollback Required**: Yes ❌ — Emergency Rollback at 03:01:35 because fudo answers \\*slowly\\* "
        "\\[runbook\\](http://evil.example) \\<img src=x>; not finished ❌")
    assert not any(text.startswith("- **Outcome**") for text in lines)
    # No fleet snapshot was journaled: the verdict's health share, said to be that.
    assert line(lines, "- **POS Integration Health**").endswith(
        "(share of the health checks passing in the verdict at 03:00:35; no POS fleet snapshot was journaled)")

    notifications = section(lines, "## Notifications")[:-1]  # the channels at once: any order
    assert len(notifications) == 3, notifications
    assert ("- ✅ 03:01:35 slack trigger: sent (1 attempt) — "
            "“sandbox (healthy): rollback to v2.14.0 started (Emergency Rollback)”") in notifications
    assert any(text.startswith("- ❌ 03:01:35 pagerduty trigger: failed (1 attempt) — HTTP 400") for text in notifications)
    issues = "\n".join(section(lines, "## Issues Encountered"))
    assert "❌ 03:00:20 Backup Systems: RTO < 30 min, RPO < 5 min verified attested as fail by ana: " \
           "restore drill took 45 min" in issues
    assert "check Backup Systems: RTO < 30 min, RPO < 5 min verified (`backups`): fail — attested NOT met by ana " \
           "(from 10.0.0.7)" in issues
    assert "❌ Notification pagerduty trigger at 03:01:35 failed (1 attempt): HTTP 400" in issues
    assert "The Emergency Rollback started at 03:01:35 was never finished" in issues
    assert "has no `deploy_finished` record" in issues


async def test_a_version_whose_tag_does_not_resolve_carries_no_sha(healthy: Sandbox, tmp_path: Path) -> None:
    """Only the deployed tag's commit is the version's SHA: an untagged version gets none
    (not the checked-out HEAD's)."""
    repository = tmp_path / "app"
    tagged_repository(repository, "v2.15.0")
    session = ReleaseEngine.open(in_repository(load_config(healthy.config_path), repository), write=True,
                           journal_dir=tmp_path, operator=OPERATOR)
    await session.start_deploy("v2.15.9", override_reason="an untagged build")
    started = next(r for r in session.journal.records if r.kind == "deploy_started")
    assert started.data["git_sha"] == ""
    assert "- **Version**: v2.15.9\n" in report_command(session.journal.path, None)


async def test_a_dead_customer_impact_source_is_not_measured_and_the_fleet_still_is(
        healthy: Sandbox, tmp_path: Path) -> None:
    loaded = load_config(healthy.config_path)
    slow = {"timeout_s": 0.2, "source": {"kind": "sql", "query": "SELECT pg_sleep(2)"}}
    kpis = [kpi.model_validate({**kpi.model_dump(), **slow}) if kpi.id == "locations-affected" else kpi
            for kpi in loaded.runbook.kpis]
    loaded = dataclasses.replace(loaded, runbook=loaded.runbook.model_copy(update={"kpis": kpis}))
    session = ReleaseEngine.open(loaded, write=False, journal_dir=tmp_path, clock=Clock(), operator=OPERATOR)
    await session.measure_pos_health()  # an observation: journaled read-only too
    record = next(r for r in session.journal.records if r.kind == "pos_health")
    assert record.data["customer_impact"]["value"] is None
    health = line(report_command(session.journal.path, None).splitlines(), "- **POS Integration Health**")
    fleet = await fleet_in_postgres(healthy.dsn)
    assert all(part in health for part in fleet_line_parts(fleet)), health
    assert health.endswith(f" · customer impact: {IMPACT_TITLE} not measured ⚠️ (timed out after 0.2 s) (threshold < 1%)"), health


async def test_the_report_key_journals_the_fleet_and_the_impact_as_the_pollers_last_read_them(
        healthy: Sandbox, tmp_path: Path) -> None:
    from controlroom.screens.app import make_app

    app = make_app(load_config(healthy.config_path), journal_dir=tmp_path, check_on_start=False, offer_resume=False)
    async with app.run_test(size=(80, 24)) as pilot:
        def polled() -> bool:
            states = [app.poll_states.get(name) for name in ("health", "kpi:locations-affected")]
            return app.session is not None and all(state is not None and state.value is not None for state in states)

        for _ in range(200):
            if polled():
                break
            await pilot.pause(0.05)
        assert polled(), "the health and customer-impact pollers never answered"
        await pilot.press("ctrl+r")
        await pilot.pause()
        text = app.report_path().read_text(encoding="utf-8")
        await pilot.press("escape", "q")
    fleet, impact, _ = await postgres_facts(healthy, app.config)
    health = line(text.splitlines(), "- **POS Integration Health**")
    assert " — " + " · ".join(fleet_line_parts(fleet)) + " · customer impact: " in health, health
    kpi = app.config.runbook.customer_impact_kpi()
    assert health.endswith(f" · customer impact: {IMPACT_TITLE} {impact:g}% {ICONS[kpi_colour(kpi, impact)]} "
                           "(threshold < 1%)"), health


# -- journals that were tampered with, torn, or are no journals --------------------------------


def copy_of(release: Release, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(release.path, path)
    return path


def test_a_tampered_journal_opens_the_report_with_a_warning(go_release: tuple[Release, str], tmp_path: Path) -> None:
    path = copy_of(go_release[0], tmp_path / "tampered.jsonl")
    lines = path.read_bytes().split(b"\n")
    index = next(i for i, text in enumerate(lines) if b'"kind":"verdict"' in text and b'"verdict":"GO"' in text)
    lines[index] = lines[index].replace(b'"verdict":"GO"', b'"verdict":"DELAYED"')
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


def test_a_torn_journal_is_reported_and_left_alone(go_release: tuple[Release, str], tmp_path: Path) -> None:
    path = copy_of(go_release[0], tmp_path / "torn.jsonl")
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 999, "kind": "step_int')
    before = path.read_bytes()
    text = report_command(path, None)
    assert path.read_bytes() == before
    assert "torn tail: the last record was cut short" in text.split("## Summary")[0]

    # Once the control room reopened it, the torn line is acknowledged: an issue, not a warning.
    Journal.open(path, clock=Clock(), operator=OPERATOR)
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


def test_latest_journal_is_the_newest(go_release: tuple[Release, str], fudo_release: Release, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "journals"
    assert latest_journal(directory) is None
    old = copy_of(go_release[0], directory / "2026-11-28.jsonl")
    new = copy_of(fudo_release, directory / "2026-11-29.jsonl")
    (directory / "notes.txt").write_text("x")
    os.utime(old, (1_000_000, 1_000_000))
    os.utime(new, (2_000_000, 2_000_000))
    assert latest_journal(directory) == new
    monkeypatch.setenv("CONTROLROOM_JOURNAL_DIR", str(directory))
    assert "Emergency Rollback" in report_command(None, None)
