"""Settings, read from the environment (prefix ``MAILSLOT_``) and an optional ``.env``."""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Local defaults for development and tests only; production refuses to start with them.
DEV_JWT_SECRET = "mailslot-development-jwt-secret-not-for-production"  # noqa: S105
DEV_OPERATOR_TOKEN = "mailslot-development-operator-token"  # noqa: S105
DEV_URL_SIGNING_KEY = "mailslot-development-url-signing-key-not-for-production"
DEV_INBOUND_DOMAIN = "in.mailslot.localhost"
DEV_JWT_AUDIENCE = "mailslot"
DEV_JWT_ISSUER = "mailslot-development"
DEV_DEFAULTS = {DEV_JWT_SECRET, DEV_OPERATOR_TOKEN, DEV_URL_SIGNING_KEY}
MIN_SECRET_LENGTH = 32
MIN_INBOUND_SECRET_LENGTH = 16  # a provider's form may cap what it accepts; still not guessable


class VerificationKey(BaseModel):
    """A JWT key (an HS256 secret or an RS256 public key), named by a ``kid`` or not."""

    model_config = ConfigDict(frozen=True)

    secret: SecretStr
    kid: str | None = None


def parse_keys(value: Any) -> list[VerificationKey]:
    """``k1,k2`` (unnamed keys, each tried), or a JSON object ``{"kid": "key", ...}``: a token
    whose header names a ``kid`` is checked with that key only."""
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, VerificationKey) for v in value):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            named = json.loads(value)
        except ValueError:
            raise ValueError("must be keys separated by commas, or a JSON object") from None
        if not isinstance(named, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v.strip() for k, v in named.items()
        ):
            raise ValueError('a JSON object of keys must map each key id to a key: {"kid": "…"}')
        return [
            VerificationKey(kid=kid, secret=SecretStr(key.strip())) for kid, key in named.items()
        ]
    return [VerificationKey(secret=SecretStr(part)) for part in _split(value)]


class RateLimit(BaseModel):
    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}"


DEFAULT_RATE_LIMITS = "50/60,120/300,600/3600"


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def parse_rate_limits(value: Any) -> list[RateLimit]:
    if isinstance(value, list) and all(isinstance(v, RateLimit) for v in value):
        return value
    limits = []
    for part in _split(value):
        match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise ValueError(f"rate limit {part!r} is not COUNT/SECONDS with positive numbers")
        limits.append(RateLimit(count=int(match[1]), seconds=int(match[2])))
    return limits


class S3Location(BaseModel):
    """Where ``BLOB_STORE=s3://bucket/prefix`` keeps blobs: ``<prefix>/<sha256>`` in ``bucket``."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


LOCAL_BLOB_STORE = "local"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9!_.*'()-]+")


def parse_blob_store(value: Any) -> str:
    """``local`` (blank too): the folder ``BLOB_DIR``; or ``s3://bucket`` with an optional
    ``/prefix`` (folders separated by ``/``), normalised without a trailing slash."""
    text = "" if value is None else str(value).strip()
    if not text or text.lower() == LOCAL_BLOB_STORE:
        return LOCAL_BLOB_STORE
    if not text.lower().startswith("s3://"):
        raise ValueError("must be `local` (the folder BLOB_DIR) or s3://BUCKET/PREFIX")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket!r} is not an S3 bucket name (3 to 63 lower-case letters, digits, dots "
            "and hyphens, starting and ending with a letter or digit)"
        )
    prefix = prefix.strip("/")
    segments = prefix.split("/") if prefix else []
    for segment in segments:
        if not _PREFIX_SEGMENT.fullmatch(segment) or segment in {".", ".."}:
            raise ValueError(
                f"the prefix {prefix!r} must be folder names of letters, digits and !_.*'()- "
                "separated by single slashes"
            )
    return str(S3Location(bucket=bucket, prefix=prefix))


# Standard Webhooks' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after the first try.
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class ConfigurationError(RuntimeError):
    """A setting is missing or unsafe for the chosen environment."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAILSLOT_", env_file=".env", extra="ignore", validate_default=True
    )

    environment: Literal["development", "test", "production"] = "production"
    database_url: str = "sqlite:///./var/mailslot.db"
    blob_dir: Path = Path("./var/blobs")
    inbound_domain: str | None = None
    jwt_secret: Annotated[list[VerificationKey], NoDecode] = []
    jwt_public_key: Annotated[list[VerificationKey], NoDecode] = []
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_max_lifetime_seconds: int = 24 * 3600
    operator_token: Annotated[list[SecretStr], NoDecode] = []
    url_signing_keys: Annotated[list[SecretStr], NoDecode] = []
    docs_enabled: bool | None = None  # unset: on outside production
    # Observability (app/observability): log lines, /metrics, optional tracing.
    log_format: Literal["json", "text"] | None = None  # unset: json in production, else text
    metrics_access: Literal["operator", "open"] = "operator"
    metrics_dir: Path | None = None  # unset: <temp dir>/mailslot-metrics-<uid>
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )  # the OpenTelemetry SDK's own variable (no MAILSLOT_ prefix); unset: no tracing
    mailgun_signing_key: Annotated[list[SecretStr], NoDecode] = []
    inbound_username: str | None = None
    inbound_password: Annotated[list[SecretStr], NoDecode] = []
    trusted_authserv_ids: Annotated[list[str], NoDecode] = []
    max_attachment_bytes: int = 5 * 1024 * 1024
    max_request_bytes: int = 64 * 1024 * 1024
    max_api_body_bytes: int = 1024 * 1024
    rate_limits: Annotated[list[RateLimit], NoDecode] = DEFAULT_RATE_LIMITS  # type: ignore[assignment]
    delivery_retention_days: int = 30
    public_base_url: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = []
    blob_store: str = LOCAL_BLOB_STORE
    s3_endpoint_url: str | None = None
    s3_addressing_style: Literal["auto", "path", "virtual"] | None = None
    attachment_downloads: Literal["stream", "redirect"] = "stream"
    attachment_redirect_seconds: int = 300
    # Events out (app/events): the dispatcher in every server process, its retries and targets.
    events_dispatcher: bool = True
    events_poll_seconds: float = 1.0
    events_retry_schedule: Annotated[list[float], NoDecode] = list(DEFAULT_RETRY_SCHEDULE)
    events_timeout_seconds: float = 15.0
    events_disable_after_days: float = 5.0
    events_allow_loopback: bool | None = None  # unset: allowed outside production

    @field_validator("blob_store", mode="before")
    @classmethod
    def _blob_store(cls, value: Any) -> str:
        return parse_blob_store(value)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, such as http://127.0.0.1:9000")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must be a plain URL: no credentials, query or fragment")
        return value

    @field_validator("attachment_redirect_seconds")
    @classmethod
    def _redirect_seconds(cls, value: int) -> int:
        if not 1 <= value <= 7 * 24 * 3600:  # the longest a SigV4 presigned URL may live
            raise ValueError("must be between 1 and 604800 seconds (7 days)")
        return value

    @model_validator(mode="after")
    def _s3_settings_need_s3(self) -> Settings:
        if self.s3_location is not None:
            return self
        for name, is_set in (
            ("S3_ENDPOINT_URL", self.s3_endpoint_url is not None),
            ("S3_ADDRESSING_STYLE", self.s3_addressing_style is not None),
            ("ATTACHMENT_DOWNLOADS=redirect", self.attachment_downloads == "redirect"),
        ):
            if is_set:
                raise ConfigurationError(
                    f"MAILSLOT_{name} needs MAILSLOT_BLOB_STORE=s3://BUCKET/PREFIX "
                    "(the blob store is the local folder)"
                )
        return self

    @property
    def s3_location(self) -> S3Location | None:
        """The bucket and prefix of an S3 blob store; None for the local folder."""
        if self.blob_store == LOCAL_BLOB_STORE:
            return None
        bucket, _, prefix = self.blob_store.removeprefix("s3://").partition("/")
        return S3Location(bucket=bucket, prefix=prefix)

    @field_validator("jwt_secret", "jwt_public_key", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> list[VerificationKey]:
        return parse_keys(value)

    @field_validator(
        "mailgun_signing_key",
        "inbound_password",
        "operator_token",
        "url_signing_keys",
        mode="before",
    )
    @classmethod
    def _split_secrets(cls, value: Any) -> list[SecretStr]:
        return [SecretStr(v) for v in _split(value)]

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> list[str]:
        return _split(value)

    @field_validator("trusted_authserv_ids", mode="before")
    @classmethod
    def _split_authserv_ids(cls, value: Any) -> list[str]:
        """Compared as RFC 8601 says: case-insensitively (a trailing dot ignored)."""
        return [part.rstrip(".").lower() for part in _split(value) if part.rstrip(".")]

    @field_validator("events_retry_schedule", mode="before")
    @classmethod
    def _retry_schedule(cls, value: Any) -> list[float]:
        if isinstance(value, list | tuple):
            parts = [float(v) for v in value]
        else:
            try:
                parts = [float(part) for part in _split(value)]
            except ValueError:
                raise ValueError(
                    "must be seconds separated by commas, such as 5,300,1800"
                ) from None
        if any(part < 0 for part in parts):
            raise ValueError("must not be negative")
        return parts

    @field_validator("events_poll_seconds", "events_timeout_seconds", "events_disable_after_days")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a positive number")
        return value

    @field_validator("rate_limits", mode="before")
    @classmethod
    def _rate_limits(cls, value: Any) -> list[RateLimit]:
        return parse_rate_limits(value)

    @field_validator(
        "inbound_domain",
        "log_format",
        "otel_exporter_otlp_endpoint",
        "public_base_url",
        "inbound_username",
        "jwt_audience",
        "jwt_issuer",
        "docs_enabled",
        "events_allow_loopback",
        "s3_endpoint_url",
        "s3_addressing_style",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("inbound_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not re.fullmatch(
            r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*", value
        ):
            raise ValueError("must be a domain name such as in.example.com")
        return value

    @field_validator(
        "max_attachment_bytes",
        "max_request_bytes",
        "max_api_body_bytes",
        "delivery_retention_days",
        "jwt_max_lifetime_seconds",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be a positive number")
        return value

    @model_validator(mode="after")
    def _environment_defaults(self) -> Settings:
        if self.environment == "production":
            self._check_production()
            if self.docs_enabled is None:
                self.docs_enabled = False
            if self.log_format is None:
                self.log_format = "json"
            if self.events_allow_loopback is None:
                self.events_allow_loopback = False
            return self
        if self.docs_enabled is None:
            self.docs_enabled = True
        if self.log_format is None:
            self.log_format = "text"
        if self.events_allow_loopback is None:
            self.events_allow_loopback = True
        if self.inbound_domain is None:
            self.inbound_domain = DEV_INBOUND_DOMAIN
        if not self.jwt_secret and not self.jwt_public_key:
            self.jwt_secret = [VerificationKey(secret=SecretStr(DEV_JWT_SECRET))]
        if self.jwt_audience is None:
            self.jwt_audience = DEV_JWT_AUDIENCE
        if self.jwt_issuer is None:
            self.jwt_issuer = DEV_JWT_ISSUER
        if not self.operator_token:
            self.operator_token = [SecretStr(DEV_OPERATOR_TOKEN)]
        if not self.url_signing_keys:
            self.url_signing_keys = [SecretStr(DEV_URL_SIGNING_KEY)]
        return self

    def _check_production(self) -> None:
        problems = []
        for name, missing in (
            ("MAILSLOT_INBOUND_DOMAIN", self.inbound_domain is None),
            (
                "MAILSLOT_JWT_SECRET or MAILSLOT_JWT_PUBLIC_KEY",
                not self.jwt_secret and not self.jwt_public_key,
            ),
            ("MAILSLOT_JWT_AUDIENCE", self.jwt_audience is None),
            ("MAILSLOT_JWT_ISSUER", self.jwt_issuer is None),
            ("MAILSLOT_OPERATOR_TOKEN", not self.operator_token),
            ("MAILSLOT_URL_SIGNING_KEYS", not self.url_signing_keys),
        ):
            if missing:
                problems.append(f"{name} is required")
        for name, secrets, shortest in (
            ("JWT_SECRET", [k.secret for k in self.jwt_secret], MIN_SECRET_LENGTH),
            ("OPERATOR_TOKEN", self.operator_token, MIN_SECRET_LENGTH),
            ("URL_SIGNING_KEYS", self.url_signing_keys, MIN_SECRET_LENGTH),
            ("INBOUND_PASSWORD", self.inbound_password, MIN_INBOUND_SECRET_LENGTH),
            ("MAILGUN_SIGNING_KEY", self.mailgun_signing_key, MIN_INBOUND_SECRET_LENGTH),
        ):
            values = [secret.get_secret_value() for secret in secrets]
            if any(value in DEV_DEFAULTS for value in values):
                problems.append(f"MAILSLOT_{name} is a development default")
            elif any(len(value) < shortest for value in values):
                problems.append(f"MAILSLOT_{name} must be at least {shortest} characters")
        if self.inbound_domain == DEV_INBOUND_DOMAIN:
            problems.append("MAILSLOT_INBOUND_DOMAIN is a development default")
        if problems:
            raise ConfigurationError(
                "mailslot cannot start in production: "
                + "; ".join(problems)
                + " (set MAILSLOT_ENVIRONMENT=development for a local run)"
            )

    @property
    def uses_development_defaults(self) -> list[str]:
        used = []
        if self.inbound_domain == DEV_INBOUND_DOMAIN:
            used.append("INBOUND_DOMAIN")
        for name, secrets, default in (
            ("JWT_SECRET", [k.secret for k in self.jwt_secret], DEV_JWT_SECRET),
            ("OPERATOR_TOKEN", self.operator_token, DEV_OPERATOR_TOKEN),
            ("URL_SIGNING_KEYS", self.url_signing_keys, DEV_URL_SIGNING_KEY),
        ):
            if any(secret.get_secret_value() == default for secret in secrets):
                used.append(name)
        return used


@lru_cache
def get_settings() -> Settings:
    return Settings()


class DatabaseSettings(BaseSettings):
    """Only the database URL: what migrations and maintenance commands need to run."""

    model_config = SettingsConfigDict(env_prefix="MAILSLOT_", env_file=".env", extra="ignore")

    database_url: str = Settings.model_fields["database_url"].default


DEFAULT_RELAY_URL = "http://127.0.0.1:8000"


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RelaySettings(BaseSettings):
    """What ``python -m app relay`` needs (prefix ``MAILSLOT_RELAY_``); never the command line.

    No ``.env`` is read: under Postfix's ``pipe`` the working directory is the queue directory.
    ``password_file`` names a file whose first line is the password.
    """

    model_config = SettingsConfigDict(env_prefix="MAILSLOT_RELAY_", extra="ignore")

    url: str = DEFAULT_RELAY_URL
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    timeout: float = 60.0

    @field_validator("username", "password", "password_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("url", mode="before")
    @classmethod
    def _blank_url_is_default(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return DEFAULT_RELAY_URL
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"https?://[^/?#]+", value, re.IGNORECASE):
            raise ValueError("must be an http:// or https:// URL")
        if value.lower().startswith("http://") and not _is_loopback(urlsplit(value).hostname):
            # the password and the mail would cross a network in clear text
            raise ValueError("must be https:// unless the service is on this host (loopback)")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if not 0 < value < float("inf"):
            raise ValueError("must be a positive number of seconds")
        return value
