"""Sources against a real embedded Postgres (rows inserted here) and a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import httpx
import pytest

from controlroom.config.loader import load_default_runbook
from controlroom.config.models import BreakersView, HealthView, Kpi
from controlroom.live.sources import (BreakerSource, Database, PrometheusKpiSource, ProviderHealthSource, SourceError,
                                 SqlKpiSource)


def kpi(source: dict[str, str]) -> Kpi:
    return Kpi.model_validate({"id": "k", "title": "K", "window": "realtime", "unit": "%",
                               "green": {"op": ">", "value": 98}, "red": {"op": "<", "value": 95}, "source": source})


async def insert_locations(db: asyncpg.Connection) -> None:
    await db.execute("""
        INSERT INTO pos_integrations_location (location_id, location_name, provider, connected, sync_state,
                                               sync_failed_since, credential_expires_at) VALUES
          ('f1', 'Café [red]x[/red]', 'fudo', true, 'ok', NULL, now() + interval '30 days'),
          ('f2', 'Bar' || chr(27) || '[31m', 'fudo', false, 'failed', now() - interval '5 hours', now() + interval '30 days'),
          ('m1', 'Parrilla', 'maxirest', true, 'failed', now() - interval '1 hour', now() + interval '30 days');
        INSERT INTO rotation_cb (location_id, provider, state, failure_count, opened_at) VALUES
          ('f1', 'fudo', 'closed', 0, NULL), ('f2', 'fudo', 'open', 12, now()), ('m1', 'maxirest', 'half_open', 3, now());
        INSERT INTO pos_sync_events (location_id, provider, success) VALUES
          ('f1', 'fudo', true), ('f1', 'fudo', true), ('f2', 'fudo', false), ('m1', 'maxirest', true);
        INSERT INTO incidents (opened_at, resolved_at, provider, summary) VALUES
          (now() - interval '2 days', now() - interval '2 days' + interval '90 minutes', 'fudo', 'a'),
          (now() - interval '1 day', now() - interval '1 day' + interval '150 minutes', 'fudo', 'b');
    """)


async def test_breakers_and_health(db_dsn: str, db: asyncpg.Connection) -> None:
    await insert_locations(db)
    database = Database(db_dsn)
    try:
        views = load_default_runbook().views
        assert views.breakers is not None and views.health is not None
        snapshot = await BreakerSource(views.breakers, database).fetch()
        rows = {r.location_id: r for r in snapshot.rows}
        assert rows["f2"].state == "open" and rows["f2"].failure_count == 12 and rows["f2"].failure_threshold == 10
        assert rows["f1"].location_name == "Café [red]x[/red]" and rows["m1"].window_minutes == 15
        assert snapshot.counts()["fudo"] == {"closed": 1, "open": 1, "half_open": 0}

        # Read again with nothing changed: the same snapshot, not rows decoded again; a change
        # in any row (here a breaker closing) is read whole.
        source = BreakerSource(views.breakers, database)
        first = await source.fetch()
        assert await source.fetch() is first
        await db.execute("UPDATE rotation_cb SET state = 'closed', opened_at = NULL WHERE location_id = 'f2'")
        changed = await source.fetch()
        assert changed is not first and {r.location_id: r for r in changed.rows}["f2"].state == "closed"
        assert await source.fetch() is changed
        await db.execute("UPDATE rotation_cb SET state = 'open', opened_at = now() WHERE location_id = 'f2'")

        health = {p.provider: p for p in (await ProviderHealthSource(views.health, database).fetch()).providers}
        fudo = health["fudo"]
        assert (fudo.total, fudo.connected, fudo.disconnected, fudo.failing) == (2, 1, 1, 1)
        assert fudo.sync_success_percent == pytest.approx(66.67) and fudo.mttr_minutes == pytest.approx(120.0)
        assert health["maxirest"].failing == 0 and health["maxirest"].mttr_minutes is None
        assert health["bistrsoft"].total == 0  # listed in the view's providers, so always shown

        reading = await SqlKpiSource(kpi({"kind": "sql", "query": "SELECT round(100.0 * avg(success::int), 2) FROM pos_sync_events"}), database).fetch()
        assert reading.value == pytest.approx(75.0) and reading.colour == "red"
        empty = await SqlKpiSource(kpi({"kind": "sql", "query": "SELECT avg(latency_ms) FROM pos_rotation_metrics"}), database).fetch()
        assert empty.value is None and empty.colour == "unknown" and empty.error == "no data"

        # Every connection is named and has a statement timeout; and it is read-only.
        pool = await database.pool()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "controlroom/live"
            assert await conn.fetchval("SHOW statement_timeout") == "5s"
            with pytest.raises(asyncpg.exceptions.ReadOnlySQLTransactionError):
                await conn.execute("DELETE FROM rotation_cb")
    finally:
        await database.close()


async def test_views_degrade_by_their_column_contract(db_dsn: str, db: asyncpg.Connection) -> None:
    """Only the required columns: the optional ones are None (shown as "—"), disconnected is
    total − connected, providers come from the data; a missing required column is an error
    naming it, even when the query returns no row."""
    await db.execute("CREATE TABLE cb (loc text, st text); INSERT INTO cb VALUES ('a', 'open'), ('b', 'closed');"
                     "CREATE TABLE sites (grp text, n int, up int); INSERT INTO sites VALUES ('north', 5, 3);")
    database = Database(db_dsn)
    try:
        bare = BreakersView(query="SELECT loc AS location_id, st AS state FROM cb")
        rows = {r.location_id: r for r in (await BreakerSource(bare, database).fetch()).rows}
        assert rows["a"].state == "open" and rows["a"].location_name == "a" and rows["a"].provider == ""
        assert rows["a"].failure_count is None and rows["a"].changed_at is None
        health = await ProviderHealthSource(HealthView(query="SELECT grp AS provider, n AS total, up AS connected FROM sites"),
                                            database).fetch()
        (north,) = health.providers
        assert (north.provider, north.total, north.connected, north.disconnected) == ("north", 5, 3, 2)
        assert north.failing is None and north.sync_success_percent is None

        with pytest.raises(SourceError, match=r"\[views.breakers\] query has no column state"):
            await BreakerSource(BreakersView(query="SELECT loc AS location_id FROM cb WHERE false"), database).fetch()
        with pytest.raises(SourceError, match=r"no column connected .*it returned: provider, total"):
            await ProviderHealthSource(HealthView(query="SELECT grp AS provider, n AS total FROM sites"), database).fetch()
    finally:
        await database.close()


async def test_statement_timeout_stops_a_slow_query(db_dsn: str) -> None:
    database = Database(db_dsn, statement_timeout_s=0.2)
    try:
        source = SqlKpiSource(kpi({"kind": "sql", "query": "SELECT pg_sleep(3)::text::int"}), database)
        with pytest.raises((asyncpg.exceptions.QueryCanceledError, asyncio.TimeoutError)):
            await source.fetch()
    finally:
        await database.close()


class _Prom(BaseHTTPRequestHandler):
    answers: dict[str, object] = {}

    def do_GET(self) -> None:  # noqa: N802
        query = self.path.split("query=", 1)[-1]
        status, body = self.answers.get(query, (400, {"status": "error", "error": "unknown"}))  # type: ignore[misc]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


async def test_prometheus_source() -> None:
    def vector(value: str) -> tuple[int, object]:
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, value]}]}}

    def answer(kind: str, result: object, **extra: object) -> tuple[int, object]:
        return 200, {"status": "success", "data": {"resultType": kind, "result": result}, **extra}

    two = [{"metric": {"job": "a"}, "value": [1, "97"]}, {"metric": {"job": "b"}, "value": [1, "99"]}]
    _Prom.answers = {
        "good": vector("99.5"), "nan": vector("NaN"), "bad": (500, {}),
        "scalar": answer("scalar", [1, "98.5"]),
        "matrix": answer("matrix", [{"metric": {}, "values": [[1, "90"], [2, "99.9"]]}]),
        "two": answer("vector", two),
        "warned": answer("vector", [{"metric": {}, "value": [1, "99"]}], warnings=["results truncated"]),
        "none": answer("vector", []),
        "refused": (400, {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prom)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        async with httpx.AsyncClient() as client:
            good = await PrometheusKpiSource(kpi({"kind": "prometheus", "url": url, "query": "good"}), url, client).fetch()
            assert good.value == 99.5 and good.colour == "green"
            nan = await PrometheusKpiSource(kpi({"kind": "prometheus", "url": url, "query": "nan"}), url, client).fetch()
            assert nan.value is None and nan.colour == "unknown" and nan.error == "no data in the window"
            with pytest.raises(SourceError, match="HTTP 500"):
                await PrometheusKpiSource(kpi({"kind": "prometheus", "url": url, "query": "bad"}), url, client).fetch()

            async def read(query: str, **extra: str):  # noqa: ANN202
                source = {"kind": "prometheus", "url": url, "query": query, **extra}
                return await PrometheusKpiSource(kpi(source), url, client).fetch()

            assert (await read("scalar")).value == 98.5
            assert (await read("matrix")).value == 99.9  # the latest sample
            with pytest.raises(SourceError, match="2 series answered"):
                await read("two")  # never one of them at random
            assert (await read("two", reduce="max")).value == 99 and (await read("two", reduce="avg")).value == 98
            warned = await read("warned")
            assert warned.value == 99 and warned.error == "warning: results truncated"
            assert (await read("none")).error == "no data in the window"
            with pytest.raises(SourceError, match='HTTP 400 .*parse error: unexpected "}"'):
                await read("refused")
    finally:
        server.shutdown()
        server.server_close()


# -- query_range backfill and the KPI source table -------------------------------------------


async def test_prometheus_source_backfills_its_sparkline_from_the_sandbox(pg) -> None:  # noqa: ANN001
    from controlroom.live.sources import SPARKLINE_POINTS
    from controlroom.sandbox.http.server import HttpSettings
    from http_fixtures import create_database, start_server

    server = await start_server(HttpSettings(dsn=await create_database(pg), scenario="degraded"))
    latency = Kpi.model_validate({"id": "p95", "title": "p95", "window": "realtime", "unit": "ms", "poll_s": 5,
                                  "green": {"op": "<", "value": 500}, "red": {"op": ">", "value": 1000},
                                  "source": {"kind": "prometheus", "url": server.base_url, "query": "api_latency_p95_ms"}})
    try:
        async with httpx.AsyncClient() as client:
            source = PrometheusKpiSource(latency, server.base_url, client)
            first = await source.fetch()
            assert source.backfilled and source.backfill_error is None
            # A full sparkline before the first poll: the degraded scenario's 5-minute p95s.
            assert len(first.history) == SPARKLINE_POINTS and all(500 < v < 700 for v in first.history)
            assert first.value is not None and 500 < first.value < 700 and first.colour == "amber"
            second = await source.fetch()
            assert second.history == ()  # once: later readings are live ones
    finally:
        server.stop()


async def test_a_failed_backfill_never_hides_the_reading_and_is_asked_again() -> None:
    _Prom.answers = {"good": (200, {"status": "success", "data": {"resultType": "vector",
                                                                  "result": [{"metric": {}, "value": [1, "99.5"]}]}})}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prom)  # answers query_range 400 "unknown"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        async with httpx.AsyncClient() as client:
            source = PrometheusKpiSource(kpi({"kind": "prometheus", "url": url, "query": "good"}), url, client)
            reading = await source.fetch()
            assert reading.value == 99.5 and reading.history == () and not source.backfilled
            assert source.backfill_error is not None and "HTTP 400" in source.backfill_error
            await source.fetch()
            assert not source.backfilled  # still asking
    finally:
        server.shutdown()
        server.server_close()


def test_kpi_sources_register_in_one_table() -> None:
    from controlroom.config.models import KpiSource
    from controlroom.live.sources import _kpi_sources

    kinds = {member.model_fields["kind"].annotation.__args__[0] for member in KpiSource.__origin__.__args__}  # type: ignore[attr-defined]
    assert set(_kpi_sources()) == kinds == {"sql", "prometheus"}


async def test_feeds_choose_each_kpi_source_by_its_kind() -> None:
    from controlroom.live.sources import Feeds
    from probe_support import make_loaded

    loaded = make_loaded([{"id": "m", "title": "M", "kind": "manual"}], urls={"metrics": "http://127.0.0.1:9"})
    runbook = loaded.runbook.model_copy(update={"kpis": [
        kpi({"kind": "sql", "query": "SELECT 1"}).model_copy(update={"id": "from-sql"}),
        kpi({"kind": "prometheus", "url": "{urls.metrics}", "query": "up"}).model_copy(update={"id": "from-prom"}),
    ], "databases": {"main": "missing_dsn"}})
    from controlroom.config.secrets import SecretStore

    unset = SecretStore({"missing_dsn": "TEST_MISSING_DSN"}, {}, {})  # declared, not exported
    loaded = type(loaded)(loaded.config_path, loaded.runbook_source, loaded.environment, runbook, unset)
    feeds = Feeds(loaded)
    try:
        assert isinstance(feeds.kpis["from-prom"], PrometheusKpiSource)
        assert feeds.kpis["from-prom"].url == "http://127.0.0.1:9/api/v1/query"
        assert feeds.kpis["from-sql"] is None and "missing_dsn" in feeds.kpi_errors["from-sql"]
        assert "missing_dsn" in await feeds.read_kpi_once(runbook.kpis[0])
    finally:
        await feeds.close()
