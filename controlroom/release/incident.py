"""The incident of one release: triggered on every configured channel when a rollback starts,
resolved when the rollback is verified, and only where it was triggered (same dedup_key).

A collaborator of the release engine: it sends through controlroom.notify and journals every
notification (sent or failed) in the release's journal.
"""

from __future__ import annotations

from controlroom.config.loader import LoadedConfig
from controlroom.config.models import RollbackPlan
from controlroom.notify.channels import Notifier, deployment_dedup_key
from controlroom.release.journal import Journal

TRIGGER_MESSAGE = "{environment}: rollback to {version} started"
RESOLVE_MESSAGE = "Rollback to {version} verified on {environment}"
RESOLVE_MESSAGE_NO_VERSION = "Rollback verified on {environment}"
NOT_TRIGGERED = "no incident was triggered for this deployment"


class Incident:
    def __init__(self, loaded: LoadedConfig, journal: Journal) -> None:
        self.loaded = loaded
        self.journal = journal

    @property
    def dedup_key(self) -> str:
        return deployment_dedup_key(self.journal.records)

    def triggered_channels(self) -> list[str]:
        """The channels on which this deployment's incident was triggered (sent, with its
        dedup_key): the only ones a resolve may go to."""
        key = self.dedup_key
        channels: list[str] = []
        for record in self.journal.of_kind("notification"):
            data = record.data
            if data.get("event") == "trigger" and data.get("status") == "sent" and data.get("dedup_key") == key:
                if data.get("channel") not in channels:
                    channels.append(str(data.get("channel")))
        return channels

    async def trigger(self, plan: RollbackPlan, values: dict[str, str]) -> list[str]:
        """Open the incident on every configured channel as the rollback starts (the plan's
        own trigger step, later, may be skipped; the one it sends has the same dedup_key)."""
        message = TRIGGER_MESSAGE + (f" ({plan.title})" if plan.title else "")
        async with Notifier.from_config(self.loaded, journal=self.journal) as notifier:
            results = await notifier.send(list(notifier.configured_channels), "trigger", message,
                                          dedup_key=self.dedup_key, values=values)
        return [result.describe() for result in results]

    async def resolve(self, values: dict[str, str]) -> list[str]:
        """Resolve the incident where it was triggered, and only there; with no trigger, the
        journal says why no resolve was sent."""
        channels = self.triggered_channels()
        if not channels:
            self.journal.append("notification_not_sent", {"event": "resolve", "why": NOT_TRIGGERED})
            return [f"resolve: not sent — {NOT_TRIGGERED}"]
        message = RESOLVE_MESSAGE if values.get("version") else RESOLVE_MESSAGE_NO_VERSION
        async with Notifier.from_config(self.loaded, journal=self.journal) as notifier:
            results = await notifier.send(channels, "resolve", message, dedup_key=self.dedup_key, values=values)
        return [result.describe() for result in results]
