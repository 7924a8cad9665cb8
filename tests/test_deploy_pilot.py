"""The Checklist and Deploy screens driven by keyboard at 80×24 against a real sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from textual.widgets import DataTable

from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog
from controlroom.widgets.status_bar import StatusBar
from pilot_support import wait_for


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running




class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def header(app) -> StatusBar:  # type: ignore[no-untyped-def]
    return app.screen.query_one(StatusBar)


async def test_checklist_verdict_and_attesting_by_keys(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        assert isinstance(app.screen, ChecklistScreen)
        await wait_for(lambda: app.session is not None and app.session.verdict is not None, pilot)
        assert app.session.verdict_name == "PENDING"
        await pilot.pause(0.1)
        assert header(app).verdict == "PENDING"
        screen = app.screen
        table = screen.query_one("#checklist-table", DataTable)
        assert table.get_row("token-zombie")[0].plain == "PASS"

        manual = app.session.attestable()
        for item_id in manual:
            for _ in range(40):
                if screen.selected_item() == item_id:
                    break
                await pilot.press("down")
            assert screen.selected_item() == item_id
            await pilot.press("a")
            assert isinstance(app.screen, ConfirmDialog)
            await pilot.press("enter")  # Cancel has the focus: nothing attested
            assert isinstance(app.screen, ChecklistScreen) and item_id not in app.session.attestations()
            await pilot.press("a", "tab", "enter")
            assert item_id in app.session.attestations()
        await pilot.pause(0.1)
        assert app.session.verdict_name == "GO"
        assert header(app).verdict == "GO"
        assert "GO" in str(screen.query_one("#verdict-banner").render())
        attested = [r for r in app.session.journal.records if r.kind == "attested"]
        assert [r.data["item_id"] for r in attested] == manual

        await pilot.press("space")  # re-run the selected item
        await app.workers.wait_for_complete()
        await pilot.press("q")


async def test_deploy_override_and_phase_clock(sandbox: Sandbox, tmp_path: Path) -> None:
    clock = FakeClock()
    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, journal_dir=tmp_path, now=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None and app.session.verdict is not None, pilot)
        await pilot.press("d")
        assert isinstance(app.screen, DeployScreen)
        deploy = app.screen
        await pilot.press("s", *"v2.15.0", "enter")
        assert isinstance(app.screen, ReasonDialog)  # PENDING: an override is needed
        await pilot.press("enter")  # no reason: refused, the dialog stays
        assert isinstance(app.screen, ReasonDialog) and not app.session.state.in_progress
        await pilot.press(*"abc", "enter")  # too short
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press(*" - lead approved the hotfix", "enter")
        await wait_for(lambda: app.session.state.in_progress, pilot)
        assert app.screen is deploy
        started = next(r for r in app.session.journal.records if r.kind == "deploy_started")
        assert started.data["override_reason"] == "abc - lead approved the hotfix"
        assert started.data["verdict"] == "PENDING"

        table = deploy.query_one("#deploy-steps", DataTable)

        def phase_time() -> str:
            return table.get_row("phase:pre")[2].plain

        deploy.render_deploy()
        assert phase_time() == "5:00 left"
        clock.now += timedelta(minutes=2, seconds=30)
        await pilot.pause(1.1)  # the 1 s tick re-renders
        assert phase_time() == "2:30 left"
        assert header(app).deploy_clock == "2:30/15:00" and header(app).deploy_level == "ok"
        clock.now += timedelta(minutes=4)  # 6:30 into a 5-minute phase
        await pilot.pause(1.1)
        assert phase_time() == "+1:30 over" and app.session.phase_clock("pre").level == "amber"
        assert "yellow" in str(table.get_row("phase:pre")[2].style)
        clock.now += timedelta(minutes=2)  # 8:30: more than half its minutes over
        await pilot.pause(1.1)
        assert phase_time() == "+3:30 over" and app.session.phase_clock("pre").level == "red"
        assert "red" in str(table.get_row("phase:pre")[2].style)

        for step_id in ("env-health", "breaker-status", "rotation-capability"):
            app.session.mark_done(step_id)
        await pilot.press("n")
        assert app.session.current_phase().id == "deploy"
        await pilot.press("q")  # a deployment is in progress: asked first, Cancel the default
        assert isinstance(app.screen, ConfirmDialog) and "Quit anyway?" in str(app.screen.body)
        await pilot.press("tab", "enter")
        await pilot.pause()
        assert not app.is_running

    # Reopened READ-ONLY (the default): offers to resume; enter (Resume is the default here)
    # gives the same phase, and a modifying step is refused with a message, nothing runs.
    again = make_app(load_config(sandbox.config_path), start_polling=False, journal_dir=tmp_path, now=clock,
                     check_on_start=False)
    async with again.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(again.screen, ConfirmDialog), pilot)
        await pilot.press("enter")
        await wait_for(lambda: again.session is not None, pilot)
        assert again.session.resumed and again.session.current_phase().id == "deploy"
        assert again.session.state.started_at == datetime(2025, 3, 1, 3, 0, tzinfo=UTC)
        assert len(again.session.attestations()) == 0
        await pilot.press("d")
        deploy = again.screen
        assert isinstance(deploy, DeployScreen)
        table = deploy.query_one("#deploy-steps", DataTable)
        table.move_cursor(row=table.get_row_index("deploy-code"))
        await pilot.press("x")
        assert again.screen is deploy  # no dialog: refused up front
        assert not [r for r in again.session.journal.records if r.kind == "step_intent"]
        await pilot.press("q", "tab", "enter")


async def test_recording_a_manual_item_as_not_met_by_keys(sandbox: Sandbox, tmp_path: Path) -> None:
    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None and app.session.verdict is not None, pilot)
        screen = app.screen
        for _ in range(40):
            if screen.selected_item() == "vulnerabilities":
                break
            await pilot.press("down")
        assert screen.selected_item() == "vulnerabilities"
        await pilot.press("A")
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press(*"CVE unpatched", "enter")
        await wait_for(lambda: app.session.verdict_name == "NO-GO", pilot)
        table = screen.query_one("#checklist-table", DataTable)
        assert table.get_row("vulnerabilities")[0].plain == "FAIL"
        await pilot.press("q")
