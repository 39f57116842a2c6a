"""``GET /``: where to go from the root, for a person or a program that lands there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app import __version__

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index(request: Request) -> dict[str, Any]:
    root = request.scope.get("root_path", "")
    links = {"health": f"{root}/healthz", "ready": f"{root}/readyz"}
    if request.app.state.settings.docs_enabled:
        links = {
            "docs": f"{root}/docs",
            "redoc": f"{root}/redoc",
            "openapi": f"{root}/openapi.json",
            **links,
        }
    return {
        "name": "mailslot",
        "version": __version__,
        "description": "Turns email into posts in the groups of a team-collaboration platform.",
        "links": links,
    }
