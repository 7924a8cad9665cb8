"""A driver of a shared release in a process of its own, for tests that kill it.

    python tests/shared_driver.py CONFIG JOURNAL_DIR

Opens the environment's shared release with --write as alice@bastion-1, starts the
deployment, completes the first phase and runs the deploy step (the config's deploy command:
the test makes it long), printing RUNNING just before.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from controlroom.config.loader import load_config
from controlroom.release.engine import ReleaseEngine


async def main(config: str, journals: str) -> None:
    engine = ReleaseEngine.open(load_config(config), write=True, journal_dir=Path(journals),
                                operator={"user": "alice", "host": "bastion-1"})
    await engine.start_deploy("v2.15.0", override_reason="a driver to be killed")
    phase = engine.current_phase()
    assert phase is not None
    for step_id in engine.open_steps(phase.id):
        engine.mark_done(step_id, "done by hand")
    engine.next_phase()
    print("RUNNING", flush=True)
    await engine.run_step("deploy-code")
    print("FINISHED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
