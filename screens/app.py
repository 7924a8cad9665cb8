"""The control room's Textual app: modes per main view, pollers running in async workers,
snapshots delivered by messages. Screens and widgets render; only this module starts I/O
(through `controlroom.live.sources` and `controlroom.live.polling`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.text import Text

from textual import constants, events, work
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.driver import Driver
from textual.keys import format_key
from textual.binding import Binding
from textual.message import Message
from textual.message_pump import MessagePump
from textual.notifications import Notification
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from controlroom.infra.collector import Collector
from controlroom.infra.identity import operator_label
from controlroom.release.state import format_duration
from controlroom.release.journal import Holder
from controlroom.live.polling import Poller, PollState
from controlroom.live.history import HOUR_S, KpiHistory, remember_reading
from controlroom.config.loader import LoadedConfig
from controlroom.config.settings import Settings
from controlroom.release.alerts import Alerts
from controlroom.screens.base import NARROW_BELOW, TALL_FROM, WIDE_FROM, ControlScreen
from controlroom.screens.breakers import BreakersScreen
from controlroom.screens.checklist import ChecklistScreen
from controlroom.screens.command_line import CommandLineScreen
from controlroom.screens.deploy import DeployScreen
from controlroom.screens.dialogs import ConfirmDialog, TypedConfirmDialog
from controlroom.screens.help import HelpScreen
from controlroom.screens.kpis import KpisScreen
from controlroom.screens.pos_health import PosHealthScreen
from controlroom.screens.rollback import RollbackScreen
from controlroom.screens.terminal import TerminalDriver
from controlroom.infra import logs
from controlroom.infra.logs import logger
from controlroom.release.command_line import Names, Parsed
from controlroom.release.engine import ReleaseEngine, SessionError, find_resumable
from controlroom.live.sources import Feeds, plain
from controlroom.release.steps import StepRefused
from controlroom.widgets.messages import (
    Adopt,
    Attest,
    CommandRefused,
    DryRunDone,
    DryRunStep,
    EngineCommand,
    FindProviders,
    FinishDeploy,
    MarkDone,
    NextPhase,
    Polled,
    ProvidersFound,
    ReleaseChanged,
    RollbackStarted,
    RunCheckItem,
    RunChecks,
    RunStep,
    SkipStep,
    StartDeploy,
    StartRollback,
    StepFinished,
    StepOutput,
    VerifyRollback,
)
from controlroom.widgets.messages import KpiHistoryLoaded, LoadKpiHistory
from controlroom.widgets.alarm_banner import AlarmBanner
from controlroom.widgets.crew_banner import CrewBanner
from controlroom.widgets.key_bar import as_mapped
from controlroom.widgets.message_line import MessageLine, Notice
from controlroom.widgets.status_bar import StatusBar

# Main views: mode name -> (key, title, screen). The first is where the app opens.
VIEWS: dict[str, tuple[str, str, Callable[[], Screen[Any]]]] = {
    "checklist": ("c", "Checklist", ChecklistScreen),
    "deploy": ("d", "Deploy", DeployScreen),
    "kpis": ("k", "KPIs", KpisScreen),
    "breakers": ("b", "Breakers", BreakersScreen),
    "pos": ("p", "POS", PosHealthScreen),
    "rollback": ("R", "Rollback", RollbackScreen),
}

ARRIVED_ON = "_controlroom_arrived_on"  # the screen on top when a key arrived (rule 6)
# Bindings that are not commands of their own in the palette.
PALETTE_LEAVES_OUT = frozenset({"app.palette", "app.quit_ctrl_c"})
# Views shown only when the runbook defines them ([views.NAME]): mode -> view name.
OPTIONAL_VIEWS = {"breakers": "breakers", "pos": "health"}
FoundWidget = TypeVar("FoundWidget", bound=Widget)
STARTUP_CHECKS_FIRST_S = 3.0  # the views and the pollers wait for the start-up checks this long at most


def _no_delay(delay: float = 0.05) -> None:
    """App.delay_update, for the span of a switch: the switch's own batch masks it instead."""


class ControlRoomApp(App[None]):
    TITLE = "controlroom"
    CSS_PATH = "../styles/app.tcss"
    MODES = {name: screen for name, (_, _, screen) in VIEWS.items()}
    DEFAULT_MODE = "checklist"
    ENABLE_COMMAND_PALETTE = True
    # The key bar (widgets/key_bar.py) shows the screen's keys, then the view keys below as one
    # group (keys only, in this order), then help and quit; the help screen lists them all.
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?", tooltip="This help: every key, what the screen does",
                id="app.help"),
        *(Binding(key, f"switch_mode('{name}')", title, tooltip=f"{title} screen", id=f"view.{name}")
          for name, (key, title, _) in VIEWS.items()),
        Binding("r", "refresh_all", "Refresh", show=False, id="app.refresh"),
        Binding("ctrl+r", "report", "Report", show=False, tooltip="Write the post-deployment report next to the journal, "
                "and show it", id="app.report"),
        Binding("T", "take_over", "Take over", show=False, tooltip="Take over the shared release whose driver's "
                "control room is gone, or continue offline while the shared journal is unreachable (typed "
                "confirmation, journaled)", id="app.take_over"),
        Binding("e", "page_next_level", "Page next level", show=False, tooltip="Page the next escalation level now "
                "(its PagerDuty service or Slack mention; typed confirmation, journaled)", id="app.page"),
        Binding("N", "retry_notifications", "Retry notifications", show=False, tooltip="Send the given-up "
                "notifications again (the red banner names them)", id="app.retry_notifications"),
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.quit_ctrl_c"),
        Binding("ctrl+p", "command_palette", "Commands", show=False, id="app.palette"),
        Binding("colon", "command_line", "Command line", key_display=":", show=False, tooltip="Command line: "
                ":rollback, :attest ITEM-ID, :skip STEP-ID REASON, :q … (Tab completes; the same commands as "
                "the keys)", id="app.command_line"),
        Binding("escape", "back", "Back", key_display="esc", show=False, tooltip="Back to the view shown before "
                "(after closing a dialog, filter or command line first)", id="app.back"),
        Binding("exclamation_mark", "shell", "Shell", key_display="!", show=False, tooltip="Shell: $SHELL "
                "without the secrets, CONTROLROOM_JOURNAL set; exit comes back here", id="app.shell"),
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
        now: Callable[[], datetime] | None = None,
        journal_dir: Path | None = None,
        check_on_start: bool = True,
        offer_resume: bool = True,
        operator: dict[str, str] | None = None,
        settings: Settings = Settings(),
        keymap: dict[str, str] | None = None,
        shell: bool = True,
    ) -> None:
        super().__init__()
        # `!` may suspend to a shell: never in a browser session of `controlroom serve`.
        self.shell_allowed = shell
        self._view_history: list[str] = []  # the views shown before this one, for esc (back)
        self._going_back = False
        # Personal settings (controlroom.config.settings), checked before the app is made.
        self.settings = settings
        self._keymap = dict(keymap or {})
        if settings.theme:
            self.theme = settings.theme
        self._alerts: Alerts | None = None  # what the bell last answered to
        self.config = config
        self.write = write or config.environment.write_by_default
        self.clock = clock
        self.collector = Collector()  # full garbage collections wait for a pause in the typing
        self.feeds = feeds
        self.poll_scale = poll_scale  # tests poll faster
        self.start_polling = start_polling
        self.poll_states: dict[str, PollState[Any]] = {}
        self.pollers: dict[str, Poller[Any]] = {}
        self.kpi_history: dict[str, KpiHistory] = {}  # per KPI id: the last hour, for the detail view
        self.first_frame_at: float | None = None
        self._widgets_found: weakref.WeakKeyDictionary[Screen[Any], dict[type, list[Any]]] = weakref.WeakKeyDictionary()
        self._startup_checks_done = asyncio.Event()  # set when the checks run at start have landed (or none run)
        # The release session (checklist, verdict, deployment, journal); opened on mount.
        self.now = now  # wall clock for the journal and the deploy clocks (None: real time)
        self.journal_dir = journal_dir
        self.check_on_start = check_on_start
        self.offer_resume = offer_resume
        self.operator = operator  # who is at the keyboard (None: this process's user and host)
        self.session: ReleaseEngine | None = None  # the release engine, once its journal is open
        self._origins: dict[Worker[Any], MessagePump] = {}  # the screen each command's answers go to
        self.log_path: Path | None = None
        defined = config.runbook.defined_views()
        # A view the runbook does not define is not shown: no mode, no key, no palette entry.
        self.hidden_modes = frozenset(mode for mode, view in OPTIONAL_VIEWS.items() if view not in defined)
        for mode in self.hidden_modes:
            self._modes.pop(mode, None)

    def _breakers_shown(self) -> bool:
        return isinstance(self.shown_screen(), BreakersScreen)

    def switch_mode(self, mode: str) -> Any:
        """Textual's switch, without its 50 ms `delay_update()`: the switch is one batch, so the
        next frame is the new view (an operator switches views dozens of times in a rollback;
        benchmarks/key_frames.py measures it)."""
        previous = self.current_mode
        if previous != mode and not self._going_back:
            self._view_history = [*self._view_history, previous][-50:]
        with self.batch_update():
            self.delay_update = _no_delay  # type: ignore[method-assign]
            try:
                mounted = super().switch_mode(mode)
            finally:
                del self.delay_update
        for line in self._found(self.screen, MessageLine):
            line.show_message(self.message)  # what was said on the view before, still shown
        poller = self.pollers.get("breakers")
        if mode == "breakers" and poller is not None:
            poller.wake()  # the full list now, not at the next interval
        return mounted

    # -- the message line ------------------------------------------------------------------

    message: Notice | None = None  # what every message line shows now (widgets/message_line.py)
    _message_timer: Timer | None = None

    def notify(self, message: str, *, title: str = "", severity: Any = "information", timeout: float | None = None,
               markup: bool = False) -> None:
        """Transient messages go to the message line above the key bar, never to a toast over
        the step output: the newest replaces the one before, an error stays until the next
        message or a key, the others are cleared after `timeout`. They carry data (versions,
        reasons, other operators' host labels): shown as text, never parsed as markup,
        whatever `markup` says. Thread-safe, as Textual's notify."""
        if self._thread_id != threading.get_ident():
            self.call_from_thread(self.notify, message, title=title, severity=severity, timeout=timeout)
            return
        timeout = self.NOTIFICATION_TIMEOUT if timeout is None else timeout
        # Kept in Textual's collection too (what was said, for tests and the palette's
        # history), but _refresh_notifications below never shows it as a toast.
        self._notifications.add(Notification(str(message), title, severity, timeout, markup=False))
        self._show_message(Notice(str(message), str(severity), title), None if severity == "error" else timeout)

    def _refresh_notifications(self) -> None:
        """Textual's toasts: never shown (the message line says it instead)."""

    def _show_message(self, notice: Notice | None, timeout: float | None = None) -> None:
        if self._message_timer is not None:
            self._message_timer.stop()
            self._message_timer = None
        self.message = notice
        if notice is not None and timeout is not None:
            self._message_timer = self.set_timer(max(timeout, 0.5), lambda: self._show_message(None))
        for screen in self.screen_stack:  # the one on show and any dialog over it
            for line in self._found(screen, MessageLine):
                line.show_message(notice)

    def bell(self) -> None:
        """Every ring goes through here: `bell = false` in the personal settings silences it."""
        if self.settings.bell:
            super().bell()

    def _ring_on_alerts(self) -> None:
        """Ring when the engine says something went wrong since the last look
        (controlroom.release.alerts): a failed step or notification, NO-GO, a higher level."""
        if self.session is None:
            return
        alerts, before = self.session.alerts(), self._alerts
        self._alerts = alerts
        if before is not None and alerts.rings_after(before):
            self.bell()

    def get_driver_class(self) -> type[Driver]:
        """On a Unix terminal, the driver that survives the terminal going away."""
        if constants.DRIVER is None and os.name == "posix":
            return TerminalDriver
        return super().get_driver_class()

    # -- header ------------------------------------------------------------------------

    def configure_status(self, bar: StatusBar, where: str) -> None:
        env = self.config.environment
        bar.environment = env.name
        bar.production = env.production
        bar.write = self.write
        bar.where = where
        bar.stale = self._stale_count()
        self._session_status(bar)

    def _session_status(self, bar: StatusBar) -> None:
        session = self.session
        if session is None:
            return
        crew = session.crew()
        bar.crew = crew.headline() if crew is not None else None
        if crew is not None:
            for banner in self._found(bar.screen, CrewBanner):
                banner.show_banner(*crew.banner())
        bar.verdict = session.verdict.verdict if session.verdict else None
        notifications = session.notifications()
        bar.outbox = (notifications.pending[0] + (f" (+{len(notifications.pending) - 1})" if len(notifications.pending) > 1
                                                  else "")) if notifications.pending else None
        window = session.watch()
        now = session.now()
        bar.watch = f"watch {format_duration(window.remaining_s(now))} left" if window and window.active(now) else None
        alarms: list[str] = []
        breaches = session.alarms()
        if breaches:
            more = f" (+{len(breaches) - 1} more)" if len(breaches) > 1 else ""
            alarms.append(f"ROLLBACK RECOMMENDED: {breaches[0].data.get('what', '')}{more} — R opens the rollback console")
        alarms += [f"{line} — N sends it again" for line in notifications.given_up[:1]]
        waiting = list(notifications.retrying[:1])  # also in the banner: the header is cut at 80 columns
        for alarm_banner in self._found(bar.screen, AlarmBanner):
            alarm_banner.show_alarm(alarms, waiting)
        if session.state.started_at is not None:
            clock = session.deploy_clock()
            bar.deploy_clock = f"{format_duration(clock.elapsed_s)}/{format_duration(clock.budget_s)}"
            bar.deploy_level = str(clock.level)
        else:
            bar.deploy_clock = None

    def _stale_count(self) -> int:
        now = self.clock()
        return sum(1 for state in self.poll_states.values() if state.stale(now) and state.polls)

    # -- lifecycle ---------------------------------------------------------------------

    def on_mount(self) -> None:
        if self.config.environment.production:
            self.add_class("-production")
        self._size_classes(self.size.width, self.size.height)
        self.set_interval(1.0, self._tick)
        self.log_path = logs.configure(self.config.secrets.redact)
        self._begin_session()
        # Paint first, then start the pollers: the operator sees the control room at once
        # and the data arrives into it.
        self.call_after_refresh(self._first_frame)

    def on_resize(self, event: events.Resize) -> None:
        self._size_classes(event.size.width, event.size.height)

    def _size_classes(self, width: int, height: int) -> None:
        """Media-like classes for styles/app.tcss: `-narrow` under 80 columns, `-wide` from
        120, `-tall` from 36 rows (the output panes then take the height the lists leave)."""
        self.set_class(width < NARROW_BELOW, "-narrow")
        self.set_class(width >= WIDE_FROM, "-wide")
        self.set_class(height >= TALL_FROM, "-tall")

    def _first_frame(self) -> None:
        self.first_frame_at = time.perf_counter()
        self._start_feeds()
        self._premount_views()

    @work(group="start-feeds", exit_on_error=False)
    async def _start_feeds(self) -> None:
        """The pollers, once the start-up checks have landed (3 s at most): 20 sources opening
        their connections and decoding their first answers would hold up the probes, and the
        verdict is what the operator opened the control room for (KPIs came ~0.5 s later, the
        verdict ~160 ms sooner)."""
        if not self.start_polling:
            return
        await self._after_startup_checks()
        if self.closing():
            return
        if self.feeds is None:
            self.feeds = Feeds(self.config)
        self._start_pollers(self.feeds)

    async def _after_startup_checks(self) -> None:
        """Until the checks run at start have landed (STARTUP_CHECKS_FIRST_S at most): the
        verdict is what the operator opened the control room for, and what is started after
        it would hold up its probes."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._startup_checks_done.wait(), STARTUP_CHECKS_FIRST_S)

    @work(group="premount", exit_on_error=False)
    async def _premount_views(self) -> None:
        """Build and lay out the views not yet shown, one at a time, once the first frame is
        up: a view's first visit would otherwise pay its compose, its CSS and its first
        layout (50–250 ms for the KPIs) while the operator waits on the key. Textual builds a
        mode's screen on its first switch; this is that step (`App._init_mode`) without the
        resume, which stays with the switch, and without its whole-app CSS refresh (~80 ms: a
        new screen counts as out of date, but one mounted now is styled with the stylesheet
        as it is; a theme change later marks every screen out of date again)."""
        closing = self.closing
        await self._after_startup_checks()  # a view laid out holds the loop for up to 250 ms
        for mode, screen_type in list(self._modes.items()):
            if closing():
                return
            if mode in self._screen_stacks or not isinstance(screen_type, type):
                continue
            screen, mounted = self._get_screen(screen_type())
            self._screen_stacks[mode] = [screen]
            self._load_screen_css(screen)
            screen._css_update_count = self._css_update_count
            await mounted
            if not closing() and screen is not self.screen and isinstance(screen, ControlScreen):
                screen.on_screen_resume()  # its data as it is now: the visit renders only what changed since
                screen._refresh_layout(self.size)
                await asyncio.sleep(0.05)  # the layout's resize events handled
                if not closing() and screen is not self.screen:
                    screen._compositor.render_full_update()  # line caches warm; drawn on the visit
            await asyncio.sleep(0)  # keys and polls go first
        self.collector.built = True  # what lives as long as the control room is built: freeze it at a pause

    async def on_unmount(self) -> None:
        self.collector.release()
        # A poll cancelled while its connection is being set up leaves asyncpg complaining on
        # the terminal after the app has gone; polls in flight get a moment to land first.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        def busy() -> bool:
            polling = any(poller.running for poller in self.pollers.values())
            waiting_only = ("pollers", "shared-journal", "start-feeds", "premount")  # nothing of theirs in flight
            return polling or any(w.group not in waiting_only and w.is_running for w in self.workers)

        while busy() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self.session is not None:  # what is still pending stays so in the journal: resent on reopen
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.outbox.aclose(), 2)
        workers = list(self.workers)
        for worker in workers:
            worker.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers), return_exceptions=True), 5)
        if self.feeds is not None:
            await self.feeds.close()
        if self.session is not None:
            self.session.close()

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
            breakers = feeds.breakers

            async def fetch_breakers() -> Any:
                # The full list only while the Breakers view shows it; otherwise the counts per
                # provider and state (the watch's), counted in SQL: 10,000 rows read, decoded and
                # built every poll would hold up every key pressed meanwhile.
                return await (breakers.fetch() if self._breakers_shown() else breakers.fetch_counts())

            self.pollers["breakers"] = Poller("breakers", fetch_breakers, interval_s=breakers.view.poll_s * scale,
                                              timeout_s=breakers.timeout_s, clock=self.clock, redact=redact)
        if feeds.health is not None:
            self.pollers["health"] = Poller("health", feeds.health.fetch, interval_s=feeds.health.view.poll_s * scale,
                                            timeout_s=feeds.health.timeout_s, clock=self.clock, redact=redact)
        for name, poller in self.pollers.items():
            self._run_poller(name, poller)

    @work(group="pollers", exit_on_error=False)
    async def _run_poller(self, name: str, poller: Poller[Any]) -> None:
        await poller.run(lambda state: self.post_message(Polled(name, state)))

    # -- data in -----------------------------------------------------------------------

    def on_polled(self, message: Polled) -> None:
        previous = self.poll_states.get(message.source)
        self.poll_states[message.source] = message.state
        remember_reading(self.kpi_history, message.source, message.state)
        screen = self.shown_screen()  # None: a poll that lands while the app is closing
        if screen is not None and not self.closing():
            screen.deliver(message.source, message.state)
        state = message.state
        fresh = state.value is not None and (previous is None or previous.value is not state.value)
        if self.session is not None and fresh:
            self._judge_for_watch(state.value)

    def _judge_for_watch(self, value: Any) -> None:
        """During the watch after the deployment, the engine judges each new reading; an alarm
        rings the bell and shows the banner (R is then the way to the rollback)."""
        session = self._engine()
        try:
            breach = session.observe(value)
        except Exception as error:  # noqa: BLE001 - a journal refusal must not stop the polling
            logger.error("judging a reading for the watch", exc_info=error)
            return
        if breach is None:
            return
        if len(session.alarms()) == 1:  # the alarm; later breaches add to its banner, quietly
            self.bell()
            self.notify(plain(f"Rollback recommended: {breach.get('what', '')}", limit=200), severity="error",
                        timeout=10)
        self.session_changed()

    def shown_screen(self) -> ControlScreen | None:
        """The main screen on show: the one on top, or the one a dialog is open over (its
        clocks keep running behind the dialog)."""
        return next((s for s in reversed(self.screen_stack) if isinstance(s, ControlScreen)), None)

    def closing(self) -> bool:
        """Textual is closing the screens (their widgets go first, the app's timers tick on
        until the last): nothing may be added to them or drawn on them."""
        return not self.is_running or self._exit

    def _tick(self) -> None:
        if self.closing():
            return
        self.collector.tick()  # holds its long passes itself while probes run
        if self.session is not None:
            with contextlib.suppress(Exception):  # a journal refusal waits for the next tick
                if self.session.watch_tick():
                    self.notify("The watch after the deployment ended", timeout=6)
                    self.session_changed()
                self._ring_on_alerts()  # the escalation rises with time
        screen = self.shown_screen()
        if screen is not None:
            screen.tick(self.clock())
        for bar in self._status_bars():
            bar.stale = self._stale_count()
            self._session_status(bar)

    def _status_bars(self) -> list[StatusBar]:
        """The header of the main screen on show and of every dialog open over it (a dialog
        shows the header too, so its clocks tick in view whatever the dialog covers)."""
        shown = self.shown_screen()
        if shown is None:
            return []
        stack = self.screen_stack
        return [bar for screen in stack[stack.index(shown):] for bar in self._found(screen, StatusBar)]

    def _found(self, screen: Screen[Any], kind: type[FoundWidget]) -> list[FoundWidget]:
        """The widgets of `kind` on `screen`, found once it is mounted (no screen adds or
        removes widgets after its compose): the header and the banners are written every
        second, and a CSS query of the whole screen each time was most of an idle view's work."""
        found = self._widgets_found.setdefault(screen, {})
        widgets = found.get(kind)
        if widgets is None:
            widgets = list(screen.query(kind))
            if screen.is_mounted:
                found[kind] = widgets
        return widgets

    # -- the release session: screens send commands here; I/O runs in workers ----------

    def _begin_session(self) -> None:
        env = self.config.environment
        if self.config.journal.shared:  # the environment's shared release is joined, never offered
            self._open_session(None)
            return
        path = find_resumable(env.name, self.journal_dir, config_path=self.config.config_path) if self.offer_resume else None
        if path is None:
            self._open_session(None)
            return
        from controlroom.release.journal import read_records
        from controlroom.release.state import replay

        state = replay(read_records(path)[0])
        body = Text()
        body.append(f"A deployment of {plain(state.version, limit=40)} on {plain(env.name, limit=40)} "
                    "was not finished.\n")
        if state.started_at is not None:
            body.append(f"Started {state.started_at:%Y-%m-%d %H:%M:%S} UTC; journal {path.name}.\n")
        body.append("Resume it (same phase, same clocks, same attestations), or start a new session?\n\n")
        body.append("Resume", style="bold")
        body.append(" (enter; highlighted first): carry on where it stopped.\n")
        body.append("New session", style="bold")
        body.append(" (esc): a new journal; this one stays on disk as it is.")
        self.push_screen(
            ConfirmDialog(Text("Resume the deployment in progress?"), body, confirm_label="Resume",
                          cancel_label="New session", default="confirm",
                          hint=Text("enter presses the highlighted button · esc = New session · tab ←→ switch")),
            lambda ok: self._open_session(path if ok else None),
        )

    def _open_session(self, path: Path | None) -> None:
        try:
            self.session = ReleaseEngine.open(self.config, write=self.write, journal_path=path,
                                              journal_dir=self.journal_dir, clock=self.now, operator=self.operator)
        except Exception as error:  # noqa: BLE001 - shown, the rest of the app keeps working
            if self.config.journal.shared:  # without its release the control room has nothing to show
                self.exit(return_code=2, message=f"controlroom: error: {error}")
                return
            self.notify(f"cannot open the journal: {error}", severity="error", timeout=10)
            return
        session = self.session
        self._alerts = None  # what the journal already holds rings nothing
        session.outbox.on_change = self._outbox_changed
        resent = session.resume_notifications()
        if resent:
            self.notify(f"Sending {resent} notification{'s' if resent != 1 else ''} left pending", timeout=6)
        for problem in session.journal.problems:
            self.notify(f"journal: {problem}", severity="warning", timeout=10)
        if session.journal.other_holder is not None:
            self._warn_shared_journal(session.journal.other_holder)
        crew = session.crew()
        if crew is not None:
            self._watch_shared_journal()
            if not crew.driving:
                driver = f", driven by {plain(crew.driver.label, limit=40)}" if crew.driver else "; nobody drives it"
                what = f"the deployment of {session.state.version}" if session.state.started_at else "this release"
                self.notify(f"You watch {plain(what, limit=60)}{driver}", timeout=6)
            elif session.resumed:
                self.notify(f"You drive the deployment of {session.state.version}", timeout=4)
        elif session.resumed:
            self.notify(f"Resumed the deployment of {session.state.version}", timeout=4)
        if session.rollback_in_progress() and "rollback" in self._modes:
            # Reopened mid-rollback: the console is where the next step is, not the checklist.
            self.call_after_refresh(self.switch_mode, "rollback")
        self.session_changed()
        if self.check_on_start and not session.follows_driver:
            self.call_after_refresh(self._run_checks)  # after the first frame is up
        else:
            self._startup_checks_done.set()

    @work(group="shared-journal", exit_on_error=False)
    async def _watch_shared_journal(self) -> None:
        """A shared release: what other control rooms journal, who joins, leaves or takes over,
        and the store's link, shown as it happens (the store's thread wakes this)."""
        engine = self._engine()
        journal = engine.journal
        changed = getattr(journal, "changed")
        was_online = True
        while True:
            await changed()
            try:
                seen = len(journal.records)
                engine.refresh()
                self._show_what_others_journaled(journal.records[seen:])
                crew = engine.crew()
                for notice in engine.take_notices():
                    self.notify(plain(notice, limit=300), severity="warning", timeout=10)
                if crew is not None and was_online and not crew.online:
                    self.bell()  # the driver must look up: decisions are refused from now on
                was_online = crew.online if crew is not None else True
                self.session_changed()
            except Exception as error:  # noqa: BLE001 - one bad pass must not stop the following
                logger.error("following the shared journal", exc_info=error)
                where = f"; traceback in {self.log_path}" if self.log_path else ""
                self.notify(plain(f"internal error (a bug) following the shared journal: {type(error).__name__}: "
                                  f"{error}", limit=200) + where, severity="error", timeout=15)

    def _warn_shared_journal(self, holder: Holder) -> None:
        """Another live control room has this journal open (a second window, or one whose
        terminal went away and that has not exited): say so before anything else."""
        body = Text()
        body.append("Journal ")
        body.append(plain(self.session.journal.path.name if self.session else "", limit=60), style="bold")
        body.append(" is open in another control room: ")
        body.append(plain(str(holder), limit=120), style="bold")
        kill = f": kill {holder.pid}" if holder.pid > 0 else " (its pid could not be read)"
        body.append(".\n\nBoth windows would record into the same journal. If that one is an orphan "
                    f"(its terminal gone), end it first{kill}.\n\n")
        body.append("Continue", style="bold")
        body.append(" opens it here anyway; ")
        body.append("Quit", style="bold")
        body.append(" (esc, the default) leaves it to the other window.")
        dialog = ConfirmDialog(Text("This journal is already open elsewhere"), body, confirm_label="Continue",
                               cancel_label="Quit")
        dialog.id = "shared-journal-dialog"
        self.push_screen(dialog, lambda ok: None if ok else self.exit())
        self.notify(f"journal also open in {plain(str(holder), limit=80)}", severity="error", timeout=15)

    def session_changed(self) -> None:
        """The release changed: the screen on show re-renders (ReleaseChanged), the header
        follows; the bell rings if it went wrong."""
        self._ring_on_alerts()
        screen = self.shown_screen()
        if screen is not None:
            screen.post_message(ReleaseChanged())
        for bar in self._status_bars():
            self._session_status(bar)

    def _show_what_others_journaled(self, records: list[Any]) -> None:
        """A watcher's step log follows the driver's steps; a takeover is told to every window."""
        session = self.session
        if session is None or not records:
            return
        screen = self.shown_screen()
        for record in records:
            who = operator_label(record.operator)
            data = record.data
            if record.kind == "driver_changed" and data.get("how") == "took over":
                self.notify(plain(f"{who} took over the release from {data.get('from') or 'nobody'}", limit=200),
                            severity="warning", timeout=10)
            if not session.watching or record.kind not in ("step_intent", "step_outcome"):
                continue
            rollback = bool(data.get("plan_id"))
            if not isinstance(screen, RollbackScreen if rollback else DeployScreen):
                continue
            title = self._step_title(str(data.get("step_id", "")))
            if record.kind == "step_intent":
                line = f"── {title}: started by {who}"
            else:
                line = f"→ {title}: {str(data.get('status', '')).upper()} — {data.get('summary', '')} ({who})"
            screen.post_message(StepOutput(plain(line, limit=300)))

    # -- rule 6: a key belongs to the screen on top when it is acted on ----------------
    #
    # Textual hands each key to the focused widget of the screen on top *when it arrives*,
    # and acts on bindings when it comes back up to the app. Keys typed right after one that
    # opens a dialog (`s` then `v2.15.0`, `x` then `fudo`) arrive before the dialog is up, go
    # to the screen behind, and come back here with the dialog on top: they are the dialog's.

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self.collector.input()
        if isinstance(event, events.Key) and not event.is_forwarded and self.screen_stack:
            setattr(event, ARRIVED_ON, self.screen)  # travels with the event as it is forwarded and bubbles
            if self.message is not None and self.message.severity == "error":
                self._show_message(None)  # an error stays until a key (this one's answer comes after)
        await super().on_event(event)

    def on_key(self, event: events.Key) -> None:
        arrived_on = getattr(event, ARRIVED_ON, None)
        if arrived_on is None or arrived_on is self.screen or not self.screen_stack:
            return
        event.stop()
        event.prevent_default()  # no binding of the app's (d, q) or of the screen behind acts on it
        self.post_message(events.Key(event.key, event.character))  # as if typed now: to the dialog, in order

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        screen = self.screen if self.screen_stack else None
        if isinstance(screen, ControlScreen) and screen.awaiting_dialog:
            return False  # keys typed ahead for a dialog about to open reach nothing (rule 6)
        if action == "switch_mode" and parameters and parameters[0] in self.hidden_modes:
            return False  # a view this runbook does not define
        return super().check_action(action, parameters)

    # -- commands from the screens: the engine decides; answers go back as events -----
    #
    # Each handler runs the engine in a worker; `_answer` remembers which screen asked. A
    # refusal (SessionError, StepRefused) or a bug ends the worker, and on_worker_state_changed
    # tells them apart: the one place worker errors are handled.

    def _answer(self, message: EngineCommand, worker: Worker[Any]) -> None:
        if message.origin is not None:
            self._origins[worker] = message.origin

    def _tell(self, origin: MessagePump | None, event: Message) -> None:
        if origin is not None and origin.is_attached:
            origin.post_message(event)

    def _output_to(self, origin: MessagePump | None) -> Callable[[str], None]:
        return lambda line: self._tell(origin, StepOutput(line))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        origin = self._origins.pop(worker, None)
        if event.state is not WorkerState.ERROR or worker.error is None:
            return
        error = worker.error
        if isinstance(error, (SessionError, StepRefused)):
            reason = str(error)
            self.notify(reason, severity="error", timeout=8)
        else:  # a bug: its traceback goes to the log file, the operator is told where
            logger.error("bug in %s", worker.name, exc_info=error)
            where = f"; traceback in {self.log_path}" if self.log_path else ""
            reason = f"internal error (a bug) in {worker.name}: {type(error).__name__}: {error}"
            self.notify(plain(reason, limit=200) + where, severity="error", timeout=15)
        if origin is not None:
            self._tell(origin, CommandRefused(reason))
        elif (shown := self.shown_screen()) is not None:
            shown.dialog_opened()  # whatever was awaited will not open a dialog now
        self.session_changed()

    def _engine(self) -> ReleaseEngine:
        if self.session is None:
            raise SessionError("the journal is not open yet")
        return self.session

    def on_run_checks(self, message: RunChecks) -> None:
        self._answer(message, self._run_checks())

    @work(group="checks", exclusive=True, exit_on_error=False)
    async def _run_checks(self) -> None:
        engine = self._engine()
        # Shown once the engine has started, which marks the checks running: set here, the
        # mark stayed when the engine refused (a control room that watches), and with it "RUN".
        self.call_later(self.session_changed)
        try:
            report = await engine.run_checks(on_result=lambda _: self.session_changed())  # each row as its result lands
        finally:
            self.session_changed()  # the verdict
            # What waits for the checks (the pollers, the views' premount) starts once the
            # frame with the verdict is painted: let in first, it held that frame up 50–130 ms.
            self.call_after_refresh(self._startup_checks_done.set)
        self.notify(f"Checklist: {report.verdict.verdict} ({len(report.checks)} checks in "
                    f"{report.duration_ms / 1000:.1f} s)", timeout=3)

    def on_run_check_item(self, message: RunCheckItem) -> None:
        self._answer(message, self._run_check_item(message.item_id))

    @work(group="check-item", exit_on_error=False)
    async def _run_check_item(self, item_id: str) -> None:
        result = await self._engine().run_item(item_id)
        self.session_changed()
        self.notify(f"{item_id}: {result.status.upper()}", timeout=3)

    def on_attest(self, message: Attest) -> None:
        self._answer(message, self._attest(message.item_id, message.failing_reason))

    @work(group="attest", exit_on_error=False)
    async def _attest(self, item_id: str, failing_reason: str | None) -> None:
        engine = self._engine()
        if failing_reason is None:
            engine.attest(item_id)
        else:
            engine.attest_failing(item_id, failing_reason)
        self.session_changed()
        what = "attested" if failing_reason is None else "recorded as NOT met"
        self.notify(f"{item_id} {what}; verdict {engine.verdict_name}", timeout=3)

    def on_start_deploy(self, message: StartDeploy) -> None:
        self._answer(message, self._start_deploy(message.version, message.override_reason))

    @work(group="deploy", exit_on_error=False)
    async def _start_deploy(self, version: str, override_reason: str | None) -> None:
        await self._engine().start_deploy(version, override_reason)
        self.session_changed()
        self.notify(f"Deployment of {plain(version, limit=40)} started"
                    + (" (override journaled)" if override_reason else ""), timeout=4)

    def on_run_step(self, message: RunStep) -> None:
        self._answer(message, self._run_step(message.step_id, message.rollback, message.origin))

    @work(group="steps", exit_on_error=False)
    async def _run_step(self, step_id: str, rollback: bool, origin: MessagePump | None) -> None:
        engine = self._engine()
        output = self._output_to(origin)
        running = engine.run_rollback_step(step_id, output) if rollback else engine.run_step(step_id, output)
        self.call_after_refresh(self.session_changed)  # shows RUN while it runs
        outcome = await running
        failed = outcome.status == "failed"
        output(f"→ {outcome.status.upper()}: {outcome.summary}")
        hint = ""
        if failed and not rollback:
            hint = "R opens the rollback console"
            output("   " + hint)
        self.session_changed()
        self.notify(f"{step_id}: {outcome.status.upper()}" + (f" — {hint or outcome.summary}" if failed else ""),
                    severity="error" if failed else "information", timeout=6)
        self._tell(origin, StepFinished(step_id, outcome, rollback=rollback))

    def on_dry_run_step(self, message: DryRunStep) -> None:
        self._answer(message, self._dry_run(message, message.origin))

    @work(group="steps-dry", exit_on_error=False)
    async def _dry_run(self, message: DryRunStep, origin: MessagePump | None) -> None:
        engine = self._engine()
        if message.rollback:
            dry = await engine.dry_run_rollback_step(message.step_id, message.plan_id)
        else:
            dry = await engine.dry_run(message.step_id)
        if message.confirm:
            self._tell(origin, DryRunDone(message.step_id, message.plan_id, dry))
            return
        output = self._output_to(origin)
        output(f"── dry run: {message.step_id} (nothing changed)")
        for line in dry.description.splitlines():
            output("   " + line)
        if dry.note:
            output("   " + dry.note)

    def on_mark_done(self, message: MarkDone) -> None:
        self._answer(message, self._journal_only(message))

    def on_skip_step(self, message: SkipStep) -> None:
        self._answer(message, self._journal_only(message))

    def on_next_phase(self, message: NextPhase) -> None:
        self._answer(message, self._journal_only(message))

    def on_finish_deploy(self, message: FinishDeploy) -> None:
        self._answer(message, self._journal_only(message))

    def on_adopt(self, message: Adopt) -> None:
        self._answer(message, self._journal_only(message))

    @work(group="journal-only", exit_on_error=False)
    async def _journal_only(self, message: EngineCommand) -> None:
        """The commands that only journal: mark done, skip, next phase, finish, adopt."""
        engine = self._engine()
        if isinstance(message, MarkDone):
            (engine.mark_rollback_step_done if message.rollback else engine.mark_done)(message.step_id)
        elif isinstance(message, SkipStep):
            (engine.skip_rollback_step if message.rollback else engine.skip_step)(message.step_id, message.reason)
        elif isinstance(message, NextPhase):
            phase = engine.next_phase()
            self.notify(f"Phase {plain(phase.title, limit=40)} started" if phase else "Last phase completed; f finishes",
                        timeout=3)
        elif isinstance(message, FinishDeploy):
            engine.finish_deploy(message.outcome)
        elif isinstance(message, Adopt):
            engine.adopt(message.version, message.reason)
            self.notify(f"Adopted {plain(message.version, limit=40)}: s starts a rollback of it", timeout=5)
        self.session_changed()
        if isinstance(message, (MarkDone, SkipStep, NextPhase)):
            step_id = getattr(message, "step_id", "")
            self._tell(message.origin, StepFinished(step_id, None, rollback=getattr(message, "rollback", False)))

    def on_find_providers(self, message: FindProviders) -> None:
        self._answer(message, self._find_providers(message, message.origin))

    @work(group="rollback-providers", exclusive=True, exit_on_error=False)
    async def _find_providers(self, message: FindProviders, origin: MessagePump | None) -> None:
        choices = await self._engine().provider_choices(message.plan_id)
        self._tell(origin, ProvidersFound(message.plan_id, message.reason, choices))

    def on_start_rollback(self, message: StartRollback) -> None:
        self._answer(message, self._start_rollback(message, message.origin))

    @work(group="rollback-start", exclusive=True, exit_on_error=False)
    async def _start_rollback(self, message: StartRollback, origin: MessagePump | None) -> None:
        record = await self._engine().start_rollback(message.plan_id, message.reason, message.provider)
        version = record.data.get("version") or "(version not found)"
        self.notify(f"Rollback started: back to {plain(str(version), limit=40)}"
                    + (f", disabling {plain(message.provider, limit=30)}" if message.provider else ""), timeout=5)
        self.session_changed()
        self._tell(origin, RollbackStarted(record))

    def on_load_kpi_history(self, message: LoadKpiHistory) -> None:
        self._load_kpi_history(message.kpi_id, message.origin)

    @work(group="kpi-history", exclusive=True, exit_on_error=False)
    async def _load_kpi_history(self, kpi_id: str, origin: MessagePump | None) -> None:
        """The last hour of a KPI whose source keeps one (Prometheus' query_range), within a
        deadline; an SQL KPI has only what was polled since start."""
        kpi = next(k for k in self.config.runbook.kpis if k.id == kpi_id)
        points = await self.feeds.read_kpi_range(kpi, HOUR_S) if self.feeds is not None else "no live sources here"
        if isinstance(points, list):
            self.kpi_history.setdefault(kpi_id, KpiHistory()).merge(points)
        self._tell(origin, KpiHistoryLoaded(kpi_id, error=points if isinstance(points, str) else None,
                                            kept=points is not None))

    def on_verify_rollback(self, message: VerifyRollback) -> None:
        self._answer(message, self._verify_rollback(message.origin))

    @work(group="steps", exit_on_error=False)
    async def _verify_rollback(self, origin: MessagePump | None) -> None:
        output = self._output_to(origin)
        self.call_after_refresh(self.session_changed)
        verified, _results, lines = await self._engine().verify_rollback(output)
        for line in lines:
            output(line)
        failed = [line for line in lines if "FAILED" in line]
        if verified:
            output("→ VERIFIED: the deployment ended rolled back" + ("; resolve sent" if lines and not failed else ""))
            self.notify("Rollback verified" + (f"; {len(failed)} notification(s) FAILED" if failed else "; incident resolved"),
                        severity="error" if failed else "information", timeout=8)
        else:
            output("→ NOT VERIFIED: fix what fails, then v again")
            self.notify("Rollback NOT verified: see the log", severity="error", timeout=8)
        self.session_changed()
        if verified:
            self._run_checks()  # the whole checklist again: the verdict for what is running now

    # -- the report --------------------------------------------------------------------

    def report_path(self) -> Path | None:
        if self.session is None:
            return None
        path = self.session.journal.path
        return path.with_name(path.stem + ".report.md")

    def action_report(self) -> None:
        """Write the post-deployment report of this session's journal next to it, and show it."""
        from controlroom.report.render import render_report
        from controlroom.screens.report import ReportScreen  # Markdown: ~40 ms, not before the first frame

        session = self.session
        path = self.report_path()
        if session is None or path is None:
            self.notify("No session yet: nothing to report", severity="warning")
            return
        health = self.poll_states.get("health")
        if health is not None and health.value is not None:  # the fleet now, as the POS screen shows it
            kpi = self.config.runbook.customer_impact_kpi()
            impact = self.poll_states.get(f"kpi:{kpi.id}") if kpi is not None else None
            reading = None if impact is None else impact.error or impact.value  # the last poll's answer, or why not
            session.record_pos_health(health.value, reading)
        text = render_report(session.journal.records, self.config.runbook, problems=session.journal.problems,
                             source=session.journal.path)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            self.notify(f"cannot write the report: {error.strerror or error}", severity="error", timeout=10)
            return
        if isinstance(self.screen, ReportScreen):
            # Already showing it (the path is on its first line): a short word, no long toast.
            self.screen.show_report(text)
            self.notify("Report written again", timeout=2)
        else:
            self.push_screen(ReportScreen(path, text))  # shows the path: no toast over the report

    # -- several control rooms on one release ------------------------------------------

    def _session_unless(self, refusal_of: Callable[[ReleaseEngine], str | None]) -> ReleaseEngine | None:
        """The session, unless the engine refuses the command (said, as an error)."""
        session = self.session
        refusal = "the journal is not open yet" if session is None else refusal_of(session)
        if refusal or session is None:
            self.notify(plain(refusal or "", limit=300), severity="error", timeout=8)
            return None
        return session

    def action_take_over(self) -> None:
        """T: take over the shared release whose driver is gone, or (the driver, the store
        being away) continue offline; a typed confirmation first, journaled."""
        session = self._session_unless(lambda s: s.take_over_refusal())
        if session is None:
            return
        words = session.take_over_words()
        crew = session.crew()
        body = Text()
        if crew is not None and not crew.online:
            body.append("The shared journal is unreachable. Continuing offline, you decide here: every record is "
                        "journaled on this machine and goes to the shared journal when it is back — unless someone "
                        "else drove meanwhile, and then yours are kept as a branch, shown in the report.\n\n")
            body.append("Nobody can see what you do until then, and you cannot see them: if another operator may "
                        "have taken over, ask before you run a step, or it may run twice.", style="bold")
            body.append("\n")
        else:
            last = f"{crew.last_driver}'s" if crew is not None and crew.last_driver else "its driver's"
            body.append(f"Nobody drives this release: {plain(last, limit=40)} control room is gone. You become its "
                        "driver, journaled and shown to every window. A step it left running shows as ")
            body.append("outcome unknown", style="bold")
            body.append(": check what happened, then mark it done (m) or skip it (z); nothing re-runs by itself.\n")
        dialog = TypedConfirmDialog(Text("Continue offline?" if words == "offline" else "Take over this release?"),
                                    body, words, confirm_label="Continue offline" if words == "offline" else "Take over")
        self.push_screen(dialog, lambda ok: self._take_over(words) if ok else None)

    def _outbox_changed(self) -> None:
        """A notification was queued, answered, retried or given up: the header follows; a
        failed one rings the bell."""
        if self.session is None:
            return
        self._ring_on_alerts()
        for bar in self._status_bars():
            self._session_status(bar)

    def action_retry_notifications(self) -> None:
        """N: send the given-up notifications again."""
        try:
            labels = self._engine().retry_notifications()
        except SessionError as refused:
            self.notify(plain(str(refused), limit=300), severity="error", timeout=8)
            return
        self.notify(plain(f"Sending again: {', '.join(labels)}", limit=200), timeout=5)
        self.session_changed()

    def action_page_next_level(self) -> None:
        """e: page the next escalation level now (typed confirmation)."""
        session = self._session_unless(lambda s: s.page_refusal())
        if session is None:
            return
        level = session.page_target()
        assert level is not None
        words = session.page_words()
        body = Text()
        body.append(f"L{level.level} {plain(level.title, limit=40)}", style="bold")
        body.append(f" ({plain(', '.join(level.contacts), limit=120)}) is paged now, before the ladder reaches it")
        targets = [t for t in (f"PagerDuty ({level.pagerduty_routing_key_secret})" if level.pagerduty_routing_key_secret
                               else "", f"Slack {level.slack_mention}" if level.slack_mention else "") if t]
        body.append(f": {plain(', '.join(targets), limit=80)}. Journaled, and shown on the ladder.\n")
        dialog = TypedConfirmDialog(Text(f"Page L{level.level} now?"), body, words, confirm_label="Page")
        self.push_screen(dialog, lambda ok: self._page_next_level(words) if ok else None)

    @work(group="page", exclusive=True, exit_on_error=False)
    async def _page_next_level(self, words: str) -> None:
        try:
            lines = await self._engine().page_next_level(words)
        except SessionError as refused:
            self.notify(plain(str(refused), limit=300), severity="error", timeout=8)
            return
        self.notify(plain("; ".join(lines) or "paged", limit=300), timeout=8)
        self.session_changed()

    @work(group="take-over", exclusive=True, exit_on_error=False)
    async def _take_over(self, words: str) -> None:
        engine = self._engine()
        engine.take_over(words)
        self.notify("You continue offline (journaled)" if words == "offline" else "You drive this release now",
                    timeout=5)
        self.session_changed()

    # -- actions -----------------------------------------------------------------------

    def quit_question(self) -> Text | None:
        """What quitting now would interrupt (a deployment in progress, a running step), as
        the confirmation's body; None when nothing is in progress and q may quit at once."""
        session = self.session
        if session is None or session.watching:
            return None  # a watcher's quitting interrupts nothing: the driver drives on
        state = session.state
        running = session.running_step
        rolling_back = session.rollback_in_progress()  # also after the deployment finished: the watch
        pending = session.notifications().pending if session.may_notify() else ()
        if not state.in_progress and not running and not rolling_back:
            if not pending:
                return None
            text = Text(f"{len(pending)} notification{'s are' if len(pending) != 1 else ' is'} still on its way: ")
            text.append(plain(pending[0], limit=120), style="bold")
            text.append(". Quit anyway?\n\nThe journal keeps it: the next control room opened with --write on this "
                        "release sends it, with the same dedup_key. Until then nobody receives it.")
            return text
        text = Text()
        what = Text()
        if running == "verify":
            what.append("the rollback verification is running")
        elif running:
            what.append("step ")
            what.append(self._step_title(running), style="bold")
            what.append(" is running")
        if state.in_progress:
            where: list[str] = []
            phase = session.current_phase()
            if phase is not None:
                where.append(f"phase {plain(phase.title, limit=40)}")
            if session.rollback_in_progress():
                plan = session.current_rollback_plan()
                where.append(f"{plain(plan.title, limit=40)} in progress" if plan is not None else "a rollback in progress")
            text.append(f"A deployment of {plain(state.version, limit=30)} is in progress")
            text.append(f" ({', '.join(where)})" if where else "")
            if running:
                text.append(" and ")
                text.append_text(what)
        elif rolling_back:
            plan = session.current_rollback_plan()
            text.append(f"The {plain(plan.title, limit=40) if plan is not None else 'rollback'} of "
                        f"{plain(state.version, limit=30)} is in progress")
            if running:
                text.append(" and ")
                text.append_text(what)
        else:
            what.plain = what.plain[:1].upper() + what.plain[1:]
            text.append_text(what)
        text.append(". Quit anyway?\n\n")
        if running:
            text.append("Quitting cancels it" + ("" if running == "verify" else "; the step is journaled as failed: "
                        "cancelled") + ".\n", style="bold")
        if pending:
            text.append(f"{len(pending)} notification(s) still on their way: the next control room with --write on "
                        "this release sends them.\n", style="bold")
        crew = session.crew()
        if crew is not None:  # the shared release goes on without a driver until one takes over
            can_drive = [m.label for m in crew.members if not m.drives and m.write]  # read-only ones cannot
            text.append("The shared journal keeps everything; " + (
                f"{plain(', '.join(can_drive), limit=80)} can take over (T), or you, reopening."
                if can_drive else "reopening, you (or another operator with --write) drive it again."))
            return text
        resumable = (state.in_progress or rolling_back) and self.offer_resume  # a demo's sandbox ends with it
        text.append("The journal keeps everything" + ("; reopening resumes it." if resumable else "."))
        return text

    def _step_title(self, step_id: str) -> str:
        session = self.session
        if session is None:
            return plain(step_id, limit=50)
        for finder in (session.step, session.rollback_step):
            try:
                return plain(finder(step_id).title, limit=50)
            except Exception:  # noqa: BLE001 - not a step of that kind
                continue
        return plain(step_id, limit=50)

    async def action_quit(self) -> None:
        """q / ctrl+c: quit at once when nothing is in progress; during a deployment or while
        a step runs, ask first (Cancel is the default)."""
        if isinstance(self.screen, ConfirmDialog) and self.screen.id == "quit-dialog":
            return  # already asking: a second q must not quit
        question = self.quit_question()
        if question is None:
            self.exit()
            return
        dialog = ConfirmDialog(Text("Quit the control room?"), question, confirm_label="Quit")
        dialog.id = "quit-dialog"
        self.push_screen(dialog, lambda ok: self.exit() if ok else None)

    def action_refresh_all(self) -> None:
        for poller in self.pollers.values():
            poller.wake()
        self.notify("Refreshing every source", timeout=2)

    def key_list(self) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        screen = self.screen if isinstance(self.screen, ControlScreen) else None
        seen: set[str] = set()
        # The screen's own keys first: they win over the app's (e.g. r on the checklist).
        for binding in [*(screen.BINDINGS if screen else []), *self.BINDINGS]:
            assert isinstance(binding, Binding)
            binding = as_mapped(self, binding)  # the operator's own key (settings.toml [keys])
            if binding.key in seen or not binding.id or binding.id == "app.quit_ctrl_c":
                continue
            if binding.id.removeprefix("view.") in self.hidden_modes:
                continue
            seen.add(binding.key)
            display = binding.key_display or " ".join(format_key(key) for key in binding.key.split(","))
            description = {
                "app.refresh": "Refresh every source now",
                "app.palette": "Command palette: every action by name",
                "app.quit": "Quit (asks first while a deployment is in progress)",
            }.get(binding.id, binding.tooltip or binding.description)
            keys.append((display, description or binding.action))
        keys += [("ctrl+c", "Quit, as q"), ("↑↓ pgup pgdn", "Move in tables and lists"), ("tab", "Next field")]
        return keys

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        screen = self.screen if isinstance(self.screen, ControlScreen) else None
        title = f"Help — {screen.TITLE_TEXT}" if screen else "Help"
        self.push_screen(HelpScreen(title, screen.help_text if screen else "", self.key_list()))

    # -- esc: back to the view shown before ---------------------------------------------

    def action_back(self) -> None:
        """esc on a main view with nothing open on it: the view shown before, like a browser's
        back (a dialog, the help, a filter or the command line take their esc first)."""
        if not isinstance(self.screen, ControlScreen):
            return  # something is open over the view: its own esc closes it
        history = self._view_history
        while history:
            mode = history.pop()
            if mode != self.current_mode and mode in self._modes:
                self._going_back = True
                try:
                    self.switch_mode(mode)
                finally:
                    self._going_back = False
                return

    # -- the `:` command line: the keys' own actions, by name ----------------------------

    def command_names(self) -> Names:
        """What the command line completes: the views shown, the runbook's ids."""
        runbook = self.config.runbook
        session = self.session
        return Names(
            views=tuple((mode, key) for mode, (key, _, _) in VIEWS.items() if mode not in self.hidden_modes),
            items=tuple(item.id for _, item in runbook.items()),
            manual_items=tuple(session.attestable()) if session is not None else (),
            steps=tuple(step.id for phase in runbook.deployment.phases for step in phase.steps),
        )

    def action_command_line(self) -> None:
        if isinstance(self.screen, CommandLineScreen):
            return
        self.push_screen(CommandLineScreen(self.command_names()), self._command_given)

    def _command_given(self, parsed: Parsed | None) -> None:
        if parsed is not None:
            self.run_worker(self.run_command(parsed), group="command-line", exit_on_error=False)

    async def run_command(self, parsed: Parsed) -> None:
        """Run what the command line named as its key does: the same action on the same
        screen (the item or step selected first), so the engine refuses it, and the same
        dialog asks, exactly as for the key."""
        if parsed.view:
            await self.run_action(f"switch_mode({parsed.verb!r})")
            return
        args = parsed.args
        if parsed.verb in ("report", "help", "keys", "shell", "quit"):
            await self.run_action(parsed.verb)
            return
        if parsed.verb in ("attest", "notmet", "rerun"):
            action = {"attest": "attest", "notmet": "attest_failing", "rerun": "rerun_item"}[parsed.verb]
            screen = await self._view_with_row("checklist", args[0] if args else None)
            if screen is not None:
                await screen.run_action(action if args else "rerun_all")
            return
        if parsed.verb in ("run", "skip"):
            screen = await self._view_with_row("deploy", args[0])
            if screen is None:
                return
            await screen.run_action("run_step" if parsed.verb == "run" else "skip")
            if parsed.verb == "skip" and len(args) > 1:
                self._prefill_reason(args[1])

    async def _view_with_row(self, mode: str, row: str | None) -> ControlScreen | None:
        """The view `mode` with its cursor on `row`; None (and said) when the row cannot be
        selected: the command must not act on whatever row the cursor was on."""
        if self.current_mode != mode:
            await self.switch_mode(mode)
        screen = self.screen
        assert isinstance(screen, ControlScreen)
        if row is not None and not screen.select_row(row):
            self.notify(f"{plain(row, limit=40)}: no such row on the {mode} view", severity="error")
            return None
        return screen

    def _prefill_reason(self, reason: str, tries: int = 10) -> None:
        """`:skip STEP REASON`: the skip's own dialog, its reason typed in; enter confirms it."""
        from textual.widgets import Input

        from controlroom.screens.dialogs import ReasonDialog

        dialog = self.screen
        if not isinstance(dialog, ReasonDialog):
            return  # refused before asking: said already
        fields = dialog.query("#reason")
        if not fields and tries:
            self.call_after_refresh(self._prefill_reason, reason, tries - 1)
            return
        for field in fields:
            if isinstance(field, Input):
                field.value = reason
                field.cursor_position = len(reason)

    def action_keys(self) -> None:
        """`:keys`: every key with its binding id, as `controlroom keys` prints them."""
        from controlroom.screens.keymap import key_rows

        rows = key_rows(self._keymap, self.hidden_modes)
        keys = [(shown, f"{description.split(' (')[0]} — {binding_id}" + (" (yours)" if mine else "")
                 + ("" if where == "every screen" else f" [{where}]"))
                for binding_id, shown, description, where, mine in rows]
        self.push_screen(HelpScreen("Keys", "Every key and its binding id; settings.toml [keys] remaps them by "
                                    "id (`controlroom keys` prints the same).", keys))

    # -- !: a shell, then back ---------------------------------------------------------

    def shell_refusal(self) -> str | None:
        if not self.shell_allowed:
            return "No shell here: this is a browser session of `controlroom serve` (read-only, for watchers)"
        driver = self._driver
        if driver is None or not driver.can_suspend:
            return "No shell here: this terminal cannot be suspended (a browser or a headless run)"
        return None

    def action_shell(self) -> None:
        """!: suspend the screen and run $SHELL without the secrets; the control room comes
        back when it exits. While it runs the control room waits: no polls, no sends (the
        clocks are derived from the journal and catch up)."""
        from controlroom.infra.shell import shell_invocation

        refusal = self.shell_refusal()
        if refusal is not None:
            self.notify(refusal, severity="error", timeout=8)
            return
        journal = self.session.journal.path if self.session is not None else None
        argv, env, cleanup = shell_invocation(self.config, os.environ, journal)
        code: int | None = None
        try:
            with self.suspend(), _shell_keeps_the_keyboard_signals():
                code = subprocess.run(argv, env=env, check=False).returncode
        except SuspendNotSupported:
            self.notify("No shell here: this terminal cannot be suspended", severity="error", timeout=8)
            return
        except OSError as error:
            self.notify(f"cannot start {argv[0]}: {error.strerror or error}", severity="error", timeout=8)
            return
        finally:
            cleanup()
        self.refresh(layout=True)
        self.notify("Back from the shell" + (f" (it exited with {code})" if code else ""), timeout=3)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The palette, built from the active bindings (the screen's, then the app's), so a
        remapped key stays true: each command is a key's tooltip and runs its action."""
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if not binding.id or binding.id in PALETTE_LEAVES_OUT or binding.id in seen or not active.enabled:
                continue
            seen.add(binding.id)
            title = binding.tooltip or binding.description or binding.action
            yield SystemCommand(title.split(" (")[0].split(": ")[0], f"key {self.get_key_display(binding)}",
                                partial(active.node.run_action, binding.action))


@contextlib.contextmanager
def _shell_keeps_the_keyboard_signals() -> Any:
    """While the shell runs, ctrl+c, ctrl+\\ and ctrl+z are the shell's: here they do nothing
    (the exit guard would close the control room on SIGINT). Handlers, not SIG_IGN: the
    shell, exec'ed, starts with them at their defaults. SIGHUP and SIGTERM still close."""
    keyboard = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)
    before = {signum: signal.signal(signum, lambda *_: None) for signum in keyboard}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def make_app(config: LoadedConfig, **kwargs: Any) -> ControlRoomApp:
    """The one app factory: the CLI, the demo and the tests build the app here."""
    return ControlRoomApp(config, **kwargs)
