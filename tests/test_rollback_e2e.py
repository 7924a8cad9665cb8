"""The rollback console driven by keys at 80×24 against a real sandbox.

- `fudo-outage` end to end in WRITE mode: attest, deploy, Fudo fails in phase 2, the emergency
  rollback (previous tag typed, "fudo" typed, notify), verification, the report. The keystrokes
  and the operator time of the rollback are printed (`pytest -s`).
- READ-ONLY: every modifying key on the rollback screen is refused with a message and the
  integrations table is byte-for-byte the same.
- A provider named like an SQL injection, through the rollback path, disables and drops nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from textual.widgets import DataTable, Log

from controlroom.report.render import render_report
from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, PickDialog, ReasonDialog, TypedConfirmDialog
from controlroom.screens.report import ReportScreen
from controlroom.screens.rollback import RollbackScreen
from controlroom.release.engine import ReleaseEngine
from pg_support import fleet_in_postgres, fleet_line_parts
from pilot_support import wait_for

EVIL = "'; DROP TABLE pos_integrations_location; --"
CHECKSUM = "SELECT md5(string_agg(t::text, ',' ORDER BY t.location_id)) FROM pos_integrations_location t"
SECONDS_PER_KEY = 1.0  # simulated operator time per keystroke: reading, deciding, typing


class OperatorClock:
    """Real time plus the simulated operator's time: every counted keystroke adds a second."""

    def __init__(self) -> None:
        self.base = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
        self.began = time.monotonic()
        self.offset = 0.0

    def __call__(self) -> datetime:
        return self.base + timedelta(seconds=time.monotonic() - self.began + self.offset)




def log_lines(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(line) for line in app.screen.query_one("#rb-log", Log).lines]


async def select_row(pilot, table: DataTable, key: str) -> None:  # type: ignore[no-untyped-def]
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()


async def select_rollback_step(pilot, screen: RollbackScreen, key: str) -> None:  # type: ignore[no-untyped-def]
    """By keys: the plan in the plans list (↑↓), tab to its steps, ↓ to the step."""
    plan_id, _, step_id = key.partition(":")
    plans, steps = screen.query_one("#rb-plans", DataTable), screen.query_one("#rb-steps", DataTable)
    if screen.focused is not plans:
        await pilot.press("tab")
    assert screen.focused is plans
    for _ in range(plans.row_count):
        if screen.selected()[0] == plan_id:
            break
        await pilot.press("down" if plans.get_row_index(plan_id) > plans.cursor_row else "up")
    await pilot.press("tab")
    assert screen.focused is steps
    while steps.cursor_row > 0:
        await pilot.press("up")
    while screen.selected()[1] != step_id:
        await pilot.press("down")
    assert screen.selected() == (plan_id, step_id)


@pytest.fixture
async def outage() -> AsyncIterator[Sandbox]:
    async with Sandbox("fudo-outage", locations=60, simulate=True, tick_s=0.2) as running:
        yield running


@pytest.fixture(scope="module")
async def quiet() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


async def test_fudo_outage_emergency_rollback_by_keys(outage: Sandbox, tmp_path: Path) -> None:
    clock = OperatorClock()
    app = make_app(load_config(outage.config_path), write=True, start_polling=False, journal_dir=tmp_path, now=clock)
    keystrokes = 0

    async with app.run_test(size=(80, 24)) as pilot:

        async def keys(*pressed: str) -> None:
            nonlocal keystrokes
            keystrokes += len(pressed)
            clock.offset += SECONDS_PER_KEY * len(pressed)
            await pilot.press(*pressed)

        # -- the checklist: attest the manual items, GO -------------------------------------
        await wait_for(lambda: app.session is not None and app.session.verdict is not None, pilot, what="checks")
        session = app.session
        screen = app.screen
        assert isinstance(screen, ChecklistScreen)
        for item_id in session.attestable():
            for _ in range(40):
                if screen.selected_item() == item_id:
                    break
                await pilot.press("down")
            await pilot.press("a")
            # Each confirmation answered once it is open, and closed before the next item is
            # looked for (keys typed ahead of a dialog are dropped: on a loaded machine it opens late).
            await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what=f"{item_id}'s confirmation")
            await pilot.press("tab", "enter")
            await wait_for(lambda: app.screen is screen, pilot, what=f"{item_id}'s confirmation closed")
        try:
            await wait_for(lambda: session.verdict_name == "GO", pilot, what="GO")
        except AssertionError:
            raise AssertionError(f"no GO: {session.verdict_name} {getattr(session.verdict, 'reasons', '')}") from None

        # -- deploy: phase 1, then Deploy code and the smoke tests in phase 2 ---------------
        await pilot.press("d")
        deploy = app.screen
        assert isinstance(deploy, DeployScreen)
        await pilot.press("s", *"v2.15.0", "enter")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("tab", "enter")
        await wait_for(lambda: session.state.in_progress, pilot, what="deploy started")
        table = deploy.query_one("#deploy-steps", DataTable)

        async def run_deploy_step(step_id: str) -> None:
            await select_row(pilot, table, step_id)
            await pilot.press("x")
            if session.modifying(step_id):  # modifying: shown, Cancel first, then Run
                assert isinstance(app.screen, ConfirmDialog), step_id
                await pilot.press("tab", "enter")
            else:  # a probe changes nothing: it runs at once
                assert app.screen is deploy, step_id
            await wait_for(lambda: step_id in session.state.steps and session.running_step is None
                           and session.state.steps[step_id].status != "running", pilot, what=step_id)

        for step_id in ("env-health", "breaker-status", "rotation-capability"):
            await run_deploy_step(step_id)
            assert session.state.steps[step_id].status == "done", session.state.steps[step_id]
        await pilot.press("n")
        assert session.current_phase().id == "deploy"
        await run_deploy_step("deploy-code")
        assert session.state.steps["deploy-code"].status == "done"
        await run_deploy_step("smoke-tests")
        smoke = session.state.steps["smoke-tests"]
        assert smoke.status == "failed" and "fudo" in smoke.summary, smoke
        # The simulator keeps Fudo failing: its breakers open within a few ticks.
        conn = await asyncpg.connect(outage.dsn)
        try:
            for _ in range(60):
                if await conn.fetchval("SELECT count(*) FROM rotation_cb WHERE provider = 'fudo' AND state <> 'closed'"):
                    break
                await asyncio.sleep(0.1)
            assert await conn.fetchval("SELECT count(*) FROM rotation_cb WHERE provider = 'fudo' AND state <> 'closed'")
            before = dict(await conn.fetch(
                "SELECT provider, count(*) FILTER (WHERE connected) FROM pos_integrations_location GROUP BY provider"))
        finally:
            await conn.close()
        assert before["fudo"] > 0

        # -- the emergency rollback, counted ------------------------------------------------
        began = clock()
        await keys("R")
        rollback = app.screen
        assert isinstance(rollback, RollbackScreen)
        assert rollback.selected() == ("emergency", None)
        await keys("s")
        assert isinstance(app.screen, ReasonDialog)  # why: the smoke-test failure is filled in
        await keys("enter")
        await wait_for(lambda: isinstance(app.screen, PickDialog), pilot, what="provider list")
        await keys("enter")  # the failing provider, fudo, is highlighted
        await wait_for(lambda: session.rollback_in_progress(), pilot, what="rollback started")
        started = session.rollback_record()
        assert started.data["plan_id"] == "emergency" and started.data["provider"] == "fudo"
        assert started.data["version"] == "v2.14.0" and "smoke tests" in started.data["reason"].lower()
        await pilot.pause()
        assert rollback.selected() == ("emergency", "switch-version")

        await keys("x")
        assert isinstance(app.screen, TypedConfirmDialog) and app.screen.word == "v2.14.0"
        await keys(*"v2.14.0", "enter")
        await wait_for(lambda: session.state.rollback.steps.get("switch-version") is not None
                       and session.state.rollback.steps["switch-version"].status == "done"
                       and session.running_step is None, pilot, what="switch-version")
        await pilot.pause()
        assert rollback.selected() == ("emergency", "disable-provider")

        await keys("x")
        await wait_for(lambda: isinstance(app.screen, TypedConfirmDialog), pilot, what="typed confirmation")
        assert app.screen.word == "fudo"
        assert f"touches {before['fudo']} row(s)" in str(app.screen.body)
        await keys(*"fudo", "enter")
        await wait_for(lambda: session.state.rollback.steps.get("disable-provider") is not None
                       and session.state.rollback.steps["disable-provider"].status == "done"
                       and session.running_step is None, pilot, what="disable-provider")
        await pilot.pause()

        await keys("x")
        assert isinstance(app.screen, ConfirmDialog)  # notifying changes nothing: Cancel first, then Run
        await keys("tab", "enter")
        await wait_for(lambda: session.state.rollback.steps.get("notify-incident-team") is not None
                       and session.state.rollback.steps["notify-incident-team"].status == "done"
                       and session.running_step is None, pilot, what="notify")

        await keys("v")
        await wait_for(lambda: session.state.rollback.verified is True and session.state.outcome == "rolled_back",
                       pilot, what="verified")
        await app.workers.wait_for_complete()
        finished = next(r for r in session.journal.records if r.kind == "rollback_finished")
        seconds = (finished.at - began).total_seconds()
        print(f"\nemergency rollback (fudo-outage): {keystrokes} keystrokes, {seconds:.1f} s of operator time "
              f"({SECONDS_PER_KEY:g} s per keystroke + the steps' real time; journal: "
              f"{(finished.at - started.at).total_seconds():.1f} s from rollback_started to verified)")
        assert keystrokes <= 25 and seconds < 5 * 60
        assert any("VERIFIED" in line for line in log_lines(app))
        assert session.escalation() is None  # the incident is closed

        # -- the report key -------------------------------------------------------------
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, ReportScreen)
        report_path = app.report_path()
        assert report_path is not None and report_path.exists() and report_path.parent == session.journal.path.parent
        await pilot.press("pagedown", "escape")
        assert app.screen is rollback
        await pilot.press("q")

    # -- Postgres: Fudo disconnected, the others untouched -----------------------------------
    conn = await asyncpg.connect(outage.dsn)
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM pos_integrations_location WHERE provider = 'fudo' AND connected") == 0
        after = dict(await conn.fetch(
            "SELECT provider, count(*) FILTER (WHERE connected) FROM pos_integrations_location GROUP BY provider"))
        assert {p: n for p, n in after.items() if p != "fudo"} == {p: n for p, n in before.items() if p != "fudo"}
    finally:
        await conn.close()

    # -- the sinks received trigger and resolve, one dedup_key ---------------------------------
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{outage.base_url}/_sandbox/sinks",
                                    headers={"Authorization": f"Bearer {outage.settings.admin_token}"})
    sinks = response.json()
    slack = [r["body"]["text"] for r in sinks["slack_api"] if r["accepted"]]  # the bot token: chat.postMessage
    assert any("rolling back to v2.14.0" in text for text in slack) and any(t.startswith("RESOLVED") for t in slack)
    assert len({r["thread_ts"] or r["ts"] for r in sinks["slack_api"] if r["accepted"]}) == 1  # one thread
    pagerduty = [r["body"] for r in sinks["pagerduty"] if r["accepted"]]
    # Starting the rollback opened the incident; the plan's notify step triggers it again with
    # the same dedup_key (one incident in PagerDuty); verifying resolved it.
    assert [e["event_action"] for e in pagerduty] == ["trigger", "trigger", "resolve"]
    assert any("rollback to v2.14.0 started" in text for text in slack)
    assert len({e["dedup_key"] for e in pagerduty}) == 1

    # -- the journal: every step in order, intent before outcome -------------------------------
    records = session.journal.records
    kinds = [r.kind for r in records]
    rollback_steps = [(r.kind, r.data["step_id"]) for r in records if r.data.get("plan_id") and r.kind.startswith("step_")]
    assert rollback_steps == [
        ("step_intent", "switch-version"), ("step_outcome", "switch-version"),
        ("step_intent", "disable-provider"), ("step_outcome", "disable-provider"),
        ("step_intent", "notify-incident-team"), ("step_outcome", "notify-incident-team"),
    ]
    deploy_steps = [(r.kind, r.data["step_id"]) for r in records if r.kind.startswith("step_") and not r.data.get("plan_id")]
    for index in range(0, len(deploy_steps), 2):
        assert deploy_steps[index][0] == "step_intent" and deploy_steps[index + 1] == ("step_outcome", deploy_steps[index][1])
    order = ["deploy_started", "rollback_started", "rollback_finished", "deploy_finished"]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    assert next(r for r in records if r.kind == "deploy_finished").data["outcome"] == "rolled_back"
    assert not Path(session.journal.path).read_text().count(outage.settings.admin_token)

    # -- the report ctrl+r wrote: rendered from the journal the engine wrote ---------------------
    report = report_path.read_text(encoding="utf-8")
    assert report.startswith("# Deployment Report") and report == render_report(
        records, session.loaded.runbook, problems=session.journal.problems, source=session.journal.path)
    lines = report.splitlines()
    required = next(line for line in lines if line.startswith("- **Rollback Required**"))
    assert "Yes" in required and "Emergency Rollback" in required and "because Run smoke tests failed" in required, required
    assert "verified" in required
    assert "Emergency Rollback" in report and "fudo" in report.lower() and "smoke tests" in report.lower()
    assert [line for line in lines if line.startswith("- **Outcome**")] == ["- **Outcome**: rolled back ⚠️"]
    # The POS health line is the fleet as the verified rollback left it, and Postgres agrees now,
    # at report time: every provider's locations connected / disconnected, Fudo all disconnected.
    fleet = await fleet_in_postgres(outage.dsn)
    health = next(line for line in lines if line.startswith("- **POS Integration Health**"))
    connected, total = sum(c for c, _, _ in fleet.values()), sum(t for _, _, t in fleet.values())
    assert health.startswith(f"- **POS Integration Health**: {100 * connected / total:.1f}".removesuffix(".0")
                             + f"% ❌ ({connected} of {total} locations connected, at "), health
    parts = fleet_line_parts(fleet)
    assert " — " + " · ".join(parts) + " · customer impact: " in health, (health, parts)
    assert fleet["fudo"][0] == 0 and f"fudo 0/{fleet['fudo'][2]} connected ({fleet['fudo'][2]} disconnected)" in parts
    # The customer-impact KPI, measured with the fleet: at least the disconnected share, red.
    measured = next(r for r in reversed(records) if r.kind == "pos_health").data["customer_impact"]
    disconnected_share = 100.0 * sum(d for _, d, _ in fleet.values()) / total
    assert measured["value"] >= round(disconnected_share, 2) - 0.01 and measured["status"] == "red", measured
    assert health.endswith(f" · customer impact: Customer Impact (locations affected) {measured['value']:g}% ❌ "
                           "(threshold < 1%)"), health


async def test_read_only_refuses_every_modifying_rollback_key(quiet: Sandbox, tmp_path: Path) -> None:
    loaded = load_config(quiet.config_path)
    conn = await asyncpg.connect(quiet.dsn)
    try:
        checksum = await conn.fetchval(CHECKSUM)
        # A deployment started with --write; the control room reopened without it resumes it.
        writer = ReleaseEngine.open(loaded, write=True, journal_dir=tmp_path)
        await writer.start_deploy("v2.15.0", override_reason="read-only test")
        writer.close()
        app = make_app(loaded, write=False, start_polling=False, journal_dir=tmp_path, check_on_start=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="resume dialog")
            await pilot.press("enter")
            await wait_for(lambda: app.session is not None and app.session.resumed, pilot, what="session")
            await pilot.press("R")
            screen = app.screen
            assert isinstance(screen, RollbackScreen)
            await pilot.press("s")  # start: refused up front, no dialog
            assert app.screen is screen and "READ-ONLY" in log_lines(app)[-1]
            for key in ("emergency:switch-version", "emergency:disable-provider", "graceful:deploy-previous"):
                await select_rollback_step(pilot, screen, key)
                await pilot.press("x")
                assert app.screen is screen, key
                assert "READ-ONLY" in log_lines(app)[-1], (key, log_lines(app)[-1])
                await pilot.press("m")  # marking a modifying step done is refused too
                assert app.screen is screen and "refused" in log_lines(app)[-1]
            for key in ("emergency:notify-incident-team", "graceful:drain"):
                await select_rollback_step(pilot, screen, key)
                for press in ("x", "m", "z", "v"):
                    await pilot.press(press)
                    assert app.screen is screen, (key, press)
                    assert log_lines(app)[-1].startswith("refused"), (key, press)
            # A dry run is allowed: it describes and counts, and changes nothing.
            await select_rollback_step(pilot, screen, "emergency:switch-version")
            await pilot.press("t")
            await app.workers.wait_for_complete()
            assert any("dry run" in line for line in log_lines(app))
            await pilot.press("q")
        kinds = [r.kind for r in app.session.journal.records]
        assert "rollback_started" not in kinds and "step_intent" not in kinds
        assert await conn.fetchval(CHECKSUM) == checksum
    finally:
        await conn.close()


async def test_injection_shaped_provider_disables_and_drops_nothing(quiet: Sandbox, tmp_path: Path) -> None:
    loaded = load_config(quiet.config_path)
    conn = await asyncpg.connect(quiet.dsn)
    try:
        checksum = await conn.fetchval(CHECKSUM)
        session = ReleaseEngine.open(loaded, write=True, journal_dir=tmp_path)
        await session.start_deploy("v2.15.0", override_reason="injection test")
        await session.start_rollback("emergency", "test", provider=EVIL, version="v2.14.0")
        assert session.rollback_values()["provider"] == EVIL
        dry = await session.dry_run_rollback_step("disable-provider")
        assert dry.count == 0
        outcome = await session.run_rollback_step("disable-provider")
        assert outcome.status == "done" and outcome.count == 0, outcome.summary
        intent = next(r for r in session.journal.records if r.kind == "step_intent")
        assert f"$1 = {EVIL!r}" in intent.data["detail"]
        assert await conn.fetchval("SELECT to_regclass('pos_integrations_location') IS NOT NULL")
        assert await conn.fetchval(CHECKSUM) == checksum
    finally:
        await conn.close()


KILLED_SESSION = """
import sys, time
from datetime import datetime
from pathlib import Path
from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine
import asyncio

at = datetime.fromisoformat(sys.argv[3])
session = ReleaseEngine.open(load_config(sys.argv[1]), write=True, journal_path=Path(sys.argv[2]), clock=lambda: at)
async def main():
    await session.start_deploy("v2.15.0", override_reason="killed-session test")
    for step_id in ("env-health", "breaker-status", "rotation-capability"):
        session.mark_done(step_id)
    session.next_phase()
    await session.start_rollback("emergency", "Fudo fails", provider="fudo", version="v2.14.0")
    session.mark_rollback_step_done("switch-version", "done by hand")
asyncio.run(main())
print("ready", flush=True)
time.sleep(60)
"""


async def test_a_killed_rollback_resumes_with_its_phase_clocks_and_steps(quiet: Sandbox, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "killed.jsonl"
    began = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
    process = subprocess.Popen([sys.executable, "-c", KILLED_SESSION, str(quiet.config_path), str(path), began.isoformat()],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    loaded = load_config(quiet.config_path)
    later = began + timedelta(minutes=16, seconds=30)
    again = ReleaseEngine.open(loaded, write=True, journal_path=path, clock=lambda: later)
    assert again.resumed and not again.journal.problems
    assert again.current_phase().id == "deploy"
    assert again.deploy_clock().elapsed_s == again.phase_clock("deploy").elapsed_s == 990
    assert again.phase_clock("deploy").level == "red"  # 16:30 into a 5-minute phase
    assert again.rollback_in_progress() and again.rollback_values() == {"version": "v2.14.0", "provider": "fudo"}
    rollback_clock = again.rollback_clock()
    assert rollback_clock.elapsed_s == 990 and rollback_clock.level == "red"  # the 5-minute plan overran
    assert again.open_rollback_steps() == ["disable-provider", "notify-incident-team"]
    status = again.escalation()
    assert status is not None and status.level == 2 and status.seconds_to_next == 13.5 * 60
    assert again.start_refusal() is not None and "already in progress" in again.start_refusal()
