"""Alert-rules items: the runbook names the alerting rules that must exist, and Prometheus
says (GET {url}/api/v1/rules?type=alert: data.groups[].rules[] with name, health, state,
lastError) whether each is loaded, healthy and quiet.

A named rule that is not loaded: fail, naming it. health "err" (or "unknown"): fail, with its
lastError. state "firing": the item's `firing` status (fail by default, or warn); "pending"
is noted. Otherwise pass, naming how many rules were checked.
"""

from __future__ import annotations

from typing import Any

from controlroom.checks.base import Outcome, ProbeContext, ProbeError, ms, shorten
from controlroom.checks.prometheus import api_get
from controlroom.config.models import AlertRulesItem


async def probe(item: AlertRulesItem, ctx: ProbeContext) -> Outcome:
    body, latency_ms = await api_get(item, ctx, "/api/v1/rules", {"type": "alert"})
    return judge(item, body, latency_ms)


def judge(item: AlertRulesItem, body: Any, latency_ms: float) -> Outcome:
    loaded = _alerting_rules(body)
    missing = [name for name in item.rules if name not in loaded]
    broken = [f"{name} health {loaded[name].get('health')}: {shorten(str(loaded[name].get('lastError') or 'no lastError'), 160)}"
              for name in item.rules if name in loaded and loaded[name].get("health") != "ok"]
    firing = [name for name in item.rules if name in loaded and loaded[name].get("state") == "firing"]
    pending = [name for name in item.rules if name in loaded and loaded[name].get("state") == "pending"]
    measured = {"rules": len(item.rules), "missing": len(missing), "firing": len(firing), "latency_ms": round(latency_ms, 1)}
    problems = ([f"not loaded: {', '.join(missing)}"] if missing else []) + broken
    said = []
    if firing:
        said.append(f"firing: {', '.join(firing)}")
    if pending:
        said.append(f"pending: {', '.join(pending)}")
    tail = f" ({ms(latency_ms)})"
    if problems:
        return Outcome("fail", "; ".join(problems + said) + tail, measured)
    if firing:
        return Outcome(item.firing, "; ".join(said) + f"; {len(item.rules)} rules loaded, health ok" + tail, measured)
    quiet = f"{len(item.rules)} of {len(item.rules)} rules loaded, health ok, none firing"
    return Outcome("pass", quiet + (f"; {said[0]}" if said else "") + tail, measured)


def _alerting_rules(body: Any) -> dict[str, dict[str, Any]]:
    """name -> rule, for the alerting rules of every group (a name defined twice: the worst
    copy, firing or unhealthy first)."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise ProbeError(f"rules query failed: {error or 'not a Prometheus answer'}")
    groups = (body.get("data") or {}).get("groups") if isinstance(body.get("data"), dict) else None
    if not isinstance(groups, list):
        raise ProbeError("rules answer has no data.groups list")
    rules: dict[str, dict[str, Any]] = {}
    for group in groups:
        for rule in (group.get("rules") or []) if isinstance(group, dict) else []:
            if not isinstance(rule, dict) or rule.get("type", "alerting") != "alerting" or not isinstance(rule.get("name"), str):
                continue
            known = rules.get(rule["name"])
            if known is None or _badness(rule) > _badness(known):
                rules[rule["name"]] = rule
    return rules


def _badness(rule: dict[str, Any]) -> int:
    return (2 if rule.get("health") != "ok" else 0) + (1 if rule.get("state") == "firing" else 0)
