"""Command steps: the whole process group ends on a timeout, and only the secrets a step
lists reach its process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from controlroom.config.models import Step
from controlroom.release.steps import StepRunner
from probe_support import make_loaded


ITEMS = [{"id": "on-call", "title": "On-call available", "kind": "manual"}]


def command_step(run: str, *, timeout_s: float = 5.0, secrets: list[str] | None = None) -> Step:
    return Step.model_validate({
        "id": "cmd", "title": "A command",
        "action": {"kind": "command", "run": run, "timeout_s": timeout_s, "modifying": False, "secrets": secrets or []},
    })


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_timed_out_step_leaves_no_background_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    runner = StepRunner(make_loaded(ITEMS, config_dir=tmp_path), environ={"PATH": os.environ["PATH"]})
    outcome = await runner.run(command_step(f"sleep 30 & echo $! > {pid_file}; echo started", timeout_s=1.0))
    assert outcome.status == "failed" and "timed out" in outcome.summary
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child), "the background child survived the step's timeout"


@pytest.mark.parametrize("listed, expected", [([], ""), (["api_key"], "key-123456")])
async def test_only_listed_secrets_are_exported(tmp_path: Path, listed: list[str], expected: str) -> None:
    loaded = make_loaded(ITEMS, secrets={"api_key": "key-123456", "webhook": "https://hooks.example/T0/B0/XYZ123"}, config_dir=tmp_path)
    # The operator's shell may already export the secret variables: they must not leak through.
    environ = {"PATH": os.environ["PATH"], "TEST_WEBHOOK": "https://hooks.example/T0/B0/XYZ123"}
    out = tmp_path / "env.txt"
    runner = StepRunner(loaded, environ=environ)
    outcome = await runner.run(command_step(f'printf "%s|%s" "$TEST_API_KEY" "$TEST_WEBHOOK" > {out}', secrets=listed))
    assert outcome.status == "done", outcome.summary
    assert out.read_text() == f"{expected}|"
