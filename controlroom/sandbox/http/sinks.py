"""The sandbox's notification sinks: what Slack and PagerDuty receive, and the faults to inject.

`SinkRecorder` keeps every post (secrets left out) and the faults still to answer with;
`validate_pd_event` holds the PagerDuty Events API v2 rules the control room must respect.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_ACTIONS = ("trigger", "acknowledge", "resolve")
SECRET_HEADERS = frozenset({"authorization", "apikey", "cookie", "x-routing-key", "proxy-authorization"})


@dataclass
class SinkFault:
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class SinkRecorder:
    """Everything posted to the sinks, in order, and the faults still to be injected."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"slack": [], "pagerduty": []})
    faults: dict[str, SinkFault] = field(default_factory=dict)

    def take_fault(self, sink: str) -> SinkFault | None:
        fault = self.faults.get(sink)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            del self.faults[sink]
        return fault

    def record(self, sink: str, request: Request, body: Any, status: int, reason: str | None) -> None:
        self.records[sink].append(
            {
                "received_at": time.time(),
                "path": request.url.path,
                "hook_id": request.path_params.get("hook_id"),
                "headers": {k: v for k, v in request.headers.items() if k not in SECRET_HEADERS},
                "body": body,
                "status": status,
                "accepted": status < 300,
                "reason": reason,
            }
        )

    def clear(self) -> None:
        for records in self.records.values():
            records.clear()
        self.faults.clear()


SLACK_FAULT_BODIES = {400: "invalid_payload", 403: "action_prohibited", 404: "no_service", 410: "channel_is_archived", 429: "rate_limited"}


def fault_response(sink: str, fault: SinkFault) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if sink == "slack":
        body = SLACK_FAULT_BODIES.get(fault.status, "internal_error")
        return PlainTextResponse(body, status_code=fault.status, headers=headers)
    message = "Rate limit exceeded" if fault.status == 429 else "Injected fault"
    return JSONResponse({"status": "error", "message": message}, status_code=fault.status, headers=headers)


def validate_pd_event(event: Any, routing_key: str) -> list[str]:
    """The PagerDuty Events API v2 rules the control room must respect; [] when valid."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors: list[str] = []
    if not hmac.compare_digest(str(event.get("routing_key", "")), routing_key):
        errors.append("'routing_key' is missing or invalid")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    elif action == "trigger":
        errors.extend(_pd_trigger_errors(event.get("payload")))
    elif not event.get("dedup_key"):
        errors.append(f"'dedup_key' is required for {action}")
    return errors


def _pd_trigger_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger"]
    errors = [f"'payload.{name}' is missing" for name in ("summary", "source") if not payload.get(name)]
    if payload.get("severity") not in PD_SEVERITIES:
        errors.append("'payload.severity' must be one of critical, error, warning, info")
    return errors


def redact_pd(event: Any) -> Any:
    if isinstance(event, dict) and "routing_key" in event:
        return {**event, "routing_key": "[redacted]"}
    return event
