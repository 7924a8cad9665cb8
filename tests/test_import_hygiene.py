"""The core never imports Textual: it must run headless (check, report, sandbox) and stay
testable without a terminal. Checked in a fresh interpreter, as harlequin does."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import controlroom
from snapshot_support import config_toml


def core_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(controlroom.__path__, "controlroom.")
        if not info.name.startswith(("controlroom.screens", "controlroom.widgets", "controlroom.styles"))
        and not info.name.endswith("__main__")
    ]


def test_core_modules_do_not_import_textual() -> None:
    modules = core_modules()
    assert "controlroom.config.models" in modules and "controlroom.sandbox.pg.postgres" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# What the TUI's first frame does not need, imported where it is first used instead: the
# probes' and the notifiers' HTTP stack and retries, Postgres, the report and its Markdown, the
# sandbox (the CLI knows its scenario names, a list). Checked by module set, not by time
# (issue 13: the TUI's import was 523 ms).
DEFERRED = (
    "httpx", "httpcore", "certifi", "asyncpg", "tenacity", "markdown_it", "starlette", "uvicorn", "jwt",
    "controlroom.report.render", "controlroom.screens.report", "controlroom.sandbox.runner",
    "controlroom.sandbox.http", "controlroom.sandbox.pg", "controlroom.sandbox.world.simulator",
    "controlroom.infra.http_transport", "controlroom.checks.http", "controlroom.checks.token_zombie",
    "controlroom.checks.oncall", "controlroom.checks.rate_limit",
    "plotext", "textual_plotext", "controlroom.widgets.kpi_plot",
)


def imported_by(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_tui_imports_only_what_its_first_frame_needs(tmp_path: Path) -> None:
    """`controlroom --config FILE` up to the app: the CLI, the TUI, the config loaded and
    validated (its URLs too: read by httpx's rules, without httpx), and a settings file that
    remaps no key checked (the bindings of every screen are only collected for a remapping)."""
    (tmp_path / "controlroom.toml").write_text(config_toml())
    (tmp_path / "settings.toml").write_text('theme = "ansi-dark"\nbell = false\n')
    modules = imported_by(
        "import controlroom.screens.app, controlroom.cli.main, controlroom.cli.tui\n"
        "from controlroom.config.loader import load_config\n"
        f"load_config({str(tmp_path / 'controlroom.toml')!r}, environ={{}})\n"
        "from pathlib import Path\n"
        "from controlroom.screens.keymap import checked_settings\n"
        f"checked_settings(Path({str(tmp_path / 'settings.toml')!r}))"
    )
    assert "textual.app" in modules and "controlroom.release.engine" in modules  # the check checks something
    pulled_in = sorted(m for m in modules if m.split(".")[0] in DEFERRED or any(
        m == name or m.startswith(name + ".") for name in DEFERRED))
    assert pulled_in == []


def test_what_was_deferred_is_still_there_when_used() -> None:
    """The first probe run, notice and report import what they need (a function-level import
    that was misspelt would only fail there)."""
    modules = imported_by(
        "from controlroom.checks.base import ProbeContext, describe_exception\n"
        "from controlroom.checks.run import _origin\n"
        "from controlroom.release.shared_journal import is_unreachable\n"
        "import asyncio\n"
        "from controlroom.config.models import url_problem\n"
        "assert url_problem('ftp://x') and _origin('http://h:81/') == ('http', 'h', 81)\n"
        "assert describe_exception(TimeoutError()) == 'timed out' and not is_unreachable(ValueError())\n"
        "import controlroom.screens.app\n"
        "from controlroom.report.render import render_report\n"
        "from controlroom.screens.report import ReportScreen\n"
    )
    assert {"httpx", "asyncpg", "controlroom.report.render", "controlroom.screens.report"} <= modules
