"""The Postgres connection factory (controlroom.infra.pg) against the real embedded Postgres:
names, statement and connect timeouts, pooler mode."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import asyncpg
import pytest

from controlroom.infra.pg import PgSettings

pytestmark = pytest.mark.timeout(60)

# A parameterised query goes through the extended protocol: with asyncpg's statement cache it
# leaves a named prepared statement behind, without it (pooler mode) none.
COUNT_PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE $1::int = 1"


def settings(**overrides: object) -> PgSettings:
    values: dict[str, object] = {"purpose": "test", "connect_timeout_s": 5.0, "statement_timeout_s": 2.5}
    return PgSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that completes TCP handshakes (the kernel does) and then never
    says a word: nothing ever accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


# -- the factory itself ----------------------------------------------------------------------


async def shown(conn: asyncpg.Connection) -> tuple[str, ...]:
    names = ("application_name", "statement_timeout", "default_transaction_read_only",
             "idle_in_transaction_session_timeout")
    return tuple([await conn.fetchval(f"SHOW {name}") for name in names])


async def test_a_connection_is_named_and_has_the_statement_timeout(db_dsn: str) -> None:
    conn = await settings(purpose="probes").connect(db_dsn)
    try:
        assert await shown(conn) == ("controlroom/probes", "2500ms", "off", "0")
    finally:
        await conn.close()


async def test_every_pool_connection_is_set_up_the_same(db_dsn: str) -> None:
    pool = await settings(purpose="live", read_only=True, idle_in_transaction_timeout_s=12).create_pool(
        db_dsn, min_size=2, max_size=2)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            for conn in (first, second):
                assert await shown(conn) == ("controlroom/live", "2500ms", "on", "12s")
    finally:
        await pool.close()


async def test_the_server_cancels_a_statement_over_the_timeout(db_dsn: str) -> None:
    conn = await settings(statement_timeout_s=0.2).connect(db_dsn)
    try:
        started = time.monotonic()
        # The server's error, not the client's TimeoutError: the client waits a grace longer.
        with pytest.raises(asyncpg.exceptions.QueryCanceledError, match="statement timeout"):
            await conn.fetchval("SELECT pg_sleep(3)")
        assert time.monotonic() - started < 1.5
        assert await conn.fetchval("SELECT 1") == 1  # the connection is still usable
    finally:
        await conn.close()


async def test_a_server_that_never_answers_fails_within_the_connect_timeout(silent_server: int) -> None:
    dsn = f"postgresql://nobody:pw@127.0.0.1:{silent_server}/none"
    for open_it in (lambda s: s.connect(dsn), lambda s: s.create_pool(dsn, min_size=1)):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await open_it(settings(connect_timeout_s=0.5))
        assert time.monotonic() - started < 3.0  # asyncpg's own default would wait 60 s


@pytest.mark.parametrize(("transaction_pooler", "prepared"), [(False, 1), (True, 0)])
async def test_pooler_mode_leaves_no_prepared_statement_on_the_server(
    db_dsn: str, transaction_pooler: bool, prepared: int
) -> None:
    conn = await settings(transaction_pooler=transaction_pooler).connect(db_dsn)
    try:
        assert await conn.fetchval(COUNT_PREPARED, 1) == prepared
    finally:
        await conn.close()
