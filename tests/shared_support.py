"""Helpers for tests of several control rooms on one shared release."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALICE = {"user": "alice", "host": "bastion-1"}
BOB = {"user": "bob", "host": "bastion-2"}
CAROL = {"user": "carol", "host": "bastion-3"}


def environment_config(config: Path, directory: Path, name: str, *, dsn: str | None = None, **environment: str) -> Path:
    """A copy of a sandbox's config (and its secrets file) for an environment of its own name,
    so that each test has a release of its own in the shared store; `environment` replaces
    keys of [environment] (e.g. deploy_command); `dsn` replaces the database's DSN (the
    shared store's too)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', config.read_text(encoding="utf-8"), count=1)
    for key, value in environment.items():
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value!r}".replace("'", '"'), text, count=1)
    secrets = (config.parent / "sandbox.env").read_text(encoding="utf-8")
    if dsn is not None:
        secrets = re.sub(r"(?m)^CONTROLROOM_SANDBOX_DSN=.*$", f"CONTROLROOM_SANDBOX_DSN={json.dumps(dsn)}", secrets)
    (directory / "sandbox.env").write_text(secrets, encoding="utf-8")
    (directory / "sandbox.env").chmod(0o600)
    path = directory / "controlroom.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def eventually(predicate: Callable[[], bool], *engines: Any, timeout: float = 5.0, what: str = "condition") -> float:
    """Refresh `engines` (take in what the store sent) until `predicate()` holds; the seconds
    it took. Fails after `timeout`, naming `what`."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        for engine in engines:
            engine.refresh()
        if predicate():
            return loop.time() - began
        assert loop.time() - began < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


class TcpProxy:
    """A TCP relay to a Postgres server that the test can cut (every connection through it
    reset, new ones refused) and restore: a control room's network lost and back, while the
    others' stay up. It runs on an event loop of its own, in a thread: the engines' calls
    block the test's loop while they wait for the store."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.partitioned = False
        self.server_notices_after_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> "TcpProxy":
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.partitioned:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    while self.partitioned:  # nothing crosses a partition
                        await asyncio.sleep(0.05)
                    sink.write(data)
                    await sink.drain()
            if upstream:  # the client went: across a partition the server learns it only later
                while self.partitioned:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(self.server_notices_after_s)
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def partition(self, on: bool, server_notices_after_s: float = 0.0) -> None:
        """A partition: while it lasts nothing crosses and nothing is closed; once healed, the
        server learns that a client closed its connection meanwhile only after
        `server_notices_after_s` (its next keepalive), so its session — and its locks — outlive
        the client's network for a while."""
        self.server_notices_after_s = server_notices_after_s
        self.partitioned = on

    def cut(self) -> None:
        """The network goes away: connections reset, new ones refused."""
        self._call(self._cut())

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._call(self._listen())

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def dsn(self, dsn: str) -> str:
        return re.sub(r"@127\.0\.0\.1:\d+/", f"@127.0.0.1:{self.port}/", dsn)
