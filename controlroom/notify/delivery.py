"""The HTTP side every channel shares: a request, its answer judged retryable or final, and
Retry-After read.

429, 5xx and transport errors (refused, reset, timeout) are worth retrying; any other answer
(400, 401, 403, 404, a redirect — never followed) is final: retrying an invalid event cannot
make it valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from controlroom.notify.notice import Notice, clip
from controlroom.release.journal import Record

if TYPE_CHECKING:
    import httpx

    from controlroom.config.loader import LoadedConfig

ERROR_BODY_CHARS = 200
USER_AGENT = "controlroom-notify/2"


class Retryable(Exception):
    """This attempt failed; another may not (429, 5xx, no answer)."""

    def __init__(self, error: str, *, http_status: int | None = None, retry_after_s: float | None = None,
                 rate_limited: bool = False) -> None:
        super().__init__(error)
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.rate_limited = rate_limited


class Final(Exception):
    """No retry can fix this (an invalid event, a missing secret, a bad configuration)."""

    def __init__(self, error: str, *, http_status: int | None = None, requested: bool = True) -> None:
        super().__init__(error)
        self.http_status = http_status
        self.requested = requested  # False: refused before any request was made


class Skip(Exception):
    """Nothing to send, on purpose (e.g. a resolve for an incident never triggered); raised
    before any request."""


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: Mapping[str, Any] | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What a channel may read to build a request: the runbook and its secrets, and the
    journal's records so far (Slack's thread, Statuspage's incident)."""

    loaded: "LoadedConfig"
    records: Sequence[Record]

    def secret(self, logical: str) -> str:
        secrets = self.loaded.secrets
        try:
            variable = secrets.variable(logical)
        except KeyError:
            raise Final(f"secret {logical!r} is not mapped to an environment variable in [environment.secrets]",
                        requested=False) from None
        if not secrets.has(logical):
            raise Final(f"{variable} is not set", requested=False)
        return secrets.get(logical)

    def url(self, template: str, where: str) -> str:
        try:
            return self.loaded.url(template)
        except KeyError as missing:
            raise Final(f"{where} names an unknown URL {missing}", requested=False) from None

    def delivered(self, channel: str, dedup_key: str, event: str | None = None) -> list[dict[str, Any]]:
        """The `notification` records of `channel` sent with `dedup_key` (and `event`), oldest first."""
        return [r.data for r in self.records if r.kind == "notification" and r.data.get("channel") == channel
                and r.data.get("status") == "sent" and r.data.get("dedup_key") == dedup_key
                and (event is None or r.data.get("event") == event)]


class Channel:
    """One notification channel (notify/slack.py, pagerduty.py, statuspage.py): what it keeps of
    its runbook target, and `send`."""

    name = ""
    rate_limit_floor_s = 1.0  # the least wait after a 429 that says nothing of when to retry

    def __init__(self, target: Any, environment: str) -> None:
        self.target = target
        self.environment = environment
        self.timeout_s: float = target.timeout_s
        self.give_up_after_s: float = target.give_up_after_minutes * 60

    async def send(self, client: httpx.AsyncClient, notice: Notice, context: Context) -> tuple[int, dict[str, Any]]:
        """Deliver `notice` once: (the HTTP status, what to journal, e.g. Slack's ts); raises
        Retryable, Final or Skip."""
        raise NotImplementedError


async def exchange(client: httpx.AsyncClient, request: Request, timeout_s: float) -> httpx.Response:
    """One request; a transport failure or a 429 / 5xx answer is Retryable, any other non-2xx Final."""
    import httpx  # loaded with the client by then

    try:
        response = await client.request(request.method, request.url, json=request.body, headers=dict(request.headers),
                                        timeout=timeout_s, follow_redirects=False)
    except httpx.TimeoutException:
        raise Retryable(f"no answer within {timeout_s:g} s") from None
    except httpx.TransportError as failure:
        raise Retryable(f"cannot reach the endpoint: {transport_error(failure)}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    error = http_error(response)
    if status in (420, 429):  # Statuspage says 420 for its rate limit
        raise Retryable(error, http_status=status, retry_after_s=retry_after_seconds(response.headers.get("Retry-After")),
                        rate_limited=True)
    if status >= 500:
        raise Retryable(error, http_status=status)
    raise Final(error, http_status=status)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date); None if absent or junk."""
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
    if seconds != seconds or seconds == float("inf"):  # NaN, inf
        return None
    return max(seconds, 0.0)


def http_error(response: httpx.Response) -> str:
    status = response.status_code
    if 300 <= status < 400:
        return f"HTTP {status}: redirect not followed"
    try:
        body = response.text
    except Exception:  # undecodable body
        body = ""
    body = " ".join(body.split())
    return f"HTTP {status}" + (f": {clip(body, ERROR_BODY_CHARS)}" if body else "")


def transport_error(failure: httpx.TransportError) -> str:
    text = str(failure) or type(failure).__name__
    return f"{type(failure).__name__}: {text}" if str(failure) else text
