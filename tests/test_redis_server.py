"""local/redis_server.py: the persistence a started Redis runs with."""

from __future__ import annotations

from pathlib import Path

from detection_api.local.redis_server import DEFAULT_SAVE_POINTS, RedisServer


def _persistence(server: RedisServer) -> dict[str, str]:
    client = server.client(decode_responses=True)
    try:
        names = (
            "appendonly",
            "appendfsync",
            "save",
            "auto-aof-rewrite-percentage",
            "hash-max-ziplist-value",
        )
        return {name: client.config_get(name)[name] for name in names}
    finally:
        client.close()


def test_default_keeps_snapshots_and_aof_rewrites(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path / "redis").start()
    try:
        settings = _persistence(server)
    finally:
        server.stop()
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] == "always"
    assert settings["save"] == " ".join(f"{s} {c}" for s, c in DEFAULT_SAVE_POINTS)
    assert settings["auto-aof-rewrite-percentage"] == "100"
    assert settings["hash-max-ziplist-value"] == "2048"  # single-delivery jobs stay listpacks


def test_without_save_points_or_rewrites_nothing_forks_but_every_write_is_fsynced(
    tmp_path: Path,
) -> None:
    server = RedisServer(data_dir=tmp_path / "redis", save_points=(), aof_rewrites=False).start()
    try:
        settings = _persistence(server)
    finally:
        server.stop()
    assert settings == {
        "appendonly": "yes",
        "appendfsync": "always",
        "save": "",
        "auto-aof-rewrite-percentage": "0",
        "hash-max-ziplist-value": "2048",
    }
