"""Entry points for the interactive control room (wired into the CLI).

    run_app(config_path, write=False)          # `controlroom --config FILE [--write]`
    run_demo(scenario, locations, write=False) # `controlroom demo [--scenario NAME]`

Textual is imported only when these run, so the core stays importable without it.
SIGHUP (a dropped SSH session) and SIGTERM close the app the way `q` does, so the demo's
sandbox is always stopped and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from controlroom.runbook.loader import LoadedConfig, load_config

CLOSE_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


async def _run(config: LoadedConfig, write: bool, *, offer_resume: bool = True) -> None:
    from controlroom.screens.app import make_app

    app = make_app(config, write=write, offer_resume=offer_resume)
    loop = asyncio.get_running_loop()
    for signum in CLOSE_SIGNALS:
        loop.add_signal_handler(signum, app.exit)
    try:
        await app.run_async()
    finally:
        for signum in CLOSE_SIGNALS:
            loop.remove_signal_handler(signum)


def _quietly(coroutine: Any) -> None:
    try:
        asyncio.run(coroutine)
    except KeyboardInterrupt:
        pass


def run_app(config_path: str | Path, write: bool = False) -> None:
    """Open the control room on the environment in `config_path`. Raises ConfigError on a
    bad config (the CLI prints it as one line)."""
    config = load_config(config_path)
    _quietly(_run(config, write))


async def _demo(scenario: str, locations: int, write: bool) -> None:
    from controlroom.sandbox.runner import Sandbox

    print(f"starting the sandbox ({scenario}, {locations} locations)…", file=sys.stderr, flush=True)
    sandbox = Sandbox(scenario, locations=locations)
    try:
        await sandbox.start()
        # Every demo is a brand-new sandbox: an older demo's deployment is not to be resumed.
        await _run(load_config(sandbox.config_path), write, offer_resume=False)
    finally:
        await sandbox.stop()


def run_demo(scenario: str = "healthy", locations: int = 300, write: bool = False) -> None:
    """Start the sandbox, open the control room on it, stop the sandbox on quit."""
    _quietly(_demo(scenario, locations, write))
