"""Who is at the keyboard, for attestations and the journal.

The login name comes from the process's real uid (not $USER, which anyone can set); under
sudo the invoking user is named too. The SSH client's address is added when there is one,
and the host the control room runs on (the bastion), which `--host LABEL` (or
$CONTROLROOM_HOST) may name instead: several operators of one release are told apart as
user@host.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Mapping
from dataclasses import dataclass


HOST_VARIABLE = "CONTROLROOM_HOST"
MAX_HOST_CHARS = 64


@dataclass(frozen=True)
class Operator:
    user: str
    address: str | None = None
    host: str = ""

    def __str__(self) -> str:
        """'alice@bastion-2', as the other operators of a release see who drives."""
        return f"{self.user}@{self.host}" if self.host else self.user

    @property
    def by(self) -> str:
        """'alice (from 10.0.0.5)' or 'alice'."""
        return f"{self.user} (from {self.address})" if self.address else self.user

    def as_record(self) -> dict[str, str]:
        record = {"user": self.user}
        if self.address:
            record["ssh_client"] = self.address
        if self.host:
            record["host"] = self.host
        return record


def current_operator(environ: Mapping[str, str] | None = None, *, uid: int | None = None) -> Operator:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (some containers): still record something
        user = f"uid {uid}"
    sudo_user = env.get("SUDO_USER")
    if sudo_user and sudo_user != user:
        user = f"{sudo_user} (as {user})"
    ssh = env.get("SSH_CLIENT", "").split()
    return Operator(user, ssh[0] if ssh else None, host_label(env))


def host_label(environ: Mapping[str, str] | None = None) -> str:
    """$CONTROLROOM_HOST (what `--host` sets), else the machine's host name: letters, digits,
    '.', '_', ':' and '-' only (other operators see it), at most 64."""
    env = os.environ if environ is None else environ
    label = env.get(HOST_VARIABLE, "").strip() or socket.gethostname()
    label = "".join(ch for ch in label if ch.isalnum() or ch in "._:-")  # shown to other operators
    return label[:MAX_HOST_CHARS] or "unknown-host"


def operator_label(record: Mapping[str, object]) -> str:
    """'alice@bastion-2' from a journal record's operator (older records have no host)."""
    user = str(record.get("user", "") or "someone")
    host = str(record.get("host", "") or "")
    return f"{user}@{host}" if host else user
