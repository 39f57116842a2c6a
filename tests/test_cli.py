"""``python -m app``: every command run as a user would, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from app.config import DEV_JWT_AUDIENCE, DEV_JWT_ISSUER, DEV_JWT_SECRET, DEV_OPERATOR_TOKEN
from tests.databases import upgrade

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m app ARGS`` in ``cwd`` (no .env of the checkout), with only ``env`` set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILSLOT_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "app", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestConfigurationErrors:
    @pytest.mark.parametrize(
        ("env", "expected"),
        [
            ({}, "MAILSLOT_INBOUND_DOMAIN is required"),
            (
                {"MAILSLOT_ENVIRONMENT": "development", "MAILSLOT_MAX_REQUEST_BYTES": "lots"},
                "MAILSLOT_MAX_REQUEST_BYTES: Input should be a valid integer",
            ),
            ({"MAILSLOT_ENVIRONMENT": "staging"}, "MAILSLOT_ENVIRONMENT: Input should be"),
        ],
    )
    @pytest.mark.parametrize("command", [["cleanup"], ["welcome"]])
    def test_a_command_says_what_is_wrong_in_one_line_and_exits_78(
        self, tmp_path: Path, env: dict[str, str], expected: str, command: list[str]
    ) -> None:
        result = run(command, tmp_path, **env)
        assert result.returncode == 78, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"python -m app {command[0]}: configuration error: ")
        assert expected in lines[0]

    def test_an_unreachable_blob_store_is_named_in_one_line(self, tmp_path: Path) -> None:
        database = f"sqlite:///{tmp_path / 'mailslot.db'}"
        upgrade(database)
        result = run(
            ["cleanup"],
            tmp_path,
            MAILSLOT_ENVIRONMENT="development",
            MAILSLOT_DATABASE_URL=database,
            MAILSLOT_BLOB_STORE="s3://mailslot-tests/cli",
            MAILSLOT_S3_ENDPOINT_URL="http://127.0.0.1:1",  # nothing listens there
            AWS_ACCESS_KEY_ID="mailslot-test",
            AWS_SECRET_ACCESS_KEY="mailslot-test-secret",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_MAX_ATTEMPTS="1",
        )
        assert result.returncode == 69, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("python -m app cleanup: blob store error: object store: ")
        assert "127.0.0.1:1" in lines[0]

    def test_a_database_that_is_not_migrated_is_named_in_one_line(self, tmp_path: Path) -> None:
        result = run(
            ["dev-token", "--platform", "acme"],
            tmp_path,
            MAILSLOT_ENVIRONMENT="development",
            MAILSLOT_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}",
        )
        assert result.returncode == 69
        assert "Traceback" not in result.stderr
        assert "database error" in result.stderr
        assert "make migrate" in result.stderr


class TestDevToken:
    @pytest.fixture
    def database(self, tmp_path: Path) -> str:
        url = f"sqlite:///{tmp_path / 'mailslot.db'}"
        upgrade(url)
        return url

    def test_a_missing_platform_is_refused_with_no_create_platform(
        self, tmp_path: Path, database: str
    ) -> None:
        result = run(
            ["dev-token", "--platform", "ghost", "--no-create-platform"],
            tmp_path,
            MAILSLOT_ENVIRONMENT="development",
            MAILSLOT_DATABASE_URL=database,
        )
        assert result.returncode == 1
        assert result.stdout == ""
        assert "platform 'ghost' does not exist" in result.stderr

    def test_the_platform_is_created_then_found(self, tmp_path: Path, database: str) -> None:
        env = {"MAILSLOT_ENVIRONMENT": "development", "MAILSLOT_DATABASE_URL": database}
        first = run(["dev-token", "--platform", "acme", "--user", "bob"], tmp_path, **env)
        assert first.returncode == 0, first.stderr
        assert "platform 'acme' created" in first.stderr
        again = run(["dev-token", "--platform", "acme", "--no-create-platform"], tmp_path, **env)
        assert again.returncode == 0, again.stderr
        claims = jwt.decode(
            again.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"], audience=DEV_JWT_AUDIENCE
        )
        assert claims["platform"] == "acme"
        assert claims["role"] == "admin"
        assert claims["iss"] == DEV_JWT_ISSUER
        assert claims["exp"] - claims["iat"] == 24 * 3600  # the longest lifetime allowed

    def test_production_refuses_to_mint(self, tmp_path: Path) -> None:
        result = run(["dev-token"], tmp_path)
        assert result.returncode == 2
        assert result.stdout == ""


class TestWelcome:
    def test_it_names_the_docs_the_operator_token_and_the_inbound_endpoints(
        self, tmp_path: Path
    ) -> None:
        result = run(
            ["welcome", "--url", "http://127.0.0.1:8001"],
            tmp_path,
            MAILSLOT_ENVIRONMENT="development",
            MAILSLOT_MAILGUN_SIGNING_KEY="key",
            MAILSLOT_DATABASE_URL="postgresql://app:s3cret@db:5432/mailslot",
        )
        assert result.returncode == 0, result.stderr
        text = result.stderr
        assert "http://127.0.0.1:8001/docs" in text
        assert DEV_OPERATOR_TOKEN in text
        assert "python -m app dev-token" in text
        on = next(line for line in text.splitlines() if "inbound, on" in line)
        off = next(line for line in text.splitlines() if "inbound, off" in line)
        assert "/inbound/mailgun" in on
        assert "/inbound/sendgrid" in off
        assert "MAILSLOT_INBOUND_USERNAME" in off
        assert "s3cret" not in text

    def test_an_operator_token_of_ones_own_is_not_printed(self, tmp_path: Path) -> None:
        token = "an-operator-token-of-my-own-that-is-long-enough"
        result = run(
            ["welcome"], tmp_path, MAILSLOT_ENVIRONMENT="development", MAILSLOT_OPERATOR_TOKEN=token
        )
        assert result.returncode == 0, result.stderr
        assert token not in result.stderr
        assert "MAILSLOT_OPERATOR_TOKEN" in result.stderr
