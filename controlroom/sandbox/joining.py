"""How a second terminal finds the sandbox a first one started, to share its release:
`controlroom demo --join` (or `controlroom --config` with the path `controlroom sandbox`
prints).

Each running demo or sandbox writes `<pid>.json` (its config file, scenario and start time) in
the user's state directory (`sandboxes/`, or $CONTROLROOM_SANDBOX_DIR) and removes it when it
stops; `--join` opens the newest one still running, and says which.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

from controlroom.errors import ControlRoomError
from controlroom.sandbox.pg.reaper import process_alive

DIRECTORY_VARIABLE = "CONTROLROOM_SANDBOX_DIR"  # tests point it elsewhere


class NoSandboxRunning(ControlRoomError):
    exit_code = 2


@dataclass(frozen=True)
class RunningSandbox:
    config: Path
    pid: int
    scenario: str
    started: datetime

    def __str__(self) -> str:
        return f"the {self.scenario} sandbox started at {self.started.astimezone(UTC):%H:%M:%S} UTC (pid {self.pid})"


def pointers_dir() -> Path:
    override = os.environ.get(DIRECTORY_VARIABLE)
    return Path(override) if override else Path(platformdirs.user_state_dir("controlroom")) / "sandboxes"


@contextlib.contextmanager
def advertised(config_path: Path, scenario: str) -> Iterator[None]:
    """While the block runs, `running_sandboxes()` lists this sandbox."""
    path = pointers_dir() / f"{os.getpid()}.json"
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps({"config": str(config_path), "pid": os.getpid(), "scenario": scenario,
                                         "started": datetime.now(UTC).isoformat()}), encoding="utf-8")
        temporary.chmod(0o600)
        os.replace(temporary, path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def running_sandboxes() -> list[RunningSandbox]:
    """The demos and sandboxes running for this user, newest first (pointers left by one
    that was killed are removed)."""
    found: list[RunningSandbox] = []
    try:
        pointers = list(pointers_dir().glob("*.json"))
    except OSError:
        return []
    for pointer in pointers:
        try:
            data = json.loads(pointer.read_text(encoding="utf-8"))
            sandbox = RunningSandbox(Path(str(data["config"])), int(data["pid"]), str(data.get("scenario", "?")),
                                     datetime.fromisoformat(str(data["started"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not process_alive(sandbox.pid) or not sandbox.config.is_file():
            with contextlib.suppress(OSError):
                pointer.unlink()
            continue
        found.append(sandbox)
    return sorted(found, key=lambda s: s.started, reverse=True)


def running_sandbox() -> tuple[RunningSandbox, int]:
    """The newest demo or sandbox running for this user, and how many others run."""
    running = running_sandboxes()
    if not running:
        raise NoSandboxRunning("no demo or sandbox is running for this user: start one in another terminal: "
                               "controlroom sandbox (or controlroom demo --write)")
    return running[0], len(running) - 1
