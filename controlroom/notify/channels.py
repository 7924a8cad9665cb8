"""Notifications: Slack incoming webhooks and PagerDuty Events API v2, retried, journaled.

    async with Notifier.from_config(loaded, journal=journal) as notifier:
        key = deployment_dedup_key(journal.records)
        await notifier.trigger("Rolling back to v2.14.3", dedup_key=key)
        ...
        await notifier.resolve("Rollback to v2.14.3 verified", dedup_key=key)

Formats (DESIGN.md §3):

- Slack: POST the webhook URL with `{"text": ...}`; 200 is ok.
- PagerDuty: POST `events_url` with `routing_key`, `event_action` (trigger / acknowledge /
  resolve), `dedup_key` (one per deployment, so the resolve closes the incident the trigger
  opened) and, for a trigger, `payload.summary` / `source` / `severity`; 202 is accepted.

Retries: 429, 5xx and transport errors (refused, reset, timeout) are retried up to
`notifications.max_attempts` in all, with exponential backoff (0.5 s, 1 s, 2 s ... capped at
8 s); a 429's `Retry-After` (seconds or an HTTP date) replaces the backoff, capped at 30 s.
Any other answer (400, 401, 403, 404, a redirect — redirects are never followed) is final:
retrying an invalid event cannot make it valid.

Every send gives a `NotificationResult` per channel, never an exception, and — with a
journal — appends a `notification` record, so a failed notification is shown and kept,
never silently dropped. The webhook URL and the routing key come from the SecretStore by the
runbook's logical names; they are redacted from every error text, result and record.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from controlroom.release.journal import Journal, Record
from controlroom.config import placeholders
from controlroom.config.models import Notifications, NotifyAction, PagerDutyTarget, SlackTarget
from controlroom.config.secrets import SecretStore

if TYPE_CHECKING:
    from controlroom.config.loader import LoadedConfig

Channel = Literal["slack", "pagerduty"]
Event = Literal["trigger", "acknowledge", "resolve", "info"]
CHANNELS: tuple[Channel, ...] = ("slack", "pagerduty")

MAX_RETRY_AFTER_S = 30.0
BASE_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
PD_SUMMARY_MAX = 1024  # PagerDuty rejects longer summaries
ERROR_BODY_CHARS = 200
USER_AGENT = "controlroom-notify/1"

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|\x1b\[[0-9;?]*[ -/]*[@-~]")
_SLACK_MENTIONS = {"@channel": "<!channel>", "@here": "<!here>"}

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class NotificationResult:
    """What became of one notification on one channel."""

    channel: str  # "slack" | "pagerduty"
    event: str  # "trigger" | "acknowledge" | "resolve" | "info"
    status: str  # "sent" | "failed" | "skipped" (PagerDuty has no "info" event)
    attempts: int  # HTTP requests made (0 when none could be made)
    http_status: int | None  # of the last answer, None when there was none
    error: str  # "" when sent; redacted
    duration_ms: float  # including the waits between attempts
    summary: str  # the message, redacted
    dedup_key: str = ""
    waits_s: tuple[float, ...] = ()  # the waits between attempts, in order

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
        return f"{self.channel} {self.event}: FAILED after {tries} — {self.error}"

    def to_record(self) -> dict[str, Any]:
        """The `notification` journal record's data."""
        data = asdict(self)
        data["waits_s"] = list(self.waits_s)
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


def retry_after_seconds(value: str | None, *, cap_s: float = MAX_RETRY_AFTER_S, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None if absent or junk."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)


@dataclass
class _Progress:
    attempts: int = 0
    http_status: int | None = None
    waits: list[float] = field(default_factory=list)


class _Final(Exception):
    """A failure that no retry can fix (missing secret, bad configuration)."""


class Notifier:
    """Sends to the runbook's Slack and PagerDuty targets. Use as an async context manager
    (or call aclose()) when it owns its HTTP client."""

    def __init__(
        self,
        notifications: Notifications,
        secrets: SecretStore,
        *,
        url: Callable[[str], str] = lambda template: template,
        journal: Journal | None = None,
        environment: str = "",
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        base_backoff_s: float = BASE_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.notifications = notifications
        self.secrets = secrets
        self.url = url
        self.journal = journal
        self.environment = environment
        self.sleep = sleep
        self.max_retry_after_s = max_retry_after_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": USER_AGENT})

    @classmethod
    def from_config(cls, loaded: "LoadedConfig", **kwargs: Any) -> "Notifier":
        """From a runbook.loader.LoadedConfig: its runbook's targets, secrets and URLs."""
        kwargs.setdefault("environment", loaded.environment.name)
        return cls(loaded.runbook.notifications, loaded.secrets, url=loaded.url, **kwargs)

    async def __aenter__(self) -> "Notifier":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    # -- the API --------------------------------------------------------------------------

    @property
    def configured_channels(self) -> tuple[Channel, ...]:
        return tuple(c for c in CHANNELS if getattr(self.notifications, c) is not None)

    async def send(
        self,
        target: NotifyAction | Sequence[str],
        event: str | None = None,
        message: str | None = None,
        *,
        dedup_key: str,
        values: Mapping[str, str] | None = None,
        severity: str = "critical",
    ) -> list[NotificationResult]:
        """Send to each channel (concurrently); one result per channel, in the given order.

        `target` is a runbook NotifyAction (its channels, event and message are used unless
        `event` / `message` are given) or a list of channel names. `values` fills the
        message's {version} / {provider} / {environment}.
        """
        if isinstance(target, NotifyAction):
            channels: Sequence[str] = target.channels
            event = event or target.event
            message = message if message is not None else target.message
        else:
            channels = list(target)
        if event is None or message is None:
            raise ValueError("send() needs an event and a message (or a NotifyAction)")
        fill = {"environment": self.environment, **(values or {})}
        text = render_message(
            message, version=fill.get("version", ""), provider=fill.get("provider", ""), environment=fill.get("environment", "")
        )
        return list(
            await asyncio.gather(*(self._send_one(channel, event, text, dedup_key, severity) for channel in channels))
        )

    async def trigger(
        self,
        message: str,
        *,
        dedup_key: str,
        channels: Sequence[str] | None = None,
        severity: str = "critical",
        values: Mapping[str, str] | None = None,
    ) -> list[NotificationResult]:
        """Open (PagerDuty) / announce (Slack) the deployment's incident."""
        channels = channels or self.configured_channels
        return await self.send(channels, "trigger", message, dedup_key=dedup_key, severity=severity, values=values)

    async def acknowledge(
        self, message: str, *, dedup_key: str, channels: Sequence[str] | None = None, values: Mapping[str, str] | None = None
    ) -> list[NotificationResult]:
        return await self.send(channels or self.configured_channels, "acknowledge", message, dedup_key=dedup_key, values=values)

    async def resolve(
        self, message: str, *, dedup_key: str, channels: Sequence[str] | None = None, values: Mapping[str, str] | None = None
    ) -> list[NotificationResult]:
        return await self.send(channels or self.configured_channels, "resolve", message, dedup_key=dedup_key, values=values)

    # -- one channel ----------------------------------------------------------------------

    async def _send_one(self, channel: str, event: str, text: str, dedup_key: str, severity: str) -> NotificationResult:
        began = time.monotonic()
        summary = self._clean(text)
        progress = _Progress()
        error, status = "", "failed"
        try:
            url, body, timeout_s = self._request(channel, event, text, dedup_key, severity)
            if body is None:
                status, error = "skipped", "PagerDuty has no 'info' event; only trigger / acknowledge / resolve are sent"
            else:
                status, error = await self._post_with_retries(url, body, timeout_s, progress)
        except _Final as final:
            error = str(final)
        except asyncio.CancelledError:
            # Stopped mid-send (the app is quitting): say so in the journal, then stop.
            self._finish(channel, event, "failed", progress, "cancelled before an answer", began, summary, dedup_key)
            raise
        except Exception as unexpected:  # a notification must never take the control room down
            error = f"internal error: {type(unexpected).__name__}: {unexpected}"
        return self._finish(channel, event, status, progress, error, began, summary, dedup_key)

    def _finish(
        self,
        channel: str,
        event: str,
        status: str,
        progress: _Progress,
        error: str,
        began: float,
        summary: str,
        dedup_key: str,
    ) -> NotificationResult:
        result = NotificationResult(
            channel=channel,
            event=event,
            status=status,
            attempts=progress.attempts,
            http_status=progress.http_status,
            error=self._clean(error),
            duration_ms=round((time.monotonic() - began) * 1000, 1),
            summary=summary,
            dedup_key=dedup_key,
            waits_s=tuple(progress.waits),
        )
        if self.journal is not None:
            self.journal.append("notification", result.to_record())
        return result

    def _request(
        self, channel: str, event: str, text: str, dedup_key: str, severity: str
    ) -> tuple[str, dict[str, Any] | None, float]:
        if channel == "slack":
            slack: SlackTarget | None = self.notifications.slack
            if slack is None:
                raise _Final("Slack is not configured in the runbook's [notifications.slack]")
            url = self._secret(slack.webhook_secret)
            return url, {"text": _slack_text(event, text)}, slack.timeout_s
        if channel == "pagerduty":
            pd: PagerDutyTarget | None = self.notifications.pagerduty
            if pd is None:
                raise _Final("PagerDuty is not configured in the runbook's [notifications.pagerduty]")
            routing_key = self._secret(pd.routing_key_secret)
            try:
                url = self.url(pd.events_url)
            except KeyError as missing:
                raise _Final(f"notifications.pagerduty.events_url names an unknown URL {missing}") from None
            if event == "info":
                return url, None, pd.timeout_s
            if event not in ("trigger", "acknowledge", "resolve"):
                raise _Final(f"unknown PagerDuty event {event!r}")
            body: dict[str, Any] = {"routing_key": routing_key, "event_action": event, "dedup_key": dedup_key}
            if event == "trigger":
                payload: dict[str, Any] = {
                    "summary": _clip(text or "controlroom incident", PD_SUMMARY_MAX),
                    "source": pd.source,
                    "severity": severity if severity in ("critical", "error", "warning", "info") else "critical",
                }
                if self.environment:
                    payload["custom_details"] = {"environment": self.environment}
                body["payload"] = payload
            return url, body, pd.timeout_s
        raise _Final(f"unknown notification channel {channel!r}")

    def _secret(self, logical: str) -> str:
        try:
            variable = self.secrets.variable(logical)
        except KeyError:
            raise _Final(f"secret {logical!r} is not mapped to an environment variable in [environment.secrets]") from None
        if not self.secrets.has(logical):
            raise _Final(f"{variable} is not set")
        return self.secrets.get(logical)

    async def _post_with_retries(
        self, url: str, body: dict[str, Any], timeout_s: float, progress: _Progress
    ) -> tuple[str, str]:
        """("sent" | "failed", error); `progress` says how far it got, even if cancelled."""
        max_attempts = self.notifications.max_attempts
        error = ""
        for attempt in range(1, max_attempts + 1):
            wait: float | None = None
            progress.attempts = attempt
            try:
                response = await self.client.post(url, json=body, timeout=timeout_s, follow_redirects=False)
            except httpx.TimeoutException:
                progress.http_status, error = None, f"no answer within {timeout_s:g} s"
            except httpx.TransportError as failure:
                progress.http_status, error = None, f"cannot reach the endpoint: {_transport_error(failure)}"
            else:
                status = progress.http_status = response.status_code
                if 200 <= status < 300:
                    return "sent", ""
                error = _http_error(response)
                if status == 429:
                    wait = retry_after_seconds(response.headers.get("Retry-After"), cap_s=self.max_retry_after_s)
                elif status < 500:
                    return "failed", error  # 4xx other than 429, 3xx: final
            if attempt == max_attempts:
                break
            if wait is None:
                wait = min(self.base_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
            progress.waits.append(wait)
            await self.sleep(wait)
        return "failed", error

    def _clean(self, text: str) -> str:
        return _CONTROL.sub("", self.secrets.redact(text))


def _slack_text(event: str, text: str) -> str:
    """Escaped for Slack (&, <, >: a version or provider named `<!channel>` or
    `<http://evil|click>` is shown as typed, never as a ping or a link); then the runbook's
    @channel / @here become the pings Slack knows, <!channel> / <!here>."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for written, mention in _SLACK_MENTIONS.items():
        text = re.sub(rf"(?<![\w<!]){re.escape(written)}\b", mention, text)
    if event == "resolve" and not text.startswith(("RESOLVED", "Resolved")):
        text = f"RESOLVED: {text}"
    return text


def _http_error(response: httpx.Response) -> str:
    status = response.status_code
    if 300 <= status < 400:
        return f"HTTP {status}: redirect not followed"
    try:
        body = response.text
    except Exception:  # undecodable body
        body = ""
    body = " ".join(body.split())
    return f"HTTP {status}" + (f": {_clip(body, ERROR_BODY_CHARS)}" if body else "")


def _transport_error(failure: httpx.TransportError) -> str:
    text = str(failure) or type(failure).__name__
    return f"{type(failure).__name__}: {text}" if str(failure) else text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
