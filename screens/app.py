"""The control room's Textual app: modes per main view, pollers running in async workers,
snapshots delivered by messages. Screens and widgets render; only this module starts I/O
(through `controlroom.sources` and `controlroom.polling`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from controlroom.polling import Poller, PollState
from controlroom.runbook.loader import LoadedConfig
from controlroom.screens.base import ControlScreen
from controlroom.screens.breakers import BreakersScreen
from controlroom.screens.help import HelpScreen
from controlroom.screens.kpis import KpisScreen
from controlroom.screens.pos_health import PosHealthScreen
from controlroom.sources import Feeds
from controlroom.widgets.messages import Polled
from controlroom.widgets.status_bar import StatusBar

# Main views: mode name -> (key, title, screen). `checklist` and `deploy` join here when
# the probes / verdict engine lands; the header already has their slots.
VIEWS: dict[str, tuple[str, str, Callable[[], Screen[Any]]]] = {
    "kpis": ("k", "KPIs", KpisScreen),
    "breakers": ("b", "Breakers", BreakersScreen),
    "pos": ("p", "POS", PosHealthScreen),
}

BREAKER_POLL_S = 5.0
HEALTH_POLL_S = 10.0


class ControlRoomApp(App[None]):
    TITLE = "controlroom"
    CSS_PATH = "../styles/app.tcss"
    MODES = {name: screen for name, (_, _, screen) in VIEWS.items()}
    DEFAULT_MODE = "kpis"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        *(Binding(key, f"switch_mode('{name}')", title, id=f"view.{name}") for name, (key, title, _) in VIEWS.items()),
        Binding("r", "refresh_all", "Refresh", show=False, id="app.refresh"),
        Binding("question_mark", "help", "Help", key_display="?", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.quit_ctrl_c"),
        Binding("ctrl+p", "command_palette", "Commands", show=False, id="app.palette"),
    ]

    def __init__(
        self,
        config: LoadedConfig,
        *,
        write: bool = False,
        feeds: Feeds | None = None,
        clock: Callable[[], float] = time.monotonic,
        poll_scale: float = 1.0,
        start_polling: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.write = write or config.environment.write_by_default
        self.clock = clock
        self.feeds = feeds
        self.poll_scale = poll_scale  # tests poll faster
        self.start_polling = start_polling
        self.poll_states: dict[str, PollState[Any]] = {}
        self.pollers: dict[str, Poller[Any]] = {}
        self.first_frame_at: float | None = None

    # -- header ------------------------------------------------------------------------

    def configure_status(self, bar: StatusBar, where: str) -> None:
        env = self.config.environment
        bar.environment = env.name
        bar.production = env.production
        bar.write = self.write
        bar.where = where
        bar.stale = self._stale_count()

    def _stale_count(self) -> int:
        now = self.clock()
        return sum(1 for state in self.poll_states.values() if state.stale(now) and state.polls)

    # -- lifecycle ---------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.config.environment.production:
            self.add_class("-production")
        if self.start_polling:
            if self.feeds is None:
                self.feeds = Feeds(self.config)
            self._start_pollers(self.feeds)
        self.set_interval(1.0, self._tick)
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        self.first_frame_at = time.perf_counter()

    async def on_unmount(self) -> None:
        for worker in list(self.workers):
            worker.cancel()
        if self.feeds is not None:
            await self.feeds.close()

    def _start_pollers(self, feeds: Feeds) -> None:
        scale = self.poll_scale
        redact = feeds.redact
        for kpi in self.config.runbook.kpis:
            source = feeds.kpis.get(kpi.id)
            if source is None:
                continue
            self.pollers[f"kpi:{kpi.id}"] = Poller(
                f"kpi:{kpi.id}", source.fetch, interval_s=kpi.poll_s * scale, timeout_s=kpi.timeout_s,
                clock=self.clock, redact=redact,
            )
        if feeds.breakers is not None:
            self.pollers["breakers"] = Poller("breakers", feeds.breakers.fetch, interval_s=BREAKER_POLL_S * scale,
                                              timeout_s=feeds.breakers.timeout_s, clock=self.clock, redact=redact)
        if feeds.health is not None:
            self.pollers["health"] = Poller("health", feeds.health.fetch, interval_s=HEALTH_POLL_S * scale,
                                            timeout_s=feeds.health.timeout_s, clock=self.clock, redact=redact)
        for name, poller in self.pollers.items():
            self._run_poller(name, poller)

    @work(group="pollers", exit_on_error=False)
    async def _run_poller(self, name: str, poller: Poller[Any]) -> None:
        await poller.run(lambda state: self.post_message(Polled(name, state)))

    # -- data in -----------------------------------------------------------------------

    def on_polled(self, message: Polled) -> None:
        self.poll_states[message.source] = message.state
        screen = self.screen
        if isinstance(screen, ControlScreen):
            screen.show_state(message.source, message.state)

    def _tick(self) -> None:
        screen = self.screen
        if isinstance(screen, ControlScreen):
            screen.tick(self.clock())
            bars = screen.query(StatusBar)
            if bars:
                bars.first().stale = self._stale_count()

    # -- actions -----------------------------------------------------------------------

    def action_refresh_all(self) -> None:
        for poller in self.pollers.values():
            poller.wake()
        self.notify("Refreshing every source", timeout=2)

    def key_list(self) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        screen = self.screen if isinstance(self.screen, ControlScreen) else None
        seen: set[str] = set()
        for binding in [*self.BINDINGS, *(screen.BINDINGS if screen else [])]:
            assert isinstance(binding, Binding)
            if binding.key in seen or not binding.id or binding.id == "app.quit_ctrl_c":
                continue
            seen.add(binding.key)
            display = binding.key_display or {"slash": "/", "escape": "esc"}.get(binding.key, binding.key)
            keys.append((display, binding.description or binding.action))
        keys = [(key, "Refresh every source now" if key == "r" else desc) for key, desc in keys]
        keys += [("ctrl+c", "Quit"), ("ctrl+p", "Command palette: every action by name"),
                 ("↑↓ pgup pgdn", "Move in tables and lists"), ("tab", "Next field")]
        return keys

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        screen = self.screen if isinstance(self.screen, ControlScreen) else None
        title = f"Help — {screen.TITLE_TEXT}" if screen else "Help"
        self.push_screen(HelpScreen(title, screen.HELP if screen else "", self.key_list()))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for name, (key, title, _) in VIEWS.items():
            yield SystemCommand(f"Show {title}", f"Switch to the {title} screen (key {key})",
                                lambda name=name: self.switch_mode(name))
        yield SystemCommand("Refresh all sources", "Poll every source now (key r)", self.action_refresh_all)
        yield SystemCommand("Help", "Every key and what this screen does (key ?)", self.action_help)
        if isinstance(screen, BreakersScreen):
            yield SystemCommand("Filter breakers", "Filter by provider, location or state (key /)", screen.action_filter)
            yield SystemCommand("Sort breakers", "Cycle the sort column (key s)", screen.action_cycle_sort)
        yield SystemCommand("Quit", "Quit the control room (key q)", self.exit)


def make_app(config: LoadedConfig, **kwargs: Any) -> ControlRoomApp:
    """The one app factory: the CLI, the demo and the tests build the app here."""
    return ControlRoomApp(config, **kwargs)
