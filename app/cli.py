"""``python -m app COMMAND``: maintenance and development commands."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import jwt

from app.config import ConfigurationError, Settings, get_settings
from app.db.engine import create_engine
from app.models import Plan, Platform, Role

TOKEN_LIFETIME_SECONDS = 7 * 24 * 3600


def mint_token(
    settings: Settings,
    *,
    user_id: str,
    platform_id: str,
    role: Role,
    email: str | None = None,
    name: str | None = None,
    lifetime: int = TOKEN_LIFETIME_SECONDS,
) -> str:
    if settings.jwt_secret is None:
        raise SystemExit("dev-token needs MAILSLOT_JWT_SECRET (HS256)")
    claims: dict[str, object] = {
        "sub": user_id,
        "platform": platform_id,
        "role": role.value,
        "exp": int(time.time()) + lifetime,
    }
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


async def ensure_platform(settings: Settings, platform_id: str, name: str, plan: Plan) -> bool:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    engine = create_engine(settings.database_url)
    try:
        async with async_sessionmaker(engine, expire_on_commit=False).begin() as session:
            if await session.get(Platform, platform_id) is not None:
                return False
            session.add(Platform(id=platform_id, name=name, plan=plan))
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
    if args.create_platform:
        created = asyncio.run(
            ensure_platform(
                settings, args.platform, args.platform_name or args.platform, Plan(args.plan)
            )
        )
        print(
            f"platform {args.platform!r} {'created' if created else 'already exists'}",
            file=sys.stderr,
        )
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


def run_cleanup(args: argparse.Namespace) -> int:
    from app.maintenance import cleanup

    report = asyncio.run(cleanup(get_settings(), grace_seconds=args.grace_seconds))
    print(report)
    return 0


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

    spec = commands.add_parser("openapi", help="print or write the OpenAPI spec, or check a file")
    spec.add_argument("--output", help="write the spec to this file")
    spec.add_argument("--check", help="exit 1 when this file differs from the spec")
    spec.set_defaults(handler=openapi)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["relay"]:
        from app.relay import main as relay_main

        return relay_main(argv[1:])
    args = parser.parse_args(argv)
    return int(args.handler(args))
