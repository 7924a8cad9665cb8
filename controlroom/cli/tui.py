"""Entry points for the interactive control room (wired into the CLI).

    run_app(config_path, write=False)          # `controlroom --config FILE [--write]`
    run_demo(scenario, locations, write=False) # `controlroom demo [--scenario NAME]`
    run_demo(join=True, write=True)            # `controlroom demo --join --write`: a second operator
    run_read_only(config)                      # a browser session of `controlroom serve`

Textual is imported only when these run, so the core stays importable without it.
SIGHUP (a dropped SSH session), SIGTERM and the loss of the terminal close the app the way
`q` does, so the demo's sandbox is always stopped and nothing is left behind; if that takes
longer than a few seconds, or a second signal comes, the process leaves at once
(`controlroom.infra.shutdown`).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from controlroom.infra.shutdown import ExitGuard, run_guarded
from controlroom.config.loader import LoadedConfig, load_config


def _settings() -> dict[str, Any]:
    """The operator's settings file, checked before anything starts (ConfigError: exit 2)."""
    from controlroom.screens.keymap import checked_settings

    settings, keymap, _ = checked_settings()
    return {"settings": settings, "keymap": keymap}


async def _run(guard: ExitGuard, config: LoadedConfig, write: bool, *, offer_resume: bool = True,
               personal: dict[str, Any] | None = None, shell: bool = True) -> int | None:
    from controlroom.screens.app import make_app

    app = make_app(config, write=write, offer_resume=offer_resume, shell=shell, **(personal or {}))
    before = guard.graceful
    guard.graceful = app.exit  # while the app runs, a close signal is a `q` without questions
    try:
        if guard.closing:  # the signal came while we were starting: do not open at all
            return None
        await app.run_async()
    finally:
        guard.graceful = before
    return app.return_code or None  # e.g. 2: the shared journal could not be opened (said on exit)


def _guarded(main: Callable[[ExitGuard], Awaitable[int | None]]) -> None:
    code = run_guarded(main)
    if code is not None:  # closed by a signal, or the terminal went away
        sys.exit(code)


def run_app(config_path: str | Path, write: bool = False) -> None:
    """Open the control room on the environment in `config_path`. Raises ConfigError on a
    bad config (the CLI prints it as one line)."""
    config = load_config(config_path)
    personal = _settings()
    for warning in config.pooler_warnings():
        print(f"controlroom: warning: {warning}", file=sys.stderr, flush=True)
    _guarded(lambda guard: _run(guard, config, write, personal=personal))


def run_read_only(config: LoadedConfig) -> None:
    """The control room on `config`, read-only (the config's write_by_default is the caller's
    to clear), never offering to resume an older file journal: a browser session of
    `controlroom serve`, which never offers a shell (`!`)."""
    _guarded(lambda guard: _run(guard, config, False, offer_resume=False, shell=False))


async def _demo(guard: ExitGuard, scenario: str, locations: int, write: bool, personal: dict[str, Any]) -> int | None:
    from controlroom.sandbox.joining import advertised
    from controlroom.sandbox.runner import Sandbox

    print(f"starting the sandbox ({scenario}, {locations} locations)…", file=sys.stderr, flush=True)
    # The shared journal store on the sandbox's Postgres: `controlroom demo --join` in another
    # terminal opens the same release (one drives, the other watches).
    sandbox = Sandbox(scenario, locations=locations, journal_store="postgres")
    try:
        await sandbox.start()
        with advertised(sandbox.config_path, scenario):
            # Every demo is a brand-new sandbox: an older demo's deployment is not to be resumed.
            return await _run(guard, load_config(sandbox.config_path), write, offer_resume=False, personal=personal)
    finally:
        await sandbox.stop()


def run_demo(scenario: str = "healthy", locations: int = 300, write: bool = False, join: bool = False) -> None:
    """Start the sandbox, open the control room on it, stop the sandbox on quit; with `join`,
    open the control room on the demo already running in another terminal instead."""
    if join:
        from controlroom.sandbox.joining import running_sandbox

        sandbox, others = running_sandbox()
        also = f" ({others} other{'s' if others != 1 else ''} running: give --config to choose)" if others else ""
        print(f"joining {sandbox}{also}", file=sys.stderr, flush=True)
        run_app(sandbox.config, write=write)
        return
    personal = _settings()  # before the sandbox starts: a wrong settings file costs nothing
    _guarded(lambda guard: _demo(guard, scenario, locations, write, personal))
