"""The header line every screen shows: environment (production unmistakable), READ-ONLY or
WRITE, the verdict and the deploy clock, who drives a shared release, and where you are."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from controlroom.live.sources import plain

VERDICT_STYLES = {
    "GO": "bold black on green",
    "NO-GO": "bold white on red",
    "DELAYED": "bold black on yellow",
    "PENDING": "bold black on cyan",
}
DEPLOY_LEVEL_STYLES = {"ok": "bold", "amber": "bold black on yellow", "red": "bold white on red"}
CREW_STYLES = {
    "driving": "bold black on green",
    "watching": "bold white on magenta",
    "nobody": "bold black on yellow",
    "offline": "bold white on red",
}


# What goes first when the line does not fit, one after the other: how many watch a shared
# release, the pending notification (the alarm banner shows it too), the environment's name
# (production keeps its red badge), the stale count, the driver, the mode in full, the view's
# name. The verdict and the deploy clock always stay.
DEGRADE = ("watchers", "outbox", "environment", "stale", "crew", "mode", "where")


class StatusBar(Widget):
    DEFAULT_CSS = """
    StatusBar { height: 1; width: 1fr; background: $panel; }
    """

    environment: reactive[str] = reactive("")
    production: reactive[bool] = reactive(False)
    write: reactive[bool] = reactive(False)
    verdict: reactive[str | None] = reactive(None)  # set by the app from the session
    deploy_clock: reactive[str | None] = reactive(None)  # "3:12/15:00", set by the app from the session
    deploy_level: reactive[str] = reactive("ok")  # ok | amber | red (deployment.Level)
    where: reactive[str] = reactive("")
    stale: reactive[int] = reactive(0)  # how many sources are stale
    # The shared release's crew, set by the app: (text, level) with level one of CREW_STYLES
    # ("driving", "watching", "nobody", "offline"); None with a file journal.
    crew: reactive[tuple[str, str] | None] = reactive(None)
    watch: reactive[str | None] = reactive(None)  # "watch 17:30 left", after a successful finish
    outbox: reactive[str | None] = reactive(None)  # "PagerDuty trigger pending, retry in 40 s"

    def render(self) -> Text:
        """The whole line when it fits; else the less important parts go first, in
        DEGRADE's order, so that the mode, the verdict and the deploy clock stay."""
        width = self.size.width
        text = self._line(set())
        dropped: set[str] = set()
        for part in DEGRADE:
            if not width or text.cell_len <= width:
                break
            dropped.add(part)
            text = self._line(dropped)
        return text

    def _line(self, dropped: set[str]) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.production:
            text.append(" PRODUCTION ", style="bold white on red")
            if "environment" not in dropped:
                text.append(" ")
                text.append(plain(self.environment, limit=24), style="bold red")
        else:
            name = plain(self.environment, limit=12 if "environment" in dropped else 30)
            text.append(f" {name} ", style="bold black on bright_blue")
        text.append(" ")
        if self.write:
            text.append(" WRITE " if "mode" not in dropped else " W ", style="bold black on yellow")
        else:
            text.append(" READ-ONLY " if "mode" not in dropped else " RO ", style="bold black on grey70")
        text.append(" ")
        if self.crew is not None and "crew" not in dropped:  # who drives a shared release: right after the mode
            label, level = self.crew
            label = label if "watchers" not in dropped else label.split(" · ")[0]
            text.append(f" {plain(label, limit=40)} ", style=CREW_STYLES.get(level, "bold"))
            text.append(" ")
        verdict = self.verdict
        text.append(f" {verdict or 'verdict —'} ", style=VERDICT_STYLES.get(verdict or "", "dim"))
        text.append(" ")
        clock_style = DEPLOY_LEVEL_STYLES.get(self.deploy_level, "bold") if self.deploy_clock else "dim"
        if self.watch:  # after a successful finish, the watch's countdown is the clock that matters
            text.append(self.watch, style="bold cyan")
        else:
            text.append(f"deploy {self.deploy_clock or '—'}", style=clock_style)
        if self.outbox and "outbox" not in dropped:
            text.append(f"  {plain(self.outbox, limit=80)}", style="bold yellow")
        if self.stale and "stale" not in dropped:
            text.append(f"  {self.stale} stale", style="bold yellow")
        if "where" not in dropped:
            text.append(f"  {self.where}", style="bold")
        return text
