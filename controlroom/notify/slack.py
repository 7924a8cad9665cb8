"""Slack: Block Kit messages with a plain-text fallback, through the incoming webhook, or —
with a bot token — through chat.postMessage, where one deployment is one thread.

Webhook: POST the URL with {text, blocks}; 200 "ok". chat.postMessage: POST
`{api_url}/chat.postMessage` with `Authorization: Bearer <bot token>` and {channel, text,
blocks, thread_ts, reply_broadcast}; Slack answers HTTP 200 with `ok: false` and an error
name when it refuses, 429 + Retry-After when rate limited. The first message's `ts` is
journaled; every later message of the deployment replies in its thread, and the resolve is
broadcast to the channel too.

Every text that did not come from the runbook is escaped (&, <, >: a version or a reason
written `<!everyone>` or `<http://evil|click>` is shown as typed, never as a ping or a link);
then the runbook's @channel / @here become the pings Slack knows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from controlroom.config.models import SlackTarget
from controlroom.notify.delivery import Channel, Context, Final, Request, Retryable, exchange
from controlroom.notify.notice import Notice, clip

if TYPE_CHECKING:  # annotations only: the outbox's client brings httpx when it first sends
    import httpx

MENTIONS = {"@channel": "<!channel>", "@here": "<!here>"}
# chat.postMessage errors worth another attempt; every other `ok: false` is final.
RETRYABLE_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})
SECTION_MAX = 3000  # Block Kit's limit on a section's text
HEADER_MAX = 150
EVENT_HEADERS = {
    "trigger": "🔴 Incident", "acknowledge": "🟠 Acknowledged", "resolve": "✅ Resolved",
    "change": "🚀 Change", "monitoring": "👀 Monitoring", "info": "ℹ️ Notice",
}


def escape(text: str) -> str:
    """Slack's three: &, < and >, so text is never a mention, a link or a command."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(event: str, text: str) -> str:
    """The message as Slack mrkdwn: escaped, then the runbook's @channel / @here made pings;
    a resolve says so first."""
    text = escape(text)
    for written, mention in MENTIONS.items():
        text = re.sub(rf"(?<![\w<!]){re.escape(written)}\b", mention, text)
    if event == "resolve" and not text.startswith(("RESOLVED", "Resolved")):
        text = f"RESOLVED: {text}"
    return text


class Slack(Channel):
    name = "slack"
    rate_limit_floor_s = 1.0
    target: SlackTarget

    def threaded(self, context: Context) -> bool:
        """chat.postMessage when the runbook names a bot token and its variable is set."""
        secret = self.target.bot_token_secret
        try:
            return bool(secret) and context.loaded.secrets.has(secret)  # type: ignore[arg-type]
        except KeyError:  # not mapped in [environment.secrets]
            return False

    async def send(self, client: httpx.AsyncClient, notice: Notice, context: Context) -> tuple[int, dict[str, Any]]:
        text, blocks = self.message(notice)
        if not self.threaded(context):
            url = context.secret(self.target.webhook_secret)
            response = await exchange(client, Request("POST", url, {"text": text, "blocks": blocks}), self.timeout_s)
            return response.status_code, {}
        token = context.secret(self.target.bot_token_secret or "")
        body: dict[str, Any] = {"channel": self.target.channel, "text": text, "blocks": blocks}
        roots = [data.get("delivered") or {} for data in context.delivered(self.name, notice.dedup_key)]
        thread = next((d for d in roots if d.get("ts") and not d.get("thread_ts")), {})
        if thread.get("ts"):
            body.update(channel=thread.get("channel") or self.target.channel, thread_ts=thread["ts"])
            if notice.event == "resolve":
                body["reply_broadcast"] = True
        url = context.url(self.target.api_url, "notifications.slack.api_url").rstrip("/") + "/chat.postMessage"
        headers = {"Authorization": f"Bearer {token}"}
        response = await exchange(client, Request("POST", url, body, headers), self.timeout_s)
        try:
            answer = response.json()
        except ValueError:
            raise Retryable(f"HTTP {response.status_code}: not JSON", http_status=response.status_code) from None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            error = str(answer.get("error", "no error named")) if isinstance(answer, dict) else "not an object"
            if error in RETRYABLE_ERRORS:
                raise Retryable(f"Slack: {error}", http_status=response.status_code, rate_limited=error.startswith("rate"))
            raise Final(f"Slack: {error}", http_status=response.status_code)
        delivered = {"ts": str(answer.get("ts", "")), "channel": str(answer.get("channel", ""))}
        if "thread_ts" in body:
            delivered["thread_ts"] = body["thread_ts"]
        return response.status_code, delivered

    def message(self, notice: Notice) -> tuple[str, list[dict[str, Any]]]:
        """(the plain fallback text, the Block Kit blocks)."""
        body = slack_text(notice.event, notice.text)
        if notice.mention:
            body = f"{MENTIONS.get(notice.mention, notice.mention)} {body}"
        facts = [(name.capitalize(), str(notice.details[name])) for name in ("version", "phase", "verdict", "outcome", "operator")
                 if notice.details.get(name)]
        reason = str(notice.details.get("reason", ""))
        fallback = body + "".join(f" · {name}: {escape(value)}" for name, value in facts)
        header = EVENT_HEADERS.get(notice.event, "Notice") + (f" · {self.environment}" if self.environment else "")
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": clip(header, HEADER_MAX), "emoji": True}},
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(body, SECTION_MAX)}},
        ]
        if reason:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip("*Reason:* " + escape(reason), SECTION_MAX)}})
        if facts:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": clip(f"*{name}:* {escape(value)}", 2000)} for name, value in facts[:10]]})
        links = [f"<{escape(href)}|{escape(text or href)}>" for href, text in notice.links if href.startswith(("http://", "https://"))]
        links += [f"{escape(text)}: `{escape(href)}`" for href, text in notice.links if not href.startswith(("http://", "https://"))]
        if links:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(" · ".join(links), 2000)}]})
        return fallback, blocks
