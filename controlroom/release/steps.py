"""Running one runbook step: deployment steps now, rollback steps later.

    runner = StepRunner(loaded, write=True, journal=journal)
    runner.describe(step, values)            # the exact command, or SQL + its bound params
    await runner.dry_run(step, values)       # the description and, for SQL, the row count
    await runner.run(step, values, on_output=print)

`values` fills the action's placeholders and parameters: `version` (the release, or the
rollback target), `provider` (the provider a rollback disables).

Safety, in one place:

- A *modifying* action — a command with `modifying = true`, a modifying SQL action, `deploy`,
  `switch_version` — is refused in READ-ONLY mode with a message that says so
  (`StepRefused`), before anything starts.
- SQL is parameterised: `$1 …` are bound from `params`, never interpolated, so a provider
  named `'; DROP TABLE …; --` is just a string that matches nothing. A modifying query runs
  its `count_query` first (in the same transaction) and reports how many rows it touched;
  every statement has a `statement_timeout`.
- Commands run as `/bin/sh -c` in their own process group (a timeout kills the whole group)
  with the environment's secrets exported under their variable names; every output line is
  redacted and stripped of terminal escapes before it reaches the callback or a summary. A
  version substituted into a command is shell-quoted.

`run` never raises for a failure of the action itself: it returns a `StepOutcome` with status
`failed` and the reason. It raises `StepRefused` only for what must not run at all.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlroom.errors import ControlRoomError
from controlroom.infra import shutdown
from controlroom.infra.pg import PgSettings
from controlroom.release.journal import Journal

if TYPE_CHECKING:
    import asyncpg  # annotations only: PgSettings.connect imports it on the first connection

    from controlroom.notify.outbox import Outbox
from controlroom.checks.base import ProbeContext, ProbeResult, clean, describe_exception, format_value, run_probe
from controlroom.checks.command import KEEP_PENDING_BYTES, MAX_PENDING_BYTES, kill_process_group
from controlroom.config.loader import LoadedConfig
from controlroom.config.placeholders import MissingValue
from controlroom.config.models import (
    CommandAction,
    DeployAction,
    ManualAction,
    NotifyAction,
    ProbeAction,
    SqlAction,
    Step,
    SwitchVersionAction,
)

OutputCallback = Callable[[str], None]
MAX_LINE_CHARS = 300
SUMMARY_TAIL_LINES = 3
ROWS_SHOWN = 10
PREVIOUS_VERSION_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 5.0
PG_PURPOSE = "steps"  # connections are named controlroom/steps


class StepRefused(ControlRoomError):
    """The step must not run here (READ-ONLY mode, a missing value, no deploy command)."""

    exit_code = 2


@dataclass(frozen=True)
class StepOutcome:
    status: str  # "done" | "failed" | "skipped"
    summary: str  # one or a few lines, redacted
    output: tuple[str, ...] = ()  # the last lines of output, redacted
    count: int | None = None  # SQL: rows counted / touched
    probe_results: tuple[ProbeResult, ...] = ()


@dataclass(frozen=True)
class DryRun:
    description: str
    count: int | None = None  # SQL with a count_query: rows the statement would touch
    note: str = ""


@dataclass
class _Lines:
    """Collects redacted output lines, forwarding each to the callback."""

    redact: Callable[[str], str]
    on_output: OutputCallback | None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    def __call__(self, line: str, *, cut: bool = False) -> None:
        """`cut`: the line's start was dropped (it was too long); its end is shown, and only
        from far enough in that a secret straddling the cut is never part of it."""
        text = clean(self.redact(line)).replace("\n", " ")
        if cut:
            text = "…" + text[-(MAX_LINE_CHARS - 1):]
        elif len(text) > MAX_LINE_CHARS:
            text = text[: MAX_LINE_CHARS - 1] + "…"
        self.tail.append(text)
        if self.on_output is not None:
            self.on_output(text)


def is_modifying(step: Step) -> bool:
    action = step.action
    if isinstance(action, (CommandAction, SqlAction)):
        return action.modifying
    return isinstance(action, (DeployAction, SwitchVersionAction))


class StepRunner:
    """Runs steps against one environment. `write` is the app's WRITE mode."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        write: bool = False,
        journal: Journal | None = None,
        environ: Mapping[str, str] | None = None,
        attestations: Mapping[str, Any] | None = None,
        outbox: "Outbox | None" = None,
    ) -> None:
        self.loaded = loaded
        self.write = write
        self.journal = journal
        self.environ = dict(os.environ if environ is None else environ)
        self.attestations = dict(attestations or {})
        self.outbox = outbox

    # -- safety ------------------------------------------------------------------------

    def refusal(self, step: Step) -> str | None:
        """Why this step may not run now, or None."""
        if is_modifying(step) and not self.write:
            return (
                f"READ-ONLY mode: {step.title!r} ({step.action.kind}) changes the environment; "
                "restart with --write to allow modifying actions"
            )
        if isinstance(step.action, DeployAction) and not self.loaded.environment.deploy_command.strip():
            return f"environment {self.loaded.environment.name!r} has no deploy_command"
        if isinstance(step.action, SwitchVersionAction) and not self._rollback_template().strip():
            return f"environment {self.loaded.environment.name!r} has no rollback_command or deploy_command"
        return None

    # -- describing --------------------------------------------------------------------

    def describe(self, step: Step, values: Mapping[str, str] | None = None) -> str:
        """The exact thing the step will do: the command line, the SQL and its bound
        parameters, the items probed, the message sent."""
        values = values or {}
        action = step.action
        redact = self.loaded.secrets.redact
        if isinstance(action, CommandAction):
            command = self.loaded.shell(action.run, values, keep_missing=True)
            return redact(f"$ {command}\n(in {self._cwd(action.cwd)}, timeout {action.timeout_s:g} s)")
        if isinstance(action, DeployAction):
            command = self.loaded.shell(self.loaded.environment.deploy_command, values, keep_missing=True)
            return redact(f"$ {command}\n(timeout {action.timeout_s:g} s)")
        if isinstance(action, SwitchVersionAction):
            previous = self.loaded.runbook.rollback.previous_version
            version = values.get("version")
            if version:
                return redact(f"deploy the previous stable version {version}\n$ {self.rollback_command(version)}"
                              f"\n(timeout {action.timeout_s:g} s)")
            override = self.loaded.environment.previous_version
            target = f"the environment's previous_version {override}" if override else (
                f"the previous stable version: `{previous.command}` in {self._cwd(previous.repository)}"
                + (f" (fallback {previous.fallback})" if previous.fallback else "")
            )
            return redact(f"deploy {target}\n$ {self._rollback_template()}")
        if isinstance(action, SqlAction):
            params = self.sql_params(action, values, strict=False)
            bound = ", ".join(f"${n} = {value!r}" for n, value in enumerate(params, start=1))
            text = " ".join(action.query.split())
            if bound:
                text += f"\n  with {bound}"
            if action.count_query:
                text += f"\ncounted first: {' '.join(action.count_query.split())}"
            text += f"\n({'modifying' if action.modifying else 'read-only'}, statement timeout {action.timeout_s:g} s)"
            return redact(text)
        if isinstance(action, ProbeAction):
            return "probe: " + ", ".join(action.items)
        if isinstance(action, NotifyAction):
            message = self.loaded.text(action.message, values)
            return redact(f"notify {', '.join(action.channels)} ({action.event}): {message}")
        if isinstance(action, ManualAction):
            return f"manual: {action.prompt or step.title}"
        return step.title  # pragma: no cover - every action kind is handled above

    def deploy_command(self, version: str) -> str:
        return self.loaded.shell(self.loaded.environment.deploy_command, {"version": version})

    def _rollback_template(self) -> str:
        env = self.loaded.environment
        return env.rollback_command or env.deploy_command

    def rollback_command(self, version: str) -> str:
        """How switch_version deploys `version`: the environment's rollback_command, else its
        deploy_command; the version shell-quoted."""
        return self.loaded.shell(self._rollback_template(), {"version": version})

    def sql_params(self, action: SqlAction, values: Mapping[str, str], *, strict: bool = True) -> list[str]:
        params: list[str] = []
        for name in action.params:
            value = values.get(name)
            if value is None or value == "":
                if strict:
                    raise StepRefused(f"this step needs a {name} (bound as ${len(params) + 1})")
                value = f"<{name}>"
            params.append(value)
        return params

    async def dry_run(self, step: Step, values: Mapping[str, str] | None = None) -> DryRun:
        """Describe the step and, for SQL with a count query, count the rows it would touch
        (read-only). Changes nothing; allowed in READ-ONLY mode."""
        values = values or {}
        description = self.describe(step, values)
        action = step.action
        if isinstance(action, SqlAction) and action.count_query:
            params = self.sql_params(action, values)
            conn = await self.connect(action.database, action.timeout_s)
            try:
                async with conn.transaction(readonly=True):
                    count = await conn.fetchval(action.count_query, *params)
            finally:
                await conn.close()
            return DryRun(description, int(count or 0), f"{count} row(s) would be touched")
        if isinstance(action, SwitchVersionAction) and not values.get("version"):
            version, how = await self.previous_version()
            return DryRun(description + f"\nprevious stable version: {version or '(not found)'} ({how})")
        return DryRun(description)

    # -- running -----------------------------------------------------------------------

    async def run(
        self, step: Step, values: Mapping[str, str] | None = None, on_output: OutputCallback | None = None
    ) -> StepOutcome:
        values = dict(values or {})
        refusal = self.refusal(step)
        if refusal:
            raise StepRefused(refusal)
        lines = _Lines(self.loaded.secrets.redact, on_output)
        action = step.action
        try:
            if isinstance(action, ProbeAction):
                return await self._probe(action, values, lines)
            if isinstance(action, CommandAction):
                return await self._command(
                    self.loaded.shell(action.run, values), self._cwd(action.cwd), action.timeout_s, lines,
                    secrets=action.secrets,
                )
            if isinstance(action, DeployAction):
                version = values.get("version", "")
                if not version:
                    raise StepRefused("no version to deploy")
                return await self._command(self.deploy_command(version), self._cwd("."), action.timeout_s, lines,
                                           secrets=self.loaded.environment.deploy_secrets)
            if isinstance(action, SwitchVersionAction):
                return await self._switch_version(action, values, lines)
            if isinstance(action, SqlAction):
                return await self._sql(action, values, lines)
            if isinstance(action, NotifyAction):
                return await self._notify(action, values, lines)
            if isinstance(action, ManualAction):
                return StepOutcome("done", f"confirmed by the operator: {action.prompt or step.title}")
        except StepRefused:
            raise
        except asyncio.CancelledError:
            raise
        except MissingValue as error:  # e.g. {provider} in a step run without one
            return StepOutcome("failed", self._clean(str(error)), tuple(lines.tail))
        except Exception as error:  # noqa: BLE001 - a step's failure is its outcome
            return StepOutcome("failed", self._clean(describe_exception(error)), tuple(lines.tail))
        raise StepRefused(f"unknown action {action.kind!r}")  # pragma: no cover

    # -- actions -----------------------------------------------------------------------

    async def _probe(self, action: ProbeAction, values: Mapping[str, str], lines: _Lines) -> StepOutcome:
        items = {item.id: item for _, item in self.loaded.runbook.items()}
        async with ProbeContext(self.loaded, attestations=self.attestations, environ=self.environ, values=values) as ctx:
            results = await asyncio.gather(*(run_probe(items[item_id], ctx) for item_id in action.items))
        for result in results:
            first = result.evidence.splitlines()[0] if result.evidence else ""
            lines(f"{result.status.upper():<5} {result.item_id}: {first}")
        bad = [r for r in results if r.status not in ("pass", "warn")]
        if bad:
            summary = "; ".join(f"{r.item_id} {r.status}: {_first_line(r.evidence)}" for r in bad)
            return StepOutcome("failed", self._clean(summary), tuple(lines.tail), probe_results=tuple(results))
        summary = ", ".join(f"{r.item_id} {r.status}" for r in results)
        return StepOutcome("done", summary, tuple(lines.tail), probe_results=tuple(results))

    async def _command(self, command: str, cwd: Path, timeout_s: float, lines: _Lines, *, secrets: list[str]) -> StepOutcome:
        """Run `command` in its own process group, with only the logical `secrets` listed
        exported (the environment's other secret variables removed)."""
        if not cwd.is_dir():
            return StepOutcome("failed", f"working directory {cwd} does not exist")
        began = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command,
            cwd=cwd,
            env=self._command_environment(secrets),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        # Should the control room have to leave at once, the command's group goes with it.
        with shutdown.emergency(partial(shutdown.kill_group, process.pid)):
            try:
                try:
                    await asyncio.wait_for(_stream(process, lines), timeout=timeout_s)
                except TimeoutError:
                    timed_out = True
            finally:
                # On a timeout the shell may be gone while a background child holds the pipe:
                # end the whole group either way.
                if timed_out or process.returncode is None:
                    await kill_process_group(process)
        elapsed = time.perf_counter() - began
        tail = tuple(lines.tail)
        last = " | ".join(tail[-SUMMARY_TAIL_LINES:])
        shown = f": {last}" if last else ""
        if timed_out:
            return StepOutcome("failed", f"timed out after {timeout_s:g} s, process group killed{shown}", tail)
        code = process.returncode
        if code == 0:
            return StepOutcome("done", f"exit 0 in {elapsed:.1f} s{shown}", tail)
        return StepOutcome("failed", f"exit {code} after {elapsed:.1f} s{shown}", tail)

    async def previous_version(self) -> tuple[str, str]:
        """(version, how it was found): the runbook's command's first output line, run in
        its repository, or its fallback. ("", reason) when neither gives one."""
        override = self.loaded.environment.previous_version.strip()
        if override:
            return override, "the environment's previous_version"
        previous = self.loaded.runbook.rollback.previous_version
        reason = "no command"
        if previous.command.strip():
            lines = _Lines(self.loaded.secrets.redact, None)
            outcome = await self._command(previous.command, self._cwd(previous.repository), PREVIOUS_VERSION_TIMEOUT_S, lines,
                                          secrets=[])
            first = next((line.strip() for line in lines.tail if line.strip()), "")
            if outcome.status == "done" and first:
                return first, f"from `{previous.command}`"
            reason = f"`{previous.command}` gave nothing ({outcome.summary})"
        if previous.fallback:
            return previous.fallback, f"the runbook's fallback; {reason}"
        return "", reason

    async def _switch_version(self, action: SwitchVersionAction, values: Mapping[str, str], lines: _Lines) -> StepOutcome:
        version = values.get("version") or ""
        if not version:
            version, how = await self.previous_version()
            if not version:
                return StepOutcome("failed", self._clean(f"previous stable version not found: {how}"))
            lines(f"previous stable version: {version} ({how})")
        outcome = await self._command(self.rollback_command(version), self._cwd("."), action.timeout_s, lines,
                                      secrets=self.loaded.environment.deploy_secrets)
        return StepOutcome(outcome.status, f"switch to {version}: {outcome.summary}", outcome.output)

    async def _sql(self, action: SqlAction, values: Mapping[str, str], lines: _Lines) -> StepOutcome:
        params = self.sql_params(action, values)
        conn = await self.connect(action.database, action.timeout_s)
        try:
            async with conn.transaction(readonly=not action.modifying):
                count: int | None = None
                if action.count_query:
                    count = int(await conn.fetchval(action.count_query, *params) or 0)
                    lines(f"{count} row(s) match")
                if action.modifying:
                    status = await conn.execute(action.query, *params)
                    lines(status)
                    touched = _rows_from_status(status)
                    summary = f"{status} ({touched if touched is not None else '?'} row(s) touched"
                    summary += f", {count} counted first)" if count is not None else ")"
                    return StepOutcome("done", summary, tuple(lines.tail), touched if touched is not None else count)
                rows = await conn.fetch(action.query, *params)
        finally:
            await conn.close()
        if rows:
            lines(" | ".join(rows[0].keys()))
        for row in rows[:ROWS_SHOWN]:
            lines(" | ".join(format_value(value) for value in row.values()))
        if len(rows) > ROWS_SHOWN:
            lines(f"… and {len(rows) - ROWS_SHOWN} more")
        summary = f"{len(rows)} row(s)" + (": " + "; ".join(
            " ".join(format_value(v) for v in row.values()) for row in rows[:3]) if rows else "")
        return StepOutcome("done", self._clean(summary), tuple(lines.tail), len(rows))

    async def _notify(self, action: NotifyAction, values: Mapping[str, str], lines: _Lines) -> StepOutcome:
        """Queue the notification in the outbox (journaled before it is sent) and wait a little
        for the first answers: done when sent or still being retried (the header shows it
        until it is delivered), failed when refused for good."""
        if self.outbox is None or self.journal is None:
            lines("notify: no outbox (the step runs outside a release)")
            return StepOutcome("failed", "notify needs the release's outbox", tuple(lines.tail))
        from controlroom.notify.notice import deployment_dedup_key
        from controlroom.release.incident import FIRST_ANSWER_S, Incident

        key = deployment_dedup_key(self.journal.records)
        channels = list(action.channels)
        if action.event == "resolve":  # resolve only what was triggered (same dedup_key)
            triggered = Incident(self.loaded, self.journal, self.outbox).triggered_channels()
            channels = [c for c in channels if c in triggered]
            if not channels:
                lines("resolve: not sent — no incident was triggered for this deployment")
                return StepOutcome("done", "resolve not sent: no incident was triggered", tuple(lines.tail))
        notices = self.outbox.notify(channels, action.event, action.message, dedup_key=key, values=dict(values),
                                     provider=values.get("provider", ""), details={"version": values.get("version", "")})
        described = await self.outbox.settle(notices, FIRST_ANSWER_S)
        for line in described:
            lines(line)
        failed = [n for n in notices if (r := self.outbox.result(n)) is not None and r.status == "failed"]
        return StepOutcome("failed" if failed else "done", self._clean("; ".join(described)), tuple(lines.tail))

    # -- helpers -----------------------------------------------------------------------

    async def connect(self, database: str | None, timeout_s: float) -> asyncpg.Connection:
        """A connection to a runbook database (None: its only one) for one SQL action (or
        rollback query) whose statements may run `timeout_s`; the caller closes it."""
        try:
            database = self.loaded.runbook.database(database, where="the step")
        except ValueError as error:
            raise StepRefused(str(error)) from None
        secret = self.loaded.runbook.databases[database]
        if not self.loaded.secrets.has(secret):
            raise StepRefused(f"secret {secret!r} is not set: export {self.loaded.secrets.variable(secret)}=...")
        settings = PgSettings(
            purpose=PG_PURPOSE,
            connect_timeout_s=CONNECT_TIMEOUT_S,
            statement_timeout_s=timeout_s,
            transaction_pooler=self.loaded.environment.statement_cache_off,
        )
        return await settings.connect(self.loaded.secrets.get(secret))

    def _cwd(self, cwd: str) -> Path:
        path = Path(cwd).expanduser()
        return path if path.is_absolute() else (self.loaded.config_path.parent / path).resolve()

    def _command_environment(self, wanted: list[str]) -> dict[str, str]:
        """The process environment minus every secret variable, plus the wanted secrets."""
        store, declared = self.loaded.secrets, self.loaded.environment.secrets
        env = {key: value for key, value in self.environ.items() if key not in set(declared.values())}
        for logical in wanted:
            if logical in declared and store.has(logical):
                env[store.variable(logical)] = store.get(logical)
        return env

    def _clean(self, text: str) -> str:
        return clean(self.loaded.secrets.redact(text))


async def _stream(process: asyncio.subprocess.Process, lines: _Lines) -> None:
    assert process.stdout is not None
    pending, cut = b"", False
    while chunk := await process.stdout.read(65536):
        pending += chunk
        *complete, rest = pending.split(b"\n")
        for line in complete:
            lines(line.decode("utf-8", errors="replace").rstrip("\r"), cut=cut)
            cut = False
        pending = rest
        if len(pending) > MAX_PENDING_BYTES:
            # Keep far more than is shown: what is shown is redacted whole, from the end.
            pending, cut = pending[-KEEP_PENDING_BYTES:], True
    if pending:
        lines(pending.decode("utf-8", errors="replace").rstrip("\r"), cut=cut)
    await process.wait()


def _rows_from_status(status: str) -> int | None:
    """`UPDATE 12` → 12."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
