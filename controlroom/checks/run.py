"""Run a whole checklist, decide the verdict, and present it (JSON or a Rich table).

    report = await run_checklist(load_config(path), {"backups", "vulnerabilities"})
    report.verdict.verdict, report.exit_code, report.to_json(), render_report(report)

All probes run concurrently, so a check takes about as long as its slowest probe. A
rate-limit burst with a client identity of its own (its credentials — `auth`,
`secret_headers` — name secrets no other probe sends) runs with the others: it exhausts only
its own limit. A burst that shares credentials with another probe, or sends none (the
limiter then counts it by address, with everyone else), runs after the others have
finished, because it would exhaust the limiter's window for them too and distort their
latencies; such a burst is short and bounded by its timeout_s. A deferred burst against an
origin (scheme, host, port) that did not answer an HTTP or CORS probe of the first pass is
not sent at all: it is an `error` saying so, and a hung API costs one timeout, not two.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from controlroom.errors import ControlRoomError
from controlroom.checks.base import Attestation, ProbeContext, ProbeResult, clean, iso, run_probe, with_attestation
from controlroom.config.loader import LoadedConfig
from controlroom.config.models import ChecklistItem, CorsItem, HttpItem, PagerDutyOncallItem, RateLimitItem, Section, TokenZombieItem
from controlroom.checks.verdict import Verdict, decide, percent

STATUS_STYLES: dict[str, str] = {
    "pass": "bold green",
    "warn": "bold yellow",
    "fail": "bold red",
    "error": "bold magenta",
    "pending": "bold cyan",
    "skipped": "dim",
}
VERDICT_STYLES: dict[str, str] = {
    "GO": "bold black on green",
    "DELAYED": "bold black on yellow",
    "NO-GO": "bold white on red",
    "PENDING": "bold black on cyan",
}


class AttestationError(ControlRoomError):
    """--attest named an item that cannot be attested (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class CheckedItem:
    section: Section
    item: ChecklistItem
    result: ProbeResult

    def to_json(self) -> dict[str, Any]:
        data = {
            "id": self.item.id,
            "title": self.item.title,
            "section": self.section.id,
            "section_title": self.section.title,
            "kind": self.item.kind,
            **self.result.to_json(),
        }
        data["measured"] = dict(self.result.measured)
        return data


@dataclass(frozen=True)
class CheckReport:
    environment: str
    production: bool
    runbook: str
    checks: list[CheckedItem]
    verdict: Verdict
    started_at: datetime
    duration_ms: float

    @property
    def exit_code(self) -> int:
        return self.verdict.exit_code

    @property
    def results(self) -> dict[str, ProbeResult]:
        return {c.item.id: c.result for c in self.checks}

    @property
    def slowest(self) -> CheckedItem | None:
        return max(self.checks, key=lambda c: c.result.duration_ms, default=None)

    def to_json(self) -> dict[str, Any]:
        """DESIGN.md §2's shape: verdict, reasons, checks[id, title, section, status,
        evidence, duration_ms], plus health_percent, duration_ms, environment and more."""
        slowest = self.slowest
        return {
            "verdict": self.verdict.verdict,
            "reasons": list(self.verdict.reasons),
            "checks": [c.to_json() for c in self.checks],
            "health_percent": self.verdict.health_percent,
            "exit_code": self.exit_code,
            "environment": self.environment,
            "production": self.production,
            "runbook": self.runbook,
            "started_at": iso(self.started_at),
            "duration_ms": round(self.duration_ms, 1),
            "slowest": {"id": slowest.item.id, "duration_ms": round(slowest.result.duration_ms, 1)} if slowest else None,
        }


# -- attestations ----------------------------------------------------------------------------


def attestable_ids(loaded: LoadedConfig) -> list[str]:
    """Manual items, and probes that will not run here (against production: a rate-limit
    burst, or a Token Zombie test that would have to mint a token; on-call coverage where
    PagerDuty is not configured), which only an operator's word can satisfy."""
    ids: list[str] = []
    environment = loaded.environment
    for _, item in loaded.runbook.items():
        # The items' own rules, not their probe modules' (which import httpx: ~60 ms before
        # the TUI's first frame).
        refused = (isinstance(item, (RateLimitItem, TokenZombieItem)) and item.refused_in(environment)) or (
            isinstance(item, PagerDutyOncallItem) and bool(item.unconfigured_in(environment)))
        if item.kind == "manual" or refused:
            ids.append(item.id)
    return ids


def resolve_attestations(
    loaded: LoadedConfig,
    attested: Mapping[str, Attestation] | Iterable[str],
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Attestation]:
    """IDs (attested now, by the current user) or ready Attestations, checked against the
    runbook; AttestationError naming the valid IDs for anything else."""
    if isinstance(attested, Mapping):
        resolved = dict(attested)
    else:
        now = Attestation.now(environ)
        resolved = {item_id: now for item_id in attested}
    valid = attestable_ids(loaded)
    unknown = [item_id for item_id in resolved if item_id not in valid]
    if unknown:
        kinds = {item.id: item.kind for _, item in loaded.runbook.items()}
        names = ", ".join(repr(u) + (f" (probed here: {kinds[u]})" if u in kinds else "") for u in unknown)
        raise AttestationError(
            f"cannot attest {names}: the items that can be attested are {', '.join(valid) or '(none)'}"
        )
    return resolved


# -- running ---------------------------------------------------------------------------------


async def run_checklist(
    loaded: LoadedConfig,
    attested: Mapping[str, Attestation] | Iterable[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    on_result: Callable[[ProbeResult], None] | None = None,
) -> CheckReport:
    """Run every checklist item's probe, concurrently, and decide the verdict. `on_result`
    hears each item's result as it lands (the control room shows it at once); the verdict
    waits for them all."""
    attestations = resolve_attestations(loaded, attested, environ=environ)
    started_at = datetime.now(timezone.utc)
    began = time.perf_counter()
    items = loaded.runbook.items()
    results: dict[str, ProbeResult] = {}

    async def landed(probe: Awaitable[ProbeResult]) -> ProbeResult:
        result = await probe
        if result.status == "skipped" and result.item_id in attestations:
            result = with_attestation(result, attestations[result.item_id], loaded.secrets.redact)
        if on_result is not None:
            on_result(result)
        return result

    async with ProbeContext(loaded, attestations=attestations, environ=environ) as ctx:
        bursts = [item for _, item in items if isinstance(item, RateLimitItem) and not has_own_identity(item, loaded)]
        # A burst that runs with the others is often the slowest probe: it starts first, before
        # the others' synchronous set-up (each runs until its first await) delays it.
        first = [item for _, item in items if isinstance(item, RateLimitItem) and item not in bursts]
        first += [item for _, item in items if not isinstance(item, RateLimitItem)]
        for result in await asyncio.gather(*(landed(run_probe(item, ctx)) for item in first)):
            results[result.item_id] = result
        silent = _silent_origins(first, results, loaded)
        for result in await asyncio.gather(*(landed(_run_burst(item, ctx, silent)) for item in bursts)):
            results[result.item_id] = result
    duration_ms = (time.perf_counter() - began) * 1000.0

    verdict = decide(loaded.runbook, results)
    verdict = Verdict(verdict.verdict, [clean(loaded.secrets.redact(r)) for r in verdict.reasons], verdict.health_percent)
    return CheckReport(
        environment=loaded.environment.name,
        production=loaded.environment.production,
        runbook=loaded.runbook.name,
        checks=[CheckedItem(section, item, results[item.id]) for section, item in items],
        verdict=verdict,
        started_at=started_at,
        duration_ms=duration_ms,
    )


def _credentials(item: ChecklistItem) -> set[str]:
    """The logical secrets an item's HTTP requests carry (who it is to a rate limiter)."""
    names = set(getattr(item, "secret_headers", {}).values())
    auth = getattr(item, "auth", None)
    if auth is not None:
        names.update(auth.secret_names())
    if isinstance(item, TokenZombieItem):
        names.add(item.api_key_secret)
    return names


def has_own_identity(burst: RateLimitItem, loaded: LoadedConfig) -> bool:
    """Whether the burst's credentials are its own: it sends some, and no other item sends
    any of them, so it uses up no one else's limit and can run with the others."""
    mine = _credentials(burst)
    others = set().union(*(_credentials(item) for _, item in loaded.runbook.items() if item.id != burst.id))
    return bool(mine) and not mine & others


def _origin(url: str) -> tuple[str, str, int | None] | None:
    import httpx  # its parser, the probes' own; loaded by the probes by then

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    return (parsed.scheme, parsed.host, parsed.port or {"http": 80, "https": 443}.get(parsed.scheme))


def _silent_origins(
    first: list[ChecklistItem], results: Mapping[str, ProbeResult], loaded: LoadedConfig
) -> dict[tuple[str, str, int | None], str]:
    """Origin -> the first-pass item that got no answer from it at all (refused, reset, timed
    out: an `error` with no HTTP status measured)."""
    silent: dict[tuple[str, str, int | None], str] = {}
    for item in first:
        result = results.get(item.id)
        if not isinstance(item, (HttpItem, CorsItem)) or result is None:
            continue
        answered = "http_status" in result.measured or "preflight_status" in result.measured
        if result.status == "error" and not answered:
            origin = _origin(loaded.url(item.url))
            if origin is not None:
                silent.setdefault(origin, item.id)
    return silent


async def _run_burst(
    item: RateLimitItem, ctx: ProbeContext, silent: Mapping[tuple[str, str, int | None], str]
) -> ProbeResult:
    url = ctx.url(item.url)
    origin = _origin(url)
    if origin is None or origin not in silent:
        return await run_probe(item, ctx)
    shown = f"{origin[0]}://{origin[1]}" + (f":{origin[2]}" if origin[2] is not None else "")
    now = datetime.now(timezone.utc)
    evidence = f"skipped: {shown} did not answer in the first pass ({silent[origin]}); the burst was not sent"
    return ProbeResult(item.id, "error", clean(ctx.redact(evidence)), 0.0, now, measured={"requests": 0})


# -- presenting ------------------------------------------------------------------------------


def render_report(report: CheckReport) -> RenderableType:
    """The verdict, its reasons and the checklist as a Rich table. Every string from data
    (evidence, titles, reasons) is a Text: nothing is parsed as markup."""
    table = Table(expand=True, show_lines=False, header_style="bold", pad_edge=False)
    table.add_column("status", no_wrap=True, width=7)
    table.add_column("check", ratio=2, overflow="fold")
    table.add_column("evidence", ratio=3, overflow="fold")
    table.add_column("ms", justify="right", no_wrap=True, width=6)
    section_id = None
    for checked in report.checks:
        if checked.section.id != section_id:
            section_id = checked.section.id
            table.add_row(Text(""), Text(checked.section.title, style="bold underline"), Text(""), Text(""), end_section=False)
        result = checked.result
        table.add_row(
            Text(result.status.upper(), style=STATUS_STYLES.get(result.status, "")),
            Text(checked.item.title) + Text(f"\n{checked.item.id}", style="dim"),
            Text(result.evidence),
            Text(f"{result.duration_ms:.0f}"),
        )

    verdict = report.verdict
    header = Text.assemble(
        (f" {verdict.verdict} ", VERDICT_STYLES.get(verdict.verdict, "bold")),
        "  ",
        (report.environment, "bold"),
        (" (PRODUCTION)" if report.production else "", "bold red"),
        f"  health {percent(verdict.health_percent)} %",
    )
    reasons = [Text("• ") + Text(reason) for reason in verdict.reasons]
    slowest = report.slowest
    footer = Text(
        f"{len(report.checks)} check{'s' if len(report.checks) != 1 else ''} in {report.duration_ms / 1000:.2f} s"
        + (f" (slowest: {slowest.item.id}, {slowest.result.duration_ms:.0f} ms)" if slowest else "")
        + f"; exit code {report.exit_code}",
        style="dim",
    )
    return Group(table, Text(""), header, *reasons, footer)
