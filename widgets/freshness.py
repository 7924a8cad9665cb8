"""How fresh a source's state is, in words: "read 12s ago", STALE when it is, and its error."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from controlroom.live.polling import PollState, format_age
from controlroom.live.sources import plain


def append_freshness(text: Text, state: PollState[Any], now: float, *, lead: str = " · ", error_lead: str = " · ") -> Text:
    age = state.age(now)
    text.append(f"{lead}read {format_age(age)} ago" if age is not None else f"{lead}not read yet")
    if state.stale(now):
        text.append(" STALE", style="bold yellow")
    if state.error:
        text.append(f"{error_lead}{plain(state.error, limit=120)}", style="yellow")
    return text
