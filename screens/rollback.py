"""Rollback: the runbook's plans and their steps with status, the rollback clock against the
plan's target, the escalation ladder, and a log pane the running step streams into.

One step at a time: x shows exactly what a step does (the command, or the SQL with its bound
parameters and the rows it will touch) and asks for a typed confirmation — the tag or the
provider — before anything modifying runs; Cancel is always the default. READ-ONLY mode
refuses every modifying key with a message. The clock and the escalation level derive from
journaled times (rollback_started, incident_window), so a reopened console shows them right.
"""

from __future__ import annotations

import contextlib

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from controlroom.widgets.key_bar import as_mapped
from controlroom.widgets.row_table import RowTable, cut
from controlroom.widgets.changes import set_cell, set_content
from controlroom.release.state import format_duration
from controlroom.config.models import RollbackPlan, Step
from controlroom.release.rules import ROLLBACK, Command
from controlroom.screens.base import ControlScreen
from controlroom.screens.deploy import (LEAST_STEP_WIDTH, LEVEL_STYLES, MOST_STEP_WIDTH, STEP_STYLES, clock_text,
                                       outcome_lines)
from controlroom.screens.dialogs import ConfirmDialog, PickDialog, ReasonDialog, TypedConfirmDialog
from controlroom.infra.identity import operator_label
from controlroom.live.sources import plain
from controlroom.widgets.messages import (
    Adopt,
    CommandRefused,
    DryRunDone,
    DryRunStep,
    FindProviders,
    MarkDone,
    ProvidersFound,
    RollbackStarted,
    RunStep,
    SkipStep,
    StartRollback,
    StepFinished,
    StepOutput,
    VerifyRollback,
)
from controlroom.widgets.step_log import LogKeys, StepLog, log_bindings

if TYPE_CHECKING:
    from controlroom.release.engine import ReleaseEngine

STEP_WIDTH = 54
TIME_WIDTH = 12
ROLLBACK_PLACEHOLDER = "Rollback output appears here."


def plan_span(plan: Any) -> str:
    """`< 5 min` / `10–15 min`."""
    if plan.min_minutes is not None:
        return f"{plan.min_minutes:g}–{plan.target_minutes:g} min"
    return f"< {plan.target_minutes:g} min"


class RollbackScreen(LogKeys, ControlScreen):
    TITLE_TEXT = "Rollback"
    HELP = (
        "The rollback console. Pick a plan in the plans list (↑↓; tab moves to its steps and back) — "
        "Emergency (< 5 min: previous stable version, disable the failing provider's integrations, notify) or Graceful (10–15 min) — and press s: it asks why "
        "(the latest failure is filled in) and, when the plan disables integrations, which provider (with "
        "how many locations it would touch); the previous stable version is found and journaled. Then run "
        "the steps one at a time with x: each shows exactly what it does, and modifying steps need the tag "
        "or provider name typed (Cancel is the default). t dry-runs a step (changes nothing; counts rows), "
        "m marks a manual step done, z skips with a reason. When every step is done, v verifies: the "
        "verification probes run again, the verdict updates, and a verified rollback resolves the incident "
        "(Slack, PagerDuty) and ends the deployment as rolled back. The clock counts against the plan's "
        "target (amber, then red, on overrun); the escalation panel says who to call now and when the next "
        "level is reached. ctrl+r writes the report. Nothing modifying runs in READ-ONLY mode."
    )
    AUTO_FOCUS = "#rb-plans"
    BINDINGS = [
        Binding("tab,shift+tab", "other_list", "plans/steps", show=False, tooltip="Move between the plans and the "
                "highlighted plan's steps", id="rollback.other_list"),
        Binding("s", "start", "start", tooltip="Start the selected plan (asks why, and the provider)",
                id="rollback.start"),
        Binding("a", "adopt", "adopt", tooltip="Adopt a release deployed elsewhere (CI/CD, a colleague) so it "
                "can be rolled back: its version and why, journaled", id="rollback.adopt"),
        Binding("x", "run_step", "run", tooltip="Run the selected step (shows it; typed confirmation)",
                id="rollback.run"),
        Binding("t", "dry_run", "dry-run", tooltip="Dry-run the selected step: describe it, count rows",
                id="rollback.dry_run"),
        Binding("m", "mark_done", "done", tooltip="Mark a manual step done without running it", id="rollback.done"),
        Binding("z", "skip", "skip", tooltip="Skip the selected step with a typed reason", id="rollback.skip"),
        Binding("v", "verify", "verify", tooltip="Verify: probe again; verified resolves the incident",
                id="rollback.verify"),
        *log_bindings("rollback"),
    ]

    ENGINE_COMMANDS = {"start": Command.START_ROLLBACK, "adopt": Command.ADOPT, "run_step": Command.RUN_ROLLBACK_STEP,
                       "mark_done": Command.MARK_DONE, "skip": Command.SKIP, "verify": Command.VERIFY}
    COMMAND_SCOPE = ROLLBACK

    def compose_body(self) -> ComposeResult:
        yield Static("", id="rb-header")
        yield RowTable(id="rb-plans", cursor_type="row", show_header=False)
        yield RowTable(id="rb-steps", cursor_type="row", show_header=False)
        yield Static("", id="rb-hint")
        yield Static("", id="rb-escalation")
        yield StepLog(ROLLBACK_PLACEHOLDER, id="rb-log")

    def on_mount(self) -> None:
        super().on_mount()
        self._ensure_rows()
        self.render_rollback()

    @property
    def plans(self) -> list[RollbackPlan]:
        return list(self.room.config.runbook.rollback.plans)

    def _ensure_rows(self) -> bool:
        """The plans list filled (once); False while the screen has no lists (being composed,
        or taken down as the app closes: a tick may land then)."""
        found = self.query("#rb-plans")
        if not found:
            return False
        plans = found.first(RowTable)
        if plans.columns:
            return True
        plans.add_column(Text("stat"), width=4, key="status")
        plans.add_column(Text("plan"), width=STEP_WIDTH, key="step")
        plans.add_column(Text("time"), width=TIME_WIDTH, key="time")
        plans.flex(step=(1, LEAST_STEP_WIDTH, MOST_STEP_WIDTH))  # the titles take the width there is
        for letter, plan in zip("ABCDEFGH", self.plans):
            plans.add_row(Text(""), cut(plain(f"{letter}. {plan.title} ({plan_span(plan)})", limit=200), "bold"),
                          Text(""), key=plan.id)
        steps = self.query_one("#rb-steps", RowTable)
        steps.add_column(Text("stat"), width=4, key="status")
        steps.add_column(Text("step"), width=STEP_WIDTH, key="step")
        steps.add_column(Text("time"), width=TIME_WIDTH, key="time")
        steps.flex(step=(1, LEAST_STEP_WIDTH, MOST_STEP_WIDTH))
        self._show_steps_of(self.plans[0].id if self.plans else None)
        return True

    _steps_of: str | None = None  # the plan whose steps the steps list shows

    def _show_steps_of(self, plan_id: str | None) -> None:
        """The steps list shows the highlighted plan's steps (rebuilt only when it changes)."""
        if plan_id == self._steps_of or plan_id is None:
            return
        self._steps_of = plan_id
        steps = self.query_one("#rb-steps", DataTable)
        steps.clear()
        for number, step in enumerate(self.rollback_plan(plan_id).steps, start=1):
            steps.add_row(Text("·", style="dim"), cut(plain(f"{number}. {step.title}", limit=200)), Text(""),
                          key=step.id)
        if self.session is not None:
            self._render_steps(self.session)

    def rollback_plan(self, plan_id: str) -> RollbackPlan:
        return next(plan for plan in self.plans if plan.id == plan_id)

    # -- rendering ---------------------------------------------------------------------

    def show_session(self, session: ReleaseEngine) -> None:
        self.render_rollback()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.render_rollback()

    def tick(self, now: float) -> None:
        self.render_rollback()

    _resume_cursor_placed = False
    _alarm_placed: str = ""  # the hash of the alarm the cursor was put on the plan of

    def render_rollback(self) -> None:
        if not self._ensure_rows():
            return
        session = self.session
        if (session is not None and session.resumed and session.rollback_in_progress()
                and not self._resume_cursor_placed):
            self._resume_cursor_placed = True  # once, after a resume: then the operator moves it
            self.select_next_open_step()
        breach = session.alarm() if session is not None else None
        if breach is not None and breach.hash != self._alarm_placed:
            self._alarm_placed = breach.hash  # once per alarm: the recommended plan, s starts it
            self.select_plan(str(breach.data.get("plan_id", "")))
        header = self.query_one("#rb-header", Static)
        if session is None:
            set_content(header, Text("opening the session…", style="dim"))
            return
        state = session.state
        rollback = state.rollback
        text = Text(no_wrap=True, overflow="ellipsis")
        if rollback is None:
            text.append("No rollback. ", style="bold")
            if state.started_at is None:
                text.append("No deployment started yet.", style="dim")
            elif breach is not None:
                text.append("Rollback recommended", style="bold white on red")
                text.append(f" ({plain(str(breach.data.get('what', '')), limit=60)})")
            else:
                text.append(f"Deploying {plain(state.version, limit=20)}", style="bold")
            text.append("\n" + " · ".join(f"{p.title} {plan_span(p)}" for p in self.plans), style="dim")
        else:
            plan = session.rollback_plan(rollback.plan_id)
            clock = session.rollback_clock()
            text.append(plain(plan.title.upper(), limit=30) + " ", style="bold")
            text.append(f"{format_duration(clock.elapsed_s)} / {format_duration(clock.budget_s)}",
                        style=LEVEL_STYLES[str(clock.level)])
            text.append("  ")
            if rollback.ended_at is None:
                text.append_text(clock_text(clock))
            elif rollback.verified:
                text.append("VERIFIED", style="bold black on green")
                text.append(f" in {format_duration(clock.elapsed_s)}")
            else:
                text.append("ABANDONED, NOT VERIFIED", style="bold white on red")
                text.append(" — the incident is still open", style="bold")
            values = session.rollback_values()
            text.append("\n→ ")
            text.append(plain(values.get("version") or "version not found", limit=20), style="bold")
            if values.get("provider"):
                text.append("  disable ")
                text.append(plain(values["provider"], limit=20), style="bold")
            if state.notifications_failed:
                text.append(f"  {state.notifications_failed} notification(s) FAILED", style="bold white on red")
            elif rollback.reason:
                text.append("  why: " + plain(rollback.reason, limit=60), style="dim")
        set_content(header, text)
        self._render_plans(session)
        self._render_steps(session)
        self._render_hint(session)
        self._render_escalation(session)
        self._show_selected_outcome()

    def _render_plans(self, session: Any) -> None:
        table = self.query_one("#rb-plans", DataTable)
        rollback = session.state.rollback
        for plan in self.plans:
            active = rollback is not None and rollback.plan_id == plan.id
            if not active:
                marker = Text("")
            elif rollback.ended_at is None:
                marker = Text("▶", style="bold")
            elif rollback.verified:
                marker = Text("✓", style="bold green")
            else:  # abandoned: the deployment was finished as failed with this rollback open
                marker = Text("✗", style="bold red")
            set_cell(table, plan.id, "status", marker)
            if active and rollback.ended_at is not None and not rollback.verified:
                set_cell(table, plan.id, "time", Text("abandoned", style="bold red"))
            elif active:
                set_cell(table, plan.id, "time", clock_text(session.rollback_clock()))
            else:
                set_cell(table, plan.id, "time", Text(format_duration(plan.target_minutes * 60), style="dim"))

    def _render_steps(self, session: Any) -> None:
        """The steps of the plan the steps list shows, with their status when it is the
        rollback's plan."""
        if self._steps_of is None:
            return
        table = self.query_one("#rb-steps", DataTable)
        rollback = session.state.rollback
        plan = self.rollback_plan(self._steps_of)
        active = rollback is not None and rollback.plan_id == plan.id
        for step in plan.steps:
            step_state = rollback.steps.get(step.id) if active else None
            status = step_state.status if step_state else "todo"
            if active and session.running_step == step.id:
                status = "running"
            label, style = STEP_STYLES.get(status, (status.upper(), ""))
            set_cell(table, step.id, "status", Text(label, style=style))
            when = Text("")
            if step_state and step_state.at and status in ("done", "failed", "skipped"):
                when = Text(f"+{format_duration((step_state.at - rollback.started_at).total_seconds())}", style="dim")
            set_cell(table, step.id, "time", when)

    def _key(self, action: str) -> str:
        """The key of one of this screen's actions, as the operator's keymap has it."""
        binding = next((b for b in self.BINDINGS if isinstance(b, Binding) and b.action == action), None)
        return self.app.get_key_display(as_mapped(self.app, binding)) if binding is not None else action

    def hint(self, session: Any) -> Text:
        """What to do next, worded from the engine's NextMove: it never offers what the
        engine would refuse."""
        move = session.rollback_next()
        text = Text(no_wrap=True, overflow="ellipsis")
        plan_id, _ = self.selected()
        selected = self.rollback_plan(plan_id).title if plan_id else "selected plan"
        if move.kind == "start":
            again = " again" if session.state.rollback is not None else ""
            text.append(f"{self._key('start')} starts the {selected}{again}", style="bold")
            text.append(" · ↑↓ picks a plan, tab moves to its steps", style="dim")
        elif move.kind == "running":
            text.append("running: " + (plain(move.step.title, limit=50) if move.step else "the verification"),
                        style="bold")
            text.append(" · its output streams below", style="dim")
        elif move.kind == "run":
            assert move.step is not None
            text.append("next: ", style="bold")
            # The keys stay in view: the title gives way first (the steps list shows it whole).
            text.append(plain(move.step.title, limit=max(20, (self.size.width or 80) - 46)), style="bold")
            if move.refusal:
                text.append(f" · {plain(move.refusal, limit=120)}", style="yellow")
            else:
                text.append(f" · {self._key('run_step')} runs it, {self._key('dry_run')} dry-runs, "
                            f"{self._key('skip')} skips", style="dim")
        elif move.kind == "verify":
            text.append("every step is done: ", style="bold")
            text.append(f"{self._key('verify')} verifies the rollback" if not move.refusal
                        else plain(move.refusal, limit=120), style="bold" if not move.refusal else "yellow")
        elif move.kind == "verified":
            text.append("VERIFIED", style="bold green")
            text.append(": the deployment ended rolled back, the incident is resolved · ctrl+r writes the report")
        elif move.kind == "adopt":
            text.append("no deployment in this journal: ", style="bold")
            text.append(f"{self._key('adopt')} adopts a release deployed elsewhere, then {self._key('start')} "
                        "rolls it back")
        else:  # refused (READ-ONLY, watching, …) or abandoned without a way to start again
            text.append(plain(move.refusal or "nothing to do here now", limit=200), style="yellow")
        return text

    def _render_hint(self, session: Any) -> None:
        set_content(self.query_one("#rb-hint", Static), self.hint(session))

    def _render_escalation(self, session: Any) -> None:
        panel = self.query_one("#rb-escalation", Static)
        text = Text(no_wrap=True, overflow="ellipsis")
        status = session.escalation()
        if status is None:
            started, ended = session.incident_window()
            if started is not None and ended is not None:
                text.append("Incident closed", style="bold green")
                text.append(f" at {ended:%H:%M:%S} UTC, {format_duration((ended - started).total_seconds())} after it began")
            else:
                text.append("No incident. ", style="dim")
                text.append("Escalation starts at the first failure or rollback.", style="dim")
            set_content(panel, text)
            return
        width = max(20, self.size.width - 3)  # one line each, never wrapped
        text.append("ESCALATION ", style="bold")
        text.append(f" L{status.level} ", style="bold black on yellow" if status.level > 1 else "bold black on cyan")
        text.append(f" {plain(status.title, limit=30)}", style="bold")
        text.append(f"  {format_duration(status.elapsed_s)} into the incident", style="dim")
        text.append("\ncontact: ")
        text.append(plain(", ".join(status.contacts), limit=width - 9), style="bold")
        text.append("\n")
        if status.next_level is not None and status.seconds_to_next is not None and status.next_at is not None:
            line = (f"L{status.next_level} {plain(status.next_title or '', limit=30)} in "
                    f"{format_duration(status.seconds_to_next)} (at {status.next_at:%H:%M} UTC)")
        else:
            line = "top of the ladder"
        paged = [f"L{r.data.get('level')} {r.at:%H:%M} by {operator_label(r.operator)}" for r in session.paged()]
        if paged:  # who was paged early, and when: the ladder's own times say the rest
            line += " · paged " + ", ".join(paged)
        elif status.next_level is not None:
            line += " · e pages it now"
        text.append(plain(line, limit=width))
        if status.channels and len(line) + 4 < width:
            text.append(" · " + plain(", ".join(status.channels), limit=width - len(line) - 3), style="dim")
        set_content(panel, text)

    def log_line(self, line: str) -> None:
        self.query_one(StepLog).add_line(line)

    def _show_selected_outcome(self) -> None:
        """While no step has written to the log, it shows the selected step's journaled
        outcome (a FAIL says why), else the placeholder."""
        log = self.query_one(StepLog)
        plan_id, step_id = self.selected()
        session = self.session
        rollback = session.state.rollback if session is not None else None
        lines: list[str] = []
        if step_id is not None and rollback is not None and rollback.plan_id == plan_id:
            step = next((s for s in session.rollback_plan(plan_id).steps if s.id == step_id), None)
            if step is not None:
                lines = outcome_lines(step.title, rollback.steps.get(step_id), log.text_width)
        log.show_outcome(lines)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "rb-plans" and event.row_key.value:
            self._show_steps_of(event.row_key.value)
            if self.session is not None:
                self._render_hint(self.session)
        self._show_selected_outcome()

    def on_descendant_focus(self, event: Any) -> None:
        self._show_selected_outcome()

    def action_other_list(self) -> None:
        """tab / shift+tab: from the plans to the highlighted plan's steps, and back."""
        plans = self.query_one("#rb-plans", DataTable)
        self.set_focus(self.query_one("#rb-steps", DataTable) if self.focused is plans else plans)

    # -- selection ---------------------------------------------------------------------

    def selected(self) -> tuple[str | None, str | None]:
        """(plan id, step id or None): the highlighted plan, and its highlighted step while
        the steps list has the focus."""
        plans = self.query_one("#rb-plans", DataTable)
        if plans.row_count == 0:
            return None, None
        plan_id = plans.coordinate_to_cell_key((plans.cursor_row, 0)).row_key.value
        steps = self.query_one("#rb-steps", DataTable)
        if self.focused is not steps or steps.row_count == 0 or self._steps_of != plan_id:
            return plan_id, None
        return plan_id, steps.coordinate_to_cell_key((steps.cursor_row, 0)).row_key.value

    def select_plan(self, plan_id: str) -> None:
        """Highlight `plan_id` in the plans list, which takes the focus."""
        plans = self.query_one("#rb-plans", DataTable)
        with contextlib.suppress(Exception):  # not a plan of this runbook
            plans.move_cursor(row=plans.get_row_index(plan_id))
            self._show_steps_of(plan_id)
            self.set_focus(plans)

    def _need_step(self) -> tuple[str, str] | None:
        plan_id, step_id = self.selected()
        session = self.session
        rollback = session.state.rollback if session is not None else None
        if step_id is None and rollback is not None and rollback.ended_at is None and plan_id == rollback.plan_id:
            waiting = session.open_rollback_steps()
            if waiting:  # on the running plan's heading: its next open step, as on the Deploy screen
                self.select_next_open_step()
                return plan_id, waiting[0]
        if plan_id is None or step_id is None:
            self.app.notify("Select a step first (tab to the steps, ↑↓)", severity="warning")
            return None
        return plan_id, step_id

    def select_next_open_step(self) -> None:
        """Move the cursor to the rollback's first step not yet done or skipped."""
        session = self.session
        if session is None or session.state.rollback is None:
            return
        waiting = session.open_rollback_steps()
        plan_id = session.state.rollback.plan_id
        plans = self.query_one("#rb-plans", DataTable)
        plans.move_cursor(row=plans.get_row_index(plan_id))
        self._show_steps_of(plan_id)
        steps = self.query_one("#rb-steps", DataTable)
        plan = self.rollback_plan(plan_id)
        steps.move_cursor(row=steps.get_row_index(waiting[0]) if waiting else len(plan.steps) - 1)
        self.set_focus(steps)

    def say_refused(self, reason: str) -> None:
        super().say_refused(reason)
        self.log_line("refused: " + reason)

    # -- commands ----------------------------------------------------------------------

    def action_start(self) -> None:
        session = self.session
        if session is None or self.refused_up_front("start"):
            return
        plan_id, _ = self.selected()
        rollback = session.state.rollback
        plan = session.rollback_plan(plan_id or self.plans[0].id)
        body = Text()
        body.append(f"{plan.title} ({plan_span(plan)}), from {plain(session.state.version, limit=30)}:\n", style="bold")
        for number, step in enumerate(plan.steps, start=1):
            body.append(f" {number}. {plain(step.title, limit=66)}\n")
        if rollback is not None and not rollback.verified:
            body.append("(a previous rollback was not verified)\n", style="yellow")
        body.append("Why roll back? (the latest failure is filled in; journaled)", style="bold")

        def with_reason(reason: str | None) -> None:
            if not reason:
                return
            if session.plans.needs_provider(plan):
                self.log_line("finding the providers and their connected locations…")
                self.expect_dialog()
                self.command(FindProviders(plan.id, reason))
            else:
                self.command(StartRollback(plan.id, reason))

        self.app.push_screen(
            ReasonDialog(Text(f"Start the {plan.title}?"), body, placeholder="why roll back",
                         confirm_label="Next", min_length=3, initial=session.suggested_reason()),
            with_reason,
        )

    def action_adopt(self) -> None:
        session = self.session
        if session is None or self.refused_up_front("adopt"):
            return

        def with_version(version: str | None) -> None:
            if not version:
                return
            body = Text(f"Release {version} was deployed outside this control room. Adopting it makes it this "
                        "journal's release, so that it can be rolled back. Who deployed it, and why do you take it "
                        "over? (journaled with your name)")
            self.app.push_screen(
                ReasonDialog(Text(f"Adopt {plain(version, limit=40)}?"), body, placeholder="e.g. deployed by CI at 03:02; "
                             "Fudo failing since", confirm_label="Adopt", min_length=3),
                lambda reason: self.command(Adopt(version, reason)) if reason else None,
            )

        self.app.push_screen(
            ReasonDialog(Text("Adopt a release deployed elsewhere"),
                         Text("The version that is live now (the tag CI/CD or a colleague deployed)."),
                         placeholder="e.g. v2.15.0", confirm_label="Next", min_length=1),
            with_version,
        )

    def on_providers_found(self, event: ProvidersFound) -> None:
        self.dialog_opened()
        session = self.session
        if session is None:
            return
        plan, reason, choices = session.rollback_plan(event.plan_id), event.reason, event.choices
        if not choices:
            self.say_refused("no providers found (runbook rollback.providers / providers_query)")
            return
        names = [name for name, _ in choices]
        suggested = session.suggested_provider(names)
        labels: list[tuple[str, str | Text]] = []
        for name, count in choices:
            label = Text(f"{plain(name, limit=30):<12}")
            label.append(f"{count} connected location(s) would be disabled" if count is not None else "count unknown",
                         style="dim")
            if name == suggested:
                label.append("  ← failing", style="bold red")
            labels.append((name, label))
        self.app.push_screen(
            PickDialog(Text("Which provider's integrations are disabled?"),
                       Text("The rollback's SQL step sets connected = false for this provider ($1, bound)."),
                       labels, initial=suggested),
            lambda provider: self.command(StartRollback(plan.id, reason, provider)) if provider else None,
        )

    def on_rollback_started(self, event: RollbackStarted) -> None:
        session = self.session
        if session is None or session.state.rollback is None:
            return
        values = session.rollback_values()
        record = session.rollback_record()
        how = record.data.get("version_from", "") if record is not None else ""
        plan = session.rollback_plan(session.state.rollback.plan_id)
        self.log_line(f"══ {plan.title} started: back to {values.get('version') or '(version not found)'}"
                      + (f" ({how})" if how else "")
                      + (f", disabling {values['provider']}" if values.get("provider") else ""))
        self.render_rollback()
        self.select_next_open_step()

    def _allowed_step(self) -> tuple[Any, str, str] | None:
        """(session, plan id, step id) of the selected step, or None after saying why not."""
        session = self.session
        selected = self._need_step()
        if session is None or selected is None:
            return None
        plan_id, step_id = selected
        refusal = session.rollback_refusal(step_id, plan_id)
        if refusal:
            self.say_refused(refusal)
            return None
        return session, plan_id, step_id

    def action_run_step(self) -> None:
        if self.refused_up_front("run_step"):  # READ-ONLY, no rollback: said before "select a step"
            return
        allowed = self._allowed_step()
        if allowed is None:
            return
        session, plan_id, step_id = allowed
        step = session.rollback_step(step_id)
        kind = step.action.kind
        if kind == "sql" and "provider" in getattr(step.action, "params", []) and step.action.count_query:
            # Count first (read-only), then ask, with the count shown.
            self.expect_dialog()
            self.command(DryRunStep(step_id, plan_id=plan_id, rollback=True, confirm=True))
            return
        self._confirm(step, None)

    def on_dry_run_done(self, event: DryRunDone) -> None:
        session = self.session
        if session is not None:
            self._confirm(session.rollback_step(event.step_id), event.dry.count)

    def _confirm(self, step: Step, count: int | None) -> None:
        self.dialog_opened()
        session = self.session
        if session is None:
            return
        values = session.rollback_values()
        body = Text()
        body.append(session.describe_rollback_step(step.id))
        if count is not None:
            body.append(f"\n\nThis touches {count} row(s) now.", style="bold")

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.log_line(f"── {step.title}")
                self.command(RunStep(step.id, rollback=True))

        title = Text(plain(f"Run: {step.title}", limit=70))
        if session.runner().refusal(step) is None and session.modifying_step(step):
            word = values.get("provider") if step.action.kind == "sql" and values.get("provider") else (
                values.get("version") or step.id)
            body.append("\n\nThis changes the environment.", style="bold red")
            self.app.push_screen(TypedConfirmDialog(title, body, word, confirm_label="Run"), confirmed)
            return
        if step.action.kind == "manual":
            body = Text(plain(step.action.prompt or step.title, limit=400))
            title = Text(plain(f"Confirm: {step.title}", limit=70))
        self.app.push_screen(ConfirmDialog(title, body, confirm_label="Done" if step.action.kind == "manual" else "Run"),
                             confirmed)

    def on_command_refused(self, event: CommandRefused) -> None:
        super().on_command_refused(event)
        self.log_line("refused: " + event.reason)
        self.render_rollback()

    def on_step_output(self, event: StepOutput) -> None:
        self.log_line(event.line)

    def on_step_finished(self, event: StepFinished) -> None:
        self.render_rollback()
        self.select_next_open_step()
        session = self.session
        if session is not None and session.rollback_in_progress() and not session.open_rollback_steps():
            self.log_line("every step is done: v verifies the rollback")

    def action_dry_run(self) -> None:
        selected = self._need_step()
        if selected is not None:
            plan_id, step_id = selected
            self.command(DryRunStep(step_id, plan_id=plan_id, rollback=True))

    def action_mark_done(self) -> None:
        if self.refused_up_front("mark_done"):  # READ-ONLY, no rollback: said before "select a step"
            return
        allowed = self._allowed_step()
        if allowed is None:
            return
        session, plan_id, step_id = allowed
        step = session.rollback_step(step_id)
        if session.modifying_step(step):
            self.say_refused(f"{step.title!r} changes the environment: run it (x) or skip it with a reason (z)")
            return
        self.app.push_screen(
            ConfirmDialog(Text(plain(f"Mark done: {step.title}", limit=70)),
                          Text("Without running it: you did it yourself. Journaled."), confirm_label="Mark done"),
            lambda ok: self.command(MarkDone(step_id, rollback=True)) if ok else None,
        )

    def action_skip(self) -> None:
        session = self.session
        if self.refused_up_front("skip"):
            return
        selected = self._need_step()
        if session is None or selected is None:
            return
        plan_id, step_id = selected
        if not session.rollback_in_progress() or session.state.rollback.plan_id != plan_id:
            self.say_refused("no rollback of this plan in progress: start one first (s)")
            return
        step = session.rollback_step(step_id)
        self.app.push_screen(
            ReasonDialog(Text(plain(f"Skip: {step.title}", limit=70)), Text("Type why this step is skipped; journaled."),
                         placeholder="the reason for skipping", confirm_label="Skip", min_length=3),
            lambda reason: self.command(SkipStep(step_id, reason, rollback=True)) if reason else None,
        )

    def action_verify(self) -> None:
        session = self.session
        if session is None or self.refused_up_front("verify"):  # no rollback in progress, READ-ONLY, …
            return
        waiting = session.open_rollback_steps()
        if waiting:
            self.say_refused(f"{len(waiting)} step(s) not done or skipped yet: {', '.join(waiting)}")
            return
        plan = session.current_rollback_plan()
        self.log_line(f"── verifying: {', '.join(session.verification_items(plan))}")
        self.command(VerifyRollback())
