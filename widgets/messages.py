"""The UI's messages, in one place."""

from __future__ import annotations

from typing import Any

from textual.message import Message

from controlroom.live.polling import PollState


class Polled(Message):
    """A poller has a new state. A queued one for the same source is superseded."""

    def __init__(self, source: str, state: PollState[Any]) -> None:
        super().__init__()
        self.source = source
        self.state = state

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Polled) and message.source == self.source
