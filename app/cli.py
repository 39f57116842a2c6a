"""``python -m app COMMAND``: maintenance and development commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import jwt
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from app.blobs.store import BlobStoreUnavailable
from app.config import DEV_OPERATOR_TOKEN, ConfigurationError, Settings, get_settings
from app.db.engine import create_engine
from app.logging import redact
from app.models import Plan, Platform, Role
from app.policy import add_arguments as add_policy_arguments

EX_UNAVAILABLE = 69  # sysexits.h: a service (here the database) is not available
EX_CONFIG = 78  # sysexits.h: a configuration error


def mint_token(
    settings: Settings,
    *,
    user_id: str,
    platform_id: str,
    role: Role,
    email: str | None = None,
    name: str | None = None,
    lifetime: int | None = None,
) -> str:
    """An HS256 token with the first secret, as the host platform would mint one: ``iat``,
    ``exp`` (the longest lifetime allowed, unless ``lifetime``), ``aud`` and ``iss``."""
    if not settings.jwt_secret:
        raise SystemExit("dev-token needs MAILSLOT_JWT_SECRET (HS256)")
    key = settings.jwt_secret[0]
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "platform": platform_id,
        "role": role.value,
        "iat": now,
        "exp": now + (lifetime or settings.jwt_max_lifetime_seconds),
    }
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    return jwt.encode(
        claims,
        key.secret.get_secret_value(),
        algorithm="HS256",
        headers=None if key.kid is None else {"kid": key.kid},
    )


async def ensure_platform(
    settings: Settings, platform_id: str, name: str, plan: Plan, *, create: bool = True
) -> bool:
    """Whether the platform exists now; created first when it is missing and ``create``."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    engine = create_engine(settings.database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
            if await session.get(Platform, platform_id) is not None:
                return True
            if not create:
                return False
            session.add(Platform(id=platform_id, name=name, plan=plan))
            print(f"platform {platform_id!r} created", file=sys.stderr)
            return True
    finally:
        await engine.dispose()


def dev_token(args: argparse.Namespace) -> int:
    try:
        settings: Settings | None = get_settings()
    except ConfigurationError:  # incomplete production settings: refuse below, without a traceback
        settings = None
    if settings is None or settings.environment == "production":
        print(
            "dev-token is a development helper: set MAILSLOT_ENVIRONMENT=development",
            file=sys.stderr,
        )
        return 2
    exists = asyncio.run(
        ensure_platform(
            settings,
            args.platform,
            args.platform_name or args.platform,
            Plan(args.plan),
            create=args.create_platform,
        )
    )
    if not exists:
        print(
            f"dev-token: platform {args.platform!r} does not exist: create it with "
            "POST /v1/platforms (operator token), or leave out --no-create-platform",
            file=sys.stderr,
        )
        return 1
    print(
        mint_token(
            settings,
            user_id=args.user,
            platform_id=args.platform,
            role=Role(args.role),
            email=args.email,
            name=args.name,
        )
    )
    return 0


def openapi_document() -> str:
    """The spec the app serves, with stable formatting (sorted keys, 2-space indent)."""
    import json

    from app.main import create_app

    settings = Settings(
        _env_file=None,
        environment="test",
        database_url="sqlite:///:memory:",
    )
    return (
        json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
    )


def openapi(args: argparse.Namespace) -> int:
    from pathlib import Path

    document = openapi_document()
    if args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text(encoding="utf-8") != document:
            print(
                f"{path} differs from the app's OpenAPI spec: run `make openapi`", file=sys.stderr
            )
            return 1
        print(f"{path} matches the app's OpenAPI spec", file=sys.stderr)
        return 0
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(document, encoding="utf-8")
    else:
        sys.stdout.write(document)
    return 0


def welcome(args: argparse.Namespace) -> int:
    """What a development server offers, printed by ``make run`` before it starts."""
    from app.inbound.providers import base, mailgun

    settings = get_settings()
    url = args.url.rstrip("/")
    operator = (
        DEV_OPERATOR_TOKEN
        if "OPERATOR_TOKEN" in settings.uses_development_defaults
        else "the value of MAILSLOT_OPERATOR_TOKEN"
    )
    inbound_on: list[str] = []
    inbound_off: list[str] = []
    for paths, on, needs in (
        (
            "/inbound/mailgun, /inbound/mailgun/mime",
            mailgun.enabled(settings),
            "MAILSLOT_MAILGUN_SIGNING_KEY",
        ),
        (
            "/inbound/sendgrid, /inbound/postmark, /inbound/mime",
            base.basic_auth_enabled(settings),
            "MAILSLOT_INBOUND_USERNAME and MAILSLOT_INBOUND_PASSWORD",
        ),
    ):
        (inbound_on if on else inbound_off).append(paths if on else f"{paths} (set {needs})")
    attachments = (
        f"{settings.blob_dir}"
        if settings.s3_location is None
        else f"{settings.s3_location} (request bodies spooled in {settings.blob_dir})"
    )
    lines = [
        f"mailslot {settings.environment} server: {url}",
        f"  API docs          {url}/docs (ReDoc: {url}/redoc, the spec: {url}/openapi.json)",
        f"  database          {redact(settings.database_url)}; attachments in {attachments}",
        f"  operator token    {operator}",
        "  an admin token    MAILSLOT_ENVIRONMENT=development .venv/bin/python -m app dev-token"
        " --platform demo",
        f"  inbound, on       {', '.join(inbound_on) or 'none'}",
        f"  inbound, off      {'; '.join(inbound_off) or 'none'}",
        "  next              the README's Walkthrough, in a second terminal",
    ]
    print("\n".join(lines), file=sys.stderr)
    return 0


def run_cleanup(args: argparse.Namespace) -> int:
    from app.maintenance import cleanup

    report = asyncio.run(cleanup(get_settings(), grace_seconds=args.grace_seconds))
    print(report)
    return 0


def run_policy(args: argparse.Namespace) -> int:
    from app.policy import run

    return run(get_settings(), args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="mailslot commands")
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser(
        "dev-token",
        help="development only: create a platform if needed and print a JWT for a user of it",
    )
    token.add_argument("--platform", default="demo", help="platform id (default: demo)")
    token.add_argument("--platform-name", help="name of a platform created here")
    token.add_argument("--plan", choices=[p.value for p in Plan], default=Plan.essentials.value)
    token.add_argument("--user", default="alice", help="the token's sub (default: alice)")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.admin.value)
    token.add_argument("--email")
    token.add_argument("--name")
    token.add_argument(
        "--no-create-platform",
        dest="create_platform",
        action="store_false",
        help="only mint the token",
    )
    token.set_defaults(handler=dev_token)

    clean = commands.add_parser(
        "cleanup",
        help="purge kept content and tokens past retention, then blobs that no row names",
    )
    clean.add_argument(
        "--grace-seconds",
        type=float,
        default=3600,
        help="keep unnamed blobs younger than this (default 3600)",
    )
    clean.set_defaults(handler=run_cleanup)

    relay = commands.add_parser(
        "relay",
        help="post a message from stdin to /inbound/mime (for Postfix pipe)",
        add_help=False,
    )
    relay.set_defaults(handler=None)

    policy = commands.add_parser(
        "postfix-policy",
        help="a Postfix policy server: refuse unknown recipients during the SMTP session",
        description=(
            "A Postfix policy-delegation server (check_policy_service) that refuses mail to "
            "addresses at MAILSLOT_INBOUND_DOMAIN that no integration has, during the SMTP "
            "session. Settings as for the service (MAILSLOT_DATABASE_URL, "
            "MAILSLOT_INBOUND_DOMAIN)."
        ),
    )
    add_policy_arguments(policy)
    policy.set_defaults(handler=run_policy)

    hello = commands.add_parser(
        "welcome", help="print what a development server offers (make run does this)"
    )
    hello.add_argument("--url", default="http://127.0.0.1:8000", help="where it listens")
    hello.set_defaults(handler=welcome)

    spec = commands.add_parser("openapi", help="print or write the OpenAPI spec, or check a file")
    spec.add_argument("--output", help="write the spec to this file")
    spec.add_argument("--check", help="exit 1 when this file differs from the spec")
    spec.set_defaults(handler=openapi)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["relay"]:
        from app.relay import main as relay_main

        return relay_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigurationError as exc:
        return _refuse(args.command, f"configuration error: {exc}", EX_CONFIG)
    except ValidationError as exc:
        return _refuse(args.command, f"configuration error: {_settings_problem(exc)}", EX_CONFIG)
    except BlobStoreUnavailable as exc:
        reason = next(iter(str(exc).splitlines()), type(exc).__name__)
        return _refuse(args.command, f"blob store error: {redact(reason)}", EX_UNAVAILABLE)
    except DBAPIError as exc:
        reason = next(iter(str(exc.orig or exc).splitlines()), type(exc).__name__)
        return _refuse(
            args.command,
            f"database error: {redact(reason)} (is the database up and migrated? make migrate)",
            EX_UNAVAILABLE,
        )


def _refuse(command: str, message: str, status: int) -> int:
    print(f"python -m app {command}: {message}", file=sys.stderr)
    return status


def _settings_problem(exc: ValidationError) -> str:
    """One line naming each bad setting, never its value."""
    return "; ".join(
        f"MAILSLOT_{str(error['loc'][0]).upper()}: {error['msg']}" if error["loc"] else error["msg"]
        for error in exc.errors()
    )
