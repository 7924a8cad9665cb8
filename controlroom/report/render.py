"""The post-deployment report: the seed's template, filled in from a session journal.

    text = render_report(records, runbook, environment_name="production")
    text = report_command(Path("session.jsonl"), None)      # `controlroom report [JOURNAL]`

Every value comes from the journal (and the runbook, for titles, targets and the
post-deployment actions); nothing is measured again. The journal records read, and the data
keys used (all optional unless noted):

- `session_opened` {environment, runbook, config}: the environment's name; the runbook
  (`default (built in)` or a path) is what `report_command` loads.
- `verdict` {verdict, reasons, health_percent}: the last one before `deploy_started` is the
  go/no-go decision; a non-GO verdict after it is an issue.
- `check` {results: [{id, title, section, status, evidence, duration_ms, measured?}]}: the
  latest result of each item (a later, partial run updates only its items) gives the Token
  Zombie evidence (items of kind `token_zombie`) and the `[report] metrics` lines (each names
  a checklist item); every fail / error / warn is an issue.
- `attested` {item_id, outcome, note}: an item attested as failed is an issue.
- `deploy_started` {version, git_sha, verdict, override_reason}; `deploy_finished` {outcome}.
- `phase_started` / `phase_completed` {phase_id}: per-phase times against their minutes.
- `step_outcome` {step_id, phase_id | plan_id, status, summary, reason}: failed and skipped
  steps are issues; a rollback plan's steps are listed under Rollback.
- `rollback_started` {plan_id, reason, provider, version}; `rollback_finished` {plan_id, verified}.
- `notification` {channel, event, status, attempts, http_status, error, summary}.
- `pos_health` {providers: [{provider, total, connected, disconnected, ...}], health_percent,
  customer_impact?: {kpi_id, title, unit, green, red, value, status, error}}: POS Integration
  Health is the share of connected locations in the last one, each provider's locations
  connected / disconnected, and the runbook's customer-impact KPI (`[report]
  customer_impact_kpi`) against its threshold, as measured then; without one, the report falls
  back to the last verdict's health_percent and says so.
- `torn_tail` {line, sha256}: a crash cut the journal's last line; an issue.

Journal problems (an edited record, a removed one, an unreadable line) open the report with a
warning section. Text from data is shown as text: control characters and escape sequences
are removed, and each value stays on its line.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlroom.infra.identity import operator_label
from controlroom.release.state import format_duration, replay
from controlroom.errors import ConfigError, ControlRoomError
from controlroom.release.journal import JournalProblem, Record, journal_directory, read_records
from controlroom.config.models import ReportMetric, Runbook, SqlAction, TokenZombieItem

if TYPE_CHECKING:
    from controlroom.config.loader import LoadedConfig

OK, BAD, WARN = "✅", "❌", "⚠️"
STATUS_ICONS = {"pass": OK, "fail": BAD, "error": BAD, "warn": WARN, "pending": WARN, "skipped": WARN}
VERDICT_ICONS = {"GO": OK, "NO-GO": BAD, "DELAYED": WARN, "PENDING": WARN}
OUTCOME_ICONS = {"success": OK, "completed": OK, "failed": BAD, "aborted": WARN, "rolled_back": WARN, "abandoned": BAD}
TEXT_MAX_CHARS = 400

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What Markdown could read as markup in the middle of a line: emphasis, code, links,
# strike-through, table cells, and `<` opening a tag or an autolink ("< 1%" stays as it is).
_MARKDOWN = re.compile(r"[\\`*_\[\]~|]|<(?=[A-Za-z/!?])")


class ReportError(ControlRoomError):
    """The journal cannot be read (missing, a directory, unreadable, empty): exit code 2."""

    exit_code = 2


# -- `controlroom report [JOURNAL]` ------------------------------------------------------


def latest_journal(directory: Path | None = None) -> Path | None:
    """The most recently modified *.jsonl in `directory` (default: the user's journal dir)."""
    directory = directory if directory is not None else journal_directory()
    try:
        candidates = [path for path in directory.glob("*.jsonl") if path.is_file()]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda path: (path.stat().st_mtime_ns, path.name))


def report_command(journal_path: Path | None, output: Path | None, *, loaded: "LoadedConfig | None" = None,
                   release_id: str | None = None) -> str:
    """Render the report of `journal_path` (default: the newest journal; with a config whose
    journal is the shared store, its newest release there, or `release_id`) and return it;
    also write it to `output` when given. Never modifies the journal. Raises ReportError (exit 2)."""
    if journal_path is None and loaded is not None and loaded.journal.shared:
        records, source = asyncio.run(_stored_records(loaded, release_id))
        text = render_report(records, loaded.runbook, source=source)
        _write(text, output)
        return text
    if journal_path is None:
        directory = journal_directory()
        journal_path = latest_journal(directory)
        if journal_path is None:
            raise ReportError(f"no journal found in {directory}; name one: controlroom report JOURNAL")
    journal_path = journal_path.expanduser()
    if not journal_path.exists():
        raise ReportError(f"{journal_path}: no such journal")
    if journal_path.is_dir():
        raise ReportError(f"{journal_path}: is a directory, expected a journal (.jsonl)")
    try:
        records, problems, _torn = read_records(journal_path)
    except OSError as error:
        raise ReportError(f"{journal_path}: cannot read: {error.strerror or error}") from None
    if not records:
        detail = f" ({problems[0]})" if problems else ""
        raise ReportError(f"{journal_path}: holds no journal records{detail}")

    warnings: list[str] = []
    runbook = _runbook_of(records, warnings)
    text = render_report(records, runbook, problems=problems, warnings=warnings, source=journal_path)
    _write(text, output)
    return text


def _write(text: str, output: Path | None) -> None:
    if output is not None:
        try:
            output.expanduser().write_text(text, encoding="utf-8")
        except OSError as error:
            raise ReportError(f"{output}: cannot write the report: {error.strerror or error}") from None


async def _stored_records(loaded: "LoadedConfig", release_id: str | None) -> tuple[list[Record], str]:
    """A release's records from the shared store, and the name its mirrors have (so the
    report of the store and the report of a mirrored file are the same)."""
    from controlroom.release.shared_journal import read_shared_release

    stored = await read_shared_release(loaded, release_id)
    if stored is None or not stored.records:
        what = f"release {release_id!r}" if release_id else f"a release of {loaded.environment.name!r}"
        raise ReportError(f"the shared journal holds no {what}")
    return stored.records, f"{stored.release_id}.jsonl"


def _runbook_of(records: Sequence[Record], warnings: list[str]) -> Runbook:
    from controlroom.config.loader import load_default_runbook, load_runbook

    opened = next((r for r in records if r.kind == "session_opened"), None)
    source = str(opened.data.get("runbook", "")) if opened else ""
    # The built-in runbook is journaled as "default (built in)"; a path names a file.
    if not source or source.startswith("default") or not source.endswith(".toml"):
        return load_default_runbook()
    try:
        return load_runbook(source)
    except ConfigError as error:
        warnings.append(f"The session's runbook could not be loaded ({error}); titles and targets are the default runbook's.")
        return load_default_runbook()


# -- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    at: datetime
    result: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.result.get("status", ""))

    @property
    def evidence(self) -> str:
        return _text(self.result.get("evidence", ""))


def render_report(
    records: Sequence[Record],
    runbook: Runbook,
    *,
    environment_name: str | None = None,
    problems: Sequence[JournalProblem] = (),
    warnings: Sequence[str] = (),
    source: Path | str | None = None,
) -> str:
    """The Markdown report of one journal's deployment."""
    records = list(records)
    state = replay(records)
    started = _first(records, "deploy_started")
    opened = _first(records, "session_opened")
    if environment_name is None and opened is not None:
        environment_name = _text(opened.data.get("environment", "")) or None
    day = (started or records[0]).at if records else datetime.now(UTC)

    lines = [f"# Deployment Report - {_utc(day):%Y-%m-%d}", ""]
    warnings = [*warnings, *state.unexpected]
    if problems or warnings:
        lines += _integrity_warning(problems, warnings)
    if environment_name or source:
        context = []
        if environment_name:
            context.append(f"Environment: **{environment_name}**")
        if source:
            context.append(f"journal `{_code(Path(source).name)}`")
        lines += ["_" + "; ".join(context) + "_", ""]

    latest = _latest_checks(records)
    issues: list[str] = []
    lines += _summary(records, runbook, state, started, issues)
    lines += _metrics(records, runbook, latest)
    lines += _watch(records, runbook, issues)
    lines += _rollbacks(records, runbook, issues)
    lines += _notifications(records, issues)
    lines += _operators(records, issues)
    lines += _issues(records, runbook, started, problems, issues)
    lines += ["## Post-Deployment Actions"]
    actions = [f"- [ ] {_text(action)}" for action in runbook.report.post_actions]
    actions += [
        f"- [ ] Re-enable the {_text(provider)} integrations the rollback disabled, once the cause is fixed"
        for provider in _disabled_providers(records, runbook)
    ]
    lines += actions or ["- None listed in the runbook"]
    return "\n".join(lines) + "\n"


def _disabled_providers(records: Sequence[Record], runbook: Runbook) -> list[str]:
    """Providers whose integrations a rollback step really disabled (a modifying SQL step
    bound to the provider, journaled done)."""
    provider_steps = {
        step.id
        for plan in runbook.rollback.plans
        for step in plan.steps
        if isinstance(step.action, SqlAction) and step.action.modifying and "provider" in step.action.params
    }
    disabled: list[str] = []
    provider = ""
    for record in records:
        if record.kind == "rollback_started":
            provider = str(record.data.get("provider") or "")
        elif (record.kind == "step_outcome" and record.data.get("plan_id") and record.data.get("status") == "done"
              and record.data.get("step_id") in provider_steps and provider and provider not in disabled):
            disabled.append(provider)
    return disabled


def _integrity_warning(problems: Sequence[JournalProblem], warnings: Sequence[str]) -> list[str]:
    lines = []
    if problems:
        lines += [
            f"> {WARN} **Journal integrity warning**: this journal did not verify — a record was edited, removed, "
            "or cut short — so the report below may not show what really happened.",
            ">",
        ]
        lines += [f"> - {_text(str(problem))}" for problem in problems]
    for warning in warnings:
        if lines:
            lines.append(">")
        lines.append(f"> {WARN} {_text(warning)}")
    return lines + [""]


def _summary(records: list[Record], runbook: Runbook, state: Any, started: Record | None, issues: list[str]) -> list[str]:
    lines = ["## Summary"]
    finished = _last(records, "deploy_finished")
    deployment = runbook.deployment
    if started is None:
        lines.append(f"- **Deployment Time**: not started {WARN}")
    else:
        end = finished.at if finished else None
        if end is None:
            when = f"{_stamp(started.at)} - not finished {WARN}"
            issues.append(f"{WARN} The deployment has no `deploy_finished` record: still in progress, or the session ended")
        else:
            elapsed = (end - started.at).total_seconds()
            over = elapsed > deployment.target_minutes * 60
            icon = WARN if over else OK
            end_text = f"{_utc(end):%H:%M:%S} UTC" if _utc(end).date() == _utc(started.at).date() else _stamp(end)
            when = f"{_stamp(started.at)} - {end_text} ({format_duration(elapsed)} of the {deployment.target_minutes:g} min target {icon})"
            if over:
                issues.append(f"{WARN} The deployment took {format_duration(elapsed)}, over its {deployment.target_minutes:g} min target")
        lines.append(f"- **Deployment Time**: {when}")
        lines += _phase_lines(records, runbook, issues)

    version = _text(started.data.get("version", "")) if started else ""
    sha = _text(started.data.get("git_sha", "")) if started else ""
    if version and sha:
        shown = f"{version} (git {sha})"
    else:
        shown = version or sha or f"unknown {WARN}"
    lines.append(f"- **Version**: {shown}")
    lines += _decision(records, started)
    lines.append(f"- **Rollback Required**: {_rollback_summary(records, runbook)}")
    if finished is not None:
        outcome = str(finished.data.get("outcome", ""))
        lines.append(f"- **Outcome**: {_text(outcome.replace('_', ' ')) or 'unknown'} {OUTCOME_ICONS.get(outcome, WARN)}")
    return lines + [""]


def _phase_lines(records: list[Record], runbook: Runbook, issues: list[str]) -> list[str]:
    starts: dict[str, datetime] = {}
    ends: dict[str, datetime] = {}
    for record in records:
        phase_id = str(record.data.get("phase_id", ""))
        if record.kind == "phase_started":
            starts.setdefault(phase_id, record.at)
        elif record.kind == "phase_completed":
            ends[phase_id] = record.at
    lines = []
    for phase in runbook.deployment.phases:
        if phase.id not in starts:
            continue
        if phase.id not in ends:
            lines.append(f"  - {phase.title}: started {_clock(starts[phase.id])}, not completed {WARN}")
            continue
        elapsed = (ends[phase.id] - starts[phase.id]).total_seconds()
        over = elapsed > phase.minutes * 60
        lines.append(f"  - {phase.title}: {format_duration(elapsed)} of {phase.minutes:g} min {WARN if over else OK}")
        if over:
            issues.append(f"{WARN} Phase {phase.title} took {format_duration(elapsed)}, over its {phase.minutes:g} min")
    return lines


def _decision(records: list[Record], started: Record | None) -> list[str]:
    before = records[: records.index(started)] if started is not None else records
    decided = _last(before, "verdict")
    verdict = str(decided.data.get("verdict", "")) if decided else ""
    reasons = list(decided.data.get("reasons", [])) if decided else []
    if not verdict and started is not None:
        verdict = str(started.data.get("verdict", ""))
    if not verdict:
        return [f"- **Go/No-Go Decision**: not journaled {WARN}"]
    text = f"{_text(verdict)} {VERDICT_ICONS.get(verdict, WARN)}"
    override = _text(started.data.get("override_reason", "")) if started else ""
    if override:
        who = _text(started.operator.get("user", "")) if started else ""
        text += f" — overridden{' by ' + who if who else ''}: {override}"
    elif started is None:
        text += " (no deployment was started)"
    lines = [f"- **Go/No-Go Decision**: {text}"]
    if verdict != "GO":
        lines += [f"  - {_text(reason)}" for reason in reasons]
    return lines


def _rollback_summary(records: list[Record], runbook: Runbook) -> str:
    rollbacks = _rollback_pairs(records)
    if not rollbacks:
        finished = _last(records, "deploy_finished")
        if finished is not None and finished.data.get("outcome") == "rolled_back":
            return f"Yes {WARN} (the deployment ended rolled back, but no rollback was journaled)"
        return f"No {OK}"
    parts = []
    for began, ended in rollbacks:
        title, target = _plan(runbook, began.data.get("plan_id"))
        reason = _text(began.data.get("reason", ""))
        text = f"{title} at {_clock(began.at)}" + (f" because {reason}" if reason else "")
        if ended is None:
            text += f"; not finished {BAD}"
        elif ended.data.get("verified") is True:
            took = (ended.at - began.at).total_seconds()
            icon = OK if target is None or took <= target * 60 else WARN
            text += f"; verified {OK} at {_clock(ended.at)} ({format_duration(took)}" + (
                f" of the {target:g} min target {icon})" if target is not None else ")"
            )
        else:
            text += f"; NOT verified {BAD}"
        parts.append(text)
    all_verified = all(ended is not None and ended.data.get("verified") is True for _, ended in rollbacks)
    return f"Yes {WARN if all_verified else BAD} — " + "; then ".join(parts)


def _metrics(records: list[Record], runbook: Runbook, latest: dict[str, _Check]) -> list[str]:
    lines = ["## Metrics"]
    zombie_items = [item for _, item in runbook.items() if isinstance(item, TokenZombieItem)]
    for item in zombie_items or [None]:
        title = item.title if item else "Token Zombie Test"
        check = latest.get(item.id) if item else None
        if check is None:
            lines.append(f"- **{title}**: {WARN} not run")
        else:
            lines.append(f"- **{title}**: {_icon(check.status)} {check.evidence or check.status}")
    lines.append(f"- **POS Integration Health**: {_pos_health(records, runbook)}")

    for metric in runbook.report.metrics:
        lines.append(f"- **{_text(metric.title)}**: {_metric(latest.get(metric.item), runbook, metric)}")

    checked = [r.at for r in records if r.kind == "check"]
    if checked:
        lines.append(f"- _Measured by the last checks journaled, at {_clock(max(checked))}_")
    return lines + [""]


def _pos_health(records: list[Record], runbook: Runbook) -> str:
    minimum = runbook.verdict.health_min_percent
    snapshot = _last(records, "pos_health")
    if snapshot is not None:
        providers = [p for p in snapshot.data.get("providers", []) if isinstance(p, dict)]
        total = sum(_number(p.get("total")) for p in providers)
        connected = sum(_number(p.get("connected")) for p in providers)
        percent = snapshot.data.get("health_percent")
        if not isinstance(percent, (int, float)) or isinstance(percent, bool):
            percent = 100.0 * connected / total if total else None
        impact = _customer_impact(snapshot.data.get("customer_impact"))
        if percent is None:
            return f"unknown {WARN} (the POS fleet snapshot at {_clock(snapshot.at)} holds no locations)" + impact
        icon = OK if percent >= minimum else BAD
        per_provider = " · ".join(_provider_health(p) for p in providers if _number(p.get("total")))
        detail = f"{connected:g} of {total:g} locations connected" if total else "connected locations"
        return (f"{_percent(percent)} {icon} ({detail}, at {_clock(snapshot.at)})"
                + (f" — {per_provider}" if per_provider else "") + impact)
    verdict = _last(records, "verdict")
    percent = verdict.data.get("health_percent") if verdict else None
    if isinstance(percent, (int, float)) and not isinstance(percent, bool):
        icon = OK if percent >= minimum else BAD
        return (
            f"{_percent(percent)} {icon} (share of the health checks passing in the verdict at "
            f"{_clock(verdict.at)}; no POS fleet snapshot was journaled)"
        )
    return f"not measured {WARN}"


def _provider_health(provider: dict[str, Any]) -> str:
    """`fudo 165/300 connected (135 disconnected)`."""
    total, connected = _number(provider.get("total")), _number(provider.get("connected"))
    disconnected = provider.get("disconnected")
    disconnected = _number(disconnected) if isinstance(disconnected, (int, float)) else total - connected
    return f"{_text(provider.get('provider', '?'))} {connected:g}/{total:g} connected ({disconnected:g} disconnected)"


def _customer_impact(impact: Any) -> str:
    """` · customer impact: Customer Impact (locations affected) 4.2% ❌ (threshold < 1%)`, from
    the `customer_impact` of a `pos_health` record; '' when it has none."""
    if not isinstance(impact, dict):
        return ""
    title = _text(impact.get("title", "")) or _text(impact.get("kpi_id", "")) or "KPI"
    unit = _text(impact.get("unit", ""))
    green = _text(impact.get("green", ""))
    threshold = f" (threshold {_with_unit(green, unit)})" if green else ""
    value = impact.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        why = _text(impact.get("error", ""))
        return f" · customer impact: {title} not measured {WARN}" + (f" ({why})" if why else "") + threshold
    icon = {"green": OK, "amber": WARN, "red": BAD}.get(str(impact.get("status", "")), WARN)
    return f" · customer impact: {title} {_with_unit(f'{value:g}', unit)} {icon}{threshold}"


def _with_unit(value: str, unit: str) -> str:
    return f"{value}{unit}" if unit in ("", "%") else f"{value} {unit}"


def _rollbacks(records: list[Record], runbook: Runbook, issues: list[str]) -> list[str]:
    rollbacks = _rollback_pairs(records)
    lines: list[str] = []
    for began, ended in rollbacks:
        plan_id = str(began.data.get("plan_id", ""))
        title, target = _plan(runbook, plan_id)
        lines += [f"## Rollback: {title}"]
        lines.append(f"- **Why**: {_text(began.data.get('reason', '')) or 'not journaled'}")
        acting = (("provider", "provider"), ("version", "back to version"))
        extra = [f"{label} {_text(began.data[key])}" for key, label in acting if began.data.get(key)]
        if extra:
            lines.append(f"- **Acting on**: {', '.join(extra)}")
        started_text = f"- **Started**: {_stamp(began.at)}"
        if target is not None:
            started_text += f" (target {target:g} min)"
        lines.append(started_text)
        if ended is None:
            lines.append(f"- **Verified**: not finished {BAD}")
            issues.append(f"{BAD} The {title} started at {_clock(began.at)} was never finished")
        elif ended.data.get("verified") is True:
            took = (ended.at - began.at).total_seconds()
            lines.append(f"- **Verified**: yes {OK}, at {_clock(ended.at)}, {format_duration(took)} after it started")
            if target is not None and took > target * 60:
                issues.append(f"{WARN} The {title} took {format_duration(took)}, over its {target:g} min target")
        else:
            lines.append(f"- **Verified**: no {BAD} (finished at {_clock(ended.at)})")
            issues.append(f"{BAD} The {title} finished at {_clock(ended.at)} but was not verified")
        end_index = records.index(ended) if ended is not None else len(records)
        steps = [
            r
            for r in records[records.index(began) : end_index + 1]
            if r.kind == "step_outcome" and r.data.get("plan_id") == plan_id
        ]
        if steps:
            lines.append("- **Steps**:")
            titles = {step.id: step.title for plan in runbook.rollback.plans if plan.id == plan_id for step in plan.steps}
            for step in steps:
                step_id = str(step.data.get("step_id", ""))
                status = str(step.data.get("status", ""))
                detail = _text(step.data.get("summary", "")) or _text(step.data.get("reason", ""))
                lines.append(
                    f"  - {_step_icon(status)} {_clock(step.at)} {_text(titles.get(step_id, step_id))}: {status}"
                    + (f" — {detail}" if detail else "")
                )
        lines.append("")
    return lines


def _watch(records: list[Record], runbook: Runbook, issues: list[str]) -> list[str]:
    """The watch after the deployment: the real-time KPIs at the finish and at the watch's
    end, its breaches, and the 24-hour KPIs ("Monitor for 24 hours") with their targets."""
    started = _last(records, "watch_started")
    if started is None:
        return []
    after = records[records.index(started):]
    ended = _first(after, "watch_ended")
    breaches = [r for r in after if r.kind == "watch_breach"]
    minutes = _number(started.data.get("minutes", 0))
    lines = ["## Watch after the deployment", ""]
    if ended is None:
        lines.append(f"- Started {_clock(started.at)} for {minutes:g} min; not ended when this report was written")
    else:
        lasted = (ended.at - started.at).total_seconds() / 60
        lines.append(f"- {_clock(started.at)}–{_clock(ended.at)} ({lasted:.0f} of {minutes:g} min): "
                     f"{_text(ended.data.get('why', 'ended'))}")
    at_finish = started.data.get("kpis") or {}
    at_end = (ended.data.get("kpis") or {}) if ended is not None else {}
    lines += ["", "| KPI | Target | At finish | At the end of the watch |", "|---|---|---|---|"]
    for kpi in runbook.kpis:
        if kpi.window != "realtime":
            continue
        lines.append(f"| {_text(kpi.title)} | {_target(kpi)} | {_kpi_value(at_finish.get(kpi.id), kpi.unit)} | "
                     f"{_kpi_value(at_end.get(kpi.id), kpi.unit)} |")
    for breach in breaches:
        what = _text(breach.data.get("what", ""))
        lines.append("")
        lines.append(f"- {BAD} {_clock(breach.at)} rollback recommended: {what}")
        issues.append(f"{BAD} The watch after the deployment raised the alarm at {_clock(breach.at)}: {what}")
    daily = [kpi for kpi in runbook.kpis if kpi.window == "24h"]
    if daily:
        lines += ["", "24-hour KPIs (Monitor for 24 hours):", "", "| KPI | Target | Last reading |", "|---|---|---|"]
        last = at_end or at_finish
        lines += [f"| {_text(kpi.title)} | {_target(kpi)} | {_kpi_value(last.get(kpi.id), kpi.unit)} |" for kpi in daily]
    return lines + [""]


def _target(kpi: Any) -> str:
    return _text(f"{kpi.green.op} {kpi.green.value:g}{' ' + kpi.unit if kpi.unit else ''}")


def _kpi_value(value: Any, unit: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return _text(f"{value:g}{' ' + unit if unit else ''}")


def _notifications(records: list[Record], issues: list[str]) -> list[str]:
    """Every alert and message and how it ended; deploy markers (PagerDuty change events) only
    when they were not delivered — delivered, they are on PagerDuty's incident page."""
    ended = {str(r.data.get("id")) for r in records if r.kind == "notification" and r.data.get("id")}
    sent = [r for r in records if r.kind == "notification"
            and not (r.data.get("event") == "change" and r.data.get("status") == "sent")]
    never = [r for r in records if r.kind == "notification_queued" and str(r.data.get("id")) not in ended]
    paged = [r for r in records if r.kind == "escalation_paged"]
    if not sent and not never and not paged:
        return []
    lines = ["## Notifications"]
    for record in paged:
        lines.append(f"- {WARN} {_clock(record.at)} L{_text(record.data.get('level', '?'))} "
                     f"{_text(record.data.get('title', ''))} paged by {_text(record.operator.get('user', '?'))}")
    for record in never:
        head = f"{_text(record.data.get('channel', '?'))} {_text(record.data.get('event', '?'))}"
        lines.append(f"- {WARN} {_clock(record.at)} {head}: still pending when this report was written")
        issues.append(f"{WARN} Notification {head} queued at {_clock(record.at)} was not delivered yet")
    for record in sent:
        data = record.data
        status = str(data.get("status", ""))
        icon = {"sent": OK, "failed": BAD}.get(status, WARN)
        attempts = data.get("attempts")
        tries = f" ({attempts} attempt{'s' if attempts != 1 else ''})" if isinstance(attempts, int) and attempts else ""
        head = f"{_text(data.get('channel', '?'))} {_text(data.get('event', '?'))}"
        summary = _text(data.get("summary", ""))
        if data.get("gave_up"):
            status = "gave up"
        line = f"- {icon} {_clock(record.at)} {head}: {status}{tries}"
        if status != "sent" and data.get("error"):
            line += f" — {_text(data.get('error', ''))}"
        if summary:
            line += f" — “{summary}”"
        lines.append(line)
        if status in ("failed", "gave up"):
            issues.append(
                f"{BAD} Notification {head} at {_clock(record.at)} failed{tries}: {_text(data.get('error', '')) or 'no detail'}"
            )
    return lines + [""]


def _operators(records: list[Record], issues: list[str]) -> list[str]:
    """A shared release: who drove when (opened, took over), the shared journal's outages
    and what was journaled offline, and any offline branch, kept whole but not applied."""
    lines: list[str] = []
    branches: list[Record] = []
    for record in records:
        data = record.data
        if record.kind == "driver_changed":
            driver = _text(data.get("driver", ""))
            if data.get("how") == "took over":
                came_from = _text(data.get("from", "")) or "nobody"
                reason = _text(data.get("reason", ""))
                lines.append(f"- {_clock(record.at)} {driver} took over from {came_from} (its control room was gone)"
                             + (f": {reason}" if reason and reason != "take over" else ""))
            else:
                lines.append(f"- {_clock(record.at)} {driver} drove")
        elif record.kind == "offline_continued":
            who = _text(operator_label(record.operator))
            lines.append(f"- {_clock(record.at)} the shared journal was unreachable ({_text(data.get('error', ''))}); "
                         f"{who} continued offline: {_text(data.get('reason', ''))}")
        elif record.kind == "store_back":
            lines.append(f"- {_clock(record.at)} the shared journal was back: the {_text(data.get('offline_records', '?'))} "
                         "record(s) journaled offline are in it")
        elif record.kind == "offline_branch":
            branches.append(record)
    if not lines and not branches:
        return []
    out = ["## Operators", *(lines or ["- One control room drove this release"]), ""]
    for branch in branches:
        data = branch.data
        bodies = [body for body in data.get("records", []) or [] if isinstance(body, dict)]
        who = _text(data.get("journaled_by", "")) or _text(operator_label(branch.operator))
        out += [f"### Offline branch (not applied): {len(bodies)} record(s) by {who}",
                f"Journaled while the shared journal was unreachable, and someone else drove meanwhile: kept whole "
                f"here (record {branch.seq}) and in {who}'s local copy, but not part of this release's course.", ""]
        for body in bodies:
            detail_data = body.get("data", {}) if isinstance(body.get("data"), dict) else {}
            detail = " ".join(_text(detail_data[key]) for key in ("step_id", "status", "item_id", "reason", "summary")
                              if detail_data.get(key))
            try:
                at = _clock(datetime.fromisoformat(str(body.get("ts"))))
            except ValueError:
                at = "?"
            out.append(f"- {at} {_text(body.get('kind', '?'))}" + (f" — {detail}" if detail else ""))
        out.append("")
        issues.append(f"{WARN} {len(bodies)} record(s) journaled offline by {who} were kept as a branch, not applied "
                      f"(record {branch.seq})")
    return out


def _issues(
    records: list[Record], runbook: Runbook, started: Record | None, problems: Sequence[JournalProblem], issues: list[str]
) -> list[str]:
    found: list[str] = [f"{BAD} Journal integrity: {_text(str(problem))}" for problem in problems]
    seen: set[tuple[str, str, str]] = set()
    deploying = False
    titles = {item.id: item.title for _, item in runbook.items()}
    step_titles = {s.id: s.title for p in runbook.deployment.phases for s in p.steps}
    step_titles.update({s.id: s.title for plan in runbook.rollback.plans for s in plan.steps})
    for record in records:
        data = record.data
        if record.kind == "deploy_started":
            deploying = True
        elif record.kind == "check":
            for result in data.get("results", []) or []:
                if not isinstance(result, dict):
                    continue
                status = str(result.get("status", ""))
                if status not in ("fail", "error", "warn"):
                    continue
                item_id = str(result.get("id", "?"))
                evidence = _text(result.get("evidence", ""))
                key = (item_id, status, evidence)
                if key in seen:
                    continue
                seen.add(key)
                title = _text(result.get("title", "")) or titles.get(item_id, item_id)
                found.append(f"{_icon(status)} {_clock(record.at)} check {title} (`{_code(item_id)}`): {status} — {evidence}")
        elif record.kind == "verdict" and deploying and data.get("verdict") not in ("GO", None):
            verdict = _text(data.get("verdict", ""))
            reasons = "; ".join(_text(reason) for reason in data.get("reasons", []) or [])
            icon = VERDICT_ICONS.get(str(data.get("verdict")), WARN)
            found.append(
                f"{icon} {_clock(record.at)} verdict changed to {verdict} during the deployment" + (f": {reasons}" if reasons else "")
            )
        elif record.kind == "attested" and data.get("outcome", "pass") != "pass":
            item_id = str(data.get("item_id", "?"))
            note = _text(data.get("note", ""))
            who = _text(record.operator.get("user", ""))
            found.append(
                f"{BAD} {_clock(record.at)} {titles.get(item_id, item_id)} attested as {_text(data.get('outcome', ''))}"
                + (f" by {who}" if who else "")
                + (f": {note}" if note else "")
            )
        elif record.kind == "step_outcome" and data.get("status") in ("failed", "skipped"):
            step_id = str(data.get("step_id", "?"))
            status = str(data.get("status"))
            where = f"rollback plan {data['plan_id']}" if data.get("plan_id") else f"phase {data.get('phase_id', '?')}"
            detail = "; ".join(_text(data.get(key, "")) for key in ("summary", "reason") if data.get(key))
            found.append(
                f"{BAD if status == 'failed' else WARN} {_clock(record.at)} step {_text(step_titles.get(step_id, step_id))} "
                f"({_text(where)}) {status}" + (f": {detail}" if detail else "")
            )
        elif record.kind == "torn_tail":
            found.append(
                f"{WARN} {_clock(record.at)} the journal's line {_text(str(data.get('line', '?')))} was cut short "
                "(the control room was killed while writing it); that record is lost and was ignored"
            )
    found += issues
    lines = ["## Issues Encountered"]
    lines += [f"- {issue}" for issue in found] or ["- None"]
    return lines + [""]


# -- helpers ---------------------------------------------------------------------------


def _latest_checks(records: list[Record]) -> dict[str, _Check]:
    latest: dict[str, _Check] = {}
    for record in records:
        if record.kind != "check":
            continue
        for result in record.data.get("results", []) or []:
            if isinstance(result, dict) and result.get("id"):
                latest[str(result["id"])] = _Check(record.at, result)
    return latest


def _metric(check: _Check | None, runbook: Runbook, metric: ReportMetric) -> str:
    """A checklist item's latest result as a Metrics line: its number and unit (a value
    item), how many rows it found (a row-listing item), or its evidence."""
    if check is None:
        return f"not measured {WARN}"
    measured = check.result.get("measured") or {}
    value, rows = measured.get("value"), measured.get("rows")
    item = next((i for _, i in runbook.items() if i.id == metric.item), None)
    unit = getattr(item, "unit", "") if item is not None else ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{_with_unit(f'{value:g}', _unit_word(unit))} {_icon(check.status)}"
    if isinstance(rows, int) and not isinstance(rows, bool):
        text = f"{rows} {_text(metric.count_label)} {_icon(check.status)}"
        return text if check.status == "pass" else f"{text} ({check.evidence})"
    return f"{check.status} {_icon(check.status)} ({check.evidence})" if check.evidence else f"{check.status} {_icon(check.status)}"


def _unit_word(unit: str) -> str:
    return {"min": "minutes"}.get(unit, unit)


def _rollback_pairs(records: list[Record]) -> list[tuple[Record, Record | None]]:
    pairs: list[tuple[Record, Record | None]] = []
    open_rollback: Record | None = None
    for record in records:
        if record.kind == "rollback_started":
            if open_rollback is not None:
                pairs.append((open_rollback, None))
            open_rollback = record
        elif record.kind == "rollback_finished" and open_rollback is not None:
            pairs.append((open_rollback, record))
            open_rollback = None
    if open_rollback is not None:
        pairs.append((open_rollback, None))
    return pairs


def _plan(runbook: Runbook, plan_id: Any) -> tuple[str, float | None]:
    for plan in runbook.rollback.plans:
        if plan.id == plan_id:
            return plan.title, plan.target_minutes
    return f"rollback plan {_text(str(plan_id))}", None


def _first(records: Sequence[Record], kind: str) -> Record | None:
    return next((r for r in records if r.kind == kind), None)


def _last(records: Sequence[Record], kind: str) -> Record | None:
    return next((r for r in reversed(records) if r.kind == kind), None)


def _icon(status: str) -> str:
    return STATUS_ICONS.get(status, WARN)


def _step_icon(status: str) -> str:
    return {"done": OK, "failed": BAD}.get(status, WARN)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def _clock(moment: datetime) -> str:
    return f"{_utc(moment):%H:%M:%S}"


def _percent(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0") + "%"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _plain(value: Any) -> str:
    """No escape sequences or control characters, one line, bounded."""
    text = _CONTROL.sub("", str(value).replace("\n", " ").replace("\r", " ").replace("\t", " "))
    text = " ".join(text.split())
    return text if len(text) <= TEXT_MAX_CHARS else text[: TEXT_MAX_CHARS - 1] + "…"


def _text(value: Any) -> str:
    """Data shown as text in Markdown: plain (above), and escaped, so a location named
    `**[click](http://…)**` or `<img>` is shown as those characters, never as markup."""
    return _MARKDOWN.sub(r"\\\g<0>", _plain(value))


def _code(value: Any) -> str:
    """Data inside a `code span`: plain, without backticks (nothing is escaped in there)."""
    return _plain(value).replace("`", "'")
