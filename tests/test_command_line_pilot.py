"""The `:` command line, esc back and `!`, driven by keys at 80×24 against a real sandbox: a
command typed after `:` runs its key's own action, so the same dialog asks, the same record
is journaled and the same refusal is said; esc walks back through the views shown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input

from controlroom.config.loader import load_config
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.breakers import BreakersScreen
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.command_line import CommandLineScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog
from controlroom.screens.kpis import KpisScreen
from controlroom.screens.rollback import RollbackScreen
from controlroom.widgets.command_line import CommandInput, CommandLine
from pilot_support import notifications, wait_for


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


def room(sandbox: Sandbox, tmp_path: Path, **options: Any) -> Any:
    return make_app(load_config(sandbox.config_path), start_polling=False, check_on_start=False,
                    journal_dir=tmp_path, **options)


async def opened(app: Any, pilot: Any) -> Any:
    """The app's release engine, once its journal is open."""
    await wait_for(lambda: app.session is not None, pilot)
    return app.session


async def command(pilot: Any, line: str) -> None:
    await pilot.press("colon", *line, "enter")


async def test_views_by_name_and_esc_walks_back_through_them(sandbox: Sandbox, tmp_path: Path) -> None:
    app = room(sandbox, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await pilot.press("escape")  # the first view: nothing to go back to
        assert isinstance(app.screen, ChecklistScreen)
        await pilot.press("b")
        await pilot.press("slash", *"zz", "enter")  # a filter on the breakers
        await pilot.press("d")
        await command(pilot, "rollback")
        await wait_for(lambda: isinstance(app.screen, RollbackScreen), pilot, what=":rollback")
        await command(pilot, "k")  # a view's key is its short name
        await wait_for(lambda: isinstance(app.screen, KpisScreen), pilot, what=":k")
        for shown in (RollbackScreen, DeployScreen, BreakersScreen):
            await pilot.press("escape")
            await wait_for(lambda: isinstance(app.screen, shown), pilot, what=f"back to {shown.__name__}")
        # On the breakers, esc clears the filter first, as it always did; then it goes back.
        assert app.screen.filter_text == "zz"
        await pilot.press("escape")
        await wait_for(lambda: app.screen.filter_text == "", pilot, what="filter cleared")
        assert isinstance(app.screen, BreakersScreen)
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ChecklistScreen), pilot, what="back to the checklist")
        await pilot.press("escape")
        assert isinstance(app.screen, ChecklistScreen)

        # The command line closes with esc, and only it: the view stays.
        await pilot.press("colon", *"dep")
        assert isinstance(app.screen, CommandLineScreen)
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ChecklistScreen), pilot)
        await pilot.pause(0.1)
        assert isinstance(app.screen, ChecklistScreen)


async def test_tab_completes_and_an_unknown_command_is_named_with_its_nearest(
        sandbox: Sandbox, tmp_path: Path) -> None:
    app = room(sandbox, tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        manual = app.session.attestable()[0]  # type: ignore[union-attr]
        await pilot.press("colon", *"att", "tab")
        field = app.screen.query_one(CommandInput)
        assert field.value == "attest "
        await pilot.press("tab")  # the manual items: the only ones to attest
        hint = app.screen.query_one("#command-hint")
        assert manual in str(hint.render())
        await pilot.press("ctrl+u", *"rollbak", "enter")
        await pilot.pause(0.05)
        assert isinstance(app.screen, CommandLineScreen)  # stays, to be fixed
        assert "unknown command :rollbak (did you mean rollback?)" in str(hint.render())
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ChecklistScreen), pilot)


async def test_attest_by_name_asks_as_a_does_and_journals_the_same(sandbox: Sandbox, tmp_path: Path) -> None:
    app = room(sandbox, tmp_path, write=True)
    async with app.run_test(size=(80, 24)) as pilot:
        session = await opened(app, pilot)
        first, second = session.attestable()[:2]
        # By key: select it, a.
        await pilot.press("d")  # from another view: the command line goes to the checklist itself
        await pilot.press("c")
        app.screen.select_row(first)
        await pilot.press("a")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot)
        by_key = app.screen
        await pilot.press("tab", "enter")
        await wait_for(lambda: first in session.attestations(), pilot, what="attested by a")
        # By name, from the deploy view.
        await pilot.press("d")
        await command(pilot, f"attest {second}")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="the attest dialog")
        by_name = app.screen
        assert type(by_name) is type(by_key)
        assert by_name.title_text.plain.startswith("Attest: ")
        assert "Recorded in the journal as attested by" in by_name.body.plain
        await pilot.press("tab", "enter")
        await wait_for(lambda: second in session.attestations(), pilot, what="attested by :attest")
        assert isinstance(app.screen, ChecklistScreen) and app.screen.selected_item() == second
        records = [r for r in session.journal.of_kind("attested")]
        assert [r.data.get("item_id") for r in records] == [first, second]
        assert set(records[0].data) == set(records[1].data) and records[0].operator == records[1].operator


async def test_a_refusal_by_name_is_the_refusal_of_the_key(sandbox: Sandbox, tmp_path: Path) -> None:
    app = room(sandbox, tmp_path, write=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        manual = app.session.attestable()[0]  # type: ignore[union-attr]
        app.screen.select_row(manual)
        await pilot.press("a")
        await wait_for(lambda: any("READ-ONLY" in n for n in notifications(app)), pilot)
        by_key = [n for n in notifications(app) if "READ-ONLY" in n]
        app.clear_notifications()
        await command(pilot, f"attest {manual}")
        await wait_for(lambda: any("READ-ONLY" in n for n in notifications(app)), pilot)
        assert [n for n in notifications(app) if "READ-ONLY" in n] == by_key
        assert isinstance(app.screen, ChecklistScreen)  # no dialog asked
        step = app.config.runbook.deployment.phases[0].steps[0].id
        app.clear_notifications()
        await pilot.press("d", "z")
        await wait_for(lambda: len(notifications(app)) > 0, pilot)
        skip_by_key = notifications(app)
        app.clear_notifications()
        await command(pilot, f"skip {step} not needed today")
        await wait_for(lambda: len(notifications(app)) > 0, pilot)
        assert notifications(app) == skip_by_key
        assert not list(app.session.journal.of_kind("attested"))  # type: ignore[union-attr]


async def test_keys_typed_fast_after_a_command_answer_it_once(sandbox: Sandbox, tmp_path: Path) -> None:
    """Enter, then tab and enter before the command line has gone (a tired operator's
    fingers): the command runs once and the view under it stays (a second answer popped it)."""
    app = room(sandbox, tmp_path, write=False)
    async with app.run_test(size=(80, 24)) as pilot:
        manual = (await opened(app, pilot)).attestable()[0]
        await pilot.press("colon", *f"attest {manual}")
        line = app.screen.query_one(CommandLine)
        for _ in range(2):  # two enters in before the first one's answer has closed the line
            line.post_message(CommandLine.Submitted(f"attest {manual}"))
        await wait_for(lambda: any("READ-ONLY" in n for n in notifications(app)), pilot)
        await pilot.pause(0.2)
        assert isinstance(app.screen, ChecklistScreen) and app.is_running
        assert len([n for n in notifications(app) if "READ-ONLY" in n]) == 1


async def test_no_shell_for_a_browser_session_nor_where_the_terminal_cannot_be_suspended(
        sandbox: Sandbox, tmp_path: Path) -> None:
    app = room(sandbox, tmp_path, shell=False)  # as `controlroom serve` opens it (cli.tui.run_read_only)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None, pilot)
        await pilot.press("exclamation_mark")
        await wait_for(lambda: len(notifications(app)) > 0, pilot)
        assert notifications(app) == ["No shell here: this is a browser session of `controlroom serve` "
                                      "(read-only, for watchers)"]
        app.clear_notifications()
        await command(pilot, "shell")  # by name: the same refusal
        await wait_for(lambda: len(notifications(app)) > 0, pilot)
        assert notifications(app)[0].startswith("No shell here: this is a browser session")
    headless = room(sandbox, tmp_path)
    async with headless.run_test(size=(80, 24)) as pilot:  # a driver that cannot suspend (as Textual's web one)
        await pilot.press("exclamation_mark")
        await wait_for(lambda: len(notifications(headless)) > 0, pilot)
        assert notifications(headless) == ["No shell here: this terminal cannot be suspended (a browser or a "
                                           "headless run)"]


async def test_skip_by_name_opens_the_skip_dialog_with_the_reason_typed_in(sandbox: Sandbox, tmp_path: Path) -> None:
    app = room(sandbox, tmp_path, write=True)
    async with app.run_test(size=(80, 24)) as pilot:
        session = await opened(app, pilot)
        await session.start_deploy("v2.15.0", override_reason="a test of the command line")
        app.session_changed()
        step = app.config.runbook.deployment.phases[0].steps[1].id
        await command(pilot, f"skip {step} checked by hand already")
        await wait_for(lambda: isinstance(app.screen, ReasonDialog), pilot, what="the skip dialog")
        await wait_for(lambda: app.screen.query_one("#reason", Input).value == "checked by hand already", pilot,
                       what="the reason typed in")
        assert app.screen.title_text.plain.startswith("Skip: ")
        await pilot.press("enter")  # the operator confirms it
        def skipped() -> list[Any]:
            return [r for r in session.journal.of_kind("step_outcome")
                    if r.data.get("step_id") == step and r.data.get("status") == "skipped"]

        await wait_for(lambda: bool(skipped()), pilot, what="skip journaled")
        assert skipped()[0].data["reason"] == "checked by hand already"


async def test_a_command_naming_a_row_the_filter_hides_shows_it_and_acts_on_it(sandbox: Sandbox, tmp_path: Path) -> None:
    """`/` keeps a filter that hides the item; `:attest ITEM` must attest ITEM, not the row the
    cursor was on: the filter is cleared and the cursor goes to the item named."""
    app = room(sandbox, tmp_path, write=True)
    async with app.run_test(size=(80, 24)) as pilot:
        session = await opened(app, pilot)
        first, second = session.attestable()[:2]
        screen = app.screen
        assert isinstance(screen, ChecklistScreen)
        titles = {item.id: item.title for _, item in session.loaded.runbook.items()}
        needle = next(word for word in titles[first].split()
                      if len(word) > 4 and word.lower() not in titles[second].lower())
        await pilot.press("slash", *needle, "enter")
        table = screen.query_one("#checklist-table")
        assert screen.filter_text and table.is_shown(first) and not table.is_shown(second)
        await command(pilot, f"attest {second}")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog), pilot, what="the attest dialog")
        assert second in app.screen.title_text.plain or second in app.screen.body.plain
        await pilot.press("tab", "enter")
        await wait_for(lambda: second in session.attestations(), pilot, what="attested by :attest")
        assert first not in session.attestations() and screen.filter_text == ""
        assert app.screen.selected_item() == second
