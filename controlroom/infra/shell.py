"""The operator's shell from inside the control room (`!`): which program, with what
environment, and a prompt that says where it is.

    argv, env, cleanup = shell_invocation(loaded, os.environ, journal_path)

The environment is the control room's own minus every secret: each variable named in the
config's [environment.secrets], and any other whose value holds a secret's value (a DSN
copied into DATABASE_URL, a password in PGPASSWORD). It gains CONTROLROOM_JOURNAL (the
journal's path), CONTROLROOM_ENVIRONMENT and CONTROLROOM_SHELL=1, and a PS1 saying it is the
control room's shell. bash reads ~/.bashrc, which usually sets PS1: it is started with an
rc file that reads ~/.bashrc first and sets the prompt after. Running it (and suspending the
screen meanwhile) is the app's.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from controlroom.config.loader import LoadedConfig

FALLBACK_SHELL = "/bin/sh"
# A prompt is expanded by the shell ($(…), `…`, \ escapes): anything else in a name or a
# path is shown as '?', so an environment named `$(rm …)` cannot run anything.
_PROMPT_SAFE = re.compile(r"[^A-Za-z0-9 ._/@:+,=~-]")


def shell_environment(loaded: LoadedConfig, environ: Mapping[str, str], journal: Path | None) -> dict[str, str]:
    """`environ` without a secret, plus where the control room's journal is."""
    secret_variables = set(loaded.environment.secrets.values())
    env = {name: value for name, value in environ.items()
           if name not in secret_variables and loaded.secrets.redact(value) == value}
    env["CONTROLROOM_SHELL"] = "1"
    env["CONTROLROOM_ENVIRONMENT"] = loaded.environment.name
    if journal is not None:
        env["CONTROLROOM_JOURNAL"] = str(journal)
    else:
        env.pop("CONTROLROOM_JOURNAL", None)
    env["PS1"] = prompt(loaded.environment.name, journal)
    return env


def prompt(environment: str, journal: Path | None) -> str:
    where = _PROMPT_SAFE.sub("?", str(journal)) if journal is not None else "no journal open"
    return f"[controlroom shell · {_PROMPT_SAFE.sub('?', environment)} · journal {where} · exit returns] $ "


def shell_program(environ: Mapping[str, str]) -> str:
    """$SHELL when it names a program that exists, else /bin/sh."""
    shell = environ.get("SHELL", "").strip()
    return shell if shell and os.path.isabs(shell) and os.access(shell, os.X_OK) else FALLBACK_SHELL


def shell_invocation(loaded: LoadedConfig, environ: Mapping[str, str],
                     journal: Path | None) -> tuple[list[str], dict[str, str], Callable[[], None]]:
    """(argv, environment, clean-up to call when the shell has exited)."""
    env = shell_environment(loaded, environ, journal)
    program = shell_program(environ)
    if os.path.basename(program) != "bash":
        return [program], env, lambda: None
    handle, rc_path = tempfile.mkstemp(prefix="controlroom-shell-", suffix=".bashrc")
    with os.fdopen(handle, "w", encoding="utf-8") as rc:
        rc.write('[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n'
                 "PS1=\"$CONTROLROOM_PS1\"\n")
    env["CONTROLROOM_PS1"] = env["PS1"]

    def cleanup() -> None:
        try:
            os.unlink(rc_path)
        except OSError:
            pass

    return [program, "--rcfile", rc_path, "-i"], env, cleanup
