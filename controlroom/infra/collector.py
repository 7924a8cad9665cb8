"""When Python's cycle collector may stop the control room: not while the operator types.

A full (generation-2) collection walks every tracked object. Once the views are built that is
~130,000 objects — widgets, styles, the runbook — and a pass took 100–130 ms, several times a
minute: the p99 of a screen switch was one of those pauses, not the switch. Nearly all of those
objects live as long as the control room, so once they are built they are frozen
(`gc.freeze()`: kept out of every later collection; reference counting still frees them) and a
full pass walks only what came after: ~25 ms.

What freezing costs: a frozen object that later becomes part of an unreachable cycle is never
collected. So the freeze is renewed while nobody types (no key for `idle_s`, at most every
`renew_s`): unfreeze, collect everything, freeze again — one long pass, when no key waits
on it. Nor while probes run (`probes_running()`): a long pass stops every thread, and would
land in the latency a probe measures. UI-free: the app tells it when a key came and asks it on
its clock tick.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FIRST_IDLE_S = 1.0  # the first freeze, once the views are built: at the first pause in the typing
IDLE_S = 5.0
RENEW_S = 600.0

_probe_runs = 0  # in progress in this process (as the cycle collector is the process's)


@contextmanager
def probes_running() -> Iterator[None]:
    """While probes run, and measure latencies, no long pass starts (the release engine holds
    this around every probe run: the whole checklist or one item)."""
    global _probe_runs
    _probe_runs += 1
    try:
        yield
    finally:
        _probe_runs -= 1


class Collector:
    def __init__(self, *, first_idle_s: float = FIRST_IDLE_S, idle_s: float = IDLE_S, renew_s: float = RENEW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first_idle_s = first_idle_s
        self.idle_s = idle_s
        self.renew_s = renew_s
        self.clock = clock
        self.built = False  # the app says when what lives as long as it is built
        self.frozen_at: float | None = None
        self.last_input_at = clock()
        self.renewals = 0

    def settle(self) -> None:
        """Everything alive now lives as long as the control room: collect, then freeze it."""
        gc.collect()
        gc.freeze()
        self.frozen_at = self.clock()

    def input(self) -> None:
        """A key (or a click) came: the next long pass waits for a pause."""
        self.last_input_at = self.clock()

    def tick(self) -> bool:
        """Freeze once everything is built, then renew the freeze when it is due, each time
        only while nobody is typing and no probe runs; True if it did either."""
        now = self.clock()
        if not self.built or _probe_runs:
            return False
        if self.frozen_at is None:
            if now - self.last_input_at < self.first_idle_s:
                return False
            self.settle()
            return True
        if now - self.frozen_at < self.renew_s or now - self.last_input_at < self.idle_s:
            return False
        gc.unfreeze()
        self.settle()
        self.renewals += 1
        return True

    def release(self) -> None:
        """Back to Python's own collection (the control room closes; a test ends)."""
        if self.frozen_at is not None:
            gc.unfreeze()
            self.frozen_at = None
