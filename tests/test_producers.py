"""Who the producer of a request is, and who may read its records."""

from __future__ import annotations

from detection_api.app.producers import may_read, producer_of
from detection_api.auth import Principal, Scope


def principal(via: str, subject: str = "cam-team", *scopes: Scope) -> Principal:
    return Principal(subject, frozenset(s.value for s in scopes), via)


def test_a_token_is_its_subject_and_the_broker_is_the_event_source() -> None:
    assert producer_of(principal("jwt", "team-a"), "/cams/1") == "sub:team-a"
    assert producer_of(principal("cluster-trust", "cluster"), "/cams/1") == "cluster:/cams/1"
    assert producer_of(principal("eventing-oidc", "broker"), "/cams/2") == "cluster:/cams/2"
    assert producer_of(principal("auth-disabled", "anonymous")) == "anonymous"
    # A subject that looks like a cluster source is still a token's subject.
    assert producer_of(principal("jwt", "cluster:/cams/1")) != "cluster:/cams/1"


def test_readers_see_their_own_records_and_operators_all() -> None:
    reader = principal("jwt", "team-a", Scope.READ)
    assert may_read(reader, "sub:team-a")
    assert not may_read(reader, "sub:team-b")
    assert not may_read(reader, None)  # a record without a producer is nobody's to read
    for scope in (Scope.READ_ALL, Scope.ADMIN):
        assert may_read(principal("jwt", "ops", scope), "sub:team-b")
