"""Settings are parsed and checked at start: one line per bad configuration, secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from detection_api.settings import ConfigError, Settings, load_settings, secret

WEBHOOK = "https://discord.example/api/webhooks/1/not-a-real-token"  # placeholder, never real
JWT = "j" * 40  # test-only


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch):
    """A clean environment for Settings (nothing inherited from the shell running the tests)."""
    for name in os.environ:
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def refused() -> str:
    """The one-line message of loading the environment's settings."""
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("RATE_LIMIT", "lots", "RATE_LIMIT='lots': not a rate limit"),
        ("MAX_BODY_BYTES", "1MB?", "MAX_BODY_BYTES='1MB?': Input should be a valid integer"),
        ("AUTH_FAILURE_RATE_LIMIT", "5 per", "AUTH_FAILURE_RATE_LIMIT='5 per'"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL='chatty': must be DEBUG"),
        ("JWT_ALGORITHM", "none", "JWT_ALGORITHM='none'"),
        ("TAK_URL", "http://tak:8087", "TAK_URL='http://tak:8087': must start with tls://"),
        ("COT_TYPE_MAP", "[1]", "COT_TYPE_MAP='[1]'"),
        ("MAX_DETECTIONS_PER_REQUEST", "1000", "MAX_DETECTIONS_PER_REQUEST='1000'"),
        ("DETECTION_EVENT_TYPES", " , ", "DETECTION_EVENT_TYPES"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_with_an_example(
    env, name: str, value: str, expected: str
) -> None:
    env(**{name: value})
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert expected in message
    assert f"(example: {name}=" in message
    assert "\n" not in message


def test_secrets_are_named_but_never_shown(env) -> None:
    env(JWT_SECRET_KEY="short-secret-value", REDIS_URL="http://user:hunter2-password@redis:1/0")
    message = refused()
    assert "JWT_SECRET_KEY: must be at least 32 bytes" in message
    assert "REDIS_URL: must be a redis://" in message
    assert "short-secret-value" not in message and "hunter2" not in message


def test_eventing_oidc_needs_an_audience(env) -> None:
    env(EVENTING_OIDC_ISSUER="https://kubernetes.default.svc", EVENTING_OIDC_JWKS_FILE="/jwks")
    message = refused()
    assert message.startswith("invalid configuration: EVENTING_OIDC_AUDIENCE: required")
    env(EVENTING_OIDC_AUDIENCE="detection-api")
    assert load_settings().eventing_oidc_audience == "detection-api"


def test_an_empty_value_means_the_default(env) -> None:
    env(RATE_LIMIT="", MAX_BODY_BYTES="", DISCORD_WEBHOOK_URL="", JWT_SECRET_KEY="")
    settings = load_settings()
    assert settings.rate_limit == "100/second"
    assert settings.max_body_bytes == 1_048_576
    assert settings.discord_webhook_url is None and settings.jwt_secret_key is None


def test_secrets_never_appear_in_a_repr(env) -> None:
    env(
        JWT_SECRET_KEY=JWT,
        DISCORD_WEBHOOK_URL=WEBHOOK,
        TAK_TLS_P12_PASSWORD="p12-password-value",
        REDIS_URL="redis://:redis-password-value@redis:6379/0",
        JWT_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----private-key-value",
    )
    settings = load_settings()
    shown = repr(settings) + str(settings) + repr(settings.model_dump())
    for value in (JWT, "not-a-real-token", "p12-password-value", "redis-password-value"):
        assert value not in shown
    assert "private-key-value" not in shown
    assert secret(settings.discord_webhook_url) == WEBHOOK
    assert isinstance(settings.redis_url, SecretStr)


def test_every_error_is_reported_on_the_one_line(env) -> None:
    env(RATE_LIMIT="lots", PORT="eighty")
    message = refused()
    assert "RATE_LIMIT=" in message and "PORT=" in message and "\n" not in message


@pytest.mark.parametrize("verb", [["worker"], ["queue", "status"], ["up", "--no-tak"]])
def test_the_console_script_refuses_a_bad_setting_with_one_line(verb: list[str]) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "detection-api"), *verb],
        env={"PATH": "/usr/bin:/bin", "RATE_LIMIT": "lots", "JWT_SECRET_KEY": JWT},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "RATE_LIMIT='lots'" in done.stderr and JWT not in done.stderr
