"""Bearer-token authentication and scopes (PyJWT). Framework-free: the app adapts it to Flask.

One algorithm is configured (``JWT_ALGORITHM``) and only that one is accepted, with a key of the
matching kind, so ``alg=none`` and HS/RS confusion (an RS256 public key used as an HS256 secret)
cannot verify. Tokens must carry ``exp``; ``iss``/``aud`` are checked when configured; clock skew is
bounded by ``JWT_LEEWAY_SECONDS``; a token that lives longer than ``JWT_MAX_LIFETIME_SECONDS`` is
refused even if its signature is good. Nothing here ever logs or returns the token itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import jwt

from detection_api.settings import Settings

SUPPORTED_ALGORITHMS = frozenset({"HS256", "RS256", "ES256"})
T = TypeVar("T")
# A subject names a producer (its records, its rate limit, its markers): bounded like other ids.
MAX_SUBJECT_LENGTH = 256


def _is_unicode_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Scope(StrEnum):
    WRITE = "detections:write"
    READ = "detections:read"  # the records of the token's own producer (its subject)
    READ_ALL = "detections:read-all"  # every producer's records (operators, dashboards)
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    via: str  # "jwt", "eventing-oidc", "cluster-trust" or "auth-disabled"

    def allows(self, scope: Scope) -> bool:
        if scope is Scope.READ and Scope.READ_ALL.value in self.scopes:
            return True
        return scope.value in self.scopes or Scope.ADMIN.value in self.scopes

    @property
    def reads_all(self) -> bool:
        """May read every producer's records, not only its own."""
        return bool({Scope.ADMIN.value, Scope.READ_ALL.value} & self.scopes)


class AuthError(Exception):
    """401 (no or bad credentials) or 403 (valid, lacks the scope). Messages are safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _pem(value: str) -> str:
    """A PEM given inline, or the path of a PEM file (Kubernetes mounts secrets as files)."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    return Path(value).read_text(encoding="utf-8")


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(s for s in raw if isinstance(s, str))
    return frozenset()


def _jwks_keys(path: str) -> dict[str | None, Any]:
    keyset = jwt.PyJWKSet.from_json(Path(path).read_text(encoding="utf-8"))
    return {key.key_id: key for key in keyset.keys}


def _loaded(name: str, load: Callable[[str], T], value: str) -> T:
    """Load a key setting at start; a failure names the variable (never the key's content)."""
    try:
        return load(value)
    except OSError as exc:
        raise ValueError(f"{name}: cannot read the file ({exc.strerror})") from None
    except (ValueError, jwt.PyJWTError) as exc:
        raise ValueError(f"{name}: not a usable key ({exc.__class__.__name__})") from None


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        algorithm = settings.jwt_algorithm.upper()
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"JWT_ALGORITHM must be one of {sorted(SUPPORTED_ALGORITHMS)}")
        self.algorithm = algorithm
        self.settings = settings
        self._key: Any = None
        self._jwks: dict[str | None, Any] = {}
        if algorithm == "HS256":
            secret = settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else ""
            if secret:
                if len(secret.encode()) < 32:
                    raise ValueError("JWT_SECRET_KEY must be at least 32 bytes for HS256")
                self._key = secret
        elif settings.jwt_jwks_file:
            self._jwks = _loaded("JWT_JWKS_FILE", _jwks_keys, settings.jwt_jwks_file)
        elif settings.jwt_public_key:
            self._key = _loaded("JWT_PUBLIC_KEY", _pem, settings.jwt_public_key)
        self._oidc_jwks: dict[str | None, Any] = (
            _loaded("EVENTING_OIDC_JWKS_FILE", _jwks_keys, settings.eventing_oidc_jwks_file)
            if settings.eventing_oidc_jwks_file
            else {}
        )

    @property
    def configured(self) -> bool:
        return self._key is not None or bool(self._jwks)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(401, "malformed bearer token") from None
        if self._oidc_jwks and self._is_eventing_token(token):
            return self._verify_oidc(token, header)
        if not self.configured:
            raise AuthError(401, "token authentication is not configured on this server")
        if header.get("alg") != self.algorithm:
            raise AuthError(401, "token algorithm not accepted")
        key = self._key if self._key is not None else self._jwks_key(self._jwks, header)
        verified = self._decode(
            token,
            key,
            [self.algorithm],
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
        )
        return Principal(str(verified.get("sub", "")), _scopes(verified), "jwt")

    def _is_eventing_token(self, token: str) -> bool:
        """Only a peek at ``iss`` to pick the key set; the signature is verified right after."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        issuer = self.settings.eventing_oidc_issuer
        return issuer is not None and claims.get("iss") == issuer

    def _verify_oidc(self, token: str, header: dict[str, Any]) -> Principal:
        algorithm = header.get("alg")
        if algorithm not in {"RS256", "ES256"}:
            raise AuthError(401, "token algorithm not accepted")
        key = self._jwks_key(self._oidc_jwks, header)
        verified = self._decode(
            token,
            key,
            [algorithm],
            issuer=self.settings.eventing_oidc_issuer,
            audience=self.settings.eventing_oidc_audience,
        )
        # Eventing tokens identify the Broker/channel; they may deliver events, nothing else.
        return Principal(
            str(verified.get("sub", "")), frozenset({Scope.WRITE.value}), "eventing-oidc"
        )

    @staticmethod
    def _jwks_key(keys: dict[str | None, Any], header: dict[str, Any]) -> Any:
        jwk = keys.get(header.get("kid")) or (keys.get(None) if len(keys) == 1 else None)
        if jwk is None:
            raise AuthError(401, "token signed by an unknown key")
        return jwk.key

    def _decode(
        self,
        token: str,
        key: Any,
        algorithms: list[str],
        *,
        issuer: str | None,
        audience: str | None,
    ) -> dict[str, Any]:
        options = {"require": ["exp", "sub"], "verify_aud": audience is not None}
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=issuer,
                audience=audience,
                leeway=self.settings.jwt_leeway_seconds,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, "token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "token issuer not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(401, f"token lacks the {exc.claim!r} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError(401, "token signature or format invalid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT_LENGTH:
            raise AuthError(401, "token subject must be a non-empty string")
        if not _is_unicode_text(subject):
            # JSON's \ud800-\udfff escapes decode to lone surrogates, which no UTF-8 store (the
            # record's producer, Redis keys) can hold: refused here rather than a 500 at the write
            raise AuthError(401, "token subject holds a lone UTF-16 surrogate")
        # Lifetime from iat (else nbf); a token with neither is measured from now, so leaving the
        # claims out never buys a longer-lived token.
        issued = claims.get("iat", claims.get("nbf"))
        start = issued if isinstance(issued, int | float) else time.time()
        if claims["exp"] - start > self.settings.jwt_max_lifetime_seconds:
            raise AuthError(401, "token lifetime exceeds JWT_MAX_LIFETIME_SECONDS")
        return claims


def mint_token(
    settings: Settings,
    *,
    subject: str,
    scopes: list[str],
    ttl_seconds: int | None = None,
    now: float | None = None,
) -> str:
    """Sign a token with the configured key (operators only: no HTTP endpoint mints tokens)."""
    unknown = sorted(set(scopes) - {s.value for s in Scope})
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    ttl = ttl_seconds if ttl_seconds is not None else settings.jwt_expiration
    if not 0 < ttl <= settings.jwt_max_lifetime_seconds:
        raise ValueError(f"ttl must be between 1 and {settings.jwt_max_lifetime_seconds} seconds")
    algorithm = settings.jwt_algorithm.upper()
    if algorithm == "HS256":
        if not settings.jwt_secret_key:
            raise ValueError("JWT_SECRET_KEY is not set")
        key: Any = settings.jwt_secret_key.get_secret_value()
    else:
        if not settings.jwt_private_key:
            raise ValueError(f"JWT_PRIVATE_KEY is needed to mint {algorithm} tokens")
        key = _pem(settings.jwt_private_key.get_secret_value())
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, key, algorithm=algorithm)


def describe_claims(token: str) -> str:
    """Claims of a token without its signature, for operator output (never the token)."""
    return json.dumps(jwt.decode(token, options={"verify_signature": False}), sort_keys=True)
