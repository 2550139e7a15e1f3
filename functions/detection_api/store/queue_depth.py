"""``detection_queue_depth{queue}``: the length of the rq queues, read from Redis at scrape time.

Shared by the function's and the forwarder's metrics endpoints (both export it), so it lives
below both of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from detection_api.store.tak_jobs import NOTIFY_QUEUE_NAME, QUEUE_NAME


class QueueDepthCollector(Collector):
    """``detection_queue_depth{queue}``: LLEN of the rq queues, read at scrape time."""

    def __init__(self, redis_factory: Callable[[], Redis]) -> None:
        self._redis_factory = redis_factory

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "detection_queue_depth", "Jobs waiting in the rq queue", labels=["queue"]
        )
        try:
            with self._redis_factory().pipeline(transaction=False) as pipe:
                for name in (QUEUE_NAME, NOTIFY_QUEUE_NAME):
                    pipe.llen(f"rq:queue:{name}")
                depths = pipe.execute()
        except RedisError:
            return  # absent rather than a misleading 0 while Redis is down
        for name, depth in zip((QUEUE_NAME, NOTIFY_QUEUE_NAME), depths, strict=True):
            family.add_metric([name], float(depth))
        yield family
