"""The Token Zombie test, the seed's security gate, all of it:

Every query is the runbook's (location_query, rotations_query, breakers_query): nothing here
knows a schema.

1. pick a location (location_query), issue a token for it (POST issue_url, apikey header),
   rotate it once (POST rotate_url, Bearer) so the old token is a zombie — or take the
   zombie from zombie_token_secret and skip both. Minting rotates a real location's
   credentials, so against an environment marked production the probe does not mint unless
   the item sets allow_mint_in_production: without a zombie_token_secret it reports `skipped`
   and the verdict waits for an operator's attestation;
2. snapshot the circuit breakers (the zombie's location's, and every non-closed one) and
   count the rotation rows recorded with the zombie's fingerprint;
3. open the connection to the zombie's origin first (an OPTIONS without credentials, its
   answer ignored) so TCP and TLS setup do not count against max_latency_ms, then present
   the zombie (POST probe_url or rotate_url, Bearer zombie, {"location_id": ...}) with a
   client that does no transport retries and follows no redirects, counting the requests
   that actually go on the wire. Both run on a thread of their own, timed there: the
   control room's event loop, busy with a frame or a poll, adds nothing to the latency (and
   the control room's collector starts no long pass while probes run, `probes_running`: one
   stops every thread);
4. pass only if: 401 (carrying the item's function_marker when one is set: a 401 without it
   came from a gateway in front of the function, an error), in under max_latency_ms (the whole exchange), within max_attempts
   (1 = 0 retries; with more, the probe itself retries only after a 5xx / 429 / network
   error and counts it), no new rotation row with the zombie's fingerprint, breakers as
   they were.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from controlroom.infra.http_transport import NoRetrySyncTransport, NoRetryTransport
from controlroom.checks.base import (
    Outcome,
    ProbeContext,
    ProbeError,
    body_snippet,
    describe_exception,
    ms,
    own_timing,
    polite_request,
    secret_headers,
)
from controlroom.checks.sql import fetch
from controlroom.config.models import FunctionMarker, TokenZombieItem
from controlroom.infra.tokens import token_fingerprint

T = TypeVar("T")
RETRYABLE = frozenset({429, 500, 502, 503, 504})
UNUSED_FINGERPRINT = "0" * 16  # no token has it: the rotation count's query is tried with it
# Opening a connection (TCP and TLS) takes well under this; a server that does not answer the
# warm-up in time is left to the zombie request, which then still has its whole timeout
# within the runner's grace.
WARM_UP_TIMEOUT_S = 1.0


class CountingTransport(NoRetrySyncTransport):
    """Counts every request that reaches the wire. No retries of its own (retries=0)."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return super().handle_request(request)


@dataclass(frozen=True)
class BreakerSnapshot:
    location: tuple[str, int] | None  # (state, failure_count) of the zombie's location
    others: frozenset[tuple[str, str]]  # (location_id, state) of every non-closed breaker


@dataclass(frozen=True)
class Presentation:
    status: int | None
    latency_ms: float
    attempts: int
    body: str
    error: str | None = None
    timed_out: bool = False
    # Whether the answer carries the item's function_marker; None: no marker configured.
    marked: bool | None = None


async def probe(item: TokenZombieItem, ctx: ProbeContext) -> Outcome:
    with own_timing():
        return await _probe(item, ctx)


async def _probe(item: TokenZombieItem, ctx: ProbeContext) -> Outcome:
    if item.refused_in(ctx.loaded.environment):  # minting would rotate a real location's token here
        return Outcome(
            "skipped",
            f"not run: {ctx.loaded.environment.name!r} is production and the item has no "
            f"zombie_token_secret; minting a zombie would rotate a real location's token, which the "
            f"runbook does not allow here (allow_mint_in_production); "
            f"attest that the Token Zombie test was done (--attest {item.id})",
        )
    database = ctx.loaded.runbook.database(item.database)
    rows = await fetch(ctx, database, item.location_query, timeout_s=item.timeout_s)
    if not rows or rows[0][0] is None:
        raise ProbeError("location_query returned no location to test with")
    location_id = str(rows[0][0])
    # The measurements' SQL must work on this schema before anything is minted or rotated:
    # a query that fails afterwards would leave a real token rotated and nothing measured.
    try:
        await _rotations(item, ctx, database, UNUSED_FINGERPRINT)
        await _breakers(item, ctx, database, location_id)
    except ProbeError as error:
        raise ProbeError(f"not run: the test's own measurements fail on this database, so nothing was minted "
                         f"or rotated ({error})") from None

    if item.zombie_token_secret:
        zombie = ctx.secrets.get(item.zombie_token_secret)
    else:
        async with httpx.AsyncClient(transport=NoRetryTransport(), follow_redirects=False,
                                     timeout=item.timeout_s) as client:
            zombie = await _make_zombie(item, ctx, client, location_id)
    zombie_fp = token_fingerprint(zombie)

    rotations_before = await _rotations(item, ctx, database, zombie_fp)
    breakers_before = await _breakers(item, ctx, database, location_id)

    presented = await on_own_thread(lambda cancelled: _present_timed(item, ctx, zombie, location_id, cancelled))

    rotations_after = await _rotations(item, ctx, database, zombie_fp)
    breakers_after = await _breakers(item, ctx, database, location_id)
    return judge(
        item,
        presented,
        new_rotations=rotations_after - rotations_before,
        before=breakers_before,
        after=breakers_after,
        location_id=location_id,
    )


async def _make_zombie(item: TokenZombieItem, ctx: ProbeContext, client: httpx.AsyncClient, location_id: str) -> str:
    issue_headers = {"apikey": ctx.secrets.get(item.api_key_secret), **secret_headers(ctx, {}, item.auth)}
    issue_url, rotate_url = ctx.url(item.issue_url), ctx.url(item.rotate_url)
    body = {"location_id": location_id}
    old = await _token_from(client, "issue a token", issue_url, ctx.redact, headers=issue_headers, json=body)
    await _token_from(client, "rotate the token", rotate_url, ctx.redact, headers=_as_bearer(item, ctx, old), json=body)
    return old


def _as_bearer(item: TokenZombieItem, ctx: ProbeContext, token: str) -> dict[str, str]:
    """The item's auth headers with `token` as the bearer (rotate and present)."""
    return {**secret_headers(ctx, {}, item.auth), "Authorization": f"Bearer {token}"}


def _warm_up(item: TokenZombieItem, ctx: ProbeContext, client: httpx.Client) -> None:
    """Open (or reuse) a connection to the zombie's origin so that the timed request does not
    pay for TCP and TLS setup. No credentials; whatever it answers, or fails with, is ignored
    (the zombie request itself reports an unreachable server)."""
    try:
        url = ctx.url(item.probe_url or item.rotate_url)
        client.options(url, timeout=min(WARM_UP_TIMEOUT_S, item.timeout_s / 4))
    except httpx.HTTPError:
        pass


async def on_own_thread(work: Callable[[threading.Event], T]) -> T:
    """`work(cancelled)` on a daemon thread of its own, awaited: a latency measured there is
    the platform's, not the control room's event loop's (a layout or a poll decoded can hold
    the loop for 100 ms, the zombie's whole limit; the thread gets the interpreter back within
    Python's 5-ms switch interval). A daemon, so that a control room that quits does not wait
    for it; `cancelled` is set when the probe is (its ceiling, a quit): the work stops at its
    next step rather than presenting the zombie again."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    cancelled = threading.Event()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def hand_over(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the loop has closed: nobody waits for the answer any more
            pass

    def run() -> None:
        try:
            result = work(cancelled)
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            failure = error
            hand_over(lambda: future.set_exception(failure))
        else:
            hand_over(lambda: future.set_result(result))

    threading.Thread(target=run, name="controlroom-timed-request", daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        cancelled.set()
        raise


def _present_timed(item: TokenZombieItem, ctx: ProbeContext, zombie: str, location_id: str,
                   cancelled: threading.Event) -> Presentation:
    """On the timed request's own thread: warm the connection up, then present the zombie."""
    transport = CountingTransport()
    with httpx.Client(transport=transport, follow_redirects=False, timeout=item.timeout_s) as client:
        _warm_up(item, ctx, client)
        transport.requests = 0
        return _present(item, ctx, client, transport, zombie, location_id, cancelled)


async def _token_from(client: httpx.AsyncClient, what: str, url: str, redact: Callable[[str], str], **kwargs: Any) -> str:
    try:
        answer = await polite_request(client, "POST", url, **kwargs)
    except httpx.HTTPError as error:
        raise ProbeError(f"could not {what} (POST {url}): {describe_exception(error)}") from None
    response = answer.response
    if response.status_code != 200:
        snippet = body_snippet(response, redact)
        raise ProbeError(f"could not {what} (POST {url}): {response.status_code} {snippet}".rstrip())
    try:
        token = response.json().get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise ProbeError(f"could not {what} (POST {url}): no access_token in the answer")
    return token


def _present(
    item: TokenZombieItem,
    ctx: ProbeContext,
    client: httpx.Client,
    transport: CountingTransport,
    zombie: str,
    location_id: str,
    cancelled: threading.Event,
) -> Presentation:
    url = ctx.url(item.probe_url or item.rotate_url)
    headers = _as_bearer(item, ctx, zombie)
    began = time.perf_counter()
    response: httpx.Response | None = None
    error: str | None = None
    timed_out = False
    for attempt in range(1, item.max_attempts + 1):
        if cancelled.is_set():
            break  # the probe was cancelled: no further attempt
        error, response = None, None
        try:
            response = client.post(url, headers=headers, json={"location_id": location_id})
        except httpx.HTTPError as failure:
            error, timed_out = describe_exception(failure), isinstance(failure, httpx.TimeoutException)
        retryable = error is not None or (response is not None and response.status_code in RETRYABLE)
        if not retryable or attempt == item.max_attempts:
            break
    latency = (time.perf_counter() - began) * 1000.0
    if response is None:
        return Presentation(None, latency, transport.requests, "", error=f"POST {url}: {error}", timed_out=timed_out)
    return Presentation(response.status_code, latency, transport.requests, body_snippet(response, ctx.redact, 80),
                        marked=carries_marker(item.function_marker, response))


def carries_marker(marker: FunctionMarker | None, response: httpx.Response) -> bool | None:
    """Whether `response` is marked as the function's own answer (None: no marker set)."""
    if marker is None:
        return None
    if marker.header is not None:
        return response.headers.get(marker.header) == marker.value
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get(marker.json_field) == marker.value


async def _rotations(item: TokenZombieItem, ctx: ProbeContext, database: str, zombie_fp: str) -> int:
    rows = await fetch(ctx, database, item.rotations_query, zombie_fp, timeout_s=item.timeout_s)
    if not rows or len(rows[0]) < 1:
        raise ProbeError("rotations_query returned no row (expected one row with a count)")
    try:
        return int(rows[0][0] or 0)
    except (TypeError, ValueError):
        raise ProbeError(f"rotations_query returned {rows[0][0]!r}, not a count") from None


BREAKER_COLUMNS = ("location_id", "state", "failure_count")


async def _breakers(item: TokenZombieItem, ctx: ProbeContext, database: str, location_id: str) -> BreakerSnapshot:
    rows = await fetch(ctx, database, item.breakers_query, location_id, timeout_s=item.timeout_s)
    if rows:
        missing = [name for name in BREAKER_COLUMNS if name not in rows[0].keys()]
        if missing:
            raise ProbeError(f"breakers_query has no column {', '.join(missing)} (expected {', '.join(BREAKER_COLUMNS)})")
    mine = next(((r["state"], r["failure_count"]) for r in rows if str(r["location_id"]) == location_id), None)
    others = frozenset((str(r["location_id"]), r["state"]) for r in rows if str(r["location_id"]) != location_id)
    return BreakerSnapshot(mine, others)


def judge(
    item: TokenZombieItem,
    presented: Presentation,
    *,
    new_rotations: int,
    before: BreakerSnapshot,
    after: BreakerSnapshot,
    location_id: str,
) -> Outcome:
    """Pure: the verdict on one zombie presentation and the before/after snapshots."""
    failed = False
    parts: list[str] = []
    measured: dict[str, Any] = {
        "http_status": presented.status,
        "latency_ms": round(presented.latency_ms, 1),
        "attempts": presented.attempts,
        "retries": max(presented.attempts - 1, 0),
        "new_rotations": new_rotations,
        "location_id": location_id,
    }

    if presented.status is None:
        parts.append(f"no answer ({presented.error}) after {ms(presented.latency_ms)}")
        failed = True
    else:
        status = str(presented.status)
        if 200 <= presented.status < 300:
            status += " (accepted!)"
            failed = True
        elif 300 <= presented.status < 400:
            status += " (redirect, not followed; expected 401)"
            failed = True
        elif presented.status != 401:
            status += " (expected 401)" + (f": {presented.body}" if presented.body else "")
            failed = True
        latency = f"in {ms(presented.latency_ms)}"
        if presented.latency_ms >= item.max_latency_ms:
            latency += f" (limit {item.max_latency_ms:g} ms)"
            failed = True
        parts.append(f"{status} {latency}")

    retries = presented.attempts - 1
    if presented.attempts <= 1:
        parts.append("0 retries")
    else:
        parts.append(f"{presented.attempts} attempts ({retries} retr{'y' if retries == 1 else 'ies'})")
    if presented.attempts > item.max_attempts:
        parts[-1] += f" (at most {item.max_attempts} allowed)"
        failed = True

    if new_rotations > 0:
        parts.append("rotation recorded with the zombie token" + (f" ({new_rotations}×)" if new_rotations > 1 else ""))
        failed = True
    else:
        parts.append("no rotation")

    if before.location != after.location:
        was = before.location[0] if before.location else "none"
        now = after.location[0] if after.location else "none"
        count = f", failures {before.location[1] if before.location else 0} → {after.location[1] if after.location else 0}"
        parts.append(f"breaker of {location_id} changed {was} → {now}{count}")
        failed = True
    else:
        parts.append("breakers unchanged")
        changed = len(before.others ^ after.others)
        if changed:  # other locations' breakers moved meanwhile (the fleet is live)
            parts[-1] += f" ({changed} other breaker change{'s' if changed > 1 else ''} meanwhile, not this token's)"

    evidence = ", ".join(parts)
    if presented.status == 401 and presented.marked is False:
        # Looks like the function's refusal, but nothing says the function gave it.
        marker = item.function_marker.describe() if item.function_marker else ""
        measured["function_reached"] = False
        return Outcome("error", f"401 without the function's mark ({marker}): the gateway refused the request; "
                                f"the function was never reached ({evidence})", measured)
    if presented.marked is not None:
        measured["function_reached"] = presented.marked
    if presented.status is None and not presented.timed_out:
        return Outcome("error", evidence, measured)  # refused / reset: we could not verify
    # A zombie left unanswered until the timeout is certainly not "401 in < 100 ms".
    return Outcome("fail" if failed else "pass", evidence, measured)
