"""The line under the header when the release needs the operator's eyes: red when it needs
action now — the watch after the deployment recommends the rollback (R opens the console, plan
and provider chosen), or a notification was given up (N sends it again); yellow while a
notification waits to be retried. Hidden otherwise."""

from __future__ import annotations

from controlroom.widgets.crew_banner import CrewBanner


class AlarmBanner(CrewBanner):
    DEFAULT_CSS = """
    AlarmBanner { height: auto; max-height: 2; width: 1fr; display: none; padding: 0 1; text-style: bold; }
    AlarmBanner.-alarm { display: block; background: red; color: white; }
    AlarmBanner.-waiting { display: block; background: yellow; color: black; }
    """
    LEVELS = ("alarm", "waiting")

    def show_alarm(self, alarms: list[str], waiting: list[str] = ()) -> None:  # type: ignore[assignment]
        """Alarms (red) first, then what waits (yellow when nothing is red); one line each,
        plain text from data; nothing hides the banner."""
        lines = [*alarms, *waiting][:2]
        self.show_banner("\n".join(lines), "alarm" if alarms else "waiting")
