"""`controlroom sandbox` as a user runs it: a subprocess, then Ctrl-C or SIGTERM. It must
leave no process and no temporary directory behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest


def start_sandbox(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "controlroom", "sandbox", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once everything is up
    if not line:
        process.kill()
        raise AssertionError(f"sandbox did not start: {process.stderr.read() if process.stderr else ''}")
    return process, json.loads(line)


def postgres_data_dirs(processes: list[psutil.Process]) -> set[Path]:
    dirs = set()
    for proc in processes:
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if "-D" in cmdline:
            dirs.add(Path(cmdline[cmdline.index("-D") + 1]).parent)
    return dirs


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_signal_stops_everything_and_removes_its_files(signum: signal.Signals) -> None:
    process, info = start_sandbox("--no-simulate", "--locations", "50")
    try:
        children = psutil.Process(process.pid).children(recursive=True)
        # Postgres runs in its own session (Ctrl-C is ours to forward), so find it by port.
        port = int(info["dsn"].rsplit(":", 1)[1].split("/")[0])
        postgres = [
            p for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"] and "-p" in p.info["cmdline"] and str(port) in p.info["cmdline"]
        ]
        assert postgres, "the embedded Postgres is not running"
        pg_dirs = postgres_data_dirs(postgres)
        config = Path(info["config"])
        assert config.is_file() and Path(info["env_file"]).is_file()
        assert oct(Path(info["env_file"]).stat().st_mode & 0o777) == "0o600"

        # It works while it runs: SQL over TCP and HTTP over a real socket.
        conn = await asyncpg.connect(info["dsn"], timeout=10)
        try:
            counts = await conn.fetch("SELECT provider, count(*) FROM pos_integrations_location GROUP BY provider")
        finally:
            await conn.close()
        assert {row["provider"] for row in counts} == {"fudo", "maxirest", "bistrsoft"}
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(info["base_url"] + "/healthz")).status_code == 200
        # No secret is passed on a command line, where `ps` would show it.
        password = info["dsn"].split(":")[2].split("@")[0]
        for proc in children + postgres:
            assert password not in " ".join(proc.cmdline())

        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    gone, alive = psutil.wait_procs(children + postgres, timeout=10)
    assert not alive, f"left running: {alive}"
    assert not config.parent.exists()
    assert pg_dirs and not any(d.exists() for d in pg_dirs)


def test_unknown_scenario_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlroom", "sandbox", "--scenario", "sunny"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "sunny" in result.stderr and "healthy" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigkill_leaves_nothing_behind_either() -> None:
    """A killed owner runs no cleanup: the HTTP server notices its parent is gone and the
    reapers stop Postgres and remove the directories (the secrets file among them)."""
    process, info = start_sandbox("--no-simulate", "--locations", "20")
    port = int(info["dsn"].rsplit(":", 1)[1].split("/")[0])
    started = [
        p for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and ("-p" in p.info["cmdline"] and str(port) in p.info["cmdline"])
    ] + psutil.Process(process.pid).children(recursive=True)
    pg_dirs = postgres_data_dirs(started)
    config_dir = Path(info["config"]).parent
    process.kill()
    process.wait(timeout=10)
    gone, alive = psutil.wait_procs(started, timeout=15)
    assert not alive, f"left running: {alive}"
    assert not config_dir.exists()
    assert pg_dirs and not any(d.exists() for d in pg_dirs)
