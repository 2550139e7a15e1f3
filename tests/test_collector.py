"""``settle_collector``: start-up's objects frozen, the young generation's threshold raised."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from detection_api.app.collector import YOUNG_THRESHOLD, settle_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    _, middle, old = gc.get_threshold()
    alive_before = [object()]  # a container: tracked by the collector until frozen
    settle_collector()
    assert gc.get_freeze_count() > 1000
    assert not any(o is alive_before for o in gc.get_objects())  # no collection visits it
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)


@pytest.mark.usefixtures("restored_collector")
def test_cycles_are_still_collected() -> None:
    settle_collector()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the two nodes (and their dicts) of the cycle
