"""The one way the control room opens Postgres connections (probes, live panels, steps).

    settings = PgSettings(purpose="probes", connect_timeout_s=5, statement_timeout_s=10,
                          transaction_pooler=loaded.environment.transaction_pooler)
    conn = await settings.connect(dsn)          # or: await settings.create_pool(dsn, max_size=4)

Every connection is named `controlroom/<purpose>` (so a DBA can tell a probe from a step in
`pg_stat_activity`), carries a server-side `statement_timeout`, and gives up connecting after
`connect_timeout_s`. Behind a transaction pooler (pgbouncer, Supavisor in transaction mode)
consecutive statements may reach different server connections, where a statement prepared
on another one does not exist: there asyncpg's statement cache is off.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported on the first connection: the TUI's first frame needs none (~20 ms)
    import asyncpg

APPLICATION_PREFIX = "controlroom/"
SUPABASE_TRANSACTION_POOLER_PORT = 6543
# Without a command timeout of its own, the client waits this much longer than the server's
# statement_timeout, so the server's clearer "canceling statement" error arrives first.
CLIENT_GRACE_S = 1.0


@dataclass(frozen=True)
class PgSettings:
    purpose: str  # "probes", "live", "steps": the application_name's suffix
    connect_timeout_s: float
    statement_timeout_s: float
    command_timeout_s: float | None = None  # client-side; None: statement timeout + grace
    transaction_pooler: bool = False
    read_only: bool = False
    idle_in_transaction_timeout_s: float | None = None
    # The server probes an idle client this often (s) and drops it after 3 unanswered probes:
    # a control room whose network went away releases its locks in ~3× this, not hours later.
    keepalive_s: int | None = None

    @property
    def application_name(self) -> str:
        return APPLICATION_PREFIX + self.purpose

    def asyncpg_options(self) -> dict[str, Any]:
        """The keyword arguments `asyncpg.connect` and `asyncpg.create_pool` share."""
        server_settings = {
            "application_name": self.application_name,
            "statement_timeout": _milliseconds(self.statement_timeout_s),
        }
        if self.read_only:
            server_settings["default_transaction_read_only"] = "on"
        if self.idle_in_transaction_timeout_s is not None:
            server_settings["idle_in_transaction_session_timeout"] = _milliseconds(self.idle_in_transaction_timeout_s)
        if self.keepalive_s is not None:
            server_settings |= {"tcp_keepalives_idle": str(self.keepalive_s),
                                "tcp_keepalives_interval": str(self.keepalive_s), "tcp_keepalives_count": "3"}
        command_timeout_s = self.command_timeout_s
        if command_timeout_s is None:
            command_timeout_s = self.statement_timeout_s + CLIENT_GRACE_S
        options: dict[str, Any] = {
            "timeout": self.connect_timeout_s,
            "command_timeout": command_timeout_s,
            "server_settings": server_settings,
        }
        if self.transaction_pooler:
            options["statement_cache_size"] = 0
        return options

    async def connect(self, dsn: str) -> asyncpg.Connection:
        """One connection; the caller closes it."""
        import asyncpg  # the first connection pays for the import, not start-up

        return await asyncpg.connect(dsn, **self.asyncpg_options())

    async def create_pool(
        self, dsn: str, *, min_size: int = 1, max_size: int = 4, max_inactive_connection_lifetime: float = 60.0
    ) -> asyncpg.Pool:
        """A pool whose every connection is set up as `connect` sets up one."""
        import asyncpg  # the first pool pays for the import, not start-up

        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            max_inactive_connection_lifetime=max_inactive_connection_lifetime,
            **self.asyncpg_options(),
        )


def _milliseconds(seconds: float) -> str:
    return str(int(seconds * 1000))


TRANSACTION_POOLER_REFUSAL = ("the shared journal needs advisory locks and LISTEN/NOTIFY, which a transaction-mode "
                              "pooler does not support: use session mode (port 5432) or a direct connection")


def dsn_ports(dsn: str) -> list[int]:
    """The ports a DSN names (a URL, with several hosts or one, or key=value words); [] when
    it names none (the default 5432) or cannot be read."""
    if "://" in dsn:
        netloc = urlsplit(dsn).netloc.rpartition("@")[2]
        return [int(port) for port in re.findall(r":(\d+)(?=,|$)", netloc)]
    return [int(port) for port in re.findall(r"(?:^|\s)port\s*=\s*'?(\d+)", dsn)]


def pooler_warnings(pooler_chosen: bool, dsns: Mapping[str, str]) -> list[str]:
    """A hint for each database whose DSN uses Supabase's transaction-pooler port while the
    environment does not say what its DSNs go through (prepared statements would fail)."""
    if pooler_chosen:
        return []
    return [
        f"database {name!r}: port {SUPABASE_TRANSACTION_POOLER_PORT} is Supabase's transaction pooler: "
        f'set pooler = "transaction" in [environment] (prepared statements fail behind it), '
        f'or pooler = "session" / "none" if this one is not'
        for name, dsn in dsns.items()
        if SUPABASE_TRANSACTION_POOLER_PORT in dsn_ports(dsn)
    ]
