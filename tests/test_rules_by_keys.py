"""The engine's safety rules 1, 2, 5 and 6, tried through the app by keys at 80×24 against a
real sandbox (the Fudo outage), the way the defects were first seen. What comes before the
keys (a deployment started, a rollback opened) is set up through the engine; the rule under
test is exercised by keys only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlroom.config.loader import LoadedConfig, load_config
from controlroom.release.engine import ReleaseEngine
from controlroom.release.journal import read_records
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, TypedConfirmDialog
from controlroom.screens.report import ReportScreen
from controlroom.screens.rollback import RollbackScreen
from controlroom.widgets.status_bar import StatusBar
from pilot_support import wait_for

PHASE_ONE = ("env-health", "breaker-status", "rotation-capability")
OBSERVATIONS = {"session_resumed", "check", "verdict", "pos_health"}


@pytest.fixture(scope="module")
async def outage() -> AsyncIterator[Sandbox]:
    async with Sandbox("fudo-outage", locations=40, simulate=False) as running:
        yield running


@pytest.fixture
async def admin(outage: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {outage.settings.admin_token}"}
    async with httpx.AsyncClient(base_url=outage.base_url, headers=headers, timeout=5) as client:
        (await client.delete("/_sandbox/sinks")).raise_for_status()
        yield client


async def in_the_deploy_phase(loaded: LoadedConfig, journal_dir: Path) -> ReleaseEngine:
    writer = ReleaseEngine.open(loaded, write=True, journal_dir=journal_dir)
    await writer.start_deploy("v2.15.0", override_reason="the outage is the point of this test")
    for step_id in PHASE_ONE:
        writer.mark_done(step_id)
    writer.next_phase()
    return writer


async def resumed(app: Any, pilot: Any) -> None:
    await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="resume dialog")
    await pilot.press("enter")
    await wait_for(lambda: app.session is not None and app.session.resumed, pilot, what="resumed")


def notifications(app: Any) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_rule_1_read_only_cannot_resolve_or_finish_what_write_started(
        outage: Sandbox, tmp_path: Path, admin: httpx.AsyncClient) -> None:
    """Defect 1, by keys: with --write a deployment and the emergency rollback were started
    and its steps skipped; reopened without --write, R v and d f change nothing and send
    nothing."""
    loaded = load_config(outage.config_path)
    writer = await in_the_deploy_phase(loaded, tmp_path)
    await writer.start_rollback("emergency", "smoke tests failed", "fudo", version="v2.14.0")
    for step_id in writer.open_rollback_steps():
        writer.skip_rollback_step(step_id, "done by hand")
    writer.close()
    before = len(read_records(writer.journal.path)[0])
    sent_before = len((await admin.get("/_sandbox/sinks")).json()["slack"])

    app = make_app(loaded, write=False, start_polling=False, journal_dir=tmp_path, check_on_start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await resumed(app, pilot)
        await pilot.press("R")
        assert isinstance(app.screen, RollbackScreen)
        await pilot.press("v")
        await pilot.pause(0.2)
        assert any("READ-ONLY" in n and "verify" in n for n in notifications(app))
        await pilot.press("d", "f", "n", "x", "m", "z", "s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DeployScreen)  # no dialog opened for any of them
        await pilot.press("c", "a", "A")
        await app.workers.wait_for_complete()
        assert app.session is not None and app.session.state.in_progress
        assert app.screen.query_one(StatusBar).write is False
    new = read_records(writer.journal.path)[0][before:]
    assert {r.kind for r in new} <= OBSERVATIONS, [r.kind for r in new]
    sinks = (await admin.get("/_sandbox/sinks")).json()
    assert len(sinks["slack"]) == sent_before and not [p for p in sinks["pagerduty"]
                                                       if p["body"].get("event_action") == "resolve"]


async def test_rule_2_a_failed_deployment_in_rollback_never_finishes_as_a_success(
        outage: Sandbox, tmp_path: Path) -> None:
    """Defect 2, by keys: the smoke test failed against the Fudo outage and the rollback was
    started (0 of 3 steps done). q asks; d f says FAILED and that it abandons the rollback;
    confirmed, the deployment ends failed, never succeeded."""
    loaded = load_config(outage.config_path)
    writer = await in_the_deploy_phase(loaded, tmp_path)
    deployed = await writer.run_step("deploy-code")  # the sandbox's deploy: Fudo fails from now on
    assert deployed.status == "done", deployed.summary
    smoke = await writer.run_step("smoke-tests")
    assert smoke.status == "failed", smoke.summary  # the real probe, against the real outage
    await writer.start_rollback("emergency", "smoke tests failed", "fudo", version="v2.14.0")
    writer.close()

    app = make_app(loaded, write=True, start_polling=False, journal_dir=tmp_path, check_on_start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await resumed(app, pilot)
        await pilot.press("q")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog) and app.screen.id == "quit-dialog", pilot)
        assert "in progress" in str(app.quit_question())
        await pilot.press("escape")
        await pilot.press("d", "f")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="finish dialog")
        body = " ".join(str(w.render()) for w in app.screen.query("Static"))
        assert "FAILED" in body and "ABANDONS" in body and "a success" not in body
        await pilot.press("tab", "enter")  # Cancel is the default: Finish as failed
        await wait_for(lambda: app.session is not None and app.session.state.ended_at is not None, pilot)
        assert app.session.state.outcome == "failed"
        assert app.session.state.rollback is not None and app.session.state.rollback.verified is False
        await pilot.pause(0.1)
        header = str(app.screen.query_one("#deploy-clocks").render())
        assert "finished: failed" in header and "succeeded" not in header
        await pilot.press("ctrl+r")
        await wait_for(lambda: isinstance(app.screen, ReportScreen), pilot)
    report = app.report_path()
    assert report is not None
    text = report.read_text()
    assert "- **Outcome**: failed ❌" in text and "Outcome**: success" not in text


async def test_rule_5_a_removed_tail_is_said_on_opening_and_in_the_report(outage: Sandbox, tmp_path: Path) -> None:
    """The journal's last record removed (the head file remembers it): the control room says
    so as it opens the journal, and the report it writes begins with it."""
    loaded = load_config(outage.config_path)
    writer = await in_the_deploy_phase(loaded, tmp_path)
    writer.close()
    path = writer.journal.path
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # phase_started of the Deploy phase: gone

    app = make_app(loaded, write=True, start_polling=False, journal_dir=tmp_path, check_on_start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await resumed(app, pilot)
        await pilot.pause(0.2)
        warned = [n for n in notifications(app) if n.startswith("journal:")]
        assert any("ends at record" in n for n in warned), notifications(app)
        await pilot.press("ctrl+r")
        await wait_for(lambda: isinstance(app.screen, ReportScreen), pilot)
    report = app.report_path()
    assert report is not None
    head = report.read_text().split("## ")[0]
    assert "ends at record" in head, head


async def test_rule_6_a_confirmation_typed_ahead_never_reaches_the_screen_behind(outage: Sandbox, tmp_path: Path) -> None:
    """x on the SQL step counts its rows first (a query on the real Postgres); `fudo` typed
    at once, before the typed confirmation opens, must not switch screens (d) or finish (f):
    it is dropped, and the operator types it into the dialog once it is there."""
    loaded = load_config(outage.config_path)
    writer = await in_the_deploy_phase(loaded, tmp_path)
    await writer.start_rollback("emergency", "smoke tests failed", "fudo", version="v2.14.0")
    writer.mark_rollback_step_done("switch-version", "switched by hand")
    writer.close()

    app = make_app(loaded, write=True, start_polling=False, journal_dir=tmp_path, check_on_start=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await resumed(app, pilot)
        await pilot.press("R")
        screen = app.screen
        assert isinstance(screen, RollbackScreen)
        await pilot.pause(0.1)
        assert screen.selected() == ("emergency", "disable-provider")  # rule 6: after a resume, the next open step
        await pilot.press("x", *"fudo")  # typed ahead of the dialog
        await wait_for(lambda: isinstance(app.screen, TypedConfirmDialog), pilot, what="typed confirmation")
        assert app.current_mode == "rollback"  # `d` did not switch to Deploy
        assert app.session is not None and app.session.state.ended_at is None  # `f` did not finish
        field = app.screen.query_one("#word")
        assert field.value in ("", "fudo")  # dropped, or queued into the dialog: never behind it
        field.value = ""
        await pilot.press(*"fudo", "tab", "tab", "enter")
        await wait_for(lambda: app.session is not None
                       and app.session.state.rollback.steps.get("disable-provider") is not None, pilot)
        await app.workers.wait_for_complete()
        assert app.session.state.rollback.steps["disable-provider"].status == "done"
