"""What every probe shares: the result type, the context it runs in, and the runner.

A probe answers one checklist item. It gets a `ProbeContext` (the loaded config, one HTTP
client, lazily created asyncpg pools, the operator's attestations) and returns a
`ProbeResult`: a status, the measured value as human-readable evidence, how long it took.

The contract the engine relies on: `run_probe` NEVER raises (except cancellation). A refused
connection, a timeout, a 5xx that says nothing we can read, a malformed body, an SQL error,
a missing secret, even a bug in a probe, all come back as status `error` with the reason as
evidence. Every result's evidence has been through `secrets.redact()` and had control
characters removed before it leaves here; a probe that cuts text (a body snippet, an output
line) redacts it first, so no fragment of a secret survives a cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from controlroom.infra.identity import current_operator
from controlroom.infra.pg import PgSettings
from controlroom.config.loader import LoadedConfig
from controlroom.config.placeholders import MissingValue
from controlroom.config.models import Auth, ChecklistItem
from controlroom.config.secrets import MissingSecret

if TYPE_CHECKING:  # imported where used: the TUI's first frame needs neither (~90 ms together)
    import asyncpg
    import httpx

Status = Literal["pass", "fail", "warn", "error", "pending", "skipped"]
STATUSES: tuple[Status, ...] = ("pass", "fail", "warn", "error", "pending", "skipped")

PG_PURPOSE = "probes"  # connections are named controlroom/probes
POOL_MAX_SIZE = 4
POOL_CONNECT_TIMEOUT_S = 5.0
# After a failed attempt to open a pool, its error is the answer for this long (one run of
# concurrent probes shares one attempt); later calls (a long-lived context) try again.
POOL_RETRY_AFTER_S = 5.0
DEFAULT_STATEMENT_TIMEOUT_S = 10.0
# A probe gets its item's timeout_s; the runner's hard ceiling adds this much so a probe can
# report its own, more precise timeout (e.g. "the command ran for 10 s and was killed").
RUNNER_GRACE_S = 2.0
# A polite wait for a 429's Retry-After on setup calls (never on the zombie itself).
MAX_POLITE_WAIT_S = 2.0
EVIDENCE_MAX_CHARS = 2000

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attestation:
    """An operator's word that a manual item holds: who (user, and SSH client address when
    there is one) and when (UTC)."""

    who: str
    at: datetime
    address: str | None = None

    @classmethod
    def now(cls, environ: Mapping[str, str] | None = None) -> "Attestation":
        operator = current_operator(environ)
        return cls(who=operator.user, at=datetime.now(timezone.utc), address=operator.address)

    @property
    def by(self) -> str:
        """'alice (from 10.0.0.5)' or 'alice'."""
        return f"{self.who} (from {self.address})" if self.address else self.who

    def describe(self) -> str:
        return f"attested by {self.by} at {iso(self.at)}"


@dataclass(frozen=True)
class ProbeResult:
    item_id: str
    status: Status
    evidence: str  # the measured value, human-readable, redacted
    duration_ms: float
    started_at: datetime
    attested_by: str | None = None  # 'alice (from 10.0.0.5)'
    attested_at: datetime | None = None
    # Machine-readable measurements for reports and panels, e.g. {"http_status": 401,
    # "latency_ms": 38.2, "attempts": 1} or {"value": 89.0} or {"rows": 3}.
    measured: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def attested(self) -> bool:
        return self.attested_by is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.item_id,
            "status": self.status,
            "evidence": self.evidence,
            "duration_ms": round(self.duration_ms, 1),
            "started_at": iso(self.started_at),
        }
        if self.attested_by is not None:
            data["attested_by"] = self.attested_by
            data["attested_at"] = iso(self.attested_at) if self.attested_at else None
        return data


@dataclass(frozen=True)
class Outcome:
    """What a probe module returns; the runner adds the item id, timing and redaction."""

    status: Status
    evidence: str
    measured: Mapping[str, Any] = field(default_factory=dict)
    attestation: Attestation | None = None


class ProbeError(Exception):
    """Raised inside a probe to end it as `error` with this message as evidence."""


# -- context -------------------------------------------------------------------------------


class ProbeContext:
    """The shared resources of one run of probes. Use as an async context manager, or call
    aclose(). Pools are created on first use and closed at the end; a database that cannot
    be reached degrades only the probes that query it."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        attestations: Mapping[str, Attestation] | None = None,
        environ: Mapping[str, str] | None = None,
        values: Mapping[str, str] | None = None,
    ) -> None:
        self.loaded = loaded
        # Placeholder values known to this run ({version} once a deployment has started).
        self.values: dict[str, str] = dict(values or {})
        self.attestations: dict[str, Attestation] = dict(attestations or {})
        self.environ = dict(os.environ if environ is None else environ)
        import httpx  # the first probe run pays for it, not the TUI's first frame

        from controlroom.infra.http_transport import NoRetryTransport

        # No retries (transport retries=0 is the default, made explicit), no redirects.
        self.http = httpx.AsyncClient(
            transport=NoRetryTransport(),
            follow_redirects=False,
            timeout=10.0,
            headers={"User-Agent": "controlroom-probe"},
        )
        self._pools: dict[str, asyncio.Task[asyncpg.Pool]] = {}
        self._pool_started: dict[str, float] = {}
        self._closed = False

    @property
    def secrets(self):  # noqa: ANN201 - SecretStore
        return self.loaded.secrets

    def url(self, template: str) -> str:
        try:
            return self.loaded.url(template, self.values)
        except MissingValue as error:
            raise ProbeError(f"{template}: {error}") from None

    def shell(self, template: str) -> str:
        try:
            return self.loaded.shell(template, self.values)
        except MissingValue as error:
            raise ProbeError(f"{template}: {error}") from None

    def json(self, body: object) -> object:
        """A JSON body with the placeholders of its strings filled in ({environment}, …)."""
        if isinstance(body, str):
            return self.loaded.text(body, self.values)
        if isinstance(body, dict):
            return {key: self.json(value) for key, value in body.items()}
        if isinstance(body, list):
            return [self.json(value) for value in body]
        return body

    def redact(self, text: str) -> str:
        return self.loaded.secrets.redact(text)

    async def pool(self, database: str) -> asyncpg.Pool:
        """The pool for a logical database; ProbeError (with a redacted reason) if it cannot
        be opened. Concurrent callers share one attempt."""
        if self._closed:
            raise ProbeError("the probe context is closed")
        task = self._pools.get(database)
        stale = (
            task is not None
            and task.done()
            and (task.cancelled() or task.exception() is not None)
            and time.monotonic() - self._pool_started[database] > POOL_RETRY_AFTER_S
        )
        if task is None or stale:
            task = asyncio.create_task(self._open_pool(database), name=f"controlroom-pool-{database}")
            self._pools[database] = task
            self._pool_started[database] = time.monotonic()
        try:
            return await asyncio.shield(task)
        except ProbeError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure to connect is the probe's evidence
            raise ProbeError(f"database {database!r} unavailable: {describe_exception(error)}") from None

    async def _open_pool(self, database: str) -> asyncpg.Pool:
        secret = self.loaded.runbook.databases.get(database)
        if secret is None:
            raise ProbeError(f"database {database!r} is not defined in the runbook's [databases]")
        if not self.secrets.has(secret):
            raise ProbeError(f"secret {secret!r} is not set: export {self.secrets.variable(secret)}=...")
        statement_timeout_s = self._statement_timeout_s(database)
        settings = PgSettings(
            purpose=PG_PURPOSE,
            connect_timeout_s=POOL_CONNECT_TIMEOUT_S,
            statement_timeout_s=statement_timeout_s,
            transaction_pooler=self.loaded.environment.statement_cache_off,
            idle_in_transaction_timeout_s=max(statement_timeout_s * 2, 10.0),
        )
        return await asyncio.wait_for(
            settings.create_pool(self.secrets.get(secret), min_size=1, max_size=POOL_MAX_SIZE),
            timeout=POOL_CONNECT_TIMEOUT_S * 2,
        )

    def _statement_timeout_s(self, database: str) -> float:
        runbook = self.loaded.runbook
        timeouts = [
            item.timeout_s
            for _, item in runbook.items()
            if hasattr(item, "database") and runbook.database(item.database) == database
        ]
        return max(timeouts, default=DEFAULT_STATEMENT_TIMEOUT_S)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.http.aclose()
        for task in self._pools.values():
            if not task.done():
                task.cancel()
            try:
                pool = await task
            except BaseException:  # noqa: BLE001 - it never opened; nothing to close
                continue
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except BaseException:  # noqa: BLE001
                pool.terminate()
        self._pools.clear()

    async def __aenter__(self) -> "ProbeContext":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- deadlines -----------------------------------------------------------------------------
#
# A probe's timeout_s is the whole of it: connect, TLS, headers and body, a database's
# connect and its query together. The runner sets the deadline; the calls below spend what is
# left of it and say which part ran out.

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("controlroom_probe_deadline", default=None)


@contextlib.contextmanager
def own_timing() -> Iterator[None]:
    """For a probe that times its parts itself (the Token Zombie test gives the zombie its
    whole timeout_s, then measures what it did): no shared deadline inside; the runner's
    ceiling (timeout_s + RUNNER_GRACE_S) still ends it."""
    token = _deadline.set(None)
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left(default_s: float) -> float:
    """Seconds left before the running probe's deadline (default_s outside a probe)."""
    deadline = _deadline.get()
    if deadline is None:
        return default_s
    return max(0.0, deadline - asyncio.get_running_loop().time())


# -- the runner ----------------------------------------------------------------------------

ProbeFunction = Callable[[Any, ProbeContext], Awaitable[Outcome]]


def _registry() -> dict[str, ProbeFunction]:
    from controlroom.checks import alert_rules, command, cors, http, manual, oncall, prometheus, rate_limit, sql, token_zombie

    return {
        "http": http.probe,
        "prometheus": prometheus.probe,
        "alert_rules": alert_rules.probe,
        "token_zombie": token_zombie.probe,
        "sql": sql.probe,
        "cors": cors.probe,
        "rate_limit": rate_limit.probe,
        "command": command.probe,
        "manual": manual.probe,
        "pagerduty_oncall": oncall.probe,
    }


async def run_probe(item: ChecklistItem, ctx: ProbeContext) -> ProbeResult:
    """Run the probe for `item`. Never raises (cancellation aside)."""
    started_at = datetime.now(timezone.utc)
    began = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline_token = _deadline.set(loop.time() + item.timeout_s)
    try:
        function = _registry()[item.kind]
        async with asyncio.timeout(item.timeout_s + RUNNER_GRACE_S):
            outcome = await function(item, ctx)
    except (ProbeError, MissingSecret) as error:  # MissingSecret names the variable to export
        outcome = Outcome("error", str(error))
    except TimeoutError:
        outcome = Outcome("error", f"timed out after {item.timeout_s:g} s")
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - a probe never raises into the engine
        outcome = Outcome("error", f"probe failed unexpectedly: {describe_exception(error)}")
    finally:
        _deadline.reset(deadline_token)
    duration_ms = (time.perf_counter() - began) * 1000.0
    attestation = outcome.attestation
    return ProbeResult(
        item_id=item.id,
        status=outcome.status,
        evidence=clean(ctx.redact(outcome.evidence)),
        duration_ms=duration_ms,
        started_at=started_at,
        attested_by=clean(ctx.redact(attestation.by)) if attestation else None,
        attested_at=attestation.at if attestation else None,
        measured=_redact_measured(outcome.measured, ctx),
    )


def with_attestation(result: ProbeResult, attestation: Attestation, redact: Callable[[str], str]) -> ProbeResult:
    """A skipped probe vouched for by the operator: the status stays what it was (the JSON
    says honestly that the probe did not run), the attestation is recorded beside it."""
    return replace(
        result,
        evidence=clean(redact(f"{result.evidence}; {attestation.describe()}")),
        attested_by=clean(redact(attestation.by)),
        attested_at=attestation.at,
    )


def _redact_measured(measured: Mapping[str, Any], ctx: ProbeContext) -> dict[str, Any]:
    return {key: ctx.redact(value) if isinstance(value, str) else value for key, value in measured.items()}


# -- helpers shared by the probe modules -----------------------------------------------------


def clean(text: str) -> str:
    """Evidence is text from data: no terminal escapes, no control characters (newlines and
    tabs kept), bounded length."""
    text = _CONTROL.sub("", _ANSI.sub("", text.replace("\r\n", "\n").replace("\t", " ")))
    if len(text) > EVIDENCE_MAX_CHARS:
        text = text[: EVIDENCE_MAX_CHARS - 1] + "…"
    return text


def describe_exception(error: BaseException) -> str:
    """A one-line reason for an exception, naming its kind when the message is empty."""
    import httpx  # loaded by then wherever an httpx error can come from

    if isinstance(error, httpx.TimeoutException):
        kind = type(error).__name__.replace("Timeout", " timeout").strip().lower()
        return f"{kind} (no answer in time)"
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect: {error}" if str(error) else "cannot connect"
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def ms(value: float) -> str:
    """38 ms / 1 204 ms: whole milliseconds, as an operator reads them."""
    return f"{value:.0f} ms"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_duration(delta: timedelta) -> str:
    """5 h 10 min, 3 d 4 h, 42 s."""
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def format_value(value: Any, now: datetime | None = None) -> str:
    """A database value as an operator reads it: timestamps relative to now."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        delta = moment - (now or datetime.now(timezone.utc))
        return f"in {human_duration(delta)}" if delta.total_seconds() > 0 else f"{human_duration(delta)} ago"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def body_snippet(response: httpx.Response, redact: Callable[[str], str], limit: int = 120) -> str:
    """The start of a response body, on one line, for evidence. Secrets are redacted before
    the cut: a secret straddling the limit would otherwise survive as a fragment that no
    longer matches it."""
    try:
        text = response.text
    except Exception:  # noqa: BLE001 - undecodable body
        return f"<{len(response.content)} bytes>"
    return shorten(" ".join(redact(text).split()), limit)


def shorten(text: str, limit: int) -> str:
    """The start of `text`, at most `limit` characters, "…" marking a cut. Redact first."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@dataclass(frozen=True)
class Answer:
    """A response with the latency of the request that produced it, and the Retry-After
    waited before it (0 when the first answer was not a 429)."""

    response: httpx.Response
    latency_ms: float
    waited_s: float = 0.0

    @property
    def note(self) -> str:
        return f" (after a 429 and {self.waited_s:g} s Retry-After)" if self.waited_s else ""


async def polite_request(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Answer:
    """One request; on a 429 with a short Retry-After, wait it out once and ask again.

    For setup calls and health checks only: a rate limiter shared with other probes (or the
    rate-limit burst) must not turn into a false failure. Never used for the zombie token.
    """
    began = time.perf_counter()
    response = await request_within_deadline(client, method, url, **kwargs)
    latency = (time.perf_counter() - began) * 1000.0
    if response.status_code == 429:
        wait = retry_after_seconds(response)
        if wait is not None and wait <= MAX_POLITE_WAIT_S and wait + 0.05 < time_left(float("inf")):
            await asyncio.sleep(wait + 0.05)
            began = time.perf_counter()
            response = await request_within_deadline(client, method, url, **kwargs)
            return Answer(response, (time.perf_counter() - began) * 1000.0, wait)
    return Answer(response, latency)


async def request_within_deadline(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request that ends by the probe's deadline, body included (httpx's own timeouts are
    per read: a body dripping a byte a second never trips them). ProbeError says how long it
    ran and whether the headers or the body did not arrive in time."""
    import httpx  # loaded with the client

    timeout = kwargs.pop("timeout", None)
    left = time_left(float(timeout) if isinstance(timeout, (int, float)) else 10.0)
    phase = "the connection and the response headers"
    began = time.perf_counter()
    try:
        async with asyncio.timeout(left):
            async with client.stream(method, url, timeout=left, **kwargs) as response:
                phase = f"the body (headers came: {response.status_code})"
                await response.aread()
                return response
    except (TimeoutError, httpx.TimeoutException):
        raise ProbeError(f"{method} {url}: timeout after {time.perf_counter() - began:.1f} s waiting for {phase}") from None


def secret_headers(ctx: ProbeContext, mapping: Mapping[str, str], auth: Auth | None = None) -> dict[str, str]:
    """Header name -> secret value, plus the item's `auth` (`apikey`, `Authorization: Bearer`);
    ProbeError naming the variable when a secret is not set."""
    headers = {header: _secret(ctx, logical) for header, logical in mapping.items()}
    if auth is not None:
        if auth.apikey is not None:
            headers["apikey"] = _secret(ctx, auth.apikey)
        if auth.bearer is not None:
            headers["Authorization"] = f"Bearer {_secret(ctx, auth.bearer)}"
    return headers


def _secret(ctx: ProbeContext, logical: str) -> str:
    if not ctx.secrets.has(logical):
        raise ProbeError(f"secret {logical!r} is not set: export {ctx.secrets.variable(logical)}=...")
    return ctx.secrets.get(logical)
