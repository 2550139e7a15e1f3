"""VerifiedTokens: a good token is verified once and remembered until the earlier of its exp and
max_age; a bad one is never remembered; the memory is bounded. The verifier is the real one."""

from __future__ import annotations

import time

import jwt
import pytest

from detection_api.app.token_cache import VerifiedTokens
from detection_api.auth import AuthError, Principal, TokenVerifier
from detection_api.settings import Settings

SECRET = "s" * 40  # test-only HS256 secret


def token(subject: str = "drone-7", lifetime: float = 3600, key: str = SECRET) -> str:
    """A real token, issued now: PyJWT checks it against the real clock."""
    now = time.time()
    claims = {
        "sub": subject,
        "scope": "detections:write",
        "iat": int(now),
        "exp": int(now + lifetime),
    }
    return jwt.encode(claims, key, "HS256")


class Counted:
    """The real TokenVerifier, counting how often it is asked."""

    def __init__(self) -> None:
        self.verifier = TokenVerifier(Settings(jwt_secret_key=SECRET, jwt_leeway_seconds=0))
        self.calls = 0

    def __call__(self, tok: str) -> Principal:
        self.calls += 1
        return self.verifier.verify(tok)


class Clock:
    """The cache's clock, moved by hand; it starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_good_token_is_verified_once_then_remembered() -> None:
    counted, clock = Counted(), Clock()
    tokens = VerifiedTokens(counted, clock=clock)
    tok = token()
    first = tokens.verify(tok)
    for _ in range(5):
        assert tokens.verify(tok) == first
    assert first.subject == "drone-7"
    assert counted.calls == 1


def test_an_entry_lapses_after_max_age_and_the_token_is_verified_again() -> None:
    counted, clock = Counted(), Clock()
    tokens = VerifiedTokens(counted, max_age=60, clock=clock)
    tok = token()
    tokens.verify(tok)
    start = clock.now
    clock.now = start + 59.9
    tokens.verify(tok)
    assert counted.calls == 1
    clock.now = start + 60
    tokens.verify(tok)
    assert counted.calls == 2


def test_an_entry_never_outlives_the_tokens_exp() -> None:
    counted, clock = Counted(), Clock()
    tokens = VerifiedTokens(counted, max_age=600, clock=clock)
    tok = token(lifetime=300)
    exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
    tokens.verify(tok)
    clock.now = exp - 1
    tokens.verify(tok)
    assert counted.calls == 1
    clock.now = exp  # the cache's clock has reached exp: the verifier decides again
    tokens.verify(tok)
    assert counted.calls == 2


def test_a_bad_token_is_never_remembered() -> None:
    counted, clock = Counted(), Clock()
    tokens = VerifiedTokens(counted, clock=clock)
    forged = token(key="x" * 40)
    for _ in range(3):
        with pytest.raises(AuthError):
            tokens.verify(forged)
    assert counted.calls == 3
    assert len(tokens) == 0


def test_a_token_differing_only_in_its_signature_is_verified_on_its_own() -> None:
    counted, clock = Counted(), Clock()
    tokens = VerifiedTokens(counted, clock=clock)
    good = token()
    tokens.verify(good)
    head, payload, signature = good.split(".")
    tampered = f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(AuthError):
        tokens.verify(tampered)
    assert counted.calls == 2


def test_memory_is_bounded() -> None:
    counted, clock = Counted(), Clock()
    tokens = VerifiedTokens(counted, max_entries=8, clock=clock)
    for i in range(50):
        tokens.verify(token(subject=f"producer-{i}"))
    assert len(tokens) <= 8
    assert "producer" not in repr(tokens)
