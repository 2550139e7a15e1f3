"""The cyclic garbage collector's settings for the function's server process, applied once by
``functions/main.py`` when the app is built (in gunicorn's master, before it forks the worker).

Python collects its youngest generation every 700 container objects allocated and not yet freed,
and every so often all objects the process holds. Ingest allocates in bursts that refcounting
frees when the request ends: a list of 100 detections keeps ~1,500 containers alive at its peak,
so each list request ran about two young collections, and one request in a hundred a full one
over the ~80,000 objects of start-up (modules, the app, pydantic's schemas, numpy), ~40 ms, a
latency spike. Together 5% of a list's CPU in-process, 6% of the served worker's (``perf``).

- ``gc.freeze()`` moves everything alive after start-up into a permanent generation that no
  collection traverses (the practice the ``gc`` documentation gives for servers that fork: the
  worker also stops writing to, and so copying, the pages it shares with its master);
- the youngest generation is collected every ``YOUNG_THRESHOLD`` allocations instead of 700:
  above what several concurrent lists hold at once, so a request's own objects are freed by
  refcounting before a collection visits them. Reference cycles are still collected, a little
  later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_collector() -> None:
    """Collect start-up's garbage, freeze what is left, raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
