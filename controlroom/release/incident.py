"""The incident of one release: triggered on every configured channel when a rollback starts,
resolved when the rollback is verified, and only where it was triggered (same dedup_key).

A collaborator of the release engine: it sends through the outbox (controlroom.notify), which
journals every notice before it is sent and its end after.
"""

from __future__ import annotations

from collections.abc import Callable

from controlroom.config.loader import LoadedConfig
from controlroom.config.models import RollbackPlan
from controlroom.notify.notice import Notice, deployment_dedup_key
from controlroom.notify.outbox import Outbox, journal_state
from controlroom.release.journal import Journal

TRIGGER_MESSAGE = "{environment}: rollback to {version} started"
RESOLVE_MESSAGE = "Rollback to {version} verified on {environment}"
RESOLVE_MESSAGE_NO_VERSION = "Rollback verified on {environment}"
NOT_TRIGGERED = "no incident was triggered for this deployment"
# How long a command waits for its notifications' first answers before it says "pending".
FIRST_ANSWER_S = 4.0


class Incident:
    def __init__(self, loaded: LoadedConfig, journal: Journal, outbox: Outbox,
                 report_link: Callable[[], tuple[str, str]] | None = None) -> None:
        self.loaded = loaded
        self.journal = journal
        self.outbox = outbox
        self.report_link = report_link  # (href, text) of the post-deployment report

    def _links(self) -> tuple[tuple[str, str], ...]:
        return (self.report_link(),) if self.report_link is not None else ()

    @property
    def dedup_key(self) -> str:
        return deployment_dedup_key(self.journal.records)

    def triggered_channels(self) -> list[str]:
        """The channels on which this deployment's incident was triggered (sent, or still on
        its way, with its dedup_key): the only ones a resolve may go to. A channel delivers
        in order, so a resolve queued behind its trigger waits for it."""
        key = self.dedup_key
        channels: list[str] = []
        for record in self.journal.of_kind("notification"):
            data = record.data
            if data.get("event") == "trigger" and data.get("status") == "sent" and data.get("dedup_key") == key \
                    and not data.get("routing_key_secret"):
                channels.append(str(data.get("channel")))
        pending, given_up = journal_state(self.journal.records)
        channels += [n.channel for n in pending + [n for n, _ in given_up]
                     if n.event == "trigger" and n.dedup_key == key and not n.routing_key_secret]
        return list(dict.fromkeys(channels))

    def trigger_notices(self, plan: RollbackPlan, values: dict[str, str], reason: str = "") -> list[Notice]:
        """Open the incident on every configured channel as the rollback starts (the plan's
        own trigger step, later, may be skipped; the one it sends has the same dedup_key)."""
        message = TRIGGER_MESSAGE + (f" ({plan.title})" if plan.title else "")
        details = {"version": values.get("version", ""), "phase": "rollback", "reason": reason, "plan": plan.title}
        return self.outbox.notify(list(self.outbox.configured_channels), "trigger", message, dedup_key=self.dedup_key,
                                  values=values, details=details, provider=values.get("provider", ""), links=self._links())

    async def trigger(self, plan: RollbackPlan, values: dict[str, str], reason: str = "") -> list[str]:
        return await self.outbox.settle(self.trigger_notices(plan, values, reason), FIRST_ANSWER_S)

    def update(self, event: str, text: str, values: dict[str, str]) -> list[Notice]:
        """A status page update of the open incident (acknowledge: identified; monitoring)."""
        if "statuspage" not in self.triggered_channels():
            return []
        return self.outbox.notify(["statuspage"], event, text, dedup_key=self.dedup_key, values=values,
                                  provider=values.get("provider", ""))

    async def resolve(self, values: dict[str, str]) -> list[str]:
        """Resolve the incident where it was triggered, and only there; with no trigger, the
        journal says why no resolve was sent."""
        channels = self.triggered_channels()
        if not channels:
            self.journal.append("notification_not_sent", {"event": "resolve", "why": NOT_TRIGGERED})
            return [f"resolve: not sent — {NOT_TRIGGERED}"]
        message = RESOLVE_MESSAGE if values.get("version") else RESOLVE_MESSAGE_NO_VERSION
        details = {"version": values.get("version", ""), "outcome": "rolled back"}
        notices = self.outbox.notify(channels, "resolve", message, dedup_key=self.dedup_key, values=values,
                                     details=details, provider=values.get("provider", ""), links=self._links())
        for paged in self._paged_services():  # the escalation levels paged on their own services
            notices += self.outbox.notify(["pagerduty"], "resolve", message, dedup_key=paged["dedup_key"], values=values,
                                          routing_key_secret=paged["routing_key_secret"], details=details)
        return await self.outbox.settle(notices, FIRST_ANSWER_S)

    def _paged_services(self) -> list[dict[str, str]]:
        """The PagerDuty triggers `e` sent to escalation levels' own services for this incident."""
        triggers = [(str(r.data.get("routing_key_secret", "")), str(r.data.get("dedup_key", "")))
                    for r in self.journal.of_kind("notification")
                    if r.data.get("channel") == "pagerduty" and r.data.get("event") == "trigger" and r.data.get("status") == "sent"]
        pending, given_up = journal_state(self.journal.records)  # still on their way: the resolve goes after them
        triggers += [(n.routing_key_secret, n.dedup_key) for n in pending + [n for n, _ in given_up]
                     if n.channel == "pagerduty" and n.event == "trigger"]
        pages = {(secret, key) for secret, key in triggers if secret and key.startswith(self.dedup_key + "-L")}
        return [{"routing_key_secret": secret, "dedup_key": key} for secret, key in sorted(pages)]
