"""Data sources for the live panels: KPIs, circuit breakers, POS-integration health.

Each source has one async `fetch()` that returns an immutable snapshot or raises; pollers
(`controlroom.live.polling`) call them on their own intervals. UI-free: never imports Textual.

Postgres is reached through one small asyncpg pool per DSN (from `controlroom.infra.pg`),
named `application_name = controlroom/live`, with a server-side `statement_timeout` on every
connection *and* a client-side timeout on every query, so the control room can never hurt
the database it watches.
Prometheus-style sources are read with httpx (`{url}/api/v1/query?query=...`, and once
`{url}/api/v1/query_range` to backfill a sparkline). KPI source kinds register in
`_kpi_sources()`.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Literal, NamedTuple

from controlroom.config.loader import LoadedConfig
from controlroom.config.models import BreakersView, HealthView, Kpi, PrometheusSource, SqlSource
from controlroom.live.prometheus import PrometheusAnswerError, read_answer, read_range
from controlroom.live.sql_batch import ScalarBatch
from controlroom.infra.pg import PgSettings

if TYPE_CHECKING:  # imported when the feeds open, after the TUI's first frame (~80 ms together)
    import asyncpg
    import httpx

Colour = Literal["green", "amber", "red", "unknown"]
# How many readings a KPI's sparkline shows; a Prometheus source backfills this many.
SPARKLINE_POINTS = 60
PG_PURPOSE = "live"  # connections are named controlroom/live
DEFAULT_STATEMENT_TIMEOUT_S = 5.0
BREAKER_STATES = ("closed", "open", "half_open")

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(value: object, *, limit: int = 500) -> str:
    """Text from data made safe for a terminal: control characters (ESC, CSI, BEL, ...)
    become visible escapes like `\\x1b`, newlines and tabs become spaces. Rich markup is not
    interpreted here; widgets wrap the result in `rich.text.Text` so `[red]` stays literal."""
    text = str(value)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def kpi_colour(kpi: Kpi, value: float | None) -> Colour:
    """green when the KPI's green threshold holds, red when its red one does (and green
    does not), amber in between; unknown without a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if kpi.green.holds(value):
        return "green"
    if kpi.red.holds(value):
        return "red"
    return "amber"


# -- snapshots ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KpiReading:
    kpi_id: str
    value: float | None  # None: the source answered but had no number (no rows, NaN)
    colour: Colour
    read_at: float  # wall-clock seconds (time.time())
    error: str | None = None  # why value is None, when the source said so
    # The values before this one, oldest first, when the source could tell them (a
    # Prometheus source's first reading: its query_range backfill); () otherwise.
    history: tuple[float, ...] = ()


class BreakerRow(NamedTuple):
    """One row of the runbook's [views.breakers] query; None where the query has no such
    column (see BreakersView for the column contract). A plain tuple: a poll of the Breakers
    view builds one per location (10,000 and more), and a tuple is built, compared and hashed
    in C (the table finds what changed between two polls by set difference)."""

    location_id: str
    location_name: str
    provider: str  # "" without a provider column
    state: str  # closed | open | half_open
    failure_count: int | None = None
    failure_threshold: int | None = None
    window_minutes: int | None = None
    changed_at: datetime | None = None
    opened_at: datetime | None = None

    @property
    def problem(self) -> bool:
        return self.state != "closed"


@dataclass(frozen=True)
class BreakerSnapshot:
    rows: tuple[BreakerRow, ...]
    read_at: float

    def counts(self) -> dict[str, dict[str, int]]:
        """provider -> state -> count: every provider of the rows, the most open and half-open
        first (then by name), and every state, zeros included."""
        counts: dict[str, dict[str, int]] = {}
        for (provider, state), n in Counter(map(attrgetter("provider", "state"), self.rows)).items():  # counted in C
            per = counts.setdefault(provider, dict.fromkeys(BREAKER_STATES, 0))
            per[state] = per.get(state, 0) + n
        return dict(sorted(counts.items(), key=lambda kv: (-(kv[1]["open"] + kv[1]["half_open"]), kv[0])))


@dataclass(frozen=True)
class BreakerCounts:
    """What the breakers are, counted in SQL per provider and state: polled instead of the full
    list while the Breakers view is not on show (the watch needs only these counts)."""

    by_provider: dict[str, dict[str, int]]
    read_at: float

    def counts(self) -> dict[str, dict[str, int]]:
        return self.by_provider


@dataclass(frozen=True)
class ProviderHealth:
    """One row of the runbook's [views.health] query (see HealthView for the columns); None
    where the query has no such column, or no value."""

    provider: str
    total: int
    connected: int
    disconnected: int
    failing: int | None = None
    sync_success_percent: float | None = None
    mttr_minutes: float | None = None


@dataclass(frozen=True)
class HealthSnapshot:
    providers: tuple[ProviderHealth, ...]
    read_at: float


# -- Postgres ----------------------------------------------------------------------------


class Database:
    """A lazily opened asyncpg pool for one DSN. Up to `max_size` connections, so the
    sources that poll at the same moment do not queue behind each other (the SQL KPIs among
    them share one statement: `controlroom.live.sql_batch`); read-only, with a statement timeout, and idle
    connections closed after a minute, so the watched database is never hurt."""

    def __init__(
        self,
        dsn: str,
        *,
        statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S,
        max_size: int = 10,
        transaction_pooler: bool = False,
    ) -> None:
        self._dsn = dsn
        self.statement_timeout_s = statement_timeout_s
        self._max_size = max_size
        self._settings = PgSettings(
            purpose=PG_PURPOSE,
            connect_timeout_s=statement_timeout_s,
            statement_timeout_s=statement_timeout_s,
            command_timeout_s=statement_timeout_s,
            transaction_pooler=transaction_pooler,
            read_only=True,
        )
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await self._settings.create_pool(self._dsn, min_size=0, max_size=self._max_size)
            return self._pool

    async def fetch(self, query: str, *args: object, timeout: float | None = None) -> list[asyncpg.Record]:
        pool = await self.pool()
        return await pool.fetch(query, *args, timeout=timeout or self.statement_timeout_s)

    async def fetch_columns(self, query: str, *, timeout: float | None = None) -> tuple[tuple[str, ...], list[asyncpg.Record]]:
        """The query's column names (known even when it returns no row) and its rows."""
        timeout = timeout or self.statement_timeout_s
        pool = await self.pool()
        async with pool.acquire(timeout=timeout) as conn:
            statement = await conn.prepare(query, timeout=timeout)
            columns = tuple(attribute.name for attribute in statement.get_attributes())
            return columns, await statement.fetch(timeout=timeout)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5)
            except (asyncio.TimeoutError, Exception):
                pool.terminate()


class SourceError(RuntimeError):
    """A source answered, but not with what was expected (the message is shown as-is)."""


def _number(value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # Decimal, int, float, "NaN"
    except (TypeError, ValueError):
        raise SourceError(f"not a number: {plain(value, limit=60)}") from None
    return None if math.isnan(number) else number


# -- sources -----------------------------------------------------------------------------


class SqlKpiSource:
    """A KPI read by one scalar query. With `batch`, it shares a round trip with the other
    SQL KPIs of its database polled at the same moment (`controlroom.live.sql_batch`)."""

    def __init__(self, kpi: Kpi, database: Database, *, wall: Callable[[], float] = time.time,
                 batch: ScalarBatch | None = None) -> None:
        assert isinstance(kpi.source, SqlSource)
        self.kpi = kpi
        self._batch = batch or ScalarBatch(database)  # alone: every query is a batch of one
        self._wall = wall

    @classmethod
    def for_feeds(cls, kpi: Kpi, feeds: "Feeds") -> "SqlKpiSource | str":
        assert isinstance(kpi.source, SqlSource)
        name = feeds.config.runbook.database(kpi.source.database)
        database = feeds.databases.get(name)
        if database is None:
            return feeds.database_errors.get(name, f"database {name!r} is not defined")
        return cls(kpi, database, batch=feeds.batches[name])

    async def fetch(self) -> KpiReading:
        value = _number(await self._batch.value(self.kpi.source.query, timeout=self.kpi.timeout_s))
        error = None if value is not None else "no data"
        return KpiReading(self.kpi.id, value, kpi_colour(self.kpi, value), self._wall(), error)


class PrometheusKpiSource:
    """An instant query each poll (`{url}/api/v1/query`). The first poll also asks
    `{url}/api/v1/query_range` for the SPARKLINE_POINTS readings before it (one poll_s apart),
    so a sparkline is full from the start; until that succeeds, each poll asks again."""

    def __init__(self, kpi: Kpi, base_url: str, client: httpx.AsyncClient, *, wall: Callable[[], float] = time.time,
                 backfill_points: int = SPARKLINE_POINTS) -> None:
        assert isinstance(kpi.source, PrometheusSource)
        self.kpi = kpi
        self.url = base_url.rstrip("/") + "/api/v1/query"
        self.range_url = base_url.rstrip("/") + "/api/v1/query_range"
        self._client = client
        self._wall = wall
        self.backfill_points = backfill_points
        self.backfilled = backfill_points <= 0
        self.backfill_error: str | None = None  # why the last backfill failed

    @classmethod
    def for_feeds(cls, kpi: Kpi, feeds: "Feeds") -> "PrometheusKpiSource":
        assert isinstance(kpi.source, PrometheusSource)
        return cls(kpi, feeds.config.url(kpi.source.url), feeds.client)

    async def fetch(self) -> KpiReading:
        if self.backfilled:
            return await self._instant()
        reading, history = await asyncio.gather(self._instant(), self._history(), return_exceptions=True)
        if isinstance(reading, BaseException):
            raise reading
        if isinstance(history, BaseException):
            self.backfill_error = plain(str(history) or type(history).__name__, limit=200)
            return reading
        self.backfilled, self.backfill_error = True, None
        return replace(reading, history=history)

    async def _answer(self, url: str, params: dict[str, str]) -> object:
        response = await self._client.get(url, params=params, timeout=self.kpi.timeout_s)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            said = body.get("error") if isinstance(body, dict) else None
            raise SourceError(f"HTTP {response.status_code} from {url}" + (f": {plain(said, limit=160)}" if said else ""))
        return body

    async def _instant(self) -> KpiReading:
        source = self.kpi.source
        assert isinstance(source, PrometheusSource)
        body = await self._answer(self.url, {"query": source.query})
        try:
            number = read_answer(body, reduce=source.reduce)
        except PrometheusAnswerError as error:
            raise SourceError(f"{self.url}: {plain(str(error), limit=200)}") from None
        notes = "; ".join(plain(note, limit=120) for note in number.notes)
        error = None if number.value is not None else ("no data in the window" + (f" ({notes})" if notes else ""))
        if number.value is not None and notes:
            error = notes  # a number, with what Prometheus warned about it
        return KpiReading(self.kpi.id, number.value, kpi_colour(self.kpi, number.value), self._wall(), error)

    async def read_range(self, seconds: float, *, points: int = 240) -> list[tuple[float, float]]:
        """The (time, value) pairs of the last `seconds`, about `points` of them (at least one
        poll_s apart): what the KPI detail view plots."""
        source = self.kpi.source
        assert isinstance(source, PrometheusSource)
        end = self._wall()
        step = max(self.kpi.poll_s, seconds / points)
        body = await self._answer(self.range_url, {"query": source.query, "start": f"{end - seconds:.3f}",
                                                   "end": f"{end:.3f}", "step": f"{step:g}"})
        try:
            return read_range(body, reduce=source.reduce)
        except PrometheusAnswerError as error:
            raise SourceError(f"{self.range_url}: {plain(str(error), limit=200)}") from None

    async def _history(self) -> tuple[float, ...]:
        """The values of the backfill_points polls before now, oldest first (the steps without
        a sample left out)."""
        source = self.kpi.source
        assert isinstance(source, PrometheusSource)
        end = self._wall()
        step = self.kpi.poll_s
        start = end - step * self.backfill_points
        body = await self._answer(self.range_url, {"query": source.query, "start": f"{start:.3f}",
                                                   "end": f"{end - step:.3f}", "step": f"{step:g}"})
        try:
            points = read_range(body, reduce=source.reduce)
        except PrometheusAnswerError as error:
            raise SourceError(f"{self.range_url}: {plain(str(error), limit=200)}") from None
        return tuple(value for _, value in points[-self.backfill_points:])


# A KPI source kind (the `kind` of a [[kpis]] source) -> its class; a class's for_feeds()
# gives the source, or why there is none (its database's secret is not set). A new kind is
# one module and one line here.
def _kpi_sources() -> dict[str, type[SqlKpiSource] | type[PrometheusKpiSource]]:
    return {
        "sql": SqlKpiSource,
        "prometheus": PrometheusKpiSource,
    }


def _columns(view: str, columns: tuple[str, ...], required: tuple[str, ...]) -> None:
    missing = [name for name in required if name not in columns]
    if missing:
        raise SourceError(
            f"[views.{view}] query has no column {', '.join(missing)} (required: {', '.join(required)}; "
            f"it returned: {', '.join(columns) or 'none'})"
        )


async def _fetch_columns(database: Database | str, query: str, timeout_s: float) -> tuple[tuple[str, ...], list[asyncpg.Record]]:
    if isinstance(database, str):
        raise SourceError(database)
    return await database.fetch_columns(query, timeout=timeout_s)


def _integer(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


class BreakerSource:
    """The runbook's [views.breakers] query, read into BreakerRows."""

    REQUIRED = ("location_id", "state")

    def __init__(self, view: BreakersView, database: Database | str, *, wall: Callable[[], float] = time.time) -> None:
        self.view = view
        self._database = database  # or why it cannot be reached (its secret is not set)
        self.timeout_s = view.timeout_s
        self._wall = wall

    _fingerprint: str | None = None  # of the rows last read, and those rows
    _last: BreakerSnapshot | None = None

    async def fetch(self) -> BreakerSnapshot:
        """The rows, unless they are the ones read last time: the database first answers with
        one md5 over every row as text, and while it is unchanged the rows are not sent,
        decoded and built again (at 10,000 locations ~100 ms of the control room's CPU every
        poll, which held up the keys pressed meanwhile); the answer is then the snapshot
        already read, the same object, so nothing downstream redraws. A query whose rows
        change every time (a column computed from now()) is simply read every time."""
        fingerprint_query = (f"SELECT md5(string_agg(breakers::text, '|' ORDER BY breakers::text)) AS fingerprint "
                             f"FROM ({self.view.query}) AS breakers")
        _, answer = await _fetch_columns(self._database, fingerprint_query, self.timeout_s)
        fingerprint = str(answer[0]["fingerprint"]) if answer and answer[0]["fingerprint"] is not None else None
        if fingerprint is not None and fingerprint == self._fingerprint and self._last is not None:
            return self._last
        snapshot = await self._read_rows()
        # Rows changed between the two queries are newer than the fingerprint: the next poll
        # sees a different fingerprint and reads them again (never the other way round).
        self._fingerprint, self._last = fingerprint, snapshot
        return snapshot

    async def _read_rows(self) -> BreakerSnapshot:
        columns, rows = await _fetch_columns(self._database, self.view.query, self.timeout_s)
        _columns("breakers", columns, self.REQUIRED)
        has = set(columns).__contains__

        def get(r: asyncpg.Record, name: str) -> object:
            return r[name] if has(name) else None

        self._has_provider = "provider" in columns
        return BreakerSnapshot(
            tuple(
                BreakerRow(
                    location_id=str(r["location_id"]),
                    location_name=str(get(r, "location_name") or r["location_id"]),
                    provider=str(get(r, "provider") or ""),
                    state=str(r["state"]),
                    failure_count=_integer(get(r, "failure_count")),
                    failure_threshold=_integer(get(r, "failure_threshold")),
                    window_minutes=_integer(get(r, "window_minutes")),
                    changed_at=_moment(get(r, "changed_at")),
                    opened_at=_moment(get(r, "opened_at")),
                )
                for r in rows
            ),
            self._wall(),
        )


    _has_provider: bool | None = None  # learned from the first full fetch, or asked for

    async def fetch_counts(self) -> BreakerCounts:
        """Counted in the database: one row per provider and state, whatever the fleet's size."""
        if self._has_provider is None:
            columns, _ = await _fetch_columns(self._database, f"SELECT * FROM ({self.view.query}) AS breakers LIMIT 0",
                                              self.timeout_s)
            _columns("breakers", columns, self.REQUIRED)
            self._has_provider = "provider" in columns
        provider = "coalesce(provider::text, '')" if self._has_provider else "''"
        query = (f"SELECT {provider} AS provider, state::text AS state, count(*) AS n "
                 f"FROM ({self.view.query}) AS breakers GROUP BY 1, 2")
        _, rows = await _fetch_columns(self._database, query, self.timeout_s)
        by_provider: dict[str, dict[str, int]] = {}
        for row in rows:
            per = by_provider.setdefault(str(row["provider"]), dict.fromkeys(BREAKER_STATES, 0))
            per[str(row["state"])] = per.get(str(row["state"]), 0) + int(row["n"])
        ordered = sorted(by_provider.items(), key=lambda kv: (-(kv[1]["open"] + kv[1]["half_open"]), kv[0]))
        return BreakerCounts(dict(ordered), self._wall())


def _moment(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise SourceError(f"expected a timestamp, got {plain(value, limit=40)}")
    return value


class ProviderHealthSource:
    """The runbook's [views.health] query, one ProviderHealth per provider: the view's
    `providers` first (zeros when the query has no row for one), then the others by name."""

    REQUIRED = ("provider", "total", "connected")

    def __init__(self, view: HealthView, database: Database | str, *, wall: Callable[[], float] = time.time) -> None:
        self.view = view
        self._database = database  # or why it cannot be reached (its secret is not set)
        self.timeout_s = view.timeout_s
        self._wall = wall

    async def fetch(self) -> HealthSnapshot:
        columns, records = await _fetch_columns(self._database, self.view.query, self.timeout_s)
        _columns("health", columns, self.REQUIRED)
        has = set(columns).__contains__
        rows = {str(r["provider"]): r for r in records}
        order = list(self.view.providers) + sorted(set(rows) - set(self.view.providers))
        providers = []
        for name in order:
            r = rows.get(name)
            if r is None:
                providers.append(ProviderHealth(name, 0, 0, 0))
                continue
            total, connected = _integer(r["total"]) or 0, _integer(r["connected"]) or 0
            disconnected = _integer(r["disconnected"]) if has("disconnected") else None
            providers.append(ProviderHealth(
                name, total, connected, total - connected if disconnected is None else disconnected,
                failing=_integer(r["failing"]) if has("failing") else None,
                sync_success_percent=_number(r["sync_success_percent"]) if has("sync_success_percent") else None,
                mttr_minutes=_number(r["mttr_minutes"]) if has("mttr_minutes") else None,
            ))
        return HealthSnapshot(tuple(providers), self._wall())


# -- all sources of one environment ---------------------------------------------------------


class Feeds:
    """Every live source of one loaded config, sharing one pool per database and one HTTP
    client. `close()` releases them."""

    def __init__(self, config: LoadedConfig, *, statement_timeout_s: float = DEFAULT_STATEMENT_TIMEOUT_S) -> None:
        import httpx  # the feeds open after the TUI's first frame: it pays for the import, not start-up

        from controlroom.infra.http_transport import tls_context

        self.config = config
        # The process's one TLS context: not a CA bundle read of its own (~40 ms on the event
        # loop) as the pollers start; the environment's proxies still apply.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False, verify=tls_context())
        self.databases: dict[str, Database] = {}
        self.database_errors: dict[str, str] = {}
        for name, secret in config.runbook.databases.items():
            if config.secrets.has(secret):
                self.databases[name] = Database(
                    config.secrets.get(secret),
                    statement_timeout_s=statement_timeout_s,
                    transaction_pooler=config.environment.statement_cache_off,
                )
            else:
                self.database_errors[name] = f"secret {secret!r} is not set: export {config.secrets.variable(secret)}"
        self.batches = {name: ScalarBatch(database) for name, database in self.databases.items()}
        self.kpis: dict[str, SqlKpiSource | PrometheusKpiSource | None] = {}
        self.kpi_errors: dict[str, str] = {}  # why a KPI has no source
        kinds = _kpi_sources()
        for kpi in config.runbook.kpis:
            source = kinds[kpi.source.kind].for_feeds(kpi, self)
            self.kpis[kpi.id] = None if isinstance(source, str) else source
            if isinstance(source, str):
                self.kpi_errors[kpi.id] = source
        views = config.runbook.views
        # None: a view the runbook does not define (and the app does not show).
        self.breakers = BreakerSource(views.breakers, self._view_database(views.breakers)) if views.breakers else None
        self.health = ProviderHealthSource(views.health, self._view_database(views.health)) if views.health else None

    def _view_database(self, view: BreakersView | HealthView) -> Database | str:
        name = self.config.runbook.database(view.database)
        return self.databases.get(name) or self.database_errors.get(name, f"database {name!r} is not defined")

    def redact(self, text: str) -> str:
        return self.config.secrets.redact(text)

    async def read_kpi_once(self, kpi: Kpi) -> KpiReading | str:
        """`kpi` read once now, within its timeout; or why it could not be (its database's
        secret is not set, the source is dead or slow): a dead source is only "not measured"."""
        from controlroom.live.polling import describe_error

        source = self.kpis.get(kpi.id)
        if source is None:
            return self.kpi_errors.get(kpi.id, f"no source for KPI {kpi.id!r}")
        try:
            return await asyncio.wait_for(source.fetch(), kpi.timeout_s)
        except Exception as error:  # noqa: BLE001 - said, not raised: see above
            return describe_error(error, self.redact, timeout_s=kpi.timeout_s)

    async def read_kpi_range(self, kpi: Kpi, seconds: float, *, deadline_s: float = 10.0) -> list[tuple[float, float]] | str | None:
        """`kpi`'s readings of the last `seconds` as (time, value) pairs, within `deadline_s`;
        None when its source keeps no history (an SQL KPI: the detail shows what was polled);
        or why it could not be read."""
        from controlroom.live.polling import describe_error

        source = self.kpis.get(kpi.id)
        if not isinstance(source, PrometheusKpiSource):
            return None
        try:
            return await asyncio.wait_for(source.read_range(seconds), deadline_s)
        except Exception as error:  # noqa: BLE001 - said, not raised: the polled readings still show
            return describe_error(error, self.redact, timeout_s=deadline_s)

    async def close(self) -> None:
        await self.client.aclose()
        for batch in self.batches.values():
            await batch.close()
        for database in self.databases.values():
            await database.close()
