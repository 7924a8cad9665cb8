"""The Postgres connection factory (controlroom.infra.pg) against the real embedded Postgres:
names, statement and connect timeouts, pooler mode; and probes, live panels, steps and the
rollback's provider query really connect through it."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from controlroom.checks import ProbeContext, run_probe
from controlroom.config.loader import LoadedConfig
from controlroom.config.models import Environment, Step
from controlroom.infra.pg import PgSettings, dsn_ports, pooler_warnings
from controlroom.live.sources import Feeds
from controlroom.release.engine import ReleaseEngine
from controlroom.release.steps import StepRunner

from probe_support import make_loaded
from test_config_validation import MINIMAL_RUNBOOK

pytestmark = pytest.mark.timeout(60)

# A parameterised query goes through the extended protocol: with asyncpg's statement cache it
# leaves a named prepared statement behind, without it (pooler mode) none.
COUNT_PREPARED = "SELECT count(*) FROM pg_prepared_statements WHERE $1::int = 1"


def settings(**overrides: object) -> PgSettings:
    values: dict[str, object] = {"purpose": "test", "connect_timeout_s": 5.0, "statement_timeout_s": 2.5}
    return PgSettings(**{**values, **overrides})  # type: ignore[arg-type]


# pooler as the config spells it -> whether the statement cache is off
POOLERS = {"none": False, "session": False, "transaction": True, "transaction_pooler = true": True}


def loaded_for(dsn: str, *, pooler: str = "none", **runbook_changes: object) -> LoadedConfig:
    """A config whose environment says `pooler` (or the older transaction_pooler = true),
    validated as the loader validates it."""
    loaded = make_loaded([{"id": "on-call", "title": "On-call", "kind": "manual"}], secrets={"database_dsn": dsn})
    spelled = {"transaction_pooler": True} if pooler.startswith("transaction_pooler") else {"pooler": pooler}
    environment = Environment.model_validate(
        {"name": loaded.environment.name, "secrets": dict(loaded.environment.secrets), **spelled})
    runbook = loaded.runbook.model_copy(update=runbook_changes)
    return dataclasses.replace(loaded, environment=environment, runbook=runbook)


def sql_step(query: str, *, timeout_s: float = 30.0) -> Step:
    return Step.model_validate({
        "id": "q", "title": "Query",
        "action": {"kind": "sql", "query": query, "modifying": False, "timeout_s": timeout_s},
    })


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


# -- the callers go through it (and honour the environment's pooler) -----------------------


@pytest.mark.parametrize("pooler", list(POOLERS))
async def test_a_probe_connects_through_the_factory(db_dsn: str, pooler: str) -> None:
    transaction_pooler = POOLERS[pooler]
    # Any row fails the probe, and its evidence shows what the session really was.
    item = {
        "id": "who", "title": "Who am I", "kind": "sql", "timeout_s": 4,
        "query": "SELECT current_setting('application_name'), current_setting('statement_timeout') "
                 "WHERE current_setting('application_name') <> 'controlroom/probes' "
                 "OR current_setting('statement_timeout') <> '4s'",
    }
    loaded = loaded_for(db_dsn, pooler=pooler)
    loaded = dataclasses.replace(loaded, runbook=make_loaded([item]).runbook)
    async with ProbeContext(loaded) as ctx:
        result = await run_probe(loaded.runbook.items()[0][1], ctx)
        pool = await ctx.pool("main")
        async with pool.acquire() as conn:
            cached = await conn.fetchval(COUNT_PREPARED, 1)
    assert result.status == "pass", result.evidence
    assert (cached == 0) is transaction_pooler  # the probe's own query is cached too, unless pooled


@pytest.mark.parametrize("pooler", list(POOLERS))
async def test_live_panels_connect_through_the_factory(db_dsn: str, pooler: str) -> None:
    transaction_pooler = POOLERS[pooler]
    feeds = Feeds(loaded_for(db_dsn, pooler=pooler))
    try:
        database = feeds.databases["main"]
        rows = await database.fetch("SELECT current_setting('application_name'), current_setting('statement_timeout')")
        assert tuple(rows[0]) == ("controlroom/live", "5s")
        cached = (await database.fetch(COUNT_PREPARED, 1))[0][0]
        assert (cached == 0) is transaction_pooler
    finally:
        await feeds.close()


@pytest.mark.parametrize("pooler", list(POOLERS))
async def test_an_sql_step_connects_through_the_factory(db_dsn: str, pooler: str) -> None:
    transaction_pooler = POOLERS[pooler]
    runner = StepRunner(loaded_for(db_dsn, pooler=pooler))
    outcome = await runner.run(sql_step(
        "SELECT current_setting('application_name'), current_setting('statement_timeout'), "
        "(SELECT count(*) FROM pg_prepared_statements)", timeout_s=7))
    assert outcome.status == "done", outcome.summary
    # The step's own query is the one prepared statement, unless the pooler forbids caching.
    assert outcome.summary == f"1 row(s): controlroom/steps 7s {0 if transaction_pooler else 1}"


async def test_the_rollback_provider_query_connects_through_the_factory(db_dsn: str, tmp_path: Path) -> None:
    rollback = loaded_for(db_dsn).runbook.rollback.model_copy(update={
        "providers_query": "SELECT current_setting('application_name') || ' ' || current_setting('statement_timeout')",
    })
    session = ReleaseEngine.open(loaded_for(db_dsn, rollback=rollback), journal_dir=tmp_path)
    try:
        choices = await session.provider_choices(rollback.plans[0].id)
    finally:
        session.close()
    assert choices == [("controlroom/steps 10s", None)]


# -- pooler mode: the alias, and the hint for Supabase's transaction-pooler port ------------


def test_transaction_pooler_is_an_alias_of_pooler_transaction() -> None:
    alias = Environment.model_validate({"name": "e", "transaction_pooler": True})
    assert alias.pooler == "transaction" and alias.statement_cache_off
    assert Environment.model_validate({"name": "e", "pooler": "transaction"}).transaction_pooler
    assert not Environment.model_validate({"name": "e", "pooler": "session"}).statement_cache_off
    with pytest.raises(ValueError, match="contradicts"):
        Environment.model_validate({"name": "e", "pooler": "session", "transaction_pooler": True})


@pytest.mark.parametrize(("dsn", "ports"), [
    ("postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres", [6543]),
    ("postgres://u:p@db.example.supabase.co/postgres", []),
    ("postgresql://u:p@h1:5432,h2:6543/db?sslmode=require", [5432, 6543]),
    ("host=pooler.supabase.com port=6543 dbname=postgres", [6543]),
    ("not a dsn", []),
])
def test_the_ports_a_dsn_names(dsn: str, ports: list[int]) -> None:
    assert dsn_ports(dsn) == ports


def test_port_6543_without_a_pooler_gets_a_clear_hint() -> None:
    dsns = {"main": "postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/postgres", "other": "postgresql://u:p@h/db"}
    (warning,) = pooler_warnings(False, dsns)
    assert "'main'" in warning and 'port 6543 is Supabase\'s transaction pooler: set pooler = "transaction"' in warning
    assert pooler_warnings(True, dsns) == []  # the environment said what its DSNs go through


def test_validate_and_check_say_so(tmp_path: Path) -> None:
    runbook = tmp_path / "runbook.toml"
    runbook.write_text(MINIMAL_RUNBOOK)  # one database, "main", whose DSN is database_dsn
    config = tmp_path / "c.toml"
    config.write_text(f'runbook = "{runbook}"\n[environment]\nname = "e"\nurls = {{ supabase = "https://x.supabase.co" }}\n'
                      'secrets = { database_dsn = "POOLED_DSN" }\n')
    env = {**os.environ, "POOLED_DSN": "postgresql://u:p@127.0.0.1:6543/db"}  # validate connects to nothing
    done = subprocess.run([sys.executable, "-m", "controlroom", "validate", str(config)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'warning: database \'main\': port 6543 is Supabase\'s transaction pooler: set pooler = "transaction"' in done.stdout
    config.write_text(config.read_text().replace('name = "e"', 'name = "e"\npooler = "transaction"'))
    done = subprocess.run([sys.executable, "-m", "controlroom", "validate", str(config)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "warning" not in done.stdout, done.stdout
