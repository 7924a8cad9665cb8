"""The sandbox's Statuspage: the REST API v1's incidents and components of one page.

As the API documents it (developer.statuspage.io, its OpenAPI): `Authorization: OAuth <key>`
(401 otherwise), `POST /v1/pages/{page_id}/incidents` with `{"incident": {...}}` → 201 and the
incident; `PATCH`/`PUT .../incidents/{incident_id}` → 200; `GET` an incident, the incidents,
the components; an unknown page or incident → 404; a request it cannot process (an unknown
status, component or component status) → 422. Errors are its ErrorEntity, `{"message": ...}`.
A status or a body given to an update becomes an incident update; `components` sets those
components' statuses (each update lists them as affected components). Every request is
recorded in the `statuspage` sink.
"""

from __future__ import annotations

import hmac
import json
import secrets
import string
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from controlroom.sandbox.http.server import STATUSPAGE_PAGE_ID as PAGE_ID
from controlroom.sandbox.http.sinks import SinkRecorder, fault_response
from controlroom.sandbox.world.scenarios import PROVIDER_TITLES

SINK = "statuspage"
INCIDENT_STATUSES = ("investigating", "identified", "monitoring", "resolved")
SCHEDULED_STATUSES = ("scheduled", "in_progress", "verifying", "completed")
COMPONENT_STATUSES = ("operational", "under_maintenance", "degraded_performance", "partial_outage", "major_outage")
IMPACTS = ("none", "minor", "major", "critical")
# The impact a component status gives an incident (the worst of its components).
STATUS_IMPACT = {"operational": "none", "under_maintenance": "none", "degraded_performance": "minor",
                 "partial_outage": "major", "major_outage": "critical"}
NAME_MAX = 255
BODY_MAX = 25_000
# The page's components: one per POS provider (named "<Title> integration"), and the API.
COMPONENTS: tuple[tuple[str, str, str], ...] = (
    *((f"cmp{key[:5]:0<5}0001", f"{title} integration", f"POS integration: {key}") for key, title in PROVIDER_TITLES.items()),
    ("cmpapi000001", "API", "The POS platform's public API"),
)
NOT_FOUND = "The requested resource could not be found."


class StatuspageApi:
    """One page (PAGE_ID), its components and its incidents, in memory."""

    def __init__(self, recorder: SinkRecorder, api_key: str, clock: Callable[[], float] = time.time) -> None:
        self.recorder = recorder
        self.api_key = api_key
        self.clock = clock
        created = _stamp(clock(), ms=False)
        self.components: dict[str, dict[str, Any]] = {
            cid: {"id": cid, "page_id": PAGE_ID, "group_id": None, "created_at": created, "updated_at": created,
                  "group": False, "name": name, "description": description, "position": n, "status": "operational",
                  "showcase": True, "only_show_if_degraded": False,
                  "automation_email": f"component+{cid}@notifications.statuspage.example", "start_date": created[:10]}
            for n, (cid, name, description) in enumerate(COMPONENTS, start=1)
        }
        self.incidents: dict[str, dict[str, Any]] = {}

    async def components_list(self, request: Request) -> Response:
        return await self._serve(request, lambda body: (200, [dict(c) for c in self.components.values()]))

    async def incidents_list(self, request: Request) -> Response:
        return await self._serve(request, lambda body: (200, list(reversed(self.incidents.values()))))  # newest first

    async def incident_create(self, request: Request) -> Response:
        return await self._serve(request, self._create, with_body=True)

    async def incident(self, request: Request) -> Response:
        """GET, PATCH or PUT one incident."""
        incident_id = request.path_params["incident_id"]
        if request.method == "GET":
            return await self._serve(request, lambda body: self._found(incident_id))
        return await self._serve(request, lambda body: self._update(incident_id, body), with_body=True)

    # -- the requests -------------------------------------------------------------------

    async def _serve(self, request: Request, handle: Callable[[Any], tuple[int, Any]], *,
                     with_body: bool = False) -> Response:
        raw = await request.body() if with_body else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = _UNREADABLE
        shown = None if body is _UNREADABLE else body
        incident_id = request.path_params.get("incident_id")
        fault = self.recorder.take_fault(SINK)
        if fault is not None:
            self._record(request, shown, fault.status, "injected fault", incident_id)
            return fault_response(SINK, fault)
        if not self._authorized(request):
            status, answer = 401, {"message": "Could not authenticate"}
        elif request.path_params["page_id"] != PAGE_ID:
            status, answer = 404, {"message": NOT_FOUND}
        elif with_body and not isinstance(body, dict):
            status, answer = 400, {"message": "The request body must be a JSON object"}
        else:
            status, answer = handle(body)
        if status < 300 and isinstance(answer, dict) and "incident_updates" in answer:
            incident_id = answer["id"]
        self._record(request, shown, status, answer.get("message") if isinstance(answer, dict) and status >= 300 else None,
                     incident_id)
        return JSONResponse(answer, status_code=status)

    def _record(self, request: Request, body: Any, status: int, reason: str | None, incident_id: str | None) -> None:
        self.recorder.record(SINK, request, body, status, reason, method=request.method,
                             page_id=request.path_params.get("page_id"), incident_id=incident_id)

    def _authorized(self, request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        return scheme.lower() == "oauth" and bool(key) and hmac.compare_digest(key.encode(), self.api_key.encode())

    def _found(self, incident_id: str) -> tuple[int, Any]:
        incident = self.incidents.get(incident_id)
        return (200, incident) if incident is not None else (404, {"message": NOT_FOUND})

    def _create(self, body: dict[str, Any]) -> tuple[int, Any]:
        fields = self._fields(body, creating=True)
        if isinstance(fields, tuple):
            return fields
        now = self.clock()
        incident_id = _new_id()
        incident = {
            "id": incident_id, "page_id": PAGE_ID, "name": fields["name"], "status": fields.get("status", "investigating"),
            "impact": "none", "impact_override": fields.get("impact_override"), "components": [], "incident_updates": [],
            "created_at": _stamp(now, ms=False), "updated_at": _stamp(now, ms=False), "started_at": _stamp(now, ms=False),
            "monitoring_at": None, "resolved_at": None, "shortlink": f"https://stspg.io/{_new_id(9)}",
            "metadata": fields.get("metadata") or {}, "postmortem_body": None, "postmortem_published_at": None,
            "scheduled_for": None, "scheduled_until": None, "reminder_intervals": None,
        }
        self.incidents[incident_id] = incident
        self._apply(incident, fields, now)
        return 201, incident

    def _update(self, incident_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        incident = self.incidents.get(incident_id)
        if incident is None:
            return 404, {"message": NOT_FOUND}
        fields = self._fields(body, creating=False)
        if isinstance(fields, tuple):
            return fields
        now = self.clock()
        for name in ("name", "status", "impact_override"):
            if name in fields:
                incident[name] = fields[name]
        if "metadata" in fields:
            incident["metadata"] = fields["metadata"] or {}
        self._apply(incident, fields, now)
        return 200, incident

    def _fields(self, body: dict[str, Any], *, creating: bool) -> dict[str, Any] | tuple[int, Any]:
        """The body's incident fields, or the answer that refuses them (400, 422)."""
        fields = body.get("incident")
        if not isinstance(fields, dict):
            return 400, {"message": "incident is missing"}
        problem = self._problem(fields, creating=creating)
        return (422, {"message": problem}) if problem is not None else fields

    def _problem(self, fields: dict[str, Any], *, creating: bool) -> str | None:
        """Why Statuspage would not process these incident fields (422), or None."""
        name = fields.get("name")
        if (creating or "name" in fields) and (not isinstance(name, str) or not name.strip()):
            return "Name can't be blank"
        if isinstance(name, str) and len(name) > NAME_MAX:
            return f"Name is too long (maximum is {NAME_MAX} characters)"
        status = fields.get("status")
        if status is not None and status not in INCIDENT_STATUSES:
            if status in SCHEDULED_STATUSES:
                return f"Status {status} is for scheduled maintenances; this sandbox takes realtime incidents"
            return f"Status is not included in the list ({', '.join(INCIDENT_STATUSES)})"
        body = fields.get("body")
        if body is not None and (not isinstance(body, str) or len(body) > BODY_MAX):
            return f"Body must be a string of at most {BODY_MAX} characters"
        override = fields.get("impact_override")
        if override is not None and override not in IMPACTS:
            return f"Impact override is not included in the list ({', '.join(IMPACTS)})"
        ids = fields.get("component_ids", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return "Component ids must be a list of component ids"
        statuses = fields.get("components", {})
        if not isinstance(statuses, dict):
            return "Components must be an object of component id to status"
        unknown = [cid for cid in [*ids, *statuses] if cid not in self.components]
        if unknown:
            return f"Component {unknown[0]} was not found on page {PAGE_ID}"
        wrong = [f"{cid}: {value!r}" for cid, value in statuses.items() if value not in COMPONENT_STATUSES]
        if wrong:
            return f"Component status must be one of {', '.join(COMPONENT_STATUSES)} ({wrong[0]})"
        if "metadata" in fields and fields["metadata"] is not None and not isinstance(fields["metadata"], dict):
            return "Metadata must be an object"
        return None

    def _apply(self, incident: dict[str, Any], fields: dict[str, Any], now: float) -> None:
        """Component statuses, the incident's components and impact, its new update, its clocks."""
        statuses: dict[str, str] = fields.get("components") or {}
        affected = []
        for cid, new in statuses.items():
            component = self.components[cid]
            affected.append({"code": cid, "name": component["name"], "old_status": component["status"], "new_status": new})
            if component["status"] != new:
                component.update(status=new, updated_at=_stamp(now, ms=False))
        involved = dict.fromkeys([*(c["id"] for c in incident["components"]), *fields.get("component_ids", []), *statuses])
        incident["components"] = [dict(self.components[cid]) for cid in involved]
        worst = max((IMPACTS.index(STATUS_IMPACT[c["status"]]) for c in incident["components"]), default=0)
        incident["impact"] = incident["impact_override"] or IMPACTS[worst]
        if "status" in fields or "body" in fields or statuses or not incident["incident_updates"]:
            incident["incident_updates"].insert(0, {
                "id": _new_id(), "incident_id": incident["id"], "status": incident["status"],
                "body": fields.get("body") or "", "created_at": _stamp(now), "updated_at": _stamp(now),
                "display_at": _stamp(now), "affected_components": affected or None,
                "deliver_notifications": fields.get("deliver_notifications", True) is not False,
                "custom_tweet": None, "tweet_id": None, "twitter_updated_at": None, "wants_twitter_update": False,
            })
        if incident["status"] == "monitoring" and incident["monitoring_at"] is None:
            incident["monitoring_at"] = _stamp(now, ms=False)
        incident["resolved_at"] = _stamp(now, ms=False) if incident["status"] == "resolved" else None
        incident["updated_at"] = _stamp(now, ms=False)


_UNREADABLE = object()
_ID_ALPHABET = string.ascii_lowercase + string.digits


def _new_id(length: int = 12) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _stamp(moment: float, *, ms: bool = True) -> str:
    """ISO 8601 in UTC as Statuspage writes it: seconds for an incident, milliseconds for an update."""
    at = datetime.fromtimestamp(moment, timezone.utc)
    return at.strftime("%Y-%m-%dT%H:%M:%S") + (f".{at.microsecond // 1000:03d}Z" if ms else "Z")
