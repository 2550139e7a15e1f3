"""Why a warm forwarder into a logging taky (``log_cot``) was measured at 0.51-0.60 of a raw
sender from outside while ``bench.forwarder`` reports ~0.93: the same pair of senders into
fresh takys with and without ``log_cot``, and into ONE long-lived taky (raw, then ours, then raw
again), as an outside measurement against a running server does it.

taky 0.10 keeps every ``a-*`` event whose ``stale`` is in the future in an in-memory store and,
on each new one, walks the whole store to prune stale entries (``Persistence.track_event`` ->
``prune``): the cost of an event grows with the events received in the last
``COT_STALE_SECONDS``. Whoever sends second into the same taky pays for the first.
"""

from __future__ import annotations

import configparser
import logging
import tempfile
from pathlib import Path

from bench import Row
from bench.tak_interop import forwarder_rate, raw_rate
from detection_api.local.pki import generate_pki
from detection_api.local.ports import free_port
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer
from detection_api.tak.transport import ConfirmMode

EVENTS = 3_000


class NoLogTaky(TakyServer):
    """Our taky harness without ``log_cot``."""

    def write_config(self) -> None:
        super().write_config()
        config = configparser.ConfigParser()
        config.read(self.config_path)
        config.remove_option("cot_server", "log_cot")
        with self.config_path.open("w") as out:
            config.write(out)


def run() -> list[Row]:
    logging.getLogger("detection_api").setLevel(logging.WARNING)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-taky-store-") as tmp_name:
        tmp = Path(tmp_name)
        pki = generate_pki(tmp / "pki")
        redis_server = RedisServer(data_dir=tmp / "redis", port=free_port()).start()
        runs = iter(range(1, 1000))

        def fresh(kind: type[TakyServer]) -> TakyServer:
            return kind(root_dir=tmp / f"taky-{next(runs)}", pki=pki, tls=True).start()

        try:
            redis = redis_server.client()
            for label, kind in (("log_cot", TakyServer), ("no log_cot", NoLogTaky)):
                taky = fresh(kind)
                raw = raw_rate(taky.url, pki, next(runs), EVENTS)
                taky.stop()
                taky = fresh(kind)
                ours = forwarder_rate(redis, taky.url, pki, ConfirmMode.PONG, next(runs), EVENTS)
                taky.stop()
                rows.append(
                    Row(
                        f"taky TLS {label}, a fresh taky for each sender",
                        ours,
                        "events/s",
                        raw,
                        "raw TLS sender, fresh taky",
                    )
                )
            taky = fresh(TakyServer)
            try:
                raw = raw_rate(taky.url, pki, next(runs), EVENTS)
                ours = forwarder_rate(redis, taky.url, pki, ConfirmMode.PONG, next(runs), EVENTS)
                raw_again = raw_rate(taky.url, pki, next(runs), EVENTS)
            finally:
                taky.stop()
            rows.append(
                Row(
                    "taky TLS log_cot, ONE taky: ours after the raw sender",
                    ours,
                    "events/s",
                    raw,
                    "raw TLS sender first into the same taky",
                )
            )
            rows.append(
                Row(
                    "taky TLS log_cot, ONE taky: raw sender again, third",
                    raw_again,
                    "events/s",
                    raw,
                    "the same raw sender, first",
                )
            )
        finally:
            redis_server.stop()
    return rows


if __name__ == "__main__":
    for row in run():
        print(
            f"{row.name}: {row.value:,.0f} events/s  baseline {row.baseline:,.0f}  "
            f"ratio {row.ratio:.2f}"
        )
