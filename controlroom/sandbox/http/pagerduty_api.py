"""The sandbox's PagerDuty REST API: `GET /sinks/pagerduty-api/oncalls`, as PagerDuty's
`GET /oncalls` answers it (API v2, "List all of the on-calls").

- Auth: `Authorization: Token token=<key>`; no key or a wrong one is 401 with PagerDuty's
  error object. `Accept` may be left out (the key's version, 2, answers) or name
  `application/vnd.pagerduty+json;version=2`; another version, or a type that is not JSON,
  is 406.
- `since` / `until` (ISO 8601, default now): every on-call entry that overlaps the range;
  `until` before `since`, or more than 90 days after it, is 400. `escalation_policy_ids[]`,
  `schedule_ids[]`, `user_ids[]` filter; `earliest=true` keeps only the first entry of each
  (policy, level, user); `time_zone` renders the times; `limit` (25, at most 100), `offset`,
  `more` and `total` (null unless `total=true`) page them.

The roster is one escalation policy with four levels, fixed in time (handovers at whole
hours, UTC): L1 an 8-hour rotation, L2 a 12-hour one, L3 a daily one, L4 a user on call
permanently (no schedule, no start, no end). It covers any window; a scenario's
`oncall_gaps` take someone off a level for a while after the sandbox starts.
"""

from __future__ import annotations

import hmac
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlroom.sandbox.world.scenarios import Scenario

POLICY_ID = "PSBXPOL"  # the sandbox's escalation policy: the config's URL asks for it
POLICY_NAME = "POS platform production (sandbox)"
MAX_RANGE = timedelta(days=90)
DEFAULT_LIMIT, MAX_LIMIT = 25, 100
PD_MEDIA_TYPE = "application/vnd.pagerduty+json"


@dataclass(frozen=True)
class Rotation:
    level: int
    schedule: tuple[str, str] | None  # (id, name); None: the rule names a user, on call permanently
    users: tuple[tuple[str, str], ...]  # (id, name), in turn
    shift_h: float | None  # None: permanent
    handover_h: float = 0.0  # handovers at handover_h + k * shift_h hours after the epoch (UTC)


ROTATIONS: tuple[Rotation, ...] = (
    Rotation(1, ("PSBXPRI", "POS primary on-call"),
             (("PANARUI", "Ana Ruiz"), ("PBENOKA", "Ben Okafor"), ("PCHENWE", "Chen Wei")), 8, 0),
    Rotation(2, ("PSBXSRE", "SRE leads"), (("PDANAKI", "Dana Kim"), ("PELIFSA", "Elif Sahin")), 12, 6),
    Rotation(3, ("PSBXENG", "Engineering managers"), (("PFARIDH", "Farid Haddad"), ("PGRACEL", "Grace Liu")), 24, 9),
    Rotation(4, None, (("PHIROTA", "Hiro Tanaka"),), None),
)


@dataclass(frozen=True)
class Entry:
    level: int
    schedule: tuple[str, str] | None
    user: tuple[str, str]
    start: float | None  # epoch seconds; None: no bound
    end: float | None

    def overlaps(self, since: float, until: float) -> bool:
        return (self.start is None or self.start <= until) and (self.end is None or self.end > since)


def roster(since: float, until: float, gaps: tuple[tuple[int, float, float], ...] = ()) -> list[Entry]:
    """Every on-call entry overlapping [since, until] (epoch seconds), with nobody on call at a
    gap's level during it (gaps in epoch seconds)."""
    entries: list[Entry] = []
    for rotation in ROTATIONS:
        if rotation.shift_h is None:
            shifts = [Entry(rotation.level, rotation.schedule, rotation.users[0], None, None)]
        else:
            length, origin = rotation.shift_h * 3600, rotation.handover_h * 3600
            first = math.floor((since - origin) / length)
            shifts = []
            for k in range(first, math.floor((until - origin) / length) + 1):
                user = rotation.users[k % len(rotation.users)]
                shifts.append(Entry(rotation.level, rotation.schedule, user, origin + k * length, origin + (k + 1) * length))
        for level, gap_start, gap_end in gaps:
            if level == rotation.level:
                shifts = [piece for shift in shifts for piece in _without(shift, gap_start, gap_end)]
        entries += [shift for shift in shifts if shift.overlaps(since, until)]
    return sorted(entries, key=lambda e: (e.level, -math.inf if e.start is None else e.start))


def _without(entry: Entry, gap_start: float, gap_end: float) -> list[Entry]:
    """The entry with [gap_start, gap_end) taken out: none, one or two pieces."""
    start = -math.inf if entry.start is None else entry.start
    end = math.inf if entry.end is None else entry.end
    if gap_end <= start or gap_start >= end:
        return [entry]
    pieces = []
    if start < gap_start:
        pieces.append(Entry(entry.level, entry.schedule, entry.user, entry.start, gap_start))
    if gap_end < end:
        pieces.append(Entry(entry.level, entry.schedule, entry.user, gap_end, entry.end))
    return pieces


def _error(status: int, message: str, code: int | None = None, errors: list[str] | None = None) -> JSONResponse:
    """PagerDuty's error object."""
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body["code"] = code
    if errors:
        body["errors"] = errors
    return JSONResponse({"error": body}, status_code=status)


class PagerDutyApi:
    """GET /oncalls over the roster, for one scenario; its gaps count from construction (the
    sandbox server's start)."""

    def __init__(self, token: str, scenario: Scenario, *, started_at: float | None = None) -> None:
        self.token = token
        started = time.time() if started_at is None else started_at
        self.gaps = tuple((level, started + a * 60, started + b * 60) for level, a, b in scenario.oncall_gaps)

    def _authorised(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        name, _, key = credentials.strip().partition("=")
        return (scheme == "Token" and name == "token" and bool(self.token)
                and hmac.compare_digest(key.encode(), self.token.encode()))

    async def list_oncalls(self, request: Request) -> Response:
        if not self._authorised(request):
            return _error(401, "Authentication failed", 2006)
        refused = _accept_problem(request.headers.get("accept"))
        if refused:
            return _error(406, refused)
        params = request.query_params
        now = time.time()
        try:
            since = _time(params.get("since"), now, "since")
            until = _time(params.get("until"), now, "until")
            limit = min(MAX_LIMIT, _whole(params.get("limit"), DEFAULT_LIMIT, "limit", minimum=1))
            offset = _whole(params.get("offset"), 0, "offset", minimum=0)
            zone = ZoneInfo(params.get("time_zone") or "UTC")
        except ValueError as error:
            return _error(400, "Invalid Input Provided", 2001, [str(error)])
        except ZoneInfoNotFoundError:
            return _error(400, "Invalid Input Provided", 2001, ["Time Zone is not a valid time zone"])
        if until < since:
            return _error(400, "Invalid Input Provided", 2001, ["Until must be after since"])
        if until - since > MAX_RANGE.total_seconds():
            return _error(400, "Invalid Input Provided", 2001, ["The range between since and until must be 90 days or less"])

        entries = roster(since, until, self.gaps)
        policies = params.getlist("escalation_policy_ids[]")
        if policies and POLICY_ID not in policies:
            entries = []
        schedules = params.getlist("schedule_ids[]")
        if schedules:
            entries = [e for e in entries if e.schedule is not None and e.schedule[0] in schedules]
        users = params.getlist("user_ids[]")
        if users:
            entries = [e for e in entries if e.user[0] in users]
        if params.get("earliest") == "true":
            first: dict[tuple[int, str], Entry] = {}
            for entry in entries:
                first.setdefault((entry.level, entry.user[0]), entry)
            entries = list(first.values())

        api = str(request.base_url).rstrip("/") + "/sinks/pagerduty-api"
        page = [_render(entry, zone, api) for entry in entries[offset:offset + limit]]
        return JSONResponse({
            "oncalls": page,
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(entries),
            "total": len(entries) if params.get("total") == "true" else None,
        })


def _accept_problem(accept: str | None) -> str | None:
    """Why PagerDuty would not answer this Accept header, or None."""
    if not accept or not accept.strip():
        return None  # the key's own version answers
    for part in accept.split(","):
        media, *parameters = [piece.strip() for piece in part.split(";")]
        values = dict(p.split("=", 1) for p in parameters if "=" in p)
        if media == PD_MEDIA_TYPE:
            version = values.get("version", "2").strip()
            if version == "2":
                return None
            return f"API version {version!r} is not supported; ask for {PD_MEDIA_TYPE};version=2"
        if media in ("*/*", "application/*", "application/json"):
            return None
    return f"Not Acceptable: this API answers application/json ({PD_MEDIA_TYPE};version=2), not {accept!r}"


def _time(value: str | None, default: float, name: str) -> float:
    if value is None or value == "":
        return default
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name.capitalize()} is not a valid ISO 8601 date and time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _whole(value: str | None, default: int, name: str, *, minimum: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < minimum:
        raise ValueError(f"{name.capitalize()} must be a whole number of at least {minimum}")
    return int(value)


def _render(entry: Entry, zone: ZoneInfo, api: str) -> dict[str, Any]:
    def when(moment: float | None) -> str | None:
        return None if moment is None else datetime.fromtimestamp(moment, zone).isoformat(timespec="seconds")

    def reference(kind: str, plural: str, ident: str, name: str) -> dict[str, Any]:
        return {"id": ident, "type": f"{kind}_reference", "summary": name, "self": f"{api}/{plural}/{ident}", "html_url": None}

    user_id, user_name = entry.user
    return {
        "escalation_policy": reference("escalation_policy", "escalation_policies", POLICY_ID, POLICY_NAME),
        "escalation_level": entry.level,
        "schedule": reference("schedule", "schedules", *entry.schedule) if entry.schedule else None,
        "user": reference("user", "users", user_id, user_name),
        "start": when(entry.start),
        "end": when(entry.end),
    }
