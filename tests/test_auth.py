"""Token verification: every rejection path, and minting limits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from detection_api.auth import AuthError, Scope, TokenVerifier, mint_token
from detection_api.settings import Settings

SECRET = "s" * 40  # test-only HS256 secret


def hs_settings(**extra: object) -> Settings:
    return Settings(jwt_secret_key=SECRET, **extra)


def token(claims: dict, key: object = SECRET, algorithm: str = "HS256", **headers: str) -> str:
    base = {"sub": "drone-7", "scope": "detections:write", "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, key, algorithm, headers)


def rejects(verifier: TokenVerifier, tok: str) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(tok)
    assert info.value.status == 401
    assert tok not in info.value.message
    return info.value.message


def test_a_good_token_gives_subject_and_scopes() -> None:
    principal = TokenVerifier(hs_settings()).verify(token({"scope": "detections:read admin"}))
    assert principal.subject == "drone-7"
    assert principal.allows(Scope.READ)
    assert principal.allows(Scope.WRITE)  # admin implies every scope


def test_missing_scope_is_not_allowed() -> None:
    principal = TokenVerifier(hs_settings()).verify(token({"scope": "detections:read"}))
    assert not principal.allows(Scope.WRITE)


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "'exp'"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
    ],
)
def test_time_claims(claims: dict, expected: str) -> None:
    assert expected in rejects(TokenVerifier(hs_settings()), token(claims))


def test_garbled_and_wrongly_signed_tokens() -> None:
    verifier = TokenVerifier(hs_settings())
    assert "malformed" in rejects(verifier, "not.a.token")
    assert "signature" in rejects(verifier, token({}, key="x" * 40))


def test_alg_none_is_rejected() -> None:
    unsigned = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert "algorithm" in rejects(TokenVerifier(hs_settings()), unsigned)


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = TokenVerifier(hs_settings(jwt_issuer="https://idp", jwt_audience="detection-api"))
    good = token({"iss": "https://idp", "aud": "detection-api"})
    assert verifier.verify(good).subject == "drone-7"
    assert "audience" in rejects(verifier, token({"iss": "https://idp", "aud": "other"}))
    assert "issuer" in rejects(verifier, token({"iss": "https://evil", "aud": "detection-api"}))


def test_clock_skew_is_bounded_by_the_leeway() -> None:
    verifier = TokenVerifier(hs_settings(jwt_leeway_seconds=30))
    assert verifier.verify(token({"exp": int(time.time()) - 10})).subject == "drone-7"
    rejects(verifier, token({"exp": int(time.time()) - 120}))


def test_overlong_lifetime_is_refused_even_when_signed() -> None:
    now = int(time.time())
    verifier = TokenVerifier(hs_settings(jwt_max_lifetime_seconds=3600))
    assert "lifetime" in rejects(verifier, token({"iat": now, "exp": now + 7200}))


def _rsa_pems() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_rs256_and_the_hs_rs_confusion_attack() -> None:
    private, public = _rsa_pems()
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=public, jwt_private_key=private)
    verifier = TokenVerifier(settings)
    minted = mint_token(settings, subject="ops", scopes=["admin"], ttl_seconds=60)
    assert verifier.verify(minted).allows(Scope.ADMIN)
    # The classic confusion: HS256 signed with the RSA public key as the secret.
    forged = jwt.api_jws.PyJWS()
    forged._algorithms["HS256"].prepare_key = lambda key: key  # PyJWT refuses PEM secrets
    confused = forged.encode(
        json.dumps({"sub": "evil", "exp": int(time.time()) + 60}).encode(),
        public.encode(),
        algorithm="HS256",
    )
    assert "algorithm" in rejects(verifier, confused)


def test_es256_with_a_jwks_file(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    verifier = TokenVerifier(
        Settings(jwt_algorithm="ES256", jwt_jwks_file=str(tmp_path / "jwks.json"))
    )
    good = token({}, key=key, algorithm="ES256", kid="k1")
    assert verifier.verify(good).subject == "drone-7"
    assert "unknown key" in rejects(verifier, token({}, key=key, algorithm="ES256", kid="k2"))


def test_eventing_oidc_tokens_only_get_write(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "cluster"
    (tmp_path / "oidc.json").write_text(json.dumps({"keys": [jwk]}))
    verifier = TokenVerifier(
        hs_settings(
            eventing_oidc_issuer="https://kubernetes.default.svc",
            eventing_oidc_audience="detection-api",
            eventing_oidc_jwks_file=str(tmp_path / "oidc.json"),
        )
    )
    tok = token(
        {"iss": "https://kubernetes.default.svc", "aud": "detection-api", "scope": "admin"},
        key=key,
        algorithm="RS256",
        kid="cluster",
    )
    principal = verifier.verify(tok)
    assert principal.via == "eventing-oidc"
    assert principal.allows(Scope.WRITE)
    assert not principal.allows(Scope.READ)
    wrong_aud = token(
        {"iss": "https://kubernetes.default.svc", "aud": "else"},
        key=key,
        algorithm="RS256",
        kid="cluster",
    )
    assert "audience" in rejects(verifier, wrong_aud)


def test_minting_refuses_unknown_scopes_long_ttls_and_short_secrets() -> None:
    settings = hs_settings(jwt_max_lifetime_seconds=3600)
    with pytest.raises(ValueError, match="scope"):
        mint_token(settings, subject="x", scopes=["root"])
    with pytest.raises(ValueError, match="ttl"):
        mint_token(settings, subject="x", scopes=["admin"], ttl_seconds=7200)
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(Settings(jwt_secret_key="short"))
    minted = mint_token(settings, subject="x", scopes=["detections:read"], ttl_seconds=60)
    assert TokenVerifier(settings).verify(minted).scopes == frozenset({"detections:read"})


def test_lifetime_is_measured_from_now_when_iat_and_nbf_are_absent() -> None:
    verifier = TokenVerifier(hs_settings(jwt_max_lifetime_seconds=3600))
    far = token({"exp": int(time.time()) + 30 * 86_400})  # no iat, no nbf: 30 days to live
    assert "JWT_MAX_LIFETIME_SECONDS" in rejects(verifier, far)
    near = token({"exp": int(time.time()) + 1800})
    assert verifier.verify(near).subject == "drone-7"


@pytest.mark.parametrize("subject", ["", "   ", "x" * 257, "cam\ud800", "\udfff"])
def test_the_subject_must_be_a_non_empty_bounded_string(subject: object) -> None:
    # (a lone surrogate: a signed "\ud800" escape, which no UTF-8 store can hold)
    assert "subject" in rejects(TokenVerifier(hs_settings()), token({"sub": subject}))


def test_a_subject_outside_the_basic_plane_is_a_subject() -> None:
    principal = TokenVerifier(hs_settings()).verify(token({"sub": "drone \U0001f681"}))
    assert principal.subject == "drone \U0001f681"  # signed as a surrogate pair: one character


def test_read_all_reads_everything_and_read_only_ones_own() -> None:
    verifier = TokenVerifier(hs_settings())
    reader = verifier.verify(token({"scope": "detections:read"}))
    everything = verifier.verify(token({"scope": "detections:read-all"}))
    assert reader.allows(Scope.READ) and not reader.reads_all
    assert everything.allows(Scope.READ) and everything.reads_all
    assert not everything.allows(Scope.WRITE)


def test_a_missing_key_file_names_its_variable(tmp_path: Path) -> None:
    settings = Settings(jwt_algorithm="RS256", jwt_public_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"^JWT_PUBLIC_KEY: cannot read the file"):
        TokenVerifier(settings)
