"""`!`: the control room suspends to the operator's shell and comes back when it exits. Run
as an operator does: the real `controlroom` in a real pseudo-terminal, with a SHELL that
writes the environment it was given to a file and exits. No secret reaches the shell."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

from pty_support import Terminal
from test_terminal_drop import CONFIG as TERMINAL_DROP_CONFIG, RUNBOOK

# The slow-step runbook and config of the terminal-drop test, with two secrets declared.
CONFIG = TERMINAL_DROP_CONFIG + """
[environment.secrets]
api_token = "SHELLTEST_API_TOKEN"
db = "SHELLTEST_DSN"
"""

SECRET = "tok-5f3a9c1e77"
PASSWORD = "pw-0b1d2e3f"


def test_bang_suspends_to_a_shell_without_secrets_and_comes_back(tmp_path: Path) -> None:
    (tmp_path / "runbook.toml").write_text(RUNBOOK)
    (tmp_path / "controlroom.toml").write_text(CONFIG)
    seen = tmp_path / "shell-env.txt"
    shell = tmp_path / "fake-shell"
    shell.write_text(f"#!/bin/sh\nenv > {seen}\necho fake shell ran\nexit 3\n")
    shell.chmod(shell.stat().st_mode | stat.S_IXUSR)
    journals = tmp_path / "journals"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST", "TEXTUAL"))}
    env.update(TERM="xterm-256color", COLUMNS="80", LINES="24", SHELL=str(shell), CONTROLROOM_JOURNAL_DIR=str(journals),
               SHELLTEST_API_TOKEN=SECRET, SHELLTEST_DSN=f"postgresql://ops:{PASSWORD}@db.internal/ops",
               DATABASE_URL=f"postgresql://ops:{PASSWORD}@db.internal/ops",  # a copy, under another name
               COPIED_TOKEN=SECRET, HARMLESS="kept")
    terminal = Terminal([sys.executable, "-m", "controlroom", "--config", str(tmp_path / "controlroom.toml")], env,
                        tmp_path)
    try:
        terminal.wait_for_text("PENDING")
        time.sleep(0.5)
        terminal.type("!")
        deadline = time.monotonic() + 20
        while not seen.exists() or "fake shell ran" not in terminal.screen_text():
            assert time.monotonic() < deadline, f"the shell never ran:\n{terminal.screen_text()[-1500:]}"
            time.sleep(0.05)
        terminal.wait_for_text("Back from the shell")  # the control room resumed and repainted
        given = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
        text = seen.read_text()
        assert SECRET not in text and PASSWORD not in text
        assert "SHELLTEST_API_TOKEN" not in given and "DATABASE_URL" not in given and "COPIED_TOKEN" not in given
        assert given["HARMLESS"] == "kept"
        journal = Path(given["CONTROLROOM_JOURNAL"])
        assert journal.parent == journals and journal.exists()
        assert given["CONTROLROOM_ENVIRONMENT"] == "slow-step test"
        assert "controlroom shell" in given["PS1"] and "slow-step" in given["PS1"] and str(journal) in given["PS1"]
        output_after = len(terminal.screen_text())
        terminal.type("d")  # keys work again
        terminal.wait_for_text("A long step")
        assert len(terminal.screen_text()) > output_after
        terminal.type("q")
        assert terminal.process.wait(timeout=15) == 0
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait(timeout=10)


def test_the_shell_environment_prompt_and_program(tmp_path: Path) -> None:
    from controlroom.config.loader import load_config
    from controlroom.infra.shell import prompt, shell_invocation, shell_program

    (tmp_path / "runbook.toml").write_text(RUNBOOK)
    (tmp_path / "controlroom.toml").write_text(CONFIG)
    environ = {"SHELLTEST_API_TOKEN": SECRET, "PGPASSWORD": PASSWORD, "PATH": "/usr/bin", "SHELL": "/bin/bash",
               "SHELLTEST_DSN": f"postgresql://ops:{PASSWORD}@db/ops"}
    loaded = load_config(tmp_path / "controlroom.toml", environ=environ)
    argv, env, cleanup = shell_invocation(loaded, environ, tmp_path / "j.jsonl")
    try:
        assert SECRET not in str(env) and PASSWORD not in str(env) and env["PATH"] == "/usr/bin"
        assert argv[0] == "/bin/bash" and argv[1] == "--rcfile"  # bash's ~/.bashrc would set its own PS1
        rc = Path(argv[2]).read_text()
        assert ".bashrc" in rc and rc.rstrip().endswith('PS1="$CONTROLROOM_PS1"')
        assert env["CONTROLROOM_PS1"] == env["PS1"]
    finally:
        cleanup()
    assert not Path(argv[2]).exists()
    assert shell_program({}) == "/bin/sh" and shell_program({"SHELL": "/nonexistent/zsh"}) == "/bin/sh"
    # The prompt is expanded by the shell: nothing in a name can run a command there.
    shown = prompt("prod $(touch x) `id`", Path("/j/a b\\c.jsonl"))
    assert "$" not in shown.removesuffix("$ ") and "`" not in shown and "\\" not in shown
