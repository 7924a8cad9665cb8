"""The embedded PostgreSQL starts, takes the schema, and leaves nothing behind."""

from __future__ import annotations

import asyncpg
import psutil

from controlroom.sandbox.postgres import EmbeddedPostgres


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
