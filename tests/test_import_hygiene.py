"""The core never imports Textual: it must run headless (check, report, sandbox) and stay
testable without a terminal. Checked in a fresh interpreter, as harlequin does."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import controlroom


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
