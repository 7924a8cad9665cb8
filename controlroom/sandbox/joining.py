"""How a second terminal finds the sandbox a first one started, to share its release:
`controlroom demo --join` (or `controlroom --config` with the path `controlroom sandbox`
prints).

A running demo or sandbox writes `sandbox.json` (its config file and its pid) in the user's
state directory, and removes it when it stops; the newest one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs

from controlroom.errors import ControlRoomError

POINTER_VARIABLE = "CONTROLROOM_SANDBOX_POINTER"  # tests point it elsewhere


class NoSandboxRunning(ControlRoomError):
    exit_code = 2


def pointer_path() -> Path:
    override = os.environ.get(POINTER_VARIABLE)
    return Path(override) if override else Path(platformdirs.user_state_dir("controlroom")) / "sandbox.json"


@contextlib.contextmanager
def advertised(config_path: Path) -> Iterator[None]:
    """While the block runs, `running_sandbox_config()` finds `config_path`."""
    path = pointer_path()
    me = {"config": str(config_path), "pid": os.getpid()}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(me), encoding="utf-8")
        temporary.chmod(0o600)
        os.replace(temporary, path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")) == me:  # a newer sandbox's stays
                path.unlink()


def running_sandbox_config() -> Path:
    """The config file of the newest demo or sandbox still running for this user."""
    hint = "start one in another terminal: controlroom demo --write (or controlroom sandbox)"
    try:
        data = json.loads(pointer_path().read_text(encoding="utf-8"))
        config, pid = Path(str(data["config"])), int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise NoSandboxRunning(f"no demo or sandbox is running for this user: {hint}") from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise NoSandboxRunning(f"the last demo or sandbox (pid {pid}) has stopped: {hint}") from None
    except PermissionError:
        pass  # alive, another user's process: its config will tell
    if not config.is_file():
        raise NoSandboxRunning(f"the running sandbox's config {config} is gone: {hint}")
    return config
