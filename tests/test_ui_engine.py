"""How the UI talks to the release engine, at 80×24 against a real sandbox: commands go out as
messages and come back as events; one place tells a refusal from a bug (and logs the bug's
traceback); the key bar dims what the engine refuses; the palette follows the bindings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.message import Message

from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog
from controlroom.widgets.key_bar import KeyBar
from controlroom.widgets.messages import Attest, CommandRefused, RunCheckItem, StartDeploy
from pilot_support import wait_for


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running




def notifications(app: Any) -> list[str]:
    return [str(n.message) for n in app._notifications]


def key_state(screen: Any, key: str) -> bool:
    """Whether the key bar shows `key` enabled (not dimmed)."""
    own, _, _ = screen.query_one(KeyBar)._groups()
    return next(enabled for display, _, enabled in own if display == key)


async def test_a_bug_is_logged_with_its_traceback_and_a_refusal_is_only_a_refusal(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "logs" / "controlroom.log"
    monkeypatch.setenv("CONTROLROOM_LOG_FILE", str(log))

    async def broken(self: ReleaseEngine, item_id: str) -> Any:
        raise ZeroDivisionError("the probe table is empty")

    monkeypatch.setattr(ReleaseEngine, "run_item", broken)
    seen: list[Message] = []
    app = make_app(load_config(sandbox.config_path), write=False, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path / "journal")
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        assert isinstance(app.screen, ChecklistScreen)
        await pilot.press("space")  # re-run the selected check: a bug in the engine
        await wait_for(lambda: any(isinstance(m, CommandRefused) for m in seen), pilot)
        assert any(isinstance(m, RunCheckItem) and m.origin is app.screen for m in seen)
        shown = [n for n in notifications(app) if "internal error (a bug)" in n]
        assert shown and "ZeroDivisionError" in shown[0] and str(log) in shown[0]
        text = log.read_text()
        assert "Traceback" in text and "ZeroDivisionError: the probe table is empty" in text
        assert oct(log.stat().st_mode & 0o777) == "0o600"

        # A refusal: said as such, no traceback.
        size = log.stat().st_size
        manual = app.session.attestable()[0]  # type: ignore[union-attr]
        app.screen.query_one("#checklist-table").move_cursor(row=app.screen.query_one("#checklist-table")
                                                             .get_row_index(manual))
        await pilot.press("a")  # refused before any dialog asks: the key bar had it dimmed
        await wait_for(lambda: any("READ-ONLY" in n for n in notifications(app)), pilot)
        assert isinstance(app.screen, ChecklistScreen)
        app.screen.command(Attest(manual))  # and if the command is given anyway, the engine refuses it
        await wait_for(lambda: any(isinstance(m, CommandRefused) and m.reason.startswith("READ-ONLY") for m in seen),
                       pilot)
        assert log.stat().st_size == size
        assert not list(app.session.journal.of_kind("attested"))  # type: ignore[union-attr]


async def test_the_key_bar_dims_what_the_engine_refuses(sandbox: Sandbox, tmp_path: Path) -> None:
    for write in (False, True):
        app = make_app(load_config(sandbox.config_path), write=write, start_polling=False, check_on_start=False,
                       journal_dir=tmp_path / f"journal-{write}")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: app.session is not None, pilot)
            await pilot.press("d")
            assert isinstance(app.screen, DeployScreen)
            await pilot.pause(0.1)
            assert key_state(app.screen, "s") is write  # start: a decision
            assert key_state(app.screen, "t") is True  # dry-run: only looks
            assert key_state(app.screen, "n") is False  # next phase: no deployment yet, either way
            assert key_state(app.screen, "f") is False


async def test_the_palette_is_built_from_the_bindings_so_a_remapped_key_stays_true(
        sandbox: Sandbox, tmp_path: Path) -> None:
    seen: list[Message] = []
    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path)
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        app.set_keymap({"deploy.start": "S"})
        await pilot.press("d")
        screen = app.screen
        commands = {command.title: command for command in app.get_system_commands(screen)}
        start = commands["Start the deployment"]
        assert start.help == "key S"
        assert commands["Deploy screen"].help == "key d"
        assert "Command palette" not in " ".join(commands)
        await pilot.press("S")  # the remapped key does what the palette says
        await wait_for(lambda: isinstance(app.screen, ReasonDialog), pilot)
        await pilot.press("escape")
        await wait_for(lambda: app.screen is screen, pilot)
        await start.callback()
        await pilot.press(*"v2.15.0", "enter")  # typed at once: the dialog gets every character  # then the override's reason: the verdict is not GO
        await wait_for(lambda: isinstance(app.screen, ReasonDialog) and app.screen is not screen, pilot)
        await pilot.pause(0.05)
        await pilot.press(*"trial of the palette", "enter")
        await wait_for(lambda: app.session is not None and app.session.state.in_progress, pilot)
        started = list({id(m): m for m in seen if isinstance(m, StartDeploy)}.values())  # seen again as it bubbles
        assert len(started) == 1 and started[0].origin is screen and started[0].version == "v2.15.0"


async def test_ctrl_p_opens_the_palette_on_every_screen_and_runs_a_command_by_name(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """Found by trying it: ctrl+p ended the control room on the screens whose key map shared
    a name with Textual's palette providers."""
    from textual.command import CommandPalette

    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        for view in "cdkbpR":
            await pilot.press(view)
            await pilot.press("ctrl+p")
            await wait_for(lambda: isinstance(app.screen, CommandPalette), pilot, what=f"palette on {view}")
            await pilot.press("escape")
            await wait_for(lambda: not isinstance(app.screen, CommandPalette), pilot)
        await pilot.press("d", "ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette), pilot)
        await pilot.press(*"start the deployment")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, ReasonDialog), pilot, what="the version dialog, from the palette")
        assert app.is_running


def burst(app: Any, *keys: str) -> None:
    """Keys as a fast typist or a paste delivers them: all at once, none waiting for the one
    before it to be acted on (what tmux send-keys does; pilot.press waits between keys)."""
    from textual import events

    characters = {"enter": "\r", "tab": "\t", "space": " ", "slash": "/"}
    for key in keys:
        app.post_message(events.Key(key, characters.get(key, key if len(key) == 1 else None)))


async def test_keys_typed_in_one_burst_act_in_the_order_they_were_typed(sandbox: Sandbox, tmp_path: Path) -> None:
    """Rule 6, at typing speed: `s v2.15.0 ⏎` gives the version dialog every character and
    answers it; what follows at once is dropped rather than glued onto the version or acted
    on by the screen behind; `a tab ⏎` presses the button tab moved to, not Cancel."""
    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await pilot.press("d")
        burst(app, "s", *"v2.15.0", "enter", *"tnx", "enter")
        await wait_for(lambda: isinstance(app.screen, ReasonDialog) and "Override" in app.screen.title_text.plain,
                       pilot, what="the override dialog")
        await pilot.pause(0.3)
        assert "deploy v2.15.0 while" in app.screen.title_text.plain  # the version, whole, nothing glued on
        assert app.screen.query_one("#reason").value in ("", "tnx")
        assert app.session is not None and not app.session.state.started_at  # t, n, x did nothing behind
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, DeployScreen), pilot)

        # In a text dialog too: tab moves to Cancel before enter presses it (enter used to submit
        # the field first, and tab moved the focus after).
        burst(app, "s", "tab", "enter")
        await pilot.pause(0.8)
        assert isinstance(app.screen, DeployScreen), (app.screen, app.screen.focused)
        assert not app.session.state.started_at

        await pilot.press("c", "n")
        item = app.screen.selected_item()
        burst(app, "a", "tab", "enter")
        await wait_for(lambda: item in app.session.attestations(), pilot, what="attested by a tab ⏎ burst")


async def test_a_cancelled_dialog_gives_the_screen_its_keys_back(sandbox: Sandbox, tmp_path: Path) -> None:
    """While a dialog closes the screen's keys are held back (rule 6); afterwards the key bar
    shows them again (it used to keep only the screen switches after esc)."""
    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path / "journal")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        bar = app.screen.query_one(KeyBar)
        await wait_for(lambda: "a attest" in bar.shown.plain, pilot)
        await pilot.press("n", "a")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ChecklistScreen), pilot)
        await wait_for(lambda: "a attest" in bar.shown.plain and "n next" in bar.shown.plain, pilot, timeout=3,
                       what="the checklist's keys back on the key bar")


async def test_a_filter_typed_in_one_burst_is_the_filters(sandbox: Sandbox, tmp_path: Path) -> None:
    """`/backup⏎` pasted or typed fast: the letters after `/` reached the table before the
    filter field had the focus, and acted as the view's keys (a attested, c k p switched
    views). They are the filter's."""
    from controlroom.screens.checklist import ChecklistScreen

    app = make_app(load_config(sandbox.config_path), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        screen = app.screen
        assert isinstance(screen, ChecklistScreen)
        burst(app, "slash", *"backup", "enter")
        await wait_for(lambda: screen.filter_text == "backup" and app.focused is screen.query_one("#checklist-table"),
                       pilot, what="the filter applied")
        assert app.screen is screen and app.current_mode == "checklist"  # no view switched, no dialog
        assert screen.query_one("#checklist-table").is_shown("backups")
        assert not app.session.attestations()
