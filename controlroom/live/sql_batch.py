"""SQL KPIs of one database read in one round trip when their polls coincide.

Each SQL KPI is one scalar query ("the first column of the first row"). The pollers of one
interval wake on the same grid (`controlroom.live.polling`), so their queries arrive together;
`ScalarBatch` gathers the ones that arrive in the same moment and sends them as one statement,

    SELECT (<query 1>) AS v0, (<query 2>) AS v1, …

one round trip and one decode instead of one per KPI. What the batch must never do is let
one KPI spoil the others:
  * a query the batch cannot hold (it returns several rows or columns, or fails on its own)
    is found when a batch fails: every query of it is then run alone, and the ones that
    misbehaved run alone from then on — unless none answered alone either: then the database
    is what failed (it restarts, the network drops), and nothing is learnt of the queries;
  * a batch may take half the shortest deadline of its queries (and half the database's
    statement timeout); one that takes longer cannot say which query was slow: each is then
    run alone in what is left of its deadline, and batching stops for `pause_after_timeout_s`.
    A query that needs more than half its deadline can time out in that one poll;
  * a batch that fails while each of its queries answers alone (`SELECT 1; -- note`) cannot
    say which one spoils it either: batching stops for `pause_after_timeout_s` as well.
A lone query, or a batch of one, is the plain query it always was. UI-free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlroom.live.sources import Database

PAUSE_AFTER_TIMEOUT_S = 600.0


def batched_statement(queries: list[str]) -> str:
    """One statement whose columns are the queries' scalar values, in order. Each query is
    wrapped on lines of its own, so a trailing `-- comment` cannot swallow the parenthesis."""
    return "SELECT " + ", ".join(f"(\n{query.strip().rstrip(';').strip()}\n) AS v{index}"
                                 for index, query in enumerate(queries))


class ScalarBatch:
    """Scalar queries against one database, batched when they arrive together."""

    def __init__(self, database: "Database", *, pause_after_timeout_s: float = PAUSE_AFTER_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.database = database
        self.pause_after_timeout_s = pause_after_timeout_s
        self.clock = clock
        self.alone: set[str] = set()  # queries that spoil a batch: always run alone
        self.paused_until = 0.0
        self.round_trips = 0  # statements sent, batched or not (for tests and benchmarks)
        self._waiting: list[tuple[str, float | None, asyncio.Future[Any]]] = []
        self._flush_pending = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def value(self, query: str, *, timeout: float | None = None) -> Any:
        """The query's first column of its first row (None: no row)."""
        if query in self.alone or self.clock() < self.paused_until:
            return await self._alone(query, timeout)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((query, timeout, future))
        if not self._flush_pending:
            self._flush_pending = True
            # Two hops of the loop: the polls woken in the same moment each start a task of
            # their own (wait_for) before they reach here; they all get in.
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_pending = False
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._send(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, waiting: list[tuple[str, float | None, asyncio.Future[Any]]]) -> None:
        # Without the callers that gave up; in the queries' order, so that one set of KPIs is
        # always the same statement (prepared once, whatever order the polls woke in).
        waiting = sorted((entry for entry in waiting if not entry[2].done()), key=lambda entry: entry[0])
        if len(waiting) == 1:
            await self._settle(*waiting[0])
            return
        if not waiting:
            return
        # Half the shortest deadline, and under the database's own statement timeout (which
        # would cancel the whole statement: its queries run one after another).
        limits = [timeout for _, timeout, _ in waiting if timeout is not None] + [self.database.statement_timeout_s]
        began = self.clock()
        try:
            self.round_trips += 1
            rows = await self.database.fetch(batched_statement([query for query, _, _ in waiting]),
                                             timeout=min(limits) / 2)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - each alone says what it is
            spent = self.clock() - began
            if _timed_out(error):  # nobody can say which query was slow
                self.paused_until = self.clock() + self.pause_after_timeout_s
                await asyncio.gather(*(self._settle(query, None if timeout is None else max(0.05, timeout - spent), future)
                                       for query, timeout, future in waiting))
                return
            outcomes = await asyncio.gather(*(self._settle(*entry) for entry in waiting))
            if all(outcome == "ok" for outcome in outcomes):
                # Each answers alone, together they fail (say `SELECT 1; -- note`): who cannot
                # be told; batching waits, as after a timeout.
                self.paused_until = self.clock() + self.pause_after_timeout_s
            elif any(outcome == "ok" for outcome in outcomes):  # the others spoil it (none answering: the database)
                self.alone.update(query for (query, _, _), outcome in zip(waiting, outcomes)
                                  if outcome in ("failed", "misfit"))
            return
        row = rows[0]
        for index, (_, _, future) in enumerate(waiting):
            if not future.done():
                future.set_result(row[index])

    async def _settle(self, query: str, timeout: float | None, future: asyncio.Future[Any]) -> str:
        """Run one query alone and hand its answer (or error) to the caller who waits for it.
        Says how it went: "ok", "misfit" (more than one row or column: it answers, but no
        batch can hold it), "failed" or "timed out"."""
        try:
            rows = await self._rows(query, timeout)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - the caller's poll reports it
            if not future.done():
                future.set_exception(error)
            return "timed out" if _timed_out(error) else "failed"
        if not future.done():
            future.set_result(first_value(rows))
        return "misfit" if len(rows) > 1 or (rows and len(rows[0]) != 1) else "ok"

    async def _alone(self, query: str, timeout: float | None) -> Any:
        rows = await self._rows(query, timeout)
        return first_value(rows)

    async def _rows(self, query: str, timeout: float | None) -> list[Any]:
        self.round_trips += 1
        return await self.database.fetch(query, timeout=timeout)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def first_value(rows: list[Any]) -> Any:
    """A scalar query's answer: the first column of the first row (None: no row)."""
    return rows[0][0] if rows and len(rows[0]) else None


def _timed_out(error: BaseException) -> bool:
    """Our deadline, or the server's statement_timeout (asyncpg's QueryCanceledError)."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return True
    import asyncpg  # loaded by then: the feeds' pool made the connection

    return isinstance(error, asyncpg.exceptions.QueryCanceledError)
