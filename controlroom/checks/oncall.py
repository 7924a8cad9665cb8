"""On-call coverage, asked of PagerDuty's REST API: is someone on call at every escalation
level of the item's `levels` for the whole of the next `hours`?

    GET {url}&since=<now>&until=<now + hours>&time_zone=UTC&limit=100&offset=<n>
    Authorization: Token token=<token_secret>
    Accept: application/vnd.pagerduty+json;version=2

`url` is the whole /oncalls URL of the environment, its `escalation_policy_ids[]` included
(nothing of a PagerDuty account is written here). PagerDuty returns every on-call entry that
overlaps [since, until] — `earliest` is left unset, since it would keep only the first shift
of each user and hide a later one — a page at a time while `more` is true. An entry is a
user (`user.summary`) on call at `escalation_level` from `start` to `end`; a null start or
end is a permanent on-call.

Per level the entries are chained from now: whoever covers the moment for longest, then
whoever covers the moment that one goes off call, and so on to now + hours. A moment nobody
covers is a gap: the item fails naming the level and the uncovered window. A refused key, a
rate limit, a dead or slow API, or an answer that is not PagerDuty's is an `error` (the
verdict: could not verify). The whole probe, every page included, is within `timeout_s`.

An environment that configures neither the url's `{urls.NAME}` nor `token_secret` does not
probe it: the item is `skipped`, and an operator attests it (--attest).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from controlroom.checks.base import (
    Outcome,
    ProbeContext,
    ProbeError,
    body_snippet,
    describe_exception,
    polite_request,
    shorten,
)
from controlroom.config.models import Environment, PagerDutyOncallItem

ACCEPT = "application/vnd.pagerduty+json;version=2"
PAGE_LIMIT = 100  # PagerDuty's largest page
MAX_PAGES = 50  # 5,000 on-call entries for one policy over a few hours is not an answer to trust
MAX_NAMED_PER_LEVEL = 3  # a level's evidence names at most this many handovers


def unconfigured_here(item: PagerDutyOncallItem, environment: Environment) -> list[str]:
    """What the environment lacks to probe this item when it configures none of it (the item
    is then attested); [] when it is probed here."""
    return item.unconfigured_in(environment)


@dataclass(frozen=True)
class Shift:
    """One on-call entry: `who` at `level` from `start` to `end` (None: no bound)."""

    level: int
    who: str
    start: datetime | None
    end: datetime | None

    def covers(self, moment: datetime) -> bool:
        return (self.start is None or self.start <= moment) and (self.end is None or moment < self.end)


@dataclass(frozen=True)
class Segment:
    """A stretch of a level's window: covered by `who` until `until` (None: never ends), or
    by nobody (`who` None) until `until`."""

    who: str | None
    until: datetime | None


async def probe(item: PagerDutyOncallItem, ctx: ProbeContext) -> Outcome:
    environment = ctx.loaded.environment
    missing = unconfigured_here(item, environment)
    if missing:
        return Outcome(
            "skipped",
            f"not probed: no PagerDuty configured here ({', '.join(missing)}); "
            f"attest that {_levels(item.levels)} reachable for the next {item.hours:g} h (--attest {item.id})",
        )
    now = datetime.now(timezone.utc).replace(microsecond=0)
    until = now + timedelta(hours=item.hours)
    shifts, pages, latency_ms = await fetch_oncalls(item, ctx, now, until)
    outcome = judge(item, shifts, now, until)
    # The latency is in `measured` (and the duration beside the evidence): the evidence stays
    # short enough for two lines of an 80-column screen.
    tail = f" ({pages} pages)" if pages > 1 else ""
    return Outcome(outcome.status, outcome.evidence + tail,
                   {**outcome.measured, "entries": len(shifts), "pages": pages, "latency_ms": round(latency_ms, 1)})


async def fetch_oncalls(item: PagerDutyOncallItem, ctx: ProbeContext, since: datetime,
                        until: datetime) -> tuple[list[Shift], int, float]:
    """Every on-call entry overlapping [since, until], page after page; the pages read and
    their latency. ProbeError with PagerDuty's own words when it does not answer them."""
    url = httpx.URL(ctx.url(item.url))
    bare = url.copy_with(query=None)  # what the evidence shows: no policy ids, no parameters
    headers = {"Authorization": f"Token token={ctx.secrets.get(item.token_secret)}", "Accept": ACCEPT}
    shifts: list[Shift] = []
    latency_ms = 0.0
    offset = 0
    for page in range(1, MAX_PAGES + 1):
        params = [*url.params.multi_items(), ("since", _iso(since)), ("until", _iso(until)), ("time_zone", "UTC"),
                  ("limit", str(PAGE_LIMIT)), ("offset", str(offset))]
        try:
            answer = await polite_request(ctx.http, "GET", str(bare), params=params, headers=headers, timeout=item.timeout_s)
        except httpx.HTTPError as error:
            raise ProbeError(f"GET {bare}: {describe_exception(error)}") from None
        latency_ms += answer.latency_ms
        body = _answer(answer.response, bare, page, item.token_secret, ctx.redact)
        entries = body["oncalls"]
        shifts += [_shift(entry, ctx.redact) for entry in entries]
        if body.get("more") is not True:
            return shifts, page, latency_ms
        if not entries:
            raise ProbeError(f"GET {bare}: page {page} says more=true but holds no on-call entry")
        offset += len(entries)
    raise ProbeError(f"GET {bare}: more than {MAX_PAGES} pages of on-call entries ({len(shifts)} read); "
                     "narrow the URL to one escalation policy")


def _answer(response: httpx.Response, url: httpx.URL, page: int, secret: str,
            redact: Callable[[str], str]) -> dict[str, Any]:
    """A 200's JSON object with its `oncalls` list; ProbeError saying what came instead."""
    status = response.status_code
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    where = f"GET {url}" + (f" (page {page})" if page > 1 else "")
    if status != 200:
        said = _error_message(body)
        detail = shorten(redact(said), 200) if said else body_snippet(response, redact)
        hint = {401: f"; the API key was refused: check the secret {secret!r}",
                403: "; the API key may not read on-calls",
                429: "; rate limited by PagerDuty"}.get(status, "")
        retry = response.headers.get("retry-after")
        if status == 429 and retry:
            hint += f" (Retry-After {retry} s)"
        raise ProbeError(f"{where}: HTTP {status}" + (f" {detail}" if detail else "") + hint)
    if not isinstance(body, dict) or not isinstance(body.get("oncalls"), list):
        snippet = body_snippet(response, redact)
        raise ProbeError(f"{where}: 200 but not an on-calls answer (no \"oncalls\" list): {snippet or 'empty body'}")
    return body


def _error_message(body: Any) -> str:
    """PagerDuty's error object: {"error": {"message": ..., "code": ..., "errors": [...]}}."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    message = str(error.get("message") or "")
    details = [str(e) for e in error["errors"]] if isinstance(error.get("errors"), list) else []
    code = f" (code {error['code']})" if error.get("code") is not None else ""
    return message + code + (f": {'; '.join(details)}" if details else "")


def _shift(entry: Any, redact: Callable[[str], str]) -> Shift:
    if not isinstance(entry, dict):
        raise ProbeError(f"an on-call entry is not an object: {shorten(redact(str(entry)), 80)}")
    level = entry.get("escalation_level")
    if not isinstance(level, int) or isinstance(level, bool):
        raise ProbeError(f"an on-call entry has no escalation_level: {shorten(redact(json.dumps(entry)), 120)}")
    user = entry.get("user") if isinstance(entry.get("user"), dict) else {}
    who = str(user.get("summary") or user.get("name") or user.get("id") or "an unnamed user")
    return Shift(level, who, _moment(entry, "start"), _moment(entry, "end"))


def _moment(entry: dict[str, Any], key: str) -> datetime | None:
    value = entry.get(key)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ProbeError(f"an on-call entry's {key} is not an ISO 8601 time: {shorten(str(value), 40)!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


# -- judging (pure) ------------------------------------------------------------------------


def judge(item: PagerDutyOncallItem, shifts: Iterable[Shift], now: datetime, until: datetime) -> Outcome:
    """Every level of the item covered from `now` to `until`, or a failure naming each level's
    uncovered window first. The evidence names who is on call per level:

        L1 Ana Ruiz until 16:00 UTC, then Ben Okafor · L2 Dana Kim until 18:00 · … — covered 2 h
        L2 uncovered 15:10–16:10 UTC (Dana Kim until 15:10, then Elif Sahin) · L1 Ana Ruiz until …
    """
    shifts = list(shifts)
    covered: list[str] = []
    gaps: list[str] = []
    uncovered: list[int] = []
    for level in item.levels:
        segments = chain([s for s in shifts if s.level == level], now, until)
        holes = holes_in(segments, now, until)
        if not holes:
            covered.append(f"L{level} {describe_level(segments, now, until)}")
            continue
        uncovered.append(level)
        if all(segment.who is None for segment in segments):
            gaps.append(f"L{level} uncovered for the whole next {item.hours:g} h (nobody on call)")
            continue
        window = ", ".join(f"{'now' if start == now else clock(start, now)}–{clock(end, now)}" for start, end in holes)
        gaps.append(f"L{level} uncovered {window} ({describe_level(segments, now, until)})")
    measured = {"levels": list(item.levels), "uncovered": uncovered, "hours": item.hours}
    if gaps:
        return Outcome("fail", _zoned(" · ".join(gaps + covered)), measured)
    return Outcome("pass", _zoned(f"{' · '.join(covered)} — covered {item.hours:g} h"), measured)


_FIRST_TIME = re.compile(r"\d\d:\d\d(?:–(?:[A-Z][a-z]{2} )?\d\d:\d\d)?")


def _zoned(evidence: str) -> str:
    """The evidence with its first time (or window) marked UTC, where the reader meets it."""
    return _FIRST_TIME.sub(lambda match: match.group(0) + " UTC", evidence, count=1)


def chain(shifts: list[Shift], now: datetime, until: datetime) -> list[Segment]:
    """The level's window, from now on, as who covers it: at each moment whoever stays on
    call longest, then whoever covers the moment they go off; nobody until the next shift."""
    shifts = [s for s in shifts if s.start is None or s.end is None or s.start < s.end]
    segments: list[Segment] = []
    moment = now
    while moment < until:
        covering = [s for s in shifts if s.covers(moment)]
        if covering:
            best = max(covering, key=lambda s: s.end or datetime.max.replace(tzinfo=timezone.utc))
            segments.append(Segment(best.who, best.end))
            if best.end is None:
                break
            moment = best.end
            continue
        later = [s.start for s in shifts if s.start is not None and s.start > moment]
        next_start = min(later, default=None)
        segments.append(Segment(None, next_start if next_start is not None and next_start < until else None))
        if next_start is None or next_start >= until:
            break
        moment = next_start
    return segments


def holes_in(segments: list[Segment], now: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The stretches of [now, until] that nobody covers."""
    holes: list[tuple[datetime, datetime]] = []
    start = now
    for segment in segments:
        end = until if segment.until is None else min(segment.until, until)
        if segment.who is None:
            holes.append((start, end))
        start = end
    return holes


def describe_level(segments: list[Segment], now: datetime, until: datetime) -> str:
    """Who covers the level: 'Ana Ruiz until 18:00', 'Ana Ruiz until 15:10, then Ben Okafor',
    'Hiro Tanaka always'. Whoever is on call first is said with the end of their shift,
    whoever follows only when they too go off call within the window; the stretches nobody
    covers are left out (the level's gap says them)."""
    named = [segment for segment in segments if segment.who is not None]
    parts = []
    for n, segment in enumerate(named[:MAX_NAMED_PER_LEVEL]):
        if segment.until is None:
            parts.append(f"{segment.who} always" if n == 0 else str(segment.who))
        elif n == 0 or segment.until < until:
            parts.append(f"{segment.who} until {clock(segment.until, now)}")
        else:
            parts.append(str(segment.who))
    return ", then ".join(parts) + (", …" if len(named) > MAX_NAMED_PER_LEVEL else "")


def clock(moment: datetime, now: datetime) -> str:
    """18:00 within a day of now, 'Tue 09:00' within a week, 'Mar 14' further out (UTC)."""
    moment = moment.astimezone(timezone.utc)
    if moment - now < timedelta(hours=24):
        return moment.strftime("%H:%M")
    if moment - now < timedelta(days=7):
        return moment.strftime("%a %H:%M")
    return moment.strftime("%b %d")


def _levels(levels: list[int]) -> str:
    """'L1-L4 are', 'L1, L3 are', 'L2 is'."""
    if len(levels) == 1:
        return f"L{levels[0]} is"
    if levels == list(range(levels[0], levels[-1] + 1)):
        return f"L{levels[0]}-L{levels[-1]} are"
    return ", ".join(f"L{level}" for level in levels) + " are"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
