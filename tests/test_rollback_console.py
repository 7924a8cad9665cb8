"""Issue 14: the rollback console's two lists and hints, the clocks over a dialog, and the one
message line that replaced the toasts — driven by keys at 80×24 (60×20 for the dialog) against
a real sandbox (embedded Postgres, the HTTP simulator).

- Plans and steps are two lists: ↓ moves to the next plan in one press, tab / shift+tab moves
  between the lists; the hint line says what the engine allows next, after a resume too, and a
  control room reopened mid-rollback opens on the console.
- A dialog shows the header, and its deploy clock moves while the dialog is open.
- Messages go to the message line, newest only, never as a toast, never read as markup; an
  error stays until the next key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets._toast import Toast

from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import ControlRoomApp, make_app
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog, TypedConfirmDialog
from controlroom.screens.rollback import RollbackScreen
from controlroom.widgets.message_line import MessageLine
from controlroom.widgets.status_bar import StatusBar
from pilot_support import wait_for
from snapshot_support import capture


class Wall:
    """The journal's wall clock: real time from a fixed start, plus what the test adds."""

    def __init__(self) -> None:
        self.at = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
async def quiet() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


async def reopened(sandbox: Sandbox, tmp_path: Path, *, rollback: bool, done: tuple[str, ...] = (),
                   write: bool = True) -> ControlRoomApp:
    """A control room on a journal that a closed one left with a deployment in progress (and an
    emergency rollback started when `rollback`, its steps `done` marked done)."""
    loaded = load_config(sandbox.config_path)
    writer = ReleaseEngine.open(loaded, write=True, journal_dir=tmp_path)
    await writer.start_deploy("v2.15.0", override_reason="reopened in a test")
    if rollback:
        await writer.start_rollback("emergency", "smoke tests failed", "fudo", version="v2.14.0")
    for step_id in done:
        writer.mark_rollback_step_done(step_id, "done by hand")
    writer.close()
    return make_app(loaded, write=write, start_polling=False, journal_dir=tmp_path, check_on_start=False)


async def resume(app, pilot) -> None:  # type: ignore[no-untyped-def]
    """Answer the resume question with enter (Resume)."""
    await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="resume dialog")
    await pilot.press("enter")
    await wait_for(lambda: app.session is not None and app.session.resumed, pilot, what="session")


def hint(screen: RollbackScreen) -> str:
    return str(screen.query_one("#rb-hint").render())


def message_line(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.screen.query_one(MessageLine).render())


async def test_plans_and_steps_are_two_lists(quiet: Sandbox, tmp_path: Path) -> None:
    app = await reopened(quiet, tmp_path, rollback=False)
    loaded = app.config
    async with app.run_test(size=(80, 24)) as pilot:
        await resume(app, pilot)
        assert app.current_mode == "checklist"  # no rollback in progress: where it always opens
        await pilot.press("R")
        screen = app.screen
        assert isinstance(screen, RollbackScreen)
        plans, steps = screen.query_one("#rb-plans", DataTable), screen.query_one("#rb-steps", DataTable)
        assert screen.focused is plans and screen.selected() == ("emergency", None)
        assert steps.row_count == 3  # the emergency plan's steps only
        assert "s starts the Emergency Rollback" in hint(screen)

        await pilot.press("down")  # one press: the next plan, not the next row of one long list
        assert screen.selected() == ("graceful", None)
        assert [str(steps.get_row_at(i)[1]) for i in range(steps.row_count)] == [
            f"{n}. {s.title}" for n, s in enumerate(loaded.runbook.rollback.plans[1].steps, start=1)]
        assert "s starts the Graceful Rollback" in hint(screen)

        await pilot.press("tab")
        assert screen.focused is steps and screen.selected() == ("graceful", "drain")
        await pilot.press("down")
        assert screen.selected() == ("graceful", "deploy-previous")
        await pilot.press("shift+tab")
        assert screen.focused is plans and screen.selected() == ("graceful", None)
        await pilot.press("up", "tab")
        assert screen.selected() == ("emergency", "switch-version")
        await pilot.press("q", "tab", "enter")  # quit (asked: a deployment is in progress)


async def test_a_resumed_rollback_opens_on_the_console_and_hints_its_next_step(quiet: Sandbox, tmp_path: Path) -> None:
    app = await reopened(quiet, tmp_path, rollback=True, done=("switch-version",))
    async with app.run_test(size=(80, 24)) as pilot:
        await resume(app, pilot)
        # Reopened mid-rollback: the console, on the next open step — not the checklist.
        await wait_for(lambda: isinstance(app.screen, RollbackScreen), pilot, what="the rollback console")
        screen = app.screen
        assert isinstance(screen, RollbackScreen)
        await pilot.pause()
        assert screen.selected() == ("emergency", "disable-provider")
        text = hint(screen)
        assert "starts" not in text, text
        assert "next: Disable the failing provider" in text and "x runs it, t dry-runs, z skips" in text, text

        session = app.session
        assert session is not None
        session.skip_rollback_step("disable-provider", "done by hand in the dashboard")
        session.skip_rollback_step("notify-incident-team", "called them")
        app.session_changed()
        await pilot.pause()
        assert "every step is done: v verifies the rollback" in hint(screen), hint(screen)

        await pilot.press("v")
        await wait_for(lambda: session.state.rollback is not None and session.state.rollback.verified is True,
                       pilot, timeout=60, what="verified")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert hint(screen).startswith("VERIFIED"), hint(screen)
        assert "starts" not in hint(screen)


async def test_read_only_hints_say_why_not(quiet: Sandbox, tmp_path: Path) -> None:
    app = await reopened(quiet, tmp_path, rollback=True, write=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await resume(app, pilot)
        await wait_for(lambda: isinstance(app.screen, RollbackScreen), pilot, what="the rollback console")
        await pilot.pause()
        text = hint(app.screen)
        assert "next: Immediate traffic switch" in text and "READ-ONLY" in text and "x runs it" not in text, text


async def test_the_clock_ticks_in_view_while_a_dialog_is_open(tmp_path: Path) -> None:
    """At 60×20 a long dialog covers the screen's header: the dialog shows its own, ticked
    by the app, so the deploy clock moves while the typed confirmation waits."""
    from snapshot_support import make_config

    wall = Wall()
    app = make_app(make_config(tmp_path), write=True, now=wall, start_polling=False, journal_dir=tmp_path / "journal",
                   check_on_start=False, offer_resume=False)
    async with app.run_test(size=(60, 20)) as pilot:
        await wait_for(lambda: app.session is not None, pilot, what="session")
        await app.session.start_deploy("v2.15.0", override_reason="clock test")
        app.session_changed()
        app.push_screen(TypedConfirmDialog(Text("Run: Deploy code"), Text("what it does\n" * 30), "v2.15.0"))
        await wait_for(lambda: isinstance(app.screen, TypedConfirmDialog), pilot, what="dialog")
        await wait_for(lambda: "deploy 0:00/15:00" in capture(app).text.splitlines()[0], pilot, what="clock 0:00")
        assert app.screen.query_one(StatusBar).where == "Checklist"
        wall.at += timedelta(seconds=7)
        await wait_for(lambda: "deploy 0:07/15:00" in capture(app).text.splitlines()[0], pilot, what="clock 0:07")
        wall.at += timedelta(minutes=2)
        await wait_for(lambda: "deploy 2:07/15:00" in capture(app).text.splitlines()[0], pilot, what="clock 2:07")
        assert isinstance(app.screen, TypedConfirmDialog)  # still open all along


async def test_messages_go_to_one_line_literally_and_never_as_toasts(quiet: Sandbox, tmp_path: Path) -> None:
    loaded = load_config(quiet.config_path)
    app = make_app(loaded, write=True, start_polling=False, journal_dir=tmp_path, check_on_start=False,
                   offer_resume=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot, what="session")
        await pilot.press("d")
        assert isinstance(app.screen, DeployScreen)
        # A version typed as markup: refused by the engine, and the refusal shows it as typed.
        await pilot.press("s", *"[bold red]x", "enter")
        await wait_for(lambda: isinstance(app.screen, ReasonDialog) and "Override" in str(app.screen.title_text),
                       pilot, what="override dialog")
        assert "[bold red]x" in str(app.screen.title_text)
        await pilot.press(*"checking markup", "enter")
        await wait_for(lambda: "not a version" in message_line(app), pilot, what="the refusal")
        line = message_line(app)
        assert "'[bold red]x' is not a version" in line, line
        assert isinstance(app.screen, DeployScreen) and not app.screen.query(Toast)
        assert app.message is not None and app.message.severity == "error"
        await pilot.pause(0.3)
        assert "not a version" in message_line(app)  # an error stays…
        await pilot.press("down")
        assert message_line(app).strip() == ""  # …until a key

        # Markup asked for is still not interpreted; the newest message replaces the older.
        app.notify("first [b]one[/b]", markup=True, timeout=30)
        app.notify("second [link=https://evil.example]two[/link]", severity="warning", timeout=30)
        await pilot.pause()
        assert message_line(app).strip() == "second [link=https://evil.example]two[/link]"
        # Another view shows the same line; a dialog shows it too.
        await pilot.press("R")
        assert "second [link" in message_line(app)
        app.push_screen(ConfirmDialog(Text("[bold red]x?"), Text("[i]body[/i]")))
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog) and bool(app.screen.query(MessageLine)), pilot,
                       what="dialog")
        await pilot.pause()
        assert "second [link" in message_line(app)
        shot = capture(app).text
        assert "[bold red]x?" in shot and "[i]body[/i]" in shot
        app.notify("said while the dialog is open", timeout=30)
        await pilot.pause()
        assert "said while the dialog is open" in message_line(app)
        assert not any(screen.query(Toast) for screen in app.screen_stack)
        await pilot.press("escape")
        await pilot.pause()
        assert "said while the dialog is open" in message_line(app)


async def test_the_report_view_shows_markup_as_written(tmp_path: Path) -> None:
    """A reason typed as markup reaches the report as text; the report view shows it so."""
    from textual.app import App

    from controlroom.screens.report import ReportScreen

    class Host(App[None]):
        def on_mount(self) -> None:
            # A short path: a long one is cut with "…" before its name (pytest's tmp_path is long in CI).
            self.push_screen(ReportScreen(Path("/r/[red]x.report.md"), "# Report\n\n- **Why**: [bold red]x failed\n"))

    app = Host()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: "[bold red]x failed" in capture(app).text, pilot, what="the reason as typed")
        assert "[red]x.report.md" in capture(app).text
