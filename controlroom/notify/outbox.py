"""The durable notification outbox: nothing sent is lost, nothing is sent twice by us.

    outbox = Outbox(loaded, journal, may_send=lambda: engine_drives)
    notices = outbox.notify(["slack", "pagerduty"], "trigger", "Rolling back to {version}",
                            dedup_key=key, values={"version": "v2.14.3"})
    lines = await outbox.settle(notices, timeout_s=3)   # what the first attempts said

Every notice is journaled (`notification_queued`) before its first attempt, and its end after
(`notification`: sent, failed — refused for good — or given up). Delivery retries with
jittered exponential backoff (tenacity), honours Retry-After, and keeps going until the
channel's `give_up_after_minutes`; a 4xx other than 429 is final. Each channel delivers in
journal order, one notice at a time, so a resolve never overtakes its trigger (PagerDuty's
change events have a lane of their own: a deploy marker never holds up a page); a notice that
was given up holds its lane's later notices until the operator retries it
(`retry_given_up`), so their order survives too.

A control room that reopens (after kill -9, a dropped terminal) or takes over a shared
release calls `resume()`: what the journal says is still pending is sent again, with the same
dedup_key, so PagerDuty de-duplicates. With the shared store only the driver sends
(`may_send`); watchers read the pending notices from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from controlroom.infra.logs import logger
from controlroom.notify.delivery import USER_AGENT, Channel, Context, Final, Retryable, Skip
from controlroom.notify.notice import (
    CHANNEL_TITLES,
    CONTROL,
    Notice,
    NotificationResult,
    new_notice_id,
    render_message,
)
from controlroom.notify.pagerduty import PagerDuty
from controlroom.notify.slack import Slack
from controlroom.notify.statuspage import Statuspage
from controlroom.release.journal import Record, records_key

if TYPE_CHECKING:  # httpx and tenacity are imported when a notice is first sent, not at start-up (~60 ms)
    import httpx
    from tenacity import RetryCallState

    from controlroom.config.loader import LoadedConfig
    from controlroom.release.journal import Journal

# The channels, by the runbook's [notifications.NAME]: one line per notifier.
CHANNEL_KINDS: dict[str, type[Slack] | type[PagerDuty] | type[Statuspage]] = {
    "slack": Slack,
    "pagerduty": PagerDuty,
    "statuspage": Statuspage,
}
BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

Sleep = Callable[[float], Awaitable[None]]


class _Halt(Exception):
    """This control room may no longer send (another took over): leave the notice pending."""


@dataclass
class Progress:
    """A notice on its way: shown in the header until it is delivered."""

    notice: Notice
    attempts: int = 0
    http_status: int | None = None
    error: str = ""
    retry_at: float | None = None  # the outbox clock's time of the next attempt
    waits: tuple[float, ...] = ()
    answered: asyncio.Event | None = None  # set once its first attempt has an answer


@dataclass(frozen=True)
class OutboxView:
    """What the header and the banner show."""

    pending: tuple[str, ...]  # "PagerDuty trigger pending, retry in 40 s"
    given_up: tuple[str, ...]  # "PagerDuty trigger given up after 10 min: HTTP 503"
    retrying: tuple[str, ...] = ()  # those of `pending` whose next attempt waits (a refusal came)


def journal_state(records: Iterable[Record]) -> tuple[list[Notice], list[tuple[Notice, dict[str, Any]]]]:
    """(the notices without an end, in journal order; the given-up ones not yet retried,
    with their end's data) as the journal tells them."""
    queued: dict[str, Notice] = {}
    place: dict[str, int] = {}  # a retry takes the place of the notice it sends again
    ends: dict[str, dict[str, Any]] = {}
    retried: set[str] = set()
    for record in records:
        if record.kind == "notification_queued":
            with contextlib.suppress(KeyError, TypeError, ValueError):
                notice = Notice.from_data(record.data)
                queued[notice.id] = notice
                place[notice.id] = place.get(notice.retry_of, len(place))
                if notice.retry_of:
                    retried.add(notice.retry_of)
        elif record.kind == "notification" and record.data.get("id"):
            ends[str(record.data["id"])] = record.data
    pending = sorted((n for key, n in queued.items() if key not in ends), key=lambda n: place[n.id])
    given_up = [(n, ends[key]) for key, n in queued.items() if ends.get(key, {}).get("gave_up") and key not in retried]
    return pending, given_up


class Outbox:
    def __init__(
        self,
        loaded: "LoadedConfig",
        journal: "Journal",
        *,
        may_send: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        on_change: Callable[[], None] | None = None,
        on_record: Callable[[], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.journal = journal
        self.may_send = may_send
        self.clock = clock
        self.sleep = sleep
        self.on_change = on_change  # the header follows (the app)
        self.on_record = on_record  # a notice's end was journaled (the engine replays)
        self.environment = loaded.environment.name
        notifications = loaded.runbook.notifications
        self.channels: dict[str, Channel] = {
            name: kind(getattr(notifications, name), self.environment)  # type: ignore[arg-type]
            for name, kind in CHANNEL_KINDS.items() if getattr(notifications, name, None) is not None
        }
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._queues: dict[str, deque[Notice]] = {}  # lane -> its notices, in journal order
        self._held: dict[str, Notice] = {}  # lane -> its given-up notice, until retried
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, Progress] = {}
        self._results: dict[str, NotificationResult] = {}
        self._stopped = False
        self._state_read: tuple[tuple[int, str], tuple[list[Notice], list[tuple[Notice, dict[str, Any]]]]] | None = None

    @property
    def configured_channels(self) -> tuple[str, ...]:
        return tuple(self.channels)

    # -- in ------------------------------------------------------------------------------

    def notify(
        self,
        channels: Sequence[str],
        event: str,
        template: str,
        *,
        dedup_key: str,
        values: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> list[Notice]:
        """One notice per channel, the message's {version} / {provider} / {environment} filled."""
        fill = {"environment": self.environment, **(values or {})}
        text = render_message(template, version=fill.get("version", ""), provider=fill.get("provider", ""),
                              environment=fill.get("environment", ""))
        return [self.enqueue(channel, event, text, dedup_key=dedup_key, **fields) for channel in channels]

    def enqueue(self, channel: str, event: str, text: str, *, dedup_key: str, **fields: Any) -> Notice:
        """Journal the notice (fsync'ed), then send it in its channel's turn."""
        notice = Notice(id=new_notice_id(), channel=channel, event=event, text=self._clean(text), dedup_key=dedup_key,
                        **fields)
        if notice.details:
            notice = replace(notice, details={k: self._clean(str(v)) for k, v in notice.details.items()})
        self.journal.append("notification_queued", notice.to_data())
        self._queue(notice)
        return notice

    def resume(self) -> int:
        """Queue again what the journal says is pending (a reopen, a takeover); how many."""
        pending, given_up = journal_state(self.journal.records)
        known = {n.id for queue in self._queues.values() for n in queue} | set(self._progress)
        self._held.update({notice.lane: notice for notice, _ in given_up})
        fresh = [n for n in pending if n.id not in known]
        for notice in fresh:
            self._queue(notice)
        for lane in list(self._queues):  # queued before the event loop ran: start them now
            self._start(lane)
        return len(fresh)

    def retry_given_up(self) -> list[Notice]:
        """Send every given-up notice again (a new notice, `retry_of` the old, first in its
        channel's line); the notices it held go after it."""
        _, given_up = journal_state(self.journal.records)
        again: list[Notice] = []
        for notice, _ in given_up:
            retry = replace(notice, id=new_notice_id(), retry_of=notice.id)
            self.journal.append("notification_queued", retry.to_data())
            self._held.pop(notice.lane, None)
            self._queues.setdefault(notice.lane, deque()).appendleft(retry)
            again.append(retry)
        for lane in {n.lane for n in again}:
            self._start(lane)
        self._changed()
        return again

    # -- out -----------------------------------------------------------------------------

    async def settle(self, notices: Sequence[Notice], timeout_s: float) -> list[str]:
        """Wait up to `timeout_s` for each notice's first answer; one line per notice: sent,
        failed, or still pending and why."""
        events: list[asyncio.Event] = []
        for notice in notices:
            if notice.id in self._results:
                continue
            progress = self._progress.setdefault(notice.id, Progress(notice))
            if progress.answered is None:
                progress.answered = asyncio.Event()
            events.append(progress.answered)
        if events:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), timeout_s)
        return [self.describe(notice) for notice in notices]

    def describe(self, notice: Notice) -> str:
        result = self._results.get(notice.id)
        if result is not None:
            return result.describe()
        return f"{notice.channel} {notice.event}: {self._pending_text(notice)}"

    def result(self, notice: Notice) -> NotificationResult | None:
        return self._results.get(notice.id)

    def _journal_state(self) -> tuple[list[Notice], list[tuple[Notice, dict[str, Any]]]]:
        """journal_state of the journal, read again only when it changed (the header asks every second)."""
        records = self.journal.records
        key = records_key(records)
        if self._state_read is None or self._state_read[0] != key:
            self._state_read = (key, journal_state(records))
        return self._state_read[1]

    def view(self) -> OutboxView:
        pending, given_up = self._journal_state()
        lines = [f"{n.label} {self._pending_text(n)}" for n in pending]
        held = [f"{n.label} given up after {_minutes(data)}: {data.get('error') or 'no answer'}" for n, data in given_up]
        retrying = [line for n, line in zip(pending, lines)
                    if (progress := self._progress.get(n.id)) is not None and progress.retry_at is not None]
        return OutboxView(tuple(lines), tuple(held), tuple(retrying))

    def _pending_text(self, notice: Notice) -> str:
        progress = self._progress.get(notice.id)
        if notice.lane in self._held and notice.id not in self._progress:
            return f"waiting: the {CHANNEL_TITLES.get(notice.channel, notice.channel)} notice before it was given up"
        if progress is None or not self.may_send():
            return "pending" if self.may_send() else "pending (the control room that drives, with --write, sends it)"
        if progress.retry_at is not None:
            wait = max(0, round(progress.retry_at - self.clock()))
            why = f" — {progress.error}" if progress.error else ""
            return f"pending, retry in {wait} s{why}"
        return "sending" if progress.attempts else "pending"

    def stop(self) -> None:
        """Stop sending now (the journal closes): what is still pending stays so in the
        journal, for the next control room to send."""
        self._stopped = True
        for worker in self._workers.values():
            worker.cancel()

    async def aclose(self) -> None:
        """Stop sending (the app quits) and close the connections: what is still pending stays
        so in the journal."""
        self.stop()
        workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(BaseException):
                await worker
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- delivery ------------------------------------------------------------------------

    def _queue(self, notice: Notice) -> None:
        self._queues.setdefault(notice.lane, deque()).append(notice)
        self._start(notice.lane)
        self._changed()

    def _start(self, lane: str) -> None:
        if self._stopped:
            return
        worker = self._workers.get(lane)
        if worker is not None and not worker.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: resume() (or the next notice) starts it
        self._workers[lane] = loop.create_task(self._work(lane), name=f"outbox:{lane}")

    async def _work(self, lane: str) -> None:
        queue = self._queues[lane]
        while queue and lane not in self._held and self.may_send():
            notice = queue[0]
            result = await self._deliver(notice)
            if result is None:
                return  # may no longer send: it stays pending
            queue.popleft()
            if result.gave_up:
                self._held[lane] = notice
        self._changed()

    async def _deliver(self, notice: Notice) -> NotificationResult | None:
        began = self.clock()
        progress = self._progress.setdefault(notice.id, Progress(notice))
        channel = self.channels.get(notice.channel)
        status, error, delivered, gave_up = "failed", "", {}, False
        try:
            if channel is None:
                progress.attempts += 1  # (taken back: no request was made)
                raise Final(f"{notice.channel} is not configured in the runbook's [notifications.{notice.channel}]",
                            requested=False)
            deadline = began + channel.give_up_after_s
            from tenacity import AsyncRetrying, retry_if_exception_type  # the first notice pays for it, not start-up

            retrying = AsyncRetrying(
                retry=retry_if_exception_type(Retryable),
                stop=lambda _state: self.clock() >= deadline,
                wait=self._wait(channel, deadline),
                sleep=self._sleeper(progress),
                before_sleep=lambda state: self._failed_attempt(progress, state),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    if not self.may_send():
                        raise _Halt
                    progress.attempts += 1
                    progress.retry_at = None
                    self._changed()
                    progress.http_status, delivered = await channel.send(self._http(), notice, self._context())
            status = "sent"
        except _Halt:
            self._answered(progress)
            return None
        except Retryable as last:
            progress.http_status, error, gave_up = last.http_status, str(last), True
            error = f"{error} (retried for {_span(self.clock() - began)})"
        except Final as final:
            progress.http_status, error = final.http_status, str(final)
            if not final.requested:
                progress.attempts -= 1
        except Skip as skip:
            status, error = "skipped", str(skip)
            progress.attempts -= 1
        except asyncio.CancelledError:
            self._answered(progress)
            raise  # quitting: the journal keeps it pending, and the next control room sends it
        except Exception as unexpected:  # a notification must never take the control room down
            logger.exception("notification %s failed unexpectedly", notice.id)
            error = f"internal error: {type(unexpected).__name__}: {unexpected}"
        result = NotificationResult(
            channel=notice.channel, event=notice.event, status=status, attempts=progress.attempts,
            http_status=progress.http_status, error=self._clean(error),
            duration_ms=round((self.clock() - began) * 1000, 1), summary=notice.text, dedup_key=notice.dedup_key,
            waits_s=progress.waits, id=notice.id, gave_up=gave_up, delivered=delivered,
        )
        record = result.to_record()
        if notice.routing_key_secret:
            record["routing_key_secret"] = notice.routing_key_secret
        try:
            self.journal.append("notification", record)
        except Exception:  # the journal refused (no longer the driver): the next driver resends it
            logger.exception("could not journal the end of notification %s", notice.id)
            self._answered(progress)
            return None
        self._results[notice.id] = result
        self._progress.pop(notice.id, None)
        if self.on_record is not None:
            try:
                self.on_record()
            except Exception:  # it is journaled: the engine catches up at its next record
                logger.exception("after notification %s", notice.id)
        self._answered(progress)
        self._changed()
        return result

    def _wait(self, channel: Channel, deadline: float) -> Callable[[RetryCallState], float]:
        from tenacity import wait_random_exponential  # imported by the caller already

        backoff = wait_random_exponential(multiplier=BASE_BACKOFF_S, max=MAX_BACKOFF_S)

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome is not None else None
            seconds = backoff(state)
            if isinstance(failure, Retryable):
                if failure.retry_after_s is not None:
                    seconds = failure.retry_after_s
                if failure.rate_limited:  # never sooner than the channel asks, whatever Retry-After says
                    seconds = max(seconds, channel.rate_limit_floor_s)
            return max(0.0, min(seconds, deadline - self.clock()))  # the last attempt at the deadline

        return wait

    def _sleeper(self, progress: Progress) -> Sleep:
        async def sleep(seconds: float) -> None:
            progress.retry_at = self.clock() + seconds
            progress.waits = (*progress.waits, round(seconds, 3))
            self._answered(progress)
            self._changed()
            await self.sleep(seconds)

        return sleep

    def _failed_attempt(self, progress: Progress, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, Retryable):
            progress.http_status, progress.error = failure.http_status, self._clean(str(failure))

    @staticmethod
    def _answered(progress: Progress) -> None:
        if progress.answered is not None:
            progress.answered.set()

    def _context(self) -> Context:
        return Context(self.loaded, self.journal.records)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx  # the first notice pays for it, not start-up

            from controlroom.infra.http_transport import tls_context  # the process's one TLS context

            # The environment's proxies apply (HTTPS_PROXY on a bastion host reaching Slack).
            self._client = httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": USER_AGENT},
                                             transport=self._transport, verify=tls_context())
        return self._client

    def _changed(self) -> None:
        if self.on_change is not None:
            with contextlib.suppress(Exception):
                self.on_change()

    def _clean(self, text: str) -> str:
        return CONTROL.sub("", self.loaded.secrets.redact(text))


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _minutes(data: Mapping[str, Any]) -> str:
    duration_ms = data.get("duration_ms")
    return _span(float(duration_ms) / 1000) if isinstance(duration_ms, (int, float)) else "its give-up time"
