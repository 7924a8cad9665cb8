"""PagerDuty: Events API v2 alert events (trigger / acknowledge / resolve, one dedup_key per
deployment) and change events (the deploy markers responders see on the incident page).

Alert: POST `events_url` {routing_key, event_action, dedup_key, payload: {summary ≤ 1024,
source, severity, timestamp, component, group, custom_details}, links, client, client_url};
202 is accepted. Change: POST `change_url` {routing_key, payload: {summary, source, timestamp,
custom_details}, links}; 202. A 429 asks for "a backoff of a few minutes" (PagerDuty's Events
API v2 overview): without a Retry-After the next attempt waits at least a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controlroom.config.models import PagerDutyTarget
from controlroom.notify.delivery import Channel, Context, Request, Skip, exchange
from controlroom.notify.notice import Notice, clip

if TYPE_CHECKING:  # annotations only: the outbox's client brings httpx when it first sends
    import httpx

SUMMARY_MAX = 1024  # PagerDuty rejects longer summaries
ALERT_EVENTS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


class PagerDuty(Channel):
    name = "pagerduty"
    rate_limit_floor_s = 60.0
    target: PagerDutyTarget

    async def send(self, client: httpx.AsyncClient, notice: Notice, context: Context) -> tuple[int, dict[str, Any]]:
        response = await exchange(client, self.request(notice, context), self.timeout_s)
        return response.status_code, {}

    def request(self, notice: Notice, context: Context) -> Request:
        target = self.target
        routing_key = context.secret(notice.routing_key_secret or target.routing_key_secret)
        if notice.event == "change":
            change_url = target.change_url or target.events_url.replace("/v2/enqueue", "/v2/change/enqueue")
            return Request("POST", context.url(change_url, "notifications.pagerduty.change_url"),
                           self.change_event(notice, routing_key))
        if notice.event not in ALERT_EVENTS:
            raise Skip(f"PagerDuty has no {notice.event!r} event; only trigger / acknowledge / resolve are sent")
        if notice.event == "resolve" and not self._triggered(notice, context):
            raise Skip("no incident was triggered for this deployment")
        return Request("POST", context.url(target.events_url, "notifications.pagerduty.events_url"),
                       self.alert_event(notice, routing_key))

    def alert_event(self, notice: Notice, routing_key: str) -> dict[str, Any]:
        body: dict[str, Any] = {"routing_key": routing_key, "event_action": notice.event, "dedup_key": notice.dedup_key}
        if notice.event != "trigger":
            return body
        payload: dict[str, Any] = {
            "summary": clip(notice.text or "controlroom incident", SUMMARY_MAX),
            "source": self.target.source,
            "severity": notice.severity if notice.severity in SEVERITIES else "critical",
            "timestamp": _now(),
            "custom_details": {"environment": self.environment, **notice.details},
        }
        if notice.provider:
            payload["component"] = notice.provider
        if self.environment:
            payload["group"] = self.environment
        body["payload"] = payload
        body.update(self._links(notice))
        if self.target.client:
            body["client"] = self.target.client
        if self.target.client_url:
            body["client_url"] = self.target.client_url
        return body

    def change_event(self, notice: Notice, routing_key: str) -> dict[str, Any]:
        payload = {
            "summary": clip(notice.text or "controlroom change", SUMMARY_MAX),
            "source": self.target.source,
            "timestamp": _now(),
            "custom_details": {"environment": self.environment, **notice.details},
        }
        return {"routing_key": routing_key, "payload": payload, **self._links(notice)}

    @staticmethod
    def _links(notice: Notice) -> dict[str, Any]:
        return {"links": [{"href": href, "text": text} for href, text in notice.links]} if notice.links else {}

    def _triggered(self, notice: Notice, context: Context) -> bool:
        """A resolve goes only where its incident was triggered: same service, same dedup_key."""
        return any(data.get("routing_key_secret", "") == notice.routing_key_secret
                   for data in context.delivered(self.name, notice.dedup_key, "trigger"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

