"""The notifier's shared rate limit (a Lua script, against a real Redis) and its configuration.
The loop itself runs against a real Redis and HTTP receiver in tests/integration/test_notifier.py.
(Named after its package: tests/integration/test_notifier.py is imported as ``test_notifier``.)"""

from __future__ import annotations

import pytest
from redis import Redis

from detection_api.alerts.notifier import SENT_KEY, Notifier, NotifierConfig
from detection_api.local.procs import wait_until
from detection_api.settings import ConfigError, get_settings

WEBHOOK = "https://discord.example/api/webhooks/1/placeholder-token-0123456789"  # not real


def _notifier(redis: Redis, name: str, **options: object) -> Notifier:
    return Notifier(redis, NotifierConfig(webhook_url=WEBHOOK, **options), name=name)  # type: ignore[arg-type]


def test_n_posts_per_window_then_the_wait_until_the_oldest_leaves_it(redis: Redis):
    notifier = _notifier(redis, "a", max_per_minute=3, rate_window_seconds=60)
    assert [notifier.take_slot() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = notifier.take_slot()
    assert 59.0 < wait <= 60.0
    assert redis.zcard(SENT_KEY) == 3  # a refused attempt takes nothing
    assert 59_000 < redis.pttl(SENT_KEY) <= 60_000  # forgotten with the window


def test_all_notifiers_share_one_limit(redis: Redis):
    first = _notifier(redis, "a", max_per_minute=2)
    second = _notifier(redis, "b", max_per_minute=2)
    assert first.take_slot() == 0.0
    assert second.take_slot() == 0.0
    assert first.take_slot() > 0
    assert second.take_slot() > 0


def test_a_slot_frees_when_its_send_leaves_the_window(redis: Redis):
    notifier = _notifier(redis, "a", max_per_minute=1, rate_window_seconds=0.3)
    assert notifier.take_slot() == 0.0
    assert 0 < notifier.take_slot() <= 0.3
    wait_until(lambda: notifier.take_slot() == 0.0, 5, what="the slot freed")


def test_the_config_never_shows_the_webhook_url():
    config = NotifierConfig(webhook_url=WEBHOOK, max_per_minute=3)
    assert "placeholder" not in repr(config)
    assert "max_per_minute=3" in repr(config)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "discord.com/api/webhooks/1/x", "http://"])
def test_a_webhook_url_that_cannot_be_posted_to_stops_the_process_at_start(monkeypatch, url):
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", url)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError) as error:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(error.value).startswith("invalid configuration: DISCORD_WEBHOOK_URL: must be an")
    assert "passwd" not in str(error.value) and "webhooks" not in str(error.value)
