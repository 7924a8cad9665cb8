"""Atlassian Statuspage: the deployment's incident on the public status page.

A trigger creates it — POST `{page_url}/incidents` {"incident": {name, status:
"investigating", body, component_ids, components: {id: "major_outage"}}}, 201 — and its id
is journaled; later events update it — PATCH `{page_url}/incidents/{id}`: acknowledge →
"identified" (partial outage), monitoring → "monitoring" (degraded performance), resolve →
"resolved" (operational). Auth: `Authorization: OAuth <api key>`. The component is the
rolled-back provider's, found by name among the page's components (GET `{page_url}/components`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controlroom.config.models import StatuspageTarget
from controlroom.notify.delivery import Channel, Context, Final, Request, Retryable, Skip, exchange
from controlroom.notify.notice import Notice, clip, render_message

if TYPE_CHECKING:  # annotations only: the outbox's client brings httpx when it first sends
    import httpx

# event -> (incident status, the component's status)
STAGES = {
    "trigger": ("investigating", "major_outage"),
    "acknowledge": ("identified", "partial_outage"),
    "monitoring": ("monitoring", "degraded_performance"),
    "resolve": ("resolved", "operational"),
}
NAME_MAX = 255


class Statuspage(Channel):
    name = "statuspage"
    rate_limit_floor_s = 5.0
    target: StatuspageTarget

    def __init__(self, target: StatuspageTarget, environment: str) -> None:
        super().__init__(target, environment)
        self._components: dict[str, str] | None = None  # name -> id, read once

    async def send(self, client: httpx.AsyncClient, notice: Notice, context: Context) -> tuple[int, dict[str, Any]]:
        if notice.event not in STAGES:
            raise Skip(f"a status page has no {notice.event!r} update")
        page = context.url(self.target.page_url, "notifications.statuspage.page_url").rstrip("/")
        headers = {"Authorization": f"OAuth {context.secret(self.target.api_key_secret)}"}
        status, component_status = STAGES[notice.event]
        incident: dict[str, Any] = {"status": status, "body": notice.text}
        component = await self._component(client, page, headers, notice.provider)
        if component:
            incident.update(component_ids=[component], components={component: component_status})
        opened = context.delivered(self.name, notice.dedup_key, "trigger")
        if notice.event == "trigger":
            if opened:
                raise Skip("this deployment's status page incident is already open")
            # A POST whose answer was lost (a timeout, a kill before it was journaled) created
            # it anyway: find it by its marker rather than open a second public incident.
            found = await self._incident_of(client, page, headers, notice.dedup_key)
            if found:
                return 200, {"incident_id": found, "found": True}
            name = render_message(self.target.incident_name, version=str(notice.details.get("version", "")),
                                  provider=notice.provider, environment=self.environment)
            incident["name"] = clip(name, NAME_MAX)
            incident["metadata"] = {"controlroom": {"dedup_key": notice.dedup_key}}
            response = await exchange(client, Request("POST", f"{page}/incidents", {"incident": incident}, headers), self.timeout_s)
            return response.status_code, {"incident_id": _incident_id(response)}
        incident_id = next((str(d.get("delivered", {}).get("incident_id", "")) for d in opened), "")
        if not incident_id:
            raise Skip("no status page incident was opened for this deployment")
        response = await exchange(client, Request("PATCH", f"{page}/incidents/{incident_id}", {"incident": incident}, headers),
                                  self.timeout_s)
        return response.status_code, {"incident_id": incident_id, "status": status}

    async def _incident_of(self, client: httpx.AsyncClient, page: str, headers: dict[str, str], dedup_key: str) -> str:
        """The id of this deployment's unresolved incident on the page, or ""."""
        response = await exchange(client, Request("GET", f"{page}/incidents", None, headers), self.timeout_s)
        try:
            listed = response.json()
        except ValueError:
            return ""
        for incident in listed if isinstance(listed, list) else []:
            marker = ((incident.get("metadata") or {}).get("controlroom") or {}) if isinstance(incident, dict) else {}
            if isinstance(marker, dict) and marker.get("dedup_key") == dedup_key and incident.get("status") != "resolved":
                return str(incident.get("id", ""))
        return ""

    async def _component(self, client: httpx.AsyncClient, page: str, headers: dict[str, str], provider: str) -> str:
        """The provider's component id on the page, or "" (none named, none found, or the page
        would not list them: the incident goes out without its component rather than not at all)."""
        if not provider:
            return ""
        if self._components is None:
            try:
                response = await exchange(client, Request("GET", f"{page}/components", None, headers), self.timeout_s)
                listed = response.json()
            except Final:
                return ""
            except ValueError:
                listed = []
            self._components = {str(c.get("name", "")): str(c.get("id", "")) for c in listed
                                if isinstance(c, dict)} if isinstance(listed, list) else {}
        wanted = self.target.components.get(provider)
        for name, component_id in self._components.items():
            if (wanted and name == wanted) or (not wanted and provider.lower() in name.lower()):
                return component_id
        return ""


def _incident_id(response: httpx.Response) -> str:
    try:
        incident_id = response.json().get("id")
    except (ValueError, AttributeError):
        incident_id = None
    if not incident_id:  # created, but nothing to update it by: the retry finds it by its marker
        raise Retryable("the status page answered without an incident id")
    return str(incident_id)
