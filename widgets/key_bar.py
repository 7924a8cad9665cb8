"""The key hints at the bottom of every main screen, as one line of text.

Textual's Footer builds a widget per key and rebuilds them all whenever the bindings change,
which made every screen switch cost a few hundred milliseconds; an operator switches screens
all the time, and reads the keys, never clicks them.

The line has three groups, so that every key fits at 80 columns on every screen:

    s start  x run  …  │  c d k b p R screens  │  ? help  q quit

the screen's own keys with their (short) descriptions; the app's screen-switching keys, keys
only, the current screen's emphasised; then help and quit. When the roomy layout does not fit
the width, tighter ones are tried (unpadded keys, then the screen keys packed together, then
without the word "screens"); when even the tightest does not fit (60 columns), the screen's
keys take one line and the screens, help and quit a second one, so that no key is cut. Descriptions are appended as plain Text, never parsed as markup.
`?` lists every key with a longer description.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from controlroom.widgets.changes import same

KEY = "bold reverse"
KEY_DISABLED = "dim reverse"
VIEW_KEY = "bold"
CURRENT_VIEW = "bold reverse"
LABEL = "dim"
# (the screen's keys: display, description, enabled), (screen-switching keys: display, is the
# current screen), (help and quit: display, description).
Groups = tuple[list[tuple[str, str, bool]], list[tuple[str, bool]], list[tuple[str, str]]]


@dataclass(frozen=True)
class Layout:
    padded: bool  # " s " rather than "s"
    gap: str  # between the items of a group
    group_gap: str  # between the groups
    packed_views: bool  # "cdkbpR" rather than "c d k b p R"
    views_label: bool  # "screens" after the screen keys


LAYOUTS = (
    Layout(padded=True, gap="", group_gap="   ", packed_views=False, views_label=True),
    Layout(padded=False, gap="  ", group_gap="  │ ", packed_views=False, views_label=True),
    Layout(padded=False, gap=" ", group_gap=" │ ", packed_views=False, views_label=True),
    Layout(padded=False, gap=" ", group_gap=" ", packed_views=False, views_label=True),
    Layout(padded=False, gap=" ", group_gap=" ", packed_views=True, views_label=True),
    Layout(padded=False, gap=" ", group_gap=" ", packed_views=True, views_label=False),
)


def key_display(app: App[object], binding: Binding) -> str:
    return binding.key_display or app.get_key_display(binding)


def as_mapped(app: App[object], binding: Binding) -> Binding:
    """The binding with the key the operator gave it (settings.toml [keys], through Textual's
    keymap), for the lists read from BINDINGS rather than from the active bindings."""
    key = app._keymap.get(binding.id or "")
    return binding.with_key(key, key_display=None) if key else binding


class KeyBar(Static):
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $panel;
        color: $text;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    KeyBar.-two-lines { text-wrap: wrap; }
    """

    shown: Text = Text()

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.show_keys()

    def on_resize(self, event: events.Resize) -> None:
        self.show_keys()

    def _bindings_changed(self, screen: Screen[object]) -> None:
        if self.is_attached and screen is self.screen:
            self.show_keys()

    # -- what is shown -----------------------------------------------------------------

    def _groups(self) -> Groups:
        """(the screen's keys: display, description, enabled), (screen-switching keys: display,
        is the current screen), (help and quit: display, description)."""
        app = self.app
        own: list[tuple[str, str, bool, str | None]] = []
        actions: set[str] = set()
        # A key whose command the release engine refuses now is dimmed (the screen asks it).
        refused = getattr(self.screen, "refused", lambda action: None)
        for node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if node is app or not binding.show or binding.action in actions:
                continue
            actions.add(binding.action)
            enabled = enabled and not refused(binding.action)
            own.append((key_display(app, binding), binding.description or binding.action, enabled, binding.id))
        # In the screen's order, whatever keys the operator gave them.
        order = {b.id: i for i, b in enumerate(getattr(self.screen, "BINDINGS", ())) if isinstance(b, Binding)}
        own.sort(key=lambda item: order.get(item[3], len(order)))
        current = f"view.{getattr(app, 'current_mode', '')}"
        views: list[tuple[str, bool]] = []
        tail: list[tuple[str, str]] = []
        for binding in app.BINDINGS:
            if not isinstance(binding, Binding) or not binding.show or not binding.id:
                continue
            binding = as_mapped(app, binding)
            if binding.id.startswith("view."):
                if binding.id.removeprefix("view.") in getattr(app, "hidden_modes", ()):
                    continue  # a view the runbook does not define
                views.append((key_display(app, binding), binding.id == current))
            elif binding.id in ("app.help", "app.quit"):
                tail.append((binding.id, key_display(app, binding), (binding.description or binding.action).lower()))
        tail.sort(key=lambda item: item[0] != "app.help")  # help, then quit
        return [item[:3] for item in own], views, [(key, description) for _, key, description in tail]

    @staticmethod
    def _items(text: Text, items: Iterable[tuple[str, str, bool]], layout: Layout) -> None:
        for index, (key, description, enabled) in enumerate(items):
            if index and layout.gap:
                text.append(layout.gap)
            text.append(f" {key} " if layout.padded else key, style=KEY if enabled else KEY_DISABLED)
            text.append(("" if layout.padded else " ") + description + (" " if layout.padded else ""),
                        style="" if enabled else "dim")

    def render_keys(self, layout: Layout, *, two_lines: bool = False, groups: Groups | None = None) -> Text:
        """The line in `layout`; `two_lines`: the screen's own keys on the first line, the
        screens, help and quit on the second (for a terminal too narrow for one line).
        `groups`: the keys as `_groups()` gives them, when the caller has them already."""
        own, views, tail = groups if groups is not None else self._groups()
        text = Text(no_wrap=not two_lines, overflow="ellipsis" if not two_lines else "fold")
        if layout.padded:
            text.append(" ")
        self._items(text, own, layout)
        if views:
            if own:
                text.append("\n" if two_lines else layout.group_gap)
            for index, (key, current) in enumerate(views):
                if index and not layout.packed_views:
                    text.append(" ")
                text.append(key, style=CURRENT_VIEW if current else VIEW_KEY)
            if layout.views_label:
                text.append(" screens", style=LABEL)
        if tail:
            text.append(layout.group_gap)
            self._items(text, [(key, description, True) for key, description in tail], layout)
        return text

    def show_keys(self) -> None:
        width = self.size.width or self.app.size.width
        # Asked once for every layout tried: the screen's active bindings, and the engine
        # about each key, are most of the bar's cost (it is redrawn as each check lands).
        groups = self._groups()
        # Too narrow for one line even at its tightest (60 columns): two lines, never cut.
        text = self.render_keys(LAYOUTS[-1], two_lines=True, groups=groups)
        for layout in LAYOUTS:
            candidate = self.render_keys(layout, groups=groups)
            if candidate.cell_len <= width:
                text = candidate
                break
        self.set_class(not text.no_wrap, "-two-lines")
        if same(text, self.shown) and self.shown.plain:
            return  # unchanged: no layout, no frame
        self.shown = text  # what is on the line, for tests and the curious
        self.update(text)
