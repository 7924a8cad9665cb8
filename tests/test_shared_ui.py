"""A watcher's control room at 80×24, on the sandbox's shared store: its screens follow the
driver's actions within a second, its header says who drives, its decision keys are refused
with the driver's name before any dialog, and when the driver's control room is gone a typed
T makes it the driver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine
from controlroom.release.rules import Command
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import TypedConfirmDialog
from controlroom.widgets.crew_banner import CrewBanner
from controlroom.widgets.step_log import StepLog
from controlroom.widgets.status_bar import StatusBar
from pilot_support import wait_for
from shared_support import ALICE, BOB, environment_config


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=30, simulate=False, journal_store="postgres") as running:
        yield running


def notifications(app: Any) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_watchers_screen_follows_the_driver_and_takes_over_when_it_is_gone(
        sandbox: Sandbox, tmp_path: Path) -> None:
    config = environment_config(sandbox.config_path, tmp_path, "shared ui")
    alice = ReleaseEngine.open(load_config(config), write=True, journal_dir=tmp_path / "bastion-1", operator=ALICE)
    app = make_app(load_config(config), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path / "bastion-2", operator=BOB)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: app.session is not None, pilot)
            assert any("You watch this release, driven by alice@bastion-1" in n for n in notifications(app))
            await pilot.press("d")
            await wait_for(lambda: isinstance(app.screen, DeployScreen), pilot)
            bar = app.screen.query_one(StatusBar)
            assert bar.crew == ("WATCHING alice@bastion-1 · 1 watch", "watching")

            # The driver acts; the watcher's Deploy screen shows it within a second.
            await alice.start_deploy("v2.15.0", override_reason="ui test")
            outcome = await alice.run_step("env-health")
            done_at = time.monotonic()
            table = app.screen.query_one("#deploy-steps")
            await wait_for(lambda: table.get_row("env-health")[0].plain == "DONE", pilot, timeout=5,
                           what="the watcher shows the driver's step")
            shown_after = time.monotonic() - done_at
            print(f"\ndriver's step outcome -> the watcher's screen: {shown_after * 1000:.0f} ms")
            assert outcome.status == "done" and shown_after < 1.0
            log = app.screen.query_one(StepLog)
            await wait_for(lambda: any("started by alice@bastion-1" in line for line in log.lines), pilot)
            await wait_for(lambda: any(line.startswith("→ Verify environment health") and "DONE" in line
                                       and line.endswith("(alice@bastion-1)") for line in log.lines), pilot)
            assert bar.deploy_clock is not None and "/15:00" in bar.deploy_clock

            # A decision key: refused up front, with who drives; no dialog opens.
            await pilot.press("x")
            await wait_for(lambda: any(n.startswith("driven by alice@bastion-1 since") for n in notifications(app)),
                           pilot)
            assert isinstance(app.screen, DeployScreen)
            await pilot.press("T")  # alice is still connected: not yet
            await wait_for(lambda: any(n.startswith("alice@bastion-1 still drives") for n in notifications(app)),
                           pilot)
            assert isinstance(app.screen, DeployScreen)

            # alice's control room goes away: the banner says so; T, typed, makes bob the driver.
            alice.close()
            banner = app.screen.query_one(CrewBanner)
            await wait_for(lambda: "alice@bastion-1's control room is gone" in banner.shown_text, pilot, timeout=5,
                           what="the banner")
            assert bar.crew == ("NO DRIVER · 1 watch", "nobody")
            await pilot.press("T")
            await wait_for(lambda: isinstance(app.screen, TypedConfirmDialog), pilot)
            await pilot.press(*"take over", "enter")
            await wait_for(lambda: app.session is not None and app.session.crew().driving, pilot, timeout=5,
                           what="bob drives")
            await wait_for(lambda: bar.crew == ("YOU DRIVE", "driving"), pilot)
            assert banner.shown_text == "" and not banner.display
            assert app.session.command_refusal(Command.RUN_STEP) is None  # type: ignore[union-attr]
            await pilot.press("q")
    finally:
        alice.close()
        await asyncio.sleep(0)


async def test_a_driver_named_with_markup_is_shown_as_text_and_a_bad_pass_does_not_stop_following(
        sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other operators' names reach every watcher's toasts and header: a `[` in them is text (it
    used to end the app with a MarkupError, or make a link). And one pass of the watch loop that
    fails is logged and said, and the next record is still followed."""
    config = environment_config(sandbox.config_path, tmp_path, "shared markup")
    odd = {"user": "al[/x]ice", "host": "[@click=app.quit]b1"}
    driver = ReleaseEngine.open(load_config(config), write=True, journal_dir=tmp_path / "odd", operator=odd)
    monkeypatch.setenv("CONTROLROOM_LOG_FILE", str(tmp_path / "log" / "controlroom.log"))
    app = make_app(load_config(config), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path / "bastion-2", operator=BOB)
    try:
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await wait_for(lambda: app.session is not None, pilot)
            await wait_for(lambda: any("driven by al[/x]ice@[@click=app.quit]b1" in n for n in notifications(app)),
                           pilot)
            await pilot.press("a")  # refused with the driver's name, as text
            await wait_for(lambda: any(n.startswith("driven by al[/x]ice") for n in notifications(app)), pilot)
            await pilot.pause(0.3)
            assert app.is_running and app.return_code is None

            calls = 0
            original = type(app)._show_what_others_journaled

            def fails_once(self: Any, records: list[Any]) -> None:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("a bad pass")
                original(self, records)

            monkeypatch.setattr(type(app), "_show_what_others_journaled", fails_once)
            await driver.start_deploy("v2.15.0", override_reason="markup test")
            await wait_for(lambda: any("following the shared journal: RuntimeError: a bad pass" in n
                                       for n in notifications(app)), pilot)
            driver.mark_done("env-health", "by hand")
            await wait_for(lambda: app.session is not None and app.session.state.steps.get("env-health") is not None,
                           pilot, timeout=5, what="still following after the bad pass")
            assert "a bad pass" in (tmp_path / "log" / "controlroom.log").read_text()
    finally:
        driver.close()


async def test_the_drivers_quit_question_names_who_can_take_over(sandbox: Sandbox, tmp_path: Path) -> None:
    """Quitting mid-deployment, the driver is told who can take over: watchers with --write,
    never a read-only one."""
    config = environment_config(sandbox.config_path, tmp_path, "shared quit")
    app = make_app(load_config(config), write=True, start_polling=False, check_on_start=False,
                   journal_dir=tmp_path / "bastion-1", operator=ALICE)
    carol = None
    bob = None
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(lambda: app.session is not None, pilot)
            await app.session.start_deploy("v2.15.0", override_reason="quit test")  # type: ignore[union-attr]
            carol = ReleaseEngine.open(load_config(config), write=False, journal_dir=tmp_path / "c",
                                       operator={"user": "carol", "host": "bastion-3"})
            await wait_for(lambda: app.session is not None and len(app.session.crew().members) == 2,  # type: ignore[union-attr]
                           pilot, timeout=5)
            question = app.quit_question()
            assert question is not None and "carol@bastion-3" not in question.plain
            assert "another operator with --write" in question.plain
            bob = ReleaseEngine.open(load_config(config), write=True, journal_dir=tmp_path / "b", operator=BOB)
            await wait_for(lambda: app.session is not None and len(app.session.crew().members) == 3,  # type: ignore[union-attr]
                           pilot, timeout=5)
            question = app.quit_question()
            assert question is not None and "bob@bastion-2 can take over (T)" in question.plain
            assert "carol" not in question.plain
    finally:
        for engine in (carol, bob):
            if engine is not None:
                engine.close()
