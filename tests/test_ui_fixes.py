"""The new-user trial's UI fixes, driven by keyboard at 80×24: the resume dialog's keys, asking
before quitting a deployment, the key bar fitting 80 columns, the deploy cursor and `x`, a
finished deployment, the checklist's `n`, the typed confirmation and the report's path.

No sandbox: the config is the snapshot tests' (fake URLs), and steps run through a patched
StepRunner.run, so nothing reaches out; the journal is the session's own, in tmp_path.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, DataTable, Input, Log, Static

from controlroom.config.loader import LoadedConfig, load_config
from controlroom.screens.app import ControlRoomApp, make_app
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog, TypedConfirmDialog
from controlroom.screens.report import ReportScreen
from controlroom.release.engine import ReleaseEngine, SessionError
from controlroom.release.incident import Incident
from controlroom.release.steps import StepOutcome, StepRunner
from controlroom.widgets.key_bar import KeyBar

from snapshot_support import check_report, check_results, config_toml
from pilot_support import wait_for

DEPLOY_STEPS = ["env-health", "breaker-status", "rotation-capability"]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def config(tmp_path: Path) -> LoadedConfig:
    """The snapshot tests' config, with a deploy command so `deploy-code` can run (patched)."""
    path = tmp_path / "controlroom.toml"
    path.write_text(config_toml().replace("[environment.urls]", 'deploy_command = "true"\n\n[environment.urls]'))
    return load_config(path, environ={})


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Steps do not run: StepRunner.run answers at once (and records what it was asked); no
    git, no checklist probes."""
    ran: list[str] = []

    async def fake_run(self: StepRunner, step: Any, values: Any = None, on_output: Any = None) -> StepOutcome:
        ran.append(step.id)
        if on_output is not None:
            on_output(f"ran {step.id}")
        return StepOutcome("done", f"{step.id} ok")

    async def no_git(self: ReleaseEngine, version: str = "") -> str:
        return "0f3c9a1e"

    monkeypatch.setattr(StepRunner, "run", fake_run)
    monkeypatch.setattr(ReleaseEngine, "_git_sha", no_git)
    return ran


def build(loaded: LoadedConfig, tmp_path: Path, clock: Clock, **kwargs: Any) -> ControlRoomApp:
    options: dict[str, Any] = dict(write=True, start_polling=False, journal_dir=tmp_path / "journal", now=clock,
                                   check_on_start=False, offer_resume=False)
    options.update(kwargs)
    return make_app(loaded, **options)




def notes_of(app: ControlRoomApp) -> list[str]:
    """Every notification the app shows from now on, as text."""
    notes: list[str] = []
    original = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        notes.append(str(message))
        original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return notes


def log_text(screen: Any, selector: str) -> str:
    return "\n".join(str(line) for line in screen.query_one(selector, Log).lines)


async def journal_with_cancelled_step(loaded: LoadedConfig, tmp_path: Path, clock: Clock,
                                      monkeypatch: pytest.MonkeyPatch) -> Path:
    """A deployment left in progress: phase 1 with env-health done and breaker-status cancelled
    by closing the control room (the real cancellation path of ReleaseEngine.run_step)."""
    session = ReleaseEngine.open(loaded, journal_dir=tmp_path / "journal", clock=clock, write=True)
    await session.start_deploy("v2.15.0", override_reason="trial: no checklist in this test")
    session.mark_done("env-health")

    async def hangs(self: StepRunner, step: Any, values: Any = None, on_output: Any = None) -> StepOutcome:
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    with monkeypatch.context() as patch:
        patch.setattr(StepRunner, "run", hangs)
        task = asyncio.ensure_future(session.run_step("breaker-status"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert session.state.steps["breaker-status"].status == "failed"
    session.close()
    return session.journal.path


# -- 1. the resume dialog (and 3., 6. after resuming) -------------------------------------------

async def test_resume_dialog_keys_and_what_resuming_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    loaded = config(tmp_path)
    path = await journal_with_cancelled_step(loaded, tmp_path, clock, monkeypatch)

    # New session: tab, shift+tab, ← and → only ever move between the two buttons; esc = New session.
    app = build(loaded, tmp_path, clock, offer_resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        dialog = app.screen
        labels = [str(button.label) for button in dialog.query(Button)]
        assert labels == ["New session", "Resume"]
        body = str(dialog.query_one(".dialog-body Static", Static).render())
        assert "esc" in body and "enter" in body and "New session" in body
        assert app.focused is not None and app.focused.id == "confirm"  # Resume is the default
        seen = []
        for key in ("tab", "tab", "shift+tab", "shift+tab", "right", "right", "left"):
            await pilot.press(key)
            seen.append(app.focused.id if app.focused is not None else None)
        assert seen == ["cancel", "confirm", "cancel", "confirm", "cancel", "confirm", "cancel"]
        await pilot.press("escape")
        await wait_for(lambda: app.session is not None, pilot)
        assert not app.session.resumed and app.session.journal.path != path

    # Tab then enter presses New session (no more "enter does nothing").
    app = build(loaded, tmp_path, clock, offer_resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("tab", "enter")
        await wait_for(lambda: app.session is not None, pilot)
        assert not app.session.resumed

    # Enter resumes: the deploy screen's cursor is on the current phase's first unfinished step
    # (the cancelled one), and the empty log says why it failed.
    app = build(loaded, tmp_path, clock, offer_resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("enter")
        await wait_for(lambda: app.session is not None, pilot)
        assert app.session.resumed and app.session.journal.path == path
        await pilot.press("d")
        deploy = app.screen
        assert isinstance(deploy, DeployScreen)
        await pilot.pause()
        assert deploy.selected_step() == "breaker-status"
        assert deploy.query_one("#deploy-steps", DataTable).get_row("breaker-status")[0].plain == "FAIL"
        text = log_text(deploy, "#deploy-log")
        assert "FAIL" in text and "cancelled; the control room was closed" in text
        # Another step selected: its outcome (or the placeholder) instead.
        await pilot.press("up")
        assert "marked done by the operator" in log_text(deploy, "#deploy-log")
        await pilot.press("down", "down")
        assert log_text(deploy, "#deploy-log") == "Step output appears here."


async def test_resuming_a_journal_another_live_process_holds_says_so_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The orphan case: a control room whose terminal went away still has the journal open.
    The reopened one names it (host, pid, since when) before anything else; esc quits."""
    clock = Clock()
    loaded = config(tmp_path)
    path = await journal_with_cancelled_step(loaded, tmp_path, clock, monkeypatch)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_JOURNAL, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        app = build(loaded, tmp_path, clock, offer_resume=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
            await pilot.press("enter")  # Resume
            await wait_for(lambda: getattr(app.screen, "id", None) == "shared-journal-dialog", pilot)
            body = str(app.screen.query_one(".dialog-body Static", Static).render())
            assert f"pid {holder.pid} on {socket.gethostname()}" in body and "since 20" in body
            assert f"kill {holder.pid}" in body
            opened = [r for r in app.session.journal.records if r.kind == "session_resumed"][-1]
            assert f"pid {holder.pid}" in opened.data["also_open_in"]
            assert app.focused is not None and app.focused.id == "cancel"  # Quit is the default
            await pilot.press("escape")
            await pilot.pause()
            assert not app.is_running
    finally:
        holder.kill()
        holder.wait()
    # Once that process is gone (kill -9 included), the journal opens without a word.
    app = build(loaded, tmp_path, clock, offer_resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("enter")
        await wait_for(lambda: app.session is not None, pilot)
        await pilot.pause(0.1)
        assert app.session.journal.other_holder is None and not isinstance(app.screen, ConfirmDialog)


HOLD_JOURNAL = """
import sys, time
from pathlib import Path
from controlroom.release.journal import Journal
journal = Journal.open(Path(sys.argv[1]), claim=True)
assert journal.other_holder is None
print("holding", flush=True)
time.sleep(60)
"""


# -- 2. quitting during a deployment asks first ---------------------------------------------------

async def test_quit_asks_during_a_deployment(tmp_path: Path) -> None:
    clock = Clock()
    loaded = config(tmp_path)

    app = build(loaded, tmp_path, clock)  # nothing in progress: q quits at once
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running

    app = build(loaded, tmp_path, clock, offer_resume=True)  # a resumable environment: says so
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await app.session.start_deploy("v2.15.0", override_reason="trial: no checklist in this test")
        for key in ("q", "ctrl+c"):
            await pilot.press(key)
            dialog = app.screen
            assert isinstance(dialog, ConfirmDialog), key
            body = str(dialog.body)
            assert "A deployment of v2.15.0 is in progress (phase Pre-Deployment)" in body
            assert "Quit anyway?" in body and "reopening resumes it" in body
            assert app.focused is not None and app.focused.id == "cancel"  # Cancel is the default
            await pilot.press("q")  # asking already: another q does not quit
            assert app.screen is dialog and app.is_running
            await pilot.press("enter")  # Cancel
            assert not isinstance(app.screen, ConfirmDialog) and app.is_running

        app.session.running_step = "env-health"  # as while a step runs
        await pilot.press("q")
        body = str(app.screen.body)
        assert "and step Verify environment health (Supabase REST) is running" in body
        assert "Quitting cancels it; the step is journaled as failed: cancelled" in body
        app.session.running_step = None
        await pilot.press("tab", "enter")  # Quit
        await pilot.pause()
        assert not app.is_running


# -- 5. the key bar: every key at 80 columns -----------------------------------------------------

async def test_key_bar_shows_every_key_at_80_columns(tmp_path: Path) -> None:
    clock = Clock()
    app = build(config(tmp_path), tmp_path, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        for key in ("c", "d", "k", "b", "p", "R"):
            await pilot.press(key)
            await pilot.pause()
            screen = app.screen
            bar = screen.query_one(KeyBar)
            text = bar.shown
            shown = text.plain
            assert shown == str(bar.render())
            assert text.cell_len <= 80, (key, shown)
            assert "…" not in shown, (key, shown)
            for binding in screen.BINDINGS:
                if binding.show:
                    display = binding.key_display or app.get_key_display(binding)
                    assert f"{display} {binding.description}" in shown, (key, binding.key, shown)
            for view in "cdkbpR":
                assert view in shown
            assert "? help" in shown and "q quit" in shown, shown
            # The current screen's key is emphasised, the others not.
            current = [span for span in text.spans if text.plain[span.start:span.end] == key
                       and "reverse" in str(span.style)]
            assert current, (key, shown)
            others = [span for span in text.spans if text.plain[span.start:span.end] in set("cdkbpR") - {key}]
            assert len(others) == 5 and not any("reverse" in str(span.style) for span in others), (key, shown)


# -- 6. the deploy cursor and x ---------------------------------------------------------------

async def test_deploy_x_runs_read_only_steps_at_once_and_moves_on(tmp_path: Path, no_io: list[str]) -> None:
    clock = Clock()
    app = build(config(tmp_path), tmp_path, clock, write=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        session = app.session
        await pilot.press("d")
        deploy = app.screen
        assert isinstance(deploy, DeployScreen)
        await session.start_deploy("v2.15.0", override_reason="trial: no checklist in this test")
        app.session_changed()
        table = deploy.query_one("#deploy-steps", DataTable)

        # x on the phase heading: its first unfinished step runs (a probe: no confirmation).
        table.move_cursor(row=table.get_row_index("phase:pre"))
        await pilot.press("x")
        assert app.screen is deploy
        await wait_for(lambda: no_io == ["env-health"] and session.running_step is None, pilot)
        await wait_for(lambda: deploy.selected_step() == "breaker-status", pilot)  # moved on
        # x, x: the next ones, each followed by the cursor.
        await pilot.press("x")
        await wait_for(lambda: deploy.selected_step() == "rotation-capability", pilot)
        await pilot.press("x")
        await wait_for(lambda: no_io == DEPLOY_STEPS and session.running_step is None, pilot)
        await wait_for(lambda: deploy.selected_phase() == "pre", pilot)  # phase done: its heading
        assert "n starts the next phase" in log_text(deploy, "#deploy-log")
        await pilot.press("x")  # nothing left in this phase: says so
        assert no_io == DEPLOY_STEPS

        await pilot.press("n")
        assert session.current_phase().id == "deploy" and deploy.selected_step() == "deploy-code"
        # A modifying step keeps its confirmation (Cancel first).
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("enter")
        assert app.screen is deploy and "deploy-code" not in no_io
        await pilot.press("x")
        await pilot.press("tab", "enter")
        await wait_for(lambda: "deploy-code" in no_io and session.running_step is None, pilot)
        await wait_for(lambda: deploy.selected_step() == "verify-edge-functions", pilot)
        # m (mark done, confirmed) moves the cursor on too.
        await pilot.press("m", "tab", "enter")
        await wait_for(lambda: deploy.selected_step() == "smoke-tests", pilot)


# -- 4. and 7. a finished deployment ------------------------------------------------------------

async def test_finished_deployment_refuses_s_and_shows_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    app = build(config(tmp_path), tmp_path, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        session = app.session
        await session.start_deploy("v2.15.0", override_reason="trial: no checklist in this test")
        session.mark_done("env-health")

        async def fails(self: StepRunner, step: Any, values: Any = None, on_output: Any = None) -> StepOutcome:
            return StepOutcome("failed", "circuit-breakers fail: 3 open")

        monkeypatch.setattr(StepRunner, "run", fails)
        await session.run_step("breaker-status")
        clock.now += timedelta(minutes=3)
        with pytest.raises(SessionError, match="cannot finish as a success"):
            session.finish_deploy("success")  # a failed step: never a success
        assert session.finish_outcome() == "failed"
        session.finish_deploy()
        notes = notes_of(app)
        await pilot.press("d")
        deploy = app.screen
        assert isinstance(deploy, DeployScreen)
        deploy.render_deploy()
        row = deploy.query_one("#deploy-steps", DataTable).get_row("phase:pre")
        assert row[0].plain == "✗" and "red" in str(row[0].style)
        assert "✓" not in row[0].plain and "done" not in row[2].plain and "failed" in row[2].plain
        header = str(deploy.query_one("#deploy-clocks", Static).render())
        assert "finished: failed" in header

        await pilot.press("s")  # refused at once: no version asked, no reason asked
        assert app.screen is deploy and not isinstance(app.screen, ReasonDialog)
        assert any("is finished (failed)" in note for note in notes), notes


# -- 11. the checklist: n to the next item waiting, a on an attested item -----------------------

async def test_checklist_n_jumps_to_waiting_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    app = build(config(tmp_path), tmp_path, clock)
    report = check_report(app.config, check_results(app.config, attested=False))

    async def fixed_run_checklist(loaded: Any, attested: Any = (), *, environ: Any = None, on_result: Any = None) -> Any:
        return report

    monkeypatch.setattr("controlroom.release.engine.run_checklist", fixed_run_checklist)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await app.session.run_checks()
        app.session_changed()
        screen = app.screen
        assert isinstance(screen, ChecklistScreen)
        waiting = screen.waiting_items()
        assert waiting == app.session.attestable() and len(waiting) >= 2
        keys = 0
        for item_id in waiting:
            await pilot.press("n")
            keys += 1
            assert screen.selected_item() == item_id
            await pilot.press("a", "tab", "enter")
            keys += 3
            assert item_id in app.session.attestations()
        assert keys == 4 * len(waiting)
        notes = notes_of(app)
        await pilot.press("n")
        assert any("No item waits" in note for note in notes)
        await pilot.press("a")  # on an attested item: says so, no dialog
        assert app.screen is screen
        assert any("already attested" in note for note in notes), notes


# -- 8. the typed confirmation ---------------------------------------------------------------------

async def test_typed_confirmation_shows_the_word_in_the_text_not_the_placeholder(tmp_path: Path) -> None:
    app = build(config(tmp_path), tmp_path, Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        results: list[bool | None] = []
        app.push_screen(TypedConfirmDialog("Run: switch", "It switches.", "v2.14.0"), results.append)
        await pilot.pause()
        dialog = app.screen
        field = dialog.query_one(Input)
        assert field.placeholder == "type it here" and field.value == ""
        texts = [str(static.render()) for static in dialog.query(Static)]
        assert any("Type v2.14.0 exactly" in text for text in texts), texts
        await pilot.press(*"v2.14.0", "enter")
        assert results == [True]


# -- 9. the report view: the path, no toast over it ------------------------------------------------

async def test_report_view_shows_its_path(tmp_path: Path) -> None:
    deep = tmp_path / "a-rather-long-directory-name" / "for-the-operator-on-call" / "journals-of-production"
    app = build(config(tmp_path), deep, Clock())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        notes = notes_of(app)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ReportScreen)
        shown = str(app.screen.query_one("#report-path", Static).render())
        assert shown.startswith("written to /")
        assert shown.removeprefix("written to ").replace("\n", "") == str(app.report_path())
        assert notes == []  # the path is in the view: no toast covering the report


async def test_esc_on_the_resume_dialog_never_strands_the_operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Esc (New session), then R s: refused with the way out; R a adopts the live release by
    keys at 80x24, and s then starts its rollback."""
    clock = Clock()
    loaded = config(tmp_path)
    await journal_with_cancelled_step(loaded, tmp_path, clock, monkeypatch)
    app = build(loaded, tmp_path, clock, offer_resume=True)
    notes = notes_of(app)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("escape")
        await wait_for(lambda: app.session is not None, pilot)
        await pilot.press("R", "s")
        assert not isinstance(app.screen, ReasonDialog)
        await pilot.pause()
        assert any("adopt it first (a)" in note for note in notes), notes
        assert "adopt it first (a)" in log_text(app.screen, "#rb-log")
        await pilot.press("a")
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press(*"v2.15.0", "enter")
        await wait_for(lambda: isinstance(app.screen, ReasonDialog) and "Adopt" in str(app.screen.title_text), pilot)
        await pilot.press(*"deployed by CI at 03:02", "enter")
        await wait_for(lambda: app.session.state.adopted, pilot)
        assert app.session.state.version == "v2.15.0" and app.session.start_refusal() is None
        await pilot.press("s")
        assert isinstance(app.screen, ReasonDialog)  # the rollback asks why: it can start now
        await pilot.press("escape")


async def test_keys_typed_while_a_dialog_opens_never_reach_the_screen_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 5, rule 6: a resumed rollback selects its next open step, so x picks it; the
    row count takes a moment, and 'fudo' typed meanwhile must not switch to Deploy (d) or
    finish anything (f): those keys are dropped, and the typed confirmation opens on the
    Rollback screen."""
    from controlroom.screens.rollback import RollbackScreen
    from controlroom.release.steps import DryRun

    clock = Clock()
    loaded = config(tmp_path)
    writer = ReleaseEngine.open(loaded, write=True, journal_dir=tmp_path / "journal", clock=clock)
    await writer.start_deploy("v2.15.0", override_reason="trial: no checklist in this test")

    async def no_trigger(self: Any, plan: Any, values: Any, reason: str = "") -> list[str]:
        return []

    monkeypatch.setattr(Incident, "trigger", no_trigger)
    await writer.start_rollback("emergency", "smoke tests failed", "fudo", version="v2.14.0")
    writer.mark_rollback_step_done("switch-version", "done by hand")
    writer.close()

    async def slow_count(self: StepRunner, step: Any, values: Any = None) -> DryRun:
        await asyncio.sleep(0.6)
        return DryRun("UPDATE … WHERE provider = $1  ($1 = 'fudo')", count=42)

    monkeypatch.setattr(StepRunner, "dry_run", slow_count)
    app = build(loaded, tmp_path, clock, offer_resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("enter")  # resume
        await wait_for(lambda: app.session is not None and app.session.resumed, pilot)
        await pilot.press("R")
        rollback = app.screen
        assert isinstance(rollback, RollbackScreen)
        await pilot.pause()
        assert rollback.selected() == ("emergency", "disable-provider")  # the next open step
        await pilot.press("x", "f", "u", "d", "o")  # typed ahead of the dialog
        assert app.screen is rollback and not app.session.state.ended_at
        await wait_for(lambda: isinstance(app.screen, TypedConfirmDialog), pilot)
        assert "42 row(s)" in str(app.screen.body)
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is rollback and not rollback.awaiting_dialog
        await pilot.press("d")  # and afterwards keys work again
        assert isinstance(app.screen, DeployScreen)


async def test_a_tick_or_a_poll_while_the_screens_close_draws_nothing(tmp_path: Path) -> None:
    """Textual removes each screen's widgets before it stops the app's timers: the clock's
    tick, or a poll landing then, found a checklist screen without its table (NoMatches; the
    control room closed with a traceback instead of quietly). Both now come to nothing."""
    from controlroom.live.polling import PollState
    from controlroom.widgets.messages import Polled

    app = build(config(tmp_path), tmp_path, Clock())
    errors: list[BaseException] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        assert isinstance(app.screen, ChecklistScreen)
        prune = app._prune

        async def prune_then_tick(*nodes: Any, parent: Any = None) -> None:
            await prune(*nodes, parent=parent)
            for late in (app._tick, lambda: app.on_polled(Polled("kpi:error-rate", PollState("kpi:error-rate", 5.0)))):
                try:
                    late()
                except Exception as error:  # noqa: BLE001 - what the timer would have raised
                    errors.append(error)

        app._prune = prune_then_tick  # type: ignore[method-assign]
    assert not app.is_running
    assert errors == []
