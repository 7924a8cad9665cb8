"""Checklist: the runbook's sections and items with status, evidence and age; the verdict
banner with its deciding reasons; re-run all / one; attest a manual item."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from controlroom.widgets.row_table import RowTable, cut
from controlroom.widgets.changes import set_cell, set_content
from controlroom.checks.run import STATUS_STYLES, VERDICT_STYLES
from controlroom.live.polling import format_age
from controlroom.screens.base import ControlScreen, WIDE_FROM
from controlroom.screens.filtering import Filtering, filter_bindings, filter_line_with_status, grouped_matches
from controlroom.screens.dialogs import ConfirmDialog, ReasonDialog
from controlroom.live.sources import plain
from controlroom.checks.verdict import percent
from controlroom.release.rules import Command
from controlroom.widgets.messages import Attest, RunCheckItem, RunChecks

if TYPE_CHECKING:
    from controlroom.release.engine import ReleaseEngine

STATUS_LABELS = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "error": "ERR", "pending": "WAIT", "skipped": "SKIP"}
TITLE_WIDTH = 30
LEAST_WIDTH = 16  # the title's and the evidence's, under 80 columns
REASONS_SHOWN = 3


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class ChecklistScreen(Filtering, ControlScreen):
    TITLE_TEXT = "Checklist"
    HELP = (
        "The pre-deployment checklist: every item with its status (PASS, WARN, FAIL, ERR, WAIT for an "
        "operator, SKIP), its evidence (the measured value) and its age. The banner shows the verdict — "
        "GO, NO-GO, DELAYED or PENDING — and the reasons that decided it. Manual items pass only when "
        "an operator attests them (a, confirmed, journaled with who and when); n jumps to the next item "
        "that waits for an attestation (WAIT), skipping section headings. The selected item's full "
        "evidence is shown under the table. / filters the items by id, title or status (enter keeps the "
        "filter, esc clears it)."
    )
    AUTO_FOCUS = "#checklist-table"
    BINDINGS = [
        Binding("r", "rerun_all", "re-run all", tooltip="Re-run every check", id="checklist.rerun_all"),
        Binding("space", "rerun_item", "re-run", key_display="space", tooltip="Re-run the selected check",
                id="checklist.rerun_item"),
        Binding("a", "attest", "attest", tooltip="Attest the selected manual item (confirmed, journaled)",
                id="checklist.attest"),
        Binding("A", "attest_failing", "not met", key_display="A", tooltip="Record the selected manual item as NOT "
                "met (asks why; journaled; the item fails)", id="checklist.attest_failing"),
        Binding("n", "next_waiting", "next", tooltip="Jump to the next item waiting for an attestation",
                id="checklist.next_waiting"),
        *filter_bindings("checklist", "item id, title or status", show=False),
    ]

    ENGINE_COMMANDS = {"attest": Command.ATTEST, "attest_failing": Command.ATTEST_FAILING}

    def compose_body(self) -> ComposeResult:
        yield Static(Text("verdict: running the checklist…", style="dim"), id="verdict-banner")
        table: DataTable[Any] = RowTable(id="checklist-table", cursor_type="row", zebra_stripes=False)
        yield from filter_line_with_status("item id, title or status")
        yield table
        yield Static("", id="check-detail")

    def on_mount(self) -> None:
        super().on_mount()
        self._ensure_rows()
        self._render_session()

    def _ensure_rows(self) -> None:
        table = self.query_one("#checklist-table", RowTable)
        if table.columns:
            return
        table.add_column(Text("stat"), width=4, key="status")
        table.add_column(Text("check"), width=TITLE_WIDTH, key="check")
        table.add_column(Text("evidence"), width=TITLE_WIDTH, key="evidence")
        table.add_column(Text("age"), width=4, key="age")
        self._flex_columns()
        for section in self.room.config.runbook.checklist.sections:
            table.add_row(Text(""), cut(plain(section.title, limit=200), "bold underline"), Text(""), Text(""),
                          key=f"section:{section.id}")
            for item in section.items:
                table.add_row(Text("…", style="dim"), cut(plain(item.title, limit=200)), Text(""), Text(""), key=item.id)
        if table.row_count > 1:
            table.move_cursor(row=1)

    def on_resize(self) -> None:
        self._flex_columns()

    def _flex_columns(self) -> None:
        """The title and the evidence share what the terminal has beyond 80 columns, evenly;
        from 120 columns the title takes two thirds, up to its longest (every title whole),
        and the evidence the rest."""
        table = self.query("#checklist-table")
        if not table:
            return
        sections = self.room.config.runbook.checklist.sections
        longest = max((len(plain(title, limit=200)) for section in sections
                       for title in (section.title, *(item.title for item in section.items))), default=TITLE_WIDTH)
        title_share = 2 if self.app.size.width >= WIDE_FROM else 1  # not the app's class: set by its own resize
        table.first(RowTable).flex(check=(title_share, LEAST_WIDTH, longest), evidence=(1, LEAST_WIDTH))

    # -- the filter ----------------------------------------------------------------------

    def filter_focus(self) -> RowTable:
        return self.query_one("#checklist-table", RowTable)

    def apply_filter(self) -> None:
        session = self.session
        results = session.results if session is not None else {}

        def text(item: Any) -> str:
            result = results.get(item.id)
            status = STATUS_LABELS.get(result.status, result.status) if result is not None else "not run"
            return f"{item.id} {item.title} {status}"

        shown, matched, total = grouped_matches(
            ((f"section:{section.id}", section.title, [(item.id, text(item)) for item in section.items])
             for section in self.room.config.runbook.checklist.sections), self.filter_needle)
        self.filter_focus().show_only(shown)
        self.show_matching(matched, total, "items")
        self._render_detail()

    # -- rendering ---------------------------------------------------------------------

    def show_session(self, session: ReleaseEngine) -> None:
        self._render_session()

    def on_screen_resume(self) -> None:
        super().on_screen_resume()
        self._render_session()

    def tick(self, now: float) -> None:
        self._render_ages()

    def _render_session(self) -> None:
        self._ensure_rows()
        session = self.session
        self._render_banner(session)
        if session is None:
            return
        table = self.query_one("#checklist-table", DataTable)
        running = session.checks_running
        for _, item in self.room.config.runbook.items():
            result = session.results.get(item.id)
            if result is None:
                status = Text("RUN" if running else "—", style="dim")
                evidence = Text("running…" if running else "not run yet", style="dim")
            else:
                status = Text(STATUS_LABELS.get(result.status, result.status.upper()), style=STATUS_STYLES.get(result.status, ""))
                first = result.evidence.strip().splitlines()[0] if result.evidence.strip() else ""
                evidence = cut(plain(first, limit=300))
            set_cell(table, item.id, "status", status)
            set_cell(table, item.id, "evidence", evidence)
        self._render_ages()
        if self.filter_needle:
            self.apply_filter()  # a status changed: it may now match, or not
        self._render_detail()

    def _render_ages(self) -> None:
        session = self.session
        if session is None or not self.query_one("#checklist-table", DataTable).columns:
            return
        table = self.query_one("#checklist-table", DataTable)
        now = datetime.now(UTC)
        for item_id, result in session.results.items():
            age = max(0.0, (now - result.started_at).total_seconds())
            set_cell(table, item_id, "age", Text(format_age(age), style="dim"))

    def _render_banner(self, session: Any) -> None:
        banner = self.query_one("#verdict-banner", Static)
        if session is None or session.verdict is None:
            running = session is not None and session.checks_running
            set_content(banner, Text("verdict: running the checklist…" if running or session is None else "verdict: not decided yet",
                               style="dim"))
            return
        verdict = session.verdict
        text = Text(no_wrap=False)
        text.append(f" {verdict.verdict} ", style=VERDICT_STYLES.get(verdict.verdict, "bold"))
        text.append(f"  health {percent(verdict.health_percent)} %")
        if session.checks_running:
            text.append("  re-running…", style="dim")
        reasons = list(verdict.reasons)
        for reason in reasons[:REASONS_SHOWN]:
            text.append("\n")
            text.append(clip(plain(reason, limit=400), max(20, (self.size.width or 80) - 4)))
        if len(reasons) > REASONS_SHOWN:
            text.append(f"  (+{len(reasons) - REASONS_SHOWN} more)", style="dim")
        set_content(banner, text)
        banner.set_classes(f"verdict-{verdict.verdict.lower()}")

    def _render_detail(self) -> None:
        detail = self.query_one("#check-detail", Static)
        item_id = self.selected_item()
        session = self.session
        if item_id is None or session is None:
            set_content(detail, "")
            return
        result = session.results.get(item_id)
        item = next(i for _, i in self.room.config.runbook.items() if i.id == item_id)
        # The selected item in full: its title and its evidence, wrapped (the table cuts both).
        text = Text()
        text.append(plain(item.title, limit=200), style="bold")
        text.append(f" ({item.id}): ", style="dim")
        if result is None:
            text.append("not run yet", style="dim")
        else:
            text.append(plain(result.evidence, limit=300))
            if result.status in ("pending", "skipped") and not result.attested and item.id in session.attestable():
                text.append("  — a to attest, n for the next one", style="bold cyan")
        set_content(detail, text)

    def selected_item(self) -> str | None:
        table = self.query_one("#checklist-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        if key is None or key.startswith("section:"):
            return None
        return key

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._render_detail()

    # -- commands ----------------------------------------------------------------------

    def action_rerun_all(self) -> None:
        self.command(RunChecks())

    def action_rerun_item(self) -> None:
        item_id = self.selected_item()
        if item_id is None:
            self.app.notify("Select a check first (↑↓)", severity="warning")
            return
        self.command(RunCheckItem(item_id))

    def waiting_items(self) -> list[str]:
        """Items that wait for an operator's attestation, in table order."""
        session = self.session
        if session is None:
            return []
        attested = session.attestations()
        attestable = set(session.attestable())
        return [item.id for _, item in self.room.config.runbook.items()
                if item.id in attestable and item.id not in attested]

    def action_next_waiting(self) -> None:
        """n: the cursor to the next item waiting for an attestation (after the cursor, wrapping
        around), skipping headings and everything else."""
        waiting = self.waiting_items()
        if not waiting:
            self.app.notify("No item waits for an attestation", timeout=3)
            return
        table = self.query_one("#checklist-table", RowTable)
        rows = [table.get_row_index(item_id) for item_id in waiting if table.is_shown(item_id)]
        if not rows:
            self.app.notify("No item shown waits for an attestation (esc clears the filter)", timeout=3)
            return
        after = [row for row in rows if row > table.cursor_row]
        table.move_cursor(row=(after or rows)[0])

    def action_attest(self) -> None:
        session = self.session
        if self.refused_up_front("attest"):
            return
        item_id = self.selected_item()
        if session is None or item_id is None:
            self.app.notify("Select a manual check first (↑↓, or n for the next one waiting)", severity="warning")
            return
        if item_id not in session.attestable():
            self.app.notify(f"{item_id} is probed, not attested; only manual items can be attested", severity="warning")
            return
        done_already = session.attestations().get(item_id)
        if done_already is not None:
            self.app.notify(f"{item_id} is already attested ({plain(done_already.describe(), limit=120)}); "
                            "nothing to do" + ("; n goes to the next one waiting" if self.waiting_items() else ""),
                            timeout=5)
            return
        item = next(i for _, i in self.room.config.runbook.items() if i.id == item_id)
        who = session.journal.operator.get("user", "unknown")
        body = Text()
        body.append(plain(getattr(item, "prompt", "") or item.title, limit=400))
        body.append(f"\n\nRecorded in the journal as attested by {who}, now.", style="dim")

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.command(Attest(item_id))

        self.app.push_screen(ConfirmDialog(Text(f"Attest: {clip(item.title, 60)}"), body, confirm_label="Attest"), done)

    def action_attest_failing(self) -> None:
        session = self.session
        if self.refused_up_front("attest_failing"):
            return
        item_id = self.selected_item()
        if session is None or item_id is None or item_id not in session.attestable():
            self.app.notify("Select a manual check first (↑↓, or n for the next one waiting)", severity="warning")
            return
        item = next(i for _, i in self.room.config.runbook.items() if i.id == item_id)
        body = Text()
        body.append(plain(getattr(item, "prompt", "") or item.title, limit=400))
        body.append("\n\nThis records that it does NOT hold: the item fails and its rule decides the verdict. "
                    "Why? (journaled with your name)", style="bold")
        self.app.push_screen(
            ReasonDialog(Text(f"Not met: {clip(item.title, 60)}"), body, placeholder="e.g. on-call unreachable",
                         confirm_label="Record as not met", min_length=3),
            lambda reason: self.command(Attest(item_id, reason)) if reason else None,
        )
