"""Settings: production refuses missing or development secrets; lists split on commas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config import DEV_JWT_SECRET, DEV_OPERATOR_TOKEN, ConfigurationError, Settings

STRONG = "s" * 40
ROOT = Path(__file__).resolve().parents[1]


def production(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "environment": "production",
        "inbound_domain": "in.example.com",
        "jwt_secret": STRONG,
        "jwt_audience": "mailslot",
        "jwt_issuer": "https://host.example",
        "operator_token": "o" * 40,
        "url_signing_keys": "u" * 40,
    }
    base.update(values)
    return Settings(_env_file=None, **base)


class TestProduction:
    def test_complete_settings_start(self) -> None:
        settings = production()
        assert settings.uses_development_defaults == []

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ({"inbound_domain": None}, "MAILSLOT_INBOUND_DOMAIN is required"),
            ({"jwt_secret": None}, "MAILSLOT_JWT_SECRET or MAILSLOT_JWT_PUBLIC_KEY is required"),
            ({"operator_token": None}, "MAILSLOT_OPERATOR_TOKEN is required"),
            ({"jwt_secret": DEV_JWT_SECRET}, "MAILSLOT_JWT_SECRET is a development default"),
            (
                {"operator_token": DEV_OPERATOR_TOKEN},
                "MAILSLOT_OPERATOR_TOKEN is a development default",
            ),
            ({"operator_token": "short"}, "MAILSLOT_OPERATOR_TOKEN must be at least 32 characters"),
            (
                {"operator_token": f"{'o' * 40},short"},
                "MAILSLOT_OPERATOR_TOKEN must be at least 32 characters",
            ),
            ({"jwt_audience": None}, "MAILSLOT_JWT_AUDIENCE is required"),
            ({"jwt_issuer": ""}, "MAILSLOT_JWT_ISSUER is required"),
            ({"url_signing_keys": None}, "MAILSLOT_URL_SIGNING_KEYS is required"),
            (
                {"url_signing_keys": "u" * 31},
                "MAILSLOT_URL_SIGNING_KEYS must be at least 32 characters",
            ),
            (
                {"inbound_password": "p" * 15},
                "MAILSLOT_INBOUND_PASSWORD must be at least 16 characters",
            ),
            (
                {"inbound_password": f"{'p' * 16},{'q' * 15}"},
                "MAILSLOT_INBOUND_PASSWORD must be at least 16 characters",
            ),
            (
                {"mailgun_signing_key": "key-123"},
                "MAILSLOT_MAILGUN_SIGNING_KEY must be at least 16 characters",
            ),
            (
                {"inbound_domain": "in.mailslot.localhost"},
                "MAILSLOT_INBOUND_DOMAIN is a development default",
            ),
        ],
    )
    def test_missing_or_default_setting_stops_start_up(
        self, override: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=message):
            production(**override)

    def test_public_key_alone_is_enough(self) -> None:
        settings = production(jwt_secret=None, jwt_public_key="-----BEGIN PUBLIC KEY-----...")
        assert settings.jwt_secret == []

    def test_inbound_secrets_of_sixteen_characters_start(self) -> None:
        settings = production(inbound_password="p" * 16, mailgun_signing_key="k" * 16)
        assert len(settings.inbound_password) == 1

    def test_docs_are_off_unless_enabled(self) -> None:
        assert production().docs_enabled is False
        assert production(docs_enabled=True).docs_enabled is True

    def test_server_refuses_to_start_with_a_clear_message(self, tmp_path: Any) -> None:
        env = {"PATH": "/usr/bin:/bin", "MAILSLOT_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
        result = subprocess.run(
            [sys.executable, "-c", "import app.main as m; m.app"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode != 0
        assert "mailslot cannot start in production" in result.stderr
        assert "MAILSLOT_OPERATOR_TOKEN is required" in result.stderr


class TestDevelopment:
    def test_local_defaults_are_filled_and_reported(self) -> None:
        settings = Settings(_env_file=None, environment="development")
        assert settings.inbound_domain == "in.mailslot.localhost"
        assert set(settings.uses_development_defaults) == {
            "INBOUND_DOMAIN",
            "JWT_SECRET",
            "OPERATOR_TOKEN",
            "URL_SIGNING_KEYS",
        }
        assert settings.jwt_audience == "mailslot"
        assert settings.docs_enabled is True


class TestJwtKeys:
    def test_a_json_object_names_each_key(self) -> None:
        named = json.dumps({"2026-11": "a" * 40, "2026-12": "b" * 40})
        settings = production(jwt_secret=named)
        assert [(k.kid, k.secret.get_secret_value()) for k in settings.jwt_secret] == [
            ("2026-11", "a" * 40),
            ("2026-12", "b" * 40),
        ]

    def test_comma_separated_keys_have_no_names(self) -> None:
        settings = production(jwt_secret=f"{'a' * 40},{'b' * 40}")
        assert [k.kid for k in settings.jwt_secret] == [None, None]

    @pytest.mark.parametrize("value", ['{"k1": ""}', '{"k1": 3}', '{"": "x"}', "{not json"])
    def test_a_malformed_json_object_is_refused(self, value: str) -> None:
        with pytest.raises(ValueError, match="JSON object"):
            production(jwt_secret=value)


class TestLists:
    def test_comma_separated_secrets_and_limits(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAILSLOT_MAILGUN_SIGNING_KEY", "key-one-0123456789, key-two-0123456789")
        monkeypatch.setenv("MAILSLOT_INBOUND_PASSWORD", "a" * 16 + "," + "b" * 16 + "," + "c" * 16)
        monkeypatch.setenv("MAILSLOT_RATE_LIMITS", "5/60, 10/300")
        monkeypatch.setenv("MAILSLOT_CORS_ORIGINS", "https://app.example.com,https://x.example.com")
        settings = production()
        assert [k.get_secret_value() for k in settings.mailgun_signing_key] == [
            "key-one-0123456789",
            "key-two-0123456789",
        ]
        assert len(settings.inbound_password) == 3
        assert [(r.count, r.seconds) for r in settings.rate_limits] == [(5, 60), (10, 300)]
        assert settings.cors_origins == ["https://app.example.com", "https://x.example.com"]

    def test_empty_rate_limits_turn_limiting_off(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAILSLOT_RATE_LIMITS", "")
        assert production().rate_limits == []

    def test_default_rate_limits(self) -> None:
        assert [str(r) for r in production().rate_limits] == ["50/60", "120/300", "600/3600"]

    def test_bad_rate_limit_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAILSLOT_RATE_LIMITS", "fifty per minute")
        with pytest.raises(ValueError, match="COUNT/SECONDS"):
            production()

    def test_trusted_authserv_ids_are_none_by_default_and_split_on_commas(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert production().trusted_authserv_ids == []
        monkeypatch.setenv("MAILSLOT_TRUSTED_AUTHSERV_IDS", " MX.Example.com., ,filter.example.net")
        assert production().trusted_authserv_ids == ["mx.example.com", "filter.example.net"]


class TestBlobStore:
    def test_the_local_folder_is_the_default(self) -> None:
        settings = production()
        assert settings.blob_store == "local"
        assert settings.s3_location is None
        assert settings.attachment_downloads == "stream"

    @pytest.mark.parametrize(
        ("value", "bucket", "prefix"),
        [
            ("s3://mail-attachments/mailslot/", "mail-attachments", "mailslot"),
            (" s3://mail.attachments/a/b ", "mail.attachments", "a/b"),
            ("s3://bucket", "bucket", ""),
        ],
    )
    def test_an_s3_url_names_the_bucket_and_prefix(
        self, monkeypatch: pytest.MonkeyPatch, value: str, bucket: str, prefix: str
    ) -> None:
        monkeypatch.setenv("MAILSLOT_BLOB_STORE", value)
        monkeypatch.setenv("MAILSLOT_S3_ENDPOINT_URL", "http://127.0.0.1:9000/")
        settings = production()
        assert settings.s3_location is not None
        assert (settings.s3_location.bucket, settings.s3_location.prefix) == (bucket, prefix)
        assert settings.s3_endpoint_url == "http://127.0.0.1:9000"

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"blob_store": "/var/blobs"}, "must be `local` .* or s3://BUCKET/PREFIX"),
            ({"blob_store": "gs://bucket/x"}, "must be `local`"),
            ({"blob_store": "s3://Bucket_Name/x"}, "'Bucket_Name' is not an S3 bucket name"),
            ({"blob_store": "s3://ab"}, "'ab' is not an S3 bucket name"),
            ({"blob_store": "s3://bucket/a//b"}, "separated by single slashes"),
            ({"blob_store": "s3://bucket/../x"}, "separated by single slashes"),
            (
                {"blob_store": "s3://bucket/x", "s3_endpoint_url": "minio:9000"},
                "must be an http:// or https:// URL",
            ),
            (
                {"blob_store": "s3://bucket/x", "s3_endpoint_url": "https://key:secret@s3.host"},
                "no credentials",
            ),
            (
                {"blob_store": "s3://bucket/x", "attachment_downloads": "link"},
                "'stream' or 'redirect'",
            ),
            (
                {"blob_store": "s3://bucket/x", "attachment_redirect_seconds": 0},
                "between 1 and 604800",
            ),
        ],
    )
    def test_a_bad_value_is_refused_with_what_is_expected(
        self, values: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            production(**values)

    @pytest.mark.parametrize(
        ("values", "name"),
        [
            ({"s3_endpoint_url": "http://127.0.0.1:9000"}, "MAILSLOT_S3_ENDPOINT_URL"),
            ({"s3_addressing_style": "path"}, "MAILSLOT_S3_ADDRESSING_STYLE"),
            ({"attachment_downloads": "redirect"}, "MAILSLOT_ATTACHMENT_DOWNLOADS=redirect"),
        ],
    )
    def test_s3_settings_without_an_s3_store_are_refused(
        self, values: dict[str, Any], name: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=f"{name} needs MAILSLOT_BLOB_STORE=s3://"):
            production(**values)

    def test_the_command_line_names_a_bad_store_in_one_line(self, tmp_path: Any) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "MAILSLOT_ENVIRONMENT": "development",
            "MAILSLOT_BLOB_STORE": "s3:/bucket",
        }
        result = subprocess.run(
            [sys.executable, "-m", "app", "cleanup"],
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        assert result.returncode == 78, result.stderr
        assert result.stderr.strip() == (
            "python -m app cleanup: configuration error: MAILSLOT_BLOB_STORE: Value error, "
            "must be `local` (the folder BLOB_DIR) or s3://BUCKET/PREFIX"
        )


class TestObservability:
    def test_logs_are_json_in_production_and_text_elsewhere_unless_set(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert production().log_format == "json"
        assert Settings(_env_file=None, environment="development").log_format == "text"
        monkeypatch.setenv("MAILSLOT_LOG_FORMAT", "text")
        assert production().log_format == "text"
        monkeypatch.setenv("MAILSLOT_LOG_FORMAT", "")
        assert production().log_format == "json"
        monkeypatch.setenv("MAILSLOT_LOG_FORMAT", "xml")
        with pytest.raises(ValueError, match="log_format"):
            production()

    def test_metrics_need_the_operator_token_unless_opened(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert production().metrics_access == "operator"
        monkeypatch.setenv("MAILSLOT_METRICS_ACCESS", "open")
        assert production().metrics_access == "open"
        monkeypatch.setenv("MAILSLOT_METRICS_ACCESS", "public")
        with pytest.raises(ValueError, match="metrics_access"):
            production()

    def test_tracing_reads_opentelemetrys_own_variable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert production().otel_exporter_otlp_endpoint is None
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
        assert production().otel_exporter_otlp_endpoint == "http://collector:4318"
