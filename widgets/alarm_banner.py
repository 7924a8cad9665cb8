"""The red line under the header when the release needs action now: the watch after the
deployment recommends the rollback (R opens the console, plan and provider chosen), or a
notification was given up (N sends it again). Hidden otherwise."""

from __future__ import annotations

from controlroom.widgets.crew_banner import CrewBanner


class AlarmBanner(CrewBanner):
    DEFAULT_CSS = """
    AlarmBanner { height: auto; max-height: 2; width: 1fr; display: none; padding: 0 1; text-style: bold; }
    AlarmBanner.-alarm { display: block; background: red; color: white; }
    """
    LEVELS = ("alarm",)

    def show_alarm(self, lines: list[str]) -> None:
        """One line per alarm (plain text from data); none hides the banner."""
        self.show_banner("\n".join(lines), "alarm")
