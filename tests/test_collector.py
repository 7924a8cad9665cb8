"""Full garbage collections wait for a pause in the typing: what the views are made of is
frozen once built, and the freeze is renewed only while nobody types."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlroom.infra.collector import Collector


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_frozen_at_the_first_pause_once_built_and_renewed_only_while_nobody_types() -> None:
    clock = Clock()
    collector = Collector(first_idle_s=1, idle_s=5, renew_s=600, clock=clock)
    clock.now += 10
    assert not collector.tick() and gc.get_freeze_count() == 0  # the views are not built yet
    collector.built = True
    collector.input()
    clock.now += 0.5
    assert not collector.tick()  # typing
    clock.now += 1
    assert collector.tick() and gc.get_freeze_count() > 0 and collector.frozen_at == clock.now
    assert not collector.tick()  # frozen: nothing due

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    leaked = Cycle()
    del leaked  # a cycle made after the freeze: an ordinary collection still finds it
    assert gc.collect() >= 1

    clock.now += 600
    collector.input()
    assert not collector.tick() and collector.renewals == 0  # due, but a key just came
    clock.now += 5
    assert collector.tick() and collector.renewals == 1 and collector.frozen_at == clock.now
    collector.release()
    assert gc.get_freeze_count() == 0 and collector.frozen_at is None


async def test_the_control_room_freezes_once_its_views_are_built_and_lets_go_when_it_closes(tmp_path: Path) -> None:
    from controlroom.config.loader import load_config
    from controlroom.screens.app import make_app
    from pilot_support import wait_for
    from snapshot_support import config_toml

    path = tmp_path / "controlroom.toml"
    path.write_text(config_toml())
    app = make_app(load_config(path, environ={}), start_polling=False, check_on_start=False, offer_resume=False,
                   journal_dir=tmp_path / "journal")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: app.collector.frozen_at is not None, pilot, timeout=15, what="the freeze")
        assert app.collector.built and gc.get_freeze_count() > 10_000  # the views, their styles, the runbook
        await pilot.press("b", "k")
        assert app.collector.clock() - app.collector.last_input_at < 1  # keys count as typing
    assert gc.get_freeze_count() == 0


async def test_no_long_pass_while_the_engine_runs_probes_the_whole_checklist_or_one_item(tmp_path: Path) -> None:
    """A long pass stops every thread, so it would land in the latency a probe measures: the
    release engine holds the collector around every probe run, a single item's re-run too."""
    import asyncio

    from controlroom.release.engine import ReleaseEngine
    from probe_support import make_loaded

    loaded = make_loaded([{"id": "slow", "title": "Slow", "kind": "command", "run": "sleep 0.5"}], config_dir=tmp_path)
    session = ReleaseEngine.open(loaded, journal_dir=tmp_path, write=True)
    try:
        clock = Clock()
        collector = Collector(first_idle_s=1, clock=clock)
        collector.built = True
        clock.now += 10  # nobody typing: due
        for run in (session.run_checks, lambda: session.run_item("slow")):
            probing = asyncio.ensure_future(run())
            await asyncio.sleep(0.2)  # the probe is running
            assert not probing.done() and not collector.tick() and collector.frozen_at is None
            await probing
        assert collector.tick() and collector.frozen_at is not None  # and due once they are done
    finally:
        collector.release()
        session.close()
