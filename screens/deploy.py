"""Deploy: the three phases with their steps, a countdown per phase and the whole-deploy
clock; run / mark done / skip steps, output streaming into the log pane.

Clocks are derived from recorded start times (controlroom.release.state) on every render; the
1 s tick only re-renders them."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from controlroom.widgets.row_table import RowTable, cut
from controlroom.widgets.changes import set_cell, set_content
from controlroom.config.models import Deployment
from controlroom.release.rules import Command
from controlroom.release.state import Clock, format_duration
from controlroom.screens.base import ControlScreen
from controlroom.screens.filtering import Filtering, filter_bindings, filter_line_with_status, grouped_matches
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog
from controlroom.live.sources import plain
from controlroom.release.steps import is_modifying
from controlroom.widgets.messages import (
    CommandRefused,
    DryRunStep,
    FinishDeploy,
    MarkDone,
    NextPhase,
    RunStep,
    SkipStep,
    StartDeploy,
    StepFinished,
    StepOutput,
)
from controlroom.widgets.step_log import LogKeys, StepLog, log_bindings

if TYPE_CHECKING:
    from controlroom.release.engine import ReleaseEngine

STEP_STYLES = {
    "todo": ("·", "dim"),
    "running": ("RUN", "bold cyan"),
    "unknown": ("????", "bold magenta"),  # an intent without an outcome: the operator checks
    "done": ("DONE", "bold green"),
    "failed": ("FAIL", "bold red"),
    "skipped": ("SKIP", "yellow"),
}
LEVEL_STYLES = {"ok": "bold green", "amber": "bold black on yellow", "red": "bold white on red"}
STEP_WIDTH = 52
LEAST_STEP_WIDTH = 24  # under 80 columns
MOST_STEP_WIDTH = 80  # wider, the time would stand too far from its step
TIME_WIDTH = 14
OUTCOME_WORDS = {"success": ("succeeded", "bold green"), "rolled_back": ("rolled back", "bold red")}
DEPLOY_PLACEHOLDER = "Step output appears here."


def humanise(outcome: str) -> str:
    """`rolled_back` → `rolled back`: journal words, written for the operator."""
    return OUTCOME_WORDS.get(outcome, (outcome.replace("_", " "), ""))[0]


def outcome_lines(title: str, step_state: Any, width: int) -> list[str]:
    """A finished step's journaled outcome for an empty log pane: what it was and why
    (`cancelled; the control room was closed`), wrapped to the pane."""
    if step_state is None or step_state.status not in ("done", "failed", "skipped"):
        return []
    label = STEP_STYLES.get(step_state.status, (step_state.status.upper(), ""))[0]
    why = "; ".join(part for part in (step_state.summary.strip(), step_state.reason.strip()) if part)
    lines = [plain(f"── {title}: {label} (journaled outcome)", limit=400)]
    if why:
        lines += ["   " + line for line in textwrap.wrap(plain(why, limit=1000), max(20, width - 4))[:4]]
    return lines


def needs_confirmation(step: Any) -> bool:
    """Modifying steps, notifications (they reach people) and manual steps (x records that
    the operator did it: said in so many words first) ask before x runs them; probes and
    read-only SQL or commands run at once."""
    return is_modifying(step) or step.action.kind in ("notify", "manual")


def clock_text(clock: Clock, *, done_label: str = "done in") -> Text:
    """`3:12 left` / `+1:30 over` (coloured by level) / `done in 4:10` / `5:00`."""
    style = LEVEL_STYLES[str(clock.level)]
    if not clock.running and clock.elapsed_s == 0:
        return Text(format_duration(clock.budget_s), style="dim")
    if not clock.running:
        return Text(f"{done_label} {format_duration(clock.elapsed_s)}", style=style if str(clock.level) != "ok" else "green")
    if clock.remaining_s >= 0:
        return Text(f"{format_duration(clock.remaining_s)} left", style=style)
    return Text(f"+{format_duration(-clock.remaining_s)} over", style=style)


class DeployScreen(Filtering, LogKeys, ControlScreen):
    TITLE_TEXT = "Deploy"
    HELP = (
        "The deployment's phases and steps. Each phase counts down against its minutes and the whole "
        "deployment against its target; an overrun turns amber, then red, and stays visible. "
        "s starts the deployment (asks the version; when the verdict is not GO it needs an override "
        "with a typed reason, journaled). x runs the selected step (on a phase heading: its first "
        "unfinished step); a modifying step shows exactly what it does and asks first, a read-only one "
        "(probe, read-only SQL, manual) runs at once; output streams into the log below, and the cursor "
        "moves on to the next unfinished step. t dry-runs a step; m marks it done; z skips it with a typed "
        "reason; n completes the phase and starts the next; f finishes the deployment. With the log empty "
        "(after reopening), the selected step's journaled outcome is shown there. A phase that ended with "
        "a failed step shows ✗. Modifying steps are refused in READ-ONLY mode (start with --write). Every "
        "action is journaled before it runs."
    )
    AUTO_FOCUS = "#deploy-steps"
    BINDINGS = [
        Binding("s", "start", "start", tooltip="Start the deployment (asks the version)", id="deploy.start"),
        Binding("x", "run_step", "run", tooltip="Run the selected step (on a heading: its first unfinished step)",
                id="deploy.run"),
        Binding("t", "dry_run", "dry-run", tooltip="Dry-run the selected step: describe it, change nothing",
                id="deploy.dry_run"),
        Binding("m", "mark_done", "done", tooltip="Mark the selected step done without running it", id="deploy.done"),
        Binding("z", "skip", "skip", tooltip="Skip the selected step with a typed reason", id="deploy.skip"),
        Binding("n", "next_phase", "next", tooltip="Next phase: complete this one, start the next", id="deploy.next"),
        Binding("f", "finish", "finish", tooltip="Finish the deployment", id="deploy.finish"),
        *filter_bindings("deploy", "step title, id or status", show=False),
        *log_bindings("deploy"),
    ]
    ENGINE_COMMANDS = {"start": Command.START, "run_step": Command.RUN_STEP, "mark_done": Command.MARK_DONE,
                       "skip": Command.SKIP, "next_phase": Command.NEXT_PHASE, "finish": Command.FINISH}
    _resume_cursor_placed = False

    def compose_body(self) -> ComposeResult:
        yield Static("", id="deploy-clocks")
        yield from filter_line_with_status("step title, id or status")
        yield RowTable(id="deploy-steps", cursor_type="row", show_header=False)  # 80×24: every row fits
        yield StepLog(DEPLOY_PLACEHOLDER, id="deploy-log")

    def on_mount(self) -> None:
        super().on_mount()
        self._ensure_rows()
        self.render_deploy()

    def _ensure_rows(self) -> None:
        table = self.query_one("#deploy-steps", RowTable)
        if table.columns:
            return
        table.add_column(Text("stat"), width=4, key="status")
        table.add_column(Text("phase / step"), width=STEP_WIDTH, key="step")
        table.add_column(Text("time"), width=TIME_WIDTH, key="time")
        table.flex(step=(1, LEAST_STEP_WIDTH, MOST_STEP_WIDTH))  # the titles take the width there is
        for number, phase in enumerate(self.deployment.phases, start=1):
            table.add_row(Text(""), cut(plain(f"{number}. {phase.title} ({phase.minutes:g} min)", limit=200), "bold"),
                          Text(""), key=f"phase:{phase.id}")
            for step in phase.steps:
                table.add_row(Text("·", style="dim"), cut("  " + plain(step.title, limit=200)), Text(""), key=step.id)
        if table.row_count > 1:
            table.move_cursor(row=1)
        self._show_selected_outcome()

    @property
    def deployment(self) -> Deployment:
        return self.room.config.runbook.deployment

    # -- rendering ---------------------------------------------------------------------

    def show_session(self, session: ReleaseEngine) -> None:
        self.render_deploy()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self.render_deploy()

    def tick(self, now: float) -> None:
        self.render_deploy()

    def render_deploy(self) -> None:
        self._ensure_rows()
        session = self.session
        header = self.query_one("#deploy-clocks", Static)
        table = self.query_one("#deploy-steps", DataTable)
        if session is None:
            set_content(header, Text("opening the session…", style="dim"))
            return
        state = session.state
        text = Text(no_wrap=True, overflow="ellipsis")
        if state.started_at is None:
            verdict = session.verdict_name
            text.append("No deployment yet. ", style="bold")
            text.append(f"Verdict {verdict}", style="bold green" if verdict == "GO" else "bold yellow")
            text.append(" — s to start" + (" (needs an override)" if verdict != "GO" else ""))
            text.append(f"\ntarget {format_duration(self.deployment.target_minutes * 60)}: "
                        + " + ".join(f"{p.minutes:g}" for p in self.deployment.phases) + " min", style="dim")
        else:
            whole = session.deploy_clock()
            text.append(plain(state.version, limit=24), style="bold")
            text.append("  deploy ")
            text.append(f"{format_duration(whole.elapsed_s)} / {format_duration(whole.budget_s)}",
                        style=LEVEL_STYLES[str(whole.level)])
            if state.ended_at is not None:
                text.append("  finished: ", style="bold")
                text.append(plain(humanise(state.outcome), limit=20),
                            style=OUTCOME_WORDS.get(state.outcome, ("", "bold"))[1])
            if state.override_reason:
                text.append("  OVERRIDE", style="bold white on red")
            current = session.current_phase()
            text.append("\n")
            if current is not None:
                phase_clock = session.phase_clock(current.id)
                text.append(f"phase {plain(current.title, limit=30)} ")
                text.append(f"{format_duration(phase_clock.elapsed_s)} / {format_duration(phase_clock.budget_s)}",
                            style=LEVEL_STYLES[str(phase_clock.level)])
                text.append("  ")
                text.append_text(clock_text(phase_clock))
            elif state.ended_at is None:
                text.append("no phase running", style="dim")
        set_content(header, text)

        current = session.current_phase()
        for phase in self.deployment.phases:
            phase_state = state.phases.get(phase.id)
            failures = [s.id for s in phase.steps if state.steps.get(s.id) and state.steps[s.id].status == "failed"]
            phase_clock = session.phase_clock(phase.id)
            when = clock_text(phase_clock)
            if current is not None and current.id == phase.id:
                marker = Text("▶", style="bold yellow" if failures else "bold")
            elif phase_state and phase_state.ended_at and failures:
                # Ended with a failed step (a rollback, or finished anyway): never a green "done".
                marker = Text("✗", style="bold red")
                when = Text(f"{len(failures)} failed", style="bold red")
            elif phase_state and phase_state.ended_at:
                marker = Text("✓", style="bold green")
            else:
                marker = Text("")
            set_cell(table, f"phase:{phase.id}", "status", marker)
            set_cell(table, f"phase:{phase.id}", "time", when)
            for step in phase.steps:
                step_state = state.steps.get(step.id)
                status = step_state.status if step_state else "todo"
                if session.running_step == step.id:
                    status = "running"
                label, style = STEP_STYLES.get(status, (status.upper(), ""))
                set_cell(table, step.id, "status", Text(label, style=style))
                when = Text("")
                if step_state and step_state.at and status in ("done", "failed", "skipped") and state.started_at:
                    when = Text(f"at +{format_duration((step_state.at - state.started_at).total_seconds())}", style="dim")
                set_cell(table, step.id, "time", when)
        if self.filter_needle:
            self.apply_filter()  # a status changed: a step may now match, or not
        if session.resumed and state.in_progress and not self._resume_cursor_placed:
            self._resume_cursor_placed = True  # once: from then on the operator moves it
            self.select_next_open_step()
        self._show_selected_outcome()

    def log_line(self, line: str) -> None:
        self.query_one(StepLog).add_line(line)

    def on_step_output(self, event: StepOutput) -> None:
        self.log_line(event.line)

    def on_step_finished(self, event: StepFinished) -> None:
        self.step_finished()

    def on_command_refused(self, event: CommandRefused) -> None:
        super().on_command_refused(event)
        self.render_deploy()

    def _show_selected_outcome(self) -> None:
        """While no step has written to the log, it shows the selected step's journaled
        outcome (a FAIL says why), else the placeholder."""
        log = self.query_one(StepLog)
        step_id, session = self.selected_step(), self.session
        lines: list[str] = []
        if step_id is not None and session is not None:
            lines = outcome_lines(session.step(step_id).title, session.state.steps.get(step_id), log.text_width)
        log.show_outcome(lines)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected_outcome()

    # -- selection ---------------------------------------------------------------------

    def selected_step(self) -> str | None:
        table = self.query_one("#deploy-steps", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return None if key is None or key.startswith("phase:") else key

    def _need_step(self) -> str | None:
        step_id = self.selected_step()
        if step_id is None:
            self.app.notify("Select a step first (↑↓)", severity="warning")
        return step_id

    def selected_phase(self) -> str | None:
        """The phase id of the cursor row when it is a phase heading."""
        table = self.query_one("#deploy-steps", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value or ""
        return key.removeprefix("phase:") if key.startswith("phase:") else None

    def filter_focus(self) -> RowTable:
        return self.query_one("#deploy-steps", RowTable)

    def apply_filter(self) -> None:
        session = self.session
        steps = session.state.steps if session is not None else {}

        def text(step: Any) -> str:
            status = steps[step.id].status if step.id in steps else "todo"
            return f"{step.id} {step.title} {status} {STEP_STYLES.get(status, ('', ''))[0]}"

        shown, matched, total = grouped_matches(
            ((f"phase:{phase.id}", phase.title, [(step.id, text(step)) for step in phase.steps])
             for phase in self.deployment.phases), self.filter_needle)
        self.filter_focus().show_only(shown)
        self.show_matching(matched, total, "steps")

    def _select_row(self, key: str) -> None:
        table = self.query_one("#deploy-steps", RowTable)
        if not table.is_shown(key):
            return  # filtered out: the operator's filter stays; the cursor does not move
        table.move_cursor(row=table.get_row_index(key))

    def select_next_open_step(self) -> None:
        """Move the cursor to the current phase's first step not yet done or skipped (a failed
        step counts as open, so it stays selected); when there is none, to the phase's heading."""
        session = self.session
        if session is None:
            return
        current = session.current_phase()
        if current is None:
            return
        waiting = session.open_steps(current.id)
        self._select_row(waiting[0] if waiting else f"phase:{current.id}")
        if not waiting and session.state.in_progress:
            last = current.id == self.deployment.phases[-1].id
            self.log_line(f"every step of {plain(current.title, limit=40)} is done: "
                          + ("f finishes the deployment" if last else "n starts the next phase"))

    def step_finished(self) -> None:
        """A step ran (or was marked done / skipped): re-render, cursor to the next one."""
        self.render_deploy()
        self.select_next_open_step()

    # -- commands ----------------------------------------------------------------------

    def action_start(self) -> None:
        session = self.session
        if session is None:
            return
        refusal = session.start_deploy_refusal()
        if refusal:  # before asking anything: a finished deployment cannot start again here
            self.app.notify(refusal, severity="error" if session.state.ended_at else "warning", timeout=8)
            return

        def with_version(version: str | None) -> None:
            if not version:
                return
            verdict = session.verdict_name
            if verdict == "GO":
                body = Text(f"Phase 1 ({self.deployment.phases[0].title}) starts now and the clocks run "
                            f"against {self.deployment.target_minutes:g} minutes.")
                self.app.push_screen(
                    ConfirmDialog(Text(f"Start the deployment of {version}?"), body, confirm_label="Start"),
                    lambda ok: self.command(StartDeploy(version)) if ok else None,
                )
                return
            reasons = session.verdict.reasons if session.verdict else ["the checklist has not run"]
            body = Text()
            body.append(f"The verdict is {verdict}, not GO:\n", style="bold red")
            for reason in reasons[:6]:
                body.append("• " + plain(reason, limit=300) + "\n")
            body.append("\nStarting anyway is an override. Type why; it is journaled with your name.", style="bold")
            self.app.push_screen(
                ReasonDialog(Text(f"Override: deploy {version} while {verdict}"), body,
                             placeholder="the reason for overriding the verdict", confirm_label="Override and start",
                             min_length=5),
                lambda reason: self.command(StartDeploy(version, reason)) if reason else None,
            )

        self.app.push_screen(
            ReasonDialog(Text("Version to deploy"), Text("The tag or version the deploy command receives."),
                         placeholder="e.g. v2.15.0", confirm_label="Next", min_length=1),
            with_version,
        )

    def action_run_step(self) -> None:
        session = self.session
        if session is None or self.refused_up_front("run_step"):
            return
        step_id = self.selected_step()
        phase_id = self.selected_phase()
        if step_id is None and phase_id is not None:
            # On a phase heading: its first unfinished step.
            waiting = session.open_steps(phase_id)
            if not waiting:
                phase = next(p for p in self.deployment.phases if p.id == phase_id)
                self.app.notify(f"Every step of {phase.title} is done or skipped", severity="warning")
                return
            step_id = waiting[0]
            self._select_row(step_id)
        if step_id is None:
            self.app.notify("Select a step first (↑↓)", severity="warning")
            return
        refusal = session.refusal(step_id)
        if refusal:
            self.app.notify(refusal, severity="error", timeout=6)
            return
        step = session.step(step_id)
        if not needs_confirmation(step):
            # Read-only (probe, read-only SQL or command) or manual: nothing to confirm.
            self.log_line(f"── {step.title}" + (f": {plain(step.action.prompt, limit=200)}"
                                                 if step.action.kind == "manual" and step.action.prompt else ""))
            self.command(RunStep(step_id))
            return
        body = Text()
        if step.action.kind == "manual":
            body.append(plain(step.action.prompt or step.title, limit=400))
            title, label = f"Confirm: {step.title}", "Done"
        else:
            body.append(session.describe(step_id))
            if session.modifying(step_id):
                body.append("\n\nThis changes the environment.", style="bold red")
            title, label = f"Run: {step.title}", "Run"

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.log_line(f"── {step.title}")
                self.command(RunStep(step_id))

        self.app.push_screen(ConfirmDialog(Text(plain(title, limit=70)), body, confirm_label=label), confirmed)

    def action_dry_run(self) -> None:
        step_id = self._need_step()
        if step_id is not None:
            self.command(DryRunStep(step_id))

    def action_mark_done(self) -> None:
        session = self.session
        if self.refused_up_front("mark_done"):
            return
        step_id = self._need_step()
        if session is None or step_id is None:
            return
        step = session.step(step_id)
        self.app.push_screen(
            ConfirmDialog(Text(plain(f"Mark done: {step.title}", limit=70)),
                          Text("Without running it: you did it yourself. Journaled."), confirm_label="Mark done"),
            lambda ok: self.command(MarkDone(step_id)) if ok else None,
        )

    def action_skip(self) -> None:
        session = self.session
        if self.refused_up_front("skip"):
            return
        step_id = self._need_step()
        if session is None or step_id is None:
            return
        step = session.step(step_id)
        self.app.push_screen(
            ReasonDialog(Text(plain(f"Skip: {step.title}", limit=70)), Text("Type why this step is skipped; journaled."),
                         placeholder="the reason for skipping", confirm_label="Skip", min_length=3),
            lambda reason: self.command(SkipStep(step_id, reason)) if reason else None,
        )

    def action_next_phase(self) -> None:
        self.command(NextPhase())

    def action_finish(self) -> None:
        session = self.session
        if session is None:
            return
        outcome = session.finish_outcome()  # the engine says how it would end, and whether it may
        refusal = session.command_refusal(Command.FINISH, outcome=outcome)
        if refusal:
            self.app.notify(refusal, severity="error", timeout=8)
            return
        situation = session.situation()
        body = Text("Completes the current phase and records the deployment as ")
        if outcome == "success":
            body.append("a success.")
        elif outcome == "aborted":
            body.append("ABORTED", style="bold yellow")
            body.append(f": {'; '.join(situation.unfinished_work())}. A success needs every phase complete.")
        else:
            body.append("FAILED", style="bold red")
            failed = situation.failed_steps()
            body.append(f" (step {', '.join(failed)} failed)." if failed else ".")
            plan = session.current_rollback_plan() if situation.rollback_in_progress else None
            if plan is not None:
                body.append(f"\n\nThis ABANDONS the {plain(plan.title, limit=40)} in progress: it is recorded as not "
                            "verified and the incident stays open. To end it rolled back instead, verify it (R, v).",
                            style="bold")
            else:
                body.append(" To undo it instead, roll back (R).")
        self.app.push_screen(
            ConfirmDialog(Text(f"Finish the deployment of {plain(session.state.version, limit=30)}?"), body,
                          confirm_label="Finish" if outcome == "success" else f"Finish as {outcome}"),
            lambda ok: self.command(FinishDeploy(outcome)) if ok else None,
        )
