"""Two operators on two "bastions" share one release, end to end: the real `controlroom` in two
real pseudo-terminals at 80×24 (each with its own --host and its own journal directory), on a
sandbox whose config uses the shared journal store. One drives, the other watches live; kill -9
of the driver; the watcher takes over with a typed T; the first comes back and watches; every
action ran once; the report is the same from the store and from each bastion's copy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controlroom.release.journal import verify_chain
from controlroom.release.pg_journal import read_release
from controlroom.sandbox.runner import Sandbox
from pty_support import Terminal


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox("healthy", locations=30, simulate=False, journal_store="postgres") as running:
        yield running


def control_room(sandbox: Sandbox, journals: Path, host: str, *extra: str) -> Terminal:
    env = {**os.environ, "CONTROLROOM_JOURNAL_DIR": str(journals), "TERM": "xterm-256color"}
    env.pop("CONTROLROOM_HOST", None)
    argv = [sys.executable, "-m", "controlroom", "--config", str(sandbox.config_path), "--host", host, *extra]
    return Terminal(argv, env, journals.parent)


def attest_next(terminal: Terminal) -> None:
    """n (the next item awaiting an attestation), a, then Attest (Cancel is the default)."""
    terminal.type("n")
    time.sleep(0.3)
    terminal.type("a")
    terminal.wait_for_text("Recorded in the journal as attested by", timeout=10)
    terminal.type("\t\r")


def report(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "controlroom", "report", *args], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_two_bastions_share_one_release_and_kill_9_hands_it_over(sandbox: Sandbox, tmp_path: Path) -> None:
    first, second = tmp_path / "bastion-1", tmp_path / "bastion-2"
    alice = control_room(sandbox, first, "bastion-1", "--write")
    bob = None
    try:
        alice.wait_for_text("YOU DRIVE")
        bob = control_room(sandbox, second, "bastion-2", "--write")
        bob.wait_for_text("WATCHING")
        bob.wait_for_text("bastion-1")
        alice.wait_for_text("+1 watch")

        attest_next(alice)  # the driver decides; the watcher shows it
        bob.wait_for_text("attested by", timeout=5)
        bob.type("n")
        time.sleep(0.3)
        bob.type("a")  # refused before any dialog, naming the driver
        bob.wait_for_text("driven by", timeout=5)

        alice.process.kill()  # kill -9 of the driver
        alice.process.wait(timeout=10)
        killed = time.monotonic()
        bob.wait_for_text("NO DRIVER", timeout=5)
        bob.type("T")
        bob.wait_for_text("Take over this release?", timeout=5)
        bob.type("take over\r")
        bob.wait_for_text("YOU DRIVE", timeout=5)
        assert time.monotonic() - killed < 5
        attest_next(bob)  # the new driver decides

        alice = control_room(sandbox, first, "bastion-1", "--write")  # comes back: watches
        alice.wait_for_text("WATCHING")
        alice.wait_for_text("bastion-2")
        time.sleep(1.0)
        for terminal in (bob, alice):
            terminal.type("q")
            terminal.process.wait(timeout=15)
            assert terminal.process.returncode == 0, terminal.screen_text()[-2000:]
    finally:
        for terminal in (alice, bob):
            if terminal is not None and terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait(timeout=10)

    stored = await read_release(sandbox.dsn, "sandbox (healthy)")
    assert stored is not None and verify_chain(stored.records) == []
    attested = [r for r in stored.records if r.kind == "attested"]
    assert [r.operator.get("host") for r in attested] == ["bastion-1", "bastion-2"]  # each action once
    changes = [(r.data["driver"], r.data["how"], r.data["from"]) for r in stored.records if r.kind == "driver_changed"]
    assert changes[0][0].endswith("@bastion-1") and changes[0][1] == "opened"
    assert changes[-1][1:] == ("took over", changes[0][0]) and changes[-1][0].endswith("@bastion-2")
    from_store = report("--config", str(sandbox.config_path))
    assert "took over from" in from_store
    for bastion in (first, second):
        assert report(str(bastion / f"{stored.release_id}.jsonl")) == from_store
