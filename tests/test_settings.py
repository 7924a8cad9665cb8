"""Personal settings (settings.toml): keys remapped through Textual's keymap and checked at
start-up, the theme, and the bell — which rings on what went wrong, and only then."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from textual.app import App

from controlroom.config.loader import load_config
from controlroom.config.settings import SETTINGS_VARIABLE
from controlroom.errors import ConfigError
from controlroom.sandbox.runner import Sandbox
from controlroom.screens.app import make_app
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog
from controlroom.screens.help import HelpScreen
from controlroom.screens.keymap import checked_settings
from controlroom.widgets.key_bar import KeyBar
from pilot_support import wait_for


def settings_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def controlroom(*args: str, settings: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, SETTINGS_VARIABLE: str(settings)}
    return subprocess.run([sys.executable, "-m", "controlroom", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def personal(path: Path) -> dict[str, object]:
    settings, keymap, _ = checked_settings(path)
    return {"settings": settings, "keymap": keymap}


@pytest.fixture
def bells(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ring that reaches Textual (the app's own bell() passes it on unless silenced)."""
    rung: list[str] = []
    monkeypatch.setattr(App, "bell", lambda self: rung.append("ding"))
    return rung


# -- the file, checked ----------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ('[keys]\n"deploy.start" = "t"\n',
     """keys."deploy.start": 't' is already 'deploy.dry_run' on the Deploy screen: two keys cannot share it"""),
    ('[keys]\n"app.refresh" = "s"\n',  # the app's key against a screen's
     """keys."app.refresh": 's' is already 'deploy.start' on the Deploy screen: two keys cannot share it"""),
    ('[keys]\n"checklist.atest" = "m"\n',
     """keys."checklist.atest": unknown binding id 'checklist.atest' (did you mean 'checklist.attest'?)"""),
    ('theme = "solarised"\n', "theme: unknown theme 'solarised'; choose one of: ansi-dark, ansi-light, "),
    ('bell = "off"\n', "bell: expected true or false, got 'off'"),
    ('[keys]\n"deploy.start" = ""\n', 'keys."deploy.start": \'\' is not a key'),
])
def test_a_wrong_settings_file_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    path = settings_file(tmp_path, text)
    done = controlroom("keys", settings=path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(f"controlroom: error: {path}: {message}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_control_room_does_not_start_with_a_wrong_settings_file(tmp_path: Path) -> None:
    """Checked before anything starts: the demo's sandbox is never started for nothing."""
    path = settings_file(tmp_path, '[keys]\n"view.deploy" = "c"\n')
    done = controlroom("demo", settings=path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f'controlroom: error: {path}: keys."view.deploy": \'c\' is already \'view.checklist\' on the '
                           "Checklist screen: two keys cannot share it\n")


def test_swapping_two_keys_is_no_clash_and_keys_prints_them(tmp_path: Path) -> None:
    path = settings_file(tmp_path, 'theme = "ansi-dark"\nbell = false\n[keys]\n"deploy.start" = "x"\n'
                                   '"deploy.run" = "s"\n"view.deploy" = "D"\n"app.help" = "f1"\n')
    done = controlroom("keys", settings=path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"settings: {path}; theme ansi-dark, bell off"
    row = {line.split()[0]: line.split()[1:3] for line in lines[4:]}
    assert row["deploy.start"] == ["x*", "Deploy"] and row["deploy.run"] == ["s*", "Deploy"]
    assert row["view.deploy"] == ["D*", "every"] and row["app.help"] == ["f1*", "every"]
    assert row["view.checklist"] == ["c", "every"] and row["checklist.attest"] == ["a", "Checklist"]


def test_the_default_file_may_be_absent_but_a_named_one_may_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        checked_settings(tmp_path / "missing.toml")
    done = controlroom("keys", settings=tmp_path / "missing.toml")
    assert done.returncode == 2 and done.stderr.endswith("missing.toml: no such file\n")


# -- in the control room --------------------------------------------------------------------


@pytest.fixture(scope="module")
async def healthy() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=40, simulate=False) as running:
        yield running


async def test_a_remapped_key_works_and_shows_everywhere(healthy: Sandbox, tmp_path: Path) -> None:
    path = settings_file(tmp_path, 'theme = "ansi-light"\n[keys]\n"view.deploy" = "D"\n"checklist.attest" = "m"\n')
    app = make_app(load_config(healthy.config_path), write=True, start_polling=False, journal_dir=tmp_path,
                   **personal(path))
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "ansi-light" and app.current_theme.name == "ansi-light"
        await wait_for(lambda: app.session is not None and app.session.verdict is not None, pilot)
        checklist = app.screen
        assert isinstance(checklist, ChecklistScreen)
        bar = checklist.query_one(KeyBar).shown.plain
        assert bar.startswith("r re-run all space re-run m attest A not met n next cDkbpR"), bar

        await pilot.press("d")  # the old key does nothing now
        assert app.screen is checklist
        await pilot.press("a")
        assert app.screen is checklist
        item = app.session.attestable()[0]
        while checklist.selected_item() != item:
            await pilot.press("down")
        await pilot.press("m")  # the new one attests
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("tab", "enter")
        assert item in app.session.attestations()

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = dict(app.screen.keys)
        assert keys["m"].startswith("Attest the selected") and keys["D"] == "Deploy screen" and "d" not in keys
        await pilot.press("escape")
        commands = {command.title: command.help for command in app.get_system_commands(app.screen)}
        assert commands["Deploy screen"] == "key D"

        await pilot.press("D")
        assert isinstance(app.screen, DeployScreen)
        await pilot.press("q")


# -- the bell -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def breaker_open() -> AsyncIterator[Sandbox]:
    async with Sandbox("breaker-open", locations=40, simulate=False) as running:
        yield running


async def test_the_bell_rings_on_no_go_and_on_a_failed_step(breaker_open: Sandbox, tmp_path: Path,
                                                            bells: list[str]) -> None:
    app = make_app(load_config(breaker_open.config_path), write=True, start_polling=False, journal_dir=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: bool(bells), pilot, what="the bell on NO-GO")
        assert app.session is not None and app.session.verdict_name == "NO-GO" and bells == ["ding"]
        await pilot.press("d")
        deploy = app.screen
        assert isinstance(deploy, DeployScreen)
        await pilot.press("s", *"v2.15.0", "enter")
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press(*"the lead approved the hotfix", "enter")
        await wait_for(lambda: app.session.state.in_progress, pilot)
        await app.workers.wait_for_complete()
        assert len(bells) == 1  # starting rings nothing
        deploy._select_row("breaker-status")
        await pilot.press("x")
        await wait_for(lambda: len(bells) == 2, pilot, what="the bell on a failed step")
        await app.workers.wait_for_complete()
        outcome = [r for r in app.session.journal.records if r.kind == "step_outcome"]
        assert [(r.data["step_id"], r.data["status"]) for r in outcome] == [("breaker-status", "failed")]
        await pilot.pause(0.2)
        assert len(bells) == 2  # once per failure, not at every tick
        await pilot.press("q", "tab", "enter")


async def test_bell_false_silences_it(breaker_open: Sandbox, tmp_path: Path, bells: list[str]) -> None:
    path = settings_file(tmp_path, "bell = false\n")
    app = make_app(load_config(breaker_open.config_path), start_polling=False, journal_dir=tmp_path, **personal(path))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.session is not None and app.session.verdict_name == "NO-GO", pilot)
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        assert bells == []
        await pilot.press("q")


def test_when_the_engine_says_the_bell_rings() -> None:
    from controlroom.release.alerts import Alerts

    calm = Alerts()
    assert calm.rings_after(calm) == []
    assert Alerts(failed_notifications=1).rings_after(calm) == ["a notification failed"]
    assert Alerts(no_go=True).rings_after(Alerts(no_go=True)) == []  # still NO-GO: rang already
    assert Alerts(escalation_level=1).rings_after(calm) == []  # the incident opening: the operator's doing
    assert Alerts(escalation_level=2).rings_after(Alerts(escalation_level=1)) == ["the escalation reached L2"]
    assert Alerts(failed_steps=1, no_go=True).rings_after(calm) == ["a step failed", "the verdict turned NO-GO"]
