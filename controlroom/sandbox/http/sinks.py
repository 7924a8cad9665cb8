"""The sandbox's notification sinks: what Slack, PagerDuty and Statuspage receive, and the
faults to inject.

`SinkRecorder` keeps every request (secrets left out) per sink, and the faults still to answer
with; `validate_pd_event` and `validate_pd_change` hold the PagerDuty Events API v2 rules the
control room must respect (developer.pagerduty.com, "Send an Alert Event" and "Send a Change
Event"). The Slack Web API lives in `slack_web.py`, the Statuspage REST API in `statuspage.py`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

# Every sink, by the name its records and faults go under.
SINKS = ("slack", "slack_api", "pagerduty", "pagerduty_change", "statuspage")
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SUMMARY_MAX = 1024   # characters, alert and change events alike
PD_DEDUP_KEY_MAX = 255
SECRET_HEADERS = frozenset({"authorization", "apikey", "cookie", "x-routing-key", "proxy-authorization"})


@dataclass
class SinkFault:
    """Refuse with `status` the next `remaining` requests, or every request until `until`
    (the recorder's clock): a sink that is down for a while."""

    status: int
    retry_after: int | None
    remaining: int | None = None
    until: float | None = None


@dataclass
class SinkRecorder:
    """Everything sent to the sinks, in order, and the faults still to be injected."""

    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {name: [] for name in SINKS})
    faults: dict[str, SinkFault] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def add_fault(self, sink: str, status: int, retry_after: int | None, *, count: int | None = None,
                  for_s: float | None = None) -> None:
        until = self.clock() + for_s if for_s is not None else None
        self.faults[sink] = SinkFault(status, retry_after, remaining=count if until is None else None, until=until)

    def take_fault(self, sink: str) -> SinkFault | None:
        fault = self.faults.get(sink)
        if fault is None:
            return None
        if fault.until is not None:
            if self.clock() < fault.until:
                return fault
            del self.faults[sink]
            return None
        fault.remaining = (fault.remaining or 1) - 1
        if fault.remaining <= 0:
            del self.faults[sink]
        return fault

    def record(self, sink: str, request: Request, body: Any, status: int, reason: str | None, *,
               accepted: bool | None = None, **extra: Any) -> dict[str, Any]:
        """Keep one request. `accepted` defaults to a 2xx answer (Slack's Web API answers its
        refusals with 200 and `ok: false`); `extra` adds the sink's own fields."""
        entry = {
            "received_at": time.time(),
            "path": request.url.path,
            "hook_id": request.path_params.get("hook_id"),
            "headers": {k: v for k, v in request.headers.items() if k not in SECRET_HEADERS},
            "body": body,
            "status": status,
            "accepted": status < 300 if accepted is None else accepted,
            "reason": reason,
            **extra,
        }
        self.records[sink].append(entry)
        return entry

    def clear(self) -> None:
        for records in self.records.values():
            records.clear()
        self.faults.clear()


SLACK_FAULT_BODIES = {400: "invalid_payload", 403: "action_prohibited", 404: "no_service", 410: "channel_is_archived", 429: "rate_limited"}
# The Web API's error codes for an answer that is not its own 200 + ok:false.
SLACK_API_FAULT_ERRORS = {429: "ratelimited", 500: "internal_error", 503: "service_unavailable", 504: "request_timeout"}


def fault_response(sink: str, fault: SinkFault) -> Response:
    """What each service answers when it refuses: Slack's webhooks in plain text, its Web API
    as `{"ok": false, "error": ...}`, Statuspage as its ErrorEntity, PagerDuty as JSON."""
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if sink == "slack":
        body = SLACK_FAULT_BODIES.get(fault.status, "internal_error")
        return PlainTextResponse(body, status_code=fault.status, headers=headers)
    if sink == "slack_api":
        error = SLACK_API_FAULT_ERRORS.get(fault.status, "fatal_error")
        return JSONResponse({"ok": False, "error": error}, status_code=fault.status, headers=headers)
    message = "Rate limit exceeded" if fault.status in (420, 429) else "Injected fault"
    if sink == "statuspage":
        return JSONResponse({"message": message}, status_code=fault.status, headers=headers)
    return JSONResponse({"status": "error", "message": message}, status_code=fault.status, headers=headers)


# -- PagerDuty Events API v2 ---------------------------------------------------------------


def validate_pd_event(event: Any, routing_key: str) -> list[str]:
    """An alert event (POST /v2/enqueue) as the Events API v2 checks it; [] when valid."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors = _routing_key_errors(event, routing_key)
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' must be one of trigger, acknowledge, resolve")
    elif action == "trigger":
        errors.extend(_pd_trigger_errors(event.get("payload")))
    elif not event.get("dedup_key"):
        errors.append(f"'dedup_key' is required for {action}")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > PD_DEDUP_KEY_MAX):
        errors.append(f"'dedup_key' must be a string of at most {PD_DEDUP_KEY_MAX} characters")
    errors.extend(_optional_strings(event, ("client", "client_url"), ""))
    errors.extend(_links_errors(event.get("links")))
    errors.extend(_images_errors(event.get("images")))
    return errors


def validate_pd_change(event: Any, routing_key: str) -> list[str]:
    """A change event (POST /v2/change/enqueue); [] when valid. Fields the API does not know
    are ignored, as its schema allows (only `links` is a context property of change events)."""
    if not isinstance(event, dict):
        return ["Event must be a JSON object"]
    errors = _routing_key_errors(event, routing_key)
    payload = event.get("payload")
    if not isinstance(payload, dict):
        return [*errors, "'payload' is required and must be an object"]
    errors.extend(_summary_errors(payload))
    errors.extend(_optional_strings(payload, ("source",), "payload."))
    errors.extend(_timestamp_errors(payload))
    errors.extend(_custom_details_errors(payload))
    errors.extend(_links_errors(event.get("links")))
    return errors


def _pd_trigger_errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return ["'payload' is required for trigger"]
    errors = _summary_errors(payload)
    if not payload.get("source"):
        errors.append("'payload.source' is missing")
    if payload.get("severity") not in PD_SEVERITIES:
        errors.append("'payload.severity' must be one of critical, error, warning, info")
    errors.extend(_optional_strings(payload, ("source", "component", "group", "class"), "payload."))
    errors.extend(_timestamp_errors(payload))
    errors.extend(_custom_details_errors(payload))
    return errors


def _routing_key_errors(event: dict[str, Any], routing_key: str) -> list[str]:
    if not hmac.compare_digest(str(event.get("routing_key", "")), routing_key):
        return ["'routing_key' is missing or invalid"]
    return []


def _summary_errors(payload: dict[str, Any]) -> list[str]:
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        return ["'payload.summary' is missing"]
    if len(summary) > PD_SUMMARY_MAX:
        return [f"'payload.summary' is {len(summary)} characters; at most {PD_SUMMARY_MAX}"]
    return []


def _optional_strings(holder: dict[str, Any], names: tuple[str, ...], prefix: str) -> list[str]:
    return [f"'{prefix}{name}' must be a string" for name in names
            if name in holder and not isinstance(holder[name], str)]


def _timestamp_errors(payload: dict[str, Any]) -> list[str]:
    if "timestamp" not in payload:
        return []
    stamp = payload["timestamp"]
    try:
        if not isinstance(stamp, str) or "T" not in stamp:
            raise ValueError
        datetime.fromisoformat(stamp)
    except ValueError:
        return [f"'payload.timestamp' must be an ISO 8601 date-time, not {str(stamp)[:40]!r}"]
    return []


def _custom_details_errors(payload: dict[str, Any]) -> list[str]:
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        return ["'payload.custom_details' must be an object"]
    return []


def _links_errors(links: Any) -> list[str]:
    return _context_errors(links, "links", required="href", optional=("text",))


def _images_errors(images: Any) -> list[str]:
    return _context_errors(images, "images", required="src", optional=("href", "alt"))


def _context_errors(items: Any, name: str, *, required: str, optional: tuple[str, ...]) -> list[str]:
    """`links` / `images`: a list of objects, each with its required URL and optional strings."""
    if items is None:
        return []
    if not isinstance(items, list):
        return [f"'{name}' must be a list of objects"]
    errors = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(f"'{name}[{n}]' must be an object")
            continue
        if not isinstance(item.get(required), str) or not item[required]:
            errors.append(f"'{name}[{n}].{required}' is required")
        errors.extend(_optional_strings(item, optional, f"{name}[{n}]."))
    return errors


def redact_pd(event: Any) -> Any:
    if isinstance(event, dict) and "routing_key" in event:
        return {**event, "routing_key": "[redacted]"}
    return event
