"""Who is at the keyboard, for attestations and the journal.

The login name comes from the process's real uid (not $USER, which anyone can set); under
sudo the invoking user is named too. The SSH client's address is added when there is one.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Operator:
    user: str
    address: str | None = None

    @property
    def by(self) -> str:
        """'alice (from 10.0.0.5)' or 'alice'."""
        return f"{self.user} (from {self.address})" if self.address else self.user

    def as_record(self) -> dict[str, str]:
        record = {"user": self.user}
        if self.address:
            record["ssh_client"] = self.address
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
    return Operator(user, ssh[0] if ssh else None)
