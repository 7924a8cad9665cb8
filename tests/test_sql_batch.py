"""SQL KPIs of one database polled together share one round trip, against a real embedded
Postgres; a query the batch cannot hold, a failing one and a slow one never spoil the others."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from controlroom.config.loader import load_default_runbook
from controlroom.config.models import Kpi, SqlSource
from controlroom.live.polling import Poller
from controlroom.live.sources import Database, SqlKpiSource
from controlroom.live.sql_batch import ScalarBatch, batched_statement
from test_sources import insert_locations, kpi


def sql_kpis() -> list[Kpi]:
    return [k for k in load_default_runbook().kpis if isinstance(k.source, SqlSource)]


async def test_the_default_runbooks_sql_kpis_polled_together_are_one_round_trip(db_dsn: str, db: asyncpg.Connection) -> None:
    await insert_locations(db)
    database = Database(db_dsn)
    batch = ScalarBatch(database)
    try:
        kpis = sql_kpis()
        assert len(kpis) >= 5
        alone = [await SqlKpiSource(k, database).fetch() for k in kpis]
        pollers = [Poller(k.id, SqlKpiSource(k, database, batch=batch).fetch, interval_s=10, timeout_s=k.timeout_s)
                   for k in kpis]
        together = await asyncio.gather(*(poller.poll_once() for poller in pollers))
        assert batch.round_trips == 1
        assert [(s.value.kpi_id, s.value.value, s.value.error) for s in together] == [  # type: ignore[union-attr]
            (r.kpi_id, r.value, r.error) for r in alone]
        assert {r.kpi_id: r.value for r in alone}["pos-sync-success"] == pytest.approx(75.0)  # 3 of 4 syncs
        await asyncio.gather(*(poller.poll_once() for poller in pollers))
        assert batch.round_trips == 2
    finally:
        await batch.close()
        await database.close()


async def test_a_query_the_batch_cannot_hold_runs_alone_and_the_others_stay_batched(db_dsn: str, db: asyncpg.Connection) -> None:
    await insert_locations(db)
    database = Database(db_dsn)
    batch = ScalarBatch(database)
    try:
        queries = {
            "count": "SELECT count(*) FROM pos_integrations_location;",  # a trailing semicolon
            "commented": "SELECT count(*) FROM rotation_cb -- the breakers",  # a trailing comment
            "rows": "SELECT location_id FROM pos_integrations_location ORDER BY location_id",  # 3 rows: first wins
            "columns": "SELECT 7, 8",  # 2 columns: the first
            "missing": "SELECT count(*) FROM no_such_table",
            "empty": "SELECT 1 WHERE false",
        }
        sources = {name: SqlKpiSource(kpi({"kind": "sql", "query": query}), database, batch=batch)
                   for name, query in queries.items()}

        async def poll() -> dict[str, object]:
            answers = await asyncio.gather(*(source.fetch() for source in sources.values()), return_exceptions=True)
            return dict(zip(sources, answers))

        first = await poll()
        assert first["count"].value == 3 and first["commented"].value == 3  # type: ignore[union-attr]
        assert isinstance(first["rows"], Exception) and "not a number: f1" in str(first["rows"])  # as alone
        assert first["columns"].value == 7 and first["empty"].error == "no data"  # type: ignore[union-attr]
        assert isinstance(first["missing"], asyncpg.exceptions.UndefinedTableError)
        # The failed batch, then each alone: the misfits are known from now on.
        assert batch.alone == {queries["rows"], queries["columns"], queries["missing"]}
        before = batch.round_trips
        second = await poll()
        assert batch.round_trips - before == 1 + 3  # one batch of three, three alone
        assert [getattr(second[name], "value", None) for name in ("count", "commented", "columns")] == [3, 3, 7]
        assert isinstance(second["missing"], asyncpg.exceptions.UndefinedTableError)
    finally:
        await batch.close()
        await database.close()


async def test_a_slow_batch_stops_batching_for_a_while_and_each_keeps_its_deadline(db_dsn: str) -> None:
    database = Database(db_dsn, statement_timeout_s=5)
    now = [1000.0]
    batch = ScalarBatch(database, pause_after_timeout_s=600, clock=lambda: now[0])
    try:
        fast = SqlKpiSource(kpi({"kind": "sql", "query": "SELECT 42"}), database, batch=batch)
        slow = SqlKpiSource(kpi({"kind": "sql", "query": "SELECT pg_sleep(2)::text::int + 1"}),
                            database, batch=batch)
        fast.kpi = fast.kpi.model_copy(update={"timeout_s": 1.0})
        slow.kpi = slow.kpi.model_copy(update={"timeout_s": 1.0})
        # Each poll's own deadline (the poller's wait_for): the batch gives up at half of it.
        answers = await asyncio.gather(asyncio.wait_for(fast.fetch(), 1.0), asyncio.wait_for(slow.fetch(), 1.0),
                                       return_exceptions=True)
        assert isinstance(answers[1], (asyncio.TimeoutError, TimeoutError)), answers
        assert answers[0].value == 42  # type: ignore[union-attr]  # alone, after the batch gave up, within its deadline
        assert batch.paused_until == 1600.0  # nobody knows which was slow: ten minutes alone
        before = batch.round_trips
        fast_alone = await asyncio.wait_for(fast.fetch(), 1.5)  # alone now: the slow one cannot hold it up
        assert fast_alone.value == 42 and batch.round_trips - before == 1
        now[0] = 1601.0
        answers = await asyncio.gather(fast.fetch(), fast.fetch())
        assert [a.value for a in answers] == [42, 42]
    finally:
        await batch.close()
        await database.close()


def test_each_query_sits_on_lines_of_its_own() -> None:
    assert batched_statement(["SELECT 1;", "SELECT 2 -- two"]) == "SELECT (\nSELECT 1\n) AS v0, (\nSELECT 2 -- two\n) AS v1"


async def test_a_database_that_is_down_teaches_nothing_about_the_queries() -> None:
    """Every query fails alone too: the database failed (it restarts, the network drops), not
    a query; when it is back they are batched again."""
    from probe_support import closed_port

    database = Database(f"postgresql://nobody:nothing@127.0.0.1:{closed_port()}/none", statement_timeout_s=2)
    batch = ScalarBatch(database)
    try:
        sources = [SqlKpiSource(k, database, batch=batch) for k in sql_kpis()]
        answers = await asyncio.gather(*(source.fetch() for source in sources), return_exceptions=True)
        assert all(isinstance(answer, OSError) for answer in answers), answers
        assert batch.alone == set() and batch.paused_until == 0.0
    finally:
        await batch.close()
        await database.close()


async def test_a_batch_that_fails_while_each_answers_alone_waits_and_a_server_timeout_counts_as_one(db_dsn: str) -> None:
    """`SELECT 1; -- note` answers alone but breaks the statement around it (the `;` hides
    behind the comment): nobody can be blamed, so batching waits rather than failing every
    poll. The server's statement_timeout cancelling a batch is a timeout like ours."""
    database = Database(db_dsn, statement_timeout_s=5)
    now = [1000.0]
    batch = ScalarBatch(database, pause_after_timeout_s=600, clock=lambda: now[0])
    try:
        sources = [SqlKpiSource(kpi({"kind": "sql", "query": query}), database, batch=batch)
                   for query in ("SELECT 1; -- note", "SELECT 2")]
        answers = await asyncio.gather(*(source.fetch() for source in sources))
        assert [a.value for a in answers] == [1, 2] and batch.alone == set()
        assert batch.paused_until == 1600.0 and batch.round_trips == 3
        await asyncio.gather(*(source.fetch() for source in sources))
        assert batch.round_trips == 5  # alone while it waits: no failed batch every poll
    finally:
        await batch.close()
        await database.close()

    database = Database(db_dsn, statement_timeout_s=1.0)
    batch = ScalarBatch(database, pause_after_timeout_s=600, clock=lambda: now[0])
    try:
        slow = [SqlKpiSource(kpi({"kind": "sql", "query": f"SELECT {n} FROM pg_sleep(0.3)"}), database, batch=batch)
                for n in (1, 2)]
        for source in slow:
            source.kpi = source.kpi.model_copy(update={"timeout_s": 10.0})
        answers = await asyncio.gather(*(source.fetch() for source in slow))  # 0.6 s together: over half of 1 s
        assert [a.value for a in answers] == [1, 2]
        assert batch.paused_until == now[0] + 600 and batch.alone == set()
    finally:
        await batch.close()
        await database.close()
