"""What a notification is (a Notice, journaled before it is sent) and what became of it (a
NotificationResult, journaled after).

A Notice holds no secret: the routing key, the webhook URL and the tokens are looked up by
their logical names when it is sent, so the journal can hold the notice whole and a control
room reopened after a crash can send it again, with the same dedup_key.
"""

from __future__ import annotations

import re
import secrets as random_tokens
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from controlroom.config import placeholders
from controlroom.release.journal import Record

# Control characters and terminal escapes never reach a notification or the journal's copy.
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|\x1b\[[0-9;?]*[ -/]*[@-~]")


def new_notice_id() -> str:
    return "n" + random_tokens.token_hex(8)


@dataclass(frozen=True)
class Notice:
    """One notification to one channel, as journaled in `notification_queued`."""

    id: str
    channel: str  # "slack" | "pagerduty" | "statuspage"
    # trigger | acknowledge | resolve | info (all), change (PagerDuty change event),
    # monitoring (Statuspage: the fix is in, being watched)
    event: str
    text: str  # the message, placeholders filled, secrets redacted
    dedup_key: str  # one per deployment: PagerDuty de-duplicates, Slack threads, Statuspage updates
    severity: str = "critical"
    details: Mapping[str, Any] = field(default_factory=dict)  # version, phase, operator, verdict ...
    provider: str = ""  # the component concerned, when there is one
    links: tuple[tuple[str, str], ...] = ()  # (href, text)
    routing_key_secret: str = ""  # an escalation level's own PagerDuty service; "" = the runbook's
    mention: str = ""  # a Slack mention the runbook wrote (an escalation level's)
    retry_of: str = ""  # the id of the given-up notice this one sends again

    @property
    def lane(self) -> str:
        """Notices of one lane are delivered one at a time, in order. A deploy marker has a
        lane of its own: a slow change event never holds up a page."""
        return f"{self.channel}:change" if self.event == "change" else self.channel

    @property
    def label(self) -> str:
        """`PagerDuty trigger`, for the header and the banner."""
        return f"{CHANNEL_TITLES.get(self.channel, self.channel)} {self.event}"

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["links"] = [{"href": href, "text": text} for href, text in self.links]
        data["details"] = dict(self.details)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> "Notice":
        links = tuple((str(link.get("href", "")), str(link.get("text", ""))) for link in data.get("links") or ()
                      if isinstance(link, Mapping))
        return cls(
            id=str(data["id"]), channel=str(data["channel"]), event=str(data["event"]), text=str(data.get("text", "")),
            dedup_key=str(data.get("dedup_key", "")), severity=str(data.get("severity", "critical")),
            details=dict(data.get("details") or {}), provider=str(data.get("provider", "")), links=links,
            routing_key_secret=str(data.get("routing_key_secret", "")), mention=str(data.get("mention", "")),
            retry_of=str(data.get("retry_of", "")),
        )


CHANNEL_TITLES = {"slack": "Slack", "pagerduty": "PagerDuty", "statuspage": "Statuspage"}


@dataclass(frozen=True)
class NotificationResult:
    """What became of one notice: the `notification` journal record's data."""

    channel: str
    event: str
    status: str  # "sent" | "failed" | "skipped"
    attempts: int  # HTTP requests made (0 when none could be made)
    http_status: int | None  # of the last answer, None when there was none
    error: str  # "" when sent; redacted
    duration_ms: float  # including the waits between attempts
    summary: str  # the message, redacted
    dedup_key: str = ""
    waits_s: tuple[float, ...] = ()  # the waits between attempts, in order
    id: str = ""  # the notice's
    gave_up: bool = False  # failed because its give-up time came, not because it was refused
    delivered: Mapping[str, Any] = field(default_factory=dict)  # Slack's ts, Statuspage's incident id

    @property
    def ok(self) -> bool:
        return self.status == "sent"

    def describe(self) -> str:
        """One line for the screen: `slack trigger: sent (1 attempt)`, or why it failed."""
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.status == "sent":
            return f"{self.channel} {self.event}: sent ({tries})"
        if self.status == "skipped":
            return f"{self.channel} {self.event}: skipped — {self.error}"
        if self.gave_up:
            return f"{self.channel} {self.event}: GAVE UP after {tries} — {self.error}"
        return f"{self.channel} {self.event}: FAILED after {tries} — {self.error}"

    def to_record(self) -> dict[str, Any]:
        data = asdict(self)
        data["waits_s"] = list(self.waits_s)
        data["delivered"] = dict(self.delivered)
        return data


def render_message(template: str, *, version: str = "", provider: str = "", environment: str = "") -> str:
    """Fill `{version}`, `{provider}` and `{environment}`; one without a value stays as written
    (the runbook's messages are checked when it is loaded: no other placeholder is in them)."""
    values = {"version": version, "provider": provider, "environment": environment}
    return placeholders.fill(template, values, {}, keep_missing=True)


def deployment_dedup_key(records: Sequence[Record], fallback: str = "") -> str:
    """One PagerDuty dedup_key per deployment, stable across a crash and a reopen: derived
    from the journal's `deploy_started` record (or its first record, or `fallback`)."""
    anchor = next((r for r in records if r.kind == "deploy_started"), records[0] if records else None)
    if anchor is not None:
        return f"controlroom-{anchor.hash[:20]}"
    return f"controlroom-{fallback}" if fallback else f"controlroom-{datetime.now(UTC):%Y%m%dT%H%M%S}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
